"""Reclamation: how the hypervisor takes physical memory back from VMs under shortage.

When the VMs' real memories add up to more than physical memory, the hypervisor must
take frames back from VMs that hold more than they need. VMware ESX (Waldspurger,
"Memory Resource Management in VMware ESX Server", OSDI 2002) does it with four
techniques, chosen by how short free memory is (ESXi's *free-memory states*,
:mod:`memvirt.hypervisor.states`):

**Page sharing** (clear, soft, hard). A scanner hashes the contents of a few pages per
second; two real pages with identical contents are backed by one frame, mapped
read-only, with a reference count; a write to it copies the page to a private frame
first (copy-on-write). Pages full of zeros are the commonest case. With *salting*
(ESXi's default since 2015) pages are shared only within one VM.

**Ballooning** (soft). A driver in the guest allocates real pages from its own kernel
and pins them; the hypervisor then frees the frames behind them. The guest chooses what
to give up, with its own knowledge: free pages first, then pages its replacement
policy evicts (clean ones dropped, dirty ones written to the guest's swap). Deflating
gives the pages back to the guest. A balloon holds at most 65% of its VM
(Mem.CtlMaxPercent); a guest without a driver can be reclaimed only by the hypervisor.

**Compression and swapping** (hard, low). The hypervisor evicts real pages itself,
without the guest knowing, chosen at random (ESX) or by a clock (an LRU approximation).
A page that compresses to 2 KiB or less goes to the VM's compression cache (10% of its
memory) instead of the swap device; reading it back costs a decompression, not a disk
read. The guest may later swap out a page the hypervisor has already swapped out:
*double paging*, one extra read (the hypervisor must bring the page back so the guest
can write it out).

**Blocking** (low). VMs above their target may not allocate: their vCPUs wait.

Who gives memory up is decided by **proportional share with the idle memory tax**
(:mod:`memvirt.hypervisor.allocation`): each VM's entitlement follows its shares,
charged more for idle pages than for active ones (tau = 0.75), with the active fraction
estimated by sampling 100 random pages per period; balloon targets and swap victims
come from the VMs above their entitlement, lowest shares-per-page first (min-funded
revocation).

This module is the control plane (plain Python, run every ``control_period`` of
simulated time and after each VM's host pass); the page-by-page steps are numba
kernels in :mod:`memvirt.dataplane.reclaim`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from memvirt.config import HypervisorConfig
from memvirt.dataplane import native, reclaim
from memvirt.dataplane import sharing as sharing_dp
from memvirt.dataplane.layout import (
    C_ACCESSES,
    C_COMPRESSIONS,
    C_EVICTIONS,
    C_MAJOR,
    G_TOKEN,
    K_COMPRESS,
    K_COW,
    P_COMP_BYTES,
    P_COMP_CAP,
    P_COMP_MIN,
    P_COMP_THRESHOLD,
    P_COMP_ZERO,
    P_COMPRESSED,
    P_RESIDENT,
    P_SWAPPED,
    S_COW_N,
    S_FREE_TOP,
    S_HUGE_TOP,
    S_RING_N,
)
from memvirt.hypervisor.allocation import ActiveEstimator, Claim, entitlements, revoke
from memvirt.hypervisor.states import STATES, FreeMemoryStates, min_free_bytes
from memvirt.hypervisor.timeseries import TimeSeries

if TYPE_CHECKING:
    from memvirt.engine.virtual import VM, VirtualizedMachine

#: Columns of the time series (docs/scenarios.md).
TIMESERIES_COLUMNS = (
    "time_s", "vm", "allocated_pages", "target_pages", "active_true", "active_estimated",
    "balloon_pages", "shared_pages", "compressed_pages", "host_swapped_pages", "accesses",
    "guest_major_faults", "host_major_faults", "host_free_pages", "host_shared_frames",
    "host_state",
)  # fmt: skip

#: Techniques whose reclaimed pages are counted, in the summary's order.
RECLAIM_KINDS = ("ballooning", "sharing", "compression", "swapping")
#: Entries of each guest's watch log (its shared pages whose contents changed) between two
#: host passes; past it the next check for broken sharing judges every shared page.
WATCH_LOG_CAPACITY = 1 << 12
#: Rounds of eviction a reclamation step makes at most to bring free memory back to its
#: target: the compression caches take back at most half a frame for each page compressed
#: in a round, so each round's shortfall is at most half the last one's.
SWAP_ROUNDS = 8
#: Pages a balloon inflation takes from a guest at a time, at most one more than this (its
#: double paging is charged after each step): as many as a quantum could evict.
BALLOON_STEP = 1 << 14
#: Why the host stops a VM when every running VM is blocked and nothing can be reclaimed.
STUCK_REASON = (
    "stopped by the host's out-of-memory rule: every running VM was blocked in the low "
    "state, and nothing could be reclaimed for a whole allocation period"
)


@dataclass
class Sharing:
    """The page-sharing state of the host: the hash table and the shared frames.

    The hash table (content key -> shared frame, or the hint of a page seen once, as in
    ESX; a key is the token, or (vm, token) when salted; a page is the hint of one key at
    most, so the table holds a row per page and shared frame at most), the shared pages
    of each VM and the reference counts of the shared frames are arrays, which the scan's
    kernel reads and updates (:mod:`memvirt.dataplane.sharing`). Each VM's
    ``VMReclaim.shared`` is a view of them.
    """

    tables: sharing_dp.SharingTables = field(default_factory=sharing_dp.SharingTables)
    copies: int = 0  # writes that broke sharing

    @property
    def owners(self) -> sharing_dp.SharedFrames:
        """shared frame -> its key and the (vm index, real page) pairs mapped to it."""
        return sharing_dp.SharedFrames(self.tables)


@dataclass
class VMReclaim:
    """What reclamation knows and has done about one VM."""

    index: int
    real_pages: int
    minimum: int
    maximum: int
    shares: float
    has_driver: bool
    balloon_pid: int
    estimator: ActiveEstimator
    rng: np.random.Generator
    #: real page -> shared frame, for this VM's pages backed by a shared frame, in the
    #: order they were shared (a view of the sharing tables)
    shared: sharing_dp.SharedPages
    target: int = 0
    balloon: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    balloon_n: int = 0
    cache_frames: list[int] = field(default_factory=list)
    #: the pages of this period's sample that no host pass has touched yet, a bit each
    sample_unseen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    sample_seen: int = 0
    sample_size: int = 0
    scan_cursor: int = 0
    active_true: float = 0.0
    active_true_sum: float = 0.0
    active_estimate_sum: float = 0.0
    periods: int = 0
    double_paging_reads: int = 0
    pending_ns: float = 0.0
    blocked_ns: float = 0.0
    maxima: dict[str, int] = field(
        default_factory=lambda: {"balloon": 0, "shared": 0, "compressed": 0, "host_swapped": 0}
    )


class Reclaimer:
    """The hypervisor's memory management: states, allocation, and the four techniques."""

    def __init__(self, machine: VirtualizedMachine, config: HypervisorConfig, seed: int) -> None:
        self.machine = machine
        self.config = config
        host = machine.host
        self.host = host
        self.page = host.page_size
        physical = host.config.frames
        sc = config.states
        min_free_pages = (
            sc.min_free if sc.min_free is not None else min_free_bytes(physical * self.page)
        ) // self.page
        self.min_free_pages = max(1, min_free_pages)
        thresholds = {name: getattr(sc.thresholds, name) for name in STATES}
        techniques = {name: getattr(sc.techniques, name) for name in STATES}
        self.states = FreeMemoryStates(
            self.min_free_pages, thresholds=thresholds, techniques=techniques
        )
        self.sharing = Sharing()
        self._watched = self.sharing.tables.watch
        self.reclaimed = dict.fromkeys(RECLAIM_KINDS, 0)
        #: the time series: a row per VM per control step (every timeseries_period)
        self.rows = TimeSeries(
            TIMESERIES_COLUMNS,
            floats=("time_s", "active_true", "active_estimated"),
            labels=("vm", "host_state"),
        )
        self.next_row = 0.0
        self.next_allocation = 0.0
        self.next_sample = 0.0
        self.last_tick = 0.0
        #: steps in a row after which every running VM was blocked and nothing could be
        #: reclaimed (see _unstick)
        self.stuck_steps = 0
        ac = config.allocation
        self.vms: list[VMReclaim] = []
        for vm in machine.vms:
            vmc = vm.config
            maximum = vm.real_pages
            if vmc.limit is not None:
                maximum = min(maximum, vmc.limit // self.page)
            self.vms.append(
                VMReclaim(
                    index=len(self.vms),
                    real_pages=vm.real_pages,
                    minimum=vmc.reservation // self.page,
                    maximum=maximum,
                    shares=float(vmc.shares),
                    has_driver=vmc.balloon,
                    balloon_pid=vm.balloon_pid,
                    estimator=ActiveEstimator(fast_gain=ac.fast_gain, slow_gain=ac.slow_gain),
                    rng=np.random.default_rng([seed, 7, len(self.vms)]),
                    shared=sharing_dp.SharedPages(self.sharing.tables, len(self.vms)),
                    target=vm.real_pages,
                    sample_unseen=np.zeros(-(-vm.real_pages // 64), dtype=np.uint64),
                )
            )
        cc = config.compression
        for vm in machine.vms:
            model = vm.config.guest.content  # how this VM's pages compress
            row = host.proc[vm.host_pid]
            row[P_COMP_THRESHOLD] = math.ceil(model.compressible_fraction * 2.0**53)
            row[P_COMP_MIN] = model.min_compressed
            row[P_COMP_ZERO] = model.zero_compressed_size
            cap = int(vm.real_pages * self.page * cc.cache_percent / 100.0)
            row[P_COMP_CAP] = cap if cc.enabled else 0

    # ---------------------------------------------------------------- per VM figures

    def allocated(self, vm: VM) -> int:
        """Frames the VM holds: its private frames and its compression cache's."""
        r = self.vms[vm.index]
        return int(self.host.proc[vm.host_pid, P_RESIDENT]) + len(r.cache_frames)

    def compressed(self, vm: VM) -> int:
        return int(self.host.proc[vm.host_pid, P_COMPRESSED])

    def host_swapped(self, vm: VM) -> int:
        proc = self.host.proc[vm.host_pid]
        return int(proc[P_SWAPPED] - proc[P_COMPRESSED])

    def free_pages(self) -> int:
        """Free physical memory in base pages: free frames and free huge pages."""
        st = self.host.st
        return int(st[S_FREE_TOP]) + int(st[S_HUGE_TOP]) * self.host.frames.huge_span

    def take_pending(self, vm: VM) -> float:
        """Simulated ns of reclamation work the VM's guest did (balloon I/O) and has not yet
        been charged for."""
        r = self.vms[vm.index]
        pending, r.pending_ns = r.pending_ns, 0.0
        return pending

    def frame(self) -> Any:
        """The time series, one row per VM per control step (a pandas DataFrame)."""

        return self.rows.frame()

    def blocked(self, vm: VM) -> bool:
        """In the low state, a VM above its target may not allocate: its vCPUs wait."""
        if not self.states.enabled("blocking"):
            return False
        return self.allocated(vm) > self.vms[vm.index].target

    # ---------------------------------------------------------------- the host pass

    def before_host_pass(self, vm: VM, written: np.ndarray) -> np.ndarray:
        """Break the sharing of pages the guest wrote (their contents changed, or the host
        is about to see a write to them: ``written``); return the real pages whose sharing
        broke, which the host must touch again as writes (the copies)."""
        r = self.vms[vm.index]
        guest = vm.guest
        live = len(r.shared)
        noted = int(guest.st[S_COW_N])  # pages the guest changed while they were watched
        guest.st[S_COW_N] = 0
        if not live:  # none is shared (nor watched): what was noted is moot
            return np.zeros(0, dtype=np.int64)
        tables = self.sharing.tables
        out = np.empty(live, dtype=np.int64)
        order = np.empty(live, dtype=np.int64)
        written = np.ascontiguousarray(written, dtype=np.int64)
        n = sharing_dp.break_sharing(self.host.machine, tables.bundle, guest.frames.fi64,
                                     vm.index, vm.host_pid, written, guest.watch_log, noted,
                                     tables.marks_for(r.real_pages), out, order)  # fmt: skip
        self.sharing.copies += n
        return out[:n]

    def after_host_pass(self, vm: VM, pages: np.ndarray) -> None:
        """Mark sampled pages touched; settle the compression caches."""
        r = self.vms[vm.index]
        if r.sample_seen < r.sample_size and pages.size:
            pages = np.ascontiguousarray(pages, dtype=np.int64)
            r.sample_seen += reclaim.mark_touched(r.sample_unseen, pages)
        self._settle_caches()

    def double_paging(self, vm: VM) -> np.ndarray:
        """Of the real pages the guest wrote to its swap since its eviction ring was
        cleared, those the hypervisor had swapped out: each costs one extra read (double
        paging)."""
        ring = vm.guest.ring
        n = min(int(vm.guest.st[S_RING_N]), ring.shape[0])
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        out = np.empty(n, dtype=np.int64)
        k = reclaim.doubled_pages(self.host.machine, vm.host_pid, ring, n, out)
        self.vms[vm.index].double_paging_reads += k
        return out[:k]

    # ---------------------------------------------------------------- the control step

    def reap(self) -> None:
        """Forget what reclamation held for VMs the host has stopped: their shares of shared
        frames (a frame nobody shares any more is freed) and their compression caches."""
        for r, vm in zip(self.vms, self.machine.vms, strict=True):
            if self.host.alive(vm.host_pid) or not (r.shared or r.cache_frames):
                continue
            for page, shared in list(r.shared.items()):
                self._drop_ref(shared, (r.index, page))
            if r.cache_frames:
                frames = np.array(r.cache_frames, dtype=np.int64)
                r.cache_frames.clear()
                reclaim.release_frames(self.host.machine, frames, frames.size)

    def tick(self, now: float) -> None:
        """One reclamation step at simulated time ``now`` (ns), and the host's way out when
        it leaves every running VM blocked for good (:meth:`_unstick`)."""
        free, evicted = self.free_pages(), self.host_evictions()
        self._step(now)
        self._unstick(free, evicted)

    def host_evictions(self) -> int:
        """Pages the host has evicted so far, every VM's together."""
        return int(self.host.pctr[:, C_EVICTIONS].sum())

    def _unstick(self, free: int, evicted: int) -> None:
        """After a reclamation step (``free`` pages and ``evicted`` host evictions before
        it): when every VM that still runs is blocked in the low state and the step could
        neither evict a page nor free one, the host is out of memory. Once that has held
        for longer than an allocation period (whose new targets could unblock a VM), the
        host stops the largest VM, as its out-of-memory rule does when a fault finds
        nothing to evict; without it no VM would run again, and a run bounded only by
        accesses would never end."""
        running = [
            vm
            for vm in self.machine.vms
            if self.host.alive(vm.host_pid)
            and any(vm.guest.alive(r.pid) and not r.finished for r in vm.reports)
        ]
        stuck = (
            bool(running)
            and all(self.blocked(vm) for vm in running)
            and self.free_pages() <= free
            and self.host_evictions() == evicted
        )
        self.stuck_steps = self.stuck_steps + 1 if stuck else 0
        if self.stuck_steps <= self.config.allocation.period / self.config.control_period + 1:
            return
        self.stuck_steps = 0
        if self.host.oom_kill(STUCK_REASON) is not None:
            self.reap()
            self.machine.shoot_down_evicted()

    def _step(self, now: float) -> None:
        """The reclamation step itself: states, sampling, targets, and the techniques."""
        self.reap()
        cfg = self.config
        dt = (now - self.last_tick) / 1e9
        self.last_tick = now
        host = self.host
        state = self.states.update(self.free_pages(), now)
        if now >= self.next_sample:
            self._sample(now)
            self.next_sample = now + cfg.allocation.sample_period * 1e9
        if now >= self.next_allocation:
            self._allocate()
            self.next_allocation = now + cfg.allocation.period * 1e9
        if self.machine.host_huge_pages:
            # reclamation works on base pages; huge pages are not broken up (see
            # HypervisorConfig.huge_pages): the states are kept, nothing is reclaimed
            self._record(now)
            return
        if cfg.sharing.enabled and self.states.enabled("sharing") and dt > 0:
            self._scan(dt)
        if cfg.balloon.enabled:
            self._balloon(dt, state)
        compress = cfg.compression.enabled and self.states.enabled("compression")
        host.cfg[K_COMPRESS] = 1 if compress else 0
        if self.states.enabled("swapping") or compress:
            self._swap(self.states.enabled("swapping"))
        self._enforce_limits()
        self._settle_caches()
        self.states.update(self.free_pages(), now)
        self._record(now)

    def _claims(self) -> list[Claim]:
        return [
            Claim(
                shares=r.shares,
                active=r.estimator.estimate,
                allocated=self.allocated(vm),
                minimum=min(r.minimum, r.maximum),
                maximum=r.maximum,
            )
            for r, vm in zip(self.vms, self.machine.vms, strict=True)
        ]

    def _allocate(self) -> None:
        """Each VM's target: its entitlement of the memory the VMs may hold."""
        host = self.host
        overhead = (
            host.config.frames
            - self.free_pages()
            - sum(self.allocated(vm) for vm in self.machine.vms)
        )
        available = host.config.frames - overhead - self.states.threshold_pages("clear")
        claims = self._claims()
        available = max(available, sum(c.minimum for c in claims))
        shares = entitlements(claims, available, self.config.allocation.idle_tax)
        for r, share in zip(self.vms, shares, strict=True):
            r.target = share

    def _sample(self, now: float) -> None:
        """Close a sampling period: the estimate takes its sample; start the next period."""
        ac = self.config.allocation
        for r, vm in zip(self.vms, self.machine.vms, strict=True):
            if r.sample_size:
                fraction = r.sample_seen / r.sample_size
                if r.periods == 0:  # the first measurement: both averages start from it
                    r.estimator.fast = r.estimator.slow = fraction
                r.estimator.add_sample(fraction)
                r.active_true = vm.true_active() / r.real_pages
                r.active_true_sum += r.active_true
                r.active_estimate_sum += r.estimator.estimate
                r.periods += 1
            k = min(ac.sample_pages, r.real_pages)
            pick = r.rng.choice(r.real_pages, size=k, replace=False)
            r.sample_unseen[:] = 0
            bits = np.left_shift(np.uint64(1), (pick & 63).astype(np.uint64))
            np.bitwise_or.at(r.sample_unseen, pick >> 6, bits)  # pages may share a word
            r.sample_seen = 0
            r.sample_size = k
            # as ESX does, the sampled pages' translations are invalidated, so that the next
            # access to each is seen
            self.machine.shoot_down(vm, pick)
            vm.reset_true_active()

    def _scan(self, dt: float) -> None:
        """Scan pages for identical contents (ESX's content-based page sharing): each VM's
        share of the scan rate for ``dt`` seconds."""
        sc = self.config.sharing
        total = None if sc.total_rate is None else int(sc.total_rate / self.page * dt)
        plan = []
        for r, vm in zip(self.vms, self.machine.vms, strict=True):
            rate = (sc.scan_rate / self.page) if sc.scan_rate is not None else (
                r.real_pages / sc.scan_period)  # fmt: skip
            n = min(r.real_pages, int(rate * dt + r.rng.random()))
            if total is not None:
                n = min(n, total)
                total -= n
            if n > 0:
                plan.append((vm, n))
        if plan:
            # room for the step's scans at once: the tables are not rebuilt between them
            self._reserve(sum(n for _, n in plan))
            for vm, n in plan:
                self._scan_pages(vm, n)

    def scan(self, vm: VM, n: int) -> None:
        """Scan the next ``n`` real pages of ``vm`` (from its cursor, wrapping; at most all
        of them) for contents to share.

        A kernel (:func:`memvirt.dataplane.sharing.scan`) visits the pages; the pages
        it shares join their VMs' logs, which ``VMReclaim.shared`` shows."""
        self._reserve(n)
        self._scan_pages(vm, n)

    def _reserve(self, n: int) -> None:
        """Room in the sharing tables for scans of ``n`` pages in all: they add at most n
        contents and shared frames, and 2 n shared pages (a hint's page and the page
        scanned)."""
        tables = self.sharing.tables
        tables.reserve(len(self.vms), self._most_pages, contents=n, pages=2 * n, frames=n)
        if tables.watch is not self._watched:
            self._watch_guests()

    def _watch_guests(self) -> None:
        """Each guest notes the content changes of its shared pages in a watch log of its
        own, through its row of the sharing tables' watch map, so that the check for broken
        sharing before each host pass (:meth:`before_host_pass`) visits those pages alone,
        not every shared page (as the hardware traps a write to a page mapped read-only).
        Done again whenever the map is made anew (only pages a scan shared are watched,
        and every scan reserves room first)."""
        tables = self.sharing.tables
        for vm in self.machine.vms:
            guest = vm.guest
            guest.watch = tables.watch[vm.index]
            if guest.watch_log.shape[0] < WATCH_LOG_CAPACITY:
                guest.watch_log = np.zeros(WATCH_LOG_CAPACITY, dtype=np.int64)
            guest.cfg[K_COW] = 1
        self._watched = tables.watch

    def _scan_pages(self, vm: VM, n: int) -> None:
        """:meth:`scan`, the tables' room reserved."""
        r = self.vms[vm.index]
        cursor = r.scan_cursor
        r.scan_cursor = int((r.scan_cursor + n) % r.real_pages)
        salt = r.index if not self.config.sharing.inter_vm else sharing_dp.NO_SALT
        tables = self.sharing.tables
        guest = vm.guest.frames
        hint_rows, hint_tokens = self._read_hints(r, vm, salt, cursor, n)
        _, shared, _, missing = sharing_dp.scan(
            self.host.machine, tables.bundle, guest.fi64, guest.fi32, r.index, vm.host_pid,
            salt, cursor, n, r.real_pages, self._host_pids, self.machine.hypervisor_pid,
            hint_rows, hint_tokens, tables.events,
        )  # fmt: skip
        if missing:
            raise RuntimeError(f"sharing scan of {vm.name}: {missing} hints not read before")
        self.reclaimed["sharing"] += int(shared)

    @cached_property
    def _host_pids(self) -> np.ndarray:
        """Each VM's host process, by VM index."""
        return np.array([vm.host_pid for vm in self.machine.vms], dtype=np.int64)

    @cached_property
    def _most_pages(self) -> int:
        """The real pages of the largest VM."""
        return max(r.real_pages for r in self.vms)

    def _read_hints(
        self, r: VMReclaim, vm: VM, salt: int, cursor: int, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Before a scan of ``vm``: the hints in other VMs the scan may check, as sorted
        contents rows, and their pages' current tokens (the kernel sees one guest's arrays
        only). None when salted: a VM's keys lead to its own pages only. The rows are
        those of the tables as they are now: read after :meth:`SharingTables.reserve`."""
        if salt != sharing_dp.NO_SALT:
            return sharing_dp.NO_HINTS, sharing_dp.NO_HINTS
        tables = self.sharing.tables
        guest = vm.guest.frames
        slots = np.empty(n, dtype=np.int64)
        k = sharing_dp.hints_elsewhere(tables.bundle, guest.fi64, guest.fi32, r.index, salt,
                                       cursor, n, r.real_pages, slots)  # fmt: skip
        rows = np.unique(slots[:k])
        hints = ~tables.contents[rows, sharing_dp.CT_VALUE]
        hint_vms, hint_pages = hints >> sharing_dp.HINT_SHIFT, hints & sharing_dp.HINT_PAGE
        tokens = np.empty(rows.size, dtype=np.int64)
        for v in np.unique(hint_vms).tolist():
            mine = hint_vms == v
            tokens[mine] = self.machine.vms[v].guest.frames.fi64[hint_pages[mine], G_TOKEN]
        return rows, tokens

    def _unshare(self, vm: VM, page: int) -> None:
        """``page`` of ``vm`` no longer maps its shared frame (a write, or it was discarded)."""
        if page not in self.vms[vm.index].shared:
            raise KeyError(page)
        self._unshare_pages(vm, np.array([page], dtype=np.int64))

    def _unshare_pages(self, vm: VM, pages: np.ndarray) -> None:
        """Those of ``pages`` of ``vm`` that map a shared frame no longer do, in order."""
        if not self.vms[vm.index].shared:
            return
        out = np.empty(pages.size, dtype=np.int64)
        pages = np.ascontiguousarray(pages, dtype=np.int64)
        sharing_dp.unshare_pages(self.host.machine, self.sharing.tables.bundle, vm.index,
                                 vm.host_pid, pages, out)  # fmt: skip

    def _drop_ref(self, shared: int, who: tuple[int, int]) -> None:
        """``who`` (vm index, real page) no longer maps ``shared``; after the last page, the
        frame is freed."""
        vm_index, page = who
        sharing_dp.drop_ref(self.host.machine, self.sharing.tables.bundle, shared, vm_index,
                            page)  # fmt: skip

    def _balloon(self, dt: float, state: str) -> None:
        """Move each balloon toward its target, within the inflate and deflate rates."""
        bc = self.config.balloon
        inflate_cap = int(bc.inflate_rate / self.page * dt)
        deflate_cap = int(bc.deflate_rate / self.page * dt)
        ballooning = self.states.enabled("ballooning")
        for r, vm in zip(self.vms, self.machine.vms, strict=True):
            if not r.has_driver:
                continue
            most = int(r.real_pages * bc.max_percent / 100.0)
            allocated = self.allocated(vm)
            over_limit = max(0, allocated - r.maximum)
            if state == "high":
                want = r.balloon_n + over_limit if over_limit else 0
            elif ballooning:
                want = r.balloon_n + allocated - r.target
            else:
                want = r.balloon_n if allocated >= r.target else 0
            want = max(0, min(most, want))
            if want > r.balloon_n:
                self._inflate(r, vm, min(want - r.balloon_n, inflate_cap))
            elif want < r.balloon_n:
                self._deflate(r, vm, min(r.balloon_n - want, deflate_cap))

    def _inflate(self, r: VMReclaim, vm: VM, n: int) -> None:
        if n <= 0:
            return
        guest = vm.guest
        out = np.empty(n, dtype=np.int64)
        got = 0
        step = min(self.machine.quantum, BALLOON_STEP) + 1
        while got < n:
            guest.st[S_RING_N] = 0
            ask = min(step, n - got)
            guest.ensure_ring(ask)  # the guest logs each eviction
            # the frames beyond the free ones come from evictions, each may take a swap slot
            guest_m = guest.reserve_slots(max(0, ask - int(guest.st[S_FREE_TOP])))
            # the guest's writes to its swap are asynchronous (as the host's are): no stall
            k = reclaim.balloon_inflate(guest_m, r.balloon_pid, ask, out[got:])
            # guest pages written to its swap that the hypervisor had swapped must be read
            # back first: that read stalls the guest
            extra = self.double_paging(vm)
            if extra.size:
                hd = self.machine.host_touch(vm, extra, np.zeros(extra.size, np.uint8))
                r.pending_ns += self.machine.host_stall(hd)
            got += k
            if k == 0:
                break
        pages = out[:got]
        self._discard(r, vm, pages)
        if r.balloon.size < r.balloon_n + got:
            grown = np.zeros(max(r.balloon_n + got, 2 * r.balloon.size), dtype=np.int64)
            grown[: r.balloon_n] = r.balloon[: r.balloon_n]
            r.balloon = grown
        r.balloon[r.balloon_n : r.balloon_n + got] = pages
        r.balloon_n += got

    def _discard(self, r: VMReclaim, vm: VM, pages: np.ndarray) -> None:
        """The hypervisor frees what backs the balloon's pages (shared ones are unshared
        first)."""
        pages = np.ascontiguousarray(pages, dtype=np.int64)
        shared_out = np.empty(max(1, pages.size), dtype=np.int64)
        freed = sharing_dp.discard_pages(self.host.machine, self.sharing.tables.bundle,
                                         vm.index, vm.host_pid, len(r.shared) > 0, pages,
                                         shared_out)  # fmt: skip
        self.reclaimed["ballooning"] += int(freed)
        self.machine.forget(vm, pages)

    def _deflate(self, r: VMReclaim, vm: VM, n: int) -> None:
        if n <= 0:
            return
        start = r.balloon_n - n
        reclaim.release_frames(vm.guest.machine, r.balloon[start : r.balloon_n], n)
        r.balloon_n = start

    def _swap(self, swap: bool) -> None:
        """Evict pages of the VMs that gain least from them, until free memory is back at
        the level that ends the state (min-funded revocation). Pages compressed take
        frames for the compression caches back (about half a frame each, at most 2 KiB a
        page): free memory is counted again after the caches have taken theirs, and more
        pages evicted, until it is at that level or nothing more can go."""
        host = self.host
        for _ in range(SWAP_ROUNDS):
            need = self.states.target_free_pages() - int(host.st[S_FREE_TOP])
            if need <= 0:
                return
            claims = self._claims()
            take = revoke(claims, need, self.config.allocation.idle_tax)
            evicted = self.host_evictions()
            for vm, n in zip(self.machine.vms, take, strict=True):
                if n > 0:
                    self._evict(vm, n, compress_only=not swap)
            self._settle_caches()
            if self.host_evictions() == evicted:  # nothing more could go
                return

    def _evict(self, vm: VM, n: int, *, compress_only: bool = False) -> None:
        """The hypervisor takes ``n`` pages of ``vm`` out of memory (compressed when they
        fit and compression is on, swapped otherwise); with ``compress_only`` only pages
        that compress are taken."""
        host = self.host
        host_m = host.machine
        out = np.empty(n, dtype=np.int64)
        got = reclaim.pick_frames(host_m, vm.host_pid, n, self.config.swap_victim == "lru", out)
        frames = out[:got]
        if compress_only:
            sizes = np.array(
                [native.compressed_bytes(host.proc, vm.host_pid, int(t))
                 for t in host.frames.fi64[frames, G_TOKEN]], dtype=np.int64,
            )  # fmt: skip
            frames = frames[sizes <= native.COMPRESSION_LIMIT]
        before = int(host.pctr[:, C_COMPRESSIONS].sum())
        host.st[S_RING_N] = 0
        host_m = host.reserve_slots(frames.size)  # each eviction may take a slot
        done = int(reclaim.evict_frames(host_m, frames, frames.size))
        compressed = int(host.pctr[:, C_COMPRESSIONS].sum()) - before
        self.reclaimed["compression"] += compressed
        self.reclaimed["swapping"] += done - compressed
        self.machine.shoot_down_evicted()

    def _enforce_limits(self) -> None:
        """A VM never holds more than its limit, whatever the state: what ballooning has not
        taken back (no driver, or ballooning off) the hypervisor swaps out."""
        for r, vm in zip(self.vms, self.machine.vms, strict=True):
            excess = self.allocated(vm) - r.maximum
            if excess > 0:
                self._evict(vm, excess)

    def _settle_caches(self) -> None:
        """Each VM's compression cache holds as many frames as its compressed bytes fill."""
        host = self.host
        if not self.config.compression.enabled:
            # no cache holds a byte (each one's capacity is 0): nothing to take or give back,
            # after every host pass
            self.machine.shoot_down_evicted()
            return
        for r, vm in zip(self.vms, self.machine.vms, strict=True):
            used = int(host.proc[vm.host_pid, P_COMP_BYTES])
            need = -(-used // self.page)
            more = need - len(r.cache_frames)
            if more > 0:
                got = np.empty(more, dtype=np.int64)
                k = reclaim.grab_frames(host.reserve_slots(more), self.machine.hypervisor_pid,
                                        more, got)  # fmt: skip
                r.cache_frames.extend(got[:k].tolist())
            if len(r.cache_frames) > need:
                extra = np.array(r.cache_frames[need:], dtype=np.int64)
                del r.cache_frames[need:]
                reclaim.release_frames(host.machine, extra, extra.size)
            self.machine.shoot_down_evicted()

    # ---------------------------------------------------------------- outputs

    def _record(self, now: float) -> None:
        """Keep the maxima; add the time series' rows when one is due."""
        free = self.free_pages()
        due = now >= self.next_row
        shared_frames = len(self.sharing.owners)
        # the VMs' host rows read at once, as lists: one numpy call, not a few per figure
        procs = self.host.proc[self._host_pids].tolist()
        for r, vm, proc in zip(self.vms, self.machine.vms, procs, strict=True):
            shared = len(r.shared)
            compressed = proc[P_COMPRESSED]
            swapped = proc[P_SWAPPED] - compressed
            m = r.maxima
            m["balloon"] = max(m["balloon"], r.balloon_n)
            m["shared"] = max(m["shared"], shared)
            m["compressed"] = max(m["compressed"], compressed)
            m["host_swapped"] = max(m["host_swapped"], swapped)
            if not due:
                continue
            # the guest's counters summed over its processes, as Kernel.counters does
            guest = vm.guest.pctr.tolist()
            self.rows.append(
                {
                    "time_s": now / 1e9,
                    "vm": vm.name,
                    "allocated_pages": self.allocated(vm),
                    "target_pages": r.target,
                    "active_true": r.active_true,
                    "active_estimated": r.estimator.estimate,
                    "balloon_pages": r.balloon_n,
                    "shared_pages": shared,
                    "compressed_pages": compressed,
                    "host_swapped_pages": swapped,
                    "accesses": sum(row[C_ACCESSES] for row in guest),
                    "guest_major_faults": sum(row[C_MAJOR] for row in guest),
                    "host_major_faults": int(self.host.pctr[vm.host_pid, C_MAJOR]),
                    "host_free_pages": free,
                    "host_shared_frames": shared_frames,
                    "host_state": self.states.state,
                }
            )
        if due:
            period = self.config.timeseries_period
            self.next_row = now + (0.0 if period is None else period * 1e9)

    def vm_summary(self, vm: VM) -> dict[str, Any]:
        """The reclamation keys of one VM's summary."""
        r = self.vms[vm.index]
        h = self.host.counters(vm.host_pid)
        return {
            "target_pages": r.target,
            "balloon_pages": r.balloon_n,
            "balloon_pages_max": r.maxima["balloon"],
            "shared_pages": len(r.shared),
            "shared_pages_max": r.maxima["shared"],
            "compressed_pages": self.compressed(vm),
            "compressed_pages_max": r.maxima["compressed"],
            "host_swapped_pages_max": r.maxima["host_swapped"],
            "compressions": h["compressions"],
            "decompressions": h["decompressions"],
            "active_fraction_estimated": r.estimator.estimate,
            "active_fraction_true": r.active_true,
            "active_fraction_estimated_mean": (
                r.active_estimate_sum / r.periods if r.periods else None
            ),
            "active_fraction_true_mean": r.active_true_sum / r.periods if r.periods else None,
            "double_paging_reads": r.double_paging_reads,
            "blocked_seconds": r.blocked_ns / 1e9,
        }

    def host_summary(self, now: float) -> dict[str, Any]:
        """The reclamation keys of the host's summary."""
        return {
            "min_free_pages": self.min_free_pages,
            "state": self.states.state,
            "time_in_state": self.states.time_in_state(now),
            "reclaimed_pages": dict(self.reclaimed),
            "shared_frames": len(self.sharing.owners),
            "sharing_saved_pages": sum(len(r.shared) for r in self.vms) - len(self.sharing.owners),
            "sharing_copies": self.sharing.copies,
        }
