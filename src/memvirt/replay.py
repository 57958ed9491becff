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

from memvirt.dataplane.layout import seed_state
from memvirt.dataplane.native import next_uses
from memvirt.dataplane.replacement import (
    R_ACCESSES,
    R_CLEAN_DROPS,
    R_EVICTIONS,
    R_MAJOR,
    R_MINOR,
    R_WRITEBACKS,
    R_WRITES,
    R_ZERO_DROPS,
    replace,
)
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
    page_tables: bool = True

    def __post_init__(self) -> None:
        if self.frames <= 0:
            raise KernelError(f"--frames must be at least 1, got {self.frames}")
        get_policy(self.policy)
        if not self.page_tables:
            if not get_policy(self.policy).flat:
                raise KernelError(
                    f"the {self.policy} policy draws frames: it needs page tables "
                    "(drop --no-page-tables)"
                )
            if self.tlb is not None:
                raise KernelError("without page tables there is no TLB: add --no-tlb")
            if self.swap_slots is not None:
                raise KernelError("without page tables swap is unlimited: drop --swap-slots")
            if not self.virtual_memory:
                raise KernelError("--no-page-tables and --no-virtual-memory exclude each other")


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
        """A flat dictionary: the counters next to the replay's settings.

        ``reads`` counts data reads; instruction fetches (reads of code, in
        lackey traces) are counted apart in ``instruction_fetches``.
        """
        out: dict[str, Any] = dict(self.counters)
        out.update({k: v for k, v in asdict(self).items() if k != "counters"})
        out["accesses_per_second"] = out["accesses"] / self.seconds if self.seconds > 0 else None
        return out

    def __getitem__(self, key: str) -> int:
        return self.counters[key]


def split_fetches(counters: dict[str, int], trace: Trace) -> dict[str, int]:
    """Count the trace's instruction fetches apart from its data reads."""
    fetches = 0 if trace.fetches is None else int(np.count_nonzero(trace.fetches))
    out = dict(counters)
    out["instruction_fetches"] = fetches
    out["reads"] = counters["reads"] - fetches
    return out


def build_kernel(
    trace: Trace, options: ReplayOptions, uniq: np.ndarray | None = None
) -> tuple[Kernel, int, np.ndarray]:
    """A kernel with one process covering the trace's pages; its page tables built.

    Returns the kernel, the process's pid and the trace's page numbers.
    ``uniq``, the trace's distinct page numbers sorted, saves a pass when known.
    """
    geo = options.geometry
    vpns = trace.page_numbers_for(geo.offset_bits)
    if vpns.size and (vpns.min() < 0 or vpns.max() >= 1 << geo.vpn_bits):
        raise KernelError(
            f"{trace.source}: page numbers must lie in [0, 2^{geo.vpn_bits}) for a "
            f"{geo.va_bits}-bit address space"
        )
    if uniq is None:
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
    if not options.page_tables:
        return replay_without_page_tables(trace, options)
    uniq = np.unique(trace.page_numbers_for(options.geometry.offset_bits))
    kernel, pid, vpns = build_kernel(trace, options, uniq)
    nu = next_uses(vpns) if get_policy(options.policy).needs_future else None
    start = time.perf_counter()
    kernel.run(pid, vpns, trace.writes, next_use=nu, page_numbers=True)
    seconds = time.perf_counter() - start
    return ReplayResult(
        policy=options.policy,
        frames=options.frames,
        page_size=options.geometry.page_size,
        levels=options.geometry.levels,
        distinct_pages=int(uniq.shape[0]),
        table_pages=kernel.table_pages(pid),
        seconds=seconds,
        counters=split_fetches(kernel.counters(pid), trace),
        killed=[k.reason for k in kernel.kills],
    )


def warm_up() -> None:
    """Compile (or load from numba's cache) the data plane, so timings exclude it."""
    trace = Trace.from_pages([1, 2, 3, 1, 4, 1], [0, 1, 0, 0, 1, 0])
    for policy in ("lru", "opt"):
        replay(trace, ReplayOptions(frames=2, policy=policy))
        replay(trace, ReplayOptions(frames=2, policy=policy, tlb=None, page_tables=False))


def replay_without_page_tables(trace: Trace, options: ReplayOptions) -> ReplayResult:
    """Replacement alone: a flat page-to-frame array, no walks, no TLB (libCacheSim's experiment).

    The counts equal those of the full path with the same policy and frames.
    """
    vpns = trace.page_numbers_for(options.geometry.offset_bits)
    uniq, dense = np.unique(vpns, return_inverse=True)
    dense = np.ascontiguousarray(dense, dtype=np.int64)
    policy = get_policy(options.policy)
    nu = next_uses(dense) if policy.needs_future else np.zeros(0, dtype=np.int64)
    writes = np.ascontiguousarray(trace.writes, dtype=np.uint8)
    start = time.perf_counter()
    out = replace(
        dense, writes, int(uniq.shape[0]), options.frames, policy.code, nu,
        seed_state(options.seed),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    counters = {
        "accesses": int(out[R_ACCESSES]),
        "reads": int(out[R_ACCESSES] - out[R_WRITES]),
        "writes": int(out[R_WRITES]),
        "minor_faults": int(out[R_MINOR]),
        "major_faults": int(out[R_MAJOR]),
        "faults": int(out[R_MINOR] + out[R_MAJOR]),
        "evictions": int(out[R_EVICTIONS]),
        "writebacks": int(out[R_WRITEBACKS]),
        "clean_drops": int(out[R_CLEAN_DROPS]),
        "zero_drops": int(out[R_ZERO_DROPS]),
        "swap_ins": int(out[R_MAJOR]),
        "swap_outs": int(out[R_WRITEBACKS]),
    }
    for name in (
        "tlb_hits", "tlb_misses", "tlb_l1_hits", "tlb_l1_misses", "tlb_l2_hits",
        "tlb_l2_misses", "walks", "walk_memory_references", "table_pages_allocated",
        "dirty_bit_updates",
    ):  # fmt: skip
        counters[name] = 0
    return ReplayResult(
        policy=options.policy,
        frames=options.frames,
        page_size=options.geometry.page_size,
        levels=0,
        distinct_pages=int(uniq.shape[0]),
        table_pages=0,
        seconds=seconds,
        counters=split_fetches(counters, trace),
        killed=[],
    )
