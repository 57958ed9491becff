"""Reading traces from files, whole or as a stream of chunks.

A trace file holds the memory accesses of one process in order. memvirt
reads four formats, each of them also gzip- or zstd-compressed:

========  ==========================================================================
text      one access per line: ``R 0x7000``, ``W 4096``, ``0x10`` (see below)
npy       a NumPy array written by :func:`numpy.save`
lackey    the output of ``valgrind --tool=lackey --trace-mem=yes`` (see
          :mod:`memvirt.traces.formats`)
binary    memvirt's own ``.mvt`` format: a 32-byte header and 8 bytes per access
========  ==========================================================================

:func:`read_trace` returns the whole trace as one
:class:`~memvirt.traces.model.Trace`. :func:`open_trace` returns a
:class:`TraceStream` that yields it in chunks of a bounded number of
accesses, so a trace larger than memory can be replayed: compressed files
are decompressed as they are read, never whole. ``docs/traces.md`` is the
user's guide to every format, with the binary header byte by byte.

Which format
------------
Compression is recognised by the file's first bytes (gzip ``1f 8b``, zstd
``28 b5 2f fd``), whatever its name. Then, unless ``format`` is given, the
decompressed bytes decide: the ``.npy`` magic ``\\x93NUMPY`` means npy, the
magic ``MVTRACE\\0`` means binary; otherwise a name ending in ``.npy`` or
``.mvt`` (before any ``.gz``/``.zst``) still means that format (and the file
is reported as not being one); otherwise the file is lackey if it starts
with valgrind's ``==`` lines or its first line that is not blank starts with
a lackey op letter (``I``, ``L``, ``S``, ``M``) and a space, and text if not.

Text traces
-----------
One access per line::

    # reads and writes, in hex and decimal
    0x7000
    R 0x0
    W 4096          # a write to the page at 0x1000
    w,0x2a10

- An address is hexadecimal with a ``0x`` prefix (``0x7000``, ``0X7F3a``) or
  decimal (``28672``). Negative numbers are not addresses.
- An optional ``R`` (read) or ``W`` (write), in either case, may come first,
  separated from the address by spaces, tabs or a comma. Without one, the
  access is a read.
- Blank lines and lines starting with ``#`` are skipped, and a ``#`` after
  the address starts a comment that runs to the end of the line.
- Spaces and tabs around a line are ignored. Lines end in ``\\n``, ``\\r\\n``
  or ``\\r``; a UTF-8 byte-order mark at the start of the file is ignored.

A line that is none of these stops the reading with an error that names the
file and the line (counted from 1)::

    trace.txt:3: expected an address (hex with 0x or decimal), optionally after R or W, got 'R -12'

With ``skip_bad=True`` such lines (text and lackey) are skipped instead and
counted in :attr:`TraceStream.bad_lines`.

NumPy traces (``.npy``)
-----------------------
A file written by :func:`numpy.save`, holding one of:

- a 1-D integer array of addresses: every access is a read;
- an integer array of shape ``(n, 2)``: column 0 the address, column 1 the
  write flag (0 for a read, 1 for a write);
- a 1-D structured array with an integer field ``address`` (or ``addr``) and
  a field ``write`` (integer 0/1 or boolean), and optionally a field
  ``fetch`` marking instruction fetches; other fields are ignored.

Values must be non-negative and fit in a signed 64-bit integer. Arrays of
Python objects (which need pickle) are refused, and so are ``.npz`` archives:
save the one array with :func:`numpy.save`.

Addresses or page numbers
-------------------------
Every value of a text or npy trace is a byte address unless
``page_numbers=True`` (the ``--page-numbers`` option of ``memvirt replay``),
in which case each value is a virtual page number. A binary trace says which
in its header; a lackey trace holds byte addresses.

A trace with no accesses (an empty file, or only comments) is an error for
:func:`read_trace`, and so is a missing, unreadable or malformed file: each
raises :class:`~memvirt.traces.model.TraceError` with a message that says
which file, where, and what was expected.
"""

from __future__ import annotations

import ast
import gzip
import os
import re
import stat
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard
from numpy.lib.stride_tricks import sliding_window_view

from memvirt.traces.formats import (
    BINARY_HEADER_BYTES,
    BINARY_MAGIC,
    BINARY_RECORD_BYTES,
    GZIP_MAGIC,
    LACKEY_BAD,
    LACKEY_EXPECTED,
    LACKEY_FETCHES,
    LACKEY_LINES,
    LACKEY_OUT,
    LACKEY_POSITION,
    LACKEY_STATUS_FIELDS,
    LACKEY_STOP,
    NPY_MAGIC,
    STOP_BAD,
    STOP_FULL,
    UNKNOWN_COUNT,
    ZSTD_MAGIC,
    BinaryHeader,
    decode_records,
    lackey_slack,
    parse_lackey,
    unpack_header,
)
from memvirt.traces.model import Trace, TraceError

__all__ = ["FORMATS", "TraceStream", "concatenate", "open_trace", "read_trace"]

#: The trace formats, by the names ``format=`` takes.
FORMATS = ("text", "npy", "lackey", "binary")

_INT64_MAX = (1 << 63) - 1
_ERROR_TEXT_CHARS = 80
_ZIP_MAGIC = b"PK\x03\x04"
_BOM = b"\xef\xbb\xbf"
_COMPRESSED_SUFFIXES = (".gz", ".zst")
_SNIFF_BYTES = 1 << 16  # how far ahead the format sniffer looks for a first record
_DEFAULT_CHUNK = 1 << 22
# Bytes of text (or lackey) read at a time, per access wanted in a chunk: a
# typical line is 10 to 20 bytes. Bounded so that a huge chunk_accesses does
# not mean a huge read.
_TEXT_BYTES_PER_ACCESS = 16
_MAX_TEXT_READ = 1 << 26

# How a lackey record starts: an op letter and a space (see _sniff).
_LACKEY_START = re.compile(rb"[ \t]*[ILSM][ \t]")

# The text of a malformed-line error, after "FILE:LINE: ".
_EXPECTED_LINE = "expected an address (hex with 0x or decimal), optionally after R or W"

# One access, in a line stripped of surrounding whitespace (the reference grammar).
_ACCESS = re.compile(
    rb"(?:([RrWw])(?:[ \t]*,[ \t]*|[ \t]+))?"  # optional R/W, then spaces/tabs or a comma
    rb"(?:0[xX]([0-9a-fA-F]+)|([0-9]+))"  # hex with 0x, or decimal
    rb"(?:[ \t]*#.*)?"  # optional trailing comment
)

# The fast path reads a chunk of whole lines at once with NumPy, bytes in,
# arrays out: it finds the tokens (runs of bytes between spaces, tabs, commas
# and line ends), checks that each line is blank, NUMBER, OP NUMBER or
# OP , NUMBER, and converts the numbers. It takes numbers short enough to
# fit in an int64 (15 hex digits, 18 decimal ones). Anything else sends the
# chunk to the line-by-line reader, which has the last word on errors.
_FAST_BYTES = b"0123456789abcdefABCDEFxXRrWw \t,\n"
_COMMENT = re.compile(rb"#[^\n]*")
_MAX_DECIMAL_DIGITS = 18
_MAX_HEX_DIGITS = 15
_CHUNK_BYTES = 1 << 22
_SEP, _OP, _COMMA, _NUM = 0, 1, 2, 3


def _byte_table(members: bytes) -> npt.NDArray[np.bool_]:
    table = np.zeros(256, dtype=np.bool_)
    table[np.frombuffer(members, dtype=np.uint8)] = True
    return table


_IS_TOKEN = _byte_table(b"0123456789abcdefABCDEFxXRrWw")
_NOT_DECIMAL = _byte_table(b"abcdefABCDEFxXRrWw")  # token bytes that are not digits
_NOT_HEX = _byte_table(b"xXRrWw")  # token bytes that are not hex digits
_IS_X = _byte_table(b"xX")
_DIGIT_VALUE = np.zeros(256, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _DIGIT_VALUE[_c] = _i
    _DIGIT_VALUE[bytes([_c]).upper()[0]] = _i
del _i, _c

_NPY_EXPECTED = (
    "expected a 1-D integer array of addresses, an (n, 2) integer array of "
    "(address, is_write) rows, or a 1-D structured array with fields "
    "'address' (or 'addr') and 'write'"
)

Arrays = tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]


# ------------------------------------------------------------------ the public API


def read_trace(
    path: str | Path,
    *,
    format: str | None = None,
    page_numbers: bool = False,
    skip_bad: bool = False,
    drop_fetches: bool = False,
    page_size: int = 4096,
    chunk_accesses: int = _DEFAULT_CHUNK,
) -> Trace:
    """Read the whole trace in ``path`` (any format, see the module doc) as one Trace.

    The options are those of :func:`open_trace`. The trace's ``source`` is
    ``path`` as given. Raises :class:`~memvirt.traces.model.TraceError` for a
    missing, unreadable, malformed or empty trace.
    """
    with open_trace(
        path,
        format=format,
        page_numbers=page_numbers,
        skip_bad=skip_bad,
        drop_fetches=drop_fetches,
        page_size=page_size,
        chunk_accesses=chunk_accesses,
    ) as stream:
        return stream.read_all()


def open_trace(
    path: str | Path,
    *,
    format: str | None = None,
    page_numbers: bool = False,
    skip_bad: bool = False,
    drop_fetches: bool = False,
    page_size: int = 4096,
    chunk_accesses: int = _DEFAULT_CHUNK,
) -> TraceStream:
    """Open the trace in ``path`` for reading in chunks of at most about ``chunk_accesses``.

    ``format`` is one of :data:`FORMATS`, or None to recognise it from the
    file. ``page_numbers`` says that a text or npy trace holds page numbers.
    ``skip_bad`` skips (and counts) malformed text and lackey lines instead
    of raising. ``drop_fetches`` leaves out instruction fetches.
    ``page_size`` is the page size at which a lackey access that crosses a
    page boundary is split in two. The file is opened, and its format and
    header checked, before this returns.
    """
    return TraceStream(
        path,
        format=format,
        page_numbers=page_numbers,
        skip_bad=skip_bad,
        drop_fetches=drop_fetches,
        page_size=page_size,
        chunk_accesses=chunk_accesses,
    )


def concatenate(chunks: list[Trace], *, source: str | None = None) -> Trace:
    """One trace of ``chunks`` in order (they must agree on ``page_numbers``)."""
    if not chunks:
        raise TraceError(f"{source or '<memory>'}: the trace has no accesses")
    first = chunks[0]
    name = first.source if source is None else source
    if len(chunks) == 1 and first.source == name:
        return first
    if any(c.page_numbers != first.page_numbers for c in chunks):
        raise TraceError(f"{name}: chunks mix byte addresses and page numbers")
    fetches = None
    if any(c.fetches is not None for c in chunks):
        fetches = np.concatenate(
            [
                c.fetches.astype(np.uint8, copy=False)
                if c.fetches is not None
                else np.zeros(len(c), dtype=np.uint8)
                for c in chunks
            ]
        )
    return Trace(
        np.concatenate([c.addresses for c in chunks]).astype(np.int64, copy=False),
        np.concatenate([c.writes for c in chunks]).astype(np.uint8, copy=False),
        page_numbers=first.page_numbers,
        source=name,
        fetches=fetches,
    )


class TraceStream:
    """An open trace file: iterate over it for its accesses as Trace chunks.

    A context manager (``with open_trace(path) as stream: for chunk in
    stream: ...``) that reads the file once, front to back. Attributes:

    - ``format``: "text", "npy", "lackey" or "binary";
    - ``source``: the path as given, which every chunk and error names;
    - ``page_numbers``: whether the values are page numbers;
    - ``accesses``: accesses yielded so far (all of them after iteration);
    - ``bad_lines``: malformed lines skipped so far (with ``skip_bad``).
    """

    format: str
    source: str
    page_numbers: bool
    accesses: int
    bad_lines: int

    def __init__(
        self,
        path: str | Path,
        *,
        format: str | None = None,
        page_numbers: bool = False,
        skip_bad: bool = False,
        drop_fetches: bool = False,
        page_size: int = 4096,
        chunk_accesses: int = _DEFAULT_CHUNK,
    ) -> None:
        self.source = str(path)
        if format is not None and format not in FORMATS:
            raise TraceError(
                f"{self.source}: unknown trace format '{format}'; known: {', '.join(FORMATS)}"
            )
        if isinstance(chunk_accesses, bool) or chunk_accesses < 1:
            raise ValueError(f"chunk_accesses must be at least 1, got {chunk_accesses}")
        if page_size < 1 or page_size & (page_size - 1) or page_size > 1 << 62:
            raise ValueError(f"page_size must be a power of two, got {page_size}")
        self.page_numbers = page_numbers
        self.accesses = 0
        self.bad_lines = 0
        self._skip_bad = skip_bad
        self._drop_fetches = drop_fetches
        self._page_shift = page_size.bit_length() - 1
        self._chunk = chunk_accesses
        self._started = False
        self._binary: BinaryHeader | None = None
        self._npy: _NpyHeader | None = None

        inner = _inner_name(Path(path).name)
        if Path(inner).suffix == ".npz":
            raise TraceError(
                f"{self.source}: .npz archives are not read; save one array with numpy.save as .npy"
            )
        self._input = _Input(Path(path), self.source)
        try:
            self.format = format if format is not None else _sniff(self._input, inner)
            self._open_format()
        except BaseException:
            self._input.close()
            raise
        self._chunks: Generator[Trace, None, None] = self._generate()

    def _open_format(self) -> None:
        """Read and check what comes before the accesses: a header, or nothing."""
        if self.format == "binary":
            header = self._input.read(BINARY_HEADER_BYTES)
            self._binary = unpack_header(header, self.source)
            if self.page_numbers and not self._binary.page_numbers:
                raise TraceError(
                    f"{self.source}: the binary trace's header says it holds byte addresses, "
                    f"not page numbers"
                )
            self.page_numbers = self._binary.page_numbers
            size = self._input.plain_size()
            if size is not None:
                _check_binary_size(self._binary, size - BINARY_HEADER_BYTES, self.source)
        elif self.format == "npy":
            self._npy = _read_npy_header(self._input, self.source, self.page_numbers)
        elif self.format == "lackey" and self.page_numbers:
            raise TraceError(
                f"{self.source}: a lackey trace holds byte addresses, not page numbers"
            )

    def __enter__(self) -> TraceStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (iteration ends early if it was under way)."""
        self._chunks.close()
        self._input.close()

    def __del__(self) -> None:
        # A stream dropped without being read or closed (a run that stops before its
        # trace's turn) still closes its file. Not from a half-built stream: __init__
        # closed that one, and it may lack the attributes.
        inp = self.__dict__.get("_input")
        if inp is not None and "_chunks" in self.__dict__:
            inp.close()

    def read_all(self) -> Trace:
        """The rest of the trace as one Trace; an error when it holds no accesses."""
        chunks = list(self)
        if not chunks:
            raise TraceError(f"{self.source}: the trace has no accesses")
        return concatenate(chunks, source=self.source)

    def __iter__(self) -> Iterator[Trace]:
        if self._started:
            raise TraceError(f"{self.source}: a trace stream is read once; open the trace again")
        self._started = True
        return self._chunks

    def _generate(self) -> Generator[Trace, None, None]:
        chunks: Iterator[Trace]
        if self.format == "binary":
            chunks = self._binary_chunks()
        elif self.format == "npy":
            chunks = self._npy_chunks()
        elif self.format == "lackey":
            chunks = self._lackey_chunks()
        else:
            chunks = self._text_chunks()
        try:
            for chunk in chunks:
                self.accesses += len(chunk)
                yield chunk
        finally:
            self._input.close()

    def _trace(
        self,
        addresses: npt.NDArray[np.int64],
        writes: npt.NDArray[np.uint8],
        fetches: npt.NDArray[np.uint8] | None = None,
    ) -> Trace:
        if fetches is not None and self._drop_fetches:
            keep = fetches == 0
            addresses, writes, fetches = addresses[keep], writes[keep], None
        return Trace(
            addresses, writes, page_numbers=self.page_numbers, source=self.source, fetches=fetches
        )

    def _pieces(
        self,
        addresses: npt.NDArray[np.int64],
        writes: npt.NDArray[np.uint8],
        fetches: npt.NDArray[np.uint8] | None = None,
    ) -> Iterator[Trace]:
        """Arrays cut into chunks of at most ``chunk_accesses``."""
        n = addresses.shape[0]
        for start in range(0, n, self._chunk):
            stop = min(n, start + self._chunk)
            piece = self._trace(
                addresses[start:stop],
                writes[start:stop],
                None if fetches is None else fetches[start:stop],
            )
            if len(piece):
                yield piece

    def _text_read_size(self) -> int:
        return min(_MAX_TEXT_READ, max(16, self._chunk * _TEXT_BYTES_PER_ACCESS))

    # ---------------------------------------------------------------- text

    def _text_chunks(self) -> Iterator[Trace]:
        inp = self._input
        if inp.peek(len(_BOM)) == _BOM:
            inp.read(len(_BOM))
        read_size = self._text_read_size()
        pending = b""
        line = 1  # the number of pending's first line
        while True:
            raw = inp.read(read_size)
            data = pending + raw
            if not raw:
                chunk, pending = data, b""
            else:
                cut = _after_last_line_end(data)
                if cut == 0:
                    pending = data  # one line longer than a read: read on
                    continue
                chunk, pending = data[:cut], data[cut:]
            addresses, writes, bad = _parse_text(
                chunk, self.source, self.page_numbers, first_line=line, skip_bad=self._skip_bad
            )
            self.bad_lines += bad
            yield from self._pieces(addresses, writes)
            if not raw:
                return
            line += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")

    # ---------------------------------------------------------------- lackey

    def _lackey_chunks(self) -> Iterator[Trace]:
        inp = self._input
        buf = np.empty(self._text_read_size(), dtype=np.uint8)
        held = 0  # buf[:held] holds bytes not parsed yet
        line = 1  # the number of buf[0]'s line
        eof = False
        while not eof:
            if held == buf.shape[0]:  # one line longer than the buffer: grow it
                buf = np.concatenate([buf, np.empty_like(buf)])
            room = buf.shape[0] - held
            got = inp.readinto(buf.data[held:])
            eof = got < room
            end = held + got
            position, line = yield from self._lackey_parse(buf, 0, end, eof, line)
            held = end - position
            buf[:held] = buf[position:end]

    def _lackey_parse(
        self, buf: npt.NDArray[np.uint8], position: int, end: int, final: bool, line: int
    ) -> Generator[Trace, None, tuple[int, int]]:
        """The accesses of the whole lines in ``buf[position:end]`` (and of an unfinished
        last one if ``final``), the first of them numbered ``line``; returns where
        parsing stopped and that line's number."""
        shift = self._page_shift
        limit = self._chunk
        capacity = limit + lackey_slack(shift)
        status = np.zeros(LACKEY_STATUS_FIELDS, dtype=np.int64)
        while True:
            addresses = np.empty(capacity, dtype=np.int64)
            writes = np.empty(capacity, dtype=np.uint8)
            fetches = np.empty(capacity, dtype=np.uint8)
            parse_lackey(
                buf,
                position,
                end,
                final,
                shift,
                self._drop_fetches,
                self._skip_bad,
                limit,
                addresses,
                writes,
                fetches,
                status,
            )
            self.bad_lines += int(status[LACKEY_BAD])
            if status[LACKEY_STOP] == STOP_BAD:
                at = int(status[LACKEY_POSITION])
                number = line + int(status[LACKEY_LINES])
                text = _line_at(buf, at, end)
                raise TraceError(f"{self.source}:{number}: {LACKEY_EXPECTED}, got '{text}'")
            n = int(status[LACKEY_OUT])
            if n:
                yield Trace(
                    _trimmed(addresses, n),
                    _trimmed(writes, n),
                    page_numbers=False,
                    source=self.source,
                    fetches=_trimmed(fetches, n) if status[LACKEY_FETCHES] else None,
                )
            line += int(status[LACKEY_LINES])
            position = int(status[LACKEY_POSITION])
            if status[LACKEY_STOP] != STOP_FULL:
                return position, line

    # ---------------------------------------------------------------- binary

    def _binary_chunks(self) -> Iterator[Trace]:
        header = self._binary
        assert header is not None
        inp = self._input
        known = header.count != UNKNOWN_COUNT
        raw = np.empty(self._chunk, dtype="<u8")
        status = np.zeros(3, dtype=np.int64)
        index = 0  # records read so far
        while True:
            want = self._chunk if not known else min(self._chunk, header.count - index)
            if want == 0:
                extra = inp.skip_to_end()
                if extra:
                    _check_binary_size(header, index * BINARY_RECORD_BYTES + extra, self.source)
                return
            got = inp.readinto(raw[:want].data.cast("B"))
            whole = got // BINARY_RECORD_BYTES
            if whole:
                addresses = np.empty(whole, dtype=np.int64)
                writes = np.empty(whole, dtype=np.uint8)
                fetches = np.empty(whole, dtype=np.uint8)
                decode_records(raw[:whole], self._drop_fetches, addresses, writes, fetches, status)
                if status[1] >= 0:
                    bad = index + int(status[1])
                    raise TraceError(
                        f"{self.source}: record {bad} has kind 3 "
                        f"(expected 0 read, 1 write or 2 fetch)"
                    )
                n = int(status[0])
                if n:
                    yield Trace(
                        _trimmed(addresses, n),
                        _trimmed(writes, n),
                        page_numbers=header.page_numbers,
                        source=self.source,
                        fetches=_trimmed(fetches, n) if status[2] else None,
                    )
                index += whole
            if got < want * BINARY_RECORD_BYTES:  # the end of the file
                body = index * BINARY_RECORD_BYTES + got % BINARY_RECORD_BYTES
                _check_binary_size(header, body, self.source)
                return

    # ---------------------------------------------------------------- npy

    def _npy_chunks(self) -> Iterator[Trace]:
        header = self._npy
        assert header is not None
        inp = self._input
        rows = header.rows
        row_bytes = header.dtype.itemsize * (2 if len(header.shape) == 2 else 1)
        step = self._chunk
        if header.fortran_order and len(header.shape) == 2:
            step = max(rows, 1)  # column after column: only the whole array pairs them up
        for start in range(0, rows, step):
            count = min(step, rows - start)
            data = _read_up_to(inp, count * row_bytes)
            if len(data) < count * row_bytes:
                held = start + len(data) // row_bytes
                raise TraceError(
                    f"{self.source}: not a NumPy .npy file (the file ends inside the array: "
                    f"the header says {rows} rows, the file holds {held})"
                )
            array = np.frombuffer(data, dtype=header.dtype)
            if len(header.shape) == 2:
                array = array.reshape((count, 2), order="F" if header.fortran_order else "C")
            addresses, writes, fetches = _npy_columns(
                array, header, self.source, self.page_numbers, start
            )
            yield from self._pieces(addresses, writes, fetches)


def _read_up_to(inp: _Input, n: int) -> bytes:
    """The next ``n`` bytes, fewer at the end, read in bounded pieces: a header may announce
    more rows than any file holds (or than one read can ask for), and memory should grow
    with the bytes found, not with the bytes announced."""
    if n <= _MAX_TEXT_READ:
        return inp.read(n)
    parts: list[bytes] = []
    got = 0
    while got < n:
        piece = inp.read(min(_MAX_TEXT_READ, n - got))
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


def _trimmed(array: npt.NDArray[Any], n: int) -> npt.NDArray[Any]:
    """``array[:n]``, copied when that frees most of a large buffer."""
    if n == array.shape[0]:
        return array
    return array[:n].copy() if n < array.shape[0] // 2 else array[:n]


def _check_binary_size(header: BinaryHeader, body: int, source: str) -> None:
    """Raise unless ``body`` bytes after the header hold exactly the records it announces."""
    whole, partial = divmod(body, BINARY_RECORD_BYTES)
    if header.count == UNKNOWN_COUNT:
        if partial:
            raise TraceError(f"{source}: truncated: file ends inside record {whole}")
        return
    expected = header.count
    if body < expected * BINARY_RECORD_BYTES:
        if partial:
            raise TraceError(
                f"{source}: truncated: header says {expected} records, "
                f"file ends inside record {whole}"
            )
        raise TraceError(f"{source}: truncated: header says {expected} records, file holds {whole}")
    if body > expected * BINARY_RECORD_BYTES:
        extra = body - expected * BINARY_RECORD_BYTES
        raise TraceError(
            f"{source}: header says {expected} records, but the file holds {extra} more "
            f"bytes after them"
        )


def _inner_name(name: str) -> str:
    """A file name without its compression suffix (``t.npy.gz`` → ``t.npy``), lowercased."""
    lower = name.lower()
    for suffix in _COMPRESSED_SUFFIXES:
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return lower


def _sniff(inp: _Input, inner_name: str) -> str:
    """The format of the decompressed bytes ahead in ``inp``."""
    head = inp.peek(_SNIFF_BYTES)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(BINARY_MAGIC):
        return "binary"
    suffix = Path(inner_name).suffix
    if suffix == ".npy":
        return "npy"
    if suffix == ".mvt":
        return "binary"
    lines = head.split(b"\n")
    if len(head) == _SNIFF_BYTES:
        lines.pop()  # maybe cut short
    valgrind = False  # valgrind's "==PID==" lines came first
    for line in lines:
        if line.startswith(b"=="):
            valgrind = True
        elif line.strip(b" \t\r"):
            # No text trace line starts with I, L, S or M: a malformed record
            # is still lackey, and is reported as such.
            return "lackey" if valgrind or _LACKEY_START.match(line) else "text"
    return "lackey" if valgrind else "text"


def _after_last_line_end(data: bytes) -> int:
    """The offset after the last line end that no later byte can extend, or 0."""
    newline = data.rfind(b"\n")
    # a "\r" at the very end may be the first half of "\r\n"
    carriage = data.rfind(b"\r", 0, len(data) - 1)
    return max(newline, carriage) + 1


def _line_at(buf: npt.NDArray[np.uint8], start: int, end: int) -> str:
    """The line starting at ``buf[start]``, stripped, as an error message shows it."""
    stop = start
    while stop < end and buf[stop] != 10 and stop - start < 4 * _ERROR_TEXT_CHARS:
        stop += 1
    return _shown(bytes(buf[start:stop]).strip(b" \t\r"))


def _what(page_numbers: bool) -> str:
    return "page number" if page_numbers else "address"


def _plural(what: str) -> str:
    return what + ("es" if what.endswith("s") else "s")


# ------------------------------------------------------------------ the bytes of a file


class _Input:
    """A file's bytes, decompressed as they are read, with a look-ahead for sniffing."""

    def __init__(self, path: Path, source: str) -> None:
        self.source = source
        self.compression: str | None = None
        self._head = b""  # bytes peeked at and not read yet
        self._delivered = 0  # decompressed bytes handed out or peeked
        self._path = path
        self._file = _open_file(path, source)
        self._stream: Any = self._file
        try:
            magic = self._file.peek(len(ZSTD_MAGIC))[: len(ZSTD_MAGIC)]
        except OSError as err:
            self._file.close()
            raise _read_error(path, source, err) from None
        if magic.startswith(GZIP_MAGIC):
            self.compression = "gzip"
            self._stream = gzip.GzipFile(fileobj=self._file, mode="rb")
        elif magic.startswith(ZSTD_MAGIC):
            self.compression = "zstd"
            self._stream = zstandard.ZstdDecompressor().stream_reader(
                self._file, read_across_frames=True, closefd=False
            )

    def plain_size(self) -> int | None:
        """The file's size when its bytes are read as they are (not compressed, a regular file)."""
        if self.compression is not None:
            return None
        try:
            info = os.fstat(self._file.fileno())
        except OSError:
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def _raw_read(self, n: int) -> bytes:
        try:
            data: bytes = self._stream.read(n)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as err:
            raise self._data_error(err) from None
        self._delivered += len(data)
        return data

    def _data_error(self, err: BaseException) -> TraceError:
        if self.compression is None:
            return _read_error(self._path, self.source, err)
        return TraceError(
            f"{self.source}: the {self.compression} data is corrupt or truncated after "
            f"{self._delivered} decompressed bytes ({err})"
        )

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes ahead (fewer only at the end), without consuming them."""
        while len(self._head) < n:
            more = self._raw_read(n - len(self._head))
            if not more:
                break
            self._head += more
        return self._head[:n]

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer only at the end)."""
        if self._head:
            taken, self._head = self._head[:n], self._head[n:]
            if len(taken) == n:
                return taken
            return taken + self._read_fully(n - len(taken))
        return self._read_fully(n)

    def _read_fully(self, n: int) -> bytes:
        first = self._raw_read(n)
        if len(first) == n or not first:
            return first
        parts = [first]
        got = len(first)
        while got < n:
            more = self._raw_read(n - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def readinto(self, target: memoryview) -> int:
        """Fill ``target`` with the next bytes; return how many (fewer only at the end)."""
        size = target.nbytes
        filled = 0
        if self._head:
            taken = self._head[:size]
            target[: len(taken)] = taken
            self._head = self._head[len(taken) :]
            filled = len(taken)
        while filled < size:
            try:
                got = self._stream.readinto(target[filled:])
            except (OSError, EOFError, zlib.error, zstandard.ZstdError) as err:
                raise self._data_error(err) from None
            if not got:
                break
            self._delivered += got
            filled += got
        return filled

    def skip_to_end(self) -> int:
        """Read to the end of the data; return how many bytes were left."""
        left = len(self._head)
        self._head = b""
        while True:
            data = self._raw_read(1 << 20)
            if not data:
                return left
            left += len(data)

    def close(self) -> None:
        if self._stream is not self._file:
            self._stream.close()
        self._file.close()


def _open_file(path: Path, source: str) -> Any:
    try:
        return open(path, "rb")  # closed by _Input.close
    except OSError as err:
        raise _read_error(path, source, err) from None


def _read_error(path: Path, source: str, err: BaseException) -> TraceError:
    """A TraceError saying why the file's bytes cannot be had."""
    if isinstance(err, FileNotFoundError):
        return TraceError(f"{source}: no such file")
    if isinstance(err, IsADirectoryError) or path.is_dir():
        return TraceError(f"{source}: is a directory, not a trace file")
    if isinstance(err, PermissionError):
        return TraceError(f"{source}: cannot read the file (permission denied)")
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return TraceError(f"{source}: cannot read the file ({reason})")


# --------------------------------------------------------------------------- text


def _parse_text(
    data: bytes, source: str, page_numbers: bool, *, first_line: int = 1, skip_bad: bool = False
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], int]:
    """The accesses in whole lines of text, the first numbered ``first_line``, and
    how many bad lines were skipped."""
    fast = _parse_text_fast(data)
    if fast is not None:
        return fast[0], fast[1], 0
    return _parse_text_lines(data, source, page_numbers, first_line, skip_bad)


def _parse_text_fast(
    data: bytes,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]] | None:
    """Every line at once, or None when some line needs the careful reader."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
        if b"\r" in data:
            return None  # a lone carriage return ends a line too: leave it to splitlines()
    if b"#" in data:
        data = _COMMENT.sub(b"", data)
    if data.translate(None, _FAST_BYTES):
        return None  # a byte that no access is made of
    if not data.endswith(b"\n"):
        data += b"\n"
    addresses: list[npt.NDArray[np.int64]] = []
    writes: list[npt.NDArray[np.uint8]] = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start + _CHUNK_BYTES) + 1 or len(data)
        converted = _parse_chunk(
            np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
        )
        start = end
        if converted is None:
            return None
        addresses.append(converted[0])
        writes.append(converted[1])
    if not addresses:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    return np.concatenate(addresses), np.concatenate(writes)


def _parse_chunk(
    b: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]] | None:
    """Whole lines (the last ending in a line end) of bytes from :data:`_FAST_BYTES`."""
    is_token = _IS_TOKEN[b]
    is_line_end = b == ord("\n")
    is_comma = b == ord(",")
    # A token starts where a token byte follows a non-token byte, ends before one.
    starts_token = is_token.copy()
    starts_token[1:] &= ~is_token[:-1]
    ends_token = is_token.copy()
    ends_token[:-1] &= ~is_token[1:]  # the last byte is a line end
    first = np.flatnonzero(starts_token)
    stop = np.flatnonzero(ends_token) + 1
    length = stop - first
    lead = b[first]
    second = b[first + 1]  # within the chunk: a token is followed by a line end at the latest

    # The kind of each token: R/W, a decimal number, a 0x number (or none: give up).
    is_write_op = (length == 1) & ((lead == ord("W")) | (lead == ord("w")))
    is_op = is_write_op | ((length == 1) & ((lead == ord("R")) | (lead == ord("r"))))
    stray_x = _IS_X[b]
    stray_x[first + 1] = False  # the x of 0x
    not_decimal = _count_in_tokens(_NOT_DECIMAL[b], first, stop) > 0
    not_hex = _count_in_tokens(_NOT_HEX[b] & ~_IS_X[b] | stray_x, first, stop) > 0
    is_decimal = ~not_decimal & (length <= _MAX_DECIMAL_DIGITS)
    is_hex = (
        (lead == ord("0"))
        & _IS_X[second]
        & (length >= 3)
        & (length <= 2 + _MAX_HEX_DIGITS)
        & ~not_hex
    )
    is_number = is_decimal | is_hex
    if not (is_op | is_number).all():
        return None

    # Each line is "", NUM, OP NUM or OP , NUM: each kind of token has its neighbours.
    event_mask = starts_token | is_line_end | is_comma
    kind = np.full(int(np.count_nonzero(event_mask)), _SEP, dtype=np.int8)
    events = b[event_mask]
    kind[events == ord(",")] = _COMMA
    token_event = np.flatnonzero(_IS_TOKEN[events])
    kind[token_event] = np.where(is_op, _OP, _NUM)
    before = np.empty_like(kind)
    before[0] = _SEP
    before[1:] = kind[:-1]
    after = np.empty_like(kind)
    after[-1] = _SEP
    after[:-1] = kind[1:]
    fits = np.where(
        kind == _NUM,
        after == _SEP,
        np.where(
            kind == _OP,
            (before == _SEP) & ((after == _NUM) | (after == _COMMA)),
            np.where(kind == _COMMA, (before == _OP) & (after == _NUM), True),
        ),
    )
    if not fits.all():
        return None

    numbers = np.flatnonzero(is_number)
    number_event = token_event[numbers]
    preceded = before[number_event]
    op_event = np.where(preceded == _COMMA, number_event - 2, number_event - 1)
    op_token = np.searchsorted(token_event, op_event)  # meaningful after an op only
    writes = (preceded != _SEP) & is_write_op[np.minimum(op_token, is_op.shape[0] - 1)]

    addresses = np.zeros(numbers.shape[0], dtype=np.int64)
    hexes = is_hex[numbers]
    for mask, base, skip in ((~hexes, 10, 0), (hexes, 16, 2)):
        if mask.any():
            which = numbers[mask]
            addresses[mask] = _digits_value(b, stop[which], length[which] - skip, base)
    return addresses, writes.astype(np.uint8)


def _count_in_tokens(
    flags: npt.NDArray[np.bool_], first: npt.NDArray[np.intp], stop: npt.NDArray[np.intp]
) -> npt.NDArray[np.int32]:
    """How many of ``flags`` are set in each token ``[first, stop)``."""
    before = np.zeros(flags.shape[0] + 1, dtype=np.int32)
    np.cumsum(flags, dtype=np.int32, out=before[1:])
    return before[stop] - before[first]


def _digits_value(
    b: npt.NDArray[np.uint8],
    stop: npt.NDArray[np.intp],
    count: npt.NDArray[np.intp],
    base: int,
) -> npt.NDArray[np.int64]:
    """The values of the ``count`` digits before each ``stop`` in ``b``, in ``base``."""
    width = int(count.max())
    padded = np.concatenate([np.zeros(width, dtype=np.uint8), b])
    # Row i: the ``width`` bytes before stop[i], digits right-aligned.
    digits = _DIGIT_VALUE[sliding_window_view(padded, width)[stop]]
    digits[np.arange(width) < (width - count)[:, None]] = 0
    values = np.zeros(stop.shape[0], dtype=np.int64)
    for j in range(width):
        values *= base
        values += digits[:, j]
    return values


def _parse_text_lines(
    data: bytes, source: str, page_numbers: bool, first_line: int = 1, skip_bad: bool = False
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], int]:
    """The reference reader: one line at a time, stopping at the first bad one
    (or, with ``skip_bad``, skipping and counting bad ones)."""
    addresses: list[int] = []
    writes: list[int] = []
    bad = 0
    for number, raw in enumerate(data.splitlines(), start=first_line):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        match = _ACCESS.fullmatch(line)
        if match is None:
            if skip_bad:
                bad += 1
                continue
            raise TraceError(f"{source}:{number}: {_EXPECTED_LINE}, got '{_shown(line)}'")
        op, hex_digits, dec_digits = match.groups()
        value = int(hex_digits, 16) if hex_digits is not None else int(dec_digits, 10)
        if value > _INT64_MAX:
            if skip_bad:
                bad += 1
                continue
            raise TraceError(
                f"{source}:{number}: the {_what(page_numbers)} does not fit in 64 bits "
                f"(the largest is 0x7fffffffffffffff), got '{_shown(line)}'"
            )
        addresses.append(value)
        writes.append(1 if op in (b"W", b"w") else 0)
    return np.array(addresses, dtype=np.int64), np.array(writes, dtype=np.uint8), bad


def _shown(line: bytes) -> str:
    """A stripped line as it appears in an error message (at most 80 characters)."""
    return line.decode("utf-8", errors="replace")[:_ERROR_TEXT_CHARS]


# --------------------------------------------------------------------------- .npy


class _NpyHeader:
    """What an .npy file's header says: the array's dtype, shape and order."""

    def __init__(
        self, dtype: np.dtype[Any], shape: tuple[int, ...], fortran_order: bool, field: str | None
    ) -> None:
        self.dtype = dtype
        self.shape = shape
        self.fortran_order = fortran_order
        self.field = field  # the address field of a structured array
        self.rows = shape[0] if shape else 0


def _not_npy(source: str, reason: str) -> TraceError:
    return TraceError(f"{source}: not a NumPy .npy file ({reason})")


def _read_npy_header(inp: _Input, source: str, page_numbers: bool) -> _NpyHeader:
    """Read and check an .npy header (the NumPy format's version 1, 2 or 3).

    Everything about the array's layout is checked here, before any access
    is read; the values are checked chunk by chunk.
    """
    start = inp.read(len(NPY_MAGIC) + 2)
    if not start.startswith(NPY_MAGIC):
        reason = (
            "it is a zip archive, such as an .npz; save one array with numpy.save"
            if start.startswith(_ZIP_MAGIC)
            else "it does not start with the .npy magic string"
        )
        raise _not_npy(source, reason)
    if len(start) < len(NPY_MAGIC) + 2:
        raise _not_npy(source, "the file ends inside the header")
    major, minor = start[-2], start[-1]
    if major not in (1, 2, 3):
        raise _not_npy(source, f"format version {major}.{minor} is not known")
    length_bytes = 2 if major == 1 else 4
    length_raw = inp.read(length_bytes)
    if len(length_raw) < length_bytes:
        raise _not_npy(source, "the file ends inside the header")
    length = int.from_bytes(length_raw, "little")
    raw = inp.read(length)
    if len(raw) < length:
        raise _not_npy(source, "the file ends inside the header")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
        fields = ast.literal_eval(text)
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        raise _not_npy(source, f"its header is not a Python literal: {_text_of(raw)}") from None
    if (
        not isinstance(fields, dict)
        or set(fields) != {"descr", "fortran_order", "shape"}
        or not isinstance(fields["shape"], tuple)
        or not all(isinstance(d, int) and d >= 0 for d in fields["shape"])
        or not isinstance(fields["fortran_order"], bool)
    ):
        raise _not_npy(source, f"its header is not an array description: {_text_of(raw)}")
    try:
        dtype: np.dtype[Any] = np.lib.format.descr_to_dtype(fields["descr"])
    except (ValueError, TypeError) as err:
        raise _not_npy(source, f"its dtype is not valid: {err}") from None
    shape: tuple[int, ...] = fields["shape"]
    found = f"found dtype {dtype} with shape {shape}"
    if dtype.hasobject:
        raise TraceError(f"{source}: {_NPY_EXPECTED}; found an array of Python objects")

    if dtype.names is not None:
        names = dtype.names
        field = "address" if "address" in names else "addr" if "addr" in names else None
        if len(shape) != 1 or field is None or "write" not in names:
            raise TraceError(f"{source}: {_NPY_EXPECTED}; {found}")
        _check_value_type(dtype[field], source, f"field '{field}'", found)
        _check_flag_type(dtype["write"], source, "field 'write'", found)
        if "fetch" in names:
            _check_flag_type(dtype["fetch"], source, "field 'fetch'", found)
        return _NpyHeader(dtype, shape, fields["fortran_order"], field)
    if not _is_integer(dtype) or not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 2)):
        raise TraceError(f"{source}: {_NPY_EXPECTED}; {found}")
    return _NpyHeader(dtype, shape, fields["fortran_order"], None)


def _text_of(raw: bytes) -> str:
    """Bytes as an error message quotes them (at most 80 characters)."""
    return repr(raw[:_ERROR_TEXT_CHARS].decode("latin1"))


def _is_integer(dtype: np.dtype[Any]) -> bool:
    return dtype.kind in "iu" and dtype.names is None and dtype.shape == ()


def _check_value_type(dtype: np.dtype[Any], source: str, where: str, found: str) -> None:
    if not _is_integer(dtype):
        raise TraceError(
            f"{source}: {_NPY_EXPECTED}; {found} ({where} must hold one integer per access)"
        )


def _check_flag_type(dtype: np.dtype[Any], source: str, where: str, found: str) -> None:
    if not (_is_integer(dtype) or (dtype.kind == "b" and dtype.shape == ())):
        raise TraceError(
            f"{source}: {_NPY_EXPECTED}; {found} "
            f"({where} must hold one 0/1 integer or boolean per access)"
        )


def _npy_columns(
    array: np.ndarray[Any, np.dtype[Any]],
    header: _NpyHeader,
    source: str,
    page_numbers: bool,
    offset: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None]:
    """The addresses, write flags and fetch flags of rows ``offset…`` of an .npy array."""
    what = _what(page_numbers)
    if header.field is not None:
        field = header.field
        values = _checked_values(array[field], source, f"field '{field}'", what, offset)
        writes = _checked_flags(array["write"], source, "field 'write'", offset)
        fetches = None
        if "fetch" in (array.dtype.names or ()):
            fetches = _checked_flags(array["fetch"], source, "field 'fetch'", offset, "fetch")
            both = np.flatnonzero((fetches != 0) & (writes != 0))
            if both.size:
                raise TraceError(
                    f"{source}: an access is a write or a fetch, not both; "
                    f"index {offset + int(both[0])} is both"
                )
            if not fetches.any():
                fetches = None
        return values, writes, fetches
    if array.ndim == 1:
        values = _checked_values(array, source, "the array", what, offset)
        return values, np.zeros(values.shape[0], dtype=np.uint8), None
    values = _checked_values(array[:, 0], source, "column 0", what, offset)
    writes = _checked_flags(array[:, 1], source, "column 1 (is_write)", offset)
    return values, writes, None


def _checked_values(
    column: np.ndarray[Any, np.dtype[Any]], source: str, where: str, what: str, offset: int
) -> npt.NDArray[np.int64]:
    """An integer column as int64, refusing negative or too-large values."""
    if column.dtype.kind == "i":
        bad = np.flatnonzero(column < 0)
        if bad.size:
            i = int(bad[0])
            raise TraceError(
                f"{source}: {_plural(what)} must be non-negative; {where} holds {int(column[i])} "
                f"at index {offset + i}"
            )
    elif column.dtype.itemsize == 8:
        bad = np.flatnonzero(column > _INT64_MAX)
        if bad.size:
            i = int(bad[0])
            raise TraceError(
                f"{source}: {_plural(what)} must fit in a signed 64-bit integer; {where} holds "
                f"{int(column[i])} at index {offset + i}"
            )
    return column.astype(np.int64)


def _checked_flags(
    column: np.ndarray[Any, np.dtype[Any]],
    source: str,
    where: str,
    offset: int,
    kind: str = "write",
) -> npt.NDArray[np.uint8]:
    """A flag column (0/1 integers or booleans) as uint8."""
    if column.dtype.kind != "b":
        bad = np.flatnonzero((column != 0) & (column != 1))
        if bad.size:
            i = int(bad[0])
            meaning = "0 (read) or 1 (write)" if kind == "write" else "0 or 1"
            raise TraceError(
                f"{source}: {kind} flags must be {meaning}; {where} holds "
                f"{int(column[i])} at index {offset + i}"
            )
    return column.astype(np.uint8)
