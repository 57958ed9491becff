"""ESXi's free-memory states: how short of memory the host is, and what it does about it.

A hypervisor that overcommits memory must notice when its free physical
memory runs low and reclaim frames from the VMs before it runs out. VMware
ESXi keeps a reserve called *minFree*, sized by a sliding scale of the host's
memory (:func:`min_free_bytes`), and compares free memory with multiples of
it. Each comparison puts the host in one of five *free-memory states*, and
each state enables a set of reclamation techniques, cheapest first:

=======  ==============  ===================================================
state    free memory     techniques enabled
=======  ==============  ===================================================
high     400% of minFree none: memory is plentiful
clear    100%            page sharing
soft      64%            page sharing and ballooning
hard      32%            page sharing, compression and host swapping
low       16%            compression, host swapping, and blocking the VMs'
                         allocations until memory is freed
=======  ==============  ===================================================

The percentages are the thresholds below which the host *enters* a state.
To keep the host from flapping between two states when free memory hovers
around one threshold, it *leaves* a state upward only when free memory
reaches the threshold of the state above: soft is entered below 64% and left
(for clear) at 100%; clear is entered below 100% and left (for high) at 400%.
Reclamation in a state therefore aims at that higher threshold
(:meth:`FreeMemoryStates.target_free_pages`).

Sources: VMware vSphere Resource Management guide (ESXi 6.x and later),
"Memory reclamation" and the minFree sliding scale; Waldspurger, "Memory
Resource Management in VMware ESX Server", OSDI 2002, section 6.3 "Dynamic
Reallocation", where the states were first described (then four: high, soft,
hard and low, at 6%, 4%, 2% and 1% of memory).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from fractions import Fraction

#: The free-memory states, from most free memory to least.
STATES: tuple[str, ...] = ("high", "clear", "soft", "hard", "low")

#: Reclamation techniques a state can enable. "blocking" stalls the VMs'
#: allocations of new frames until memory is freed.
TECHNIQUES: tuple[str, ...] = ("sharing", "ballooning", "compression", "swapping", "blocking")

#: Thresholds in percent of minFree: free memory below a state's threshold
#: enters it (ESXi 6.x and later).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "high": 400.0,
    "clear": 100.0,
    "soft": 64.0,
    "hard": 32.0,
    "low": 16.0,
}

#: The techniques ESXi enables in each state.
DEFAULT_TECHNIQUES: dict[str, frozenset[str]] = {
    "high": frozenset(),
    "clear": frozenset({"sharing"}),
    "soft": frozenset({"sharing", "ballooning"}),
    "hard": frozenset({"sharing", "compression", "swapping"}),
    "low": frozenset({"compression", "swapping", "blocking"}),
}

_GIB = 2**30

#: minFree's sliding scale: (bytes of host memory in this tier, percent of it).
#: The last tier, with no size, is the rest of memory.
_MIN_FREE_TIERS: tuple[tuple[int | None, int], ...] = (
    (4 * _GIB, 6),
    (8 * _GIB, 4),
    (16 * _GIB, 2),
    (None, 1),
)


def min_free_bytes(physical_bytes: int) -> int:
    """ESXi's minFree for a host with ``physical_bytes`` of memory: 6% of the first
    4 GiB, 4% of the next 8 GiB, 2% of the next 16 GiB and 1% of the rest, floored
    to whole bytes (a 128 GiB host keeps 1925.12 MiB)."""
    if isinstance(physical_bytes, bool) or not isinstance(physical_bytes, int):
        raise ValueError(f"physical memory must be a whole number of bytes, got {physical_bytes!r}")
    if physical_bytes < 0:
        raise ValueError(f"physical memory must be 0 bytes or more, got {physical_bytes}")
    # Sum percent x bytes over the tiers exactly and floor once: flooring each
    # tier would lose up to a byte per tier.
    rest = physical_bytes
    percent_bytes = 0
    for size, percent in _MIN_FREE_TIERS:
        part = rest if size is None else min(rest, size)
        percent_bytes += part * percent
        rest -= part
    return percent_bytes // 100


def _check_thresholds(thresholds: Mapping[str, float]) -> dict[str, float]:
    """The thresholds as a dict in STATES order, after checking them."""
    unknown = sorted(set(thresholds) - set(STATES))
    if unknown:
        raise ValueError(
            f"free-memory thresholds: unknown state {unknown[0]!r}; expected {', '.join(STATES)}"
        )
    checked: dict[str, float] = {}
    for state in STATES:
        if state not in thresholds:
            raise ValueError(
                f"free-memory thresholds: state {state!r} has no threshold; "
                f"every one of {', '.join(STATES)} needs one"
            )
        value = thresholds[state]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"free-memory threshold of {state!r}: expected a percent of minFree, got {value!r}"
            )
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"free-memory threshold of {state!r}: expected a percent of minFree above 0, "
                f"got {value!r}"
            )
        checked[state] = float(value)
    for upper, lower in itertools.pairwise(STATES):
        if not checked[lower] < checked[upper]:
            raise ValueError(
                f"free-memory threshold of {lower!r} ({checked[lower]:g}%) must be below that "
                f"of {upper!r} ({checked[upper]:g}%): thresholds fall from high to low"
            )
    return checked


def _check_techniques(techniques: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """The techniques as a dict of frozensets in STATES order, after checking them."""
    unknown = sorted(set(techniques) - set(STATES))
    if unknown:
        raise ValueError(
            f"free-memory techniques: unknown state {unknown[0]!r}; expected {', '.join(STATES)}"
        )
    checked: dict[str, frozenset[str]] = {}
    for state in STATES:
        if state not in techniques:
            raise ValueError(
                f"free-memory techniques: state {state!r} is missing; every one of "
                f"{', '.join(STATES)} needs a (possibly empty) list of techniques"
            )
        given = techniques[state]
        if isinstance(given, str):
            # A bare string would be read letter by letter.
            raise ValueError(
                f"techniques of state {state!r}: expected a list of names, got the string {given!r}"
            )
        names = frozenset(given)
        for name in sorted(names, key=str):
            if name not in TECHNIQUES:
                raise ValueError(
                    f"techniques of state {state!r}: unknown technique {name!r}; "
                    f"expected some of {', '.join(TECHNIQUES)}"
                )
        checked[state] = names
    return checked


class FreeMemoryStates:
    """The host's free-memory state, moved by :meth:`update` as free memory changes,
    with the time spent in each state.

    ``min_free_pages`` is minFree in pages (:func:`min_free_bytes` divided by the
    page size); ``thresholds`` are percents of it, ``techniques`` the names each
    state enables (both default to ESXi's). Times are in simulated nanoseconds
    from ``start_ns``.
    """

    state: str
    transitions: list[tuple[float, str]]

    def __init__(
        self,
        min_free_pages: int,
        *,
        thresholds: Mapping[str, float] | None = None,
        techniques: Mapping[str, Iterable[str]] | None = None,
        start_ns: float = 0.0,
    ) -> None:
        if isinstance(min_free_pages, bool) or not isinstance(min_free_pages, int):
            raise ValueError(f"minFree must be a whole number of pages, got {min_free_pages!r}")
        if min_free_pages < 0:
            raise ValueError(f"minFree must be 0 pages or more, got {min_free_pages}")
        if not math.isfinite(start_ns):
            raise ValueError(f"start time must be a finite number of ns, got {start_ns!r}")
        self.min_free_pages = min_free_pages
        self.thresholds = _check_thresholds(
            DEFAULT_THRESHOLDS if thresholds is None else thresholds
        )
        self.techniques = _check_techniques(
            DEFAULT_TECHNIQUES if techniques is None else techniques
        )
        # Fraction(percent) is the float's exact value, so the ceiling is exact.
        self._threshold_pages = [
            math.ceil(Fraction(self.thresholds[state]) * min_free_pages / 100) for state in STATES
        ]
        self.start_ns = float(start_ns)
        self.state = STATES[0]
        self.transitions = [(self.start_ns, self.state)]
        self._level = 0
        self._last_ns = self.start_ns
        self._ns_in = [0.0] * len(STATES)

    def threshold_pages(self, state: str) -> int:
        """The free pages below which the host enters ``state``."""
        return self._threshold_pages[_level_of(state)]

    def update(self, free_pages: int, now_ns: float) -> str:
        """Credits the time since the last update to the current state, then moves to
        the state ``free_pages`` calls for, with hysteresis; returns the new state.
        A move across several states is one entry in ``transitions``: the state the
        host ends in."""
        if free_pages < 0:
            raise ValueError(f"free memory must be 0 pages or more, got {free_pages}")
        self._advance(now_ns)
        level = self._level
        # Down: to the lowest state whose threshold free memory is below, at once.
        for deeper in range(len(STATES) - 1, level, -1):
            if free_pages < self._threshold_pages[deeper]:
                level = deeper
                break
        else:
            # Up: one state at a time, while free memory reaches the threshold of
            # the state above (so a state is left at a higher level than entered).
            while level > 0 and free_pages >= self._threshold_pages[level - 1]:
                level -= 1
        if level != self._level:
            self._level = level
            self.state = STATES[level]
            self.transitions.append((float(now_ns), self.state))
        return self.state

    def enabled(self, technique: str) -> bool:
        """Whether the current state enables ``technique``."""
        if technique not in TECHNIQUES:
            raise ValueError(
                f"unknown reclamation technique {technique!r}; expected one of "
                f"{', '.join(TECHNIQUES)}"
            )
        return technique in self.techniques[self.state]

    def target_free_pages(self) -> int:
        """The free pages reclamation aims for in the current state: the level at
        which the host leaves it (0 in high, where nothing is reclaimed)."""
        if self._level == 0:
            return 0
        return self._threshold_pages[self._level - 1]

    def time_in_state(self, now_ns: float) -> dict[str, float]:
        """Seconds spent in each state from the start to ``now_ns``, in STATES order."""
        self._check_time(now_ns)
        ns_in = list(self._ns_in)
        ns_in[self._level] += now_ns - self._last_ns
        return {state: ns / 1e9 for state, ns in zip(STATES, ns_in, strict=True)}

    def _advance(self, now_ns: float) -> None:
        """Credits the time from the last update to ``now_ns`` to the current state."""
        self._check_time(now_ns)
        self._ns_in[self._level] += now_ns - self._last_ns
        self._last_ns = float(now_ns)

    def _check_time(self, now_ns: float) -> None:
        if not math.isfinite(now_ns):
            raise ValueError(f"time must be a finite number of ns, got {now_ns!r}")
        if now_ns < self._last_ns:
            raise ValueError(
                f"time went backwards: {now_ns!r} ns is before the last update at "
                f"{self._last_ns!r} ns"
            )


def _level_of(state: str) -> int:
    """The index of ``state`` in STATES (0 is high)."""
    try:
        return STATES.index(state)
    except ValueError:
        raise ValueError(
            f"unknown free-memory state {state!r}; expected one of {', '.join(STATES)}"
        ) from None
