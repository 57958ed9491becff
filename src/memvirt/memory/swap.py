"""Swap devices: a fixed number of page-sized slots, and their latencies.

A page that leaves memory dirty is written to a free slot; its content
token goes with it, so the page reads back exactly what was written. A
page read back from swap keeps its slot while it stays clean (Linux's swap
cache): evicting it again costs no write. Its first write makes the copy
stale and frees the slot.

Slots are handed out in order (0, 1, 2...), and a slot given back is reused
before any slot never used (last in, first out). So at any time the slots
in use lie below the first never-used one, and the simulator keeps state
only for those: the per-slot arrays start with :data:`INITIAL_SLOTS` slots
and grow by a quarter as slots are taken (never beyond the device's size). A
run that swaps little keeps little, however large the device, and at most a
fifth of the arrays' slots are never used.

Latencies are per 4 KiB page. The defaults are an NVMe SSD (about 80 µs
read, 20 µs write: 4 KiB random I/O on a current NVMe drive) and a 7200 rpm
disk (about 8 ms, a seek plus half a rotation, as in Hennessy & Patterson's
storage chapter).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: (read, write) latency in nanoseconds per page, by device kind.
SWAP_LATENCY_NS: dict[str, tuple[int, int]] = {
    "ssd": (80_000, 20_000),
    "hdd": (8_000_000, 8_000_000),
}

#: Slots the per-slot arrays hold at first (fewer when the device is smaller). Read when a
#: device is made, so that a test can set it.
INITIAL_SLOTS = 4096


@dataclass
class SwapDevice:
    """``slots`` page slots on a device of ``kind`` ("ssd" or "hdd").

    ``token``, ``owner``, ``csize`` and ``free`` hold the first :attr:`capacity` slots
    (at least one entry each, so that a device without slots still has arrays); the
    data plane keeps which slots are free (``free`` is the stack of slots given back;
    the next never-used slot is a counter of the kernel's) and :meth:`grow` makes room.
    """

    slots: int
    kind: str = "ssd"
    token: np.ndarray = field(init=False, repr=False)
    owner: np.ndarray = field(init=False, repr=False)
    free: np.ndarray = field(init=False, repr=False)
    csize: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.slots < 0:
            raise ValueError(f"a swap device has zero or more slots, got {self.slots}")
        if self.kind not in SWAP_LATENCY_NS:
            raise ValueError(f"unknown swap device {self.kind!r}: expected one of ssd, hdd")
        n = max(1, min(self.slots, INITIAL_SLOTS))
        self.token = np.zeros(n, dtype=np.int64)  # the content token of the page in a slot
        self.owner = np.full(n, -1, dtype=np.int32)
        # bytes of a slot held compressed in a compression cache (0: the slot is on the device)
        self.csize = np.zeros(n, dtype=np.int32)
        # slots given back; never more than the slots handed out, which the arrays hold
        self.free = np.zeros(n, dtype=np.int32)

    @property
    def capacity(self) -> int:
        """Slots the arrays hold now (the device may have more)."""
        return int(self.owner.shape[0])

    def grow(self, needed: int) -> bool:
        """Make the arrays hold at least ``needed`` slots (at most the device's), growing
        them by a quarter at a time; True if they grew (new arrays: whoever holds the old
        ones must take these)."""
        n = self.capacity
        target = min(needed, self.slots)
        if target <= n:
            return False
        while n < target:
            n += max(n // 4, 1)
        n = min(n, self.slots)
        self.token = _grown(self.token, n, 0)
        self.owner = _grown(self.owner, n, -1)
        self.csize = _grown(self.csize, n, 0)
        self.free = _grown(self.free, n, 0)
        return True

    @property
    def read_ns(self) -> int:
        """Nanoseconds to read one page."""
        return SWAP_LATENCY_NS[self.kind][0]

    @property
    def write_ns(self) -> int:
        """Nanoseconds to write one page."""
        return SWAP_LATENCY_NS[self.kind][1]

    def used(self) -> int:
        """Slots that hold a page (slots the arrays do not hold were never used)."""
        return int(np.count_nonzero(self.owner >= 0))


def _grown(a: np.ndarray, n: int, fill: int) -> np.ndarray:
    """``a`` lengthened to ``n`` entries, the new ones ``fill``."""
    out = np.full(n, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out
