"""Fault-path microbenchmark: every access is a page fault.

A trace cycles over twice as many pages as there are frames, so under fifo
every access faults and evicts. It times the per-fault path of the data
plane (page fault, victim choice, eviction, frame reuse) without the TLB.

    python benchmarks/bench_faults.py [--accesses N] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from memvirt.replay import ReplayOptions, replay, warm_up
from memvirt.traces.model import Trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accesses", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    warm_up()
    print(f"{'pages':>9} {'frames':>8} {'faults/s (median)':>18}  runs")
    for pages in (1_000, 100_000, 1_000_000):
        trace = Trace.from_pages(np.arange(args.accesses, dtype=np.int64) % pages)
        options = ReplayOptions(frames=pages // 2, policy="fifo", tlb=None)
        rates = []
        for _ in range(args.repeat):
            result = replay(trace, options)
            assert result["faults"] == args.accesses
            rates.append(args.accesses / result.seconds)
        runs = " ".join(f"{r / 1e6:.1f}" for r in rates)
        print(f"{pages:>9} {pages // 2:>8} {statistics.median(rates) / 1e6:>16.1f} M  {runs}")


if __name__ == "__main__":
    main()
