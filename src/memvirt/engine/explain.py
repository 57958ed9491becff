"""One translation, step by step: the walk that maps a virtual address.

After a scenario has run, :func:`explain` picks a process and an address
(by default the lowest virtual page the process has in memory) and reports
every level of the walk: the table page read (its frame), the index, the
entry's physical address and the entry itself in words, then the physical
address reached and the number of memory references — the one-level walk of
a native machine.
"""

from __future__ import annotations

from typing import Any

from memvirt.config import Scenario, ScenarioError
from memvirt.engine.scenario import build
from memvirt.kernel.kernel import describe_pte


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
    kernel = machine.kernel
    names = {r.name: r.pid for r in machine.reports}
    if process is None:
        pid = machine.reports[0].pid
    elif process in names:
        pid = names[process]
    elif process.isdigit() and int(process) in names.values():
        pid = int(process)
    else:
        known = ", ".join(names)
        raise ScenarioError(f"--process {process}: no such process; the processes are {known}")
    name = next(r.name for r in machine.reports if r.pid == pid)
    if address is None:
        resident = sorted(kernel.resident_vpns(pid))
        if not resident:
            raise ScenarioError(f"--process {name}: it has no page in memory to explain")
        address = resident[0] * kernel.page_size
    walk = kernel.walk(pid, address)
    steps = [
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
