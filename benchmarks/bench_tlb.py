"""What the simulated TLB costs per access: one kernel's data plane, TLB level by level.

A Zipf string over ``--pages`` pages (30% writes, all in memory after a warm-up, LRU) is
run by one native kernel with four TLBs: the default two levels (64 entries 4-way, then
1,536 entries 12-way), each level alone, and none (every access walks the 4-level
table). It prints the wall time per access (the median of ``--repeat`` runs) and the
share of accesses that walked. This is the shape of a guest's accesses in
``bench_vms.py`` (two VMs of 40,960-page Zipf strings): where the simulated TLB misses
often, probing it costs about as much as the walks it saves.

    python benchmarks/bench_tlb.py [--pages N] [--alpha A] [--accesses N] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from memvirt.kernel.kernel import Kernel, KernelConfig, Region
from memvirt.mmu.tlb import TLBConfig, TLBLevel

TLBS: dict[str, TLBConfig | None] = {
    "64:4 + 1536:12 (default)": TLBConfig(),
    "64:4 alone": TLBConfig((TLBLevel(64, 4),)),
    "1536:12 alone": TLBConfig((TLBLevel(1536, 12),)),
    "none": None,
}


def zipf_string(pages: int, alpha: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` page numbers drawn by Zipf's law over ``pages`` pages (ranks shuffled over the
    pages), and 30% of them writes."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, pages + 1) ** alpha
    ranks = rng.choice(pages, size=n, p=weights / weights.sum())
    return rng.permutation(pages)[ranks].astype(np.int64), (rng.random(n) < 0.3).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=40_960)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--accesses", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    vpns, writes = zipf_string(args.pages, args.alpha, args.accesses, seed=1)
    frames = args.pages + args.pages // 5  # room for every page and the tables
    print(f"Zipf({args.alpha}) over {args.pages:,} pages, {args.accesses:,} accesses, LRU")
    print(f"{'TLB':<26} {'ns per access':>14} {'walked':>7}  runs")
    for name, tlb in TLBS.items():
        times = []
        walked = 0.0
        for _ in range(args.repeat):
            kernel = Kernel(KernelConfig(frames=frames, policy="lru", tlb=tlb))
            pid = kernel.spawn([Region(0, args.pages * kernel.page_size)])
            kernel.run(pid, vpns, writes, page_numbers=True)  # every page in memory
            before = kernel.counters(pid)
            start = time.perf_counter()
            kernel.run(pid, vpns, writes, page_numbers=True)
            times.append(time.perf_counter() - start)
            after = kernel.counters(pid)
            assert after["faults"] == before["faults"]  # the timed run faults nothing
            walked = (after["walks"] - before["walks"]) / args.accesses
        ns = [t / args.accesses * 1e9 for t in times]
        runs = " ".join(f"{x:.1f}" for x in ns)
        print(f"{name:<26} {statistics.median(ns):>14.1f} {walked:>6.0%}  {runs}")


if __name__ == "__main__":
    main()
