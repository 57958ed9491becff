"""Reading trace files: text and .npy, the errors they give, the shipped examples."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memvirt.traces.model import Trace, TraceError
from memvirt.traces.readers import read_trace

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "traces"
EXPECTED = "expected an address (hex with 0x or decimal), optionally after R or W"


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def error_of(path: Path | str, **kwargs: Any) -> str:
    with pytest.raises(TraceError) as info:
        read_trace(path, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------- text traces


def test_a_text_trace_reads_hex_and_decimal_addresses(tmp_path: Path) -> None:
    t = read_trace(write(tmp_path / "t.txt", "0x1000\n4096\n0X1f\n17\n0x0\n0\n"))
    assert t.addresses.tolist() == [4096, 4096, 31, 17, 0, 0]
    assert t.writes.tolist() == [0] * 6
    assert t.addresses.dtype == np.int64 and t.writes.dtype == np.uint8
    assert not t.page_numbers


def test_r_and_w_prefixes_mark_reads_and_writes_in_either_case(tmp_path: Path) -> None:
    text = "R 0x1000\nW 4096\nr\t0x2000\nw 8192\nW,0x10\nR , 16\nw\t,\t0x20\n0x30\n"
    t = read_trace(write(tmp_path / "t.txt", text))
    assert t.addresses.tolist() == [4096, 4096, 8192, 8192, 16, 16, 32, 48]
    assert t.writes.tolist() == [0, 1, 0, 1, 1, 0, 1, 0]


def test_blank_lines_comments_and_trailing_comments_are_skipped(tmp_path: Path) -> None:
    text = "# a header\n\n   \n  # indented comment\nW 0x10  # a write\n17# no space\n\t5\t\n"
    t = read_trace(write(tmp_path / "t.txt", text))
    assert t.addresses.tolist() == [16, 17, 5]
    assert t.writes.tolist() == [1, 0, 0]


def test_crlf_lines_a_missing_final_newline_and_a_bom_are_accepted(tmp_path: Path) -> None:
    t = read_trace(write(tmp_path / "t.txt", b"\xef\xbb\xbfW 1\r\n# c\r\n2\r\n0x3"))
    assert t.addresses.tolist() == [1, 2, 3]
    assert t.writes.tolist() == [1, 0, 0]


def test_the_page_numbers_flag_is_carried_and_source_is_the_path_as_given(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "pages.trace", "7\n0\n1\n")
    t = read_trace(path, page_numbers=True)
    assert t.page_numbers
    assert t.addresses.tolist() == [7, 0, 1]
    assert t.page_numbers_for(12).tolist() == [7, 0, 1]
    assert t.source == str(path)
    assert read_trace(str(path)).source == str(path)
    assert not read_trace(path).page_numbers


def test_the_largest_int64_address_is_read(tmp_path: Path) -> None:
    t = read_trace(write(tmp_path / "t.txt", "0x7fffffffffffffff\n9223372036854775807\n"))
    assert t.addresses.tolist() == [2**63 - 1, 2**63 - 1]


def test_a_malformed_line_is_reported_with_file_line_and_text(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "# header\n0x1000\n  R -4096  \n0x2000\n")
    assert error_of(path) == f"{path}:3: {EXPECTED}, got 'R -4096'"


@pytest.mark.parametrize(
    "line",
    [
        "-3",
        "+5",
        "1.5",
        "12 34",
        "0x",
        "0xZZ",
        "12abc",
        "0x1g",
        "R",
        "R5",
        "R0x10",
        "X 12",
        "R W 12",
        "R #5",
        "R,,5",
        "5,",
        ", 5",
        "1_000",
        "ten",
    ],
)
def test_each_malformed_line_gives_the_exact_message(tmp_path: Path, line: str) -> None:
    path = write(tmp_path / "t.txt", f"1\n\n{line}\n2\n")
    assert error_of(path) == f"{path}:3: {EXPECTED}, got '{line}'"


def test_the_text_of_a_long_bad_line_is_cut_to_80_characters(tmp_path: Path) -> None:
    line = "R 0x" + "g" * 200
    path = write(tmp_path / "t.txt", f"{line}\n")
    assert error_of(path) == f"{path}:1: {EXPECTED}, got '{line[:80]}'"


def test_lines_are_counted_on_lone_carriage_returns_too(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", b"1\r2\rbad\r")
    assert error_of(path) == f"{path}:3: {EXPECTED}, got 'bad'"


def test_an_address_beyond_64_bits_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "1\n0x8000000000000000\n")
    message = error_of(path)
    assert message.startswith(f"{path}:2: the address does not fit in 64 bits")
    assert message.endswith("got '0x8000000000000000'")


def test_a_bad_line_deep_in_a_large_file_is_found(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 600_000  # several megabytes: more than one chunk of the fast reader
    addresses = rng.integers(0, 1 << 40, size=n)
    writes = rng.integers(0, 2, size=n)
    lines = [
        ("W " if w else "R ") + hex(a)
        for a, w in zip(addresses.tolist(), writes.tolist(), strict=True)
    ]
    good = write(tmp_path / "good.txt", "# big\n" + "\n".join(lines) + "\n")
    t = read_trace(good)
    assert np.array_equal(t.addresses, addresses)
    assert np.array_equal(t.writes, writes)

    lines[543_210] = "W 0x12 0x34"
    bad = write(tmp_path / "bad.txt", "# big\n" + "\n".join(lines) + "\n")
    assert error_of(bad) == f"{bad}:543212: {EXPECTED}, got 'W 0x12 0x34'"


@st.composite
def text_lines(draw: st.DrawFn) -> tuple[str, list[int], list[int]]:
    """A text trace in a random mix of the accepted spellings, and what it holds."""
    lines: list[str] = []
    addresses: list[int] = []
    writes: list[int] = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "  ", "# c", " # W 12", "\t"])))
            continue
        value = draw(st.integers(0, 2**63 - 1))
        digits = draw(
            st.sampled_from([str(value), hex(value), "0X" + format(value, "X"), "00" + str(value)])
        )
        op = draw(st.sampled_from(["", "R ", "r\t", "W ", "w,", "W , ", "R,"]))
        pad = draw(st.sampled_from(["", " ", "\t "]))
        comment = draw(st.sampled_from(["", " # note", "#x", "  "]))
        lines.append(pad + op + digits + comment)
        addresses.append(value)
        writes.append(1 if op[:1] in ("W", "w") else 0)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    end = draw(st.sampled_from(["", newline]))
    return newline.join(lines) + end, addresses, writes


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=text_lines())
def test_every_accepted_spelling_reads_back_its_values(
    tmp_path: Path, case: tuple[str, list[int], list[int]]
) -> None:
    text, addresses, writes = case
    path = write(tmp_path / "t.txt", text)
    if not addresses:
        assert error_of(path) == f"{path}: the trace has no accesses"
        return
    t = read_trace(path)
    assert t.addresses.tolist() == addresses
    assert t.writes.tolist() == writes


# ------------------------------------------------------------------ files and empties


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n\n# and another\n"])
def test_a_trace_without_accesses_is_an_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "t.txt", text)
    assert error_of(path) == f"{path}: the trace has no accesses"


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    for name in ("nothing.txt", "nothing.npy"):
        path = tmp_path / name
        assert error_of(path) == f"{path}: no such file"


def test_a_directory_is_an_error(tmp_path: Path) -> None:
    assert error_of(tmp_path) == f"{tmp_path}: is a directory, not a trace file"


def test_trace_errors_are_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        read_trace(tmp_path / "nothing.txt")


# --------------------------------------------------------------------- .npy traces


def test_a_1d_npy_array_is_all_reads(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.array([0x7000, 0, 0x1000], dtype=np.uint32))
    t = read_trace(tmp_path / "t.npy")
    assert t.addresses.tolist() == [0x7000, 0, 0x1000]
    assert t.writes.tolist() == [0, 0, 0]
    assert t.addresses.dtype == np.int64 and t.writes.dtype == np.uint8
    assert t.source == str(tmp_path / "t.npy")


def test_an_npy_of_page_numbers_carries_the_flag(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.array([7, 0, 1], dtype=np.int16))
    t = read_trace(tmp_path / "t.npy", page_numbers=True)
    assert t.page_numbers
    assert t.page_numbers_for(12).tolist() == [7, 0, 1]


def test_an_n_by_2_npy_array_holds_addresses_and_write_flags(tmp_path: Path) -> None:
    rows = np.array([[0x1000, 0], [0x2008, 1], [0x1010, 1]], dtype=np.int64)
    np.save(tmp_path / "t.npy", rows)
    t = read_trace(tmp_path / "t.npy")
    assert t.addresses.tolist() == [0x1000, 0x2008, 0x1010]
    assert t.writes.tolist() == [0, 1, 1]


@pytest.mark.parametrize("field", ["address", "addr"])
@pytest.mark.parametrize("write_type", [np.uint8, np.bool_])
def test_a_structured_npy_array_is_read_by_field_name(
    tmp_path: Path, field: str, write_type: type
) -> None:
    dtype = np.dtype([("time", np.float64), (field, np.uint64), ("write", write_type)])
    array = np.zeros(3, dtype=dtype)
    array[field] = [10, 20, 30]
    array["write"] = [1, 0, 1]
    np.save(tmp_path / "t.npy", array)
    t = read_trace(tmp_path / "t.npy")
    assert t.addresses.tolist() == [10, 20, 30]
    assert t.writes.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("array", "found"),
    [
        (np.zeros((4, 3), dtype=np.int64), "found dtype int64 with shape (4, 3)"),
        (np.zeros((2, 2, 2), dtype=np.int64), "found dtype int64 with shape (2, 2, 2)"),
        (np.array(5, dtype=np.int64), "found dtype int64 with shape ()"),
        (np.array([1.0, 2.0]), "found dtype float64 with shape (2,)"),
        (np.array([True, False]), "found dtype bool with shape (2,)"),
        (np.array(["0x10"]), "found dtype <U4 with shape (1,)"),
        (
            np.zeros(2, dtype=[("address", np.int64), ("size", np.int64)]),
            "found dtype [('address', '<i8'), ('size', '<i8')] with shape (2,)",
        ),
    ],
)
def test_an_npy_array_of_another_shape_or_dtype_is_rejected(
    tmp_path: Path, array: np.ndarray, found: str
) -> None:
    path = tmp_path / "t.npy"
    np.save(path, array)
    message = error_of(path)
    assert message.startswith(f"{path}: expected a 1-D integer array of addresses")
    assert "(n, 2)" in message and "'address' (or 'addr') and 'write'" in message
    assert found in message


def test_an_object_npy_array_is_rejected_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    np.save(path, np.array([1, "two"], dtype=object), allow_pickle=True)
    message = error_of(path)
    assert message.startswith(f"{path}: expected a 1-D integer array")
    assert "Python objects" in message


@pytest.mark.parametrize(
    "array",
    [
        np.array([5, -1, 7], dtype=np.int64),
        np.array([[5, 0], [-1, 1]], dtype=np.int32),
    ],
)
def test_negative_npy_addresses_are_rejected(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "t.npy"
    np.save(path, array)
    message = error_of(path)
    assert message.startswith(f"{path}: addresses must be non-negative")
    assert "-1 at index 1" in message
    assert "page numbers must be non-negative" in error_of(path, page_numbers=True)


def test_npy_values_beyond_int64_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    np.save(path, np.array([1, 2**63], dtype=np.uint64))
    assert error_of(path).startswith(f"{path}: addresses must fit in a signed 64-bit integer")


def test_npy_write_flags_must_be_0_or_1(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    np.save(path, np.array([[1, 0], [2, 2]], dtype=np.int64))
    message = error_of(path)
    assert message.startswith(f"{path}: write flags must be 0 (read) or 1 (write)")
    assert "holds 2 at index 1" in message


def test_an_empty_npy_array_is_a_trace_without_accesses(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    np.save(path, np.zeros(0, dtype=np.int64))
    assert error_of(path) == f"{path}: the trace has no accesses"


@pytest.mark.parametrize(
    "content",
    [b"0x1000\n0x2000\n", b"\x93NUMPY\x01\x00garbage", b""],
)
def test_a_file_that_is_not_npy_is_reported_as_such(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path / "t.npy", content)
    assert error_of(path).startswith(f"{path}: not a NumPy .npy file (")


def test_a_truncated_npy_file_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    np.save(path, np.arange(1000, dtype=np.int64))
    path.write_bytes(path.read_bytes()[:-100])
    assert error_of(path).startswith(f"{path}: not a NumPy .npy file (")


def test_an_npz_archive_is_refused_with_a_hint(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", a=np.arange(3))
    assert "numpy.save" in error_of(tmp_path / "t.npz")
    (tmp_path / "t.npz").rename(tmp_path / "t.npy")
    message = error_of(tmp_path / "t.npy")
    assert message.startswith(f"{tmp_path / 't.npy'}: not a NumPy .npy file (")
    assert "zip" in message


# ------------------------------------------------------------ the shipped examples


def test_the_textbook_trace_is_silberschatzs_reference_string() -> None:
    t = read_trace(EXAMPLES / "textbook.txt")
    assert len(t) == 20
    pages = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]
    assert t.page_numbers_for(12).tolist() == pages
    assert t.addresses.tolist() == [p * 4096 for p in pages]
    assert not t.writes.any()
    assert not t.page_numbers


def test_the_belady_trace_is_the_anomaly_string() -> None:
    t = read_trace(EXAMPLES / "belady.txt")
    assert len(t) == 12
    assert t.page_numbers_for(12).tolist() == [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]
    assert t.addresses.tolist() == [p * 4096 for p in t.page_numbers_for(12).tolist()]
    assert not t.writes.any()


def test_the_zipf_trace_has_its_documented_shape() -> None:
    path = EXAMPLES / "zipf-small.npy"
    assert path.stat().st_size < 4 * 1024 * 1024
    raw = np.load(path, allow_pickle=False)
    assert raw.dtype == np.int64 and raw.shape == (200_000, 2)
    t = read_trace(path)
    assert len(t) == 200_000
    pages = t.page_numbers_for(12)
    assert pages.min() >= 0 and pages.max() < 20_000
    assert np.all(t.addresses % 8 == 0)
    assert 0.29 < t.writes.mean() < 0.31
    # Zipf with exponent 1 over 20,000 pages: the most popular page takes
    # 1 / H(20000), about 9.3%, of the accesses.
    assert 0.085 < np.bincount(pages).max() / len(t) < 0.10


def test_the_zipf_trace_is_what_its_script_makes() -> None:
    script = runpy.run_path(str(EXAMPLES / "make_zipf_small.py"), run_name="make_zipf_small")
    assert np.array_equal(script["make_trace"](), np.load(EXAMPLES / "zipf-small.npy"))


def test_read_trace_returns_a_trace(tmp_path: Path) -> None:
    assert isinstance(read_trace(write(tmp_path / "t.txt", "1\n")), Trace)
