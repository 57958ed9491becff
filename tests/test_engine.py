"""Simulated time: the event loop's order, the cost model, and native runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from memvirt.engine.cost import default_cost
from memvirt.engine.loop import EventLoop
from memvirt.engine.native import NativeMachine, ProcessPlan, TraceSource, WorkloadSource
from memvirt.kernel.kernel import KernelConfig, Region
from memvirt.traces.model import Trace
from memvirt.workloads import Zipf

MiB = 1 << 20


def test_the_event_loop_runs_the_earliest_clock_first_and_breaks_ties_by_order() -> None:
    loop = EventLoop()
    order: list[str] = []

    def cpu(name: str, step: float, turns: int) -> object:
        left = [turns]

        def turn(now: float) -> float | None:
            order.append(f"{name}@{now:g}")
            left[0] -= 1
            return step if left[0] > 0 else None

        return turn

    loop.add("a", cpu("a", 3.0, 3))  # type: ignore[arg-type]
    loop.add("b", cpu("b", 2.0, 3))  # type: ignore[arg-type]
    loop.run()
    assert order == ["a@0", "b@0", "b@2", "a@3", "b@4", "a@6"]


def test_the_event_loop_stops_at_its_time_limit() -> None:
    loop = EventLoop()
    seen: list[float] = []

    def turn(now: float) -> float:
        seen.append(now)
        return 10.0

    loop.add("a", turn)
    assert loop.run(until_ns=35.0) == 35.0
    assert seen == [0.0, 10.0, 20.0, 30.0]


def test_simulated_time_is_the_accesses_at_the_rate_plus_the_stalls() -> None:
    cost = default_cost()
    # 4 pages touched once each, then again: 4 minor faults, with 4 walks of 4 references
    trace = Trace.from_pages(np.array([0, 1, 2, 3, 0, 1, 2, 3]) + 0x400)
    plan = ProcessPlan("p", (Region(0x400000, 4 * 4096),), TraceSource(iter([trace]), 12), rate=1e8)
    m = NativeMachine(KernelConfig(frames=64, tlb=None), [plan], cost=cost)
    seconds = m.run()
    c = m.kernel.counters(0)
    assert c["minor_faults"] == 4 and c["walk_memory_references"] == 8 * 4 - 3
    # the first walk reads only the empty root entry; later ones find the tables built
    expected_ns = 8 * 10 + c["walk_memory_references"] * 100 + 4 * 1_000
    assert seconds * 1e9 == pytest.approx(expected_ns)
    assert m.reports[0].finished


def zipf_machine(seed_base: int = 0) -> NativeMachine:
    plans = [
        ProcessPlan(
            f"p{i}",
            (Region(0x400000, 32 * MiB),),
            WorkloadSource(Zipf(pages=8192, alpha=0.8, write_fraction=0.3), seed_base + i, 0x400),
        )
        for i in range(3)
    ]
    return NativeMachine(KernelConfig(frames=8192, swap_slots=65536), plans, quantum=5000)


def test_a_native_run_is_deterministic() -> None:
    runs = []
    for _ in range(2):
        m = zipf_machine()
        runs.append(json.dumps(m.summary(m.run(seconds=0.02)), sort_keys=True))
    assert runs[0] == runs[1]
    m = zipf_machine(seed_base=10)
    assert json.dumps(m.summary(m.run(seconds=0.02)), sort_keys=True) != runs[0]


def test_processes_that_fault_more_fall_behind_in_simulated_time() -> None:
    hot = ProcessPlan(
        "small",
        (Region(0x400000, 4 * MiB),),
        WorkloadSource(Zipf(pages=256, alpha=1.0), 1, 0x400),
    )
    cold = ProcessPlan(
        "large",
        (Region(0x400000, 64 * MiB),),
        WorkloadSource(Zipf(pages=16384, alpha=0.2, write_fraction=0.5), 2, 0x400),
    )
    m = NativeMachine(KernelConfig(frames=4096, swap_slots=40000), [hot, cold])
    m.run(seconds=0.01)
    small, large = m.summary(0.01)["processes"]
    assert small["throughput"] > 5 * large["throughput"]
    assert large["major_faults"] > small["major_faults"]


def test_a_process_killed_by_a_segmentation_fault_is_reported() -> None:
    trace = Trace.from_pages(np.array([0x400, 0x401, 0x9999]))
    plan = ProcessPlan("bad", (Region(0x400000, 2 * 4096),), TraceSource(iter([trace]), 12))
    m = NativeMachine(KernelConfig(frames=64), [plan])
    m.run()
    report = m.summary(0.0)["processes"][0]
    assert report["accesses"] == 2
    assert "segmentation fault" in report["killed"]
