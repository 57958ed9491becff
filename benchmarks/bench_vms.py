"""Two VMs with nested paging on a host overcommitted 1.5x: whole-simulator speed.

Runs ``examples/two-level-nested.toml`` (two 192 MiB VMs on a 256 MiB host,
a Zipf workload in each, hypervisor swapping at random) for ``--accesses``
accesses, ``--repeat`` times after one warm-up, and prints accesses per
second of wall time (median) with the time in each part, plus the state
the simulation holds per simulated page.

    python benchmarks/bench_vms.py [--accesses N] [--repeat R] [--paging nested|shadow]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from memvirt.config import load_scenario
from memvirt.engine.scenario import build
from memvirt.engine.virtual import VirtualizedMachine

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "two-level-nested.toml"


SWAP_FIELDS = ("swap_token", "swap_owner", "swap_free", "swap_csize")


def state_bytes(machine: VirtualizedMachine) -> tuple[int, int]:
    """Bytes of the arrays that hold the simulated machine (host and guests): all of
    them, and those of the swap devices alone."""
    total = swap = 0
    for kernel in [machine.host, *(vm.guest for vm in machine.vms)]:
        state = kernel.machine
        total += sum(a.nbytes for a in state)
        swap += sum(getattr(state, name).nbytes for name in SWAP_FIELDS)
    return total, swap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accesses", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--paging", default="nested", choices=("nested", "shadow"))
    args = ap.parse_args()
    settings = [
        f"run.accesses={args.accesses}",
        "run.seconds=1000",
        f"hypervisor.paging={args.paging}",
    ]
    warm = build(load_scenario(EXAMPLE, settings))
    warm.run(accesses=20_000)  # load the compiled data plane
    rates = []
    for _ in range(args.repeat):
        machine = build(load_scenario(EXAMPLE, settings))
        assert isinstance(machine, VirtualizedMachine)
        start = time.perf_counter()
        machine.run(accesses=args.accesses)
        seconds = time.perf_counter() - start
        rates.append(machine.total_accesses / seconds)
    pages = machine.host.config.frames + sum(vm.real_pages for vm in machine.vms)
    host = machine.host.counters()
    print(f"{args.paging} paging, {args.accesses:,} accesses, 2 VMs, overcommit 1.5x")
    print(f"accesses/s (median of {args.repeat}): {statistics.median(rates) / 1e6:.2f} M"
          f"  runs: {' '.join(f'{r / 1e6:.2f}' for r in rates)}")  # fmt: skip
    print(f"host faults {host['faults']:,}, host swap-outs {host['writebacks']:,}")
    total, swap = state_bytes(machine)
    print(f"state: {total / pages:.1f} bytes per simulated page, {swap / pages:.1f} of them "
          f"the swap devices' slots ({pages:,} pages: host frames + VM real pages)")  # fmt: skip


if __name__ == "__main__":
    main()
