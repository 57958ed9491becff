"""One translation, step by step: the walk that maps a virtual address.

On a host with VMs the walk is two-dimensional: each guest page-table entry
sits at a real address that the host table translates, and so does the data
page; under nested paging every one of those host walks is memory
references of its own.

After a scenario has run, :func:`explain` picks a process and an address
(by default the lowest virtual page the process has in memory) and reports
every level of the walk: the table page read (its frame), the index, the
entry's physical address and the entry itself in words, then the physical
address reached and the number of memory references — the one-level walk of
a native machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memvirt.config import Scenario, ScenarioError
from memvirt.engine.native import ProcessReport
from memvirt.engine.scenario import build
from memvirt.engine.virtual import VirtualizedMachine
from memvirt.kernel.kernel import Kernel, Walk, describe_pte


def explain(
    scenario: Scenario,
    *,
    vm: str | None = None,
    process: str | None = None,
    address: int | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` and describe the translation of ``address`` in ``process``."""
    if vm is not None and scenario.is_native:
        raise ScenarioError(f"{scenario.source}: --vm {vm}: this scenario has no VMs")
    machine = build(scenario)
    machine.run(seconds=scenario.run.seconds, accesses=scenario.run.accesses)
    if isinstance(machine, VirtualizedMachine):
        return explain_two_level(machine, vm=vm, process=process, address=address)
    kernel = machine.kernel
    pid = _pick(machine.reports, process)
    name = next(r.name for r in machine.reports if r.pid == pid)
    if address is None:
        address = _touched(kernel, pid, name)
    walk = kernel.walk(pid, address)
    steps = _walk_steps(walk)
    return {
        "mode": "native",
        "process": name,
        "pid": pid,
        "guest_levels": kernel.geometry.levels,
        "host_levels": 0,
        "memory_references": walk.memory_references,
        "steps": steps,
        "virtual_address": address,
        "real_address": None,
        "physical_address": walk.physical_address,
        "page_size": walk.page_size,
    }


def _pick(reports: list[ProcessReport], process: str | None) -> int:
    """The pid of the process named (or numbered) ``process``; the first by default."""
    names = {r.name: r.pid for r in reports}
    if process is None:
        return reports[0].pid
    if process in names:
        return names[process]
    if process.isdigit() and int(process) in names.values():
        return int(process)
    raise ScenarioError(
        f"--process {process}: no such process; the processes are {', '.join(names)}"
    )


def _touched(kernel: Kernel, pid: int, name: str) -> int:
    """The address of the lowest virtual page ``pid`` has in memory."""
    resident = sorted(kernel.resident_vpns(pid))
    if not resident:
        raise ScenarioError(f"--process {name}: it has no page in memory to explain")
    return resident[0] * kernel.page_size


def _walk_steps(walk: Walk) -> list[dict[str, Any]]:
    """Each level of ``walk``: the table page's frame, the index, the entry and its meaning."""
    return [
        {
            "level": s.level,
            "table_frame": s.table_frame,
            "index": s.index,
            "entry_address": s.entry_address,
            "entry": s.entry,
            "meaning": describe_pte(s.entry),
        }
        for s in walk.steps
    ]


def explain_two_level(
    machine: VirtualizedMachine,
    *,
    vm: str | None = None,
    process: str | None = None,
    address: int | None = None,
) -> dict[str, Any]:
    """The 2-D walk in a machine that has run: each guest level's entry, found through
    the host table, then the data page's real address, translated too."""
    names = [v.name for v in machine.vms]
    if vm is None:
        chosen = machine.vms[0]
    elif vm in names:
        chosen = machine.vms[names.index(vm)]
    else:
        raise ScenarioError(f"--vm {vm}: no such VM; the VMs are {', '.join(names)}")
    guest, host = chosen.guest, machine.host
    pid = _pick(chosen.reports, process)
    name = next(r.name for r in chosen.reports if r.pid == pid)
    if address is None:
        address = _touched(guest, pid, name)
    page = guest.page_size
    gwalk = guest.walk(pid, address)
    nested = machine.paging == "nested"
    steps = []
    refs = 0
    for s in gwalk.steps:
        real = s.table_frame * page + s.index * 8
        hwalk = host.walk(chosen.host_pid, real)
        cached = machine.walk_caches and bool(np.any(chosen.walk_cache == s.table_frame))
        refs += 1 + (hwalk.memory_references if nested and not cached else 0)
        steps.append(
            {
                "level": s.level,
                "table_real_frame": s.table_frame,
                "index": s.index,
                "entry_real_address": real,
                "entry_physical_address": hwalk.physical_address,
                "entry": s.entry,
                "meaning": describe_pte(s.entry),
                "host_steps": _walk_steps(hwalk) if nested and not cached else [],
                "walk_cache_hit": cached,
            }
        )
    real_address = None if gwalk.pfn is None else gwalk.pfn * page + address % page
    final = None if real_address is None else host.walk(chosen.host_pid, real_address)
    if final is not None and nested:
        refs += final.memory_references
    return {
        "mode": machine.paging,
        "vm": chosen.name,
        "process": name,
        "pid": pid,
        "guest_levels": guest.geometry.levels,
        "host_levels": host.geometry.levels,
        "memory_references": refs,
        "steps": steps,
        "data_host_steps": [] if final is None else _walk_steps(final),
        "virtual_address": address,
        "real_address": real_address,
        "physical_address": None if final is None else final.physical_address,
        "page_size": page,
    }
