"""Workloads drawn ahead in a thread of their own give the same accesses, and the same runs."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from memvirt.config import load_scenario
from memvirt.engine.scenario import build
from memvirt.workloads import Mix, MixComponent, Phase, Phases, Stream, Uniform, Zipf, ahead
from memvirt.workloads.ahead import AheadStream

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SPECS = [
    Zipf(pages=4096, alpha=0.9, write_fraction=0.3),
    Mix(
        components=(
            MixComponent(weight=1.0, workload=Uniform(pages=100, write_fraction=0.5)),
            MixComponent(weight=2.0, workload=Zipf(pages=1000, alpha=1.2)),
        )
    ),
    Phases(
        phases=(
            Phase(accesses=777, workload=Uniform(pages=50, write_fraction=0.1)),
            Phase(accesses=1234, workload=Zipf(pages=500, alpha=0.7, write_fraction=0.9)),
        ),
        repeat=True,
    ),
]


@pytest.mark.parametrize("spec", SPECS, ids=["zipf", "mix", "phases"])
@pytest.mark.parametrize("drawn_ahead", [True, False])
def test_takes_of_any_sizes_give_the_stream_itself(spec: object, drawn_ahead: bool) -> None:
    # equal sizes (the block in flight is what the next take wants), a smaller take
    # (part of the block is kept), a larger one (the rest is drawn at once), an empty one
    sizes = [1000, 1000, 1000, 300, 5000, 0, 7, 1000, 2500, 1]
    source = AheadStream(Stream(spec, 11), ahead=drawn_ahead)  # type: ignore[arg-type]
    parts = [source.take(n) for n in sizes]
    assert [p.shape[0] for p, _ in parts] == sizes
    whole = Stream(spec, 11).take(sum(sizes))  # type: ignore[arg-type]
    assert np.array_equal(np.concatenate([p for p, _ in parts]), whole.addresses)
    assert np.array_equal(np.concatenate([w for _, w in parts]), whole.writes)


def test_a_forked_child_draws_ahead_with_a_worker_of_its_own() -> None:
    source = AheadStream(Stream(Zipf(pages=1000, alpha=1.0), 3), ahead=True)
    source.take(100)  # the parent's worker thread exists now
    pid = os.fork()
    if pid == 0:  # the child: the parent's worker is not here; without a new one it hangs
        try:
            child = AheadStream(Stream(Zipf(pages=1000, alpha=1.0), 3), ahead=True)
            child.take(100)
            child.take(100)  # waits for the block the child's own worker drew
            os._exit(0)
        except BaseException:
            os._exit(1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung waiting for a worker thread it does not have")


@pytest.mark.parametrize("example", ["two-level-nested", "multiprogramming"])
def test_a_run_is_the_same_with_workloads_drawn_ahead_or_not(
    example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ["run.accesses=60000", "run.quantum_accesses=2500"]

    def summary() -> str:
        machine = build(load_scenario(EXAMPLES / f"{example}.toml", settings))
        seconds = machine.run(accesses=60_000)
        return json.dumps(machine.summary(seconds), sort_keys=True)

    monkeypatch.setattr(ahead, "cores", lambda: 2)
    drawn_ahead = summary()
    monkeypatch.setattr(ahead, "cores", lambda: 1)
    assert summary() == drawn_ahead


def test_one_thread_when_asked_and_in_a_sweeps_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from memvirt.engine.virtual import VirtualizedMachine
    from memvirt.sweep import runner

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    # (set, then removed: so that what the worker sets below is removed after the test,
    # not left to the tests that follow)
    monkeypatch.setenv(ahead.ONE_THREAD, "1")
    monkeypatch.delenv(ahead.ONE_THREAD)
    assert ahead.cores() == 2
    # a sweep's local worker keeps to one thread: the workers keep the cores busy
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    runner._start_worker()
    assert os.environ[ahead.ONE_THREAD] == "1"
    assert ahead.cores() == 1
    assert not AheadStream(Stream(Zipf(pages=10, alpha=1.0), 0)).ahead
    machine = build(load_scenario(EXAMPLES / "two-level-nested.toml", ["run.accesses=1000"]))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=1000)
    assert not machine.loop.threads
