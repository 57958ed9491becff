"""A host with virtual machines: two-level mapping, in simulated time.

The hypervisor is a :class:`~memvirt.kernel.kernel.Kernel` on the host's
physical memory whose *processes are the VMs*: a VM's real address space is
one region ``[0, real memory)``, and the host kernel's page table for it is
the hypervisor's real → physical table, a radix tree in host memory. A real
page gets a physical frame on first touch (a host fault); when no frame is
free the host kernel swaps out a real page of some VM to the host swap —
chosen at random, as ESX does (``swap_victim = "random"``: the
``random-frame`` policy, a uniformly drawn frame), or by clock as an LRU
approximation — and the guest does not know.

Each VM runs a guest :class:`Kernel` on its real memory: its frames are
real pages. A guest process's access goes through the guest's TLB (tagged
by VM and process); on a miss the guest walk reads ``n`` guest entries,
each in a guest page-table page whose real page the hypervisor must
translate, and then the data page's real page:

- **nested paging** (two-dimensional walk, Bhargava et al., ASPLOS 2008):
  every one of those ``n + 1`` real pages is translated by an ``m``-level
  walk of the host table, ``n + (n + 1) m = (n + 1)(m + 1) - 1`` references
  — 24 for 4 + 4 levels, 35 for 5 + 5;
- with **page-walk caches** (nested paging), a small cache of host
  translations of guest page-table pages (``WALK_CACHE_ENTRIES``) spares the
  host walk of a guest level whose table page it holds: as few as
  ``n + m`` references for a warm walk;
- **shadow paging**: the hypervisor keeps a virtual → physical shadow table
  per guest process, so a TLB miss walks ``n`` levels only; every write of a
  guest page-table entry (a guest fault, an eviction) traps to the
  hypervisor — a VM exit — to keep the shadow in step.

A VM's processes share its vCPUs (``vcpus``): process *i* runs on vCPU
*i* mod ``vcpus``, and a vCPU runs its processes in turn, a quantum each.

How it is computed: the guest's data plane records the real pages each walk
reads; the host kernel then runs those real pages as accesses of the VM's
process without a TLB, so its walks are the host part of the 2-D walk and
its faults are host faults. When the host evicts a real page, the guest TLB
entries that map it are shot down. Within one quantum the guest runs before
the host, so a guest TLB hit on a page the host evicted earlier in the same
quantum is not seen; quanta are kept short for that reason.

A quantum is a turn in two parts (:class:`~memvirt.engine.loop.Phases`): the
guest's run, then the host pass and the accounting. Another VM's guest may
run while this VM's pass finishes, on a second core, when its quantum begins
before this VM's next one can (the turn's ``earliest`` bound: the guest's own
time and stalls, and the pass's walks at the fewest host levels they read;
see :meth:`VirtualizedMachine.host_walk_depth`): what the pass does to
that VM (shootdowns, its pages' swap copies) waits for that VM's own pass
(``VM.deferred``), and the pages that VM wrote meanwhile through
translations it still held are written again in its pass, as such a write
would fault in the host. The results do not depend on the order or on the
threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from memvirt.config import Scenario, ScenarioError, VMConfig
from memvirt.dataplane import native, reclaim
from memvirt.dataplane.layout import (
    F_FLAGS,
    F_OWNER,
    FR_DIRTY,
    FR_TABLE,
    K_RECORD,
    K_RING,
    K_SYNC,
    N_RING,
    RING_OWNER,
    RING_VPN,
    S_REC_N,
    S_RING_N,
    S_TOKEN,
)
from memvirt.engine.cost import stall_ns
from memvirt.engine.faults import FaultInjector, lose_frames
from memvirt.engine.history import PageRef, PageWatch
from memvirt.engine.loop import EventLoop, Phases
from memvirt.engine.native import (
    SCHEMA_VERSION,
    ContentError,
    ProcessPlan,
    ProcessReport,
    check_reads,
    close_report,
    next_chunk,
    record_writes,
    settle,
)
from memvirt.hypervisor.reclamation import Reclaimer
from memvirt.kernel.kernel import Kernel, KernelConfig, Region, describe_pte
from memvirt.traces.model import Trace
from memvirt.workloads.ahead import cores
from memvirt.workloads.contents import assign

#: No real pages.
_NO_PAGES = np.zeros(0, dtype=np.int64)
#: Evictions the host logs per pass before the guests' TLBs are flushed whole.
RING_CAPACITY = 1 << 12
#: Entries a guest's walk record (real pages its walks read, 4 bytes each) starts with. A
#: full record doubles, up to what a whole quantum's walks can need, so a quantum is never
#: cut short: a quantum of 10,000 accesses at 4 levels fits in these unless more than
#: 6,553 of them walk (two thirds: the guests of bench_vms.py walk on 55% of their
#: accesses), and a longer quantum grows the record as its walks need.
RECORD_CAPACITY = 1 << 15
#: Rows a guest's eviction ring starts with (32 bytes each). It doubles before a fault
#: that might not find room: most guests under a hypervisor seldom evict, and a ring sized
#: for a quantum's worst case (one eviction a walk) took 6.5 bytes per real page.
RING_START = 1 << 10
#: A process spanning more pages than this is left out of the true active set.
TOUCH_BITMAP_LIMIT = 1 << 26
#: Entries of a VM's page-walk cache: host translations of guest page-table pages,
#: the "nested TLB" of Bhargava et al. (ASPLOS 2008), in the size range of the MMU
#: caches Barr, Cox and Rixner study (ISCA 2010: tens of entries).
WALK_CACHE_ENTRIES = 32


class AccountingError(ContentError):
    """The check found a frame or a page accounted for not exactly once."""


#: What each code of :func:`memvirt.dataplane.reclaim.check_accounting` means.
ACCOUNTING_ERRORS = {
    reclaim.CHECK_FREE_OWNED: "a frame on the free list has an owner (frame)",
    reclaim.CHECK_FREE_TWICE: "a frame is on the free list twice (frame)",
    reclaim.CHECK_LOST_FRAME: "frames are not conserved: some are neither free nor owned",
    reclaim.CHECK_WRONG_OWNER: "its frame belongs to another VM (frame)",
    reclaim.CHECK_MAPPED_TWICE: "its frame is mapped by another page too (frame)",
    reclaim.CHECK_UNMAPPED: "a private frame of the VM maps no page (frame)",
    reclaim.CHECK_BACK_POINTER: "its frame's back-pointer names another page (frame)",
    reclaim.CHECK_SLOT_OWNER: "its swap slot is not the VM's (slot)",
    reclaim.CHECK_SLOT_TWICE: "a swap slot holds two pages (slot)",
    reclaim.CHECK_SLOT_LOST: "a used swap slot holds no page (slot)",
    reclaim.CHECK_COUNTS: "its resident, swapped or compressed counts are wrong (swapped)",
    reclaim.CHECK_BALLOON_BACKED: "a balloon page is still backed by the host (frame or slot)",
}


@dataclass
class VM:
    """One virtual machine: its host process, its guest kernel and its processes."""

    name: str
    index: int
    config: VMConfig
    host_pid: int
    guest: Kernel
    real_pages: int
    balloon_pid: int = -1
    os_pid: int = -1
    reports: list[ProcessReport] = field(default_factory=list)
    walk_cache: np.ndarray = field(
        default_factory=lambda: np.full(WALK_CACHE_ENTRIES, -1, dtype=np.int64)
    )
    walk_cache_stamps: np.ndarray = field(
        default_factory=lambda: np.zeros(WALK_CACHE_ENTRIES, dtype=np.int64)
    )
    walk_cache_clock: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    #: scratch bitmap over the real pages for the settling after a host pass (all clear)
    settle_marks: np.ndarray = field(default_factory=lambda: np.zeros((2, 1), dtype=np.int64))
    walk_cache_hits: int = 0
    vm_exits: int = 0
    guest_refs: int = 0
    host_refs: int = 0
    #: per process: the token each page written last got (the content check's record)
    expected: dict[int, dict[int, int]] = field(default_factory=dict)
    #: per process: (first page, pages touched this sampling period), for the true active set
    touched: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)
    #: the guest runs a quantum whose host pass has not come yet (see _turn)
    in_flight: bool = False
    #: evictions of the VM's real pages (host ring rows) made by other VMs' host passes
    #: while it was in flight: shot down, and their swap copies settled, before its pass
    deferred: list[np.ndarray] = field(default_factory=list)
    #: the host's eviction ring overflowed while the VM was in flight
    deferred_all: bool = False
    #: real pages of ``deferred`` the guest wrote meanwhile: its next pass writes them again
    rewrites: np.ndarray = field(default_factory=lambda: _NO_PAGES)
    #: the fewest host entries a walk of one of its real pages reads (see host_walk_depth),
    #: and how many host table pages the VM had when it was found
    host_walk_depth: int = 0
    host_walk_tables: int = -1

    def mark_touched(self, pid: int, vpns: np.ndarray) -> None:
        """Note the pages a process touched (the true active set, for comparison with the
        sampled estimate)."""
        span = self.touched.get(pid)
        if span is None or vpns.size == 0:
            return
        lo, bits = span
        reclaim.mark_span(bits, vpns, lo)

    def true_active(self) -> int:
        """Pages the VM's processes touched in the current sampling period."""
        return sum(int(np.count_nonzero(bits)) for _, bits in self.touched.values())

    def reset_true_active(self) -> None:
        for _, bits in self.touched.values():
            bits[:] = False


class VirtualizedMachine:
    """A hypervisor, its VMs and their guest processes, run by one event loop."""

    def __init__(
        self,
        scenario: Scenario,
        plans: dict[str, list[ProcessPlan]],
        *,
        quantum: int,
    ) -> None:
        host = scenario.host
        hyp = scenario.hypervisor
        if hyp is None:  # pragma: no cover - the config gives VMs a hypervisor table
            raise ScenarioError(f"{scenario.source}: VMs need a [hypervisor] table")
        self.scenario = scenario
        self.walk_caches = hyp.page_walk_caches and hyp.paging == "nested"
        self.control_period_ns = hyp.control_period * 1e9
        self.check = scenario.run.check
        self.paging = hyp.paging
        self.cost = scenario.cost
        self.quantum = quantum
        page = host.page_size
        span = host.geometry().huge_page_size
        huge_backing = sum(-(-vm.memory // span) for vm in scenario.vms) if hyp.huge_pages else 0
        self.host_huge_pages = hyp.huge_pages
        self.host = Kernel(
            KernelConfig(
                frames=host.frames,
                geometry=host.geometry(),
                policy="random-frame" if hyp.swap_victim == "random" else "clock",
                tlb=None,
                swap_slots=hyp.host_swap.size // page,
                swap_kind=hyp.host_swap.device,
                huge_pages=huge_backing,
                seed=scenario.run.seed,
                # the VMs, the hypervisor's own frames, and memory the host may lose
                max_processes=len(scenario.vms) + 2,
                mapped_pages=sum(-(-vm.memory // page) for vm in scenario.vms),
            )
        )
        self.host.cfg[K_RING] = 1
        self.host.ring = np.zeros((RING_CAPACITY, N_RING), dtype=np.int64)
        # the host notes which frames' contents change, so that a pass settles only those
        self.host.changed = np.zeros(-(-self.host.frames.fi32.shape[0] // 64), dtype=np.int64)
        self.host.cfg[K_SYNC] = 1
        self.vms: list[VM] = []
        self.loop = EventLoop()
        self.total_accesses = 0
        self.vcpus_running = 0
        for k, vmc in enumerate(scenario.vms):
            real = Region(0, vmc.memory, huge=hyp.huge_pages, name="real memory")
            host_pid = self.host.spawn([real], name=vmc.name)
            geometry = vmc.geometry(host)
            guest = Kernel(
                KernelConfig(
                    frames=vmc.memory // page,
                    geometry=geometry,
                    policy=vmc.guest.policy,
                    tlb=host.tlb_config(),
                    swap_slots=vmc.guest.swap // page,
                    huge_pages=vmc.guest.huge_pages,
                    seed=scenario.run.seed + k + 1,
                    max_processes=len(vmc.processes) + 2,
                )
            )
            guest.cfg[K_RECORD] = 1
            # the guest notes which of its frames' contents change, for the content sync
            guest.changed = np.zeros(-(-(vmc.memory // page) // 64), dtype=np.int64)
            guest.cfg[K_SYNC] = 1
            # the walk record holds a quantum's walks: it starts with RECORD_CAPACITY
            # entries, and grows when it must (Kernel.run)
            need = quantum * (geometry.levels + 1) + 8
            guest.record = np.zeros(min(need, RECORD_CAPACITY), dtype=np.int32)  # REC_*
            guest.record_limit = need
            # the guest logs its evictions, so double paging can be seen: in a ring that
            # grows before a fault might not find room (K_RING 2)
            guest.cfg[K_RING] = 2
            guest.ring = np.zeros((RING_START, N_RING), dtype=np.int64)
            # each VM's written pages get tokens of their own range, distinct from every
            # other VM's (and from the content model's classes, in bits 60-61)
            guest.st[S_TOKEN] = (k + 1) << 44
            vm = VM(vmc.name, k, vmc, host_pid, guest, vmc.memory // page)
            vm.settle_marks = np.zeros((2, -(-vm.real_pages // 64)), dtype=np.int64)
            self.vms.append(vm)
            # the VM's processes share its vCPUs: process i runs on vCPU i mod vcpus
            queues: list[list[Any]] = [[] for _ in range(min(vmc.vcpus, len(plans[vmc.name])))]
            for i, plan in enumerate(plans[vmc.name]):
                pid = guest.spawn(plan.regions, name=plan.name)
                report = ProcessReport(plan.name, pid, start_ns=plan.start_s * 1e9)
                vm.reports.append(report)
                lo = min(r.start for r in plan.regions) // page
                hi = max(r.start + r.length for r in plan.regions) // page
                if hi - lo <= TOUCH_BITMAP_LIMIT:
                    vm.touched[pid] = (lo, np.zeros(hi - lo, dtype=bool))
                queues[i % len(queues)].append((plan.start_s * 1e9, self._turn(vm, plan, report)))
            for c, queue in enumerate(queues):
                first = min(start for start, _ in queue)
                self.loop.add(f"{vm.name}/vcpu{c}", _vcpu(queue, self, vm.name), first)
                self.vcpus_running += 1
            vm.balloon_pid = guest.spawn([Region(0, page, name="balloon driver")], name="balloon")
            guest.oom_exempt.add(vm.balloon_pid)
        # the hypervisor's own frames: shared pages and compression caches
        self.hypervisor_pid = self.host.spawn([Region(0, page)], name="hypervisor")
        self.host.oom_exempt.add(self.hypervisor_pid)
        for vm in self.vms:
            self._boot(vm, scenario.run.seed)
        self.reclaimer = Reclaimer(self, hyp, scenario.run.seed)
        self.loop.add("hypervisor", self._control, 0.0)
        #: when the hypervisor's next reclamation step runs (simulated ns)
        self.next_control_ns = 0.0
        self.lost_pid = -1
        #: set by memvirt.engine.history to follow one page through a rerun
        self.watch: PageWatch | None = None
        #: run one VM's guest on a second core while another's host pass finishes (None:
        #: when this process may run on more than one core); the results are the same
        self.threads: bool | None = None
        self.faults: FaultInjector | None = None
        if scenario.faults.any:
            self.faults = FaultInjector(self, scenario.faults, page)
            first = self.faults.first_ns
            if first is not None:
                self.loop.add("faults", self.faults.turn, first, daemon=True)

    # ------------------------------------------------------------------ injected faults

    def vm_named(self, name: str) -> VM:
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(f"no VM named {name!r}")

    def swap_kernel(self, device: str) -> Kernel:
        """The kernel whose swap device is ``device``: the host's, or a VM's guest's."""
        return self.host if device == "host" else self.vm_named(device).guest

    def stop_reason(self, vm: VM) -> str | None:
        """Why the host stopped ``vm`` (None while it runs)."""
        if self.host.alive(vm.host_pid):
            return None
        kill = next((k for k in self.host.kills if k.pid == vm.host_pid), None)
        return "stopped" if kill is None else kill.reason

    def crash_vm(self, name: str) -> str:
        """VM ``name`` crashes: the hypervisor stops it and frees what it held."""
        vm = self.vm_named(name)
        if not self.host.alive(vm.host_pid):
            return f"already stopped ({self.stop_reason(vm)})"
        held = self.reclaimer.allocated(vm)
        self.host.kill(vm.host_pid, "crashed (an injected fault)")
        self.reclaimer.reap()
        return f"stopped; {held} frames freed"

    def lose_memory(self, pages: int) -> str:
        """The host loses ``pages`` frames: free ones first, then frames whose pages the
        host evicts; when it can evict no more, VMs are stopped, the largest first."""
        host = self.host
        if self.lost_pid < 0:
            self.lost_pid = host.spawn_pseudo("lost memory")

        def settle() -> None:  # a stopped VM's shares go; the guests' TLBs follow evictions
            self.reclaimer.reap()
            self.shoot_down_evicted()

        why = "stopped by the host: out of memory after losing memory"
        got, stopped = lose_frames(host, self.lost_pid, pages, why, settle)
        outcome = f"{got} of {pages} frames lost"
        if stopped:
            names = ", ".join(vm.name for vm in self.vms if vm.host_pid in stopped)
            outcome += f"; VMs stopped: {names}"
        return outcome

    def after_fault(self, step: str) -> None:
        if self.watch is not None:
            self.watch.observe(self.loop.now, step.removeprefix("after "))
        if self.check:
            self.check_accounting(step)

    def running(self) -> bool:
        return self.vcpus_running > 0

    def _boot(self, vm: VM, seed: int) -> None:
        """The guest OS's own pages, touched at boot: their contents by the content model,
        their frames in the guest (dirty: they hold data) and in the host."""
        gc = vm.config.guest
        page = self.host.page_size
        if gc.os_memory == 0:
            return
        guest = vm.guest
        n = gc.os_memory // page
        base = 1 << 20  # the guest kernel's pages, in an address space of their own
        vm.os_pid = guest.spawn([Region(base * page, n * page, name="os")], name="os")
        vpns = base + np.arange(n, dtype=np.int64)
        step = guest.record.shape[0] // (guest.geometry.levels + 1)  # walks the record holds
        for start in range(0, n, step):
            guest.st[S_REC_N] = 0
            chunk = vpns[start : start + step]
            guest.run(vm.os_pid, chunk, np.zeros(chunk.size, dtype=np.uint8), page_numbers=True)
            walked = split_record(guest)
            self.host_touch(vm, walked.pages, walked.writes)
        guest.st[S_REC_N] = 0
        frames = np.array([reclaim.frame_of(guest.machine, vm.os_pid, int(v)) for v in vpns])
        tokens, _ = assign(gc.content, np.arange(n), vm_seed=seed * 1_000_003 + vm.index,
                           image=gc.image)  # fmt: skip
        guest.set_tokens(frames, tokens)
        guest.frames.fi32[frames, 4] |= FR_DIRTY  # F_FLAGS
        self.host_touch(vm, frames.astype(np.int64), np.ones(n, dtype=np.uint8))
        self.sync_contents(vm)

    def sync_contents(self, vm: VM) -> int:
        """Give the host frames of ``vm`` the contents of the real pages they hold.

        A real page's content is its guest frame's token. The guest writes pages
        through its TLB without the host seeing each write, as the hardware does
        through a cached translation; the hardware then sets the dirty bit of the
        host entry. So, before the host acts, every host frame whose real page
        changed takes the new token and turns dirty, and a host swap copy of it,
        now stale, is given back: a later eviction writes the page out again.

        Only the real pages named in the guest's change map are visited: the guest
        sets a page's bit wherever its token changes (``native.set_token``, a write
        in ``run_batch``, ``Kernel.set_tokens``), and the settling after a host pass
        sets the bits of the page-table pages the pass wrote or filled. In the check
        mode the whole VM is compared afterwards, and a page the map missed is an
        error. Returns how many frames changed.
        """
        host_m, content = self.host.machine, vm.guest.frames.fi64
        changed = int(reclaim.sync_changed(host_m, vm.host_pid, content, vm.guest.changed))
        if self.check:  # the change map must have named every page whose content changed
            missed = int(reclaim.sync_contents(host_m, vm.host_pid, content))
            if missed:
                raise ContentError(
                    f"VM {vm.name}: the content sync missed {missed} real pages whose "
                    "contents changed (their bits were not set in the guest's change map)"
                )
        return changed

    def host_touch(self, vm: VM, pages: np.ndarray, writes: np.ndarray) -> dict[str, int]:
        """The host runs ``pages`` of ``vm`` as accesses; the counters' change. The copies
        it makes (frames it faults in, pages it evicts to make room) take the pages' real
        contents, as after a host pass."""
        h0 = self.host.counters(vm.host_pid)
        self.host.st[S_RING_N] = 0
        self.host.run(vm.host_pid, pages, writes, page_numbers=True)
        self._settle_pass(vm, np.ascontiguousarray(pages, dtype=np.int64))
        h1 = self.host.counters(vm.host_pid)
        return {k: h1[k] - h0[k] for k in h1}

    def _settle_pass(self, vm: VM, data_pages: np.ndarray) -> None:
        """After the host ran accesses of ``vm``: the pages it evicted to swap and the data
        pages it touched hold their real contents (its own writes and zero-filling faults
        leave tokens behind the guests'); the guests' translations of evicted pages are
        shot down.

        Only the data pages whose frames the run changed are looked up: the host notes
        them in its change map (``reclaim.settle_changed``). In the check mode every data
        page is looked at afterwards, and one the map missed is an error."""
        evicted = int(self.host.st[S_RING_N])
        host_m = self.host.machine  # anew: the run may have grown the table pool
        for other in self.vms if evicted else ():  # (most passes evict nothing)
            if other.in_flight and other is not vm:  # its guest runs: see _settle_deferred
                continue
            content = other.guest.frames.fi64
            if evicted > self.host.ring.shape[0]:  # the ring overflowed: every swapped page
                reclaim.fix_all_swap_copies(host_m, other.host_pid, content)
            else:
                reclaim.fix_swap_copies(host_m, self.host.ring, evicted, other.host_pid, content)
        content = vm.guest.frames.fi64
        reclaim.settle_changed(host_m, vm.host_pid, data_pages, content, vm.settle_marks,
                               vm.guest.changed)  # fmt: skip
        if self.check:  # the change map must have named every frame the pass changed
            missed = int(reclaim.settle_tokens(host_m, vm.host_pid, data_pages, content))
            if missed:
                raise ContentError(
                    f"VM {vm.name}: settling after a host pass missed {missed} frames whose "
                    "contents the pass changed (their bits were not set in the host's "
                    "change map)"
                )
        self.shoot_down_evicted()

    def host_stall(self, hd: dict[str, int]) -> float:
        """Simulated ns the host's work (counters' change ``hd``) stalls a vCPU."""
        cost = self.cost
        disk_reads = hd["major_faults"] - hd["decompressions"]
        took = hd["minor_faults"] * cost.host_fault_ns
        took += disk_reads * (cost.host_fault_ns + cost.swap_read_ns)
        took += hd["decompressions"] * (cost.host_fault_ns + cost.decompress_ns)
        took += hd["writebacks"] * cost.swap_write_ns
        took += hd["compressions"] * cost.compress_ns
        return took

    def shoot_down(self, vm: VM, real_pages: np.ndarray) -> None:
        """Invalidate the guest translations that lead to ``real_pages`` (TLB entries and
        page-walk cache entries), so that the next access to each is seen by the host."""
        if real_pages.size == 0:
            return
        reclaim.shoot_down(vm.guest.machine, np.ascontiguousarray(real_pages, dtype=np.int64))
        self.forget(vm, real_pages)

    def forget(self, vm: VM, real_pages: np.ndarray) -> None:
        """The host no longer backs ``real_pages`` (balloon pages): drop cached walks."""
        if not self.walk_caches:  # the cache is never filled
            return
        cached = np.isin(vm.walk_cache, real_pages)
        if cached.any():
            vm.walk_cache[cached] = -1

    def shoot_down_evicted(self) -> None:
        """Shoot down the guest translations of the real pages the host evicted since its
        ring was cleared (the whole TLBs when the ring overflowed)."""
        evicted = int(self.host.st[S_RING_N])
        self.host.st[S_RING_N] = 0
        if evicted == 0:
            return
        if evicted > self.host.ring.shape[0]:  # the ring overflowed
            for other in self.vms:
                if other.in_flight:
                    other.deferred_all = True
                else:
                    self._flush_translations(other)
            return
        rows = self.host.ring[:evicted]
        for target in self.vms:  # (in order of host pid)
            if target.in_flight:  # its guest runs now: its pass settles these first
                mine = rows[rows[:, RING_OWNER] == target.host_pid]
                if mine.size:
                    target.deferred.append(mine)
            else:
                self._shoot_down_rows(target, rows)

    def _shoot_down_rows(self, vm: VM, rows: np.ndarray) -> None:
        """Shoot down the guest translations of ``vm``'s real pages that host ring ``rows``
        name as evicted (the rows of other VMs are passed over)."""
        shot = reclaim.shoot_down_ring(vm.guest.machine, rows, rows.shape[0], vm.host_pid)
        if shot and self.walk_caches:
            self.forget(vm, rows[rows[:, RING_OWNER] == vm.host_pid, RING_VPN])

    def _flush_translations(self, vm: VM) -> None:
        """Every guest translation of ``vm`` goes: its TLBs and its page-walk cache."""
        native.tlb_flush_asid(vm.guest.machine, -1)
        vm.walk_cache[:] = -1

    def _check_quantum(
        self, vm: VM, pid: int, vpns: np.ndarray, writes: np.ndarray, first_token: int
    ) -> None:
        """The content check: every page the quantum touched reads what was last written
        to it (its guest frame or guest swap slot holds the token the access stream says
        it should: the guest's per-write counter, in order), and every real page in use
        has a host copy (frame, shared frame, compression cache or swap) holding the same
        content."""
        guest = vm.guest
        expected = vm.expected.setdefault(pid, {})
        record_writes(expected, vpns, writes, first_token)
        bad = reclaim.first_bad_copy(self.host.machine, vm.host_pid, guest.machine,
                                     vm.balloon_pid)  # fmt: skip
        if bad >= 0:
            got = guest.frames.token(bad)
            where, host_token = reclaim.host_copy(self.host.machine, vm.host_pid, bad)
            raise ContentError(
                f"VM {vm.name}: real page {bad} (virtual page {guest.frames.vpn(bad):#x} of "
                f"process {guest.frames.owner(bad)}) holds {got:#x} in the guest, but the "
                "host " + ("keeps no copy of it" if where == 0 else f"keeps {host_token:#x}"),
                PageRef(vm=vm.name, real_page=bad),
            )
        check_reads(guest, pid, vpns, expected, f"VM {vm.name}", vm=vm.name)
        self.check_accounting(f"after a quantum of VM {vm.name}'s process {pid}")

    def check_accounting(self, step: str) -> None:
        """Every frame free or owned once, every page of every VM in exactly one place
        (its frame, a shared frame with a matching reference count, one swap slot or the
        compression cache, or nowhere), every balloon page unbacked: AccountingError
        naming the page, its state in the guest and the host, and ``step`` otherwise."""
        host = self.host
        width = max(vm.real_pages for vm in self.vms)
        owners = np.full((len(self.vms), width), -2, dtype=np.int32)
        for k, vm in enumerate(self.vms):
            fi32 = vm.guest.frames.fi32
            # the owner of each real page; page-table pages (the balloon driver's root
            # table among them) stand apart: they are backed like any page in use
            owners[k, : vm.real_pages] = np.where(fi32[:, F_FLAGS] & FR_TABLE, -3, fi32[:, F_OWNER])
        vm_pids = np.array([vm.host_pid for vm in self.vms], dtype=np.int64)
        balloons = np.array([vm.balloon_pid for vm in self.vms], dtype=np.int64)
        refs = np.zeros(host.config.frames, dtype=np.int64)
        slot_refs = np.zeros(host.swap.owner.shape[0], dtype=np.int64)
        out = np.zeros(3, dtype=np.int64)
        code = reclaim.check_accounting(host.machine, vm_pids, owners, balloons,
                                        self.hypervisor_pid, refs, slot_refs, out)  # fmt: skip
        if code == reclaim.CHECK_OK:
            self.reclaimer.reap()  # a VM the host stopped shares nothing any more
            sharing = self.reclaimer.sharing
            for frame, (_, mapped) in sharing.owners.items():
                if refs[frame] != len(mapped):
                    raise AccountingError(
                        f"{step}: shared frame {frame} is mapped by {int(refs[frame])} "
                        f"pages, but {len(mapped)} share it: {sorted(mapped)}"
                    )
            return
        v, page, frame = (int(x) for x in out)
        where = f"VM {self.vms[v].name}: " if v >= 0 else "the host: "
        ref = None
        if v >= 0 and 0 <= page < self.vms[v].real_pages:
            ref = PageRef(vm=self.vms[v].name, real_page=page)
            g = self.vms[v].guest
            owner = g.frames.owner(page)
            guest_state = (
                "free in the guest" if owner < 0
                else f"in the guest: page {g.frames.vpn(page):#x} of pid {owner}, "
                f"token {g.frames.token(page):#x}"
            )  # fmt: skip
            host_walk = host.walk(self.vms[v].host_pid, page << host.geometry.offset_bits)
            entry = host_walk.steps[-1].entry if host_walk.steps else 0
            where += f"real page {page} ({guest_state}; host entry: {describe_pte(entry)}): "
        raise AccountingError(f"{step}: {where}{ACCOUNTING_ERRORS[code]} ({frame})", ref)

    def _control(self, now: float) -> float | None:
        """The hypervisor's turn: one reclamation step, every control period."""
        if self.vcpus_running == 0:
            return None
        self.reclaimer.tick(now)
        if self.watch is not None:
            self.watch.observe(now, "a hypervisor control step")
        self.next_control_ns = now + self.control_period_ns
        return self.control_period_ns

    def blocked_wait(self, now: float) -> float:
        """How long a vCPU blocked at ``now`` (the low state: its VM holds more than its
        target) waits: until just after the next reclamation step, the first moment its
        VM may be unblocked. (A vCPU's turn and the step at the same time go the vCPU's
        first, in the order they were added: so 1 ns after it.)"""
        return max(self.next_control_ns - now, 0.0) + 1.0

    def _turn(self, vm: VM, plan: ProcessPlan, report: ProcessReport) -> Phases:
        """One quantum of ``plan``'s process, in two parts (see :class:`Phases`): the guest
        runs its accesses (a job that touches only the VM's guest), then the hypervisor's
        pass over them and the accounting. The second part returns the time the quantum
        took, or None when the process has ended.

        The guest's walk record grows to hold the whole quantum's walks (Kernel.run),
        so a quantum ends early only when its process is killed."""
        guest, host = vm.guest, self.host
        ns_per_access = 1e9 / plan.rate
        cost = self.cost

        def note_vm_stopped() -> None:  # the process was killed with its VM
            if report.killed is None and not host.alive(vm.host_pid):
                report.killed = f"its VM {vm.name} was stopped: {self.stop_reason(vm)}"

        def start(now: float) -> Callable[[], Any]:
            if not guest.alive(report.pid) or not host.alive(vm.host_pid):
                note_vm_stopped()
                return _ended
            reclaimer = self.reclaimer
            if reclaimer.blocked(vm):  # the low state: wait for the next reclamation step
                wait = self.blocked_wait(now)
                reclaimer.vms[vm.index].blocked_ns += wait
                report.end_ns = now + wait
                return lambda: wait
            vm.in_flight = True
            return lambda: run_guest(now)

        def run_guest(now: float) -> tuple[Trace, int, dict[str, int], int, Walked] | None:
            chunk = next_chunk(plan, report, guest, self.quantum, now)
            if chunk is None:
                return None
            g0 = guest.counter_row()
            guest.st[S_REC_N] = 0
            guest.st[S_RING_N] = 0
            first_token = int(guest.st[S_TOKEN])
            done = guest.run(report.pid, chunk.addresses, chunk.writes, page_numbers=True)
            self.total_accesses += done  # (the loop's stop condition counts them at once)
            # what the host pass needs of the guest alone is done here, beside another
            # VM's pass, rather than in this turn's own pass
            vm.mark_touched(report.pid, chunk.addresses[:done])
            gd = guest.named_counters(guest.counter_row() - g0)  # (no host pass changes them)
            return chunk, done, gd, first_token, split_record(vm.guest)

        def finish(now: float, ran: Any) -> float | None:
            if vm.in_flight:
                self._settle_deferred(vm)
                vm.in_flight = False
            if ran is None or isinstance(ran, float):  # ended, or waited
                return ran
            chunk, done, gd, first_token, walked = ran
            h0, room0 = host.counter_row(vm.host_pid), reclaim.making_room(host.pctr)
            copies = self._host_pass(vm, walked)
            if self.watch is not None:
                self.watch.observe(now, f"a quantum of VM {vm.name}'s process {plan.name}")
            if self.check and guest.alive(report.pid) and host.alive(vm.host_pid):
                self._check_quantum(vm, report.pid, chunk.addresses[:done],
                                    chunk.writes[:done], first_token)  # fmt: skip
            hd = host.named_counters(host.counter_row(vm.host_pid) - h0)
            # the vCPU waits for its own faults, and for the pages the host wrote out or
            # compressed to make room for them, whichever VM they belonged to
            room1 = reclaim.making_room(host.pctr)
            hd["writebacks"], hd["compressions"] = room1[0] - room0[0], room1[1] - room0[1]
            took = own_time(done, gd) + self.host_stall(hd)
            took += copies * cost.share_copy_ns
            took += self.reclaimer.take_pending(vm)
            vm.guest_refs += gd["walk_memory_references"]
            if self.paging == "nested":
                vm.host_refs += hd["walk_memory_references"]
                took += hd["walk_memory_references"] * cost.memory_reference_ns
            else:
                exits = vm_exits(gd)
                vm.vm_exits += exits
                took += exits * cost.vm_exit_ns
            note_vm_stopped()  # (by the host, during its pass or another VM's)
            return settle(report, guest, now, took, done, len(chunk))

        def own_time(done: int, gd: dict[str, int]) -> float:
            """The time of the guest's own accesses and stalls: finish adds the host's."""
            return done * ns_per_access + stall_ns(cost, gd)

        def earliest(ran: Any) -> float:  # the least that finish can return
            if ran is None:  # the process has ended: its vCPU goes on at once
                return 0.0
            if isinstance(ran, float):  # waited that long
                return float(ran)
            chunk, done, gd, _, walked = ran
            if done < len(chunk):  # the process died: its vCPU goes on at once
                return 0.0
            # finish adds stalls to this, each one 0 or more: the pass's walks at least
            least = own_time(done, gd)
            if self.paging == "nested":
                if host.alive(vm.host_pid):  # (else the pass is skipped)
                    walks = walked.data_pages.size if self.walk_caches else walked.pages.size
                    least += walks * self.host_walk_depth(vm) * cost.memory_reference_ns
            else:
                least += vm_exits(gd) * cost.vm_exit_ns
            return least

        return Phases(vm.name, start, finish, earliest)

    def host_walk_depth(self, vm: VM) -> int:
        """The fewest host table entries a walk of one of ``vm``'s real pages reads now
        (and from now on: it only grows, and is kept once it is the host's levels). It
        changes only when the VM's host table gains a page (a walk stops at an entry that
        is not present, or maps a huge page, only where no table lies below), so it is
        looked for again only then."""
        tables = self.host.table_pages(vm.host_pid)
        if vm.host_walk_depth < self.host.geometry.levels and tables != vm.host_walk_tables:
            host_m = self.host.machine
            vm.host_walk_depth = int(reclaim.walk_depth(host_m, vm.host_pid, vm.real_pages))
            vm.host_walk_tables = tables
        return vm.host_walk_depth

    def _settle_deferred(self, vm: VM) -> None:
        """Before ``vm``'s host pass: the evictions of its real pages that other VMs' passes
        made while its guest ran (``vm.deferred``) take effect, as after those passes: the
        swap copies take the pages' contents, and the guest's translations are shot down."""
        if not (vm.deferred or vm.deferred_all):
            return
        host_m, content = self.host.machine, vm.guest.frames.fi64
        if vm.deferred_all:  # the ring overflowed meanwhile: every page, every translation
            reclaim.fix_all_swap_copies(host_m, vm.host_pid, content)
            self._flush_translations(vm)
            evicted = np.flatnonzero(np.unpackbits(vm.guest.changed.view(np.uint8),
                                                   bitorder="little"))  # fmt: skip
        else:
            for rows in vm.deferred:
                reclaim.fix_swap_copies(host_m, rows, rows.shape[0], vm.host_pid, content)
                self._shoot_down_rows(vm, rows)
            evicted = np.concatenate([rows[:, RING_VPN] for rows in vm.deferred])
        vm.deferred.clear()
        vm.deferred_all = False
        # the guest may have written some of these pages through the translations it still
        # held: as on hardware, such a write faults in the host, so the pass makes it again
        changed = vm.guest.changed
        written = (changed[evicted >> 6] >> (evicted & 63)) & 1 != 0
        pages, first = np.unique(np.concatenate([vm.rewrites, evicted[written]]),
                                 return_index=True)  # fmt: skip
        vm.rewrites = np.ascontiguousarray(pages[np.argsort(first)], dtype=np.int64)

    def _host_pass(self, vm: VM, walked: Walked | None = None) -> int:
        """Translate the real pages the guest's walks read (``walked``, its walk record
        split, as the guest's job splits it; by default split here); shoot down what the
        host evicts.

        Before it, pages the guest wrote take their new contents in the host (and shared
        ones are copied: a write breaks sharing); the real pages the guest wrote to its own
        swap that the host had swapped out are read back first (double paging). Returns
        how many shared pages were copied.
        """
        if not self.host.alive(vm.host_pid):
            return 0
        reclaimer = self.reclaimer
        host_m = self.host.machine
        content = vm.guest.frames.fi64
        if walked is None:
            walked = split_record(vm.guest)
        pages, writes, kinds, data_pages, written = walked
        copies = reclaimer.before_host_pass(vm, written)
        # the guest wrote pages through its TLB, unseen by the host (as by the hardware,
        # which sets the host entry's dirty bit): the host frames take the new contents
        self.sync_contents(vm)
        # walked data pages the host does not hold as the guest does: writes too (the sync
        # left their bits set in the change map)
        if self.check:  # the map must name the pages a look at every host copy finds
            data = kinds == 0
            expected = writes[data]
            reclaim.mark_stale(host_m, vm.host_pid, data_pages, content, expected)
        reclaim.mark_stale_changed(pages, kinds, writes, vm.guest.changed)
        if self.check and not np.array_equal(expected, writes[data]):
            wrong = data_pages[expected != writes[data]]
            raise ContentError(
                f"VM {vm.name}: {wrong.size} real pages (real page {int(wrong[0])} first) "
                "are stale by a look at their host copies but not by the guest's change map, "
                "or the other way round: a host copy differs from the guest's content",
                PageRef(vm=vm.name, real_page=int(wrong[0])),
            )
        reclaim.prefetch_pages(host_m, vm.host_pid, data_pages)
        doubled = reclaimer.double_paging(vm)
        if self.walk_caches and pages.size:
            keep = np.empty(pages.size, dtype=np.uint8)
            kept = native.walk_cache_filter(
                pages, kinds, vm.walk_cache, vm.walk_cache_stamps, vm.walk_cache_clock, keep
            )
            vm.walk_cache_hits += pages.size - kept
            chosen = keep.astype(bool)
            pages, writes = pages[chosen], writes[chosen]  # (data pages are always kept)
        rewrites, vm.rewrites = vm.rewrites, _NO_PAGES
        extra = np.concatenate([doubled, copies, rewrites])
        if extra.size:
            pages = np.concatenate([extra, pages])
            rewritten = np.ones(copies.size + rewrites.size, np.uint8)
            writes = np.concatenate([np.zeros(doubled.size, np.uint8), rewritten, writes])
            data_pages = np.concatenate([extra, data_pages])
        if pages.size == 0:
            return int(copies.size)
        self.host.st[S_RING_N] = 0
        self.host.run(vm.host_pid, pages, writes, page_numbers=True)
        # the pass's own writes and faults leave frame tokens behind the guest's: the host
        # copies of data pages (in frames, and in swap for pages the pass evicted) take the
        # real contents; page-table pages it wrote get their bits in the guest's change
        # map, for the next sync
        self._settle_pass(vm, data_pages)
        reclaimer.after_host_pass(vm, pages)
        return int(copies.size)

    def run(
        self,
        seconds: float | None = None,
        accesses: int | None = None,
        progress: Callable[[float, int], None] | None = None,
    ) -> float:
        """Run until ``seconds``, ``accesses`` in all, or every process ends; seconds reached.

        ``progress``, if given, is called after each turn with the simulated time reached
        (ns) and the accesses made so far.
        """
        # one VM's guest runs while another's host pass finishes: on a second core unless the
        # checks or a page's history look at every VM after each pass
        threads = cores() > 1 if self.threads is None else self.threads
        self.loop.threads = threads and not self.check and self.watch is None
        end = self.loop.run_for(seconds, accesses, lambda: self.total_accesses, progress)
        for vm in self.vms:
            for report in vm.reports:
                close_report(report, vm.guest)
        ends = [r.end_ns / 1e9 for vm in self.vms for r in vm.reports]
        return max([end / 1e9, *ends])

    def summary(self, simulated_seconds: float) -> dict[str, Any]:
        """The run's summary (docs/scenarios.md gives the layout)."""
        host = self.host
        vms = []
        for vm in self.vms:
            g = vm.guest.counters()
            h = host.counters(vm.host_pid)
            start = min((r.start_ns for r in vm.reports), default=0.0)
            end = max((r.end_ns for r in vm.reports), default=0.0)
            seconds = (end - start) / 1e9
            vms.append(
                {
                    "name": vm.name,
                    "real_pages": vm.real_pages,
                    "accesses": g["accesses"],
                    "tlb_misses": g["tlb_misses"],
                    "walk_memory_references": vm.guest_refs + vm.host_refs,
                    "guest_walk_references": vm.guest_refs,
                    "host_walk_references": vm.host_refs,
                    "guest_faults": g["faults"],
                    "host_faults": h["faults"],
                    "guest_swap_ins": g["swap_ins"],
                    "guest_swap_outs": g["swap_outs"],
                    "host_swap_ins": h["swap_ins"],
                    "host_swap_outs": h["swap_outs"],
                    "vm_exits": vm.vm_exits,
                    "walk_cache_hits": vm.walk_cache_hits,
                    "host_resident_pages": host.resident(vm.host_pid),
                    "host_swapped_pages": self.reclaimer.host_swapped(vm),
                    "throughput": g["accesses"] / seconds if seconds > 0 else 0.0,
                    "simulated_seconds": seconds,
                    "stopped": not host.alive(vm.host_pid),
                    "stop_reason": self.stop_reason(vm),
                    **self.reclaimer.vm_summary(vm),
                    "processes": [r.summary() for r in vm.reports],
                }
            )
        stats = host.stats()
        return {
            "schema_version": SCHEMA_VERSION,
            "mode": self.paging,
            "simulated_seconds": simulated_seconds,
            "host": {
                "physical_pages": host.config.frames,
                "page_size": host.page_size,
                "free_pages": stats["free_frames"],
                "table_pages": stats["table_pages"],
                "swap_slots": stats["swap_slots"],
                "swap_used": stats["swap_used"],
                "oom_kills": stats["oom_kills"],
                **self.reclaimer.host_summary(simulated_seconds * 1e9),
            },
            "overcommit_ratio": self.scenario.overcommit_ratio,
            "vms": vms,
            **({} if self.faults is None else {"faults": self.faults.summary()}),
        }


def vm_exits(gd: dict[str, int]) -> int:
    """Shadow paging: the VM exits of a quantum whose guest counters changed by ``gd``
    (every guest page-table write traps so that the shadow table follows it)."""
    return gd["minor_faults"] + gd["major_faults"] + gd["evictions"]


class Walked(NamedTuple):
    """A guest's walk record, split for the host pass (:func:`split_record`)."""

    pages: np.ndarray  # int64: every real page the walks read, in order
    writes: np.ndarray  # uint8: 1 where the walk wrote it
    kinds: np.ndarray  # uint8: 1 for a page-table page, 0 for a data page
    data_pages: np.ndarray  # int64: the data pages, in order
    written: np.ndarray  # int64: the pages written, in order


def split_record(guest: Kernel) -> Walked:
    """The guest's walk record (its ``S_REC_N`` entries) split for the host pass."""
    n = int(guest.st[S_REC_N])
    pages, writes = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.uint8)
    kinds = np.empty(n, dtype=np.uint8)
    data_pages, written = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    n_data, n_written = reclaim.split_record(guest.record, n, pages, writes, kinds, data_pages,
                                             written)  # fmt: skip
    return Walked(pages, writes, kinds, data_pages[:n_data], written[:n_written])


def _ended() -> None:
    """The first part of a turn with nothing to run."""
    return None


def _vcpu(queue: list[tuple[float, Phases]], machine: VirtualizedMachine, group: str) -> Phases:
    """A vCPU that runs its processes in turn, a quantum each (round robin).

    A process whose start time has not come waits; a process that has ended
    leaves the queue (the vCPU's next turn comes at once); the vCPU stops when
    its queue is empty.
    """
    pending = list(queue)
    turn_index = [0]

    def start(now: float) -> Callable[[], Any]:
        if not pending:
            return lambda: ("stopped", None, None)
        ready = [item for item in pending if item[0] <= now]
        if not ready:  # idle until the next process starts
            idle = float(min(begin for begin, _ in pending) - now)
            return lambda: ("idle", idle, None)
        item = ready[turn_index[0] % len(ready)]
        job = item[1].start(now)
        return lambda: ("ran", item, job())

    def finish(now: float, ran: tuple[str, Any, Any]) -> float | None:
        what, item, result = ran
        if what == "stopped":
            machine.vcpus_running -= 1
            return None
        if what == "idle":
            return float(item)
        took = item[1].finish(now, result)
        if took is None:
            pending.remove(item)
            return 0.0
        turn_index[0] += 1
        return float(took)

    def earliest(ran: tuple[str, Any, Any]) -> float:
        what, item, result = ran
        if what == "stopped":
            return math.inf
        if what == "idle":
            return float(item)
        earliest_of_process = item[1].earliest
        assert earliest_of_process is not None
        return float(earliest_of_process(result))

    return Phases(group, start, finish, earliest)
