"""Running a scenario: from a validated :class:`memvirt.config.Scenario` to a summary.

:func:`run` builds the machine a scenario describes, runs it in simulated
time and returns a :class:`RunResult`: the summary as a dictionary (the
layout of ``summary.json``, documented in docs/scenarios.md) and the
per-process counters as a pandas DataFrame.

A native scenario runs processes on one kernel (one-level mapping,
:mod:`memvirt.engine.native`); a scenario with VMs runs a hypervisor and a
guest kernel per VM (two-level mapping, :mod:`memvirt.engine.virtual`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memvirt.config import ProcessConfig, Scenario
from memvirt.engine.history import with_history
from memvirt.engine.native import (
    AccessSource,
    ContentError,
    NativeMachine,
    ProcessPlan,
    TraceSource,
    WorkloadSource,
    trace_regions,
)
from memvirt.engine.virtual import VirtualizedMachine
from memvirt.files import atomic_json, atomic_output
from memvirt.kernel.kernel import Region

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class RunResult:
    """A finished run: its scenario and its summary."""

    scenario: Scenario
    summary: dict[str, Any]
    #: with VMs: one row per VM per reclamation step (docs/scenarios.md); None natively
    timeseries: pd.DataFrame | None = None

    def processes_frame(self) -> pd.DataFrame:
        """One row per process, one column per counter (accesses, faults, throughput...)."""
        import pandas as pd

        return pd.DataFrame(self.summary["processes"]).set_index("name")

    def write(self, out_dir: str | Path) -> Path:
        """Write ``summary.json`` into ``out_dir`` (made if needed), atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        target = out / "summary.json"
        atomic_json(target, self.summary, sort_keys=True)
        if self.timeseries is not None:
            series = self.timeseries
            atomic_output(
                out / "timeseries.parquet", lambda tmp: series.to_parquet(tmp, index=False)
            )
        return target


def process_seeds(seed: int, count: int) -> list[int]:
    """One independent seed per process, all derived from the run's seed."""
    children = np.random.SeedSequence(seed).spawn(count)
    return [int(c.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for c in children]


#: Accesses a process's trace is read in (the readers' default, 4M, is for whole files).
TRACE_CHUNK_ACCESSES = 1 << 20


def _trace_chunks(proc: ProcessConfig, page_size: int) -> Any:
    from memvirt.traces.readers import open_trace

    assert proc.trace is not None
    stream = open_trace(
        proc.trace.path,
        format=proc.trace.format,
        page_numbers=proc.trace.page_numbers,
        page_size=page_size,
        # a chunk stays in memory while the engine takes a quantum at a time from it (one
        # per process): a million accesses keep reading fast and four VMs' chunks small
        chunk_accesses=TRACE_CHUNK_ACCESSES,
    )

    def chunks() -> Any:
        with stream:
            yield from stream

    return chunks()


def plan_process(proc: ProcessConfig, seed: int, page_size: int, offset_bits: int) -> ProcessPlan:
    """The engine's plan for one process of a scenario."""
    regions = [] if proc.memory is None else [Region(proc.base, proc.memory, name="main")]
    regions += [
        Region(r.start, r.length, writable=r.writable, huge=r.huge, name=f"region-{k}")
        for k, r in enumerate(proc.regions)
    ]
    source: AccessSource
    if proc.workload is not None:
        source = WorkloadSource(proc.workload, seed, proc.base // page_size)
    else:
        if proc.memory is None:
            regions += trace_regions(_trace_chunks(proc, page_size), offset_bits, page_size)
        source = TraceSource(_trace_chunks(proc, page_size), offset_bits)
    return ProcessPlan(
        proc.name,
        tuple(regions),
        source,
        rate=proc.rate,
        start_s=proc.start,
        accesses=proc.accesses,
    )


def build(scenario: Scenario) -> NativeMachine | VirtualizedMachine:
    """The machine that ``scenario`` describes, ready to run."""
    host = scenario.host
    geometry = host.geometry()
    if scenario.is_native:
        seeds = process_seeds(scenario.run.seed, len(scenario.processes))
        plans = [
            plan_process(proc, seed, geometry.page_size, geometry.offset_bits)
            for proc, seed in zip(scenario.processes, seeds, strict=True)
        ]
        return NativeMachine(
            host.kernel_config(seed=scenario.run.seed),
            plans,
            cost=scenario.cost,
            quantum=scenario.run.quantum_accesses,
            check=scenario.run.check,
            faults=scenario.faults,
        )
    # on a cold cache, a second process compiles the hypervisor's kernels meanwhile
    from memvirt.engine import precompile

    precompile.start()
    procs = [(vm.name, proc) for vm in scenario.vms for proc in vm.processes]
    seeds = process_seeds(scenario.run.seed, len(procs))
    by_vm: dict[str, list[ProcessPlan]] = {vm.name: [] for vm in scenario.vms}
    for (vm_name, proc), seed in zip(procs, seeds, strict=True):
        by_vm[vm_name].append(plan_process(proc, seed, geometry.page_size, geometry.offset_bits))
    return VirtualizedMachine(scenario, by_vm, quantum=scenario.run.quantum_accesses)


def run(scenario: Scenario, progress: Callable[[float, int], None] | None = None) -> RunResult:
    """Run ``scenario`` to its end and summarise it.

    ``progress``, if given, is called after each turn of the event loop with the
    simulated time reached (ns) and the accesses made so far.
    """
    machine = build(scenario)
    try:
        seconds = machine.run(
            seconds=scenario.run.seconds, accesses=scenario.run.accesses, progress=progress
        )
    except ContentError as err:
        # the check found a page wrong: run again, watching it, for its history
        raise with_history(scenario, err, err.page) from None
    summary = machine.summary(seconds)
    summary["scenario"] = {"source": scenario.source, "hash": scenario.hash()}
    summary["seed"] = scenario.run.seed
    frame = machine.reclaimer.frame() if isinstance(machine, VirtualizedMachine) else None
    return RunResult(scenario, summary, frame)
