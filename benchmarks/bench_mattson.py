"""Mattson's stack algorithm: how fast memvirt computes a trace's LRU miss-ratio curve.

The trace is ``--accesses`` page numbers over ``--pages`` pages, drawn
Zipf(alpha) by popularity (inverse-CDF sampling, then a seeded permutation
of the page ids), the same kind of trace as ``bench_replay.py``.
``trace_stats`` runs ``--repeat`` times after a warm-up that compiles (or
loads from numba's cache) the kernels; the report gives the median time and
accesses per second of the whole call, and of its two compiled passes apart
(renumbering the pages, then counting stack distances).

As a check, LRU's fault count from ``memvirt replay`` (replacement alone,
no page tables) must equal the curve at ``--check`` memory sizes; the exit
status is 1 when one differs.

    python benchmarks/bench_mattson.py
    python benchmarks/bench_mattson.py --accesses 100000000 --repeat 3 --check 0
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def zipf_pages(accesses: int, pages: int, alpha: float, seed: int) -> np.ndarray:
    """``accesses`` page ids in 0..pages-1, Zipf(alpha) by popularity."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(1.0 / np.arange(1, pages + 1, dtype=np.float64) ** alpha)
    cdf /= cdf[-1]
    out = np.empty(accesses, dtype=np.int64)
    step = 10_000_000  # draw in slices: the uniform floats would double the memory
    for start in range(0, accesses, step):
        count = min(step, accesses - start)
        out[start : start + count] = np.searchsorted(cdf, rng.random(count), side="right")
    np.minimum(out, pages - 1, out=out)
    perm = rng.permutation(pages).astype(np.int64)
    return perm[out]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accesses", type=int, default=10_000_000)
    parser.add_argument("--pages", type=int, default=1_000_000)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--check", type=int, default=3, help="memory sizes checked by replay")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    import numba

    from memvirt.replay import ReplayOptions, replay
    from memvirt.traces import analysis
    from memvirt.traces.analysis import trace_stats
    from memvirt.traces.model import Trace

    t = time.perf_counter()
    pages = zipf_pages(args.accesses, args.pages, args.alpha, args.seed)
    print(
        f"trace: {args.accesses:,} accesses over {args.pages:,} pages, Zipf({args.alpha}), "
        f"seed {args.seed} ({time.perf_counter() - t:.1f} s to draw)"
    )
    trace = Trace.from_pages(pages)

    t = time.perf_counter()
    trace_stats(Trace.from_pages(pages[:1000]))
    print(f"warm-up (compile or load the kernels): {time.perf_counter() - t:.2f} s")

    n = args.accesses
    whole: list[float] = []
    densify: list[float] = []
    count: list[float] = []
    stats = None
    for _ in range(args.repeat):
        t = time.perf_counter()
        stats = trace_stats(trace)
        whole.append(time.perf_counter() - t)
        # the two compiled passes alone, on the same data
        dense = np.empty(pages.shape[0], dtype=np.int64)
        t = time.perf_counter()
        d = int(analysis._densify(pages, dense))
        densify.append(time.perf_counter() - t)
        slots = min(n, max(analysis.SLOTS_PER_PAGE * d, analysis.MIN_SLOTS))
        blocks = (slots + 63) // 64
        tree = np.zeros(blocks + 1, dtype=np.int32)
        bits = np.zeros(blocks, dtype=np.uint64)
        owner = np.full(slots, -1, dtype=np.int64)
        last = np.full(d, -1, dtype=np.int64)
        hist = np.zeros(d, dtype=np.int64)
        t = time.perf_counter()
        analysis._mattson(dense, tree, bits, owner, last, hist, np.zeros(0, dtype=np.int64))
        count.append(time.perf_counter() - t)
        del dense, tree
    assert stats is not None

    rows = [("trace_stats (whole call)", whole), ("  renumber pages", densify)]
    rows.append(("  stack distances (Fenwick tree)", count))
    print(f"\n{stats.distinct_pages:,} distinct pages; {len(stats.miss_ratio_curve)} curve points")
    print(f"{'':34} {'median s':>9} {'M accesses/s':>13}   runs (s)")
    for name, times in rows:
        med = statistics.median(times)
        runs = ", ".join(f"{x:.2f}" for x in times)
        print(f"{name:34} {med:9.2f} {n / med / 1e6:13.1f}   {runs}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    print(f"peak memory (max RSS): {peak:.1f} GiB")

    status = 0
    checked: list[dict[str, int]] = []
    if args.check > 0:
        curve = stats.miss_ratio_curve
        for frames, misses in curve[:: max(1, len(curve) // args.check)][: args.check]:
            options = ReplayOptions(frames=frames, policy="lru", tlb=None, page_tables=False)
            faults = replay(trace, options)["faults"]
            ok = faults == misses
            status |= not ok
            checked.append({"frames": frames, "curve": misses, "replay": faults})
            print(
                f"check: {frames:,} frames: curve {misses:,}, replay {faults:,}"
                f"{'' if ok else '  MISMATCH'}"
            )

    if args.json is not None:
        out: dict[str, Any] = {
            "accesses": n,
            "pages": args.pages,
            "alpha": args.alpha,
            "seed": args.seed,
            "distinct_pages": stats.distinct_pages,
            "seconds": {"whole": whole, "densify": densify, "distances": count},
            "median_accesses_per_second": n / statistics.median(whole),
            "peak_rss_gib": peak,
            "checks": checked,
            "versions": {
                "python": platform.python_version(),
                "numpy": np.__version__,
                "numba": numba.__version__,
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
