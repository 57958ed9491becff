"""Swap state grows with the slots in use, not with the device.

A swap device hands out slots in order (0, 1, 2...) and reuses a slot given back
before any slot never used, last in first out: the slots in use lie below the first
never-used one, so the per-slot arrays (content token, owner, compressed size, the
stack of freed slots) need only hold those, and grow by a quarter as it rises. These
tests hold that to what matters: the same slot numbers as a device whose every slot
had its state from the start, the same runs, a device that still refuses at exactly
its size, and freed slots used again.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

import memvirt.memory.swap as swap_module
from memvirt.config import scenario_from_dict
from memvirt.dataplane import native
from memvirt.engine.scenario import build
from memvirt.engine.virtual import VirtualizedMachine
from memvirt.kernel.kernel import Kernel, KernelConfig, Region

WHOLE_DEVICE = 1 << 40  # an initial size no device reaches: arrays for every slot at once


def kernel(frames: int = 32, **kw: Any) -> Kernel:
    return Kernel(KernelConfig(frames=frames, tlb=None, **kw))


def write_pages(k: Kernel, pid: int, first: int, n: int) -> int:
    """Process ``pid`` writes pages ``first .. first + n``; how many writes happened."""
    return k.run(pid, np.arange(first, first + n), np.ones(n, np.uint8), page_numbers=True)


def test_slots_are_handed_out_as_from_a_stack_of_every_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The twin is the device as it was: a stack holding every slot, slot 0 on top, freed
    slots pushed back on it. Random takes and gives get the same slot numbers, and the
    last free slot is the device's last."""
    monkeypatch.setattr(swap_module, "INITIAL_SLOTS", 1)
    slots = 50
    k = kernel(swap_slots=slots)
    twin = list(range(slots - 1, -1, -1))
    used: list[int] = []
    refused = 0
    rng = random.Random(7)
    for _ in range(600):
        if used and rng.random() < 0.3:
            slot = used.pop(rng.randrange(len(used)))
            native.free_slot(k.machine, slot)
            twin.append(slot)
            continue
        got = int(native.take_slot(k.reserve_slots(1)))
        assert got == (twin.pop() if twin else -1)
        if got >= 0:
            used.append(got)
        else:
            refused += 1  # the device is full: all 50 slots in use
            assert len(used) == slots
        assert k.free_slots() == len(twin)
        assert k.swap.capacity <= slots
    assert refused > 0


def test_a_slot_beyond_the_arrays_is_refused_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A data-plane call that may take slots must be preceded by room in the arrays; one
    that is not fails at once instead of writing past them."""
    monkeypatch.setattr(swap_module, "INITIAL_SLOTS", 2)
    k = kernel(swap_slots=10)
    for _ in range(2):
        native.take_slot(k.machine)
    with pytest.raises(IndexError, match="beyond the swap arrays"):
        native.take_slot(k.machine)
    assert int(native.take_slot(k.reserve_slots(1))) == 2
    assert k.swap.capacity == 3  # grown by a quarter (a slot at least), not to the device


def paging(initial: int, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Kernel:
    """Two processes writing and reading back far more pages than memory holds."""
    monkeypatch.setattr(swap_module, "INITIAL_SLOTS", initial)
    k = kernel(frames=48, policy="clock", swap_slots=3000, **kw)
    a = k.spawn([Region(0, 1024 * 4096)], name="a")
    b = k.spawn([Region(0, 1024 * 4096)], name="b")
    rng = np.random.default_rng(3)
    for pid in (a, b, a, b):
        vpns = rng.integers(0, 900, 4000)
        k.run(pid, vpns, (rng.random(4000) < 0.5).astype(np.uint8), page_numbers=True)
    return k


def test_growing_arrays_run_as_arrays_for_the_whole_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grown = paging(4, monkeypatch)
    whole = paging(WHOLE_DEVICE, monkeypatch)
    assert whole.swap.capacity == 3000
    assert 4 < grown.swap.capacity < 3000  # it grew, and not to the device's size
    assert grown.swap.used() > 4 * 100
    for pid in (0, 1):
        assert grown.counters(pid) == whole.counters(pid)
    assert grown.stats() == whole.stats()
    n = grown.swap.capacity
    assert np.array_equal(grown.swap.token, whole.swap.token[:n])
    assert np.array_equal(grown.swap.owner, whole.swap.owner[:n])
    assert np.all(whole.swap.owner[n:] == -1)  # slots beyond were never used
    assert np.array_equal(grown.tables, whole.tables)
    grown.check_invariants()


def test_a_device_that_fills_refuses_at_exactly_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each dirty page beyond memory takes a slot; the write after the device's last slot
    finds none, and the out-of-memory killer ends the process, as with every slot's state
    kept from the start."""
    done = []
    for initial in (1, WHOLE_DEVICE):
        monkeypatch.setattr(swap_module, "INITIAL_SLOTS", initial)
        k = kernel(frames=32, swap_slots=20)
        pid = k.spawn([Region(0, 256 * 4096)])
        done.append(write_pages(k, pid, 0, 200))
        assert not k.alive(pid)
        assert "OOM killer" in k.kills[0].reason
        assert k.counters(pid)["writebacks"] == 20
        assert k.swap.capacity == 20
    assert done[0] == done[1]
    # the first 4 frames hold its page tables, the other 28 and the 20 slots its pages
    assert done[0] == 28 + 20


def test_a_device_filled_by_a_fault_takes_its_never_used_slots_without_arrays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(swap_module, "INITIAL_SLOTS", 8)
    k = kernel(frames=32, swap_slots=100_000)
    pid = k.spawn([Region(0, 256 * 4096)])
    write_pages(k, pid, 0, 40)
    used = k.swap.used()
    assert used > 0
    assert k.fill_swap() == 100_000 - used
    assert k.free_slots() == 0
    assert k.swap.capacity < 100  # the slots it took have no state
    assert int(np.count_nonzero(k.swap.owner >= 0)) == used
    assert write_pages(k, pid, 40, 200) == 0  # the next page needs a slot for a dirty victim
    assert "OOM killer" in k.kills[0].reason
    assert k.counters(pid)["writebacks"] == used
    assert k.swap.capacity < 100
    assert k.free_slots() == used  # its own slots came back, the others stay taken


def test_slots_freed_by_a_killed_process_are_used_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swap_module, "INITIAL_SLOTS", 4)
    k = kernel(frames=32, swap_slots=5000)
    a = k.spawn([Region(0, 512 * 4096)], name="a")
    write_pages(k, a, 0, 300)
    held = k.swap.used()
    capacity = k.swap.capacity
    slots_of_a = set(np.flatnonzero(k.swap.owner == a).tolist())
    assert len(slots_of_a) == held > 4
    k.kill(a)
    assert k.swap.used() == 0
    assert k.free_slots() == 5000
    b = k.spawn([Region(0, 512 * 4096)], name="b")
    write_pages(k, b, 0, 300)
    # b swaps as many pages, into a's old slots: the arrays did not grow
    assert set(np.flatnonzero(k.swap.owner == b).tolist()) == slots_of_a
    assert k.swap.capacity == capacity
    k.check_invariants()


def virtual(host_swap: str) -> dict[str, Any]:
    """Two 8 MiB VMs on a 12 MiB host, each running a process of 12 MiB: the guests swap
    to their own devices, the host swaps and compresses behind them; the check mode
    accounts for every frame and slot."""

    def vm(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "memory": "8MiB",
            "guest": {"swap": "16MiB"},
            "processes": [
                {
                    "name": "app",
                    "memory": "12MiB",
                    "rate": 1e6,
                    "workload": {"kind": "zipf", "pages": 3072, "alpha": 0.6,
                                 "write_fraction": 0.4},
                }
            ],
        }  # fmt: skip

    return {
        "host": {"memory": "12MiB"},
        "hypervisor": {
            "host_swap": {"size": host_swap},
            "control_period": 0.01,
            "allocation": {"period": 0.05, "sample_period": 0.1},
            "sharing": {"scan_period": 0.2},
        },
        "vms": [vm("a"), vm("b")],
        "run": {"seconds": 0.3, "check": True, "quantum_accesses": 2000},
    }


def test_vms_swap_alike_with_growing_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = scenario_from_dict(virtual("64MiB"))
    results = []
    for initial in (2, WHOLE_DEVICE):
        monkeypatch.setattr(swap_module, "INITIAL_SLOTS", initial)
        machine = build(scenario)
        assert isinstance(machine, VirtualizedMachine)
        seconds = machine.run(seconds=scenario.run.seconds)
        results.append((machine.summary(seconds), machine.reclaimer.frame()))
        if initial == 2:
            host = machine.host
            assert 2 < host.swap.capacity < host.config.swap_slots
            for vm in machine.vms:
                assert 2 < vm.guest.swap.capacity < vm.guest.config.swap_slots
    (grown, grown_rows), (whole, whole_rows) = results
    assert grown["host"]["swap_used"] > 0
    assert sum(vm["guest_swap_outs"] for vm in grown["vms"]) > 0
    assert grown == whole
    assert grown_rows.equals(whole_rows)
