"""A native machine in simulated time: processes on one kernel, one-level mapping.

Each process runs on a CPU of its own (time-sharing of CPUs is not
modelled): it issues its workload's accesses at the workload's rate, and
the kernel's faults, walks and swap traffic stall it by the cost model. The
event loop interleaves the processes in quanta, earliest clock first, so a
process that faults a lot falls behind the others in simulated time, as it
would on a real machine, and the memory they share is contended in a
realistic order.

Everything that happens during a quantum — including the eviction and
write-back of another process's page — is caused by the process that runs
it, so the stall is charged to that process (direct reclaim).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from memvirt.config import CostModel, FaultsConfig
from memvirt.dataplane.layout import S_TOKEN
from memvirt.engine.cost import default_cost, stall_ns
from memvirt.engine.faults import FaultInjector, lose_frames
from memvirt.engine.history import PageRef, PageWatch
from memvirt.engine.loop import EventLoop
from memvirt.kernel.kernel import Kernel, KernelConfig, Region
from memvirt.traces.model import Trace
from memvirt.workloads.ahead import AheadStream
from memvirt.workloads.synthetic import Stream, WorkloadSpec

#: Version of the summary.json layout; bump on any incompatible change.
SCHEMA_VERSION = 1


class AccessSource(Protocol):
    """Where a process's accesses come from: ``take(n)`` gives up to ``n`` more."""

    def take(self, n: int) -> Trace:
        """The next accesses, at most ``n``; none when the source is exhausted."""
        ...


class WorkloadSource:
    """A synthetic workload whose page 0 is the process's virtual page ``base_vpn``.

    Its next quantum is drawn ahead, in a thread of its own, while the simulator runs this
    one (:class:`~memvirt.workloads.ahead.AheadStream`; ``ahead=False`` draws each quantum
    when it is taken). Either way the accesses are the same."""

    def __init__(
        self, spec: WorkloadSpec, seed: int, base_vpn: int, *, ahead: bool | None = None
    ) -> None:
        self.stream = AheadStream(Stream(spec, seed), ahead=ahead)
        self.base_vpn = base_vpn

    def take(self, n: int) -> Trace:
        pages, writes = self.stream.take(n)
        return Trace(pages + self.base_vpn, writes, page_numbers=True)


class TraceSource:
    """A trace file, read chunk by chunk; page numbers already, or addresses to shift."""

    def __init__(self, chunks: Iterator[Trace], offset_bits: int) -> None:
        self.chunks = chunks
        self.offset_bits = offset_bits
        self.pending: Trace | None = None

    def take(self, n: int) -> Trace:
        parts: list[Trace] = []
        need = n
        while need > 0:
            if self.pending is None or len(self.pending) == 0:
                self.pending = next(self.chunks, None)
                if self.pending is None:
                    break
            part = self.pending.head(need)
            rest = self.pending
            self.pending = Trace(
                rest.addresses[len(part) :],
                rest.writes[len(part) :],
                page_numbers=rest.page_numbers,
            )
            parts.append(part)
            need -= len(part)
        if not parts:
            return Trace.from_pages(np.zeros(0, dtype=np.int64))
        pages = np.concatenate([p.page_numbers_for(self.offset_bits) for p in parts])
        writes = np.concatenate([p.writes for p in parts])
        return Trace(pages, writes, page_numbers=True)


@dataclass
class ProcessPlan:
    """One process of a native scenario: its address space, accesses and pace."""

    name: str
    regions: tuple[Region, ...]
    source: AccessSource
    rate: float = 1e8
    start_s: float = 0.0
    accesses: int | None = None


@dataclass
class ProcessReport:
    """What one process did."""

    name: str
    pid: int
    counters: dict[str, int] = field(default_factory=dict)
    busy_ns: float = 0.0
    end_ns: float = 0.0
    start_ns: float = 0.0
    killed: str | None = None
    finished: bool = False

    def summary(self) -> dict[str, Any]:
        seconds = (self.end_ns - self.start_ns) / 1e9
        out: dict[str, Any] = {"name": self.name, "pid": self.pid}
        out.update(self.counters)
        out["simulated_seconds"] = seconds
        out["throughput"] = self.counters.get("accesses", 0) / seconds if seconds > 0 else 0.0
        out["finished"] = self.finished
        out["killed"] = self.killed
        return out


def close_report(report: ProcessReport, kernel: Kernel) -> None:
    """At the end of a run: the process's counters, and why it was killed if it was."""
    report.counters = kernel.counters(report.pid)
    if report.killed is None:
        kill = next((k for k in kernel.kills if k.pid == report.pid), None)
        report.killed = None if kill is None else kill.reason


def next_chunk(
    plan: ProcessPlan, report: ProcessReport, kernel: Kernel, quantum: int, now: float
) -> Trace | None:
    """The process's next quantum of accesses; None (and the process finished) when
    its source or its access cap is exhausted."""
    n = quantum
    if plan.accesses is not None:
        n = min(n, plan.accesses - kernel.counters(report.pid)["accesses"])
    chunk = plan.source.take(n) if n > 0 else None
    if chunk is None or len(chunk) == 0:
        report.finished = True
        report.end_ns = now
        return None
    return chunk


def settle(
    report: ProcessReport, kernel: Kernel, now: float, took: float, done: int, size: int
) -> float | None:
    """Account a quantum that took ``took`` ns; None when the process died during it."""
    report.busy_ns += took
    report.end_ns = now + took
    if done < size:
        report.killed = kernel.kills[-1].reason if kernel.kills else "killed"
        return None
    return took


class ContentError(AssertionError):
    """The content check found a page that does not read what was last written to it.

    ``page`` names the page when one is at fault (:class:`~memvirt.engine.history.PageRef`):
    :func:`memvirt.engine.scenario.run` then adds the page's history to the message."""

    def __init__(self, message: str, page: PageRef | None = None) -> None:
        super().__init__(message)
        self.page = page


def record_writes(
    expected: dict[int, int], vpns: np.ndarray, writes: np.ndarray, first_token: int
) -> None:
    """Note the token each page written in a quantum last got. The kernel gives each write
    the next value of its token counter, in order, so the access stream alone says which:
    an oracle independent of where the pages went since."""
    written = np.flatnonzero(writes != 0)
    tokens = first_token + 1 + np.arange(written.size, dtype=np.int64)
    for vpn, token in zip(vpns[written].tolist(), tokens.tolist(), strict=True):
        expected[vpn] = token


def check_reads(
    kernel: Kernel,
    pid: int,
    vpns: np.ndarray,
    expected: dict[int, int],
    where: str,
    vm: str | None = None,
) -> None:
    """Every page in ``vpns`` reads (from its frame or its swap slot) what was last written
    to it, or zeros if it never was; ContentError otherwise."""
    offset = kernel.geometry.offset_bits
    for vpn in np.unique(vpns).tolist():
        got = kernel.read_token(pid, vpn << offset)
        want = expected.get(vpn, 0)
        if got != want:
            raise ContentError(
                f"{where}: process {pid} reads {got:#x} at virtual page {vpn:#x}; "
                f"it last wrote {want:#x}",
                PageRef(vm=vm, pid=pid, vpn=vpn),
            )


class NativeMachine:
    """A kernel, its processes, and the event loop that runs them in simulated time."""

    def __init__(
        self,
        kernel: KernelConfig,
        processes: list[ProcessPlan],
        *,
        cost: CostModel | None = None,
        quantum: int = 10_000,
        check: bool = False,
        faults: FaultsConfig | None = None,
    ) -> None:
        if faults is not None and faults.memory_loss:
            # room for the pseudo-process that holds the memory the machine loses
            kernel = replace(kernel, max_processes=max(kernel.max_processes, len(processes) + 1))
        self.kernel = Kernel(kernel)
        self.cost = cost or default_cost(kernel.swap_kind)
        self.quantum = quantum
        self.plans = processes
        self.reports: list[ProcessReport] = []
        self.loop = EventLoop()
        self.total_accesses = 0
        self.check = check
        self.expected: dict[int, dict[int, int]] = {}
        for plan in processes:
            pid = self.kernel.spawn(plan.regions, name=plan.name)
            report = ProcessReport(plan.name, pid, start_ns=plan.start_s * 1e9)
            self.reports.append(report)
            self.loop.add(plan.name, self._turn(plan, report), plan.start_s * 1e9)
        self.lost_pid = -1
        #: set by memvirt.engine.history to follow one page through a rerun
        self.watch: PageWatch | None = None
        self.faults: FaultInjector | None = None
        if faults is not None and faults.any:
            self.faults = FaultInjector(self, faults, self.kernel.page_size)
            first = self.faults.first_ns
            if first is not None:
                self.loop.add("faults", self.faults.turn, first, daemon=True)

    # ------------------------------------------------------------------ injected faults

    def swap_kernel(self, device: str) -> Kernel:
        """The kernel whose swap device is ``device``: natively, "host" only."""
        if device != "host":
            raise KeyError(f"a native machine has one swap device, 'host', not {device!r}")
        return self.kernel

    def crash_vm(self, name: str) -> str:
        raise KeyError(f"a native machine has no VM {name!r}")

    def lose_memory(self, pages: int) -> str:
        """The machine loses ``pages`` frames: taken free, or by evicting pages; when
        nothing more can be evicted the OOM killer ends processes until they are had."""
        kernel = self.kernel
        if self.lost_pid < 0:
            self.lost_pid = kernel.spawn_pseudo("lost memory")
        why = "killed by the OOM killer (the machine lost memory)"
        got, killed = lose_frames(kernel, self.lost_pid, pages, why, lambda: None)
        outcome = f"{got} of {pages} frames lost"
        if killed:
            names = ", ".join(kernel.processes[pid].name for pid in killed)
            outcome += f"; the OOM killer ended {names}"
        return outcome

    def after_fault(self, step: str) -> None:
        if self.watch is not None:
            self.watch.observe(self.loop.now, step.removeprefix("after "))
        if self.check:
            try:
                self.kernel.check_invariants()
            except AssertionError as err:
                raise ContentError(f"{step}: {err}") from None

    def running(self) -> bool:
        return any(self.kernel.alive(r.pid) and not r.finished for r in self.reports)

    def _turn(self, plan: ProcessPlan, report: ProcessReport) -> Any:
        kernel = self.kernel
        ns_per_access = 1e9 / plan.rate

        def turn(now: float) -> float | None:
            if not kernel.alive(report.pid):
                return None
            chunk = next_chunk(plan, report, kernel, self.quantum, now)
            if chunk is None:
                return None
            before = kernel.counters()
            first_token = int(kernel.st[S_TOKEN])
            done = kernel.run(report.pid, chunk.addresses, chunk.writes, page_numbers=True)
            if self.watch is not None:
                self.watch.observe(now, f"a quantum of process {plan.name} (pid {report.pid})")
            if self.check and kernel.alive(report.pid):
                expected = self.expected.setdefault(report.pid, {})
                vpns = chunk.addresses[:done]
                record_writes(expected, vpns, chunk.writes[:done], first_token)
                check_reads(kernel, report.pid, vpns, expected, plan.name)
            after = kernel.counters()
            delta = {k: after[k] - before[k] for k in after}
            self.total_accesses += done
            took = done * ns_per_access + stall_ns(self.cost, delta)
            return settle(report, kernel, now, took, done, len(chunk))

        return turn

    def run(
        self,
        seconds: float | None = None,
        accesses: int | None = None,
        progress: Callable[[float, int], None] | None = None,
    ) -> float:
        """Run until ``seconds`` of simulated time, ``accesses`` in all, or every process ends.

        ``progress``, if given, is called after each turn with the simulated time reached
        (ns) and the accesses made so far. Returns the simulated time reached, in seconds.
        """
        end = self.loop.run_for(seconds, accesses, lambda: self.total_accesses, progress)
        for report in self.reports:
            close_report(report, self.kernel)
            if not report.finished and report.killed is None:
                # still running at the end: its clock stands where its last quantum ended
                report.end_ns = max(report.end_ns, report.start_ns)
        return max([end / 1e9] + [r.end_ns / 1e9 for r in self.reports])

    def summary(self, simulated_seconds: float) -> dict[str, Any]:
        """The run's summary (see docs/scenarios.md for the schema)."""
        k = self.kernel
        stats = k.stats()
        virtual = sum(r.length for plan in self.plans for r in plan.regions)
        return {
            "schema_version": SCHEMA_VERSION,
            "mode": "native",
            "simulated_seconds": simulated_seconds,
            "host": {
                "physical_pages": k.config.frames,
                "page_size": k.page_size,
                "free_pages": stats["free_frames"],
                "table_pages": stats["table_pages"],
                "swap_slots": stats["swap_slots"],
                "swap_used": stats["swap_used"],
                "oom_kills": stats["oom_kills"],
            },
            "overcommit_ratio": 0.0,
            "virtual_memory_ratio": virtual / (k.config.frames * k.page_size),
            "processes": [r.summary() for r in self.reports],
            "totals": k.counters(),
            **({} if self.faults is None else {"faults": self.faults.summary()}),
        }


def trace_regions(chunks: Iterator[Trace], offset_bits: int, page: int) -> list[Region]:
    """Regions covering every page a trace touches (one pass over the trace)."""
    from memvirt.kernel.kernel import regions_covering

    pages = [np.unique(c.page_numbers_for(offset_bits)) for c in chunks]
    if not pages:
        return []
    return regions_covering(np.unique(np.concatenate(pages)), page)
