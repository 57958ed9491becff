"""The event loop: CPUs take turns in quanta, in simulated-time order.

Each CPU has its own clock. The loop always runs the CPU whose clock is
earliest, for one quantum of accesses, and advances that clock by the time
the quantum took (its accesses at the workload's rate, plus the stalls of
the cost model). Ties are broken by the order the CPUs were added, so a run
is deterministic by construction (a heap of ``(time, sequence, cpu)``, as
SimPy orders its events). Management tasks that must run at simulated
times — sampling, rebalancing — are CPUs of their own whose quantum is a
period. A *daemon* (injected faults waiting for their time) runs only while
some other CPU does: it never keeps the loop, or the simulated clock, going
on its own.

A CPU may also take its turn in two parts (:class:`Phases`): a part that
touches only the CPU's own state (a VM's guest running its quantum) and a
part that touches what CPUs share (the hypervisor's pass over that
quantum). Turns keep their order, but the first part of one turn may run
while the second part of the turn before it is still running: the loop
starts a turn before the one before it has been charged its time. It does
so only when both turns are of different groups (VMs), and when the next
turn comes no later than the earliest time the turn before it can end
(its ``earliest`` bound, known once its first part has run): otherwise
that CPU's own next turn might come first, and the loop finishes the turn
before, then looks again. So turns start in the order of their clocks.
With ``threads``, the two parts run at once on two cores; without, one
after the other. The two parts must not touch the same state (the CPU
defers what it would do to a group with a turn in flight), so a run gives
the same results either way.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

#: A CPU's turn: given its clock (ns), run one quantum and return the time it
#: took (ns), or None when the CPU has nothing more to run.
Turn = Callable[[float], float | None]


@dataclass(frozen=True)
class Phases:
    """A turn in two parts: ``start(now)``, called in event order, returns the first part
    (a job that touches only the CPU's own state, and returns what ``finish`` needs);
    ``finish(now, result)``, called in event order too, does the rest and returns the time
    the turn took (ns), or None when the CPU has nothing more to run. Turns of one
    ``group`` never overlap. ``earliest(result)`` is a lower bound of what ``finish`` will
    return (``math.inf`` for None): another CPU's turn starts before this one finishes
    only when it comes no later than the bound. Without it, none does."""

    group: Hashable
    start: Callable[[float], Callable[[], Any]]
    finish: Callable[[float, Any], float | None]
    earliest: Callable[[Any], float] | None = None


@dataclass(order=True)
class _Entry:
    time: float
    seq: int
    name: str = field(compare=False)
    turn: Turn | Phases = field(compare=False)
    daemon: bool = field(default=False, compare=False)


class EventLoop:
    """Runs CPUs in quanta, earliest clock first, until a time limit or none is left."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._seq = 0
        self._live = 0  # entries that are not daemons
        self.now = 0.0
        #: run the first part of a two-part turn in a second thread, while the turn before
        #: it finishes (the results are the same either way)
        self.threads = False
        #: without threads, run the job before the turn before it finishes rather than
        #: after (the two parts must commute: tests run both orders and compare)
        self.job_first = False
        self._pending: tuple[_Entry, Any] | None = None  # a turn whose second part is due
        self._worker: ThreadPoolExecutor | None = None

    def add(
        self, name: str, turn: Turn | Phases, start_ns: float = 0.0, *, daemon: bool = False
    ) -> None:
        """Add a CPU whose first turn comes at ``start_ns``; a ``daemon`` runs only while
        some CPU that is not one does."""
        heapq.heappush(self._heap, _Entry(start_ns, self._seq, name, turn, daemon))
        self._seq += 1
        self._live += 0 if daemon else 1

    def run(
        self,
        until_ns: float | None = None,
        stop: Callable[[], bool] | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> float:
        """Run turns until ``until_ns``, until ``stop()`` says so, or until no CPU is left.

        ``progress``, if given, is called after each turn with the simulated time
        reached (ns). Returns the simulated time reached.
        """
        while True:
            entry = self._heap[0] if self._heap and self._live > 0 else None
            if (
                entry is None
                or (until_ns is not None and entry.time >= until_ns)
                or (stop is not None and stop())
            ):
                if self._pending is not None:  # it may give its CPU another turn
                    self._finish(progress)
                    continue
                if entry is not None and until_ns is not None and entry.time >= until_ns:
                    self.now = until_ns
                break
            turn = entry.turn
            if self._pending is not None and not self._may_start(entry):
                # this turn waits for the one before it, which may come back before it
                self._finish(progress)
                continue
            heapq.heappop(self._heap)
            self.now = entry.time
            if not isinstance(turn, Phases):
                self._requeue(entry, turn(entry.time))
                if progress is not None:
                    progress(self.now)
                continue
            job = turn.start(entry.time)
            if self._pending is None:
                result = job()
            elif self.threads:  # the job runs while the turn before it finishes
                if self._worker is None:
                    self._worker = ThreadPoolExecutor(1, thread_name_prefix="memvirt-cpu")
                future = self._worker.submit(job)
                try:
                    self._finish(progress)
                except BaseException:
                    future.exception()  # the job ends before the error goes up
                    raise
                result = future.result()
            elif self.job_first:
                result = job()
                self._finish(progress)
            else:
                self._finish(progress)
                result = job()
            self._pending = (entry, result)
        return self.now

    def _may_start(self, entry: _Entry) -> bool:
        """Whether ``entry``'s turn may start before the pending turn finishes: it is a
        two-part turn of another group, and it comes before the pending CPU's next turn
        whatever the pending turn's finish charges (no later than its lower bound: on a
        tie, ``entry`` was queued first)."""
        assert self._pending is not None
        before, result = self._pending
        turn, pending = entry.turn, before.turn
        if not isinstance(turn, Phases) or not isinstance(pending, Phases):
            return False
        if turn.group == pending.group or pending.earliest is None:
            return False
        return entry.time <= before.time + pending.earliest(result)

    def _finish(self, progress: Callable[[float], None] | None) -> None:
        """The second part of the turn whose first part ran."""
        assert self._pending is not None
        entry, result = self._pending
        self._pending = None
        turn = entry.turn
        assert isinstance(turn, Phases)
        self._requeue(entry, turn.finish(entry.time, result))
        if progress is not None:
            progress(self.now)

    def _requeue(self, entry: _Entry, took: float | None) -> None:
        """The CPU's next turn comes ``took`` ns after this one began (None: no more)."""
        if took is None:
            self._live -= 0 if entry.daemon else 1
        else:
            entry.time += took
            entry.seq = self._seq
            self._seq += 1
            heapq.heappush(self._heap, entry)

    def run_for(
        self,
        seconds: float | None,
        accesses: int | None,
        count: Callable[[], int],
        progress: Callable[[float, int], None] | None = None,
    ) -> float:
        """Run until ``seconds`` of simulated time, until ``count()`` (the accesses made so
        far) reaches ``accesses``, or until no CPU is left; the time reached (ns).
        ``progress``, if given, is called after each turn with that time and ``count()``."""

        def stop() -> bool:
            return accesses is not None and count() >= accesses

        def report(now_ns: float) -> None:
            assert progress is not None
            progress(now_ns, count())

        until = None if seconds is None else seconds * 1e9
        return self.run(until, stop, None if progress is None else report)
