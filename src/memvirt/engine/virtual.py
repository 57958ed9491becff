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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memvirt.config import Scenario, ScenarioError
from memvirt.dataplane import native
from memvirt.dataplane.layout import (
    F_FLAGS,
    F_OWNER,
    F_SLOT,
    FR_DIRTY,
    FR_HUGE,
    FR_TABLE,
    G_TOKEN,
    G_VPN,
    K_RECORD,
    K_RING,
    S_REC_N,
    S_RING_N,
)
from memvirt.engine.cost import stall_ns
from memvirt.engine.loop import EventLoop
from memvirt.engine.native import (
    SCHEMA_VERSION,
    ProcessPlan,
    ProcessReport,
    next_chunk,
    settle,
)
from memvirt.kernel.kernel import Kernel, KernelConfig, Region

#: Evictions the host logs per pass before the guests' TLBs are flushed whole.
RING_CAPACITY = 1 << 12
#: Entries of a VM's page-walk cache: host translations of guest page-table pages,
#: the "nested TLB" of Bhargava et al. (ASPLOS 2008), in the size range of the MMU
#: caches Barr, Cox and Rixner study (ISCA 2010: tens of entries).
WALK_CACHE_ENTRIES = 32


@dataclass
class VM:
    """One virtual machine: its host process, its guest kernel and its processes."""

    name: str
    host_pid: int
    guest: Kernel
    real_pages: int
    reports: list[ProcessReport] = field(default_factory=list)
    walk_cache: np.ndarray = field(
        default_factory=lambda: np.full(WALK_CACHE_ENTRIES, -1, dtype=np.int64)
    )
    walk_cache_stamps: np.ndarray = field(
        default_factory=lambda: np.zeros(WALK_CACHE_ENTRIES, dtype=np.int64)
    )
    walk_cache_clock: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    walk_cache_hits: int = 0
    vm_exits: int = 0
    guest_refs: int = 0
    host_refs: int = 0


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
        self.paging = hyp.paging
        self.cost = scenario.cost
        self.quantum = quantum
        page = host.page_size
        self.host = Kernel(
            KernelConfig(
                frames=host.frames,
                geometry=host.geometry(),
                policy="random-frame" if hyp.swap_victim == "random" else "clock",
                tlb=None,
                swap_slots=hyp.host_swap.size // page,
                swap_kind=hyp.host_swap.device,
                seed=scenario.run.seed,
                max_processes=max(1, len(scenario.vms)),
            )
        )
        self.host.cfg[K_RING] = 1
        self.host.ring = np.zeros((RING_CAPACITY, 2), dtype=np.int64)
        self.vms: list[VM] = []
        self.loop = EventLoop()
        self.total_accesses = 0
        for k, vmc in enumerate(scenario.vms):
            host_pid = self.host.spawn([Region(0, vmc.memory, name="real memory")], name=vmc.name)
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
                    max_processes=max(1, len(vmc.processes)),
                )
            )
            guest.cfg[K_RECORD] = 1
            guest.record = np.zeros((3, quantum * (geometry.levels + 1) + 8), dtype=np.int64)
            vm = VM(vmc.name, host_pid, guest, vmc.memory // page)
            self.vms.append(vm)
            # the VM's processes share its vCPUs: process i runs on vCPU i mod vcpus
            queues: list[list[Any]] = [[] for _ in range(min(vmc.vcpus, len(plans[vmc.name])))]
            for i, plan in enumerate(plans[vmc.name]):
                pid = guest.spawn(plan.regions, name=plan.name)
                report = ProcessReport(plan.name, pid, start_ns=plan.start_s * 1e9)
                vm.reports.append(report)
                queues[i % len(queues)].append((plan.start_s * 1e9, self._turn(vm, plan, report)))
            for c, queue in enumerate(queues):
                first = min(start for start, _ in queue)
                self.loop.add(f"{vm.name}/vcpu{c}", _vcpu(queue), first)

    def _turn(self, vm: VM, plan: ProcessPlan, report: ProcessReport) -> Any:
        """One quantum of ``plan``'s process: the time it took, or None when it has ended."""
        guest, host = vm.guest, self.host
        ns_per_access = 1e9 / plan.rate
        cost = self.cost

        def turn(now: float) -> float | None:
            if not guest.alive(report.pid) or not host.alive(vm.host_pid):
                if report.killed is None and not host.alive(vm.host_pid):
                    report.killed = f"its VM {vm.name} was stopped by the host"
                return None
            chunk = next_chunk(plan, report, guest, self.quantum, now)
            if chunk is None:
                return None
            g0, h0 = guest.counters(), host.counters(vm.host_pid)
            guest.st[S_REC_N] = 0
            done = guest.run(report.pid, chunk.addresses, chunk.writes, page_numbers=True)
            self._host_pass(vm)
            g1, h1 = guest.counters(), host.counters(vm.host_pid)
            gd = {k: g1[k] - g0[k] for k in g1}
            hd = {k: h1[k] - h0[k] for k in h1}
            took = done * ns_per_access + stall_ns(cost, gd)
            took += hd["minor_faults"] * cost.host_fault_ns
            took += hd["major_faults"] * (cost.host_fault_ns + cost.swap_read_ns)
            took += hd["writebacks"] * cost.swap_write_ns
            vm.guest_refs += gd["walk_memory_references"]
            if self.paging == "nested":
                vm.host_refs += hd["walk_memory_references"]
                took += hd["walk_memory_references"] * cost.memory_reference_ns
            else:
                # every guest page-table write traps so the shadow table follows it
                exits = gd["minor_faults"] + gd["major_faults"] + gd["evictions"]
                vm.vm_exits += exits
                took += exits * cost.vm_exit_ns
            self.total_accesses += done
            return settle(report, guest, now, took, done, len(chunk))

        return turn

    def _host_pass(self, vm: VM) -> None:
        """Translate the real pages the guest's walks read; shoot down what the host evicts."""
        n = int(vm.guest.st[S_REC_N])
        if n == 0 or not self.host.alive(vm.host_pid):
            return
        self._sync_contents(vm)
        pages = np.ascontiguousarray(vm.guest.record[0, :n])
        writes = np.ascontiguousarray(vm.guest.record[1, :n])
        if self.walk_caches:
            keep = np.empty(n, dtype=np.uint8)
            kept = native.walk_cache_filter(
                pages, np.ascontiguousarray(vm.guest.record[2, :n]), vm.walk_cache,
                vm.walk_cache_stamps, vm.walk_cache_clock, keep,
            )  # fmt: skip
            vm.walk_cache_hits += n - kept
            chosen = keep.astype(bool)
            pages, writes = pages[chosen], writes[chosen]
        self.host.st[S_RING_N] = 0
        self.host.run(vm.host_pid, pages, writes, page_numbers=True)
        evicted = int(self.host.st[S_RING_N])
        by_pid = {v.host_pid: v for v in self.vms}
        if evicted > RING_CAPACITY:
            for other in self.vms:
                native.tlb_flush_asid(other.guest.machine, -1)
                other.walk_cache[:] = -1
            return
        for owner, real_page in self.host.ring[:evicted]:
            target = by_pid.get(int(owner))
            if target is None:
                continue
            g = target.guest
            target.walk_cache[target.walk_cache == real_page] = -1
            gpid = g.frames.owner(int(real_page))
            flags = g.frames.flags(int(real_page))
            if gpid >= 0 and not flags.table:
                native.tlb_invalidate(g.machine, gpid, g.frames.vpn(int(real_page)), flags.huge)

    def _sync_contents(self, vm: VM) -> None:
        """Give the host frames of ``vm`` the contents of the real pages they hold.

        A real page's content is its guest frame's token. The guest writes pages
        through its TLB without the host seeing each write, as the hardware does
        through a cached translation; the hardware then sets the dirty bit of the
        host entry. So, before the host acts, every host frame whose real page
        changed takes the new token and turns dirty, and a host swap copy of it,
        now stale, is given back: a later eviction writes the page out again.
        """
        hf32, hf64 = self.host.frames.fi32, self.host.frames.fi64
        mine = (hf32[:, F_OWNER] == vm.host_pid) & ((hf32[:, F_FLAGS] & (FR_TABLE | FR_HUGE)) == 0)
        frames = np.flatnonzero(mine)
        if frames.size == 0:
            return
        real = hf64[frames, G_VPN]
        content = vm.guest.frames.fi64[real, G_TOKEN]
        changed = frames[hf64[frames, G_TOKEN] != content]
        if changed.size:
            hf32[changed, F_FLAGS] |= FR_DIRTY
            stale = hf32[changed, F_SLOT]
            for slot in stale[stale >= 0]:
                native.free_slot(self.host.machine, int(slot))
            hf32[changed, F_SLOT] = -1
            hf64[frames, G_TOKEN] = content

    def run(self, seconds: float | None = None, accesses: int | None = None) -> float:
        """Run until ``seconds``, ``accesses`` in all, or every process ends; seconds reached."""
        until = None if seconds is None else seconds * 1e9

        def stop() -> bool:
            return accesses is not None and self.total_accesses >= accesses

        end = self.loop.run(until, stop)
        for vm in self.vms:
            for report in vm.reports:
                report.counters = vm.guest.counters(report.pid)
                if report.killed is None:
                    kill = next((k for k in vm.guest.kills if k.pid == report.pid), None)
                    report.killed = None if kill is None else kill.reason
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
                    "host_swapped_pages": host.swapped(vm.host_pid),
                    "throughput": g["accesses"] / seconds if seconds > 0 else 0.0,
                    "simulated_seconds": seconds,
                    "stopped": not host.alive(vm.host_pid),
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
            },
            "overcommit_ratio": self.scenario.overcommit_ratio,
            "vms": vms,
        }


def _vcpu(queue: list[Any]) -> Any:
    """A vCPU that runs its processes in turn, a quantum each (round robin).

    A process whose start time has not come waits; a process that has ended
    leaves the queue; the vCPU stops when its queue is empty.
    """
    pending = list(queue)
    turn_index = [0]

    def turn(now: float) -> float | None:
        while pending:
            ready = [item for item in pending if item[0] <= now]
            if not ready:  # idle until the next process starts
                return float(min(start for start, _ in pending) - now)
            start, process_turn = ready[turn_index[0] % len(ready)]
            took = process_turn(now)
            if took is None:
                pending.remove((start, process_turn))
                continue
            turn_index[0] += 1
            return float(took)
        return None

    return turn
