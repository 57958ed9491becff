"""Turns in two parts: the order the event loop keeps, and runs that are the same whether
one VM's guest runs on a second core while another VM's host pass finishes or not."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memvirt.config import load_scenario
from memvirt.engine.loop import EventLoop, Phases
from memvirt.engine.scenario import build
from memvirt.engine.virtual import VirtualizedMachine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def cpu(log: list[str], name: str, group: str, took: float, turns: int) -> Phases:
    """A CPU whose turns log their parts and take ``took`` ns each."""
    left = [turns]

    def start(now: float) -> Callable[[], Any]:
        log.append(f"start {name}@{now:g}")

        def job() -> str:
            log.append(f"job {name}")
            return name

        return job

    def finish(now: float, result: Any) -> float | None:
        assert result == name
        log.append(f"finish {name}@{now:g}")
        left[0] -= 1
        return took if left[0] > 0 else None

    def earliest(result: Any) -> float:  # exactly what finish will return
        return took if left[0] > 1 else math.inf

    return Phases(group, start, finish, earliest)


@pytest.mark.parametrize("threads", [False, True])
def test_a_turn_starts_before_the_one_before_it_finishes_unless_both_are_of_one_group(
    threads: bool,
) -> None:
    log: list[str] = []
    loop = EventLoop()
    loop.threads = threads
    loop.add("a", cpu(log, "a", "vm1", 10, 2), 0)
    loop.add("b", cpu(log, "b", "vm2", 10, 2), 1)
    loop.add("c", cpu(log, "c", "vm2", 10, 1), 2)
    loop.run()
    starts_and_finishes = [line for line in log if not line.startswith("job")]
    assert starts_and_finishes == [
        "start a@0",
        "start b@1",  # another VM: it starts before a's turn finishes
        "finish a@0",
        "finish b@1",  # c is b's VM: b finishes before c starts
        "start c@2",
        "start a@10",
        "finish c@2",
        "start b@11",
        "finish a@10",
        "finish b@11",
    ]
    # each job runs after its own start, and before its own finish
    for name in "abc":
        mine = [line.split()[0] for line in log if line.split()[1].startswith(name)]
        assert mine == ["start", "job", "finish"] * (len(mine) // 3)


@pytest.mark.parametrize("threads", [False, True])
def test_turns_start_in_the_order_of_their_clocks(threads: bool) -> None:
    # a's turns take 3 ns, b's 10: a takes three turns for each of b's. A turn of b may
    # start while a's turn before it finishes, but not before a's own next turn
    log: list[str] = []
    loop = EventLoop()
    loop.threads = threads
    loop.add("a", cpu(log, "a", "vm1", 3, 8), 0)
    loop.add("b", cpu(log, "b", "vm2", 10, 3), 1)
    loop.run()
    starts = [float(line.split("@")[1]) for line in log if line.startswith("start")]
    assert starts == sorted(starts) and len(starts) == 8 + 3
    assert [line for line in log if not line.startswith("job")][:8] == [
        "start a@0",
        "start b@1",  # b comes before a's next turn (at 3 at the earliest)
        "finish a@0",
        "start a@3",  # before b's next turn (at 11)
        "finish b@1",
        "finish a@3",  # a's next turn (at 6) comes before b's (at 11): nothing starts early
        "start a@6",
        "finish a@6",
    ]
    # a CPU without a bound on its turns lets no turn start before it finishes (b's turn
    # waits for a's to finish; a's second turn may start before b's finishes)
    log.clear()
    loop = EventLoop()
    plain_a = cpu(log, "a", "vm1", 3, 2)
    loop.add("a", Phases("vm1", plain_a.start, plain_a.finish), 0)
    loop.add("b", cpu(log, "b", "vm2", 10, 1), 1)
    loop.run()
    assert [line for line in log if not line.startswith("job")] == [
        "start a@0", "finish a@0", "start b@1", "start a@3", "finish b@1", "finish a@3",
    ]  # fmt: skip


def test_a_plain_turn_waits_for_the_turn_before_it_to_finish() -> None:
    log: list[str] = []
    loop = EventLoop()
    loop.add("a", cpu(log, "a", "vm1", 3, 2), 0)

    def control(now: float) -> float | None:
        log.append(f"control@{now:g}")
        return None

    loop.add("control", control, 2)
    loop.run()
    # a's second turn (at 3) comes after the control step (at 2), not before it: the
    # control step is not taken until a's first turn has finished
    assert [line for line in log if not line.startswith("job")] == [
        "start a@0", "finish a@0", "control@2", "start a@3", "finish a@3",
    ]  # fmt: skip


def test_a_failing_finish_waits_for_the_job_in_flight() -> None:
    log: list[str] = []
    loop = EventLoop()
    loop.threads = True

    def finish(now: float, result: Any) -> float | None:
        raise RuntimeError("the host pass failed")

    loop.add("a", Phases("vm1", lambda now: lambda: "a", finish, lambda result: 10.0), 0)
    loop.add("b", cpu(log, "b", "vm2", 10, 1), 1)
    with pytest.raises(RuntimeError, match="host pass failed"):
        loop.run()
    assert log == ["start b@1", "job b"]  # b's job ran to its end before the error rose


def run_example(name: str, order: str, settings: list[str]) -> str:
    scenario = load_scenario(EXAMPLES / f"{name}.toml", settings)
    machine = build(scenario)
    assert isinstance(machine, VirtualizedMachine)
    machine.threads = order == "threads"
    machine.loop.job_first = order == "job first"
    seconds = machine.run(seconds=scenario.run.seconds, accesses=scenario.run.accesses)
    summary = machine.summary(seconds)
    frame = machine.reclaimer.frame()
    return json.dumps(summary, sort_keys=True) + str(frame.to_json())


SMALL_HOST = ["host.memory=48MiB", "run.quantum_accesses=3000", "run.accesses=150000"]
IDS = ["nested", "small-host", "shadow", "ballooning", "sharing", "idle-tax", "faults", "long"]


@pytest.mark.parametrize(
    ("example", "settings"),
    [
        ("two-level-nested", ["run.quantum_accesses=3000", "run.accesses=120000"]),
        # a host so small that each VM's host pass evicts the other VM's pages
        ("two-level-nested", SMALL_HOST),
        ("two-level-shadow", ["run.accesses=120000"]),
        ("overcommit-ballooning", ["run.quantum_accesses=4000", "run.accesses=200000"]),
        ("page-sharing", ["run.quantum_accesses=5000", "run.accesses=200000"]),
        ("idle-memory-tax", ["run.accesses=200000"]),
        ("fault-injection", []),
        # a walk record smaller than a quantum's walks: quanta end early and go on
        ("two-level-nested", ["run.quantum_accesses=100000", "run.accesses=400000"]),
    ],
    ids=IDS,
)
def test_a_run_is_the_same_with_or_without_a_second_thread(
    example: str, settings: list[str]
) -> None:
    # one VM's guest job and another VM's host pass commute: in either order, or at once
    finish_first = run_example(example, "finish first", settings)
    assert run_example(example, "job first", settings) == finish_first
    assert run_example(example, "threads", settings) == finish_first


def test_every_real_page_a_vm_may_have_fits_in_a_walk_record_entry() -> None:
    from memvirt.config import MAX_PAGES
    from memvirt.dataplane.layout import REC_PAGES

    assert MAX_PAGES <= REC_PAGES


def test_a_guest_job_splits_its_walk_record_for_the_pass() -> None:
    from types import SimpleNamespace

    import numpy as np

    from memvirt.dataplane.layout import REC_TABLE, REC_WRITE, S_REC_N
    from memvirt.engine.virtual import split_record

    # two walks: table pages 7 and 9 (9 written: an accessed bit set), then data pages 40
    # (read) and 41 (written); a stale entry past S_REC_N is not part of the record
    record = np.array([7 | REC_TABLE, 9 | REC_TABLE | REC_WRITE, 40, 41 | REC_WRITE, 99],
                      dtype=np.int32)  # fmt: skip
    st = np.zeros(64, dtype=np.int64)
    st[S_REC_N] = 4
    walked = split_record(SimpleNamespace(st=st, record=record))  # type: ignore[arg-type]
    assert walked.pages.tolist() == [7, 9, 40, 41]
    assert walked.writes.tolist() == [0, 1, 0, 1]
    assert walked.kinds.tolist() == [1, 1, 0, 0]
    assert walked.data_pages.tolist() == [40, 41]
    assert walked.written.tolist() == [9, 41]


def test_the_pages_a_process_touched_are_marked_within_its_span_alone() -> None:
    import numpy as np

    from memvirt.dataplane import reclaim

    bits = np.zeros(8, dtype=bool)
    reclaim.mark_span(bits, np.array([100, 103, 103, 107, 99, 108], dtype=np.int64), 100)
    assert np.flatnonzero(bits).tolist() == [0, 3, 7]  # 99 and 108 lie outside the span


def test_counters_of_a_difference_of_rows_are_the_difference_of_counters() -> None:
    import numpy as np

    from memvirt.dataplane import reclaim
    from memvirt.dataplane.layout import C_COMPRESSIONS, C_WRITEBACKS

    machine = build(load_scenario(EXAMPLES / "two-level-nested.toml", SMALL_HOST))
    assert isinstance(machine, VirtualizedMachine)
    host = machine.host
    pid = machine.vms[0].host_pid
    before, row = host.counters(pid), host.counter_row(pid)
    machine.run(accesses=150000)
    after = host.counters(pid)
    assert after["accesses"] > before["accesses"]
    assert host.named_counters(host.counter_row(pid) - row) == {
        k: after[k] - before[k] for k in after
    }
    # what the host wrote out or compressed to make room, over all its processes
    sums = host.pctr.sum(axis=0)
    written, compressed = int(sums[C_WRITEBACKS]), int(sums[C_COMPRESSIONS])
    assert written > 0
    assert reclaim.making_room(host.pctr) == (written, compressed)
    assert np.array_equal(host.counter_row(), sums)


def test_the_walk_depth_is_the_fewest_entries_a_walk_of_the_pages_reads() -> None:
    import numpy as np

    from memvirt.dataplane import reclaim
    from memvirt.kernel.kernel import Kernel, KernelConfig, Region
    from memvirt.units import KiB, PageGeometry

    page = 4 * KiB
    k = Kernel(KernelConfig(frames=4096, tlb=None, geometry=PageGeometry.x86_64(levels=4)))
    pid = k.spawn([Region(0, 1024 * page)])  # two leaf tables' spans (512 pages each)

    def depth() -> int:
        return int(reclaim.walk_depth(k.machine, pid, 1024))

    def walk(vpn: int) -> int:  # the references run_batch counts for a read of vpn
        before = k.counters(pid)["walk_memory_references"]
        k.run(pid, np.array([vpn], dtype=np.int64), np.zeros(1, dtype=np.uint8),
              page_numbers=True)  # fmt: skip
        return k.counters(pid)["walk_memory_references"] - before

    assert depth() == 1  # nothing mapped: a walk reads the root's entry and stops
    assert walk(0) == 1  # (the fault builds the path to page 0)
    # the second leaf table's span shares the upper tables, but its leaf table is missing
    assert depth() == 3
    assert walk(600) == 3  # (its fault builds the leaf table)
    assert depth() == 4
    assert walk(700) == 4 and walk(5) == 4


def test_the_kept_walk_depth_is_the_one_found_afresh() -> None:
    from memvirt.dataplane import reclaim

    # the depth is looked for again only when the VM's host table gains a page
    machine = build(load_scenario(EXAMPLES / "two-level-nested.toml", SMALL_HOST))
    assert isinstance(machine, VirtualizedMachine)
    seen = []
    for accesses in (0, 1, 2000, 20000, 150000):
        if accesses:
            machine.run(accesses=accesses)
        for vm in machine.vms:
            kept = machine.host_walk_depth(vm)
            fresh = int(reclaim.walk_depth(machine.host.machine, vm.host_pid, vm.real_pages))
            assert kept == fresh
            assert vm.host_walk_tables == machine.host.table_pages(vm.host_pid)
            seen.append(kept)
    assert seen[0] < seen[-1]  # the tables filled in as the run went on
