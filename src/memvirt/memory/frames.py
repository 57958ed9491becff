"""Physical memory: a pool of frames with a free list and per-frame metadata.

A frame is one page of physical memory. Its metadata lives in one row of 40
bytes, seen as int32 and as int64 columns (see :mod:`memvirt.dataplane.layout`),
so that an access to a frame reads one row: the owner (a pid,
or -1 when free), the back-pointer to the page it holds (the virtual page
number, or the table index of a page-table page), the referenced, dirty and
pinned bits, the replacement-list links, the swap slot that holds a current
copy, and the page's content token.

Free frames sit on a free list chained through their (otherwise unused)
list-link field, used as a stack: the first frames handed out are 0, 1, 2,
... and a freed frame is the next one reused. The chain costs no memory of
its own, where an array of free frames took 4 bytes a frame. An optional
huge-page pool, carved from the top of memory at start as Linux's ``vm.nr_hugepages`` reserves
hugetlbfs pages, holds aligned blocks for 2 MiB pages; those are pinned and
never swapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from memvirt.dataplane.layout import (
    F_FLAGS,
    F_NEXT,
    F_OWNER,
    F_SLOT,
    FR_DIRTY,
    FR_HUGE,
    FR_PINNED,
    FR_REFERENCED,
    FR_TABLE,
    G_TOKEN,
    G_VPN,
    N_FI32,
    N_FI64,
)


@dataclass
class FramePool:
    """``nframes`` frames of physical memory, ``huge_pages`` of them kept for huge pages."""

    nframes: int
    huge_pages: int = 0
    huge_span: int = 512
    keep_next_use: bool = False  # the opt policy's per-frame next-use row
    fi32: np.ndarray = field(init=False, repr=False)
    fi64: np.ndarray = field(init=False, repr=False)
    #: the free list's first frame (-1: none) and length; frames chain through F_NEXT
    free_head: int = field(init=False)
    free_count: int = field(init=False)
    huge_free: np.ndarray = field(init=False, repr=False)
    huge_base: int = field(init=False)

    def __post_init__(self) -> None:
        if self.nframes <= 0:
            raise ValueError(f"physical memory needs at least one frame, got {self.nframes}")
        huge_frames = self.huge_pages * self.huge_span
        if huge_frames > self.nframes:
            raise ValueError(
                f"{self.huge_pages} huge pages need {huge_frames} frames, memory has {self.nframes}"
            )
        # one row of 40 bytes a frame (48 with opt's next-use column), seen as int64 columns
        # (fi64) and as int32 columns (fi32, whose first N_FI32 are the int32 fields): an
        # access reads one row, not a row in each of two arrays (docs/benchmarks.md)
        self.fi64 = np.zeros((self.nframes, N_FI64 + int(self.keep_next_use)), dtype=np.int64)
        self.fi32 = self.fi64.view(np.int32)
        self.fi32[:, :N_FI32] = -1
        self.fi32[:, F_FLAGS] = 0
        self.fi64[:, G_VPN] = -1
        # huge pages: aligned blocks at the top of memory
        top = self.nframes - self.nframes % self.huge_span if huge_frames else self.nframes
        self.huge_base = top - huge_frames
        self.huge_free = np.arange(
            self.huge_base + huge_frames - self.huge_span,
            self.huge_base - 1,
            -self.huge_span,
            dtype=np.int64,
        )[: self.huge_pages]
        small = np.concatenate([np.arange(0, self.huge_base), np.arange(top, self.nframes)]).astype(
            np.int32
        )
        # the free list, chained through F_NEXT: frame 0 first, then 1, 2, ...
        self.free_head = int(small[0]) if small.size else -1
        self.free_count = int(small.size)
        if small.size:
            self.fi32[small[:-1], F_NEXT] = small[1:]

    @property
    def small_frames(self) -> int:
        """Frames for base pages and page-table pages (not the huge-page pool)."""
        return self.nframes - self.huge_pages * self.huge_span

    def owner(self, pfn: int) -> int:
        """The pid holding frame ``pfn``, or -1 when it is free."""
        return int(self.fi32[pfn, F_OWNER])

    def vpn(self, pfn: int) -> int:
        """The back-pointer of frame ``pfn``: the page it holds (or its table index)."""
        return int(self.fi64[pfn, G_VPN])

    def token(self, pfn: int) -> int:
        """The content token of the page in frame ``pfn``."""
        return int(self.fi64[pfn, G_TOKEN])

    def swap_slot(self, pfn: int) -> int:
        """The swap slot holding a current copy of frame ``pfn``'s page, or -1."""
        return int(self.fi32[pfn, F_SLOT])

    def flags(self, pfn: int) -> FrameFlags:
        """The referenced, dirty, pinned, table and huge bits of frame ``pfn``."""
        bits = int(self.fi32[pfn, F_FLAGS])
        return FrameFlags(
            referenced=bool(bits & FR_REFERENCED),
            dirty=bool(bits & FR_DIRTY),
            pinned=bool(bits & FR_PINNED),
            table=bool(bits & FR_TABLE),
            huge=bool(bits & FR_HUGE),
        )

    def used(self) -> int:
        """Frames that have an owner."""
        return int(np.count_nonzero(self.fi32[:, F_OWNER] >= 0))


@dataclass(frozen=True)
class FrameFlags:
    """The metadata bits of one frame."""

    referenced: bool
    dirty: bool
    pinned: bool
    table: bool
    huge: bool
