"""A naive, independent model of one process replaying a trace under demand paging.

This is the twin that the tests hold the compiled data plane
(:mod:`memvirt.dataplane.native`) against. It is written for obviousness,
not speed: memory is a dict from page to content token, the replacement
order is an ``OrderedDict``, each TLB set is an ``OrderedDict`` in LRU order.
It imports nothing from memvirt.

The machine it models:

- ``frames`` frames hold data pages; every page table the trace needs is
  already built, so a walk reads one entry per level (``levels`` references).
- A page not in memory faults: *minor* when it has no swap copy (it is
  zero-filled, token 0), *major* when it has one (it comes back with that
  copy's token and keeps the copy as a clean cached one).
- With memory full, the policy picks a victim: ``fifo`` (loaded longest
  ago), ``lru`` (used least recently; loads count as uses), ``clock``
  (second chance: load order, bit clear on load and set by each later
  access; a set bit at the head is cleared and the page goes to the back)
  or ``opt`` (next use farthest after the current access, never used again
  is farthest, ties to the lowest page number).
- A dirty victim is written to swap (``writebacks``); a clean one with a
  swap copy is dropped (``clean_drops``); a clean one without (never
  written since its zero fill) is dropped and reads back as zeros again
  (``zero_drops``). A write makes a page's swap copy stale.
- The TLB has 0, 1 or 2 set-associative levels with LRU sets; an L2 hit
  refills L1, a walk fills L1 then L2, an evicted page is invalidated at
  every level. Each entry caches the page's dirty bit; a write hitting a
  clean entry sets the dirty bit (``dirty_bit_updates``) in every level.
- Every write gives the page a new content token 1, 2, 3, ... (one counter
  for the whole run).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

POLICIES = ("fifo", "lru", "clock", "opt")

COUNTER_NAMES = (
    "accesses",
    "reads",
    "writes",
    "tlb_l1_hits",
    "tlb_l1_misses",
    "tlb_l2_hits",
    "tlb_l2_misses",
    "walks",
    "walk_memory_references",
    "minor_faults",
    "major_faults",
    "evictions",
    "writebacks",
    "clean_drops",
    "zero_drops",
    "dirty_bit_updates",
)


class TLBLevelModel:
    """One set-associative TLB level: ``entries // ways`` sets of ``ways`` entries.

    Each set maps a page to the dirty bit cached with its translation, least
    recently used first.
    """

    def __init__(self, entries: int, ways: int) -> None:
        assert entries > 0 and ways > 0 and entries % ways == 0
        self.ways = ways
        self.sets: list[OrderedDict[int, bool]] = [OrderedDict() for _ in range(entries // ways)]

    def _set(self, page: int) -> OrderedDict[int, bool]:
        return self.sets[page % len(self.sets)]

    def lookup(self, page: int) -> bool | None:
        """The cached dirty bit of ``page`` (refreshing it as most recent), or None."""
        s = self._set(page)
        if page not in s:
            return None
        s.move_to_end(page)
        return s[page]

    def fill(self, page: int, dirty: bool) -> None:
        """Cache ``page``, replacing the set's least recently used entry if it is full."""
        s = self._set(page)
        assert page not in s, "a fill follows a miss"
        if len(s) == self.ways:
            s.popitem(last=False)
        s[page] = dirty

    def mark_dirty(self, page: int) -> None:
        """Set the cached dirty bit of ``page`` if it is cached (its LRU place unchanged)."""
        s = self._set(page)
        if page in s:
            s[page] = True

    def invalidate(self, page: int) -> None:
        """Forget ``page``."""
        self._set(page).pop(page, None)


@dataclass(frozen=True)
class ReferenceResult:
    """The counters of a run and every page's final content token (0: zeros)."""

    counters: dict[str, int]
    tokens: dict[int, int]


def simulate(
    pages: Sequence[int],
    writes: Sequence[bool],
    frames: int,
    policy: str,
    levels: int,
    tlb: Sequence[tuple[int, int]] = (),
) -> ReferenceResult:
    """Replay accesses ``(pages[i], writes[i])`` on ``frames`` frames.

    ``levels`` is the depth of the page table; ``tlb`` lists the TLB levels
    as ``(entries, ways)``, first level first (empty: no TLB).
    """
    assert policy in POLICIES, policy
    assert frames >= 1 and len(pages) == len(writes) and len(tlb) <= 2
    count = dict.fromkeys(COUNTER_NAMES, 0)
    tlbs = [TLBLevelModel(entries, ways) for entries, ways in tlb]

    memory: dict[int, int] = {}  # resident page -> content token
    dirty: set[int] = set()  # resident pages written since they were loaded
    swap: dict[int, int] = {}  # page -> token of its current swap copy
    order: OrderedDict[int, bool] = OrderedDict()  # resident pages, next victim first;
    # the value is clock's referenced bit (unused by the other policies)
    positions: dict[int, list[int]] = defaultdict(list)  # for opt: where each page is used
    for i, page in enumerate(pages):
        positions[page].append(i)
    last_token = 0

    def next_use(page: int, now: int) -> float:
        later = positions[page]
        k = bisect_right(later, now)
        return later[k] if k < len(later) else float("inf")

    def choose_victim(now: int) -> int:
        if policy == "opt":
            return max(order, key=lambda p: (next_use(p, now), -p))
        if policy == "clock":
            while True:
                page, referenced = next(iter(order.items()))
                if not referenced:
                    return page
                del order[page]
                order[page] = False
        return next(iter(order))  # fifo: loaded longest ago; lru: used least recently

    def evict(now: int) -> None:
        victim = choose_victim(now)
        del order[victim]
        token = memory.pop(victim)
        count["evictions"] += 1
        if victim in dirty:
            dirty.discard(victim)
            swap[victim] = token
            count["writebacks"] += 1
        elif victim in swap:
            assert swap[victim] == token
            count["clean_drops"] += 1
        else:
            assert token == 0, "a clean page without a swap copy holds zeros"
            count["zero_drops"] += 1
        for level in tlbs:
            level.invalidate(victim)

    for now, (page, write) in enumerate(zip(pages, writes, strict=True)):
        write = bool(write)
        count["accesses"] += 1
        count["writes" if write else "reads"] += 1

        # --- TLB: the cached dirty bit, or None on a miss of every level
        cached: bool | None = None
        if tlbs:
            cached = tlbs[0].lookup(page)
            if cached is not None:
                count["tlb_l1_hits"] += 1
            else:
                count["tlb_l1_misses"] += 1
                if len(tlbs) == 2:
                    cached = tlbs[1].lookup(page)
                    if cached is not None:
                        count["tlb_l2_hits"] += 1
                        tlbs[0].fill(page, cached)
                    else:
                        count["tlb_l2_misses"] += 1

        loaded = False
        if cached is not None:
            assert page in memory, "the TLB maps only resident pages"
            if write and not cached:
                count["dirty_bit_updates"] += 1
                for level in tlbs:
                    level.mark_dirty(page)
        else:
            count["walks"] += 1
            count["walk_memory_references"] += levels
            if page not in memory:
                if len(memory) == frames:
                    evict(now)
                if page in swap:
                    count["major_faults"] += 1
                    memory[page] = swap[page]
                else:
                    count["minor_faults"] += 1
                    memory[page] = 0
                order[page] = False
                loaded = True
            entry_dirty = write or page in dirty
            for level in tlbs:
                level.fill(page, entry_dirty)

        # --- the access itself
        if not loaded:
            if policy == "lru":
                order.move_to_end(page)
            order[page] = True  # clock's referenced bit; moves nothing
        if write:
            last_token += 1
            memory[page] = last_token
            dirty.add(page)
            swap.pop(page, None)  # the swap copy is stale now

    count["faults"] = count["minor_faults"] + count["major_faults"]
    last_misses = count["tlb_l2_misses" if len(tlbs) == 2 else "tlb_l1_misses"]
    count["tlb_misses"] = last_misses if tlbs else count["accesses"]
    count["tlb_hits"] = count["accesses"] - count["tlb_misses"]
    tokens = {p: memory[p] if p in memory else swap.get(p, 0) for p in positions}
    return ReferenceResult(count, tokens)
