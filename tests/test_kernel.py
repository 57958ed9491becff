"""The operating-system model on one memory: walks, faults, swap, TLB, processes, OOM."""

from __future__ import annotations

import numpy as np
import pytest

import memvirt.kernel.kernel as kernel_module
from memvirt.dataplane.layout import (
    F_FLAGS,
    F_OWNER,
    F_RMAP,
    G_TOKEN,
    G_VPN,
    N_FI32,
    S_TABLE_NEXT,
)
from memvirt.dataplane.state import copy_machine
from memvirt.kernel.kernel import (
    AdmissionError,
    Kernel,
    KernelConfig,
    KernelError,
    Region,
    describe_pte,
)
from memvirt.memory.frames import FramePool
from memvirt.mmu.tlb import TLBConfig, TLBLevel
from memvirt.units import GiB, KiB, MiB, PageGeometry

PAGE = 4 * KiB


def kernel(frames: int, **kw: object) -> Kernel:
    return Kernel(KernelConfig(frames=frames, **kw))  # type: ignore[arg-type]


def pages(*vpns: int) -> np.ndarray:
    return np.array(vpns, dtype=np.int64) * PAGE


# ---------------------------------------------------------------- page walks


@pytest.mark.parametrize(("levels", "refs"), [(4, 4), (5, 5), (2, 2), (3, 3)])
def test_a_walk_reads_one_entry_per_level(levels: int, refs: int) -> None:
    geo = PageGeometry.x86_64(levels=4) if levels == 4 else PageGeometry.uniform(levels, 9)
    k = kernel(64, geometry=geo, tlb=None)
    base = 0x100000
    pid = k.spawn([Region(base, 16 * PAGE)])
    assert k.access(pid, base + 5 * PAGE + 12, write=True)
    # the first walk stopped at the empty root entry: one reference, then a fault
    assert k.counters(pid)["walk_memory_references"] == 1
    walk = k.walk(pid, base + 5 * PAGE + 12)
    assert walk.memory_references == refs
    assert [s.level for s in walk.steps] == list(range(refs))
    # the walk that the MMU does on the next access counts the same references
    k.access(pid, base + 5 * PAGE)
    assert k.counters(pid)["walk_memory_references"] == 1 + refs


def test_walk_reports_each_table_frame_index_and_entry() -> None:
    k = kernel(64, tlb=None)
    va = (3 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0x123
    pid = k.spawn([Region(va & ~0xFFF, PAGE)])
    k.access(pid, va)
    walk = k.walk(pid, va)
    assert [s.index for s in walk.steps] == [3, 5, 7, 9]
    # each non-leaf entry points at the frame of the next step's table page
    for step, nxt in zip(walk.steps, walk.steps[1:], strict=False):
        assert step.entry >> 12 == nxt.table_frame
        assert "present" in describe_pte(step.entry)
    assert walk.physical_address == walk.pfn * PAGE + 0x123  # type: ignore[operator]
    # table pages are frames of the same memory, owned by the process
    for step in walk.steps:
        assert k.frames.owner(step.table_frame) == pid
        assert k.frames.flags(step.table_frame).table
    assert k.table_pages(pid) == 4


def test_five_level_paging_translates_57_bit_addresses() -> None:
    geo = PageGeometry.x86_64(levels=5)
    assert geo.va_bits == 57
    k = kernel(64, geometry=geo)
    va = (1 << 56) + 0x1000
    pid = k.spawn([Region(va, PAGE)])
    assert k.access(pid, va)
    assert k.walk(pid, va).memory_references == 5


def test_a_2mib_leaf_ends_the_walk_one_level_early() -> None:
    k = kernel(2048, huge_pages=2, tlb=None)
    base = 0x40000000
    pid = k.spawn([Region(base, 2 * MiB, huge=True)])
    assert k.access(pid, base + 0x1234, write=True)
    walk = k.walk(pid, base + 0x1234)
    assert walk.memory_references == 3
    assert walk.page_size == 2 * MiB
    assert walk.steps[-1].entry & 32  # the huge bit
    # another base page of the same huge page: no new fault
    assert k.access(pid, base + 100 * PAGE)
    assert k.counters(pid)["minor_faults"] == 1
    assert k.translate(pid, base + 100 * PAGE) == walk.pfn * PAGE - 0x1000 + 100 * PAGE  # type: ignore[operator]
    # one TLB entry covers the whole huge page
    t = kernel(2048, huge_pages=1)
    p = t.spawn([Region(base, 2 * MiB, huge=True)])
    t.run(p, base + np.arange(512, dtype=np.int64) * PAGE)
    assert t.counters(p)["tlb_misses"] == 1


def test_huge_pages_come_from_a_reserved_pool_and_its_exhaustion_is_a_bus_error() -> None:
    k = kernel(2048, huge_pages=1, tlb=None)
    base = 0x40000000
    pid = k.spawn([Region(base, 4 * MiB, huge=True)])
    assert k.access(pid, base)
    assert not k.access(pid, base + 2 * MiB)
    assert "bus error" in k.kills[0].reason
    k.check_invariants()


# ---------------------------------------------------------------- demand paging and swap


def test_first_touch_is_a_minor_fault_and_an_evicted_page_returns_by_a_major_fault() -> None:
    k = kernel(8, tlb=None, swap_slots=16)
    pid = k.spawn([Region(0, 64 * PAGE)])
    data_frames = k.frames.small_frames - 4  # four table pages for the first page
    k.run(pid, pages(0), np.array([1]))
    assert k.counters(pid)["minor_faults"] == 1
    # fill memory so page 0 (dirty) is evicted, then touch it again
    k.run(pid, pages(*range(1, data_frames + 1)))
    assert k.counters(pid)["evictions"] == 1
    assert k.counters(pid)["writebacks"] == 1
    assert k.swapped(pid) == 1
    k.run(pid, pages(0))
    assert k.counters(pid)["major_faults"] == 1
    k.check_invariants()


def test_a_clean_page_with_a_current_swap_copy_is_dropped_without_a_write() -> None:
    k = kernel(5, tlb=None, swap_slots=16, policy="fifo")
    pid = k.spawn([Region(0, 64 * PAGE)])
    # 4 table pages, then one data frame: every new page evicts the last
    k.run(pid, pages(0, 1), np.array([1, 0]))  # page 0 written, then evicted by page 1
    assert k.counters(pid)["writebacks"] == 1
    k.run(pid, pages(0, 1))  # page 0 read back (major), then evicted clean
    c = k.counters(pid)
    assert c["major_faults"] == 1
    assert c["writebacks"] == 1  # no second write: the swap copy is current
    assert c["clean_drops"] == 1
    k.run(pid, pages(0), np.array([1]))  # a write makes the copy stale
    k.run(pid, pages(1))
    assert k.counters(pid)["writebacks"] == 2


def test_a_page_never_written_reads_back_as_zeros_after_eviction() -> None:
    k = kernel(5, tlb=None, swap_slots=0, policy="fifo")
    pid = k.spawn([Region(0, 64 * PAGE)])
    k.run(pid, pages(0, 1, 0))
    c = k.counters(pid)
    assert c["minor_faults"] == 3 and c["major_faults"] == 0
    assert c["zero_drops"] == 2 and c["writebacks"] == 0
    assert k.read_token(pid, 0) == 0


def test_a_pages_content_survives_eviction_and_reload() -> None:
    k = kernel(12, tlb=None, swap_slots=64, policy="lru")
    pid = k.spawn([Region(0, 64 * PAGE)])
    rng = np.random.default_rng(7)
    vpns = rng.integers(0, 40, 2000)
    writes = rng.random(2000) < 0.3
    k.run(pid, vpns * PAGE, writes)
    # the token each page last received, by replaying the writes in order
    tokens = k.counters(pid)["writes"]
    assert tokens == int(writes.sum())
    last = {}
    for n, (v, w) in enumerate(zip(vpns[writes], writes[writes], strict=True), start=1):
        assert w
        last[int(v)] = n
    for v in range(40):
        assert k.read_token(pid, v * PAGE) == last.get(v, 0)
    k.check_invariants()


def test_swap_device_latencies_follow_the_device_kind() -> None:
    assert kernel(8, swap_slots=4, swap_kind="hdd").swap.read_ns == 8_000_000
    assert kernel(8, swap_slots=4).swap.read_ns == 80_000


# ---------------------------------------------------------------- processes


def test_the_same_virtual_address_in_two_processes_maps_to_different_frames() -> None:
    k = kernel(64)
    a = k.spawn([Region(0x1000, 4 * PAGE)])
    b = k.spawn([Region(0x1000, 4 * PAGE)])
    k.access(a, 0x1000, write=True)
    k.access(b, 0x1000, write=True)
    pa, pb = k.translate(a, 0x1000), k.translate(b, 0x1000)
    assert pa is not None and pb is not None and pa != pb
    assert k.read_token(a, 0x1000) != k.read_token(b, 0x1000)
    k.check_tlb()


def test_an_access_outside_every_region_kills_only_that_process() -> None:
    k = kernel(64)
    bad = k.spawn([Region(0x1000, PAGE)], name="bad")
    good = k.spawn([Region(0x1000, PAGE)], name="good")
    done = k.run(bad, np.array([0x1000, 0x1008, 0x9000, 0x1000]))
    assert done == 2
    assert not k.alive(bad)
    assert k.kills[0].name == "bad"
    assert "segmentation fault" in k.kills[0].reason and "0x9000" in k.kills[0].reason
    assert k.resident(bad) == 0 and k.table_pages(bad) == 0
    assert k.run(good, np.array([0x1000])) == 1
    k.check_invariants()


def test_a_write_to_a_read_only_region_is_a_segmentation_fault() -> None:
    k = kernel(64)
    pid = k.spawn([Region(0, PAGE, writable=False)])
    assert k.access(pid, 0)  # reads are fine
    assert k.access(pid, 0)  # and hit the TLB
    assert not k.access(pid, 8, write=True)  # the TLB entry is read-only too
    assert "read-only" in k.kills[0].reason


def test_the_oom_killer_ends_the_process_with_the_largest_footprint() -> None:
    k = kernel(24, swap_slots=4, tlb=None)
    small = k.spawn([Region(0, 64 * PAGE)], name="small")
    big = k.spawn([Region(0, 64 * PAGE)], name="big")
    k.run(small, pages(0, 1), np.ones(2))
    done = k.run(big, pages(*range(40)), np.ones(40))
    assert [r.name for r in k.kills] == ["big"]
    assert "OOM" in k.kills[0].reason
    assert done < 40
    assert k.alive(small)
    assert k.stats()["oom_kills"] == 1
    k.check_invariants()


def test_local_replacement_keeps_a_process_within_its_share() -> None:
    k = kernel(40, scope="local", tlb=None, swap_slots=200)
    a = k.spawn([Region(0, 256 * PAGE)])
    b = k.spawn([Region(0, 256 * PAGE)])
    k.run(a, pages(*range(100)))
    assert k.resident(a) == 20  # an equal share of 40 frames
    k.run(b, pages(0, 1, 2))
    assert k.counters(a)["evictions"] == 80  # b took free frames, not a's pages
    k.check_invariants()


def test_global_replacement_takes_frames_from_any_process() -> None:
    k = kernel(40, tlb=None, swap_slots=200, policy="fifo")
    a = k.spawn([Region(0, 256 * PAGE)])
    b = k.spawn([Region(0, 256 * PAGE)])
    k.run(a, pages(*range(100)))
    before = k.resident(a)
    k.run(b, pages(*range(10)))
    assert k.resident(a) < before
    k.check_invariants()


# ---------------------------------------------------------------- TLB


def test_tlb_hits_after_the_first_access_and_counts_per_level() -> None:
    k = kernel(64, tlb=TLBConfig((TLBLevel(4, 2), TLBLevel(16, 4))))
    pid = k.spawn([Region(0, 64 * PAGE)])
    k.run(pid, pages(0, 0, 0))
    c = k.counters(pid)
    assert (c["tlb_l1_hits"], c["tlb_l1_misses"], c["tlb_l2_misses"]) == (2, 1, 1)
    # 8 pages overflow the 4-entry L1 but fit the 16-entry L2
    k.run(pid, pages(*range(8), *range(8)))
    c = k.counters(pid)
    assert c["tlb_l2_hits"] >= 4
    assert c["walks"] == 8


def test_the_tlb_never_returns_a_stale_mapping_after_an_eviction() -> None:
    k = kernel(12, tlb=TLBConfig((TLBLevel(8, 2), TLBLevel(32, 4))), swap_slots=100)
    pid = k.spawn([Region(0, 64 * PAGE)])
    rng = np.random.default_rng(3)
    for _ in range(50):
        v = rng.integers(0, 30, 20)
        k.run(pid, v * PAGE, rng.random(20) < 0.5)
        k.check_tlb()
        k.check_invariants()
    assert k.counters(pid)["evictions"] > 0


def test_address_space_tags_make_context_switches_flush_free() -> None:
    tagged = kernel(64)
    untagged = kernel(64, tlb=TLBConfig(flush_on_switch=True))
    for k in (tagged, untagged):
        a = k.spawn([Region(0, PAGE)])
        b = k.spawn([Region(0, PAGE)])
        for _ in range(3):
            k.run(a, pages(0))
            k.run(b, pages(0))
    assert tagged.counters()["tlb_misses"] == 2
    assert untagged.counters()["tlb_misses"] == 6
    assert untagged.stats()["tlb_flushes"] == 6
    tagged.check_tlb()


# ---------------------------------------------------------------- conservation


def test_frames_are_conserved_and_point_back_to_their_pages_after_every_step() -> None:
    k = kernel(30, swap_slots=40, policy="clock")
    procs = [k.spawn([Region(0, 32 * PAGE), Region(1 << 30, 8 * PAGE)]) for _ in range(3)]
    rng = np.random.default_rng(11)
    for step in range(60):
        pid = procs[step % 3]
        if not k.alive(pid):
            continue
        v = rng.integers(0, 40, 5)
        addr = np.where(v < 32, v * PAGE, (1 << 30) + (v - 32) * PAGE)
        k.run(pid, addr, rng.random(5) < 0.4)
        k.check_invariants()
        k.check_tlb()
        used = k.frames.used()
        assert used + k.stats()["free_frames"] == 30


# ---------------------------------------------------------------- without virtual memory


def test_without_virtual_memory_a_process_larger_than_memory_is_refused() -> None:
    k = kernel(GiB * 4 // PAGE, virtual_memory=False, tlb=None)
    with pytest.raises(
        AdmissionError, match="needs 6 GiB of contiguous physical memory, 4 GiB free"
    ):
        k.spawn([Region(0, 6 * GiB)], name="big")
    # with virtual memory the same process runs in 32 MiB, one page per 2 MiB touched
    vm = kernel(8192, tlb=None, swap_slots=4096)
    pid = vm.spawn([Region(0, 6 * GiB)], name="big")
    assert vm.run(pid, np.arange(0, 6 * GiB, 2 * MiB, dtype=np.int64)) == 3072


def test_without_virtual_memory_processes_that_do_not_fit_together_cannot_run_together() -> None:
    k = kernel(100, virtual_memory=False, tlb=None)
    a = k.spawn([Region(0, 60 * PAGE)], name="a")
    with pytest.raises(AdmissionError, match="b needs 240 KiB"):
        k.spawn([Region(0, 60 * PAGE)], name="b")
    assert k.run(a, pages(0, 59), np.array([1, 1])) == 2
    assert k.translate(a, 59 * PAGE) == 59 * PAGE  # loaded at the bottom, contiguous
    k.kill(a)
    b = k.spawn([Region(0, 60 * PAGE)], name="b")
    assert k.run(b, pages(0)) == 1
    # out of bounds is still a fault: there is no virtual memory to grow into
    assert k.run(b, pages(60)) == 0
    assert "segmentation fault" in k.kills[-1].reason


def test_bad_kernel_settings_are_refused() -> None:
    with pytest.raises(KernelError):
        kernel(0)
    with pytest.raises(ValueError, match="known policies are clock, fifo, lru, opt, random"):
        kernel(8, policy="nope")
    with pytest.raises(KernelError, match="not a positive whole number"):
        kernel(8).spawn([Region(100, PAGE)])
    with pytest.raises(KernelError, match="overlap"):
        kernel(8).spawn([Region(0, 2 * PAGE), Region(PAGE, PAGE)])
    with pytest.raises(KernelError, match="needs the future"):
        k = kernel(8, policy="opt")
        k.run(k.spawn([Region(0, PAGE)]), pages(0))


@pytest.mark.parametrize("scope", ["global", "local"])
def test_random_frame_victims_are_pages_of_the_right_list(scope: str) -> None:
    k = kernel(64, policy="random-frame", scope=scope, swap_slots=400, seed=5)
    a = k.spawn([Region(0, 256 * PAGE)])
    b = k.spawn([Region(1 << 30, 256 * PAGE)])
    rng = np.random.default_rng(2)
    for _ in range(40):
        k.run(a, rng.integers(0, 200, 25) * PAGE, rng.random(25) < 0.5)
        k.run(b, (1 << 30) + rng.integers(0, 200, 25) * PAGE)
        k.check_invariants()
        k.check_tlb()
    c = k.counters()
    assert c["evictions"] > 500
    if scope == "local":  # each process replaced only its own pages, within its share
        assert k.resident(a) <= 32 and k.resident(b) <= 32  # half of the 64 frames
    # victims spread over pages: not the same few frames again and again
    assert k.counters(a)["evictions"] > 100 and k.counters(b)["evictions"] > 100


def test_the_table_pool_never_grows_past_what_a_reverse_map_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a frame's reverse map names table * 4096 + index in 31 bits: a pool grown by
    # doublings from a size that is not a power of two must stop at the bound, not step
    # over it, and then refuse with a message
    monkeypatch.setattr(kernel_module, "MAX_TABLE_PAGES", 12)
    kernel = Kernel(KernelConfig(frames=64, tlb=None))
    assert kernel.tables.shape[0] == 8
    kernel.st[S_TABLE_NEXT] = 8  # every table page of the pool taken
    kernel._ensure_tables(3)  # 8 -> 12, not 16
    assert kernel.tables.shape[0] == 12
    kernel.st[S_TABLE_NEXT] = 12
    with pytest.raises(KernelError, match="more than 12 table pages"):
        kernel._ensure_tables(1)
    assert kernel.tables.shape[0] == 12


def test_a_frames_int32_and_int64_fields_share_one_row_and_a_copy_keeps_it_so() -> None:
    pool = FramePool(8)
    assert pool.fi32.base is pool.fi64 and pool.fi64.strides[0] == 40  # 40 bytes a frame
    before = pool.fi32[3, :N_FI32].copy()
    pool.fi64[3, G_TOKEN] = -1  # every bit set: no int32 field may see it
    pool.fi64[3, G_VPN] = 12345
    assert np.array_equal(pool.fi32[3, :N_FI32], before)
    pool.fi32[3, F_RMAP] = 7
    pool.fi32[3, F_FLAGS] = 2
    assert pool.fi64[3, G_TOKEN] == -1 and pool.fi64[3, G_VPN] == 12345
    assert pool.owner(3) == -1 and pool.fi32[4, F_OWNER] == -1  # (other frames untouched)

    machine = Kernel(KernelConfig(frames=64)).machine
    twin = copy_machine(machine)
    assert twin.fi32.base is twin.fi64 and not np.shares_memory(twin.fi64, machine.fi64)
    twin.fi64[5, G_TOKEN] = 99
    assert machine.fi64[5, G_TOKEN] != 99
