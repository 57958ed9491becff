"""How the cost of a whole-simulator run grows: one machine, one measurement.

A simulator is only usable at scale if its cost per access stays flat as the
simulated machine grows. Three things can grow: the host's physical memory (more
frames to keep metadata for, and more for the control plane to look at), the number
of VMs (more guests, more event-loop turns, more per-VM steps in the control plane),
and the trace (more accesses). Cost should be linear in the trace, and the rate
(accesses per second of wall time) should not fall as the host or the VM count
grows. State per simulated page should stay constant.

This script builds one scenario in code, runs it for ``--accesses`` accesses and
prints one JSON object: the build time (validating the scenario, allocating the
state, drawing the workloads' tables), the run time (the event loop alone: data
planes, the Python engine and the control plane), the rate, the bytes of simulator
state per simulated page, and this process's peak resident memory. ``run.py`` runs
it once per point and per repeat, each in a fresh process, so each peak is that
run's own.

    python benchmarks/bench_scale.py --mode virtual --host-gib 4 --vms 8 --accesses 4000000
    python benchmarks/bench_scale.py --mode native --host-gib 1 --accesses 4000000

Virtual machines: ``--vms`` VMs share the host evenly, their real memories adding up
to ``--overcommit`` times the host; each VM runs one process whose Zipf(0.9) workload
covers 3/4 of the VM's memory. Nested paging, ballooning and sharing on, compression
off, random host swap victims; the control step runs every ``--control-period``
simulated seconds. Native: one process with a Zipf(0.9) workload over
``--overcommit`` times the host's memory, behind the default two-level TLB.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from typing import Any

from memvirt.config import scenario_from_dict
from memvirt.engine.native import NativeMachine
from memvirt.engine.scenario import build
from memvirt.engine.virtual import VirtualizedMachine

MIB = 1 << 20
PAGE = 4096
SWAP_FIELDS = ("swap_token", "swap_owner", "swap_free", "swap_csize")


def mib(n_bytes: float) -> str:
    """A size in whole MiB, at least 1, as the scenario files write it."""
    return f"{max(1, int(n_bytes // MIB))}MiB"


def virtual_scenario(
    host_gib: float,
    vms: int,
    *,
    overcommit: float = 1.5,
    control_period: float = 0.01,
    balloon: bool = True,
    sharing: bool = True,
    seed: int = 1,
) -> dict[str, Any]:
    """A host of ``host_gib`` GiB with ``vms`` equal VMs adding up to ``overcommit`` x it."""
    host = host_gib * 1024 * MIB
    vm_bytes = overcommit * host / vms
    process_pages = int(0.75 * vm_bytes) // MIB * (MIB // PAGE)  # whole MiB, as memory is
    # the host must be able to swap out what does not fit, and a little more
    # (at most 64 GiB: swap state grows with the slots in use, so a larger device would cost
    # nothing more, but the points stay those measured before)
    host_swap = min(64 << 30, max(64 * MIB, (overcommit - 1.0) * host * 1.25))
    return {
        "host": {"memory": mib(host)},
        "hypervisor": {
            "paging": "nested",
            "host_swap": {"size": mib(host_swap), "device": "ssd"},
            "swap_victim": "random",
            "control_period": control_period,
            "balloon": {"enabled": balloon},
            "sharing": {"enabled": sharing},
            "compression": {"enabled": False},
        },
        "vms": [
            {
                "name": f"vm{i}",
                "memory": mib(vm_bytes),
                "guest": {"policy": "lru", "swap": mib(vm_bytes / 4)},
                "processes": [
                    {
                        "name": "app",
                        "memory": mib(process_pages * PAGE),
                        "workload": {
                            "kind": "zipf",
                            "pages": process_pages,
                            "alpha": 0.9,
                            "write_fraction": 0.3,
                        },
                    }
                ],
            }
            for i in range(vms)
        ],
        "run": {"seconds": 1e6, "seed": seed},
    }


def native_scenario(host_gib: float, *, overcommit: float = 1.0, seed: int = 1) -> dict[str, Any]:
    """One process on a ``host_gib`` GiB host, its Zipf workload ``overcommit`` x the host."""
    host = host_gib * 1024 * MIB
    pages = int(overcommit * host) // MIB * (MIB // PAGE)  # whole MiB, as memory is
    return {
        "host": {
            "memory": mib(host),
            "policy": "lru",
            "swap": {"size": mib(max(64 * MIB, overcommit * host)), "device": "ssd"},
        },
        "processes": [
            {
                "name": "app",
                "memory": mib(pages * PAGE),
                "workload": {"kind": "zipf", "pages": pages, "alpha": 0.9, "write_fraction": 0.3},
            }
        ],
        "run": {"seconds": 1e6, "seed": seed},
    }


def state_bytes(machine: NativeMachine | VirtualizedMachine) -> tuple[int, int, int]:
    """Bytes of the arrays that hold the simulated machine, those of the swap devices,
    and the simulated pages they describe (host frames plus the VMs' real pages). The
    kernels' arrays; and per VM, its marks for the settling after a host pass, the pages
    its processes touched (the true active set), the hypervisor's sample of its pages
    and its page-walk cache."""
    total = swap = 0
    if isinstance(machine, VirtualizedMachine):
        kernels = [machine.host, *(vm.guest for vm in machine.vms)]
        pages = machine.host.config.frames + sum(vm.real_pages for vm in machine.vms)
        for vm in machine.vms:
            total += vm.settle_marks.nbytes + vm.walk_cache.nbytes + vm.walk_cache_stamps.nbytes
            total += sum(bits.nbytes for _, bits in vm.touched.values())
        total += sum(r.sample_unseen.nbytes for r in machine.reclaimer.vms)
    else:
        kernels = [machine.kernel]
        pages = machine.kernel.config.frames
    for kernel in kernels:
        state = kernel.machine
        # (fi32 is a view of fi64's memory: each frame's one row, counted once)
        total += sum(a.nbytes for a in state if a is not state.fi32)
        swap += sum(getattr(state, name).nbytes for name in SWAP_FIELDS)
    return total, swap, pages


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(data: dict[str, Any], accesses: int) -> dict[str, Any]:
    """Build the scenario ``data`` and run it for ``accesses`` accesses; the figures."""
    start = time.perf_counter()
    machine = build(scenario_from_dict(data, "<bench_scale>"))
    built = time.perf_counter()
    machine.run(accesses=accesses)
    ran = time.perf_counter()
    total, swap, pages = state_bytes(machine)
    run_seconds = ran - built
    figures: dict[str, Any] = {
        "build_seconds": built - start,
        "run_seconds": run_seconds,
        "accesses": machine.total_accesses,
        "accesses_per_second": machine.total_accesses / run_seconds,
        "state_bytes": total,
        "swap_state_bytes": swap,
        "simulated_pages": pages,
        "bytes_per_page": total / pages,
        "bytes_per_page_without_swap": (total - swap) / pages,
    }
    if isinstance(machine, VirtualizedMachine):
        host = machine.host.counters()
        figures["host_faults"] = host["faults"]
        figures["host_swap_outs"] = host["writebacks"]
        figures["control_steps"] = len(machine.reclaimer.rows) // len(machine.vms)
    else:
        counters = machine.kernel.counters()
        figures["faults"] = counters["faults"]
        figures["tlb_misses"] = counters["tlb_misses"]
    return figures


def warm(mode: str) -> float:
    """Load the compiled data plane with a tiny run of the same kind; the seconds it took."""
    start = time.perf_counter()
    tiny = virtual_scenario(1 / 16, 2) if mode == "virtual" else native_scenario(1 / 16)
    build(scenario_from_dict(tiny, "<warm-up>")).run(accesses=50_000)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--mode", choices=("virtual", "native"), default="virtual")
    ap.add_argument("--host-gib", type=float, default=1.0, help="host memory, GiB")
    ap.add_argument("--vms", type=int, default=4)
    ap.add_argument("--accesses", type=int, default=4_000_000)
    ap.add_argument("--overcommit", type=float, default=None, help="virtual 1.5, native 1.0")
    ap.add_argument("--control-period", type=float, default=0.01, help="simulated seconds")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.host_gib <= 0 or args.vms < 1 or args.accesses < 1:
        ap.error("--host-gib must be > 0, --vms and --accesses >= 1")
    warm_seconds = warm(args.mode)
    if args.mode == "virtual":
        over = 1.5 if args.overcommit is None else args.overcommit
        data = virtual_scenario(
            args.host_gib,
            args.vms,
            overcommit=over,
            control_period=args.control_period,
            seed=args.seed,
        )
    else:
        over = 1.0 if args.overcommit is None else args.overcommit
        data = native_scenario(args.host_gib, overcommit=over, seed=args.seed)
    figures = measure(data, args.accesses)
    point = {
        "mode": args.mode,
        "host_gib": args.host_gib,
        "host_frames": int(args.host_gib * 1024 * MIB) // PAGE,
        "vms": args.vms if args.mode == "virtual" else 0,
        "overcommit": over,
        "requested_accesses": args.accesses,
        "warm_up_seconds": warm_seconds,
        **figures,
        "peak_rss_bytes": peak_rss_bytes(),
    }
    if not all(math.isfinite(v) for v in point.values() if isinstance(v, float)):
        print(json.dumps(point), file=sys.stderr)
        return 1
    print(json.dumps(point))
    return 0


if __name__ == "__main__":
    sys.exit(main())
