"""A guest's walk record and eviction ring grow as used.

Under a hypervisor a guest records the real pages its walks read (the host's pass
translates them after its quantum) and logs the pages it evicts (so that double paging
can be seen). Both start small and double when they must: the record when it is full,
up to what a whole quantum can need, so that a quantum is never cut short; the ring
before a fault that might not find room in it, so that no eviction goes unlogged. These
tests hold that to what matters: runs that start with the smallest record and ring are
the runs that start with room for everything, quanta are as long as the scenario says,
and a ring that grows logs every eviction, in order.
"""

from __future__ import annotations

import numpy as np
import pytest

import memvirt.engine.virtual as virtual_module
from memvirt.config import scenario_from_dict
from memvirt.dataplane.layout import (
    C_ACCESSES,
    K_RING,
    RING_OWNER,
    RING_VPN,
    S_RING_N,
)
from memvirt.engine.scenario import build
from memvirt.engine.virtual import VM, VirtualizedMachine, Walked
from memvirt.kernel.kernel import Kernel, KernelConfig, Region
from test_swap_growth import virtual

PAGE = 4096


def test_vms_run_alike_whatever_their_record_and_ring_start_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # guests that swap, balloons that inflate, a host that swaps behind them (double
    # paging), the check mode accounting for every frame and slot
    scenario = scenario_from_dict(virtual("64MiB"))
    results = []
    for record, ring in ((16, 1), (1 << 22, 1 << 16)):
        monkeypatch.setattr(virtual_module, "RECORD_CAPACITY", record)
        monkeypatch.setattr(virtual_module, "RING_START", ring)
        machine = build(scenario)
        assert isinstance(machine, VirtualizedMachine)
        seconds = machine.run(seconds=scenario.run.seconds)
        results.append((machine.summary(seconds), machine.reclaimer.frame()))
        if record == 16:  # both grew, and no further than they had to
            for vm in machine.vms:
                assert 16 < vm.guest.record.shape[0] <= vm.guest.record_limit
                assert vm.guest.ring.shape[0] > 1
    (small, small_rows), (large, large_rows) = results
    vms = small["vms"]
    assert sum(vm["guest_swap_outs"] for vm in vms) > 0
    assert sum(vm["balloon_pages_max"] for vm in vms) > 0
    assert sum(vm["double_paging_reads"] for vm in vms) > 0
    assert small == large
    assert small_rows.equals(large_rows)


def test_a_quantum_longer_than_the_record_runs_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uniform over 12,288 pages, nearly every access misses the TLB and walks: a quantum
    of 20,000 accesses records some 90,000 real pages, more than the record starts with,
    and still runs whole."""
    quantum = 20_000
    scenario = scenario_from_dict(
        {
            "host": {"memory": "128MiB"},
            "vms": [
                {
                    "name": "vm",
                    "memory": "64MiB",
                    "processes": [
                        {
                            "name": "app",
                            "memory": "48MiB",
                            "workload": {"kind": "uniform", "pages": 12288},
                        }
                    ],
                }
            ],
            "run": {"accesses": 5 * quantum, "quantum_accesses": quantum},
        }
    )
    machine = build(scenario)
    assert isinstance(machine, VirtualizedMachine)
    turns: list[int] = []
    host_pass = machine._host_pass

    def counted(vm: VM, walked: Walked | None = None) -> int:
        assert walked is not None
        turns.append(int(vm.guest.pctr[:, C_ACCESSES].sum()))  # the guest's accesses so far
        return host_pass(vm, walked)

    monkeypatch.setattr(machine, "_host_pass", counted)
    machine.run(accesses=5 * quantum)
    assert turns == [quantum * (k + 1) for k in range(5)]
    guest = machine.vms[0].guest
    assert guest.record.shape[0] > virtual_module.RECORD_CAPACITY
    assert guest.counters()["walks"] > 4 * quantum


def evicting_kernel(ring_mode: int, rows: int) -> tuple[Kernel, int]:
    """A kernel of 32 frames with an eviction ring of ``rows`` rows in mode ``ring_mode``,
    and a process of 512 pages."""
    k = Kernel(KernelConfig(frames=32, tlb=None, policy="fifo", swap_slots=1024))
    k.cfg[K_RING] = ring_mode
    k.ring = np.zeros((rows, 4), dtype=np.int64)
    return k, k.spawn([Region(0, 512 * PAGE)], name="app")


def test_a_growing_ring_logs_every_eviction_in_order() -> None:
    k, pid = evicting_kernel(2, 1)
    n = 300
    done = k.run(pid, np.arange(n), np.ones(n, np.uint8), page_numbers=True)
    assert done == n
    evicted = k.counters()["evictions"]
    logged = int(k.st[S_RING_N])
    assert logged == evicted > 200
    assert k.ring.shape[0] >= logged
    # first in, first out: pages 0, 1, 2... left in the order they came
    assert k.ring[:logged, RING_VPN].tolist() == list(range(logged))
    assert (k.ring[:logged, RING_OWNER] == pid).all()
    # the same as a ring with room for them all from the start
    whole, wpid = evicting_kernel(1, 1024)
    whole.run(wpid, np.arange(n), np.ones(n, np.uint8), page_numbers=True)
    assert int(whole.st[S_RING_N]) == logged
    assert np.array_equal(whole.ring[:logged], k.ring[:logged])


def test_a_fixed_ring_only_counts_what_overflows() -> None:
    """The host's ring (K_RING 1) keeps its size: evictions beyond it are counted, for the
    layer above to fall back on a whole flush."""
    k, pid = evicting_kernel(1, 8)
    k.run(pid, np.arange(300), np.ones(300, np.uint8), page_numbers=True)
    assert k.ring.shape[0] == 8
    assert int(k.st[S_RING_N]) == k.counters()["evictions"] > 8
