"""A trace: the memory accesses of one process, in order.

Each access is an address (or a page number) and a read/write flag. Traces
come from files (:mod:`memvirt.traces.readers`) or from code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TraceError(ValueError):
    """A trace that cannot be read: says where (file, line) and what was expected."""


@dataclass(frozen=True)
class Trace:
    """``addresses[i]`` is access i's virtual address (or page number when
    ``page_numbers``); ``writes[i]`` is 1 for a write, 0 for a read."""

    addresses: np.ndarray
    writes: np.ndarray
    page_numbers: bool = False
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if self.addresses.shape != self.writes.shape or self.addresses.ndim != 1:
            raise TraceError(
                f"{self.source}: addresses and writes must be 1-D arrays of one length"
            )

    def __len__(self) -> int:
        return int(self.addresses.shape[0])

    def page_numbers_for(self, offset_bits: int) -> np.ndarray:
        """The page number of every access, for pages of ``1 << offset_bits`` bytes."""
        if self.page_numbers:
            return self.addresses
        return self.addresses >> offset_bits

    @classmethod
    def from_pages(cls, pages: object, writes: object = None, source: str = "<memory>") -> Trace:
        """A trace of page numbers (and optional write flags)."""
        p = np.ascontiguousarray(np.asarray(pages, dtype=np.int64))
        w = (
            np.zeros(p.shape[0], dtype=np.uint8)
            if writes is None
            else np.ascontiguousarray(np.asarray(writes, dtype=np.uint8))
        )
        return cls(p, w, page_numbers=True, source=source)
