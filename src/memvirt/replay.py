"""Replay: one process runs a trace on a memory of a given number of frames.

This is the classic replacement experiment (Silberschatz et al., Operating
System Concepts, ch. 10) with the whole translation path underneath: each
access goes through the TLB, the radix page table and, on a miss in memory,
a page fault and the replacement policy.

``frames`` counts the frames for data pages, as in the textbook and in
libCacheSim. The page tables the trace needs are built before the replay in
frames of their own, taken from the same memory (which therefore has
``frames + table_pages`` frames), so their overhead is visible in the result
without changing the replacement experiment. The swap device is large
enough for every page of the trace unless ``swap_slots`` says otherwise.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from memvirt.dataplane.native import next_uses
from memvirt.kernel.kernel import Kernel, KernelConfig, KernelError, regions_covering
from memvirt.mmu.tlb import TLBConfig
from memvirt.policies import get_policy
from memvirt.traces.model import Trace
from memvirt.units import PageGeometry


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay: frames for data pages, policy, geometry, TLB (None: no TLB)."""

    frames: int
    policy: str = "lru"
    geometry: PageGeometry = field(default_factory=PageGeometry)
    tlb: TLBConfig | None = field(default_factory=TLBConfig)
    swap_slots: int | None = None
    swap_kind: str = "ssd"
    seed: int = 0
    virtual_memory: bool = True

    def __post_init__(self) -> None:
        if self.frames <= 0:
            raise KernelError(f"--frames must be at least 1, got {self.frames}")
        get_policy(self.policy)


@dataclass(frozen=True)
class ReplayResult:
    """What a replay counted. ``seconds`` is the simulation's own wall time."""

    policy: str
    frames: int
    page_size: int
    levels: int
    distinct_pages: int
    table_pages: int
    seconds: float
    counters: dict[str, int]
    killed: list[str]

    def to_dict(self) -> dict[str, Any]:
        """A flat dictionary: the counters next to the replay's settings."""
        out: dict[str, Any] = dict(self.counters)
        out.update({k: v for k, v in asdict(self).items() if k != "counters"})
        out["accesses_per_second"] = out["accesses"] / self.seconds if self.seconds > 0 else None
        return out

    def __getitem__(self, key: str) -> int:
        return self.counters[key]


def build_kernel(trace: Trace, options: ReplayOptions) -> tuple[Kernel, int, np.ndarray]:
    """A kernel with one process covering the trace's pages; its page tables built."""
    geo = options.geometry
    vpns = trace.page_numbers_for(geo.offset_bits)
    if vpns.size and (vpns.min() < 0 or vpns.max() >= 1 << geo.vpn_bits):
        raise KernelError(
            f"{trace.source}: page numbers must lie in [0, 2^{geo.vpn_bits}) for a "
            f"{geo.va_bits}-bit address space"
        )
    uniq = np.unique(vpns)
    regions = regions_covering(uniq, geo.page_size)
    tables = 1 + sum(
        int(np.unique(uniq >> geo.shift(lvl - 1)).shape[0]) for lvl in range(1, geo.levels)
    )
    slots = options.swap_slots if options.swap_slots is not None else int(uniq.shape[0])
    frames = options.frames + (tables if options.virtual_memory else 0)
    kernel = Kernel(
        KernelConfig(
            frames=frames,
            geometry=geo,
            policy=options.policy,
            tlb=options.tlb,
            swap_slots=slots,
            swap_kind=options.swap_kind,
            seed=options.seed,
            virtual_memory=options.virtual_memory,
        )
    )
    pid = kernel.spawn(regions, name=trace.source)
    if options.virtual_memory:
        kernel.prepare_tables(pid, uniq)
    return kernel, pid, vpns


def replay(trace: Trace, options: ReplayOptions) -> ReplayResult:
    """Replay ``trace`` as one process and return what it counted."""
    if len(trace) == 0:
        raise KernelError(f"{trace.source}: the trace has no accesses")
    kernel, pid, vpns = build_kernel(trace, options)
    nu = next_uses(vpns) if get_policy(options.policy).needs_future else None
    start = time.perf_counter()
    kernel.run(pid, vpns, trace.writes, next_use=nu, page_numbers=True)
    seconds = time.perf_counter() - start
    return ReplayResult(
        policy=options.policy,
        frames=options.frames,
        page_size=options.geometry.page_size,
        levels=options.geometry.levels,
        distinct_pages=int(np.unique(vpns).shape[0]),
        table_pages=kernel.table_pages(pid),
        seconds=seconds,
        counters=kernel.counters(pid),
        killed=[k.reason for k in kernel.kills],
    )


def warm_up() -> None:
    """Compile (or load from numba's cache) the data plane, so timings exclude it."""
    trace = Trace.from_pages([1, 2, 3, 1, 4, 1], [0, 1, 0, 0, 1, 0])
    for policy in ("lru", "opt"):
        replay(trace, ReplayOptions(frames=2, policy=policy))
