"""What a trace says before any simulation: its mix, its footprint, its miss-ratio curve.

A trace's *footprint* is the memory it touches: its distinct pages times the
page size. Its *miss-ratio curve* (MRC) says, for every memory size, how
many page faults LRU replacement would take — one curve that answers "how
much memory does this program need?" for every size at once.

Mattson's stack algorithm
-------------------------
Mattson, Gecsei, Slutz and Traiger ("Evaluation techniques for storage
hierarchies", IBM Systems Journal, 1970) observed that LRU is a *stack
algorithm*: the pages that LRU keeps in F frames are always the F most
recently used ones, so the contents for F frames are included in the
contents for F + 1. Keep all pages in one list ordered by recency (the LRU
stack): the *stack distance* of an access is the depth at which its page
is found — the number of distinct other pages touched since the previous
access to the same page — and is infinite on a page's first touch. An access
hits in F frames exactly when its distance is less than F, so

    misses(F) = first touches + #{accesses with distance >= F}

and one pass over the trace, counting distances in a histogram, gives the
fault count for every F.

Walking a list to find the depth costs O(distinct pages) per access. Here
the count is kept instead in a Fenwick (binary indexed) tree over access
positions: each page has a mark at the position of its latest access, so
the distance of an access is the number of marks after its page's previous
position, found in O(log n). Three refinements keep it in the processor's
cache, which matters more than the operation count:

- only d marks (one per distinct page) are ever set, so positions are
  slots in a window a few times d wide: when the window is full, the marks
  move in order to its start;
- a mark is one bit, 64 slots to a word, and the tree counts the marks per
  word: 64 times smaller; a count within a word is a population count;
- the pages are first renumbered 0..d-1 in order of first appearance (with
  a hash table), so the per-page state is a plain array.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from memvirt.traces.model import KIND_FETCH, KIND_READ, KIND_WRITE, Trace
from memvirt.units import GeometryError, is_power_of_two

__all__ = [
    "TraceStats",
    "curve_sizes",
    "distance_histogram",
    "stack_distances",
    "trace_stats",
]

#: Up to this many distinct pages, the curve lists every memory size.
ALL_SIZES_UP_TO = 4096
#: Above it, this many sizes, spaced evenly on a log scale.
LOG_SIZES = 200


@njit(cache=True)
def _popcount(x: np.uint64) -> int:
    """The number of bits set in ``x``."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))  # type: ignore[return-value]


@njit(cache=True)
def _mattson(
    dense: npt.NDArray[np.int64],
    tree: npt.NDArray[np.integer[Any]],
    bits: npt.NDArray[np.uint64],
    owner: npt.NDArray[np.int64],
    last: npt.NDArray[np.int64],
    hist: npt.NDArray[np.int64],
    distances: npt.NDArray[np.int64],
) -> int:
    """Count the stack distances of ``dense`` (pages 0..d-1) into ``hist``; return first touches.

    The marks live in ``S = owner.shape[0]`` slots (S > d), one bit each in
    ``bits`` (ceil(S / 64) zeros); ``tree`` is the Fenwick tree of the marks
    per 64-slot block (one more zero than ``bits``); ``owner`` is the page
    marked in each slot (S times -1), ``last`` each page's slot (d times -1),
    ``hist`` d zeros. When ``distances`` has one slot per access, it receives
    each access's distance (-1 for a first touch).
    """
    n = dense.shape[0]
    size = owner.shape[0]
    blocks = bits.shape[0]
    record = distances.shape[0] == n
    one = np.uint64(1)
    marks = 0
    cold = 0
    now = 0  # the next free slot
    for i in range(n):
        page = dense[i]
        # A page used again straight away is at distance 0, and leaving its mark
        # where it is changes no other distance (no page was touched in between):
        # this skips the tree for the many back-to-back accesses of real traces.
        if i > 0 and dense[i - 1] == page:
            hist[0] += 1
            if record:
                distances[i] = 0
            continue
        if now == size:
            # Out of slots: move the marks, in order, to the first ones and
            # rebuild the tree. A tree over a few times d slots instead of n
            # positions stays in cache, which pays for this many times over.
            tree[:] = 0
            bits[:] = 0
            now = 0
            for slot in range(size):
                p = owner[slot]
                if p >= 0:
                    owner[slot] = -1
                    owner[now] = p
                    last[p] = now
                    bits[now >> 6] |= one << np.uint64(now & 63)
                    tree[(now >> 6) + 1] += 1
                    now += 1
            for j in range(1, blocks + 1):  # Fenwick's linear-time build
                up = j + (j & -j)
                if up <= blocks:
                    tree[up] += tree[j]
        prev = last[page]
        if prev < 0:
            cold += 1
            marks += 1
            if record:
                distances[i] = -1
        else:
            block = prev >> 6
            bit = np.uint64(prev & 63)
            # marks in slots 0..prev: bits 0..bit of its block, then the
            # blocks before it (the tree's 1-based indices 1..block)
            before = _popcount(bits[block] & (((one << bit) - one) | (one << bit)))
            j = block
            while j > 0:
                before += tree[j]
                j -= j & -j
            d = marks - before
            hist[d] += 1
            if record:
                distances[i] = d
            bits[block] &= ~(one << bit)
            j = block + 1
            while j <= blocks:
                tree[j] -= 1
                j += j & -j
            owner[prev] = -1
        block = now >> 6
        bits[block] |= one << np.uint64(now & 63)
        j = block + 1
        while j <= blocks:
            tree[j] += 1
            j += j & -j
        owner[now] = page
        last[page] = now
        now += 1
    return cold


#: Fibonacci hashing's multiplier, 2^64 divided by the golden ratio.
_GOLDEN = 0x9E3779B97F4A7C15


@njit(cache=True)
def _slot(key: int, bits: int) -> np.int64:
    """The home slot of ``key`` in a table of ``2**bits`` slots (Fibonacci hashing)."""
    return np.int64((np.uint64(key) * np.uint64(_GOLDEN)) >> np.uint64(64 - bits))


@njit(cache=True)
def _densify(pages: npt.NDArray[np.int64], dense: npt.NDArray[np.int64]) -> int:
    """Renumber ``pages`` 0, 1, 2, ... in order of first appearance into ``dense``; return d.

    An open-addressing hash table, doubled when half full: one pass, about
    five times faster than ``np.unique(return_inverse=True)``, which sorts.
    """
    bits = 12
    keys = np.empty(1 << bits, dtype=np.int64)
    ids = np.full(1 << bits, -1, dtype=np.int64)
    count = 0
    for i in range(pages.shape[0]):
        key = pages[i]
        mask = (1 << bits) - 1
        slot = _slot(key, bits)
        while ids[slot] >= 0 and keys[slot] != key:
            slot = (slot + 1) & mask
        if ids[slot] >= 0:
            dense[i] = ids[slot]
            continue
        keys[slot] = key
        ids[slot] = count
        dense[i] = count
        count += 1
        if 2 * count > mask + 1:
            old_keys, old_ids = keys, ids
            bits += 1
            mask = (1 << bits) - 1
            keys = np.empty(1 << bits, dtype=np.int64)
            ids = np.full(1 << bits, -1, dtype=np.int64)
            for t in range(old_ids.shape[0]):
                if old_ids[t] >= 0:
                    slot = _slot(old_keys[t], bits)
                    while ids[slot] >= 0:
                        slot = (slot + 1) & mask
                    keys[slot] = old_keys[t]
                    ids[slot] = old_ids[t]
    return count


#: Slots for the marks, in distinct pages: more slots, fewer compactions, a bigger tree.
SLOTS_PER_PAGE = 4
#: At least this many slots (while the trace has as many accesses).
MIN_SLOTS = 1 << 16


def _run(
    pages: npt.ArrayLike, distances: npt.NDArray[np.int64] | None, slots: int | None = None
) -> tuple[npt.NDArray[np.int64], int]:
    """Mattson's pass over ``pages``: the distance histogram and the first touches.

    ``slots`` (more than the distinct pages) overrides how many slots the marks get.
    """
    p = np.ascontiguousarray(np.asarray(pages, dtype=np.int64).reshape(-1))
    n = int(p.shape[0])
    dense = np.empty(n, dtype=np.int64)
    npages = int(_densify(p, dense))
    if slots is None:
        slots = min(n, max(SLOTS_PER_PAGE * npages, MIN_SLOTS))
    if n > 0 and slots <= npages and slots < n:
        raise ValueError(f"{slots} slots cannot hold the marks of {npages} pages")
    blocks = (slots + 63) // 64
    # a mark count never exceeds the slots: 32 bits halve the tree while they suffice
    tree: npt.NDArray[np.integer[Any]] = (
        np.zeros(blocks + 1, dtype=np.int32)
        if slots < (1 << 31) - 1
        else np.zeros(blocks + 1, dtype=np.int64)
    )
    bits = np.zeros(blocks, dtype=np.uint64)
    owner = np.full(slots, -1, dtype=np.int64)
    last = np.full(npages, -1, dtype=np.int64)
    hist = np.zeros(npages, dtype=np.int64)
    out = distances if distances is not None else np.zeros(0, dtype=np.int64)
    cold = int(_mattson(dense, tree, bits, owner, last, hist, out))
    return hist, cold


def stack_distances(pages: npt.ArrayLike, *, slots: int | None = None) -> npt.NDArray[np.int64]:
    """The LRU stack distance of every access to ``pages``; -1 marks a first touch.

    ``slots`` is how many positions the marks get (by default a few per
    distinct page); any number above the distinct pages gives the same
    distances, fewer slots only moving the marks more often.
    """
    distances = np.empty(np.asarray(pages).size, dtype=np.int64)
    _run(pages, distances, slots)
    return distances


def distance_histogram(
    pages: npt.ArrayLike, *, slots: int | None = None
) -> tuple[npt.NDArray[np.int64], int]:
    """How many accesses to ``pages`` have each stack distance, and how many are first touches.

    The histogram has one slot per distinct page: ``hist[k]`` counts the
    accesses at distance k (k distinct other pages since the last use).
    ``slots`` is as for :func:`stack_distances`.
    """
    return _run(pages, None, slots)


def curve_sizes(distinct_pages: int) -> list[int]:
    """The memory sizes (in frames) at which a trace's miss-ratio curve is given.

    Every size from 1 to ``distinct_pages`` when there are at most
    :data:`ALL_SIZES_UP_TO`; otherwise :data:`LOG_SIZES` sizes from 1 to
    ``distinct_pages`` (always the last), evenly spaced on a log scale where
    the spacing is more than one frame.
    """
    if distinct_pages <= 0:
        return []
    if distinct_pages <= ALL_SIZES_UP_TO:
        return list(range(1, distinct_pages + 1))
    # small sizes round to the same integers: ask for more points until 200 are distinct
    count = LOG_SIZES
    while True:
        sizes = np.unique(np.rint(np.geomspace(1, distinct_pages, count)).astype(np.int64))
        if sizes.shape[0] >= LOG_SIZES:
            break
        count += LOG_SIZES - int(sizes.shape[0])
    return [int(s) for s in sizes if s < distinct_pages] + [distinct_pages]


@dataclass(frozen=True)
class TraceStats:
    """A trace's access mix, footprint and LRU miss-ratio curve.

    ``reads`` counts data reads only: ``accesses == reads + writes +
    instruction_fetches``. ``miss_ratio_curve`` lists ``[frames, misses]``
    pairs: the page faults of LRU replacement with that many frames,
    first touches included.
    """

    accesses: int
    reads: int
    writes: int
    instruction_fetches: int
    distinct_pages: int
    page_size: int
    miss_ratio_curve: list[list[int]]
    #: accesses at each stack distance (one slot per distinct page)
    distance_counts: npt.NDArray[np.int64] = field(repr=False, compare=False)

    @property
    def footprint_bytes(self) -> int:
        """The memory the trace touches: distinct pages times the page size."""
        return self.distinct_pages * self.page_size

    def misses(self, frames: int) -> int:
        """LRU's page faults with ``frames`` frames (first touches included)."""
        if frames < 0:
            raise ValueError(f"frames must be 0 or more, got {frames}")
        return self.distinct_pages + int(self.distance_counts[frames:].sum())

    def to_dict(self) -> dict[str, Any]:
        """The statistics as plain JSON-ready values."""
        return {
            "accesses": self.accesses,
            "reads": self.reads,
            "writes": self.writes,
            "instruction_fetches": self.instruction_fetches,
            "distinct_pages": self.distinct_pages,
            "footprint_bytes": self.footprint_bytes,
            "page_size": self.page_size,
            "miss_ratio_curve": [list(point) for point in self.miss_ratio_curve],
        }


def trace_stats(chunks: Trace | Iterable[Trace], page_size: int = 4096) -> TraceStats:
    """The statistics of a trace given whole or as consecutive chunks.

    Addresses are turned into pages of ``page_size`` bytes (a power of two);
    chunks that hold page numbers are taken as they are.
    """
    if not (isinstance(page_size, int) and page_size > 0 and is_power_of_two(page_size)):
        raise GeometryError(f"the page size must be a power of two, got {page_size!r}")
    offset_bits = page_size.bit_length() - 1
    parts: list[npt.NDArray[np.int64]] = []
    counts = np.zeros(3, dtype=np.int64)
    for chunk in [chunks] if isinstance(chunks, Trace) else chunks:
        if len(chunk) == 0:
            continue
        counts += np.bincount(chunk.kinds, minlength=3)[:3]
        parts.append(np.asarray(chunk.page_numbers_for(offset_bits), dtype=np.int64))
    pages = (
        parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, np.int64)
    )
    del parts
    hist, cold = distance_histogram(pages)
    del pages
    # misses(F) = first touches + accesses at distance >= F, for every F at once
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], np.zeros(1, dtype=np.int64)])
    curve = [[f, cold + int(tail[f])] for f in curve_sizes(int(hist.shape[0]))]
    return TraceStats(
        accesses=int(counts.sum()),
        reads=int(counts[KIND_READ]),
        writes=int(counts[KIND_WRITE]),
        instruction_fetches=int(counts[KIND_FETCH]),
        distinct_pages=int(hist.shape[0]),
        page_size=page_size,
        miss_ratio_curve=curve,
        distance_counts=hist,
    )
