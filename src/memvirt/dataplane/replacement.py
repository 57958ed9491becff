"""Replacement alone: one process, pages mapped to frames by a flat array.

This is the classic replacement experiment, as libCacheSim and the textbook
run it: no radix page table and no TLB, only which pages are in memory, the
replacement policy, and the swap traffic. Its rules are exactly those of
:func:`memvirt.dataplane.native.run_batch` for one process with swap large
enough (the tests hold the two to identical counts): a first touch, or a
touch after a never-written page was dropped, is a minor fault; a page
whose copy is in swap returns by a major fault and keeps that copy while it
stays clean; a dirty victim is written back, a clean victim with a current
copy is dropped, a clean never-written victim reads back as zeros.

Pages are dense ids ``0 .. npages-1`` (``np.unique(..., return_inverse=True)``
of the page numbers keeps their order, so opt's lowest-page tie-break holds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .layout import (
    NEVER,
    POLICY_CLOCK,
    POLICY_LRU,
    POLICY_OPT,
    POLICY_RANDOM,
)

# counters, in the order replace() fills them
R_ACCESSES = 0
R_WRITES = 1
R_MINOR = 2
R_MAJOR = 3
R_EVICTIONS = 4
R_WRITEBACKS = 5
R_CLEAN_DROPS = 6
R_ZERO_DROPS = 7
N_R = 8

REFERENCED = 1
DIRTY = 2


@njit(cache=True)
def replace(
    pages: np.ndarray,
    writes: np.ndarray,
    npages: int,
    nframes: int,
    policy: int,
    next_use: np.ndarray,
    rng_state: int,
) -> np.ndarray:
    """Replay dense page ids with ``nframes`` frames; return the counters (see ``R_*``)."""
    out = np.zeros(N_R, dtype=np.int64)
    where = np.full(npages, -1, dtype=np.int32)  # page -> frame
    has_copy = np.zeros(npages, dtype=np.uint8)  # a current copy is in swap
    page_of = np.full(nframes, -1, dtype=np.int64)
    prev = np.full(nframes, -1, dtype=np.int32)
    nxt = np.full(nframes, -1, dtype=np.int32)
    flags = np.zeros(nframes, dtype=np.uint8)
    use = np.full(nframes, NEVER, dtype=np.int64)
    head = -1
    tail = -1
    size = 0
    rng = np.uint64(rng_state)
    writes_n = 0
    for i in range(pages.shape[0]):
        p = pages[i]
        w = writes[i] != 0
        f = where[p]
        if f >= 0:
            flags[f] |= REFERENCED
            if policy == POLICY_LRU and f != tail:
                a = prev[f]
                b = nxt[f]
                if a >= 0:
                    nxt[a] = b
                else:
                    head = b
                prev[b] = a
                prev[f] = tail
                nxt[f] = -1
                nxt[tail] = f
                tail = f
        else:
            if size < nframes:
                f = size
                size += 1
            else:
                # choose the victim: the list runs from head (oldest) to tail
                if policy == POLICY_CLOCK:
                    while flags[head] & REFERENCED:
                        v = head
                        flags[v] &= ~REFERENCED
                        if v != tail:  # second chance: to the back of the list
                            head = nxt[v]
                            prev[head] = -1
                            prev[v] = tail
                            nxt[v] = -1
                            nxt[tail] = v
                            tail = v
                    f = head
                elif policy == POLICY_RANDOM:
                    rng ^= rng >> np.uint64(12)
                    rng ^= rng << np.uint64(25)
                    rng ^= rng >> np.uint64(27)
                    r = np.int64((rng * np.uint64(2685821657736338717)) >> np.uint64(1))
                    f = head
                    for _ in range(r % nframes):
                        f = nxt[f]
                elif policy == POLICY_OPT:
                    f = head
                    v = head
                    while v >= 0:
                        if use[v] > use[f] or (use[v] == use[f] and page_of[v] < page_of[f]):
                            f = v
                        v = nxt[v]
                else:
                    f = head  # fifo and lru
                # evict it
                q = page_of[f]
                out[R_EVICTIONS] += 1
                if flags[f] & DIRTY:
                    out[R_WRITEBACKS] += 1
                    has_copy[q] = 1
                elif has_copy[q]:
                    out[R_CLEAN_DROPS] += 1
                else:
                    out[R_ZERO_DROPS] += 1
                where[q] = -1
                a = prev[f]
                b = nxt[f]
                if a >= 0:
                    nxt[a] = b
                else:
                    head = b
                if b >= 0:
                    prev[b] = a
                else:
                    tail = a
            # load the page at the tail, its referenced bit clear
            if has_copy[p]:
                out[R_MAJOR] += 1
            else:
                out[R_MINOR] += 1
            where[p] = f
            page_of[f] = p
            flags[f] = 0
            prev[f] = tail
            nxt[f] = -1
            if tail >= 0:
                nxt[tail] = f
            else:
                head = f
            tail = f
        if policy == POLICY_OPT:
            use[f] = next_use[i]
        if w:
            writes_n += 1
            flags[f] |= DIRTY
            has_copy[p] = 0  # the swap copy is stale now
    out[R_ACCESSES] = pages.shape[0]
    out[R_WRITES] = writes_n
    return out
