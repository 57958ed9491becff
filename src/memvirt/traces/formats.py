"""The byte layouts of trace files, and the compiled loops that read and write them.

A memory trace is a long list of accesses, often hundreds of millions, so
how it is stored decides how fast a simulation can start. This module holds
the two formats whose parsing is a hot loop, and the pieces the readers
(:mod:`memvirt.traces.readers`) and writers (:mod:`memvirt.traces.writers`)
share:

- **valgrind lackey**: ``valgrind --tool=lackey --trace-mem=yes PROGRAM``
  prints one line per memory access the program makes::

      I  04001c80,3       an instruction fetch of 3 bytes at 0x4001c80
       L 1ffefffd78,8     a load (read) of 8 bytes
       S 1ffefffd70,8     a store (write)
       M 0401b0a0,4       a modify: a read and then a write of the same bytes

  Addresses are hexadecimal without ``0x``; after the comma comes the size
  in bytes. Lines starting with ``==`` are valgrind's own messages. An
  access whose bytes run past the end of a page touches the next page too:
  it becomes one access per page touched (the later ones at the start of
  their page), because a memory simulator counts pages, not bytes.
  Parsing is a byte-level state machine compiled by numba
  (:func:`parse_lackey`), which reads tens of millions of lines a second.

- **memvirt binary** (``.mvt``): a 32-byte header, then one little-endian
  64-bit word per access, ``(address << 2) | kind``. Reading is a copy and
  one pass of shifts and masks (:func:`decode_records`).

Access kinds are :data:`~memvirt.traces.model.KIND_READ`,
:data:`~memvirt.traces.model.KIND_WRITE` and
:data:`~memvirt.traces.model.KIND_FETCH` (an instruction fetch: a read of code).
The user documentation of every format is ``docs/traces.md``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numba import njit

from memvirt.traces.model import KIND_FETCH, KIND_WRITE, TraceError

__all__ = [
    "BINARY_HEADER_BYTES",
    "BINARY_MAGIC",
    "BINARY_RECORD_BYTES",
    "BINARY_VERSION",
    "GZIP_MAGIC",
    "LACKEY_EXPECTED",
    "LACKEY_MAX_SIZE",
    "MAX_BINARY_ADDRESS",
    "NPY_MAGIC",
    "UNKNOWN_COUNT",
    "ZSTD_MAGIC",
    "BinaryHeader",
    "decode_records",
    "encode_records",
    "format_text",
    "lackey_slack",
    "pack_header",
    "parse_lackey",
    "unpack_header",
]

# ------------------------------------------------------------------ magic numbers

#: The first bytes of a gzip stream (RFC 1952) and of a zstd frame (RFC 8878).
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: The first bytes of a NumPy ``.npy`` file.
NPY_MAGIC = b"\x93NUMPY"

# ------------------------------------------------------------------ binary format

BINARY_MAGIC = b"MVTRACE\0"
BINARY_VERSION = 1
BINARY_HEADER_BYTES = 32
BINARY_RECORD_BYTES = 8
#: The record count of a file written by a stream that could not seek back
#: to fill it in: the records run to the end of the file.
UNKNOWN_COUNT = (1 << 64) - 1
#: An address must leave the record's two low bits to the kind.
MAX_BINARY_ADDRESS = (1 << 62) - 1

ADDRESS_MODE_BYTES = 0
ADDRESS_MODE_PAGES = 1

# magic (bytes 0-7), version u16 (8-9), address mode u8 (10), reserved u8 (11),
# page-size log2 u8 (12), reserved (13-23), record count u64 (24-31); all
# little-endian. The reserved run is 11 bytes so that the count is aligned
# to 8 bytes and the header is 32: the fields alone make 21.
_HEADER = struct.Struct("<8sHBBB11xQ")
COUNT_OFFSET = 24
assert _HEADER.size == BINARY_HEADER_BYTES


@dataclass(frozen=True)
class BinaryHeader:
    """The fields of a binary trace's header."""

    version: int
    page_numbers: bool
    page_shift: int
    count: int  # UNKNOWN_COUNT: until the end of the file


def pack_header(*, page_numbers: bool, page_shift: int, count: int) -> bytes:
    """The 32 header bytes of a version-1 binary trace."""
    mode = ADDRESS_MODE_PAGES if page_numbers else ADDRESS_MODE_BYTES
    return _HEADER.pack(BINARY_MAGIC, BINARY_VERSION, mode, 0, page_shift, count)


def unpack_header(raw: bytes, source: str) -> BinaryHeader:
    """The header at the start of ``raw``; a ValueError naming ``source`` if it is not one."""
    if len(raw) < len(BINARY_MAGIC) or not raw.startswith(BINARY_MAGIC):
        raise TraceError(f"{source}: not a memvirt binary trace (bad magic)")
    if len(raw) < BINARY_HEADER_BYTES:
        raise TraceError(
            f"{source}: truncated: the file ends inside the {BINARY_HEADER_BYTES}-byte header "
            f"({len(raw)} bytes)"
        )
    _magic, version, mode, _reserved, shift, count = _HEADER.unpack_from(raw)
    if version != BINARY_VERSION:
        raise TraceError(
            f"{source}: binary trace version {version} is not supported "
            f"(this memvirt reads version {BINARY_VERSION})"
        )
    if mode not in (ADDRESS_MODE_BYTES, ADDRESS_MODE_PAGES):
        raise TraceError(
            f"{source}: binary trace address mode {mode} is not known "
            f"(expected 0 for byte addresses or 1 for page numbers)"
        )
    return BinaryHeader(version, mode == ADDRESS_MODE_PAGES, shift, count)


@njit(cache=True)
def decode_records(
    raw: np.ndarray,
    drop_fetches: bool,
    addresses: np.ndarray,
    writes: np.ndarray,
    fetches: np.ndarray,
    status: np.ndarray,
) -> None:
    """Split ``raw`` records into addresses and write/fetch flags.

    ``status`` receives the number of accesses written, the index in ``raw``
    of the first record whose kind is not 0, 1 or 2 (or -1), and the number
    of fetches written.
    """
    n = 0
    nfetch = 0
    status[1] = -1
    for i in range(raw.shape[0]):
        word = raw[i]
        kind = word & np.uint64(3)
        if kind == np.uint64(3):
            status[1] = i
            break
        if kind == np.uint64(KIND_FETCH):
            if drop_fetches:
                continue
            nfetch += 1
        addresses[n] = np.int64(word >> np.uint64(2))
        writes[n] = np.uint8(kind == np.uint64(KIND_WRITE))
        fetches[n] = np.uint8(kind == np.uint64(KIND_FETCH))
        n += 1
    status[0] = n
    status[2] = nfetch


def encode_records(addresses: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Little-endian binary records of addresses (already checked to fit) and kinds."""
    words = addresses.astype(np.uint64) << np.uint64(2)
    words |= kinds.astype(np.uint64)
    return words.astype("<u8", copy=False)


# ------------------------------------------------------------------ lackey format

#: The text of a malformed-line error, after "FILE:LINE: ".
LACKEY_EXPECTED = "expected a lackey record such as ' L 04001c80,8'"

#: The largest access size read, in bytes. Lackey itself never prints more
#: than 512 (its MAX_DSIZE); the bound keeps one line from making millions
#: of accesses.
LACKEY_MAX_SIZE = 1 << 16

_INT64_MAX = (1 << 63) - 1

# parse_lackey's status fields
LACKEY_POSITION = 0  # where parsing stopped: the start of the first line not consumed
LACKEY_OUT = 1  # accesses written
LACKEY_BAD = 2  # malformed lines skipped
LACKEY_LINES = 3  # lines consumed
LACKEY_STOP = 4  # why it stopped: one of STOP_*
LACKEY_FETCHES = 5  # fetch records written (their accesses are flagged in fetches)
LACKEY_STATUS_FIELDS = 6

STOP_END = 0  # consumed everything (or all whole lines, when more input follows)
STOP_FULL = 1  # the output arrays are full
STOP_BAD = 2  # a malformed line, at the position


def lackey_slack(page_shift: int) -> int:
    """The most accesses one lackey line can make, for pages of ``1 << page_shift`` bytes."""
    pages = ((LACKEY_MAX_SIZE - 1) >> page_shift) + 2
    return 2 * pages  # M: a read and a write of each page


# The value of each byte as a hexadecimal digit, or -1.
_HEX_VALUE = np.full(256, -1, dtype=np.int8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _i
    _HEX_VALUE[bytes([_c]).upper()[0]] = _i
del _i, _c

# The fast path takes addresses of at most 15 hex digits (no overflow to
# check) and sizes of at most 5 decimal digits; longer ones take the
# general path, which checks every limit.
_FAST_HEX_DIGITS = 15
_FAST_SIZE_DIGITS = 5
# The fast path reads ahead without checking the buffer's end: the longest
# line it takes, "I  " + 15 digits + "," + 5 digits + "\n", is 25 bytes.
_FAST_LOOKAHEAD = 32


@njit(cache=True)
def _is_blank(c: int) -> bool:
    return c == 32 or c == 9  # space, tab


@njit(cache=True)
def _parse_line(buf: np.ndarray, p: int, q: int) -> tuple[bool, int, int, int]:
    """The general grammar on one line ``buf[p:q]`` (its ``\\n`` excluded).

    Returns (ok, op, address, size); a valgrind ``==`` line or a blank line
    is ok with op 0.
    """
    if q - p >= 2 and buf[p] == 61 and buf[p + 1] == 61:  # "==": a valgrind message
        return True, 0, 0, 0
    i = p
    while i < q and _is_blank(buf[i]):
        i += 1
    if i == q or (buf[i] == 13 and i + 1 == q):  # blank, or only "\r"
        return True, 0, 0, 0
    op = int(buf[i])
    if op != 73 and op != 76 and op != 83 and op != 77:  # I L S M
        return False, 0, 0, 0
    i += 1
    if i == q or not _is_blank(buf[i]):
        return False, 0, 0, 0
    while i < q and _is_blank(buf[i]):
        i += 1
    address = 0
    digits = 0
    hex_limit = _INT64_MAX >> 4
    while i < q:
        v = _HEX_VALUE[buf[i]]
        if v < 0:
            break
        if address > hex_limit:  # one more digit would overflow
            return False, 0, 0, 0
        address = address * 16 + v
        digits += 1
        i += 1
    if digits == 0 or i == q or buf[i] != 44:  # ","
        return False, 0, 0, 0
    i += 1
    size = 0
    digits = 0
    while i < q and 48 <= buf[i] <= 57:
        if size <= LACKEY_MAX_SIZE:  # beyond it the line is bad anyway
            size = size * 10 + (buf[i] - 48)
        digits += 1
        i += 1
    too_far = address > _INT64_MAX - (size - 1)  # the last byte's address overflows
    if digits == 0 or size < 1 or size > LACKEY_MAX_SIZE or too_far:
        return False, 0, 0, 0
    while i < q and _is_blank(buf[i]):
        i += 1
    if i < q and buf[i] == 13:
        i += 1
    return i == q, op, address, size


@njit(cache=True)
def parse_lackey(
    buf: np.ndarray,
    start: int,
    end: int,
    final: bool,
    page_shift: int,
    drop_fetches: bool,
    skip_bad: bool,
    limit: int,
    addresses: np.ndarray,
    writes: np.ndarray,
    fetches: np.ndarray,
    status: np.ndarray,
) -> None:
    """Parse the lackey lines in ``buf[start:end]`` into addresses and write/fetch flags.

    Stops at the end of the input (before an unfinished last line unless
    ``final``), before a line whose accesses would take the output past
    ``limit`` (once the output holds any), or at a malformed line unless
    ``skip_bad``. ``status`` receives the fields ``LACKEY_*``; the output
    arrays must have room for ``limit + lackey_slack(page_shift)`` accesses.
    """
    n = 0
    nfetch = 0
    bad = 0
    lines = 0
    stop = STOP_END
    p = start
    while p < end:
        # The fast path: a line exactly as lackey prints it, "I  hex,size\n"
        # or " L hex,size\n", wholly in the buffer.
        op = 0
        address = 0
        size = 0
        nxt = -1
        # Branches that depend on the data (which op, how many digits) are
        # written as arithmetic and selects where they can be: in a trace
        # they are unpredictable, and a mispredicted branch costs more than
        # the work it saves.
        if p + _FAST_LOOKAHEAD <= end:
            c0 = buf[p]
            c1 = buf[p + 1]
            is_fetch = (c0 == 73) & (c1 == 32)
            is_data = (c0 == 32) & ((c1 == 76) | (c1 == 83) | (c1 == 77))
            op = (73 * int(is_fetch) + int(c1) * int(is_data)) * int(buf[p + 2] == 32)
        if op != 0:
            i = p + 3
            v0 = int(_HEX_VALUE[buf[i]])
            v1 = int(_HEX_VALUE[buf[i + 1]])
            v2 = int(_HEX_VALUE[buf[i + 2]])
            v3 = int(_HEX_VALUE[buf[i + 3]])
            v4 = int(_HEX_VALUE[buf[i + 4]])
            v5 = int(_HEX_VALUE[buf[i + 5]])
            v6 = int(_HEX_VALUE[buf[i + 6]])
            v7 = int(_HEX_VALUE[buf[i + 7]])
            if (v0 | v1 | v2 | v3 | v4 | v5 | v6 | v7) >= 0:
                # lackey prints at least 8 digits (%08lx), and user-space
                # addresses take at most 12: a -1 among the 8 makes the OR negative
                address = (
                    (v0 << 28)
                    | (v1 << 24)
                    | (v2 << 20)
                    | (v3 << 16)
                    | (v4 << 12)
                    | (v5 << 8)
                    | (v6 << 4)
                    | v7
                )
                v8 = int(_HEX_VALUE[buf[i + 8]])
                v9 = int(_HEX_VALUE[buf[i + 9]])
                v10 = int(_HEX_VALUE[buf[i + 10]])
                v11 = int(_HEX_VALUE[buf[i + 11]])
                # k_j: digit j is a hex digit, and so are all before it
                k8 = int(v8 >= 0)
                k9 = k8 & int(v9 >= 0)
                k10 = k9 & int(v10 >= 0)
                k11 = k10 & int(v11 >= 0)
                a8 = (address << 4) | v8
                a9 = (a8 << 4) | v9
                a10 = (a9 << 4) | v10
                a11 = (a10 << 4) | v11
                # the longest run of digits (LLVM makes these selects, not branches)
                address = a11 if k11 else (a10 if k10 else (a9 if k9 else (a8 if k8 else address)))
                i += 8 + k8 + k9 + k10 + k11
            stop_hex = p + 3 + _FAST_HEX_DIGITS + 1
            while i < stop_hex:
                v = _HEX_VALUE[buf[i]]
                if v < 0:
                    break
                address = address * 16 + v
                i += 1
            digits = i - (p + 3)
            if 0 < digits <= _FAST_HEX_DIGITS and buf[i] == 44:
                i += 1
                d0 = int(buf[i]) - 48
                d1 = int(buf[i + 1]) - 48
                d2 = int(buf[i + 2]) - 48
                k0 = int((d0 >= 0) & (d0 <= 9))
                k1 = k0 & int((d1 >= 0) & (d1 <= 9))
                k2 = k1 & int((d2 >= 0) & (d2 <= 9))
                s2 = d0 * 10 + d1
                size = (s2 * 10 + d2) if k2 else (s2 if k1 else d0)
                first_digit = i
                i += k0 + k1 + k2
                stop_dec = first_digit + _FAST_SIZE_DIGITS + 1
                while k2 and i < stop_dec:
                    c = buf[i]
                    if c < 48 or c > 57:
                        break
                    size = size * 10 + (c - 48)
                    i += 1
                digits = i - first_digit
                size_ok = 1 <= size <= LACKEY_MAX_SIZE
                if k0 and digits <= _FAST_SIZE_DIGITS and buf[i] == 10 and size_ok:
                    nxt = i + 1
        if nxt < 0:
            # The general path: find the line's end (an unfinished line waits
            # for more input), then parse it with every allowance.
            q = p
            while q < end and buf[q] != 10:
                q += 1
            if q == end and not final:
                break
            nxt = q + 1 if q < end else end
            ok, op, address, size = _parse_line(buf, p, q)
            if not ok:
                if not skip_bad:
                    stop = STOP_BAD
                    break
                bad += 1
                lines += 1
                p = nxt
                continue
            if op == 0:  # a blank line or a valgrind message
                lines += 1
                p = nxt
                continue

        if drop_fetches and op == 73:
            lines += 1
            p = nxt
            continue
        first = address >> page_shift
        last = (address + size - 1) >> page_shift
        ops = 2 if op == 77 else 1  # M: a read, then a write
        if n > 0 and n + ops * (last - first + 1) > limit:
            stop = STOP_FULL
            break
        fetch = op == 73
        if first == last and ops == 1:  # the common case: one access in one page
            addresses[n] = address
            writes[n] = op == 83
            fetches[n] = fetch
            n += 1
            nfetch += int(fetch)
            lines += 1
            p = nxt
            continue
        for k in range(ops):
            write = op == 83 or k == 1  # S, or the second half of M
            addresses[n] = address
            writes[n] = write
            fetches[n] = fetch
            n += 1
            for page in range(first + 1, last + 1):
                addresses[n] = page << page_shift
                writes[n] = write
                fetches[n] = fetch
                n += 1
        if fetch:
            nfetch += 1
        lines += 1
        p = nxt
    status[LACKEY_POSITION] = p
    status[LACKEY_OUT] = n
    status[LACKEY_BAD] = bad
    status[LACKEY_LINES] = lines
    status[LACKEY_STOP] = stop
    status[LACKEY_FETCHES] = nfetch


# ------------------------------------------------------------------ text writing

#: The longest line :func:`format_text` writes: "W 0x" + 16 hex digits + "\n".
TEXT_LINE_MAX = 21


@njit(cache=True)
def format_text(addresses: np.ndarray, writes: np.ndarray, out: np.ndarray) -> int:
    """Write ``R 0x…``/``W 0x…`` lines (lowercase hex) into ``out``; return the bytes used.

    ``out`` needs room for ``TEXT_LINE_MAX`` bytes per access.
    """
    j = 0
    for i in range(addresses.shape[0]):
        out[j] = 87 if writes[i] != 0 else 82  # W or R
        out[j + 1] = 32
        out[j + 2] = 48
        out[j + 3] = 120  # "0x"
        j += 4
        value = np.uint64(addresses[i])
        digits = 1
        rest = value >> np.uint64(4)
        while rest != np.uint64(0):
            digits += 1
            rest >>= np.uint64(4)
        for d in range(digits - 1, -1, -1):
            nibble = (value >> np.uint64(4 * d)) & np.uint64(15)
            out[j] = 48 + nibble if nibble < np.uint64(10) else 87 + nibble
            j += 1
        out[j] = 10
        j += 1
    return j
