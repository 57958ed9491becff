"""Trace formats: valgrind lackey, memvirt's binary format, compression, streaming, writing.

The compiled lackey parser is held to a slow, obviously-correct Python twin
(:func:`slow_lackey`) on random valid and invalid inputs; every format
round-trips through write and read, compressed or not.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memvirt.traces.formats import (
    BINARY_MAGIC,
    LACKEY_EXPECTED,
    LACKEY_MAX_SIZE,
    TEXT_LINE_MAX,
    UNKNOWN_COUNT,
    format_text,
    pack_header,
)
from memvirt.traces.model import KIND_FETCH, KIND_READ, KIND_WRITE, Trace, TraceError
from memvirt.traces.readers import open_trace, read_trace
from memvirt.traces.writers import compression_for_path, format_for_path, write_trace

R, W, F = KIND_READ, KIND_WRITE, KIND_FETCH
TEXT_EXPECTED = "expected an address (hex with 0x or decimal), optionally after R or W"


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def error_of(path: Path | str, **kwargs: Any) -> str:
    with pytest.raises(TraceError) as info:
        read_trace(path, **kwargs)
    return str(info.value)


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def binary_file(path: Path, records: list[int], *, count: int | None = None, **header: int) -> Path:
    """A binary trace written by hand: header fields, then little-endian u64 records."""
    raw = bytearray(pack_header(page_numbers=False, page_shift=12, count=len(records)))
    if count is not None:
        raw[24:32] = count.to_bytes(8, "little")
    for field, (offset, size) in {"version": (8, 2), "mode": (10, 1)}.items():
        if field in header:
            raw[offset : offset + size] = header[field].to_bytes(size, "little")
    raw += b"".join(r.to_bytes(8, "little") for r in records)
    return write(path, bytes(raw))


def sample_trace(page_numbers: bool = False) -> Trace:
    """Reads, writes and fetches, with addresses small and large."""
    addresses = np.array([0x1000, 0x2008, 0x4001C80, 0, (1 << 62) - 1, 0x1FFEFFFD78, 7])
    kinds = np.array([R, W, F, R, W, F, W])
    return Trace.from_kinds(addresses, kinds, page_numbers=page_numbers)


# ------------------------------------------------------------------ valgrind lackey

LACKEY_SAMPLE = (
    "==12345== Lackey, an example Valgrind tool\n"
    "==12345== Command: ./a.out\n"
    "==12345== \n"
    "I  04001c80,3\n"
    " L 1ffefffd78,8\n"
    " S 1ffefffd70,8\n"
    " M 0401b0a0,4\n"
    "\n"
    "==12345== Counted 1 call to main()\n"
)


def test_lackey_records_become_fetches_loads_stores_and_modifies(tmp_path: Path) -> None:
    t = read_trace(write(tmp_path / "lackey.log", LACKEY_SAMPLE))
    assert t.addresses.tolist() == [0x4001C80, 0x1FFEFFFD78, 0x1FFEFFFD70, 0x401B0A0, 0x401B0A0]
    # a modify is a read, then a write of the same bytes
    assert t.kinds.tolist() == [F, R, W, R, W]
    assert t.writes.tolist() == [0, 0, 1, 0, 1]
    assert t.fetches is not None and t.fetches.tolist() == [1, 0, 0, 0, 0]
    assert not t.page_numbers
    with open_trace(tmp_path / "lackey.log") as stream:
        assert stream.format == "lackey"


def test_drop_fetches_leaves_out_instruction_fetches(tmp_path: Path) -> None:
    t = read_trace(write(tmp_path / "lackey.log", LACKEY_SAMPLE), drop_fetches=True)
    assert t.addresses.tolist() == [0x1FFEFFFD78, 0x1FFEFFFD70, 0x401B0A0, 0x401B0A0]
    assert t.kinds.tolist() == [R, W, R, W]
    assert t.fetches is None


def test_an_access_across_a_page_boundary_touches_both_pages(tmp_path: Path) -> None:
    # 8 bytes at 0xffc: 0xffc-0xfff on page 0 and 0x1000-0x1003 on page 1
    text = " L 0ffc,8\nI  1ffe,4\n S 2ff8,8\n M 3ffd,4\n"
    t = read_trace(write(tmp_path / "t.lackey", text))
    assert [hex(a) for a in t.addresses] == [
        "0xffc",
        "0x1000",
        "0x1ffe",
        "0x2000",
        "0x2ff8",  # ends exactly at the page's last byte: one page
        "0x3ffd",  # a modify across a boundary: read both pages, then write both
        "0x4000",
        "0x3ffd",
        "0x4000",
    ]
    assert t.kinds.tolist() == [R, R, F, F, W, R, R, W, W]


def test_the_page_size_decides_where_accesses_split(tmp_path: Path) -> None:
    path = write(tmp_path / "t.lackey", " L 0ffc,8\n S 0e,40\n")
    assert read_trace(path, page_size=8192).addresses.tolist() == [0xFFC, 0x0E]
    # 40 bytes from 0x0e with 16-byte pages: 0x0e-0x0f, 0x10-0x1f, 0x20-0x2f, 0x30-0x35
    t = read_trace(path, page_size=16)
    assert t.addresses.tolist() == [0xFFC, 0x1000, 0x0E, 0x10, 0x20, 0x30]
    assert t.kinds.tolist() == [R, R, W, W, W, W]


def test_lackey_spacing_crlf_and_a_missing_final_newline_are_accepted(tmp_path: Path) -> None:
    text = "I 10,1\r\n\tL\t20,2 \r\n  S   0030,4\n M AbCd,8"
    t = read_trace(write(tmp_path / "t.lackey", text), format="lackey")
    assert t.addresses.tolist() == [0x10, 0x20, 0x30, 0xABCD, 0xABCD]
    assert t.kinds.tolist() == [F, R, W, R, W]


def test_a_malformed_lackey_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.lackey", LACKEY_SAMPLE + " L 0x10,8\n")
    assert error_of(path) == f"{path}:10: {LACKEY_EXPECTED}, got 'L 0x10,8'"
    assert LACKEY_EXPECTED == "expected a lackey record such as ' L 04001c80,8'"


@pytest.mark.parametrize(
    "line",
    [
        " X 10,4",
        " L 10",
        " L ,4",
        " L 10,",
        " L10,4",
        " L 10,0",
        f" L 10,{LACKEY_MAX_SIZE + 1}",
        " L 8000000000000000,1",  # beyond a signed 64-bit address
        " L 7fffffffffffffff,2",  # its last byte would be beyond it
        " L 10,4 x",
        " l 10,4",
        "= L 10,4",
        "garbage",
    ],
)
def test_each_malformed_lackey_line_gives_the_exact_message(tmp_path: Path, line: str) -> None:
    path = write(tmp_path / "t.lackey", f"I  10,4\n\n{line}\n L 20,4\n")
    assert error_of(path, format="lackey") == f"{path}:3: {LACKEY_EXPECTED}, got '{line.strip()}'"


def test_the_largest_lackey_address_and_size_are_read(tmp_path: Path) -> None:
    text = f" L 7ffffffffffffff0,16\n S 0000000000000000000010,{LACKEY_MAX_SIZE}\n"
    t = read_trace(write(tmp_path / "t.lackey", text), page_size=1 << 20)
    assert t.addresses.tolist() == [(1 << 63) - 16, 0x10]


def test_skip_bad_counts_malformed_lackey_lines(tmp_path: Path) -> None:
    text = "I  10,4\nbad line\n L 20,4\n L 30\n\n==1== note\n S 40,4\n"
    with open_trace(write(tmp_path / "t.lackey", text), skip_bad=True) as stream:
        chunks = list(stream)
        assert stream.bad_lines == 2
        assert stream.accesses == 3
    assert np.concatenate([c.addresses for c in chunks]).tolist() == [0x10, 0x20, 0x40]


def test_a_lackey_trace_is_not_a_trace_of_page_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "t.lackey", LACKEY_SAMPLE)
    assert error_of(path, page_numbers=True) == (
        f"{path}: a lackey trace holds byte addresses, not page numbers"
    )


def test_a_lackey_trace_of_only_messages_has_no_accesses(tmp_path: Path) -> None:
    path = write(tmp_path / "t.lackey", "==1== Lackey\n\n==1== done\n")
    assert error_of(path, format="lackey") == f"{path}: the trace has no accesses"
    only_fetches = write(tmp_path / "f.lackey", "I  10,4\nI  20,4\n")
    assert error_of(only_fetches, drop_fetches=True) == f"{only_fetches}: the trace has no accesses"


# The slow twin of the compiled lackey parser: the grammar as a regular expression.
_TWIN_RECORD = re.compile(rb"[ \t]*([ILSM])[ \t]+([0-9a-fA-F]+),([0-9]+)[ \t]*\r?")


class TwinError(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def slow_lackey(
    text: bytes, page_size: int, drop_fetches: bool, skip_bad: bool
) -> tuple[list[int], list[int], int]:
    """Addresses, kinds and bad lines of a lackey log, one line and one page at a time."""
    addresses: list[int] = []
    kinds: list[int] = []
    bad = 0
    lines = text.split(b"\n")
    if text.endswith(b"\n"):
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if line.startswith(b"==") or line.lstrip(b" \t") in (b"", b"\r"):
            continue
        match = _TWIN_RECORD.fullmatch(line)
        ok = match is not None
        if match is not None:
            op, address, size = match[1], int(match[2], 16), int(match[3])
            ok = 1 <= size <= LACKEY_MAX_SIZE and address + size - 1 < 1 << 63
        if not ok:
            if not skip_bad:
                raise TwinError(number)
            bad += 1
            continue
        assert match is not None
        halves = {b"I": [F], b"L": [R], b"S": [W], b"M": [R, W]}[op]
        if drop_fetches and op == b"I":
            continue
        pages = range(address // page_size, (address + size - 1) // page_size + 1)
        for kind in halves:
            for page in pages:
                addresses.append(address if page == pages[0] else page * page_size)
                kinds.append(kind)
    return addresses, kinds, bad


VALID_LINES = st.builds(
    lambda lead, op, gap, address, digits, upper, size, tail: (
        (
            f"{lead}{op}{gap}{address:0{digits}x}".upper().replace("0X", "0x")
            if upper
            else f"{lead}{op}{gap}{address:0{digits}x}"
        )
        + f",{size}{tail}"
    ),
    st.sampled_from(["", " ", "\t", "  "]),
    st.sampled_from("ILSM"),
    st.sampled_from([" ", "  ", "\t", " \t"]),
    st.one_of(
        st.integers(0, 1 << 16),
        st.integers(0x4000000, 0x4100000),
        st.integers(0x1FFEFF0000, 0x1FFF000000),
        st.integers(0, (1 << 63) - 1),
    ),
    st.integers(1, 20),
    st.booleans(),
    st.one_of(st.integers(1, 16), st.integers(0, LACKEY_MAX_SIZE + 2)),
    st.sampled_from(["", " ", "\r", " \r", "\t"]),
)
NOISE_LINES = st.one_of(
    st.sampled_from(["", "  ", "\r", "==7== Lackey", "==", "=", "I", " L ", " L 10,", "I  ,4"]),
    st.text(alphabet="ILSMX =,0123456789abcdefABCDEFxg\t\r", max_size=24),
)


@st.composite
def lackey_logs(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.one_of(VALID_LINES, VALID_LINES, NOISE_LINES), max_size=30))
    end = draw(st.sampled_from(["\n", ""]))
    return ("\n".join(lines) + end).encode()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    log=lackey_logs(),
    page_size=st.sampled_from([1, 16, 4096]),
    drop_fetches=st.booleans(),
    skip_bad=st.booleans(),
    chunk=st.integers(1, 40),
)
def test_the_compiled_lackey_parser_agrees_with_its_slow_twin(
    tmp_path: Path, log: bytes, page_size: int, drop_fetches: bool, skip_bad: bool, chunk: int
) -> None:
    path = write(tmp_path / "t.lackey", log)
    options: dict[str, Any] = {
        "page_size": page_size,
        "drop_fetches": drop_fetches,
        "skip_bad": skip_bad,
    }
    try:
        addresses, kinds, bad = slow_lackey(log, page_size, drop_fetches, skip_bad)
    except TwinError as err:
        with pytest.raises(TraceError, match=rf"^{re.escape(str(path))}:{err.line}: "):
            read_trace(path, format="lackey", chunk_accesses=chunk, **options)
        return
    with open_trace(path, format="lackey", chunk_accesses=chunk, **options) as stream:
        chunks = list(stream)
        assert stream.bad_lines == bad
        assert stream.accesses == len(addresses)
    got_addresses = [a for c in chunks for a in c.addresses.tolist()]
    got_kinds = [k for c in chunks for k in c.kinds.tolist()]
    assert got_addresses == addresses
    assert got_kinds == kinds
    # a chunk exceeds chunk_accesses only when one record alone does
    most_per_record = 2 * ((LACKEY_MAX_SIZE - 1) // page_size + 2)
    assert all(len(c) <= max(chunk, most_per_record) for c in chunks)


def test_lackey_chunks_split_lines_and_keep_line_numbers(tmp_path: Path) -> None:
    lines = [f" L {0x1000 * i + 8:08x},8" for i in range(1, 200)]
    lines[150] = " L 12345678,8,9"
    path = write(tmp_path / "t.lackey", "\n".join(lines) + "\n")
    for chunk in (1, 2, 3, 7, 64):
        # reads of 16 bytes per access wanted: lines (16 bytes with "\n")
        # are cut at every other offset
        assert error_of(path, chunk_accesses=chunk) == (
            f"{path}:151: {LACKEY_EXPECTED}, got 'L 12345678,8,9'"
        )
    del lines[150]
    whole = read_trace(write(tmp_path / "good.lackey", "\n".join(lines)))
    for chunk in (1, 3, 5):
        with open_trace(tmp_path / "good.lackey", chunk_accesses=chunk) as stream:
            parts = list(stream)
        assert all(len(p) <= chunk for p in parts)
        assert np.concatenate([p.addresses for p in parts]).tolist() == whole.addresses.tolist()


def test_a_lackey_line_longer_than_a_read_is_still_one_line(tmp_path: Path) -> None:
    padding = " " * 5000
    path = write(tmp_path / "t.lackey", f"I  10,4\n L{padding}20,4{padding}\n S 30,4\n")
    t = read_trace(path, chunk_accesses=1)
    assert t.addresses.tolist() == [0x10, 0x20, 0x30]


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_compressed_lackey_keeps_line_numbers(tmp_path: Path, how: str) -> None:
    lines = ["==9== Lackey"] + [f"I  {0x4000000 + 4 * i:08x},4" for i in range(5000)]
    lines[4321] = "I  zz,4"
    path = write(tmp_path / "log", compress(("\n".join(lines) + "\n").encode(), how))
    assert error_of(path, chunk_accesses=100) == f"{path}:4322: {LACKEY_EXPECTED}, got 'I  zz,4'"


def test_lackey_is_recognised_by_valgrind_lines_or_a_record(tmp_path: Path) -> None:
    def sniff(text: str) -> str:
        with open_trace(write(tmp_path / "t", text)) as stream:
            return stream.format

    assert sniff("==1== Lackey\n\n   \n L 10,4\n") == "lackey"
    assert sniff("I  04001c80,3\n") == "lackey"
    assert sniff("I  zz,4\n") == "lackey"  # malformed, but no text line starts so
    assert sniff("==1== only messages\n") == "lackey"
    assert sniff("0x10\nR 0x20\n") == "text"
    assert sniff("# I  10,4\nI  10,4\n") == "text"
    assert sniff("") == "text"


def test_a_malformed_first_record_is_reported_as_lackey(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", "==1== Lackey\nI  zz,4\n")
    assert error_of(path) == f"{path}:2: {LACKEY_EXPECTED}, got 'I  zz,4'"


# ------------------------------------------------------------------ the binary format


def test_the_binary_header_is_32_bytes_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "t.mvt"
    trace = Trace.from_kinds(np.array([0x1000, 0x2008, 0x4001C80]), np.array([R, W, F]))
    assert write_trace(path, trace, page_size=16384) == 3
    raw = path.read_bytes()
    assert len(raw) == 32 + 3 * 8
    assert raw[:8] == b"MVTRACE\0" == BINARY_MAGIC
    assert raw[8:10] == b"\x01\x00"  # version 1, little-endian
    assert raw[10] == 0  # byte addresses
    assert raw[11] == 0
    assert raw[12] == 14  # log2(16384)
    assert raw[13:24] == bytes(11)
    assert struct.unpack("<Q", raw[24:32]) == (3,)
    assert struct.unpack("<3Q", raw[32:]) == (0x1000 << 2, (0x2008 << 2) | 1, (0x4001C80 << 2) | 2)


def test_a_binary_trace_of_page_numbers_says_so_in_its_header(tmp_path: Path) -> None:
    path = tmp_path / "pages.mvt"
    write_trace(path, Trace.from_pages([7, 0, 1], [0, 1, 0]))
    assert path.read_bytes()[10] == 1
    t = read_trace(path)
    assert t.page_numbers
    assert t.addresses.tolist() == [7, 0, 1]
    assert read_trace(path, page_numbers=True).page_numbers
    byte_path = tmp_path / "bytes.mvt"
    write_trace(byte_path, sample_trace())
    assert error_of(byte_path, page_numbers=True) == (
        f"{byte_path}: the binary trace's header says it holds byte addresses, not page numbers"
    )


def test_a_binary_trace_is_found_by_its_magic_whatever_its_name(tmp_path: Path) -> None:
    write_trace(tmp_path / "t.mvt", sample_trace())
    (tmp_path / "t.mvt").rename(tmp_path / "t.txt")
    with open_trace(tmp_path / "t.txt") as stream:
        assert stream.format == "binary"
        assert [a for c in stream for a in c.addresses.tolist()] == (
            sample_trace().addresses.tolist()
        )


def test_a_record_count_of_all_ones_runs_to_the_end_of_the_file(tmp_path: Path) -> None:
    path = binary_file(tmp_path / "t.mvt", [4 << 2, (5 << 2) | 1], count=UNKNOWN_COUNT)
    t = read_trace(path)
    assert t.addresses.tolist() == [4, 5]
    assert t.kinds.tolist() == [R, W]


def test_a_file_that_is_not_a_binary_trace_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "t.mvt", "0x1000\n")
    assert error_of(path) == f"{path}: not a memvirt binary trace (bad magic)"
    text = write(tmp_path / "t.txt", "0x1000\n")
    assert error_of(text, format="binary") == f"{text}: not a memvirt binary trace (bad magic)"
    empty = write(tmp_path / "e.mvt", b"")
    assert error_of(empty) == f"{empty}: not a memvirt binary trace (bad magic)"


def test_an_unknown_binary_version_is_refused(tmp_path: Path) -> None:
    path = binary_file(tmp_path / "t.mvt", [0], version=2)
    assert error_of(path) == (
        f"{path}: binary trace version 2 is not supported (this memvirt reads version 1)"
    )


def test_an_unknown_address_mode_is_refused(tmp_path: Path) -> None:
    path = binary_file(tmp_path / "t.mvt", [0], mode=7)
    assert error_of(path) == (
        f"{path}: binary trace address mode 7 is not known "
        f"(expected 0 for byte addresses or 1 for page numbers)"
    )


def test_a_header_cut_short_is_truncated(tmp_path: Path) -> None:
    path = write(tmp_path / "t.mvt", BINARY_MAGIC + b"\x01\x00\x00")
    assert (
        error_of(path) == f"{path}: truncated: the file ends inside the 32-byte header (11 bytes)"
    )


@pytest.mark.parametrize("how", ["plain", "gzip", "zstd"])
def test_a_truncated_binary_trace_says_how_many_records_it_holds(tmp_path: Path, how: str) -> None:
    header = pack_header(page_numbers=False, page_shift=12, count=5)
    records = b"".join((i << 2).to_bytes(8, "little") for i in range(3))
    path = write(tmp_path / "whole.mvt", compress(header + records, how))
    assert error_of(path, chunk_accesses=2) == (
        f"{path}: truncated: header says 5 records, file holds 3"
    )
    partial = write(tmp_path / "partial.mvt", compress(header + records + b"\x01\x02\x03", how))
    assert error_of(partial, chunk_accesses=2) == (
        f"{partial}: truncated: header says 5 records, file ends inside record 3"
    )
    unknown = pack_header(page_numbers=False, page_shift=12, count=UNKNOWN_COUNT)
    open_ended = write(tmp_path / "open.mvt", compress(unknown + records + b"\x01", how))
    assert error_of(open_ended) == f"{open_ended}: truncated: file ends inside record 3"
    longer = write(tmp_path / "longer.mvt", compress(header + records * 2 + b"\0", how))
    assert error_of(longer) == (
        f"{longer}: header says 5 records, but the file holds 9 more bytes after them"
    )


def test_kind_3_is_an_error_naming_the_record(tmp_path: Path) -> None:
    records = [(i << 2) | (i % 3) for i in range(9)]
    records[6] = (6 << 2) | 3
    path = binary_file(tmp_path / "t.mvt", records)
    expected = f"{path}: record 6 has kind 3 (expected 0 read, 1 write or 2 fetch)"
    assert error_of(path) == expected
    assert error_of(path, chunk_accesses=4) == expected  # counted across chunks


def test_a_binary_trace_without_records_has_no_accesses(tmp_path: Path) -> None:
    path = tmp_path / "t.mvt"
    assert write_trace(path, []) == 0
    assert len(path.read_bytes()) == 32
    assert error_of(path) == f"{path}: the trace has no accesses"


def test_binary_chunks_hold_at_most_chunk_accesses(tmp_path: Path) -> None:
    path = tmp_path / "t.mvt"
    write_trace(path, Trace.from_kinds(np.arange(10) * 4096, np.arange(10) % 3))
    with open_trace(path, chunk_accesses=4) as stream:
        assert [len(c) for c in stream] == [4, 4, 2]
        assert stream.accesses == 10
    with open_trace(path, chunk_accesses=4, drop_fetches=True) as stream:
        parts = list(stream)
        assert [a for c in parts for a in c.addresses.tolist()] == [
            i * 4096 for i in range(10) if i % 3 != 2
        ]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    addresses=st.lists(st.integers(0, (1 << 62) - 1), min_size=1, max_size=60),
    data=st.data(),
    page_numbers=st.booleans(),
    how=st.sampled_from(["", ".gz", ".zst"]),
    chunk=st.integers(1, 25),
)
def test_random_traces_round_trip_through_the_binary_format(
    tmp_path_factory: pytest.TempPathFactory,
    addresses: list[int],
    data: st.DataObject,
    page_numbers: bool,
    how: str,
    chunk: int,
) -> None:
    kinds = data.draw(st.lists(st.sampled_from([R, W, F]), min_size=len(addresses)))[
        : len(addresses)
    ]
    kinds += [R] * (len(addresses) - len(kinds))
    trace = Trace.from_kinds(np.array(addresses), np.array(kinds), page_numbers=page_numbers)
    cut = data.draw(st.integers(0, len(addresses)))
    parts = [
        Trace.from_kinds(trace.addresses[:cut], trace.kinds[:cut], page_numbers=page_numbers),
        Trace.from_kinds(trace.addresses[cut:], trace.kinds[cut:], page_numbers=page_numbers),
    ]
    path = tmp_path_factory.mktemp("rt") / f"t.mvt{how}"
    assert write_trace(path, parts) == len(addresses)
    back = read_trace(path, chunk_accesses=chunk)
    assert back.addresses.tolist() == addresses
    assert back.kinds.tolist() == kinds
    assert back.page_numbers == page_numbers


# ------------------------------------------------------------------ every format, compressed


@pytest.mark.parametrize("how", ["", ".gz", ".zst"])
@pytest.mark.parametrize("suffix", [".mvt", ".txt", ".npy"])
def test_every_format_round_trips(tmp_path: Path, suffix: str, how: str) -> None:
    trace = sample_trace()
    path = tmp_path / f"t{suffix}{how}"
    assert write_trace(path, trace) == len(trace)
    back = read_trace(path)
    assert back.addresses.tolist() == trace.addresses.tolist()
    assert back.writes.tolist() == trace.writes.tolist()
    expected_kinds = trace.kinds.tolist()
    if suffix == ".txt":  # text has no fetch kind: a fetch is written as a read
        expected_kinds = [R if k == F else k for k in expected_kinds]
    assert back.kinds.tolist() == expected_kinds
    assert back.source == str(path)
    with open_trace(path) as stream:
        assert stream.format == {".mvt": "binary", ".txt": "text", ".npy": "npy"}[suffix]


@pytest.mark.parametrize("how", ["", ".gz", ".zst"])
@pytest.mark.parametrize("suffix", [".txt", ".npy"])
def test_page_numbers_round_trip_through_text_and_npy(
    tmp_path: Path, suffix: str, how: str
) -> None:
    path = tmp_path / f"t{suffix}{how}"
    write_trace(path, Trace.from_pages([7, 0, 1, 2], [0, 1, 0, 1]))
    back = read_trace(path, page_numbers=True)
    assert back.page_numbers
    assert back.addresses.tolist() == [7, 0, 1, 2]
    assert back.writes.tolist() == [0, 1, 0, 1]


def test_the_text_writer_writes_hex_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    write_trace(path, sample_trace())
    assert path.read_text().splitlines() == [
        "R 0x1000",
        "W 0x2008",
        "R 0x4001c80",
        "R 0x0",
        "W 0x3fffffffffffffff",
        "R 0x1ffefffd78",
        "W 0x7",
    ]


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.tuples(st.integers(0, (1 << 63) - 1), st.booleans()), min_size=1, max_size=30
    )
)
def test_the_compiled_text_formatter_agrees_with_python(values: list[tuple[int, bool]]) -> None:
    addresses = np.array([a for a, _ in values], dtype=np.int64)
    writes = np.array([w for _, w in values], dtype=np.uint8)
    out = np.empty(len(values) * TEXT_LINE_MAX, dtype=np.uint8)
    used = format_text(addresses, writes, out)
    expected = "".join(f"{'W' if w else 'R'} {hex(a)}\n" for a, w in values)
    assert out[:used].tobytes().decode() == expected


def test_the_npy_writer_writes_a_structured_array(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    write_trace(path, [sample_trace(), sample_trace()])
    array = np.load(path)
    assert array.dtype.names == ("address", "write", "fetch")
    assert array.shape == (14,)
    assert array["address"][:3].tolist() == [0x1000, 0x2008, 0x4001C80]
    assert array["fetch"][:3].tolist() == [0, 0, 1]


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_compression_is_found_by_magic_not_by_name(tmp_path: Path, how: str) -> None:
    lackey = write(tmp_path / "plain-name", compress(LACKEY_SAMPLE.encode(), how))
    assert read_trace(lackey).kinds.tolist() == [F, R, W, R, W]
    text = write(tmp_path / "t.txt", compress(b"W 0x10\n0x20\n", how))
    assert read_trace(text).addresses.tolist() == [0x10, 0x20]


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_concatenated_compressed_streams_are_read_whole(tmp_path: Path, how: str) -> None:
    # gzip members and zstd frames one after another, as `cat a.gz b.gz` makes
    data = compress(b"0x10\n0x20\n", how) + compress(b"0x30\n", how)
    assert read_trace(write(tmp_path / "t", data)).addresses.tolist() == [0x10, 0x20, 0x30]


def test_corrupt_compressed_data_is_reported(tmp_path: Path) -> None:
    data = compress(("0x10\n" * 10000).encode(), "gzip")
    path = write(tmp_path / "t.txt.gz", data[: len(data) // 2])
    message = error_of(path)
    assert message.startswith(f"{path}: the gzip data is corrupt or truncated after ")
    bad = write(tmp_path / "t.zst", b"\x28\xb5\x2f\xfd" + b"\xff" * 20)
    assert error_of(bad).startswith(f"{bad}: the zstd data is corrupt or truncated after 0 ")


def test_a_compressed_trace_is_streamed_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "t.mvt.zst"
    write_trace(path, Trace.from_kinds(np.arange(1000) * 64, np.zeros(1000, dtype=np.uint8)))
    with open_trace(path, chunk_accesses=100) as stream:
        sizes = [len(c) for c in stream]
    assert sizes == [100] * 10


# ------------------------------------------------------------------ text and npy streaming


def test_text_line_numbers_are_right_across_chunks(tmp_path: Path) -> None:
    # 15-character lines ending "\r\n": 16-byte reads end between "\r" and "\n"
    lines = [f"0x{i:013x}" for i in range(1, 40)]
    lines[30] = "0xnot-a-number"
    path = write(tmp_path / "t.txt", "\r\n".join(lines) + "\r\n")
    for chunk in (1, 2, 3, 100):
        assert (
            error_of(path, chunk_accesses=chunk) == f"{path}:31: {TEXT_EXPECTED}, got '{lines[30]}'"
        )
    lone = write(tmp_path / "lone.txt", "\r".join(lines) + "\r")
    assert error_of(lone, chunk_accesses=1) == f"{lone}:31: {TEXT_EXPECTED}, got '{lines[30]}'"


def test_text_chunks_agree_with_a_whole_read(tmp_path: Path) -> None:
    text = "\ufeff" + "# header\nW 0x10\n\n17 # c\r\nr,0x20\rw\t5\n" * 50
    path = write(tmp_path / "t.txt", text)
    whole = read_trace(path)
    assert len(whole) == 200
    for chunk in (1, 2, 5):
        with open_trace(path, chunk_accesses=chunk) as stream:
            parts = list(stream)
        assert all(len(p) <= chunk for p in parts)
        assert np.concatenate([p.addresses for p in parts]).tolist() == whole.addresses.tolist()
        assert np.concatenate([p.writes for p in parts]).tolist() == whole.writes.tolist()


def test_only_the_first_bom_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "\ufeff1\n\ufeff2\n")
    assert error_of(path) == f"{path}:2: {TEXT_EXPECTED}, got '\ufeff2'"


def test_skip_bad_counts_malformed_text_lines(tmp_path: Path) -> None:
    text = "1\nbad\n2\n0x8000000000000000\n-4\n3\n"
    with open_trace(write(tmp_path / "t.txt", text), skip_bad=True, chunk_accesses=1) as stream:
        assert [a for c in stream for a in c.addresses.tolist()] == [1, 2, 3]
        assert stream.bad_lines == 3
    only_bad = write(tmp_path / "bad.txt", "x\ny\n")
    assert error_of(only_bad, skip_bad=True) == f"{only_bad}: the trace has no accesses"


def test_npy_arrays_are_streamed_in_chunks_with_global_indices(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    values = np.arange(10, dtype=np.int64) * 4096
    values[7] = -1
    np.save(path, values)
    assert error_of(path, chunk_accesses=3) == (
        f"{path}: addresses must be non-negative; the array holds -1 at index 7"
    )
    values[7] = 0
    np.save(path, values)
    with open_trace(path, chunk_accesses=3) as stream:
        assert [len(c) for c in stream] == [3, 3, 3, 1]


def test_npy_in_fortran_order_and_big_endian_is_read(tmp_path: Path) -> None:
    rows = np.asfortranarray(np.array([[0x1000, 1], [0x2000, 0], [0x3000, 1]], dtype=">i8"))
    np.save(tmp_path / "t.npy", rows)
    t = read_trace(tmp_path / "t.npy", chunk_accesses=2)
    assert t.addresses.tolist() == [0x1000, 0x2000, 0x3000]
    assert t.writes.tolist() == [1, 0, 1]


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_every_npy_header_version_is_read(tmp_path: Path, version: tuple[int, int]) -> None:
    with open(tmp_path / "t.npy", "wb") as f:
        np.lib.format.write_array(f, np.array([5, 6, 7], dtype=np.uint16), version=version)
    assert read_trace(tmp_path / "t.npy").addresses.tolist() == [5, 6, 7]


def test_an_npy_access_cannot_be_a_write_and_a_fetch(tmp_path: Path) -> None:
    array = np.zeros(3, dtype=[("address", "<i8"), ("write", "u1"), ("fetch", "u1")])
    array["write"] = [0, 1, 1]
    array["fetch"] = [1, 0, 1]
    np.save(tmp_path / "t.npy", array)
    assert error_of(tmp_path / "t.npy") == (
        f"{tmp_path / 't.npy'}: an access is a write or a fetch, not both; index 2 is both"
    )


def test_a_truncated_npy_file_says_how_many_rows_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "t.npy.gz"
    raw = tmp_path / "raw.npy"
    np.save(raw, np.arange(100, dtype=np.int64))
    write(path, compress(raw.read_bytes()[:-84], "gzip"))
    assert error_of(path) == (
        f"{path}: not a NumPy .npy file (the file ends inside the array: "
        f"the header says 100 rows, the file holds 89)"
    )


# ------------------------------------------------------------------ streams and options


def test_a_stream_is_read_once(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "1\n2\n")
    with open_trace(path) as stream:
        assert stream.source == str(path)
        assert stream.format == "text"
        assert [len(c) for c in stream] == [2]
        assert stream.accesses == 2
        assert stream.bad_lines == 0
        with pytest.raises(TraceError, match="read once"):
            iter(stream)


def test_opening_checks_the_file_before_iteration(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        open_trace(tmp_path / "missing.mvt")
    binary_file(tmp_path / "v9.mvt", [0], version=9)
    with pytest.raises(TraceError, match="version 9"):
        open_trace(tmp_path / "v9.mvt")


def test_bad_options_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "1\n")
    assert error_of(path, format="csv") == (
        f"{path}: unknown trace format 'csv'; known: text, npy, lackey, binary"
    )
    with pytest.raises(ValueError, match="chunk_accesses must be at least 1, got 0"):
        open_trace(path, chunk_accesses=0)
    with pytest.raises(ValueError, match="page_size must be a power of two, got 3000"):
        open_trace(path, page_size=3000)


def test_the_format_can_be_forced(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", "I  10,4\n")
    assert error_of(path, format="text") == f"{path}:1: {TEXT_EXPECTED}, got 'I  10,4'"
    assert read_trace(path, format="lackey").kinds.tolist() == [F]


# ------------------------------------------------------------------ writing


def test_the_format_to_write_comes_from_the_name() -> None:
    assert format_for_path("a/t.mvt") == "binary"
    assert format_for_path("t.TXT.gz") == "text"
    assert format_for_path("t.npy.zst") == "npy"
    assert compression_for_path("t.npy.zst") == "zstd"
    assert compression_for_path("t.mvt.gz") == "gzip"
    assert compression_for_path("t.mvt") is None
    with pytest.raises(TraceError, match=r"^t\.bin: cannot tell the trace format from the name"):
        format_for_path("t.bin")


def test_a_name_without_a_format_is_written_binary(tmp_path: Path) -> None:
    path = tmp_path / "t.trace.gz"
    write_trace(path, sample_trace())
    assert gzip.decompress(path.read_bytes()).startswith(BINARY_MAGIC)
    # a compressed binary trace cannot seek back: its count is "to the end"
    assert gzip.decompress(path.read_bytes())[24:32] == b"\xff" * 8
    forced = tmp_path / "t.mvt"
    write_trace(forced, sample_trace(), format="text")
    assert forced.read_text().startswith("R 0x1000\n")


def test_writing_is_deterministic(tmp_path: Path) -> None:
    for name in ("t.mvt", "t.txt.gz", "t.npy.zst", "t.npy.gz", "t.mvt.zst"):
        write_trace(tmp_path / f"a-{name}", sample_trace())
        write_trace(tmp_path / f"b-{name}", sample_trace())
        assert (tmp_path / f"a-{name}").read_bytes() == (tmp_path / f"b-{name}").read_bytes()


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "t.mvt.gz"
    write(path, b"the old file")

    def chunks() -> Iterator[Trace]:
        yield sample_trace()
        raise RuntimeError("the source broke")

    for target in (path, tmp_path / "new.npy.zst"):
        with pytest.raises(RuntimeError, match="the source broke"):
            write_trace(target, chunks())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.mvt.gz"]
    assert path.read_bytes() == b"the old file"


def test_a_written_file_has_the_usual_permissions(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    reference.write_bytes(b"")
    write_trace(tmp_path / "t.mvt", sample_trace())
    assert os.stat(tmp_path / "t.mvt").st_mode == os.stat(reference).st_mode


def test_values_a_format_cannot_hold_are_refused(tmp_path: Path) -> None:
    too_big = Trace.from_kinds(np.array([1, 1 << 62]), np.array([R, W]))
    path = tmp_path / "t.mvt"
    with pytest.raises(TraceError) as info:
        write_trace(path, too_big)
    assert str(info.value) == (
        f"{path}: access 1 has the value {1 << 62}, outside 0 to {(1 << 62) - 1} (from <memory>)"
    )
    assert not path.exists()
    mixed = [Trace.from_pages([1]), Trace.from_kinds(np.array([2]), np.array([R]))]
    with pytest.raises(TraceError, match="mix byte addresses and page numbers"):
        write_trace(tmp_path / "m.mvt", mixed)
    with pytest.raises(TraceError, match="cannot write the trace format 'lackey'"):
        write_trace(tmp_path / "t.log", sample_trace(), format="lackey")


def test_a_stream_converts_chunk_by_chunk(tmp_path: Path) -> None:
    source = write(tmp_path / "log.gz", compress(LACKEY_SAMPLE.encode() * 3, "gzip"))
    with open_trace(source, chunk_accesses=2) as stream:
        assert write_trace(tmp_path / "t.mvt.zst", stream) == 15
    back = read_trace(tmp_path / "t.mvt.zst")
    assert back.kinds.tolist() == [F, R, W, R, W] * 3
