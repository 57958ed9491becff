"""Translation lookaside buffers: set-associative caches of translations.

A TLB caches the translation of a virtual page number to a frame so that
most accesses skip the page walk. memvirt's TLB has one or two levels, each
set-associative with LRU replacement within a set; the set is the vpn modulo
the number of sets. The default follows recent Intel cores: a 64-entry 4-way
first-level data TLB and a 1536-entry 12-way second-level TLB (Intel 64 and
IA-32 Optimization Reference Manual, Skylake).

Entries are tagged by address-space id (PCID on x86-64), so a context
switch needs no flush; ``flush_on_switch`` models a TLB without tags. An
entry is invalidated whenever its mapping changes (the page is evicted, the
process ends). A miss in the first level that hits the second refills the
first; a miss in both walks the page table and fills both. A huge-page
translation is one entry covering the whole huge page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class TLBError(ValueError):
    """A TLB geometry that cannot be built."""


@dataclass(frozen=True)
class TLBLevel:
    """One level: ``entries`` entries in sets of ``ways``."""

    entries: int
    ways: int

    def __post_init__(self) -> None:
        if self.entries <= 0 or self.ways <= 0:
            raise TLBError(
                f"a TLB level needs entries and ways > 0, got {self.entries}/{self.ways}"
            )
        if self.entries % self.ways:
            raise TLBError(
                f"TLB entries ({self.entries}) must be a multiple of its ways ({self.ways})"
            )

    @property
    def sets(self) -> int:
        """Number of sets."""
        return self.entries // self.ways


@dataclass(frozen=True)
class TLBConfig:
    """The TLB levels, first to last, and whether a context switch flushes them."""

    levels: tuple[TLBLevel, ...] = (TLBLevel(64, 4), TLBLevel(1536, 12))
    flush_on_switch: bool = False

    def __post_init__(self) -> None:
        if not 1 <= len(self.levels) <= 2:
            raise TLBError(f"a TLB has one or two levels, got {len(self.levels)}")


@dataclass
class TLBArrays:
    """The TLB's entries as arrays: tag, value and LRU stamp per entry and level."""

    config: TLBConfig | None
    tags: np.ndarray = field(init=False, repr=False)
    vals: np.ndarray = field(init=False, repr=False)
    stamps: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        width = max((lv.entries for lv in self.config.levels), default=1) if self.config else 1
        nlv = len(self.config.levels) if self.config else 1
        self.tags = np.full((nlv, width), -1, dtype=np.int64)
        self.vals = np.full((nlv, width), -1, dtype=np.int64)
        self.stamps = np.zeros((nlv, width), dtype=np.int64)
