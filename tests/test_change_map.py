"""The guests' change maps: the content sync before each host pass visits only the real
pages whose contents changed.

A guest sets a real page's bit wherever its token changes (a write in ``run_batch``, a
fault, ``Kernel.set_tokens``); the host pass sets the bits of the page-table pages it
wrote. ``VirtualizedMachine.sync_contents`` visits the pages whose bits are set, in
order, and clears them, except those whose host copy is not a frame of the VM and
differs from the content (swapped, for one): their bits stay set, and the host pass
reads them as writes (stale) without walking the host table. In the check mode the
whole VM is compared after the sync, and the stale pages against a look at every host
copy: a page the map missed is an error, so every check-mode run
(tests/test_properties.py among them) checks the map.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from memvirt.dataplane import reclaim
from memvirt.dataplane.layout import F_OWNER, G_TOKEN
from memvirt.dataplane.native import next_bit, set_bit
from memvirt.engine.native import ContentError
from memvirt.engine.virtual import VM, VirtualizedMachine


def _machine(check: bool = False) -> VirtualizedMachine:
    from test_sharing_scan import small_machine

    machine = small_machine(1, False, 7, 2000)
    machine.check = check
    return machine


def _bits(vm: VM) -> list[int]:
    words = vm.guest.changed
    return [w * 64 + b for w in range(words.shape[0]) for b in range(64) if words[w] >> b & 1]


def _host_token(machine: VirtualizedMachine, vm: VM, page: int) -> int:
    frame = reclaim.frame_of(machine.host.machine, vm.host_pid, page)
    return int(machine.host.frames.fi64[frame, G_TOKEN])


def _process_page(vm: VM) -> tuple[int, int, int]:
    """(pid, a virtual page of the VM's process in memory, its real page)."""
    pid = vm.reports[0].pid
    for vpn in range(1 << 16):
        real = reclaim.frame_of(vm.guest.machine, pid, vpn)
        if real >= 0:
            return pid, vpn, real
    raise AssertionError("the process has no page in memory")


def test_a_write_through_the_tlb_sets_the_bit_and_the_sync_clears_it() -> None:
    machine = _machine()
    vm = machine.vms[0]
    machine.sync_contents(vm)
    assert _bits(vm) == []
    pid, vpn, real = _process_page(vm)
    # a read fills the TLB; the write then hits it, unseen by the host
    vm.guest.run(pid, np.array([vpn, vpn], dtype=np.int64), np.array([0, 1], dtype=np.uint8),
                 page_numbers=True)  # fmt: skip
    assert _bits(vm) == [real]
    assert _host_token(machine, vm, real) != vm.guest.frames.token(real)
    assert machine.sync_contents(vm) == 1
    assert _host_token(machine, vm, real) == vm.guest.frames.token(real)
    assert _bits(vm) == []


def test_tokens_set_from_python_set_their_bits() -> None:
    machine = _machine()
    vm = machine.vms[0]
    machine.sync_contents(vm)
    _, _, real = _process_page(vm)
    vm.guest.set_tokens(np.array([real], dtype=np.int64), 12345)
    assert _bits(vm) == [real]
    assert machine.sync_contents(vm) == 1
    assert _host_token(machine, vm, real) == 12345


def test_the_check_mode_finds_a_change_the_map_missed() -> None:
    machine = _machine(check=True)
    vm = machine.vms[0]
    machine.sync_contents(vm)
    _, _, real = _process_page(vm)
    vm.guest.frames.fi64[real, G_TOKEN] = 999  # behind the data plane's back
    with pytest.raises(ContentError, match="missed 1 real pages"):
        machine.sync_contents(vm)


def test_the_sync_of_the_map_is_the_whole_sync() -> None:
    """After a run, the sync from the map and the sync of every page leave the same host."""
    runs = []
    for _ in range(2):
        machine = _machine()
        machine.run(accesses=20_000)
        runs.append(machine)
    by_map, whole = runs
    vm_map, vm_whole = by_map.vms[0], whole.vms[0]
    # the host pass synced; dirty the guest afterwards the same way in both
    for vm in (vm_map, vm_whole):
        pid, vpn, _ = _process_page(vm)
        vm.guest.run(pid, np.array([vpn] * 3, dtype=np.int64), np.ones(3, dtype=np.uint8),
                     page_numbers=True)  # fmt: skip
    changed_map = by_map.sync_contents(vm_map)
    changed_whole = reclaim.sync_contents(whole.host.machine, vm_whole.host_pid,
                                          vm_whole.guest.frames.fi64)  # fmt: skip
    assert changed_map == changed_whole == 1
    for a, b in zip(by_map.host.machine, whole.host.machine, strict=True):
        assert np.array_equal(a, b)


def test_a_page_the_host_swapped_keeps_its_bit_until_the_host_takes_it_again() -> None:
    """The guest writes a page the host has swapped out: the sync cannot give the content
    to a frame, so the bit stays, and the host pass reads the page as a write (stale), as
    a look at the host's swap copy would."""
    machine = _machine()
    vm = machine.vms[0]
    machine.sync_contents(vm)
    _, _, real = _process_page(vm)
    host_m = machine.host.machine
    frame = reclaim.frame_of(host_m, vm.host_pid, real)
    assert reclaim.evict_frames(host_m, np.array([frame], dtype=np.int64), 1) == 1
    assert reclaim.host_copy(host_m, vm.host_pid, real)[0] == 2  # in swap
    vm.guest.set_tokens(np.array([real], dtype=np.int64), 777)
    assert machine.sync_contents(vm) == 0
    assert _bits(vm) == [real]  # still stale
    pages = np.array([real, real], dtype=np.int64)
    writes = np.array([0, 1], dtype=np.int64)
    looked = writes.copy()
    reclaim.mark_stale(host_m, vm.host_pid, pages, vm.guest.frames.fi64, looked)
    kinds = np.zeros(2, dtype=np.int32)  # both data pages
    assert reclaim.mark_stale_changed(pages, kinds, writes, vm.guest.changed) == 1
    assert writes.tolist() == looked.tolist() == [1, 1]
    # the host takes the page again (a fault, then the settling of the pass): the next
    # sync finds its copy current and clears the bit
    machine.host_touch(vm, pages[:1], np.ones(1, dtype=np.uint8))
    assert _host_token(machine, vm, real) == 777
    machine.sync_contents(vm)
    assert _bits(vm) == []


def test_prefetching_the_pages_of_a_pass_changes_nothing() -> None:
    machine = _machine()
    vm = machine.vms[0]
    host_m = machine.host.machine
    before = [a.copy() for a in host_m]
    pages = np.arange(0, vm.real_pages + 64, 7, dtype=np.int64)  # present, absent, beyond
    reclaim.prefetch_pages(host_m, vm.host_pid, pages)
    for a, b in zip(before, machine.host.machine, strict=True):
        assert np.array_equal(a, b)


def test_settling_from_the_host_map_is_the_whole_settling() -> None:
    """After a host pass, settling the frames whose bits the host set leaves the host as
    settling every data page of the pass does, and clears the map and the marks."""
    runs = []
    for _ in range(2):
        machine = _machine()
        machine.run(accesses=20_000)
        runs.append(machine)
    for machine in runs:  # the same pass in both: faults, a host write, pages held already
        vm = machine.vms[0]
        machine.sync_contents(vm)
        machine.host.changed[:] = 0
        pages = np.arange(0, vm.real_pages, 3, dtype=np.int64)
        host_m = machine.host.machine
        frames = np.array([reclaim.frame_of(host_m, vm.host_pid, int(p)) for p in pages])
        private = (frames >= 0) & (machine.host.frames.fi32[frames, F_OWNER] == vm.host_pid)
        writes = (private & (pages % 2 == 1)).astype(np.uint8)  # not to shared frames
        assert machine.host.run(vm.host_pid, pages, writes, page_numbers=True) == pages.size
    by_map, whole = runs
    vm_map, vm_whole = by_map.vms[0], whole.vms[0]
    pages = np.arange(0, vm_map.real_pages, 3, dtype=np.int64)
    assert by_map.host.changed.any()
    content = vm_map.guest.frames.fi64
    reclaim.settle_changed(by_map.host.machine, vm_map.host_pid, pages, content,
                           vm_map.settle_marks, vm_map.guest.changed)  # fmt: skip
    changed = reclaim.settle_tokens(whole.host.machine, vm_whole.host_pid, pages,
                                    vm_whole.guest.frames.fi64)  # fmt: skip
    assert changed > 0  # the pass left frames behind their pages' contents
    assert not by_map.host.changed.any() and not vm_map.settle_marks.any()
    whole.host.changed[:] = 0
    for a, b in zip(by_map.host.machine, whole.host.machine, strict=True):
        assert np.array_equal(a, b)
    assert reclaim.settle_tokens(by_map.host.machine, vm_map.host_pid, pages, content) == 0


def test_the_check_mode_finds_a_host_change_the_map_missed() -> None:
    machine = _machine(check=True)
    vm = machine.vms[0]
    machine.sync_contents(vm)
    _, _, real = _process_page(vm)
    frame = reclaim.frame_of(machine.host.machine, vm.host_pid, real)
    machine.host.changed[:] = 0
    machine.host.frames.fi64[frame, G_TOKEN] = 999  # behind the data plane's back
    with pytest.raises(ContentError, match="settling after a host pass missed 1 frames"):
        machine._settle_pass(vm, np.array([real], dtype=np.int64))


@njit(cache=False)
def _set_bits_by_next_bit(words: np.ndarray, start: int) -> list[int]:
    """Every bit of ``words`` set at ``start`` or after, found as the kernels find them."""
    found = [0 for _ in range(0)]
    f = next_bit(words, start)
    while f >= 0:
        found.append(f)
        f = next_bit(words, f + 1)
    return found


@njit(cache=False)
def _set_each(words: np.ndarray, bits: np.ndarray) -> None:
    for f in bits:
        set_bit(words, f)


@settings(max_examples=200, deadline=None)
@given(
    words=st.integers(0, 5),
    bits=st.lists(st.integers(0, 319), max_size=40),
    start=st.integers(0, 330),
)
def test_next_bit_finds_every_set_bit_in_order(words: int, bits: list[int], start: int) -> None:
    # bit 63 of a word makes it negative; a bit beyond the map is not drawn
    inside = np.array(sorted({b for b in bits if b < 64 * words} | ({63} if words else set())),
                      dtype=np.int64)  # fmt: skip
    bitmap = np.zeros(words, dtype=np.int64)
    _set_each(bitmap, inside)
    expected = [int(b) for b in inside if b >= start]
    assert list(_set_bits_by_next_bit(bitmap, start)) == expected
