"""Three shortcuts of the per-access loop change no result: the walk memo, the path memo
and the TLB fill way found by the probe.

- Without a TLB (the hypervisor's pass over the guests' walks), ``run_batch`` keeps a memo
  of the pages it walked in the batch: a read of one of them, with no eviction of it
  since, is counted as a walk (its references) without reading the table again. A
  kernel that records its walks (a guest under a hypervisor) never uses it.
- Every kernel keeps a memo of the paths to the leaf tables it walked in the batch (the
  upper entries do not change within a batch): a walk under a known leaf table starts
  there, with the same references counted and the same table pages recorded.
  ``K_NO_PATH_MEMO`` turns it off. So a recording kernel without the path memo is the
  reference: every array of two machines that ran the same accesses must end equal.
  Through the path memo, a kernel with a TLB also asks the CPU ahead for the leaf entries
  and frame rows of the accesses to come (``native.prefetch_ahead``); without it, it does
  not: the same comparison shows that the hints change nothing.
- On a TLB miss, the probe of a level's set also finds the way :func:`tlb_fill` would
  take in it, and the fill uses that way when nothing came between (no fault, no huge
  page). The way must be the one ``tlb_fill`` picks, for any state of the set.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memvirt.dataplane import native
from memvirt.dataplane.layout import (
    K_NO_PATH_MEMO,
    K_RECORD,
    MEMO_REFS,
    MEMO_SLOTS,
    S_REC_N,
    S_TLB_CLOCK,
)
from memvirt.kernel.kernel import Kernel, KernelConfig, KernelError, Region
from memvirt.mmu.tlb import TLBConfig
from memvirt.units import KiB, PageGeometry

PAGE = 4 * KiB


def _pair(
    frames: int, policy: str, huge_pages: int = 0, tlb: TLBConfig | None = None,
    record: bool = False, levels: int = 4,
) -> tuple[Kernel, Kernel]:  # fmt: skip
    """Two identical kernels: the second without the path memo and recording its walks (so
    without the walk memo either); the first records its walks only if ``record``."""
    kernels = []
    for _ in range(2):
        k = Kernel(
            KernelConfig(
                frames=frames, tlb=tlb, policy=policy, swap_slots=256,
                huge_pages=huge_pages, geometry=PageGeometry.x86_64(levels=levels),
            )
        )  # fmt: skip
        kernels.append(k)
    memo, reference = kernels
    for k in (reference, memo) if record else (reference,):
        k.cfg[K_RECORD] = 1
        k.record = np.zeros(1 << 16, dtype=np.int32)
    reference.cfg[K_NO_PATH_MEMO] = 1
    return memo, reference


def _same_state(a: Kernel, b: Kernel) -> None:
    ma, mb = a.machine, b.machine
    for name in ma._fields:
        if name in ("record", "memo"):
            continue
        x, y = getattr(ma, name), getattr(mb, name)
        if name == "st":
            x, y = x.copy(), y.copy()
            x[S_REC_N] = y[S_REC_N] = 0
        if name == "cfg":
            x, y = x.copy(), y.copy()
            x[K_RECORD] = y[K_RECORD] = x[K_NO_PATH_MEMO] = y[K_NO_PATH_MEMO] = 0
        assert np.array_equal(x, y), name


@settings(max_examples=60, deadline=None)
@given(
    pages=st.lists(st.integers(0, 40), min_size=1, max_size=400),
    write_bits=st.lists(st.booleans(), min_size=400, max_size=400),
    frames=st.integers(8, 48),
    policy=st.sampled_from(["lru", "fifo", "clock", "random", "random-frame"]),
    stride=st.sampled_from([1, MEMO_SLOTS - 1, MEMO_SLOTS, MEMO_SLOTS + 1, 512]),
)
def test_the_memo_changes_nothing(
    pages: list[int], write_bits: list[bool], frames: int, policy: str, stride: int
) -> None:
    """Random accesses (pages that collide in the memo's slots, evictions under every
    policy, writes) leave both machines in the same state, counters included."""
    memo, reference = _pair(frames, policy)
    base = 1 << 20
    vpns = np.array([base + p * stride for p in pages], dtype=np.int64)
    writes = np.array(write_bits[: len(pages)], dtype=np.uint8)
    for k in (memo, reference):
        pid = k.spawn([Region(base * PAGE, (40 * stride + 1) * PAGE)])
        k.run(pid, vpns, writes, page_numbers=True)
    _same_state(memo, reference)


def test_the_memo_with_huge_pages() -> None:
    """Pages of a huge mapping are remembered with their fewer references."""
    memo, reference = _pair(4096, "lru", huge_pages=4)
    span = 512
    vpns = np.array([0, 1, 0, 511, 1, 0, span, span + 3, 0], dtype=np.int64) + (1 << 20)
    for k in (memo, reference):
        pid = k.spawn([Region((1 << 20) * PAGE, 2 * span * PAGE, huge=True)])
        k.run(pid, vpns, None, page_numbers=True)
    _same_state(memo, reference)
    # the first walk stops at the empty root, the other fault one level above the leaves;
    # every other access reads the three levels above a huge page
    assert memo.counters()["walk_memory_references"] == 1 + 3 + 7 * 3


def test_a_read_of_a_walked_page_is_counted_from_the_memo() -> None:
    k = Kernel(KernelConfig(frames=64, tlb=None))
    pid = k.spawn([Region(0x100000, 16 * PAGE)])
    vpn = 0x100000 // PAGE + 5
    k.run(pid, np.array([vpn, vpn, vpn], dtype=np.int64), None, page_numbers=True)
    frame = k.walk(pid, vpn * PAGE).pfn
    assert list(k.memo[vpn % MEMO_SLOTS, : MEMO_REFS + 1]) == [vpn, frame, 4]
    assert k.counters(pid)["walks"] == 3
    # the first walk met an empty root entry (one reference); the next two read 4 each
    assert k.counters(pid)["walk_memory_references"] == 1 + 4 + 4


def test_an_evicted_page_is_not_read_from_the_memo() -> None:
    """Page a is walked, then evicted by the fault of page c (FIFO, two data frames), then
    read again in the same batch: it must fault, not hit its old frame."""
    memo, reference = _pair(4 + 2, "fifo")  # four table pages, two data frames
    a, b, c = 1 << 20, (1 << 20) + 1, (1 << 20) + 2
    vpns = np.array([a, b, a, c, a], dtype=np.int64)
    for k in (memo, reference):
        pid = k.spawn([Region(a * PAGE, 3 * PAGE)])
        k.run(pid, vpns, None, page_numbers=True)
        assert k.counters(pid)["faults"] == 4
    _same_state(memo, reference)


@settings(max_examples=60, deadline=None)
@given(
    pages=st.lists(st.integers(0, 3000), min_size=1, max_size=400),
    write_bits=st.lists(st.booleans(), min_size=400, max_size=400),
    frames=st.integers(12, 64),
    policy=st.sampled_from(["lru", "fifo", "clock", "random-frame"]),
    levels=st.integers(2, 5),
    tlb=st.booleans(),
)
def test_the_path_memo_changes_nothing(
    pages: list[int], write_bits: list[bool], frames: int, policy: str, levels: int, tlb: bool
) -> None:
    """Random accesses over a few leaf tables (new tables made within the batch, evictions,
    writes), behind a TLB or not, at every depth of table: a recording kernel with the path
    memo leaves the same state and records the same walks as one without it."""
    memo, reference = _pair(frames, policy, tlb=TLBConfig() if tlb else None, record=True,
                            levels=levels)  # fmt: skip
    base = 1 << 12  # within the 2^18 pages of a 2-level table
    vpns = np.array([base + p for p in pages], dtype=np.int64)
    writes = np.array(write_bits[: len(pages)], dtype=np.uint8)
    for k in (memo, reference):
        pid = k.spawn([Region(base * PAGE, 3001 * PAGE)])
        k.run(pid, vpns, writes, page_numbers=True)
    n = int(reference.st[S_REC_N])
    assert n > 0 and int(memo.st[S_REC_N]) == n
    assert np.array_equal(memo.record[:n], reference.record[:n])
    _same_state(memo, reference)


def test_the_path_memo_with_huge_pages() -> None:
    """A huge page's walk stops above the leaf level: its path is not noted, and base pages
    beside it are walked as before."""
    memo, reference = _pair(4096, "lru", huge_pages=4, tlb=TLBConfig(), record=True)
    span = 512
    base = 1 << 20
    vpns = np.array([0, 1, span, span + 1, 0, span + 2, 2 * span, 1], dtype=np.int64) + base
    for k in (memo, reference):
        pid = k.spawn([Region(base * PAGE, span * PAGE, huge=True),
                       Region((base + span) * PAGE, 2 * span * PAGE)])  # fmt: skip
        k.run(pid, vpns, None, page_numbers=True)
    n = int(reference.st[S_REC_N])
    assert np.array_equal(memo.record[:n], reference.record[:n])
    _same_state(memo, reference)


@settings(max_examples=200, deadline=None)
@given(
    ways=st.integers(1, 12),
    tags=st.lists(st.integers(-1, 6), min_size=12, max_size=12),
    stamps=st.lists(st.integers(0, 5), min_size=12, max_size=12),
    tag=st.integers(0, 8),
)
def test_the_probe_finds_the_way_a_fill_takes(
    ways: int, tags: list[int], stamps: list[int], tag: int
) -> None:
    """For any contents of a set (invalid ways, equal stamps), a probe that misses names
    the way :func:`native.tlb_fill` then writes; a probe that hits returns the value."""
    t = np.array([tags[:ways]], dtype=np.int64)
    s = np.array([stamps[:ways]], dtype=np.int64)
    v = np.arange(ways, dtype=np.int64)[None, :] + 100
    state = np.zeros(32, dtype=np.int64)
    val, way = native.tlb_probe_victim(t, v, s.copy(), state.copy(), 0, 1, ways, tag, 0)
    if tag in tags[:ways]:
        assert val == 100 + tags[:ways].index(tag) and way == -1
        return
    assert val == -1
    filled_tags = t.copy()
    native.tlb_fill(filled_tags, v.copy(), s.copy(), state.copy(), 0, 1, ways, tag, 0, 7)
    changed = np.flatnonzero(filled_tags[0] != t[0])
    assert list(changed) == [way]
    put_tags, put_vals, put_stamps, put_state = t.copy(), v.copy(), s.copy(), state.copy()
    native.tlb_put(put_tags, put_vals, put_stamps, put_state, 0, way, tag, 7)
    assert put_tags[0, way] == tag and put_vals[0, way] == 7
    assert put_state[S_TLB_CLOCK] == 1 and put_stamps[0, way] == 1


def test_a_full_walk_record_stops_the_run_only_when_asked() -> None:
    _, k = _pair(256, "lru", record=True)
    k.record = np.zeros(5 * 10, dtype=np.int32)  # ten 4-level walks at most
    pid = k.spawn([Region(0, 64 * PAGE)])
    pages = np.arange(64, dtype=np.int64)  # a walk each: 64 cold pages
    with pytest.raises(KernelError, match="walk record is full"):
        k.run(pid, pages, page_numbers=True)
    k.st[S_REC_N] = 0
    done = k.run(pid, pages, page_numbers=True, until_full=True)
    assert 0 < done < pages.size and k.alive(pid)
    assert int(k.st[S_REC_N]) <= k.record.shape[0]
