"""Swap devices: a fixed number of page-sized slots, and their latencies.

A page that leaves memory dirty is written to a free slot; its content
token goes with it, so the page reads back exactly what was written. A
page read back from swap keeps its slot while it stays clean (Linux's swap
cache): evicting it again costs no write. Its first write makes the copy
stale and frees the slot.

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


@dataclass
class SwapDevice:
    """``slots`` page slots on a device of ``kind`` ("ssd" or "hdd")."""

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
        self.token = np.zeros(max(self.slots, 1), dtype=np.int64)
        self.owner = np.full(max(self.slots, 1), -1, dtype=np.int32)
        # bytes of a slot held compressed in a compression cache (0: the slot is on the device)
        self.csize = np.zeros(max(self.slots, 1), dtype=np.int32)
        self.free = np.arange(self.slots - 1, -1, -1, dtype=np.int32)
        if self.slots == 0:
            self.free = np.zeros(1, dtype=np.int32)

    @property
    def read_ns(self) -> int:
        """Nanoseconds to read one page."""
        return SWAP_LATENCY_NS[self.kind][0]

    @property
    def write_ns(self) -> int:
        """Nanoseconds to write one page."""
        return SWAP_LATENCY_NS[self.kind][1]

    def used(self) -> int:
        """Slots that hold a page."""
        return int(np.count_nonzero(self.owner[: self.slots] >= 0))
