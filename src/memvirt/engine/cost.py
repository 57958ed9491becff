"""The cost model: how long each event of an access takes, in simulated nanoseconds.

A CPU issues accesses at its workload's *rate* (accesses per second when
every access hits the TLB: the program's own work between accesses
included). Each event beyond that stalls the CPU, by the scenario's
``[cost]`` table (:class:`memvirt.config.CostModel`, whose fields cite the
sources of their defaults):

- a TLB hit costs ``tlb_hit_ns``; a TLB miss costs one memory reference per
  page-table entry the walk reads (``memory_reference_ns``);
- a minor fault costs ``minor_fault_ns`` (the kernel's fault path and the
  zeroing of a page);
- a major fault costs that and a swap read (``swap_read_ns``); writing a
  dirty victim back costs a swap write (``swap_write_ns``), charged to the
  CPU that needed the frame, as direct reclaim does (Linux's background
  ``kswapd`` is not modelled);
- VM exits and host faults arrive with virtual machines.
"""

from __future__ import annotations

from collections.abc import Mapping

from memvirt.config import CostModel
from memvirt.memory.swap import SWAP_LATENCY_NS


def default_cost(device: str = "ssd") -> CostModel:
    """The default cost model, with the swap latencies of ``device`` ("ssd" or "hdd")."""
    read, write = SWAP_LATENCY_NS[device]
    return CostModel(swap_read_ns=float(read), swap_write_ns=float(write))


def stall_ns(cost: CostModel, delta: Mapping[str, int]) -> float:
    """The time taken by the events counted in ``delta`` (counter increments), in ns."""
    return (
        delta.get("tlb_hits", 0) * cost.tlb_hit_ns
        + delta.get("walk_memory_references", 0) * cost.memory_reference_ns
        + delta.get("minor_faults", 0) * cost.minor_fault_ns
        + delta.get("major_faults", 0) * (cost.minor_fault_ns + cost.swap_read_ns)
        + delta.get("writebacks", 0) * cost.swap_write_ns
    )
