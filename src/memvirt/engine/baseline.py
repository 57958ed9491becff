"""What a VM would do alone: the baseline its throughput under overcommitment is judged by.

Reclamation costs something only when it takes memory a VM would have used.
To see what it cost, each VM is run a second time *alone*, on a host with
room for all of its real memory, and its throughput there (accesses per
simulated second) is set beside its throughput in the shared host. The ESX
paper compares ballooning and swapping the same way: against the same
benchmark in a VM that was never short of memory (Waldspurger, OSDI 2002,
figure 2).

The run alone keeps everything else: the hypervisor and its settings, the
guest, the run's length and seed. Its processes draw the very same access
streams as in the shared run — each process's seed is derived from the
run's seed and the process's place among *all* the scenario's processes,
so the alone run is built with those seeds rather than renumbered — and
the difference in throughput is the memory alone.

The host of the alone run has the VM's memory plus half again: enough
that, after its page tables, free memory stays above the host's *high*
threshold (400% of minFree, about a quarter of a small host), so no
reclamation state is ever entered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memvirt.config import Scenario, VMConfig, scenario_from_dict
from memvirt.engine.scenario import plan_process, process_seeds
from memvirt.engine.virtual import VirtualizedMachine
from memvirt.hypervisor.states import min_free_bytes
from memvirt.units import MiB

#: Room the alone host has above the VM's memory, as a fraction of that memory.
HEADROOM = 0.5


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def alone_host_memory(scenario: Scenario, vm: VMConfig) -> int:
    """Bytes of physical memory for ``vm`` alone: its memory and room, in whole MiB and pages.

    The room keeps free memory above the high threshold of the free-memory
    states, whether minFree is given or follows ESXi's sliding scale.
    """
    assert scenario.hypervisor is not None  # a scenario with VMs always has one
    states = scenario.hypervisor.states
    step = max(MiB, scenario.host.page_size)  # both powers of two: the larger is a multiple
    memory = _round_up(int(vm.memory * (1 + HEADROOM)), step)
    huge = scenario.host.geometry().huge_page_size
    if scenario.hypervisor.huge_pages:  # whole huge pages for the VM, and one for the tables
        memory = max(memory, _round_up(vm.memory, huge) + 2 * huge)
    memory = max(memory, scenario.host.huge_pages * huge)
    while True:
        min_free = states.min_free if states.min_free is not None else min_free_bytes(memory)
        # free memory must stay at least 1.25 x the high threshold (the rest: page tables)
        need = vm.memory + int(min_free * states.thresholds.high / 100 * 1.25)
        if memory >= need:
            return memory
        memory = _round_up(need, step)


def alone_scenario(scenario: Scenario, vm_name: str) -> Scenario:
    """``scenario`` with only the VM ``vm_name``, on a host with room for all its memory."""
    vm = scenario.vm(vm_name)
    data = scenario.to_dict()
    data["vms"] = [v for v in data["vms"] if v["name"] == vm_name]
    data["host"]["memory"] = alone_host_memory(scenario, vm)
    # trace paths in to_dict() are absolute already, so any base directory will do
    return scenario_from_dict(data, source=f"{scenario.source} ({vm_name} alone)")


def run_alone(
    scenario: Scenario,
    vm_name: str,
    progress: Callable[[float, int], None] | None = None,
) -> dict[str, Any]:
    """Run the VM ``vm_name`` of ``scenario`` alone; return its VM summary (a ``vms`` item).

    Its processes keep the seeds they have in the whole scenario, so they make
    the same accesses. ``progress`` is called as :func:`memvirt.engine.scenario.run`
    calls it.
    """
    alone = alone_scenario(scenario, vm_name)
    pairs = [(vm.name, proc) for vm in scenario.vms for proc in vm.processes]
    seeds = process_seeds(scenario.run.seed, len(pairs))
    geometry = alone.host.geometry()
    plans = [
        plan_process(proc, seed, geometry.page_size, geometry.offset_bits)
        for (name, proc), seed in zip(pairs, seeds, strict=True)
        if name == vm_name
    ]
    machine = VirtualizedMachine(alone, {vm_name: plans}, quantum=alone.run.quantum_accesses)
    seconds = machine.run(seconds=alone.run.seconds, accesses=alone.run.accesses, progress=progress)
    (summary,) = machine.summary(seconds)["vms"]
    return dict(summary)


def alone_throughputs(scenario: Scenario) -> dict[str, float]:
    """Each VM's throughput (accesses per simulated second) when it runs alone with all of
    its memory, by VM name; empty for a native scenario. A VM without processes gets 0."""
    return {
        vm.name: float(run_alone(scenario, vm.name)["throughput"]) if vm.processes else 0.0
        for vm in scenario.vms
    }


__all__ = ["HEADROOM", "alone_host_memory", "alone_scenario", "alone_throughputs", "run_alone"]
