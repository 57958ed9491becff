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
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

#: A CPU's turn: given its clock (ns), run one quantum and return the time it
#: took (ns), or None when the CPU has nothing more to run.
Turn = Callable[[float], float | None]


@dataclass(order=True)
class _Entry:
    time: float
    seq: int
    name: str = field(compare=False)
    turn: Turn = field(compare=False)
    daemon: bool = field(default=False, compare=False)


class EventLoop:
    """Runs CPUs in quanta, earliest clock first, until a time limit or none is left."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._seq = 0
        self._live = 0  # entries that are not daemons
        self.now = 0.0

    def add(self, name: str, turn: Turn, start_ns: float = 0.0, *, daemon: bool = False) -> None:
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
        while self._heap and self._live > 0:
            entry = self._heap[0]
            if until_ns is not None and entry.time >= until_ns:
                self.now = until_ns
                break
            if stop is not None and stop():
                break
            heapq.heappop(self._heap)
            self.now = entry.time
            took = entry.turn(entry.time)
            if took is None:
                self._live -= 0 if entry.daemon else 1
            else:
                entry.time += took
                entry.seq = self._seq
                self._seq += 1
                heapq.heappush(self._heap, entry)
            if progress is not None:
                progress(self.now)
        return self.now

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
