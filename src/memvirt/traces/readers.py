"""Reading traces from files.

:func:`read_trace` reads a trace file and returns a :class:`~memvirt.traces.model.Trace`.
The format is chosen by the file's suffix: ``.npy`` is a NumPy array, anything
else is text.

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

NumPy traces (``.npy``)
-----------------------
A file written by :func:`numpy.save`, holding one of:

- a 1-D integer array of addresses: every access is a read;
- an integer array of shape ``(n, 2)``: column 0 the address, column 1 the
  write flag (0 for a read, 1 for a write);
- a 1-D structured array with an integer field ``address`` (or ``addr``) and
  a field ``write`` (integer 0/1 or boolean); other fields are ignored.

Values must be non-negative and fit in a signed 64-bit integer. Arrays of
Python objects (which need pickle) are refused, and so are ``.npz`` archives:
save the one array with :func:`numpy.save`.

Addresses or page numbers
-------------------------
Every value is a byte address unless ``page_numbers=True`` (the
``--page-numbers`` option of ``memvirt replay``), in which case each value is
a virtual page number. The formats are the same either way.

A trace with no accesses (an empty file, or only comments) is an error, and
so is a missing, unreadable or malformed file: each raises
:class:`~memvirt.traces.model.TraceError` with a message that says which file,
where, and what was expected.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from memvirt.traces.model import Trace, TraceError

__all__ = ["read_trace"]

_INT64_MAX = (1 << 63) - 1
_ERROR_TEXT_CHARS = 80
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_BOM = b"\xef\xbb\xbf"

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
# whole file to the line-by-line reader, which has the last word on errors.
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


def read_trace(path: str | Path, *, page_numbers: bool = False) -> Trace:
    """Read the trace in ``path``: a ``.npy`` array or a text file (see the module doc).

    With ``page_numbers``, the values are page numbers instead of addresses.
    The trace's ``source`` is ``path`` as given. Raises
    :class:`~memvirt.traces.model.TraceError` for a missing, unreadable,
    malformed or empty trace.
    """
    source = str(path)
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        raise TraceError(
            f"{source}: .npz archives are not read; save one array with numpy.save as .npy"
        )
    data = _read_bytes(p, source)
    if suffix == ".npy":
        addresses, writes = _parse_npy(data, source, page_numbers)
    else:
        addresses, writes = _parse_text(data, source, page_numbers)
    if addresses.shape[0] == 0:
        raise TraceError(f"{source}: the trace has no accesses")
    return Trace(
        np.ascontiguousarray(addresses, dtype=np.int64),
        np.ascontiguousarray(writes, dtype=np.uint8),
        page_numbers=page_numbers,
        source=source,
    )


def _read_bytes(p: Path, source: str) -> bytes:
    """The file's bytes, or a TraceError saying why they cannot be had."""
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise TraceError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{source}: is a directory, not a trace file") from None
    except PermissionError:
        raise TraceError(f"{source}: cannot read the file (permission denied)") from None
    except OSError as err:
        if p.is_dir():
            raise TraceError(f"{source}: is a directory, not a trace file") from None
        reason = err.strerror or str(err)
        raise TraceError(f"{source}: cannot read the file ({reason})") from None


def _what(page_numbers: bool) -> str:
    return "page number" if page_numbers else "address"


def _plural(what: str) -> str:
    return what + ("es" if what.endswith("s") else "s")


# --------------------------------------------------------------------------- text


def _parse_text(
    data: bytes, source: str, page_numbers: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    fast = _parse_text_fast(data)
    if fast is not None:
        return fast
    return _parse_text_lines(data, source, page_numbers)


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
    data: bytes, source: str, page_numbers: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """The reference reader: one line at a time, stopping at the first bad one."""
    addresses: list[int] = []
    writes: list[int] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        match = _ACCESS.fullmatch(line)
        if match is None:
            raise TraceError(f"{source}:{number}: {_EXPECTED_LINE}, got '{_shown(line)}'")
        op, hex_digits, dec_digits = match.groups()
        value = int(hex_digits, 16) if hex_digits is not None else int(dec_digits, 10)
        if value > _INT64_MAX:
            raise TraceError(
                f"{source}:{number}: the {_what(page_numbers)} does not fit in 64 bits "
                f"(the largest is 0x7fffffffffffffff), got '{_shown(line)}'"
            )
        addresses.append(value)
        writes.append(1 if op in (b"W", b"w") else 0)
    return np.array(addresses, dtype=np.int64), np.array(writes, dtype=np.uint8)


def _shown(line: bytes) -> str:
    """A stripped line as it appears in an error message (at most 80 characters)."""
    return line.decode("utf-8", errors="replace")[:_ERROR_TEXT_CHARS]


# --------------------------------------------------------------------------- .npy


def _parse_npy(
    data: bytes, source: str, page_numbers: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    if not data.startswith(_NPY_MAGIC):
        reason = (
            "it is a zip archive, such as an .npz; save one array with numpy.save"
            if data.startswith(_ZIP_MAGIC)
            else "it does not start with the .npy magic string"
        )
        raise TraceError(f"{source}: not a NumPy .npy file ({reason})")
    try:
        loaded: Any = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:
        if "Object arrays" in str(err):
            raise TraceError(
                f"{source}: {_NPY_EXPECTED}; found an array of Python objects"
            ) from None
        raise TraceError(f"{source}: not a NumPy .npy file ({err})") from None
    except (OSError, EOFError) as err:
        raise TraceError(f"{source}: not a NumPy .npy file ({err})") from None
    if not isinstance(loaded, np.ndarray):
        raise TraceError(f"{source}: not a NumPy .npy file (it holds no array)")
    array: np.ndarray[Any, np.dtype[Any]] = loaded
    found = f"found dtype {array.dtype} with shape {array.shape}"
    what = _what(page_numbers)

    if array.dtype.names is not None:
        names = array.dtype.names
        field = "address" if "address" in names else "addr" if "addr" in names else None
        if array.ndim != 1 or field is None or "write" not in names:
            raise TraceError(f"{source}: {_NPY_EXPECTED}; {found}")
        values = _checked_values(array[field], source, f"field '{field}'", what, found)
        flags = _checked_flags(array["write"], source, "field 'write'", found)
        return values, flags

    if not _is_integer(array.dtype):
        raise TraceError(f"{source}: {_NPY_EXPECTED}; {found}")
    if array.ndim == 1:
        values = _checked_values(array, source, "the array", what, found)
        return values, np.zeros(values.shape[0], dtype=np.uint8)
    if array.ndim == 2 and array.shape[1] == 2:
        values = _checked_values(array[:, 0], source, "column 0", what, found)
        flags = _checked_flags(array[:, 1], source, "column 1 (is_write)", found)
        return values, flags
    raise TraceError(f"{source}: {_NPY_EXPECTED}; {found}")


def _is_integer(dtype: np.dtype[Any]) -> bool:
    return dtype.kind in "iu" and dtype.names is None and dtype.shape == ()


def _checked_values(
    column: np.ndarray[Any, np.dtype[Any]], source: str, where: str, what: str, found: str
) -> npt.NDArray[np.int64]:
    """An integer column as int64, refusing negative or too-large values."""
    if not _is_integer(column.dtype) or column.ndim != 1:
        raise TraceError(
            f"{source}: {_NPY_EXPECTED}; {found} ({where} must hold one integer per access)"
        )
    if column.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if column.dtype.kind == "i":
        bad = np.flatnonzero(column < 0)
        if bad.size:
            i = int(bad[0])
            raise TraceError(
                f"{source}: {_plural(what)} must be non-negative; {where} holds {int(column[i])} "
                f"at index {i}"
            )
    elif column.dtype.itemsize == 8:
        bad = np.flatnonzero(column > _INT64_MAX)
        if bad.size:
            i = int(bad[0])
            raise TraceError(
                f"{source}: {_plural(what)} must fit in a signed 64-bit integer; {where} holds "
                f"{int(column[i])} at index {i}"
            )
    return column.astype(np.int64)


def _checked_flags(
    column: np.ndarray[Any, np.dtype[Any]], source: str, where: str, found: str
) -> npt.NDArray[np.uint8]:
    """A write-flag column (0/1 integers or booleans) as uint8."""
    if column.dtype.kind == "b" and column.ndim == 1:
        return column.astype(np.uint8)
    if not _is_integer(column.dtype) or column.ndim != 1:
        raise TraceError(
            f"{source}: {_NPY_EXPECTED}; {found} "
            f"({where} must hold one 0/1 integer or boolean per access)"
        )
    bad = np.flatnonzero((column != 0) & (column != 1))
    if bad.size:
        i = int(bad[0])
        raise TraceError(
            f"{source}: write flags must be 0 (read) or 1 (write); {where} holds "
            f"{int(column[i])} at index {i}"
        )
    return column.astype(np.uint8)
