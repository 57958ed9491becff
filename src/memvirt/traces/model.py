"""A trace: the memory accesses of one process, in order.

Each access is an address (or a page number) and a kind: a read, a write,
or an instruction fetch (a read of code, which valgrind's lackey tool
records apart). Traces come from files (:mod:`memvirt.traces.readers`),
from generators (:mod:`memvirt.workloads`) or from code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TraceError(ValueError):
    """A trace that cannot be read: says where (file, line) and what was expected."""


#: Access kinds, as trace files store them.
KIND_READ = 0
KIND_WRITE = 1
KIND_FETCH = 2


@dataclass(frozen=True)
class Trace:
    """``addresses[i]`` is access i's virtual address (or page number when
    ``page_numbers``); ``writes[i]`` is 1 for a write, 0 for a read.
    ``fetches``, when given, marks the reads that are instruction fetches."""

    addresses: np.ndarray
    writes: np.ndarray
    page_numbers: bool = False
    source: str = "<memory>"
    fetches: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.addresses.shape != self.writes.shape or self.addresses.ndim != 1:
            raise TraceError(
                f"{self.source}: addresses and writes must be 1-D arrays of one length"
            )
        if self.fetches is not None and self.fetches.shape != self.addresses.shape:
            raise TraceError(f"{self.source}: fetches must have one flag per access")

    def head(self, count: int) -> Trace:
        """The first ``count`` accesses."""
        return Trace(
            self.addresses[:count],
            self.writes[:count],
            page_numbers=self.page_numbers,
            source=self.source,
            fetches=None if self.fetches is None else self.fetches[:count],
        )

    @property
    def kinds(self) -> np.ndarray:
        """The kind of every access: KIND_READ, KIND_WRITE or KIND_FETCH."""
        kinds = self.writes.astype(np.uint8)
        if self.fetches is not None:
            kinds[self.fetches != 0] = KIND_FETCH
        return kinds

    @classmethod
    def from_kinds(
        cls,
        addresses: np.ndarray,
        kinds: np.ndarray,
        *,
        page_numbers: bool = False,
        source: str = "<memory>",
    ) -> Trace:
        """A trace from addresses and KIND_* codes."""
        kinds = np.asarray(kinds, dtype=np.uint8)
        fetches = kinds == KIND_FETCH
        return cls(
            np.ascontiguousarray(addresses, dtype=np.int64),
            (kinds == KIND_WRITE).astype(np.uint8),
            page_numbers=page_numbers,
            source=source,
            fetches=fetches.astype(np.uint8) if fetches.any() else None,
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
