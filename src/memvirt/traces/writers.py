"""Writing traces to files: memvirt's binary format, text, or NumPy ``.npy``.

A trace written once can be replayed many times, and the format decides how
fast it loads: the binary format (``.mvt``, 8 bytes per access, read at
hundreds of millions of accesses a second) is the one to convert a large
lackey or text trace into. Text is for reading by eye and for other tools;
``.npy`` for NumPy.

:func:`write_trace` takes chunks (any iterable of
:class:`~memvirt.traces.model.Trace`, such as a
:class:`~memvirt.traces.readers.TraceStream`), so a trace larger than memory
can be converted chunk by chunk. The format comes from the file name
(``.mvt``, ``.txt``, ``.npy``), and a further ``.gz`` or ``.zst`` compresses
it with gzip or zstd. The file appears whole or not at all: it is written
under a temporary name in the same directory and renamed when complete.
The same chunks always give the same bytes (no timestamps in gzip headers).

What each format keeps:

- binary: addresses (below 2**62), reads, writes and instruction fetches,
  and whether the values are page numbers;
- npy: a structured array with fields ``address`` (int64), ``write`` and
  ``fetch`` (uint8); whether the values are page numbers is not recorded;
- text: ``R 0x…`` and ``W 0x…`` lines. Text has no fetch kind, so an
  instruction fetch is written as a read (``R``), and page numbers are
  written as they are.
"""

from __future__ import annotations

import gzip
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import zstandard

from memvirt.traces.formats import (
    COUNT_OFFSET,
    MAX_BINARY_ADDRESS,
    TEXT_LINE_MAX,
    UNKNOWN_COUNT,
    encode_records,
    format_text,
    pack_header,
)
from memvirt.traces.model import Trace, TraceError

__all__ = ["WRITABLE_FORMATS", "compression_for_path", "format_for_path", "write_trace"]

#: The formats :func:`write_trace` writes.
WRITABLE_FORMATS = ("binary", "text", "npy")

_SUFFIX_FORMATS = {".mvt": "binary", ".txt": "text", ".npy": "npy"}
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
_GZIP_LEVEL = 6
_ZSTD_LEVEL = 3
_COPY_BYTES = 1 << 22

#: The dtype of the ``.npy`` files written: one packed record per access.
NPY_DTYPE = np.dtype([("address", "<i8"), ("write", "u1"), ("fetch", "u1")])


def format_for_path(path: str | Path) -> str:
    """The format a file name asks for (``t.mvt.gz`` → ``"binary"``).

    Raises :class:`~memvirt.traces.model.TraceError` when the name ends in
    none of ``.mvt``, ``.txt`` and ``.npy`` (before any ``.gz``/``.zst``).
    """
    inner = Path(path).name.lower()
    compression = compression_for_path(path)
    if compression is not None:
        inner = inner.rsplit(".", 1)[0]
    suffix = Path(inner).suffix
    if suffix not in _SUFFIX_FORMATS:
        raise TraceError(
            f"{path}: cannot tell the trace format from the name; end it in .mvt, .txt or "
            f".npy (and .gz or .zst to compress), or give the format"
        )
    return _SUFFIX_FORMATS[suffix]


def compression_for_path(path: str | Path) -> str | None:
    """``"gzip"`` for a name ending in ``.gz``, ``"zstd"`` for ``.zst``, else None."""
    return _COMPRESSIONS.get(Path(path).suffix.lower())


def write_trace(
    path: str | Path,
    chunks: Iterable[Trace] | Trace,
    *,
    format: str | None = None,
    page_size: int = 4096,
) -> int:
    """Write the accesses of ``chunks`` to ``path``; return how many were written.

    ``format`` is ``"binary"``, ``"text"`` or ``"npy"``; by default it comes
    from the name (see :func:`format_for_path`), and is binary when the name
    says nothing. A ``.gz`` or ``.zst`` name is compressed whatever the
    format. ``page_size`` is recorded in a binary trace's header. On an
    error, nothing is left at ``path`` (an existing file there is kept).
    """
    if format is None:
        try:
            format = format_for_path(path)
        except TraceError:
            format = "binary"
    if format not in WRITABLE_FORMATS:
        raise TraceError(
            f"{path}: cannot write the trace format '{format}'; "
            f"writable: {', '.join(WRITABLE_FORMATS)}"
        )
    if page_size < 1 or page_size & (page_size - 1):
        raise ValueError(f"page_size must be a power of two, got {page_size}")
    parts: Iterable[Trace] = [chunks] if isinstance(chunks, Trace) else chunks
    target = Path(path)
    compression = compression_for_path(target)
    page_shift = page_size.bit_length() - 1

    temporary, handle = _create_temporary(target)
    staging: Path | None = None
    try:
        with handle:
            if format == "npy" and compression is not None:
                # An .npy header holds the length, which a compressed stream
                # cannot seek back to fill in: write the array first, then
                # compress it.
                staging, staging_handle = _create_temporary(target)
                with staging_handle:
                    count = _write_npy(staging_handle, parts, target)
                with open(staging, "rb") as plain:
                    _compress(plain, handle, compression)
            else:
                count = _write_stream(handle, parts, format, compression, page_shift, target)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    finally:
        if staging is not None:
            staging.unlink(missing_ok=True)
    return count


def _create_temporary(target: Path) -> tuple[Path, BinaryIO]:
    """A new file beside ``target`` (so that renaming it there is atomic), open for writing."""
    for _ in range(100):
        name = f".{target.name}.{secrets.token_hex(6)}.tmp"
        temporary = target.with_name(name)
        try:
            # 0o666 less the umask, as for any new file
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as err:
            raise TraceError(f"{target}: cannot write the file ({err.strerror or err})") from None
        return temporary, os.fdopen(fd, "wb")
    raise TraceError(f"{target}: cannot find a free temporary name beside it")


def _compressor(raw: BinaryIO, compression: str | None) -> Any:
    """A writable stream that compresses into ``raw`` (or ``raw`` itself)."""
    if compression == "gzip":
        # no file name and a zero time stamp: the same trace gives the same bytes
        return gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0
        )
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True).stream_writer(
            raw, closefd=False
        )
    return raw


def _compress(plain: BinaryIO, raw: BinaryIO, compression: str) -> None:
    out = _compressor(raw, compression)
    shutil.copyfileobj(plain, out, _COPY_BYTES)
    out.close()


def _write_stream(
    raw: BinaryIO,
    chunks: Iterable[Trace],
    format: str,
    compression: str | None,
    page_shift: int,
    target: Path,
) -> int:
    out = _compressor(raw, compression)
    if format == "binary":
        count = _write_binary(out, chunks, page_shift, target, seekable=compression is None)
    elif format == "text":
        count = _write_text(out, chunks, target)
    else:
        count = _write_npy(out, chunks, target)
    if out is not raw:
        out.close()  # ends the compressed stream; raw stays open
    return count


def _checked(chunks: Iterable[Trace], target: Path, largest: int) -> Iterator[tuple[int, Trace]]:
    """Each non-empty chunk with the index of its first access, its values checked."""
    index = 0
    page_numbers: bool | None = None
    for chunk in chunks:
        n = len(chunk)
        if n == 0:
            continue
        if page_numbers is None:
            page_numbers = chunk.page_numbers
        elif chunk.page_numbers != page_numbers:
            raise TraceError(
                f"{target}: the chunks mix byte addresses and page numbers "
                f"(at access {index}, from {chunk.source})"
            )
        addresses = chunk.addresses
        low, high = int(addresses.min()), int(addresses.max())
        if low < 0 or high > largest:
            bad = int(np.flatnonzero((addresses < 0) | (addresses > largest))[0])
            value = int(addresses[bad])
            raise TraceError(
                f"{target}: access {index + bad} has the value {value}, outside 0 to {largest} "
                f"(from {chunk.source})"
            )
        yield index, chunk
        index += n


def _write_binary(
    out: Any, chunks: Iterable[Trace], page_shift: int, target: Path, *, seekable: bool
) -> int:
    stream = _checked(chunks, target, MAX_BINARY_ADDRESS)
    first = next(stream, None)
    page_numbers = first is not None and first[1].page_numbers
    out.write(pack_header(page_numbers=page_numbers, page_shift=page_shift, count=UNKNOWN_COUNT))
    count = 0
    if first is not None:
        for _, chunk in _chain(first, stream):
            out.write(encode_records(chunk.addresses, chunk.kinds).data)
            count += len(chunk)
    if seekable:
        out.seek(COUNT_OFFSET)
        out.write(count.to_bytes(8, "little"))
        out.seek(0, os.SEEK_END)
    return count


def _write_text(out: Any, chunks: Iterable[Trace], target: Path) -> int:
    count = 0
    for _, chunk in _checked(chunks, target, (1 << 63) - 1):
        buffer = np.empty(len(chunk) * TEXT_LINE_MAX, dtype=np.uint8)
        used = int(format_text(chunk.addresses, chunk.writes, buffer))
        out.write(buffer[:used].data)
        count += len(chunk)
    return count


def _npy_header(count: int) -> bytes:
    """A version-1.0 .npy header of a fixed size, so that the count can be written last."""
    descr = np.lib.format.dtype_to_descr(NPY_DTYPE)
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': ({count},), }}"
    widest = len(text) - len(str(count)) + 20  # room for any 64-bit count
    total = -(-(len(b"\x93NUMPY") + 4 + widest + 1) // 64) * 64
    body = text.ljust(total - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


def _write_npy(out: Any, chunks: Iterable[Trace], target: Path) -> int:
    out.write(_npy_header(0))
    count = 0
    for _, chunk in _checked(chunks, target, (1 << 63) - 1):
        records = np.empty(len(chunk), dtype=NPY_DTYPE)
        records["address"] = chunk.addresses
        records["write"] = chunk.writes
        records["fetch"] = 0 if chunk.fetches is None else chunk.fetches
        out.write(records.data)
        count += len(chunk)
    out.seek(0)
    out.write(_npy_header(count))
    out.seek(0, os.SEEK_END)
    return count


def _chain(
    first: tuple[int, Trace], rest: Iterator[tuple[int, Trace]]
) -> Iterator[tuple[int, Trace]]:
    yield first
    yield from rest
