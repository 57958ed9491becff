"""The operating-system model: processes, page tables, faults, swap and replacement.

A :class:`Kernel` runs processes on *a memory*: a pool of frames. Each
process has its own virtual address space, made of regions, and its own
radix page table whose table pages are frames of that same memory. An
access goes through the TLB, then the page walk, then, when the page is not
present, a page fault: a first touch is a *minor* fault that zero-fills a
frame; a page evicted to swap comes back by a *major* fault. When no frame
is free the replacement policy picks a victim (from any process under global
replacement, from the faulting process under local replacement).

Rare events are the kernel's, in plain Python: an access outside every
region, or a write to a read-only one, is a segmentation fault that kills
the process; when neither a frame nor a swap slot can be had, the OOM
killer ends the process with the largest footprint, as Linux's
``oom_badness`` counts it (resident pages + swapped pages + page-table
pages, mm/oom_kill.c), and the run goes on.

With ``virtual_memory=False`` the kernel is the machine before virtual
memory: a process is loaded whole into one contiguous block of free frames
(first fit), and one that does not fit is refused.

Under a hypervisor the same kernel runs on a VM's real memory: its "frames"
are then real pages, and the hypervisor adds the second mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from memvirt.dataplane import native, reclaim
from memvirt.dataplane.layout import (
    BUS_SWAP_READ,
    C_ACCESSES,
    C_CLEAN_DROPS,
    C_COMPRESSIONS,
    C_DECOMPRESSIONS,
    C_DIRTY_UPDATES,
    C_EVICTIONS,
    C_MAJOR,
    C_MINOR,
    C_READS,
    C_SWAP_READ_ERRORS,
    C_SWAP_WRITE_ERRORS,
    C_TABLE_ALLOCS,
    C_TLB1_HITS,
    C_TLB1_MISSES,
    C_TLB2_HITS,
    C_TLB2_MISSES,
    C_WALK_REFS,
    C_WALKS,
    C_WRITEBACKS,
    C_WRITES,
    C_ZERO_DROPS,
    F_FLAGS,
    F_NEXT,
    F_OWNER,
    F_RMAP,
    F_SLOT,
    FR_HUGE,
    FR_PINNED,
    FR_TABLE,
    G_TOKEN,
    G_VPN,
    K_FLUSH_ON_SWITCH,
    K_HAS_HUGE,
    K_HUGE_SHIFT,
    K_LEVELS,
    K_LOCAL,
    K_OFFSET_BITS,
    K_POLICY,
    K_RING,
    K_SWAP_READ_FAIL,
    K_SWAP_SLOTS,
    K_SWAP_WRITE_FAIL,
    K_TLB1_SETS,
    K_TLB1_WAYS,
    K_TLB2_SETS,
    K_TLB2_WAYS,
    K_TLB_LEVELS,
    L_HEAD,
    L_SIZE,
    MAX_TABLE_PAGES,
    MEMO_COLS,
    MEMO_SLOTS,
    N_CFG,
    N_LIST,
    N_PCTR,
    N_PROC,
    N_RING,
    N_STATE,
    P_ALIVE,
    P_QUOTA,
    P_REG_COUNT,
    P_REG_START,
    P_RESIDENT,
    P_ROOT,
    P_SWAPPED,
    P_TABLES,
    PTE_ACCESSED,
    PTE_DIRTY,
    PTE_HUGE,
    PTE_PRESENT,
    PTE_SHIFT,
    PTE_SWAPPED,
    PTE_USER,
    PTE_WRITABLE,
    REG_HUGE,
    REG_WRITABLE,
    RMAP_SHIFT,
    S_FAULT_KIND,
    S_FAULT_RNG,
    S_FAULT_VPN,
    S_FREE_HEAD,
    S_FREE_TOP,
    S_HUGE_TOP,
    S_LAST_ASID,
    S_OOM_KILLS,
    S_REC_N,
    S_RING_N,
    S_RNG,
    S_SWAP_NEXT,
    S_SWAP_TOP,
    S_TLB_FLUSHES,
    S_TOKEN,
    SEGV_READ_ONLY,
    STOP_DONE,
    STOP_NEED_RING,
    STOP_NEED_SLOTS,
    STOP_NEED_TABLES,
    STOP_OOM,
    STOP_RECORD_FULL,
    STOP_SEGFAULT,
    STOP_SIGBUS,
    TLB_ASID_SHIFT,
    TLB_HUGE_TAG,
    TV_DIRTY,
    TV_SHIFT,
    TV_WRITABLE,
    seed_state,
)
from memvirt.dataplane.state import Machine
from memvirt.memory.frames import FramePool
from memvirt.memory.swap import SwapDevice
from memvirt.mmu.tlb import TLBArrays, TLBConfig
from memvirt.policies import get_policy
from memvirt.units import PageGeometry, format_size

#: Names of the per-process counters, in the order the data plane keeps them.
COUNTER_NAMES: dict[str, int] = {
    "accesses": C_ACCESSES,
    "reads": C_READS,
    "writes": C_WRITES,
    "tlb_l1_hits": C_TLB1_HITS,
    "tlb_l1_misses": C_TLB1_MISSES,
    "tlb_l2_hits": C_TLB2_HITS,
    "tlb_l2_misses": C_TLB2_MISSES,
    "walks": C_WALKS,
    "walk_memory_references": C_WALK_REFS,
    "minor_faults": C_MINOR,
    "major_faults": C_MAJOR,
    "evictions": C_EVICTIONS,
    "writebacks": C_WRITEBACKS,
    "clean_drops": C_CLEAN_DROPS,
    "zero_drops": C_ZERO_DROPS,
    "table_pages_allocated": C_TABLE_ALLOCS,
    "dirty_bit_updates": C_DIRTY_UPDATES,
    "compressions": C_COMPRESSIONS,
    "decompressions": C_DECOMPRESSIONS,
    "swap_read_errors": C_SWAP_READ_ERRORS,
    "swap_write_errors": C_SWAP_WRITE_ERRORS,
}

#: The owner of a swap slot taken by something other than the simulated pages (a swap
#: device that filled up: :meth:`Kernel.fill_swap`).
SWAP_FILLED = -2


def error_threshold(rate: float) -> int:
    """The data plane's threshold for an error ``rate`` (a fraction of operations): an
    operation fails when 63 random bits fall below it."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"an error rate is a fraction from 0 to 1, got {rate}")
    return min(int(rate * 2.0**63), (1 << 63) - 1)


class AdmissionError(ValueError):
    """A process that cannot be started (it does not fit, or no slot is left)."""


class KernelError(ValueError):
    """A kernel configuration or request that cannot be honoured."""


@dataclass(frozen=True)
class Region:
    """A range of a process's virtual address space: ``length`` bytes from ``start``.

    A region is readable; ``writable`` allows writes. A ``huge`` region is
    mapped with huge pages (2 MiB on x86-64) from the huge-page pool.
    """

    start: int
    length: int
    writable: bool = True
    huge: bool = False
    name: str = ""


@dataclass(frozen=True)
class KernelConfig:
    """How the kernel and its memory are built.

    ``frames`` is the size of the memory in pages, page-table pages
    included. ``swap_slots`` is the swap device's size in pages.
    ``scope`` is "global" or "local" replacement. ``tlb`` None means no TLB:
    every access walks the page table.
    """

    frames: int
    geometry: PageGeometry = field(default_factory=PageGeometry)
    policy: str = "lru"
    scope: str = "global"
    tlb: TLBConfig | None = field(default_factory=TLBConfig)
    swap_slots: int = 0
    swap_kind: str = "ssd"
    huge_pages: int = 0
    seed: int = 0
    virtual_memory: bool = True
    max_processes: int = 64
    #: pages the kernel's tables will map, when known beforehand (a hypervisor maps its VMs'
    #: real pages): the first table pool is sized for them, not grown by doublings to 2x
    mapped_pages: int = 0

    def __post_init__(self) -> None:
        if self.frames <= 0:
            raise KernelError(f"memory needs at least one frame, got {self.frames}")
        get_policy(self.policy)
        if self.scope not in ("global", "local"):
            raise KernelError(f"replacement scope is 'global' or 'local', got {self.scope!r}")
        if self.max_processes <= 0:
            raise KernelError(f"max_processes must be positive, got {self.max_processes}")


@dataclass(frozen=True)
class WalkStep:
    """One level of a page walk: the table page read, the index and the entry found."""

    level: int
    table_frame: int
    index: int
    entry: int
    page_size: int = 4096

    @property
    def entry_address(self) -> int:
        """Physical address of the entry: table frame, then 8 bytes per entry."""
        return -1 if self.table_frame < 0 else self.table_frame * self.page_size + self.index * 8


@dataclass(frozen=True)
class Walk:
    """A page walk: the levels read, in order, and where it ended."""

    virtual_address: int
    steps: tuple[WalkStep, ...]
    pfn: int | None
    page_size: int

    @property
    def memory_references(self) -> int:
        """Entries read: one memory reference per level walked."""
        return len(self.steps)

    @property
    def physical_address(self) -> int | None:
        """The physical address the walk translated to, or None if the page is absent."""
        if self.pfn is None:
            return None
        return self.pfn * self.base_page_size + self.virtual_address % self.base_page_size

    base_page_size: int = 4096


@dataclass(frozen=True)
class TLBEntry:
    """One cached translation: ``page`` is a vpn, or a huge-page number when ``huge``."""

    level: int
    asid: int
    page: int
    pfn: int
    huge: bool
    writable: bool
    dirty: bool


@dataclass(frozen=True)
class KillRecord:
    """A process that the kernel ended, and why."""

    pid: int
    name: str
    reason: str
    virtual_address: int | None = None


@dataclass
class ProcessInfo:
    """Control-plane facts about a process."""

    pid: int
    name: str
    regions: tuple[Region, ...]
    quota: int | None = None
    block: tuple[int, int] | None = None  # (first frame, frames) without virtual memory


PTE_FLAG_NAMES = (
    (PTE_PRESENT, "present"),
    (PTE_WRITABLE, "writable"),
    (PTE_USER, "user"),
    (PTE_ACCESSED, "accessed"),
    (PTE_DIRTY, "dirty"),
    (PTE_HUGE, "huge"),
    (PTE_SWAPPED, "swapped"),
)


def describe_pte(entry: int) -> str:
    """A PTE in words: ``"frame 12 present writable user"`` or ``"swap slot 3"``."""
    names = [name for bit, name in PTE_FLAG_NAMES if entry & bit]
    if entry & PTE_SWAPPED:
        return f"swap slot {entry >> PTE_SHIFT}"
    if not entry & PTE_PRESENT:
        return "not present"
    return f"frame {entry >> PTE_SHIFT} " + " ".join(names)


class Kernel:
    """An operating system on one memory: processes, page tables, TLB, swap, replacement."""

    def __init__(self, config: KernelConfig) -> None:
        self.config = config
        geo = config.geometry
        self.geometry = geo
        self.policy = get_policy(config.policy)
        huge_shift = geo.shift(geo.levels - 2)
        self.frames = FramePool(
            config.frames, config.huge_pages, 1 << huge_shift, self.policy.needs_future
        )
        self.swap = SwapDevice(config.swap_slots, config.swap_kind)
        self.tlb = TLBArrays(config.tlb)

        cfg = np.zeros(N_CFG, dtype=np.int64)
        cfg[K_LEVELS] = geo.levels
        cfg[K_OFFSET_BITS] = geo.offset_bits
        cfg[K_POLICY] = self.policy.code
        cfg[K_LOCAL] = 1 if config.scope == "local" else 0
        cfg[K_HUGE_SHIFT] = huge_shift
        cfg[K_HAS_HUGE] = 1 if config.huge_pages else 0
        cfg[K_SWAP_SLOTS] = config.swap_slots
        if config.tlb is not None:
            lv = config.tlb.levels
            cfg[K_TLB_LEVELS] = len(lv)
            cfg[K_TLB1_SETS], cfg[K_TLB1_WAYS] = lv[0].sets, lv[0].ways
            if len(lv) > 1:
                cfg[K_TLB2_SETS], cfg[K_TLB2_WAYS] = lv[1].sets, lv[1].ways
            cfg[K_FLUSH_ON_SWITCH] = int(config.tlb.flush_on_switch)
        self.cfg = cfg
        self.shifts = np.array([geo.shift(i) for i in range(geo.levels)], dtype=np.int64)
        self.masks = np.array([(1 << b) - 1 for b in geo.bits_per_level], dtype=np.int64)

        st = np.zeros(N_STATE, dtype=np.int64)
        st[S_FREE_TOP] = self.frames.free_count
        st[S_FREE_HEAD] = self.frames.free_head
        # no slot given back yet (S_SWAP_TOP 0), none used (S_SWAP_NEXT 0): all are free
        st[S_HUGE_TOP] = config.huge_pages
        st[S_LAST_ASID] = -1
        st[S_RNG] = seed_state(config.seed)
        st[S_FAULT_RNG] = seed_state(config.seed ^ 0x5DEECE66D)
        self.st = st

        nproc = config.max_processes
        self.proc = np.zeros((nproc, N_PROC), dtype=np.int64)
        self.proc[:, P_ROOT] = -1
        self.pctr = np.zeros((nproc, N_PCTR), dtype=np.int64)
        self.lists = np.full((nproc + 1, N_LIST), -1, dtype=np.int64)
        self.lists[:, L_SIZE] = 0
        self.regions = np.zeros((0, 3), dtype=np.int64)
        # one row per 512 frames to start (the leaf tables of a dense address space); grows
        initial_tables = max(8, config.frames // 512 + 8)
        if config.mapped_pages:  # the leaf tables, and every process's upper levels
            upper = (geo.levels - 1) * config.max_processes
            initial_tables = config.mapped_pages // geo.entries_per_table + upper + 8
        self.tables = np.zeros((initial_tables, geo.entries_per_table), dtype=np.int64)
        self.table_frame = np.full(initial_tables, -1, dtype=np.int32)
        self.table_free = np.zeros(initial_tables, dtype=np.int32)
        self.processes: dict[int, ProcessInfo] = {}
        self.kills: list[KillRecord] = []
        #: processes the OOM killer never picks (kernel pseudo-processes)
        self.oom_exempt: set[int] = set()
        self._blocks: list[tuple[int, int, int]] = []  # (start, frames, pid) without VM
        self._empty_next_use = np.zeros(0, dtype=np.int64)
        self.record = np.zeros(1, dtype=np.int32)
        #: the most entries the walk record may grow to (K_RECORD): a full record grows
        #: (doubling) up to this, and a run with ``until_full`` stops only when it is reached
        self.record_limit = 1
        self.ring = np.zeros((1, N_RING), dtype=np.int64)
        #: the sharing watch map and log (K_COW), set by a hypervisor that shares pages
        self.watch = np.zeros(1, dtype=np.int64)
        self.watch_log = np.zeros(1, dtype=np.int64)
        #: the change map (K_SYNC): frames whose contents changed since the hypervisor's sync
        self.changed = np.zeros(1, dtype=np.int64)
        #: run_batch's memo of the walks it made (pages, without a TLB; and leaf tables'
        #: paths): scratch, emptied by every batch
        self.memo = np.full((MEMO_SLOTS, MEMO_COLS), -1, dtype=np.int64)

    @property
    def machine(self) -> Machine:
        """The state arrays, bundled for the data plane."""
        return Machine(
            self.cfg,
            self.shifts,
            self.masks,
            self.st,
            self.pctr,
            self.frames.fi32,
            self.frames.fi64,
            self.tables,
            self.table_frame,
            self.table_free,
            self.tlb.tags,
            self.tlb.vals,
            self.tlb.stamps,
            self.swap.token,
            self.swap.owner,
            self.swap.free,
            self.swap.csize,
            self.frames.huge_free,
            self.proc,
            self.regions,
            self.lists,
            self.record,
            self.ring,
            self.watch,
            self.watch_log,
            self.changed,
            self.memo,
        )

    # ------------------------------------------------------------------ processes

    @property
    def page_size(self) -> int:
        """Bytes in a base page."""
        return self.geometry.page_size

    def spawn(self, regions: Sequence[Region], name: str = "", quota: int | None = None) -> int:
        """Start a process with the given address-space regions; return its pid.

        Regions must be page-aligned and must not overlap. Without virtual
        memory the process is loaded whole into contiguous frames, and
        :class:`AdmissionError` says how much it needs and how much is free
        when it does not fit.
        """
        pid = len(self.processes)
        if pid >= self.config.max_processes:
            raise AdmissionError(
                f"no room for another process: the kernel holds at most {self.config.max_processes}"
            )
        ps = self.page_size
        rows = []
        ordered = sorted(regions, key=lambda r: r.start)
        for k, reg in enumerate(ordered):
            if reg.start % ps or reg.length % ps or reg.length <= 0:
                raise KernelError(
                    f"region {reg.name or k} at {reg.start:#x}+{reg.length:#x} is not a "
                    f"positive whole number of {format_size(ps)} pages"
                )
            if reg.start + reg.length > 1 << self.geometry.va_bits:
                raise KernelError(
                    f"region {reg.name or k} ends at {reg.start + reg.length:#x}, beyond the "
                    f"{self.geometry.va_bits}-bit virtual address space"
                )
            if reg.huge:
                hs = self.geometry.huge_page_size
                if reg.start % hs or reg.length % hs:
                    raise KernelError(
                        f"huge region {reg.name or k} must be aligned to {format_size(hs)}"
                    )
            if k and ordered[k - 1].start + ordered[k - 1].length > reg.start:
                raise KernelError(
                    f"regions {ordered[k - 1].name or k - 1} and {reg.name or k} overlap"
                )
            flags = (REG_WRITABLE if reg.writable else 0) | (REG_HUGE if reg.huge else 0)
            rows.append((reg.start // ps, (reg.start + reg.length) // ps, flags))
        info = ProcessInfo(pid, name or f"process-{pid}", tuple(ordered), quota)
        if not self.config.virtual_memory:
            info.block = self._load_whole(info)
        else:
            root = self._new_root(pid)
            self.proc[pid, P_ROOT] = root
        self.proc[pid, P_REG_START] = self.regions.shape[0]
        self.proc[pid, P_REG_COUNT] = len(rows)
        self.regions = np.concatenate([self.regions, np.array(rows, dtype=np.int64).reshape(-1, 3)])
        self.proc[pid, P_ALIVE] = 1
        self.processes[pid] = info
        self._set_quotas()
        return pid

    def spawn_pseudo(self, name: str) -> int:
        """Register a pseudo-process: no address space, never picked by the OOM killer; it
        holds pinned frames (memory the machine lost). Returns its pid."""
        pid = len(self.processes)
        if pid >= self.config.max_processes:
            raise AdmissionError(
                f"no room for another process: the kernel holds at most {self.config.max_processes}"
            )
        self.proc[pid, P_REG_START] = self.regions.shape[0]
        self.proc[pid, P_ALIVE] = 1
        self.processes[pid] = ProcessInfo(pid, name, ())
        self.oom_exempt.add(pid)
        return pid

    def _new_root(self, pid: int) -> int:
        """Take a frame for ``pid``'s root table (evicting a page if memory is full)."""
        self._ensure_tables(1)
        self.ensure_ring(1)
        while True:
            m = self.reserve_slots(1)
            f = native.take_free_frame(m)  # as take_frame does while frames are free
            if f < 0:
                f = native.take_frame_called(m, pid, False)
            if f >= 0:
                break
            victim = self._oom_victim()
            if victim is None:
                raise AdmissionError("no frame is left for the new process's page table")
            self._kill(victim, "killed by the OOM killer (out of memory and swap)")
        return int(native.install_table(self.machine, pid, f))

    def _load_whole(self, info: ProcessInfo) -> tuple[int, int]:
        """Without virtual memory: first-fit a contiguous block for the whole process."""
        need = sum(r.length for r in info.regions) // self.page_size
        start = 0
        largest = 0
        for bstart, blen, _ in sorted(self._blocks):
            largest = max(largest, bstart - start)
            if bstart - start >= need:
                break
            start = bstart + blen
        else:
            largest = max(largest, self.config.frames - start)
            if self.config.frames - start < need:
                free = self.config.frames - sum(b[1] for b in self._blocks)
                ps = self.page_size
                detail = (
                    ""
                    if largest == free
                    else f", the largest contiguous block is {format_size(largest * ps)}"
                )
                raise AdmissionError(
                    f"{info.name} needs {format_size(need * ps)} of contiguous physical "
                    f"memory, {format_size(free * ps)} free{detail}"
                )
        self._blocks.append((start, need, info.pid))
        self.frames.fi32[start : start + need, F_OWNER] = info.pid
        # the block leaves the free list
        fs = self.free_frames()
        native.set_free_list(self.frames.fi32, self.st, fs[(fs < start) | (fs >= start + need)])
        self.frames.fi32[start : start + need, F_NEXT] = -1
        self.proc[info.pid, P_RESIDENT] = need
        return start, need

    def _set_quotas(self) -> None:
        """Local replacement: an equal share of frames for each live process without a quota."""
        alive = [p for p in self.processes if self.proc[p, P_ALIVE] and p not in self.oom_exempt]
        if not alive:
            return
        # frames a pseudo-process holds (memory the machine lost) are nobody's to share
        held = sum(int(self.proc[p, P_RESIDENT]) for p in self.oom_exempt if self.proc[p, P_ALIVE])
        share = max(1, (self.frames.small_frames - held) // len(alive))
        for p in alive:
            q = self.processes[p].quota
            self.proc[p, P_QUOTA] = q if q is not None else share

    def alive(self, pid: int) -> bool:
        """True while process ``pid`` runs."""
        return bool(self.proc[pid, P_ALIVE])

    def kill(self, pid: int, reason: str = "killed") -> None:
        """End process ``pid`` and free everything it holds."""
        if not self.alive(pid):
            raise KernelError(f"process {pid} is not running")
        self._kill(pid, reason)

    def _kill(self, pid: int, reason: str, va: int | None = None) -> None:
        info = self.processes[pid]
        if info.block is not None:
            start, n, _ = next(b for b in self._blocks if b[2] == pid)
            self._blocks = [b for b in self._blocks if b[2] != pid]
            self.frames.fi32[start : start + n, F_OWNER] = -1
            self.set_tokens(np.arange(start, start + n), 0)
            # the block goes back on the free list, its first frame first
            block = np.arange(start, start + n, dtype=np.int32)
            native.set_free_list(
                self.frames.fi32, self.st, np.concatenate([block, self.free_frames()])
            )
            self.proc[pid, P_ALIVE] = 0
            self.proc[pid, P_RESIDENT] = 0
        else:
            native.kill_process(self.machine, self.frames.huge_base, pid)
        self.kills.append(KillRecord(pid, info.name, reason, va))
        self._set_quotas()

    # ------------------------------------------------------------------ injected faults

    def set_swap_errors(self, read_rate: float = 0.0, write_rate: float = 0.0) -> None:
        """Make the swap device fail a fraction of its reads and writes (fault injection).

        A failed write leaves the page in memory, dirty (the kernel tries another
        victim); a failed read loses the page's only copy, and its process dies of
        a bus error. Counted per process as ``swap_write_errors`` and
        ``swap_read_errors``.
        """
        self.cfg[K_SWAP_READ_FAIL] = error_threshold(read_rate)
        self.cfg[K_SWAP_WRITE_FAIL] = error_threshold(write_rate)

    def fill_swap(self) -> int:
        """The swap device fills up (fault injection): every free slot is taken by
        something outside the simulation (marked :data:`SWAP_FILLED`) and never given
        back. Slots the simulated pages free later can be used again. Returns how many
        slots were taken."""
        taken = self.free_slots()
        top = int(self.st[S_SWAP_TOP])
        swap = self.swap
        swap.owner[swap.free[:top]] = SWAP_FILLED
        # the never-used slots go too: those the arrays hold are marked, the others stay
        # out of the arrays (no slot will be handed out from them)
        swap.owner[int(self.st[S_SWAP_NEXT]) : self.config.swap_slots] = SWAP_FILLED
        self.st[S_SWAP_TOP] = 0
        self.st[S_SWAP_NEXT] = self.config.swap_slots
        return taken

    def free_frames(self) -> np.ndarray:
        """The free frames, in the order they will be taken (the free list's order)."""
        out = np.empty(int(self.st[S_FREE_TOP]) + 1, dtype=np.int32)
        n = native.free_list(self.frames.fi32, self.st, out)
        return out[:n]

    def set_tokens(self, frames: np.ndarray, tokens: np.ndarray | int) -> None:
        """Frames ``frames`` hold contents ``tokens`` now, written from Python: as the data
        plane's ``native.set_token`` does, their bits are set in the change map for a
        hypervisor's content sync, and the watched ones are noted for its page sharing."""
        frames = np.ascontiguousarray(frames, dtype=np.int64)
        self.frames.fi64[frames, G_TOKEN] = tokens
        native.note_changes(self.machine, frames)

    def free_slots(self) -> int:
        """Free swap slots: those given back, and those never used."""
        return int(self.st[S_SWAP_TOP]) + self.config.swap_slots - int(self.st[S_SWAP_NEXT])

    def reserve_slots(self, needed: int) -> Machine:
        """Make the swap arrays hold the slots that ``needed`` more takes could hand out
        (call it before a data-plane step that may evict ``needed`` pages); the state
        arrays, new ones if the swap arrays grew."""
        nxt = int(self.st[S_SWAP_NEXT])
        if nxt < self.config.swap_slots:
            self.swap.grow(nxt + needed)
        return self.machine

    def grow_record(self) -> None:
        """Double the walk record (up to ``record_limit`` entries), keeping what it holds."""
        size = min(self.record_limit, 2 * self.record.shape[0])
        grown = np.zeros(size, dtype=self.record.dtype)
        n = int(self.st[S_REC_N])
        grown[:n] = self.record[:n]
        self.record = grown

    def ensure_ring(self, needed: int) -> None:
        """Make the eviction ring hold ``needed`` more evictions beside those it holds
        (K_RING 2: call it before a data-plane step that may evict ``needed`` pages; it
        doubles, so that a guest that evicts often soon stops asking)."""
        if self.cfg[K_RING] != 2:
            return
        n = int(self.st[S_RING_N])
        rows = self.ring.shape[0]
        if n + needed <= rows:
            return
        grown = np.zeros((max(2 * rows, n + needed), N_RING), dtype=self.ring.dtype)
        grown[: min(n, rows)] = self.ring[: min(n, rows)]
        self.ring = grown

    def take_frames(self, owner: int, n: int) -> int:
        """Pin ``n`` frames to pseudo-process ``owner`` (memory the machine loses),
        evicting pages as a fault would when too few are free; returns how many could
        be had (fewer when nothing more can be evicted)."""
        self.ensure_ring(n)
        got = np.empty(n, dtype=np.int64)
        k = int(reclaim.grab_frames(self.reserve_slots(n), owner, n, got))
        self._set_quotas()
        return k

    def oom_kill(self, reason: str) -> int | None:
        """Kill the out-of-memory killer's victim (see :meth:`_oom_victim`) for ``reason``;
        its pid, or None when no process may be killed."""
        victim = self._oom_victim()
        if victim is not None:
            self.st[S_OOM_KILLS] += 1
            self._kill(victim, reason)
        return victim

    def _oom_victim(self) -> int | None:
        """The live process with the largest resident + swapped + page-table pages (of
        those not exempt: ``oom_exempt`` holds pseudo-processes such as a hypervisor's own
        frames or a balloon driver, whose pages others depend on)."""
        best, best_score = None, 0
        for p in sorted(self.processes):
            if not self.proc[p, P_ALIVE] or p in self.oom_exempt:
                continue
            score = int(self.proc[p, P_RESIDENT] + self.proc[p, P_SWAPPED] + self.proc[p, P_TABLES])
            if score > best_score:
                best, best_score = p, score
        return best

    def _ensure_tables(self, needed: int) -> None:
        """Grow the table-page pool so that ``needed`` more tables fit."""
        while not native.table_room(self.machine, needed):
            n = self.tables.shape[0]
            if n >= MAX_TABLE_PAGES:
                raise KernelError(
                    f"the page tables would need more than {MAX_TABLE_PAGES:,} table pages "
                    "(the most a frame's reverse map can name): map fewer pages"
                )
            more = min(n, MAX_TABLE_PAGES - n)  # doubling, but never past what a rmap names
            grown = np.zeros((n + more, self.tables.shape[1]), dtype=np.int64)
            grown[:n] = self.tables
            self.tables = grown
            self.table_frame = np.concatenate([self.table_frame, np.full(more, -1, np.int32)])
            self.table_free = np.concatenate([self.table_free, np.zeros(more, np.int32)])

    # ------------------------------------------------------------------ running

    def run(
        self,
        pid: int,
        addresses: np.ndarray,
        writes: np.ndarray | None = None,
        *,
        next_use: np.ndarray | None = None,
        page_numbers: bool = False,
        until_full: bool = False,
    ) -> int:
        """Run process ``pid``'s accesses; return how many happened before it ended.

        ``addresses`` are virtual addresses (or page numbers with
        ``page_numbers``); ``writes`` marks writes (all reads when None).
        ``next_use`` gives, for each access, the index of the next access to
        the same page: the opt policy needs it. A kernel under a hypervisor
        records the real pages its walks read, in a record that doubles when full
        up to ``record_limit`` entries: with ``until_full`` the run stops when the
        record is full at that size (the process still runs), and the hypervisor
        makes its pass over them before the rest. Its eviction ring (K_RING 2)
        grows as faults need.
        """
        if not self.alive(pid):
            raise KernelError(f"process {pid} is not running")
        addresses = np.ascontiguousarray(addresses, dtype=np.int64)
        n = addresses.shape[0]
        w = (
            np.zeros(n, dtype=np.uint8)
            if writes is None
            else np.ascontiguousarray(writes, dtype=np.uint8)
        )
        vpns = addresses if page_numbers else addresses >> self.geometry.offset_bits
        if self.processes[pid].block is not None:
            return self._run_without_vm(pid, vpns, w)
        if self.policy.needs_future:
            if next_use is None:
                raise KernelError(
                    f"the {self.policy.name} policy needs the future of the trace; "
                    "pass next_use (memvirt replay computes it)"
                )
            nu = np.ascontiguousarray(next_use, dtype=np.int64)
        else:
            nu = self._empty_next_use
        i = 0
        while i < n:
            i, reason = native.run_batch(self.machine, pid, vpns, w, nu, i, n)
            if reason == STOP_DONE:
                break
            va = int(self.st[S_FAULT_VPN]) << self.geometry.offset_bits
            if reason == STOP_RECORD_FULL:
                if self.record.shape[0] < self.record_limit:
                    self.grow_record()
                    continue
                if until_full:
                    break
                raise KernelError(
                    "the walk record is full: run fewer accesses at a time, or pass "
                    "until_full=True and run the rest after the hypervisor's pass"
                )
            if reason == STOP_NEED_RING:  # a fault evicts at most a page per level
                self.ensure_ring(self.geometry.levels)
            elif reason == STOP_NEED_TABLES:
                self._ensure_tables(self.geometry.levels)
            elif reason == STOP_NEED_SLOTS:  # a fault takes at most a slot per level
                self.reserve_slots(self.geometry.levels)
            elif reason == STOP_SEGFAULT:
                what = (
                    "write to a read-only region"
                    if self.st[S_FAULT_KIND] == SEGV_READ_ONLY
                    else "access outside every region"
                )
                self._kill(pid, f"segmentation fault: {what} at {va:#x}", va)
                break
            elif reason == STOP_SIGBUS:
                if self.st[S_FAULT_KIND] == BUS_SWAP_READ:
                    why = f"bus error: the swap device failed to read {va:#x} back"
                else:
                    why = f"bus error: no huge page left for {va:#x}"
                self._kill(pid, why, va)
                break
            elif reason == STOP_OOM:
                victim = self._oom_victim()
                if victim is None:
                    victim = pid
                self.st[S_OOM_KILLS] += 1
                self._kill(victim, "killed by the OOM killer (out of memory and swap)")
                if victim == pid:
                    break
        return i

    def _run_without_vm(self, pid: int, vpns: np.ndarray, w: np.ndarray) -> int:
        """Without virtual memory: addresses are offsets into the process's block."""
        info = self.processes[pid]
        assert info.block is not None
        ps = self.page_size
        n = vpns.shape[0]
        pfns = np.full(n, -1, dtype=np.int64)
        ok_write = np.zeros(n, dtype=bool)
        base = info.block[0]
        for reg in info.regions:
            lo, hi = reg.start // ps, (reg.start + reg.length) // ps
            inside = (vpns >= lo) & (vpns < hi)
            pfns[inside] = base + vpns[inside] - lo
            ok_write[inside] = reg.writable
            base += hi - lo
        bad = (pfns < 0) | ((w != 0) & ~ok_write)
        stop = int(np.argmax(bad)) if bad.any() else n
        done_w = w[:stop] != 0
        wp = pfns[:stop][done_w]
        if wp.size:
            tokens = self.st[S_TOKEN] + np.arange(1, wp.size + 1)
            self.set_tokens(wp, tokens)
            self.st[S_TOKEN] += wp.size
        self.pctr[pid, C_ACCESSES] += stop
        self.pctr[pid, C_WRITES] += int(done_w.sum())
        self.pctr[pid, C_READS] += stop - int(done_w.sum())
        if stop < n:
            va = int(vpns[stop]) * ps
            what = (
                "write to a read-only region" if pfns[stop] >= 0 else "access outside every region"
            )
            self._kill(pid, f"segmentation fault: {what} at {va:#x}", va)
        return stop

    def access(self, pid: int, va: int, write: bool = False) -> bool:
        """One access by process ``pid``; False if the process did not survive it."""
        done = self.run(pid, np.array([va], dtype=np.int64), np.array([write], dtype=np.uint8))
        return done == 1

    def prepare_tables(self, pid: int, vpns: np.ndarray) -> int:
        """Build, ahead of the run, the table pages that pages ``vpns`` will need.

        Returns the number of table pages added. :func:`memvirt.replay`
        uses this so that the frames it gives the trace hold data pages only.
        """
        geo = self.geometry
        before = int(self.proc[pid, P_TABLES])
        leaf = geo.levels - 1
        prefixes = np.unique(np.asarray(vpns, dtype=np.int64) >> geo.shift(leaf - 1))
        self._ensure_tables(leaf * prefixes.shape[0])
        for prefix in prefixes:
            m = self.reserve_slots(leaf)  # each table page may evict a page to swap
            t, _ = native.build_path(m, pid, int(prefix) << geo.shift(leaf - 1), leaf)
            if t < 0:
                raise AdmissionError("memory is too small for the trace's page tables")
        return int(self.proc[pid, P_TABLES]) - before

    # ------------------------------------------------------------------ inspection

    def walk(self, pid: int, va: int) -> Walk:
        """Walk ``pid``'s page table for ``va`` as the MMU would, changing nothing."""
        geo = self.geometry
        vpn = va >> geo.offset_bits
        info = self.processes[pid]
        if info.block is not None:
            pfn = self.translate(pid, va)
            return Walk(
                va,
                (),
                None if pfn is None else pfn // self.page_size,
                self.page_size,
                self.page_size,
            )
        t = int(self.proc[pid, P_ROOT])
        steps = []
        pfn = None
        size = geo.page_size
        for lvl in range(geo.levels):
            if t < 0:
                break
            idx = geo.index(vpn, lvl)
            e = int(self.tables[t, idx])
            steps.append(WalkStep(lvl, int(self.table_frame[t]), idx, e, geo.page_size))
            if not e & PTE_PRESENT:
                break
            if lvl == geo.levels - 1 or e & PTE_HUGE:
                base = e >> PTE_SHIFT
                size = geo.leaf_page_size(lvl)
                span = size // geo.page_size
                pfn = base + (vpn & (span - 1))
                break
            t = int(self.frames.fi64[e >> PTE_SHIFT, G_VPN])
        return Walk(va, tuple(steps), pfn, size, geo.page_size)

    def translate(self, pid: int, va: int) -> int | None:
        """The physical address ``va`` maps to in ``pid``, or None when not in memory."""
        info = self.processes[pid]
        if info.block is not None:
            ps = self.page_size
            base = info.block[0]
            for reg in info.regions:
                if reg.start <= va < reg.start + reg.length:
                    return (base + (va - reg.start) // ps) * ps + va % ps
                base += reg.length // ps
            return None
        return self.walk(pid, va).physical_address

    def read_token(self, pid: int, va: int) -> int:
        """The content token of ``pid``'s page at ``va``: in memory, in swap, or 0 (zeros)."""
        info = self.processes[pid]
        if info.block is not None:
            pa = self.translate(pid, va)
            return 0 if pa is None else self.frames.token(pa // self.page_size)
        walk = self.walk(pid, va)
        if walk.pfn is not None:
            return self.frames.token(walk.pfn)
        if walk.steps and walk.steps[-1].entry & PTE_SWAPPED:
            return int(self.swap.token[walk.steps[-1].entry >> PTE_SHIFT])
        return 0

    def counters(self, pid: int | None = None) -> dict[str, int]:
        """Counters of process ``pid``, or summed over all processes."""
        return self.named_counters(self.counter_row(pid))

    def counter_row(self, pid: int | None = None) -> np.ndarray:
        """The raw counters of process ``pid``, or summed over all processes (a copy, to
        take from a later row: :meth:`named_counters` names the difference)."""
        rows: np.ndarray = self.pctr[pid].copy() if pid is not None else self.pctr.sum(axis=0)
        return rows

    def named_counters(self, rows: np.ndarray) -> dict[str, int]:
        """:meth:`counters` of raw counters ``rows`` (a :meth:`counter_row`, or the
        difference of two)."""
        out = {name: int(rows[i]) for name, i in COUNTER_NAMES.items()}
        out["faults"] = out["minor_faults"] + out["major_faults"]
        out["swap_ins"] = out["major_faults"] - out["decompressions"]
        out["swap_outs"] = out["writebacks"]
        if self.config.tlb is not None:
            last = "tlb_l2" if len(self.config.tlb.levels) > 1 else "tlb_l1"
            out["tlb_misses"] = out[f"{last}_misses"]
            out["tlb_hits"] = out["accesses"] - out["tlb_misses"]
        else:
            out["tlb_misses"] = out["accesses"]
            out["tlb_hits"] = 0
        return out

    def stats(self) -> dict[str, int]:
        """Whole-machine figures: frames, swap, OOM kills, TLB flushes."""
        return {
            "frames": self.config.frames,
            "free_frames": int(self.st[S_FREE_TOP]),
            "table_pages": int(self.proc[:, P_TABLES].sum()),
            "resident_pages": int(self.proc[:, P_RESIDENT].sum()),
            "swap_slots": self.config.swap_slots,
            "swap_used": self.swap.used(),
            "oom_kills": int(self.st[S_OOM_KILLS]),
            "tlb_flushes": int(self.st[S_TLB_FLUSHES]),
            "processes": len(self.processes),
            "killed": len(self.kills),
        }

    def resident(self, pid: int) -> int:
        """Data pages of ``pid`` in memory."""
        return int(self.proc[pid, P_RESIDENT])

    def swapped(self, pid: int) -> int:
        """Pages of ``pid`` whose only copy is in swap."""
        return int(self.proc[pid, P_SWAPPED])

    def table_pages(self, pid: int) -> int:
        """Page-table pages of ``pid``."""
        return int(self.proc[pid, P_TABLES])

    def resident_vpns(self, pid: int) -> list[int]:
        """Virtual page numbers of ``pid``'s base pages in memory, in frame order."""
        fi32, fi64 = self.frames.fi32, self.frames.fi64
        mask = (fi32[:, F_OWNER] == pid) & ((fi32[:, F_FLAGS] & (FR_TABLE | FR_HUGE)) == 0)
        return [int(v) for v in fi64[:, G_VPN][mask]]

    def tlb_entries(self) -> list[TLBEntry]:
        """Every valid TLB entry, level by level: what the TLB currently caches."""
        out = []
        tags, vals = self.tlb.tags, self.tlb.vals
        for lvl in range(int(self.cfg[K_TLB_LEVELS])):
            for e in np.flatnonzero(tags[lvl] >= 0):
                tag, val = int(tags[lvl, e]), int(vals[lvl, e])
                huge = bool(tag & TLB_HUGE_TAG)
                tag &= ~TLB_HUGE_TAG
                out.append(
                    TLBEntry(
                        level=lvl,
                        asid=tag >> TLB_ASID_SHIFT,
                        page=tag & ((1 << TLB_ASID_SHIFT) - 1),
                        pfn=val >> TV_SHIFT,
                        huge=huge,
                        writable=bool(val & TV_WRITABLE),
                        dirty=bool(val & TV_DIRTY),
                    )
                )
        return out

    def check_tlb(self) -> None:
        """Raise AssertionError if a TLB entry disagrees with the page table (a stale entry)."""
        span_shift = int(self.cfg[K_HUGE_SHIFT])
        for entry in self.tlb_entries():
            vpn = entry.page << span_shift if entry.huge else entry.page
            walk = self.walk(entry.asid, vpn << self.geometry.offset_bits)
            assert walk.pfn == entry.pfn, (
                f"stale TLB entry: level {entry.level} maps page {vpn:#x} of process "
                f"{entry.asid} to frame {entry.pfn}, the page table to {walk.pfn}"
            )

    def check_invariants(self) -> None:
        """Raise AssertionError when the machine's bookkeeping is inconsistent.

        Frames are conserved (free + owned = total); every data frame's
        back-pointer leads, through its owner's page table, back to it, and
        its reverse map names the entry that maps it; every
        swapped entry's slot is owned by that process; the lists hold exactly
        the data frames; the per-process counts match the frames.
        """
        fi32, fi64 = self.frames.fi32, self.frames.fi64
        owned = int(np.count_nonzero(fi32[:, F_OWNER] >= 0))
        free = int(self.st[S_FREE_TOP])
        huge_free_frames = int(self.st[S_HUGE_TOP]) * self.frames.huge_span
        assert free + owned + huge_free_frames == self.config.frames, (
            f"frames not conserved: {free} free + {owned} owned + {huge_free_frames} in "
            f"free huge pages != {self.config.frames}"
        )
        chain = self.free_frames()
        free_set = set(chain.tolist())
        assert chain.shape[0] == free, "the free list does not hold the free frames"
        assert len(free_set) == free, "a frame is on the free list twice"
        assert all(fi32[f, F_OWNER] < 0 for f in free_set), "a free frame has an owner"
        listed = 0
        for lid in range(self.lists.shape[0]):
            f = int(self.lists[lid, L_HEAD])
            count = 0
            while f >= 0:
                count += 1
                f = int(fi32[f, F_NEXT])
            assert count == self.lists[lid, L_SIZE], f"list {lid} size is wrong"
            listed += count
        for pid, info in self.processes.items():
            if not self.proc[pid, P_ALIVE] or info.block is not None:
                continue
            mine = fi32[:, F_OWNER] == pid
            # pinned frames (balloon pages, a hypervisor's shared and cache frames) hold no
            # page of the process's own table
            kind = fi32[:, F_FLAGS] & (FR_PINNED | FR_HUGE | FR_TABLE)
            pinned = mine & (kind == FR_PINNED)
            data = mine & ((fi32[:, F_FLAGS] & (FR_TABLE | FR_HUGE | FR_PINNED)) == 0)
            huge = mine & ((fi32[:, F_FLAGS] & FR_HUGE) != 0)
            tables = mine & ((fi32[:, F_FLAGS] & FR_TABLE) != 0)
            held = int(data.sum() + huge.sum() + pinned.sum())
            assert held == self.proc[pid, P_RESIDENT], (
                f"process {pid}: resident count {self.proc[pid, P_RESIDENT]} != frames {held}"
            )
            assert int(tables.sum()) == self.proc[pid, P_TABLES], f"process {pid}: table count"
            for frame in np.flatnonzero(data):
                f = int(frame)
                vpn = int(fi64[f, G_VPN])
                walk = self.walk(pid, vpn << self.geometry.offset_bits)
                assert walk.pfn == f, (
                    f"frame {f} says it holds page {vpn:#x} of process {pid}, "
                    f"whose table maps that page to {walk.pfn}"
                )
                where = int(fi32[f, F_RMAP])
                pte = int(self.tables[where >> RMAP_SHIFT, where & ((1 << RMAP_SHIFT) - 1)])
                assert pte & PTE_PRESENT and pte >> PTE_SHIFT == f, (
                    f"frame {f}: its reverse map points at an entry that maps {describe_pte(pte)}"
                )
                slot = int(fi32[f, F_SLOT])
                assert slot < 0 or self.swap.owner[slot] == pid, f"frame {f}: swap-cache slot"
        data_frames = int(
            np.count_nonzero(
                (fi32[:, F_OWNER] >= 0)
                & ((fi32[:, F_FLAGS] & (FR_TABLE | FR_HUGE | FR_PINNED)) == 0)
            )
        )
        if not self._blocks:
            assert listed == data_frames, f"{listed} frames listed, {data_frames} data frames"


def regions_covering(vpns: np.ndarray, page_size: int, gap: int = 256) -> list[Region]:
    """Regions that cover the pages ``vpns``: runs of pages split where
    ``gap`` or more pages in a row are untouched (code, heap, stack...)."""
    uniq = np.unique(np.asarray(vpns, dtype=np.int64))
    if uniq.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(uniq) > gap)
    starts = np.concatenate([[uniq[0]], uniq[breaks + 1]])
    ends = np.concatenate([uniq[breaks], [uniq[-1]]]) + 1
    return [
        Region(int(s) * page_size, int(e - s) * page_size, name=f"region-{k}")
        for k, (s, e) in enumerate(zip(starts, ends, strict=True))
    ]


__all__ = [
    "AdmissionError",
    "Kernel",
    "KernelConfig",
    "KernelError",
    "KillRecord",
    "Region",
    "Walk",
    "WalkStep",
    "describe_pte",
    "regions_covering",
]
