"""Scenario files: a whole machine described in TOML, validated once at the edge.

A *scenario* says what machine is simulated and what runs on it:

- a **native** machine: a host whose operating system runs processes
  directly, each with its own virtual address space and one-level mapping
  (virtual → physical);
- a **virtualized** machine: a host running a hypervisor and virtual
  machines. Each VM has its own *real* memory, managed by its guest
  operating system, and the hypervisor maps real pages to physical frames:
  two-level mapping (virtual → real → physical). The VMs' real memories may
  add up to more than the host's physical memory (*overcommitment*); the
  hypervisor then reclaims memory from them.

A scenario file is read with :mod:`tomllib` and checked here, once, by
pydantic into frozen, typed objects; everything after this module trusts
them and never checks again. Every problem found is reported at once, one
line each, naming the file (and the line of the key when it can be found),
the key path in dotted form (``vms.1.guest.policy``), the value given and
what was expected.

Sizes are bytes, written as integers or size strings (``"4GiB"``, see
:mod:`memvirt.units`); every size must be a whole number of pages. Times
in the cost model are nanoseconds; ``rate`` is accesses per simulated
second; ``start`` and ``run.seconds`` are simulated seconds.

Settings given on the command line (``--set host.memory=8GiB``) are applied
to the file's tables *before* validation, so an override is checked exactly
like the file. ``docs/scenarios.md`` describes every table and field.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import tomllib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from memvirt.kernel.kernel import KernelConfig
from memvirt.memory.swap import SWAP_LATENCY_NS
from memvirt.mmu.tlb import TLBConfig, TLBLevel
from memvirt.policies import get_policy
from memvirt.traces.readers import FORMATS
from memvirt.units import (
    GeometryError,
    MiB,
    PageGeometry,
    format_size,
    is_power_of_two,
    parse_size,
)
from memvirt.workloads import WorkloadSpec, page_range
from memvirt.workloads.contents import ContentModel

#: Shares per MiB of a VM's memory for the named levels, as in VMware ESX
#: (Waldspurger, OSDI 2002; vSphere Resource Management).
SHARES_PER_MIB: dict[str, int] = {"high": 20, "normal": 10, "low": 5}

#: Where a process's main region starts when the scenario does not say: the
#: traditional start of a program's text on x86-64 Linux (0x400000).
DEFAULT_BASE = 0x400000

#: The most pages a memory or a swap device may have (512 GiB of 4 KiB pages: a 256 GiB
#: host with its VMs' real memory fits). The simulator keeps some 60 bytes per page in
#: arrays, so a size beyond this would ask for more memory than a machine running memvirt
#: has; frame numbers are 32-bit in places, too.
MAX_PAGES = 1 << 27


class ScenarioError(ValueError):
    """A scenario that cannot be loaded: one line per problem, each naming the file, the
    key path, the value given and what was expected."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[Problem, ...] = tuple(problems)


@dataclass(frozen=True)
class Problem:
    """One problem in a scenario: where it is, the value found there and what was expected."""

    path: str
    message: str
    value: str | None = None
    line: int | None = None


# ----------------------------------------------------------------------- field types


def _to_bytes(value: object) -> object:
    """A size string or integer as a number of bytes."""
    if isinstance(value, str | int):
        return parse_size(value)
    raise ValueError(f"expected a size such as '4GiB' or a number of bytes, got {value!r}")


def _to_address(value: object) -> object:
    """An integer address, or one written as a string ("0x400000")."""
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            raise ValueError(f"expected an address such as 0x400000, got {value!r}") from None
    return value


def _to_policy(value: object) -> object:
    """A registered replacement policy's name."""
    if isinstance(value, str):
        get_policy(value)  # raises, listing the known names
    return value


def _item_name(value: object) -> object:
    """A name that can select its list item in an override (``vms.web.memory=2GiB``)."""
    if isinstance(value, str) and (not re.fullmatch(r"[A-Za-z0-9_-]+", value) or value.isdigit()):
        raise ValueError(
            "expected a name of letters, digits, '-' and '_', not all digits (a name selects "
            "its item in --set, as in vms.NAME.memory=2GiB)"
        )
    return value


Name = Annotated[str, BeforeValidator(_item_name)]
Bytes = Annotated[int, BeforeValidator(_to_bytes), Field(ge=0)]
PositiveBytes = Annotated[int, BeforeValidator(_to_bytes), Field(gt=0)]


def _page_size(value: int) -> int:
    if not is_power_of_two(value) or not 1024 <= value <= 1 << 30:
        raise ValueError(f"expected a power of two from 1 KiB to 1 GiB, got {value} bytes")
    return value


PageSize = Annotated[int, BeforeValidator(_to_bytes), AfterValidator(_page_size)]
Address = Annotated[int, BeforeValidator(_to_address), Field(ge=0)]
PolicyName = Annotated[str, BeforeValidator(_to_policy)]
Nanoseconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]

_MODEL = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

#: The slowest rate a process may have, in accesses per simulated second.
MIN_RATE = 1e-6


Loc = tuple[str | int, ...]


class _Found(list[tuple[Loc, object, str]]):
    """Problems found by a cross-field check: (key path, value given, what was expected)."""

    def add(self, loc: Loc, value: object, message: str) -> None:
        self.append((loc, value, message))


def _located(title: str, problems: list[tuple[Loc, object, str]]) -> None:
    """Raise the problems found by a cross-field check as one pydantic error, each at its own
    key path, so that they are reported like the errors of single fields."""
    if problems:
        raise ValidationError.from_exception_data(
            title,
            [
                InitErrorDetails(
                    type=PydanticCustomError("scenario", "{message}", {"message": message}),
                    loc=loc,
                    input=value,
                )
                for loc, value, message in problems
            ],
        )


# ---------------------------------------------------------------------------- host


class SwapConfig(BaseModel):
    """A swap device: its size and its kind, which sets its latencies."""

    model_config = _MODEL

    size: Bytes = Field(
        0, description="bytes of swap space, a whole number of pages; 0 means no swap"
    )
    device: Literal["ssd", "hdd"] = Field(
        "ssd",
        description="kind of device: 'ssd' (NVMe, 80 µs read / 20 µs write a page) or 'hdd' "
        "(7200 rpm disk, 8 ms a page); latencies from memvirt.memory.swap.SWAP_LATENCY_NS",
    )


class TLBLevelConfig(BaseModel):
    """One TLB level: ``entries`` entries in sets of ``ways``. Written as a table or as the
    string ``"ENTRIES:WAYS"``."""

    model_config = _MODEL

    entries: int = Field(gt=0, description="translations the level holds")
    ways: int = Field(gt=0, description="associativity: entries per set")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: object) -> object:
        if isinstance(data, str):
            parts = data.split(":")
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise ValueError(f"expected ENTRIES:WAYS such as '64:4', got {data!r}")
            return {"entries": int(parts[0]), "ways": int(parts[1])}
        return data

    @model_validator(mode="after")
    def _whole_sets(self) -> TLBLevelConfig:
        if self.entries % self.ways:
            _located(
                "TLBLevelConfig",
                [(("entries",), self.entries, f"must be a multiple of ways ({self.ways})")],
            )
        return self


def _l2_or_none(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    return value


class TLBSettings(BaseModel):
    """The TLB: one or two set-associative levels with LRU within a set. The default is a
    recent Intel core's data TLB (Intel Optimization Reference Manual, Skylake)."""

    model_config = _MODEL

    l1: TLBLevelConfig = Field(
        default_factory=lambda: TLBLevelConfig(entries=64, ways=4),
        description="first level, 'ENTRIES:WAYS' or {entries, ways}; default 64:4",
    )
    l2: Annotated[TLBLevelConfig | None, BeforeValidator(_l2_or_none)] = Field(
        default_factory=lambda: TLBLevelConfig(entries=1536, ways=12),
        description="second level, 'ENTRIES:WAYS', {entries, ways} or 'none'; default 1536:12",
    )
    flush_on_switch: bool = Field(
        False,
        description="flush the TLB on every context switch (an untagged TLB); false models "
        "address-space ids (PCID), so a switch costs no flush",
    )

    def config(self) -> TLBConfig:
        """The TLB as :mod:`memvirt.mmu.tlb` builds it."""
        levels = [TLBLevel(self.l1.entries, self.l1.ways)]
        if self.l2 is not None:
            levels.append(TLBLevel(self.l2.entries, self.l2.ways))
        return TLBConfig(tuple(levels), flush_on_switch=self.flush_on_switch)


def _tlb_switch(value: object) -> object:
    """``tlb = false`` means no TLB; ``tlb = true`` the default TLB."""
    if value is False:
        return None
    if value is True:
        return {}
    return value


class HostConfig(BaseModel):
    """The machine itself: its physical memory, its MMU and its native kernel."""

    model_config = _MODEL

    memory: PositiveBytes = Field(
        description="bytes of physical memory (frames), a whole number of pages, e.g. '4GiB'"
    )
    page_size: PageSize = Field(
        4096, description="bytes in a base page, a power of two from 1 KiB to 1 GiB; '4KiB'"
    )
    levels: int = Field(
        4, ge=2, le=5, description="page-table levels: 4 on x86-64 (48-bit), 5 with LA57"
    )
    bits_per_level: tuple[int, ...] = Field(
        (9, 9, 9, 9),
        description="index bits of each page-table level, root first; an integer means the "
        "same width at every level (9 on x86-64: 512 entries a table page)",
    )
    swap: SwapConfig = Field(
        default_factory=SwapConfig,
        description="the native kernel's swap device; with VMs the hypervisor swaps to "
        "hypervisor.host_swap instead, and this must stay empty",
    )
    huge_pages: int = Field(
        0,
        ge=0,
        description="huge pages (2 MiB on x86-64) reserved at boot, as Linux's vm.nr_hugepages",
    )
    tlb: Annotated[TLBSettings | None, BeforeValidator(_tlb_switch)] = Field(
        default_factory=TLBSettings,
        description="the TLB; false for none (every access walks the page table)",
    )
    policy: PolicyName = Field(
        "lru", description="replacement policy of the native kernel (memvirt.policies)"
    )
    scope: Literal["global", "local"] = Field(
        "global",
        description="'global' replacement takes a victim from any process; 'local' from the "
        "faulting process only, within an equal share of frames (Silberschatz et al., 10.5)",
    )
    virtual_memory: bool = Field(
        True,
        description="false loads each process whole into contiguous memory, as before "
        "virtual memory (native scenarios only)",
    )

    @model_validator(mode="before")
    @classmethod
    def _widths(cls, data: object) -> object:
        # a single width applies to every level: expand it with the level count given
        if isinstance(data, Mapping):
            bits = data.get("bits_per_level", 9)
            levels = data.get("levels", 4)
            # (only for a level count in range: the levels field reports any other, and a
            # huge one must not become a huge list)
            if (
                isinstance(bits, int)
                and not isinstance(bits, bool)
                and isinstance(levels, int)
                and 2 <= levels <= 5
            ):
                return {**data, "bits_per_level": [bits] * levels}
        return data

    @model_validator(mode="after")
    def _geometry(self) -> HostConfig:
        problems: list[tuple[Loc, object, str]] = []
        if len(self.bits_per_level) != self.levels:
            problems.append(
                (
                    ("bits_per_level",),
                    list(self.bits_per_level),
                    f"needs one width per level ({self.levels} levels)",
                )
            )
        if not problems:
            try:
                self.geometry()
            except GeometryError as err:
                problems.append((("bits_per_level",), list(self.bits_per_level), str(err)))
        _located("HostConfig", problems)
        return self

    def geometry(self) -> PageGeometry:
        """The radix page-table geometry of the host's MMU."""
        return PageGeometry(self.bits_per_level, self.page_size.bit_length() - 1)

    @property
    def frames(self) -> int:
        """Physical pages (frames), page-table pages and huge-page reserve included."""
        return self.memory // self.page_size

    @property
    def swap_slots(self) -> int:
        """Pages the native kernel's swap device holds."""
        return self.swap.size // self.page_size

    def tlb_config(self) -> TLBConfig | None:
        """The TLB as :mod:`memvirt.mmu.tlb` builds it, or None for no TLB."""
        return None if self.tlb is None else self.tlb.config()

    def kernel_config(self, seed: int = 0) -> KernelConfig:
        """The native kernel and its memory, as :class:`memvirt.kernel.kernel.Kernel` takes
        them (the random policy draws from ``seed``)."""
        return KernelConfig(
            frames=self.frames,
            geometry=self.geometry(),
            policy=self.policy,
            scope=self.scope,
            tlb=self.tlb_config(),
            swap_slots=self.swap_slots,
            swap_kind=self.swap.device,
            huge_pages=self.huge_pages,
            seed=seed,
            virtual_memory=self.virtual_memory,
        )


# ---------------------------------------------------------------------------- cost


class CostModel(BaseModel):
    """What each event costs in simulated time, in nanoseconds.

    Sources of the defaults are given per field and in docs/scenarios.md. The
    swap latencies default to those of the scenario's swap device (the host's,
    or with VMs the hypervisor's), from memvirt.memory.swap.SWAP_LATENCY_NS.
    """

    model_config = _MODEL

    tlb_hit_ns: Nanoseconds = Field(
        1.0,
        description="ns for a translation found in the TLB: about one cycle, overlapped with "
        "the cache access (Hennessy & Patterson, Computer Architecture, 6th ed., appendix B)",
    )
    memory_reference_ns: Nanoseconds = Field(
        100.0,
        description="ns for one DRAM access: each page-walk reference and each access that "
        "misses the caches (Hennessy & Patterson, Computer Architecture, 6th ed., ch. 2)",
    )
    minor_fault_ns: Nanoseconds = Field(
        1000.0,
        description="ns for a fault served without I/O: a Linux anonymous page fault that "
        "allocates and zeroes a 4 KiB page takes on the order of a microsecond",
    )
    vm_exit_ns: Nanoseconds = Field(
        1000.0,
        description="ns for a VM exit and re-entry, handling included: hundreds of ns to a "
        "few µs on recent cores (Agesen et al., 'Software techniques for avoiding hardware "
        "virtualization exits', USENIX ATC 2012)",
    )
    host_fault_ns: Nanoseconds = Field(
        2000.0,
        description="ns for a fault the hypervisor serves without I/O (a real page with no "
        "frame): a VM exit plus a minor fault in the host, vm_exit_ns + minor_fault_ns",
    )
    swap_read_ns: Nanoseconds = Field(
        description="ns to read one page from swap; default by device from "
        "memvirt.memory.swap.SWAP_LATENCY_NS (ssd 80000, hdd 8000000)",
    )
    swap_write_ns: Nanoseconds = Field(
        description="ns to write one page to swap; default by device from "
        "memvirt.memory.swap.SWAP_LATENCY_NS (ssd 20000, hdd 8000000)",
    )
    compress_ns: Nanoseconds = Field(
        5000.0,
        description="ns to compress one 4 KiB page: LZ4 compresses about 780 MB/s per core "
        "(lz4 README, 'Benchmarks'), 5.3 µs a page",
    )
    decompress_ns: Nanoseconds = Field(
        1000.0,
        description="ns to decompress one page from the compression cache: LZ4 decompresses "
        "about 4970 MB/s per core (lz4 README), 0.8 µs a page, plus the fault's handling",
    )
    share_copy_ns: Nanoseconds = Field(
        1000.0,
        description="ns to copy a shared page to a private frame when a write breaks sharing, "
        "on top of the host fault that maps the copy (host_fault_ns): a 4 KiB copy and the "
        "bookkeeping, about a microsecond",
    )


# ---------------------------------------------------------------------- hypervisor

Seconds = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]

STATE_NAMES = ("high", "clear", "soft", "hard", "low")
TECHNIQUE_NAMES = ("sharing", "ballooning", "compression", "swapping", "blocking")
Technique = Literal["sharing", "ballooning", "compression", "swapping", "blocking"]


class StateThresholds(BaseModel):
    """Free memory, in percent of minFree, below which the host enters each state (ESXi)."""

    model_config = _MODEL

    high: float = Field(400.0, gt=0.0, description="the host returns to high at this level")
    clear: float = Field(100.0, gt=0.0, description="below it: clear (sharing)")
    soft: float = Field(64.0, gt=0.0, description="below it: soft (sharing, ballooning)")
    hard: float = Field(32.0, gt=0.0, description="below it: hard (sharing, compression, swap)")
    low: float = Field(16.0, gt=0.0, description="below it: low (compression, swap, blocking)")

    @model_validator(mode="after")
    def _decreasing(self) -> StateThresholds:
        values = [getattr(self, name) for name in STATE_NAMES]
        found = _Found()
        for above, name, value in zip(STATE_NAMES, STATE_NAMES[1:], values[1:], strict=False):
            if value >= getattr(self, above):
                found.add((name,), value, f"must be below the {above} threshold "
                          f"({getattr(self, above):g})")  # fmt: skip
        _located("StateThresholds", found)
        return self


class StateTechniques(BaseModel):
    """Which reclamation techniques each free-memory state enables (ESXi 6's table)."""

    model_config = _MODEL

    high: tuple[Technique, ...] = Field((), description="none")
    clear: tuple[Technique, ...] = Field(("sharing",), description="page sharing")
    soft: tuple[Technique, ...] = Field(("sharing", "ballooning"), description="+ ballooning")
    hard: tuple[Technique, ...] = Field(
        ("sharing", "compression", "swapping"), description="sharing, compression, swapping"
    )
    low: tuple[Technique, ...] = Field(
        ("compression", "swapping", "blocking"),
        description="compression, swapping, and blocking VMs above their target",
    )


class StatesConfig(BaseModel):
    """The host's free-memory states: minFree and the thresholds above it."""

    model_config = _MODEL

    min_free: Bytes | None = Field(
        None,
        description="minFree in bytes; absent: ESXi's sliding scale (6% of the first 4 GiB, "
        "4% of the next 8, 2% of the next 16, 1% of the rest)",
    )
    thresholds: StateThresholds = Field(
        default_factory=lambda: StateThresholds(), description="percent of minFree"
    )
    techniques: StateTechniques = Field(
        default_factory=lambda: StateTechniques(), description="techniques by state"
    )


class BalloonConfig(BaseModel):
    """Ballooning: the hypervisor sets targets, drivers in the guests inflate and deflate."""

    model_config = _MODEL

    enabled: bool = Field(True, description="use the balloon drivers of the VMs that have one")
    max_percent: Percent = Field(
        65.0, description="most of a VM's memory a balloon may hold (ESX Mem.CtlMaxPercent)"
    )
    inflate_rate: Bytes = Field(
        256 * MiB,
        description="bytes a balloon may grow by per simulated second (memvirt's default: "
        "drivers are rate-limited so as not to stress the guest; ESX's rates are not published)",
    )
    deflate_rate: Bytes = Field(
        512 * MiB, description="bytes a balloon may shrink by per simulated second"
    )


class SharingConfig(BaseModel):
    """Content-based page sharing (transparent page sharing)."""

    model_config = _MODEL

    enabled: bool = Field(True, description="scan pages and share identical ones")
    scan_period: Seconds = Field(
        3600.0,
        description="seconds to scan each VM's whole memory once (ESX Mem.ShareScanTime, "
        "60 minutes)",
    )
    scan_rate: Bytes | None = Field(
        None,
        description="bytes scanned per simulated second per VM; absent: real memory / scan_period",
    )
    total_rate: Bytes | None = Field(
        None, description="most bytes scanned per simulated second in all; absent: no cap"
    )
    inter_vm: bool = Field(
        False,
        description="share pages between VMs; false (salting, ESXi's default since 2015) "
        "shares only within each VM",
    )


class CompressionConfig(BaseModel):
    """Memory compression: a per-VM cache of pages compressed to 2 KiB or less."""

    model_config = _MODEL

    enabled: bool = Field(True, description="compress pages before swapping them")
    cache_percent: Percent = Field(
        10.0, description="the cache's size in percent of the VM's memory (ESX default 10%)"
    )


class AllocationConfig(BaseModel):
    """Who gives memory up: shares, the idle memory tax, active-memory sampling."""

    model_config = _MODEL

    idle_tax: float = Field(
        0.75,
        ge=0.0,
        lt=1.0,
        description="tau: an idle page costs 1/(1-tau) times an active one (ESX default "
        "0.75; Waldspurger, OSDI 2002, section 5.2)",
    )
    period: Seconds = Field(
        15.0,
        description="simulated seconds between recomputations of the VMs' targets "
        "(memvirt's default: half the sampling period)",
    )
    sample_pages: int = Field(
        100, ge=1, description="pages sampled per VM per sampling period (ESX: 100)"
    )
    sample_period: Seconds = Field(
        30.0, description="simulated seconds per sampling period (ESX: 30 s)"
    )
    fast_gain: float = Field(
        0.5, gt=0.0, le=1.0, description="gain of the fast moving average of the samples"
    )
    slow_gain: float = Field(
        0.1, gt=0.0, le=1.0, description="gain of the slow moving average of the samples"
    )


class HypervisorConfig(BaseModel):
    """The hypervisor: how it maps real pages to frames and how it swaps. Present only in a
    scenario with VMs (a default one is made when the table is absent)."""

    model_config = _MODEL

    paging: Literal["nested", "shadow"] = Field(
        "nested",
        description="'nested': the MMU walks the guest's and the hypervisor's tables in two "
        "dimensions ((n+1)(m+1) - 1 references, 24 for 4+4; Bhargava et al., ASPLOS 2008); "
        "'shadow': the hypervisor keeps virtual-to-physical tables in sync by trapping guest "
        "page-table writes (VM exits)",
    )
    page_walk_caches: bool = Field(
        False,
        description="cache the upper levels of page walks, as MMUs do (Barr, Cox and Rixner, "
        "'Translation caching: skip, don't walk (the page table)', ISCA 2010)",
    )
    host_swap: SwapConfig = Field(
        default_factory=SwapConfig,
        description="the hypervisor's swap for real pages (ESX's per-VM swap files)",
    )
    swap_victim: Literal["random", "lru"] = Field(
        "random",
        description="how the hypervisor picks a VM's page to swap: 'random' as ESX does "
        "(Waldspurger, OSDI 2002), or 'lru' (the clock's second chance, an LRU approximation)",
    )
    huge_pages: bool = Field(
        False,
        description="back the VMs' real memory with huge pages (2 MiB on x86-64) of the host, "
        "as ESX does by default: a nested walk then reads one host level less per real page. "
        "Huge pages are never reclaimed (ESX breaks them into small pages under pressure; "
        "memvirt does not), so the VMs' memory must fit in physical memory",
    )
    control_period: Seconds = Field(
        1.0,
        description="simulated seconds between the hypervisor's reclamation steps (ESX's "
        "balloon driver polls its target once a second: Waldspurger, OSDI 2002, 3.2)",
    )
    timeseries_period: Seconds | None = Field(
        None,
        description="simulated seconds between the rows of timeseries.parquet (none: a row "
        "per VM at every control step); a long run keeps fewer",
    )
    states: StatesConfig = Field(
        default_factory=lambda: StatesConfig(), description="the free-memory states (ESXi)"
    )
    balloon: BalloonConfig = Field(
        default_factory=lambda: BalloonConfig(), description="ballooning"
    )
    sharing: SharingConfig = Field(
        default_factory=lambda: SharingConfig(), description="content-based page sharing"
    )
    compression: CompressionConfig = Field(
        default_factory=lambda: CompressionConfig(), description="memory compression"
    )
    allocation: AllocationConfig = Field(
        default_factory=lambda: AllocationConfig(),
        description="proportional-share allocation with the idle memory tax",
    )


# ----------------------------------------------------------------------- processes


class RegionConfig(BaseModel):
    """A further range of a process's virtual address space."""

    model_config = _MODEL

    start: Address = Field(description="first virtual address, page-aligned (bytes)")
    length: Bytes = Field(gt=0, description="bytes, a whole number of pages")
    writable: bool = Field(True, description="writes allowed; a write otherwise is a segfault")
    huge: bool = Field(
        False,
        description="map with huge pages from the huge-page pool: the host's natively, the "
        "guest's (guest.huge_pages) in a VM; start and length aligned to the huge page size",
    )


class TraceFile(BaseModel):
    """A trace file that a process replays. Written as a path string or as a table."""

    model_config = _MODEL

    path: str = Field(
        description="the trace file; a relative path is taken from the scenario file's "
        "directory. It must exist when the scenario is loaded; stored resolved (absolute)"
    )
    format: str | None = Field(
        None,
        description="'text', 'npy', 'lackey' or 'binary'; absent: recognised from the file "
        "(see docs/traces.md)",
    )
    page_numbers: bool = Field(
        False, description="the file holds page numbers rather than addresses"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: object) -> object:
        return {"path": data} if isinstance(data, str) else data

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir") or Path.cwd()
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = Path(base) / path
        path = path.resolve()
        if not path.is_file():
            raise ValueError(
                f"no such trace file: {path} (a relative path is taken from the scenario "
                f"file's directory, {Path(base).resolve()})"
            )
        return str(path)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and value not in FORMATS:
            raise ValueError(
                f"unknown trace format {value!r}: known formats are {', '.join(FORMATS)}"
            )
        return value


class ProcessConfig(BaseModel):
    """A process: its address space and the accesses it makes.

    Its address space is one read-write region of ``memory`` bytes from
    ``base``, plus any further ``regions``. It runs either a synthetic
    ``workload``, whose page p is the virtual page at ``base + p * page_size``,
    or a ``trace`` file, whose addresses are virtual addresses as recorded.
    """

    model_config = _MODEL

    name: Name = Field(
        description="the process's name, unique within its machine (the host or its VM): "
        "letters, digits, '-' and '_'",
    )
    memory: PositiveBytes | None = Field(
        None,
        description="bytes of the main read-write region, a whole number of pages; required "
        "with a workload; absent with a trace: regions covering the pages the trace touches",
    )
    base: Address = Field(
        DEFAULT_BASE, description="virtual address where the main region starts, page-aligned"
    )
    regions: tuple[RegionConfig, ...] = Field(
        (), description="further regions of the address space; no two regions may overlap"
    )
    workload: WorkloadSpec | None = Field(
        None,
        description="a synthetic workload (docs/workloads.md); page p of the workload is the "
        "virtual page at base + p * page_size",
    )
    trace: TraceFile | None = Field(
        None, description="a trace file to replay: a path, or {path, format, page_numbers}"
    )
    rate: float = Field(
        1e8,
        # below it an access, or a quantum of them, would take no finite time: a rate of
        # 2e-311 made the time of one access 1e9 / rate = inf
        ge=MIN_RATE,
        description="accesses per simulated second while every access hits in the TLB "
        "(the process's speed without stalls; at least 1e-6, an access in 11.6 days)",
    )
    start: float = Field(0.0, ge=0.0, description="simulated second at which the process starts")
    accesses: int | None = Field(
        None, ge=1, description="the process ends after this many accesses; absent: no cap"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ProcessConfig:
        if (self.workload is None) == (self.trace is None):
            _located(
                "ProcessConfig",
                [(("workload",), None, "give a workload table or a trace file (exactly one)")],
            )
        if self.workload is not None and self.memory is None:
            _located(
                "ProcessConfig",
                [(("memory",), None, "a process with a workload needs memory (its size)")],
            )
        return self

    def spans(self) -> list[tuple[int, int, Loc]]:
        """Every region as (start, end, key path); the main region first."""
        spans: list[tuple[int, int, Loc]] = []
        if self.memory is not None:
            spans.append((self.base, self.base + self.memory, ("memory",)))
        for j, reg in enumerate(self.regions):
            spans.append((reg.start, reg.start + reg.length, ("regions", j)))
        return spans


# ----------------------------------------------------------------------------- VMs


class GuestConfig(BaseModel):
    """The guest operating system of a VM: the same kernel model, on the VM's real memory."""

    model_config = _MODEL

    policy: PolicyName = Field("lru", description="the guest kernel's replacement policy")
    swap: Bytes = Field(
        0, description="bytes of the guest's swap disk, a whole number of pages; 0 means none"
    )
    levels: int = Field(
        4, ge=2, le=5, description="levels of the guest's page tables (4 on x86-64)"
    )
    huge_pages: int = Field(
        0,
        ge=0,
        description="huge pages (2 MiB on x86-64) the guest reserves from its real memory, "
        "as Linux's vm.nr_hugepages; regions marked huge in the VM's processes use them",
    )
    os_memory: Bytes = Field(
        0,
        description="real memory the guest OS holds from boot (its kernel and the page cache "
        "of its image), written once and then idle: the guest may evict these pages like any "
        "other; what they hold follows `content` and `image`",
    )
    image: Name | None = Field(
        None,
        description="the OS image the VM boots: VMs with the same image hold identical image "
        "pages (content.image_fraction of os_memory), which page sharing can merge",
    )
    content: ContentModel = Field(
        default_factory=lambda: ContentModel(),
        description="what the OS pages hold: fractions of zero, image, duplicate and unique "
        "pages, and how they compress (docs/workloads.md)",
    )


class VMConfig(BaseModel):
    """A virtual machine: its real memory, its resource controls and its guest."""

    model_config = _MODEL

    name: Name = Field(
        description="the VM's name, unique in the scenario: letters, digits, '-' and '_'"
    )
    memory: Bytes = Field(
        gt=0, description="bytes of the VM's real memory (what its guest sees as physical)"
    )
    vcpus: int = Field(1, ge=1, description="virtual CPUs: how many of its processes run at once")
    reservation: Bytes = Field(
        0, description="bytes of physical memory guaranteed to the VM (ESX reservation)"
    )
    limit: Annotated[Bytes | None, BeforeValidator(lambda v: None if v == "unlimited" else v)] = (
        Field(
            None,
            description="most bytes of physical memory the VM may hold (ESX limit); "
            "'unlimited' (the default, stored as null)",
        )
    )
    shares: int = Field(
        description="the VM's claim on memory under contention (ESX shares): 'high', 'normal' "
        "or 'low' are 20, 10 or 5 shares per MiB of its memory, or an absolute integer; "
        "default 'normal'; stored resolved as an integer",
        gt=0,
    )
    balloon: bool = Field(True, description="the guest has a balloon driver")
    guest: GuestConfig = Field(default_factory=GuestConfig, description="the guest OS")
    processes: tuple[ProcessConfig, ...] = Field((), description="processes in the guest")

    @model_validator(mode="before")
    @classmethod
    def _resolve_shares(cls, data: object) -> object:
        # a level name becomes shares per MiB of memory; an unreadable memory is reported
        # by its own field, so shares then stand in with 1
        if isinstance(data, Mapping):
            level = data.get("shares", "normal")
            if isinstance(level, str):
                if level not in SHARES_PER_MIB:
                    return data  # the integer check reports it
                try:
                    memory = parse_size(data.get("memory"))  # type: ignore[arg-type]
                except ValueError:
                    memory = MiB
                return {**data, "shares": max(1, SHARES_PER_MIB[level] * memory // MiB)}
        return data

    @field_validator("shares", mode="before")
    @classmethod
    def _share_level(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(
                f"expected 'high', 'normal', 'low' or a positive integer, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _controls(self) -> VMConfig:
        found = _Found()
        if self.reservation > self.memory:
            message = f"must be at most the VM's memory ({_size(self.memory)})"
            found.add(("reservation",), self.reservation, message)
        if self.limit is not None and self.limit < self.reservation:
            message = f"must be at least the reservation ({_size(self.reservation)})"
            found.add(("limit",), self.limit, message)
        _located("VMConfig", found)
        return self

    def real_pages(self, page_size: int) -> int:
        """Pages of the VM's real memory, for pages of ``page_size`` bytes."""
        return self.memory // page_size

    def geometry(self, host: HostConfig) -> PageGeometry:
        """The guest's page-table geometry: ``guest.levels`` levels of the host's index width
        (the leaf level's, when the host's widths differ), over the host's page size."""
        return PageGeometry.uniform(
            self.guest.levels, host.bits_per_level[-1], page_size=host.page_size
        )


# ---------------------------------------------------------------------------- run


class RunConfig(BaseModel):
    """How long the simulation runs, and its seed. With both ``seconds`` and ``accesses``
    the run ends at whichever comes first."""

    model_config = _MODEL

    seconds: float | None = Field(None, gt=0.0, description="simulated seconds to run")
    accesses: int | None = Field(None, ge=1, description="total accesses, all processes together")
    seed: int = Field(
        0, ge=0, description="seed of the run's one random generator: same seed, same results"
    )
    quantum_accesses: int = Field(
        10_000,
        ge=1,
        # a turn's accesses are generated into arrays at once: the bound keeps them in memory
        le=1 << 22,
        description="accesses a vCPU (or process) makes per turn in the event loop "
        "(at most 4,194,304)",
    )
    check: bool = Field(
        False,
        description="check after every quantum: each page touched reads what was last "
        "written to it; with VMs, every real page in use has a host copy holding its content, "
        "and every frame, swap slot, shared, compressed and balloon page is accounted for "
        "exactly once; a violation stops the run, naming the page and the step",
    )

    @model_validator(mode="after")
    def _some_end(self) -> RunConfig:
        if self.seconds is None and self.accesses is None:
            _located(
                "RunConfig",
                [((), None, "give seconds, accesses or both: when the run stops")],
            )
        return self


# --------------------------------------------------------------------------- faults

#: A fraction of operations, from 0 (never) to 1 (always).
Rate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
#: A simulated time from the start of the run, in seconds.
At = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class SwapFault(BaseModel):
    """A swap device that fails: errors at a rate, or filling up at a time."""

    model_config = _MODEL

    device: Name = Field(
        "host",
        description="\"host\": the host's swap (the hypervisor's host_swap with VMs, host.swap "
        "natively); a VM's name: that guest's own swap",
    )
    read_error_rate: Rate = Field(
        0.0,
        description="fraction of swap reads that fail: the page's only copy is lost, its "
        "process dies of a bus error (a VM: the VM is stopped)",
    )
    write_error_rate: Rate = Field(
        0.0,
        description="fraction of swap writes that fail: the page stays in memory, dirty, and "
        "another victim is tried",
    )
    full_at: At | None = Field(
        None,
        description="simulated second at which the device fills up: its free slots are "
        "taken by something else and never given back",
    )


class VMCrash(BaseModel):
    """A VM that crashes: the hypervisor stops it and frees its memory."""

    model_config = _MODEL

    vm: Name = Field(description="the VM that crashes")
    at: At = Field(description="simulated second of the crash")


class MemoryLoss(BaseModel):
    """The host loses physical memory (a failed memory module, memory taken offline)."""

    model_config = _MODEL

    at: At = Field(description="simulated second at which the memory is lost")
    amount: PositiveBytes = Field(
        description="bytes lost, a whole number of pages; the pages in them are evicted "
        "first, and if that cannot be done VMs (natively, processes) are stopped"
    )


class FaultsConfig(BaseModel):
    """Faults injected into the run (docs/reliability.md): none by default."""

    model_config = _MODEL

    swap: tuple[SwapFault, ...] = Field((), description="failing swap devices ([[faults.swap]])")
    vm_crash: tuple[VMCrash, ...] = Field((), description="VMs that crash ([[faults.vm_crash]])")
    memory_loss: tuple[MemoryLoss, ...] = Field(
        (), description="physical memory the host loses ([[faults.memory_loss]])"
    )

    @property
    def any(self) -> bool:
        """True when some fault is injected."""
        return bool(self.swap or self.vm_crash or self.memory_loss)


# ------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class _Origin:
    """Where a scenario came from: enough to load it again with other overrides."""

    source: str
    base_dir: Path
    raw: dict[str, Any]
    text: str | None
    overrides: tuple[str, ...]


class Scenario(BaseModel):
    """A whole machine and what runs on it, validated. Build one with :func:`load_scenario`
    or :func:`scenario_from_dict`."""

    model_config = _MODEL

    host: HostConfig = Field(description="the machine: physical memory, MMU, native kernel")
    cost: CostModel = Field(description="simulated time of each event (ns)")
    hypervisor: HypervisorConfig | None = Field(
        None, description="the hypervisor; only with VMs (a default one when absent)"
    )
    vms: tuple[VMConfig, ...] = Field((), description="virtual machines; none: a native machine")
    processes: tuple[ProcessConfig, ...] = Field(
        (), description="processes of a native machine (with VMs, processes go inside them)"
    )
    run: RunConfig = Field(description="when the run stops, and its seed")
    faults: FaultsConfig = Field(
        default_factory=FaultsConfig, description="faults injected into the run"
    )

    _origin: _Origin | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: object) -> object:
        # fill in the defaults that depend on other tables: a hypervisor when there are VMs,
        # and the swap latencies of the scenario's swap device
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        vms = data.get("vms")
        if vms and "hypervisor" not in data:
            data["hypervisor"] = {}
        swap: object = None
        if vms:
            hyp = data.get("hypervisor")
            swap = hyp.get("host_swap") if isinstance(hyp, Mapping) else None
        else:
            host = data.get("host")
            swap = host.get("swap") if isinstance(host, Mapping) else None
        device = swap.get("device", "ssd") if isinstance(swap, Mapping) else "ssd"
        cost = data.get("cost", {})
        if isinstance(cost, Mapping):
            # an unknown device is reported by its own field; ssd stands in meanwhile
            read, write = SWAP_LATENCY_NS.get(str(device), SWAP_LATENCY_NS["ssd"])
            data["cost"] = {"swap_read_ns": read, "swap_write_ns": write, **cost}
        return data

    @model_validator(mode="after")
    def _whole(self) -> Scenario:
        _located("Scenario", _cross_check(self))
        return self

    # ---- derived

    @property
    def is_native(self) -> bool:
        """True for a machine without VMs (one-level mapping)."""
        return not self.vms

    @property
    def overcommit_ratio(self) -> float:
        """The VMs' real memories added up, over the host's physical memory (0 natively)."""
        return sum(vm.memory for vm in self.vms) / self.host.memory

    @property
    def source(self) -> str:
        """The file (or ``<dict>``) the scenario was read from."""
        return self._origin.source if self._origin else "<dict>"

    def vm(self, name: str) -> VMConfig:
        """The VM called ``name``."""
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(f"no VM named {name!r}: the VMs are {', '.join(v.name for v in self.vms)}")

    # ---- records

    def to_dict(self) -> dict[str, Any]:
        """Every setting, defaults and derived defaults filled in, as JSON-able values:
        sizes in bytes, shares as integers, trace paths absolute."""
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """A stable hex digest (SHA-256) of :meth:`to_dict`: equal for equal settings,
        however they were written."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def with_overrides(self, overrides: Sequence[str]) -> Scenario:
        """The scenario with ``KEY=VALUE`` settings applied to its tables as given (before
        derived defaults), validated again."""
        if self._origin is None:
            return _validate(self.to_dict(), "<dict>", Path.cwd(), None, overrides, ())
        o = self._origin
        return _validate(o.raw, o.source, o.base_dir, o.text, overrides, o.overrides)


def _cross_check(s: Scenario) -> list[tuple[Loc, object, str]]:
    """The rules that span tables: whole pages, address spaces, names, native or not."""
    found = _Found()
    host = s.host
    ps = host.page_size

    def whole(loc: Loc, value: int | None) -> None:
        if value is not None and value % ps:
            found.add(loc, value, f"must be a whole number of {_size(ps)} pages")

    def bounded(loc: Loc, value: int) -> None:
        # a memory or swap device is simulated page by page: its size bounds the run's arrays
        whole(loc, value)
        if value // ps > MAX_PAGES:
            found.add(
                loc,
                value,
                f"at most {MAX_PAGES} pages ({_size(MAX_PAGES * ps)} of {_size(ps)} pages): "
                f"memvirt keeps the state of every page (and of every swap slot in use) in memory",
            )

    bounded(("host", "memory"), host.memory)
    bounded(("host", "swap", "size"), host.swap.size)
    _check_faults(found, s, whole)
    geometry = host.geometry()
    need = host.huge_pages * geometry.huge_page_size
    if need > host.memory:
        found.add(
            ("host", "huge_pages"),
            host.huge_pages,
            f"{host.huge_pages} huge pages of {_size(geometry.huge_page_size)} need "
            f"{_size(need)}, more than host.memory ({_size(host.memory)})",
        )
    if not s.vms:
        if s.hypervisor is not None:
            message = "a [hypervisor] table needs [[vms]]; a native scenario has no hypervisor"
            found.add(("hypervisor",), None, message)
        if not s.processes:
            found.add(("processes",), None, "a native scenario (no [[vms]]) needs [[processes]]")
        _check_processes(found, ("processes",), s.processes, geometry, in_vm=False)
        return found

    assert s.hypervisor is not None  # made by Scenario._defaults
    bounded(("hypervisor", "host_swap", "size"), s.hypervisor.host_swap.size)
    if s.processes:
        message = "with VMs, processes run inside them ([[vms.processes]]), not at top level"
        found.add(("processes",), [p.name for p in s.processes], message)
    if host.swap.size:
        message = "with VMs the hypervisor swaps to hypervisor.host_swap; host.swap must be empty"
        found.add(("host", "swap", "size"), host.swap.size, message)
    if not host.virtual_memory:
        found.add(("host", "virtual_memory"), False, "a machine without virtual memory runs no VMs")
    if not any(vm.processes for vm in s.vms):
        found.add(("vms",), None, "no VM has a process to run ([[vms.processes]])")
    seen: dict[str, int] = {}
    for i, vm in enumerate(s.vms):
        if vm.name in seen:
            found.add(("vms", i, "name"), vm.name, f"is already the name of vms.{seen[vm.name]}")
        seen.setdefault(vm.name, i)
        bounded(("vms", i, "memory"), vm.memory)
        for key in ("reservation", "limit"):
            whole(("vms", i, key), getattr(vm, key))
        bounded(("vms", i, "guest", "swap"), vm.guest.swap)
        _check_processes(
            found, ("vms", i, "processes"), vm.processes, vm.geometry(host), in_vm=True,
            guest_huge_pages=vm.guest.huge_pages,
        )  # fmt: skip
        whole(("vms", i, "guest", "os_memory"), vm.guest.os_memory)
        hs = vm.geometry(host).huge_page_size
        if vm.guest.os_memory + vm.guest.huge_pages * hs >= vm.memory:
            found.add(
                ("vms", i, "guest", "os_memory"),
                vm.guest.os_memory,
                f"the guest OS's memory and its huge pages must leave room in the VM's "
                f"memory ({_size(vm.memory)}) for its processes",
            )
        if vm.guest.huge_pages * hs > vm.memory:
            found.add(
                ("vms", i, "guest", "huge_pages"),
                vm.guest.huge_pages,
                f"{vm.guest.huge_pages} huge pages of {_size(hs)} need "
                f"{_size(vm.guest.huge_pages * hs)}, more than the VM's memory "
                f"({_size(vm.memory)})",
            )
    if s.hypervisor.huge_pages:
        span = geometry.huge_page_size
        for i, vm in enumerate(s.vms):
            if vm.memory % span:
                found.add(("vms", i, "memory"), vm.memory,
                          f"must be a whole number of {_size(span)} host huge pages "
                          "(hypervisor.huge_pages)")  # fmt: skip
        backed = sum(-(-vm.memory // span) for vm in s.vms) * span
        if backed + span > host.memory:
            found.add(
                ("hypervisor", "huge_pages"),
                True,
                f"the VMs' memory ({_size(backed)} in huge pages) and the host's own tables "
                f"need more than host.memory ({_size(host.memory)}): huge pages are not "
                "reclaimed, so VMs backed by them cannot be overcommitted",
            )
    reserved = sum(vm.reservation for vm in s.vms)
    if reserved > host.memory:
        found.add(
            ("vms",),
            None,
            f"the VMs' reservations add up to {_size(reserved)}, more than host.memory "
            f"({_size(host.memory)}): they could not all be honoured",
        )
    return found


def _check_faults(found: _Found, s: Scenario, whole: Any) -> None:
    """Faults name devices and VMs that exist, and lose less memory than the host has."""
    names = [vm.name for vm in s.vms]
    devices = ["host", *names]
    seen: dict[str, int] = {}
    for i, fault in enumerate(s.faults.swap):
        loc: Loc = ("faults", "swap", i, "device")
        if fault.device not in devices:
            found.add(loc, fault.device, f"is not a swap device: one of {', '.join(devices)}")
        elif fault.device in seen:
            found.add(loc, fault.device, f"is the device of faults.swap.{seen[fault.device]} too")
        seen.setdefault(fault.device, i)
    for i, crash in enumerate(s.faults.vm_crash):
        if not names:
            found.add(("faults", "vm_crash", i), None, "a native scenario has no VM to crash")
        elif crash.vm not in names:
            found.add(("faults", "vm_crash", i, "vm"), crash.vm,
                      f"is not a VM of the scenario: one of {', '.join(names)}")  # fmt: skip
    lost = 0
    if s.faults.memory_loss and not s.host.virtual_memory:
        message = "a machine without virtual memory cannot give memory up page by page"
        found.add(("faults", "memory_loss"), None, message)
    for i, loss in enumerate(s.faults.memory_loss):
        whole(("faults", "memory_loss", i, "amount"), loss.amount)
        lost += loss.amount
        if lost >= s.host.memory:
            found.add(
                ("faults", "memory_loss", i, "amount"),
                loss.amount,
                f"the losses add up to {_size(lost)}: less than host.memory "
                f"({_size(s.host.memory)}) must be lost",
            )


def _check_processes(
    found: _Found,
    where: Loc,
    processes: Sequence[ProcessConfig],
    geometry: PageGeometry,
    *,
    in_vm: bool,
    guest_huge_pages: int = 0,
) -> None:
    """Names unique on their machine; regions whole pages, apart, inside the address space;
    a workload's pages inside the regions."""
    ps = geometry.page_size
    top = 1 << geometry.va_bits
    pages = f"a whole number of {_size(ps)} pages"
    seen: dict[str, int] = {}
    for i, proc in enumerate(processes):
        loc = (*where, i)
        if proc.name in seen:
            found.add(
                (*loc, "name"),
                proc.name,
                f"is already the name of {_dotted(where)}.{seen[proc.name]}",
            )
        seen.setdefault(proc.name, i)
        if proc.base % ps:
            found.add((*loc, "base"), hex(proc.base), f"must be aligned to {_size(ps)}")
        if proc.memory is not None and proc.memory % ps:
            found.add((*loc, "memory"), proc.memory, f"must be {pages}")
        for j, reg in enumerate(proc.regions):
            rloc = (*loc, "regions", j)
            if reg.start % ps:
                found.add((*rloc, "start"), hex(reg.start), f"must be aligned to {_size(ps)}")
            if reg.length % ps:
                found.add((*rloc, "length"), reg.length, f"must be {pages}")
            hs = geometry.huge_page_size
            if reg.huge and in_vm and guest_huge_pages == 0:
                found.add((*rloc, "huge"), True, "a huge region in a VM needs guest.huge_pages > 0")
            elif reg.huge and (reg.start % hs or reg.length % hs):
                found.add((*rloc, "huge"), True, f"a huge region is aligned to {_size(hs)}")
        spans = sorted(proc.spans())
        for start, end, key in spans:
            if end > top:
                found.add(
                    (*loc, *key),
                    _span(start, end),
                    f"ends at {end:#x}, beyond the {geometry.va_bits}-bit virtual address space "
                    f"(which ends at {top:#x}: {geometry.levels} levels of page table)",
                )
        for (start0, end0, key0), (start1, end1, key1) in itertools.pairwise(spans):
            if start1 < end0:
                found.add(
                    (*loc, *key1),
                    _span(start1, end1),
                    f"overlaps {_dotted((*loc, *key0))} ({_span(start0, end0)})",
                )
        if proc.workload is not None and proc.memory is not None:
            lo, hi = page_range(proc.workload)
            first, last = proc.base + lo * ps, proc.base + hi * ps
            if not _covered(first, last, [(a, b) for a, b, _ in spans]):
                found.add(
                    (*loc, "workload"),
                    None,
                    f"its pages {lo}..{hi - 1} reach {first:#x}..{last - 1:#x}, outside the "
                    f"process's regions (memory: {_size(proc.memory)} from "
                    f"{proc.base:#x}); page p of a workload is at base + p * page_size",
                )


def _size(nbytes: int) -> str:
    """``nbytes`` as a short size when that is exact ("64 MiB"), else in bytes."""
    short = format_size(nbytes)
    return short if parse_size(short.replace(" ", "")) == nbytes else f"{nbytes} bytes"


def _span(start: int, end: int) -> str:
    return f"{start:#x} + {_size(end - start)}"


def _covered(first: int, last: int, spans: list[tuple[int, int]]) -> bool:
    """True when [first, last) lies inside the union of the spans."""
    reach = first
    for start, end in sorted(spans):
        if start <= reach < end:
            reach = end
        if reach >= last:
            return True
    return reach >= last


# ---------------------------------------------------------------------- overrides


def _strip_type(tp: Any) -> Any:
    """``tp`` without Annotated and Optional wrappers."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _child_type(tp: Any, key: str | int, data: object) -> Any:
    """The type of ``key`` inside a value of type ``tp`` (whose data is ``data``), or None
    when ``tp`` has no such key."""
    tp = _strip_type(tp)
    origin = get_origin(tp)
    if origin in (tuple, list):
        return get_args(tp)[0] if isinstance(key, int) else None
    if origin in (Union, types.UnionType):
        # a discriminated union (a workload): the member named by the data's kind
        kind = data.get("kind") if isinstance(data, Mapping) else None
        for member in get_args(tp):
            field = getattr(member, "model_fields", {}).get("kind")
            if field is not None and field.default == kind:
                return _child_type(member, key, data)
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(key, str):
        field = tp.model_fields.get(key)
        return None if field is None else field.annotation
    return None


def _model_keys(tp: Any, data: object) -> list[str]:
    """The keys a table of type ``tp`` may hold."""
    tp = _strip_type(tp)
    if get_origin(tp) in (Union, types.UnionType):
        kind = data.get("kind") if isinstance(data, Mapping) else None
        for member in get_args(tp):
            field = getattr(member, "model_fields", {}).get("kind")
            if field is not None and field.default == kind:
                return list(member.model_fields)
        return []
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _parse_value(text: str) -> object:
    """A TOML value if ``text`` is one (``true``, ``3``, ``"x"``, ``[1, 2]``), else the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_override(data: dict[str, Any], setting: str, source: str) -> Loc:
    """Set one ``KEY=VALUE`` in ``data``; return the key path it set, list items by index."""

    def fail(message: str) -> ScenarioError:
        return ScenarioError(f"{source}: --set {_printable(setting)}: {message}")

    key, sep, text = setting.partition("=")
    key = key.strip()
    if not sep or not key:
        raise fail("expected KEY=VALUE, such as host.memory=8GiB or vms.web.memory=2GiB")
    parts = key.split(".")
    if any(not p for p in parts):
        raise fail(f"empty key in {key!r}")
    value = _parse_value(text.strip())
    node: Any = data
    tp: Any = Scenario
    path: list[str | int] = []
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        here = _dotted(path) or "the scenario"
        if isinstance(node, list):
            if part.lstrip("-").isdigit():
                index = int(part)
                if not 0 <= index < len(node):
                    raise fail(f"{here} has {len(node)} items, no item {index}")
            else:
                names = [item.get("name") for item in node if isinstance(item, dict)]
                if part not in names:
                    known = ", ".join(str(x) for x in names) or "none"
                    raise fail(f"no item named {part!r} in {here} (names: {known})")
                index = names.index(part)
            path.append(index)
            tp = _child_type(tp, index, None)
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise fail(f"{here} is {node!r}, not a table: it has no key {part!r}")
        child_tp = _child_type(tp, part, node)
        if part not in node and child_tp is None:
            known = ", ".join(_model_keys(tp, node)) or "none"
            raise fail(f"{here} has no key {part!r} (its keys are: {known})")
        path.append(part)
        if last:
            node[part] = value
        else:
            if part not in node:
                inner = get_origin(_strip_type(child_tp))
                if inner in (tuple, list):
                    raise fail(f"{_dotted(path)} is a list with no items in the file")
                node[part] = {}
            node = node[part]
        tp = child_tp
    return tuple(path)


# ------------------------------------------------------------------------ loading


def _dotted(loc: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in loc)


def _key_path(loc: Sequence[str | int]) -> str:
    """A key path as an error shows it: like :func:`_dotted`, each key quoted when it is
    not a bare TOML key."""
    return ".".join(_key_text(part) for part in loc)


def _printable(text: str) -> str:
    """``text`` with the characters a terminal would not show (an escape sequence, a line
    break) written as Python escapes, so that input quoted in an error stays on its line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _key_text(part: str | int) -> str:
    """A key as TOML writes it: bare when it can be, else quoted, so that an error's key path
    stays readable (and unambiguous) whatever characters a key holds."""
    if isinstance(part, int) or re.fullmatch(r"[A-Za-z0-9_-]+", part):
        return str(part)
    # escaped as TOML escapes them: quotes, backslashes and what a terminal would not show
    shown: list[str] = []
    for ch in part:
        if ch in '"\\':
            shown.append("\\" + ch)
        elif ch.isprintable():
            shown.append(ch)
        else:
            shown.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return '"' + "".join(shown) + '"'


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(
    r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _key_parts(text: str) -> list[str]:
    return [p.strip().strip("\"'") for p in text.split(".")]


def _key_lines(text: str) -> dict[Loc, int]:
    """Line numbers of the tables and keys of a TOML text, by key path (array-of-tables items
    by index). A plain scan: keys inside inline tables and multi-line values are not found,
    and their parent's line stands in."""
    lines: dict[Loc, int] = {}
    counts: dict[Loc, int] = {}
    current: Loc = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            array = header.group(1) == "[["
            parts = _key_parts(header.group(2))
            path: Loc = ()
            for n, part in enumerate(parts):
                path = (*path, part)
                if n == len(parts) - 1 and array:
                    lines.setdefault(path, number)  # the list as a whole: its first item
                    counts[path] = counts.get(path, 0) + 1
                    path = (*path, counts[path] - 1)
                elif path in counts:
                    path = (*path, counts[path] - 1)
            lines.setdefault(path, number)
            current = path
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*current, *_key_parts(key.group(1))), number)
    return lines


def _clean_loc(loc: Sequence[str | int], data: object) -> Loc:
    """A pydantic error location as a key path: union tags (a workload's kind) left out."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping):
            if part not in node and node.get("kind") == part:
                continue  # the tag pydantic adds inside a discriminated union
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
        out.append(part)
    return tuple(out)


def _value_at(data: object, loc: Loc) -> object:
    """The value at key path ``loc`` in ``data``, or None."""
    for part in loc:
        if isinstance(data, Mapping):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problems(
    err: ValidationError,
    data: dict[str, Any],
    source: str,
    text: str | None,
    overridden: dict[Loc, str],
) -> ScenarioError:
    """The ScenarioError that reports every error of ``err``, one line each."""
    lines_of = _key_lines(text) if text is not None else {}
    problems: list[Problem] = []
    rendered: list[str] = []
    errors = err.errors(include_url=False)
    for e in errors:
        if e["type"] == "too_short" and any(
            len(other["loc"]) > len(e["loc"]) and other["loc"][: len(e["loc"])] == e["loc"]
            for other in errors
        ):
            continue  # a list whose items all failed: the items' errors say why
        loc = _clean_loc(e["loc"], data)
        path = _key_path(loc) or "(the scenario)"
        message = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        # pydantic quotes some inputs as they are: a control character (an escape sequence,
        # a line break) from the file must not reach the terminal raw
        message = _printable(message)
        # show the value as written when it is a plain one; a check may describe it better
        written = _value_at(data, loc)
        if isinstance(written, str | int | float | bool) and e["type"] != "missing":
            value: str | None = _show(written)
        else:
            given = e["type"] != "missing" and e["input"] is not None
            value = _show(e["input"]) if given else None
        if e["type"] == "missing":
            message = "required, but not given"
        elif e["type"] == "extra_forbidden":
            parent: Any = Scenario
            node: Any = data
            for part in loc[:-1]:
                parent = _child_type(parent, part, node)
                if isinstance(node, Mapping):
                    node = node.get(part)
                elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                    node = node[part]
            known = ", ".join(_model_keys(parent, node))
            message = f"unknown key; expected one of: {known}"
        where = source
        line = None
        setting = next(
            (s for p, s in overridden.items() if loc[: len(p)] == p),
            None,
        )
        if setting is None:
            for n in range(len(loc), -1, -1):
                if loc[:n] in lines_of:
                    line = lines_of[loc[:n]]
                    where = f"{source}:{line}"
                    break
        shown = f"{path} = {value}" if value is not None else path
        if setting is not None:
            shown += f" (from --set {_printable(setting)})"
        problems.append(Problem(path, message, value, line))
        rendered.append(f"{where}: {shown}: {message}")
    # in file order; problems without a line (from overrides, or from dicts) after them
    order = sorted(
        range(len(problems)), key=lambda k: (problems[k].line is None, problems[k].line or 0)
    )
    return ScenarioError("\n".join(rendered[k] for k in order), [problems[k] for k in order])


def _validate(
    raw: Mapping[str, Any],
    source: str,
    base_dir: Path,
    text: str | None,
    overrides: Sequence[str],
    earlier: Sequence[str] = (),
) -> Scenario:
    data = copy.deepcopy(dict(raw))
    overridden: dict[Loc, str] = {}
    settings = (*earlier, *overrides)
    for setting in settings:
        overridden[_apply_override(data, setting, source)] = setting
    try:
        scenario = Scenario.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as err:
        raise _problems(err, data, source, text, overridden) from None
    scenario._origin = _Origin(source, base_dir, copy.deepcopy(dict(raw)), text, settings)
    return scenario


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Read, override and validate the scenario file at ``path``.

    ``overrides`` are ``KEY=VALUE`` settings (``host.memory=8GiB``,
    ``vms.0.memory=2GiB``, ``vms.web.memory=2GiB``, ``run.seed=3``) applied
    before validation. Raise :class:`ScenarioError` for a file that cannot be
    read, a TOML syntax error, a bad override, or any invalid setting.
    """
    path = Path(path)
    source = str(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as err:
        raise ScenarioError(f"{source}: cannot read the scenario: {err.strerror}") from None
    try:
        text = raw_bytes.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as err:
        raise ScenarioError(
            f"{source}: byte {err.start}: not UTF-8 text; a scenario is a TOML file"
        ) from None
    except tomllib.TOMLDecodeError as err:
        found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", str(err))
        if found:
            message = str(err)[: found.start()]
            raise ScenarioError(f"{source}:{found.group(1)}:{found.group(2)}: {message}") from None
        # tomllib says "(at end of document)": give the end's line and column like the others
        message = re.sub(r"\s*\(at end of document\)$", "", str(err))
        line = text.count("\n") + 1
        column = len(text) - (text.rfind("\n") + 1) + 1
        raise ScenarioError(
            f"{source}:{line}:{column}: {message} (at the end of the file)"
        ) from None
    return _validate(data, source, path.parent.resolve(), text, overrides)


def scenario_from_dict(
    data: Mapping[str, Any],
    source: str = "<dict>",
    overrides: Sequence[str] = (),
    *,
    base_dir: str | Path | None = None,
) -> Scenario:
    """Validate a scenario given as tables (dicts), as a TOML file would hold them.

    Relative trace paths are taken from ``base_dir`` (default: the directory
    of ``source`` when it names a file, else the current directory). Raise
    :class:`ScenarioError` as :func:`load_scenario` does.
    """
    if base_dir is None:
        base_dir = Path(source).parent if Path(source).is_file() else Path.cwd()
    return _validate(data, source, Path(base_dir).resolve(), None, overrides)


__all__ = [
    "DEFAULT_BASE",
    "MAX_PAGES",
    "SHARES_PER_MIB",
    "CostModel",
    "GuestConfig",
    "HostConfig",
    "HypervisorConfig",
    "Problem",
    "ProcessConfig",
    "RegionConfig",
    "RunConfig",
    "Scenario",
    "ScenarioError",
    "SwapConfig",
    "TLBLevelConfig",
    "TLBSettings",
    "TraceFile",
    "VMConfig",
    "load_scenario",
    "scenario_from_dict",
]
