"""The check for broken sharing before each host pass, timed on the page-sharing example.

A write to a shared page breaks its sharing: before each host pass the hypervisor finds
the shared pages whose contents the guest changed, and copies them. This runs
``examples/page-sharing.toml`` (four VMs of 96 MiB, thousands of pages shared in each)
for ``--accesses`` accesses after a short warm-up, times every call of
``Reclaimer.before_host_pass`` and prints the median per host pass, the calls' share of
the run, and how many pages each VM had shared (median over the passes).

    python benchmarks/bench_sharing_checks.py [--accesses N] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from memvirt.config import load_scenario
from memvirt.engine.scenario import build
from memvirt.hypervisor.reclamation import Reclaimer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "page-sharing.toml"


def timed_run(accesses: int) -> dict[str, Any]:
    """One run of the example with every check for broken sharing timed."""
    took: list[float] = []
    shared: list[int] = []
    check = Reclaimer.before_host_pass

    def timed(self: Reclaimer, vm: Any, written: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = check(self, vm, written)
        took.append(time.perf_counter() - start)
        shared.append(len(self.vms[vm.index].shared))
        return out

    machine = build(load_scenario(EXAMPLE, []))
    Reclaimer.before_host_pass = timed  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        machine.run(accesses=accesses)
        seconds = time.perf_counter() - start
    finally:
        Reclaimer.before_host_pass = check  # type: ignore[method-assign]
    return {
        "passes": len(took),
        "median_us": 1e6 * statistics.median(took),
        "share": sum(took) / seconds,
        "shared_pages": statistics.median(shared),
        "run_seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--accesses", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    build(load_scenario(EXAMPLE, [])).run(accesses=20_000)  # load the compiled kernels
    runs = [timed_run(args.accesses) for _ in range(args.repeat)]
    medians = [r["median_us"] for r in runs]
    print(f"page-sharing example, {args.accesses:,} accesses, {runs[0]['passes']:,} host passes")
    print(f"check per pass (median of the runs' medians): {statistics.median(medians):.1f} us;"
          f"  runs: {' '.join(f'{m:.1f}' for m in medians)}")  # fmt: skip
    print(f"share of the run: {statistics.median(r['share'] for r in runs):.1%};"
          f"  shared pages per VM (median): {runs[0]['shared_pages']:,.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
