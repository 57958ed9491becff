"""Generation speed of the synthetic workloads.

For each kind, a stream of ``--accesses`` accesses (default 20,000,000) over
``--pages`` pages (default 1,048,576) with write fraction 0.3 is generated in
chunks of ``--chunk`` (default 1<<20, the default of ``generate``), ``--repeat``
times (default 5), with a new seed each time. Each run times:

- setup: building the stream (for Zipf: the permutation and the alias table);
- generation: taking all the chunks (wall time), and the CPU time of the
  process over the same span, which a busy machine disturbs less;

and the table shows the medians, in millions of accesses per second. The
numba kernels are compiled (or loaded from the cache) before any timing.

    python benchmarks/bench_workloads.py
    python benchmarks/bench_workloads.py --json out/bench_workloads.json
    python benchmarks/bench_workloads.py --kinds uniform,zipf --accesses 5000000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from memvirt.files import atomic_json
from memvirt.workloads import (
    HotCold,
    Loop,
    Mix,
    MixComponent,
    Phase,
    Phases,
    Sequential,
    Stream,
    Stride,
    Uniform,
    WorkloadSpec,
    Zipf,
    generate_all,
)

WRITE_FRACTION = 0.3


def specs(pages: int) -> dict[str, WorkloadSpec]:
    """The benchmarked spec of each kind, over ``pages`` pages."""
    w = WRITE_FRACTION
    return {
        "uniform": Uniform(pages=pages, write_fraction=w),
        "zipf": Zipf(pages=pages, alpha=1.0, write_fraction=w),
        "hotcold": HotCold(pages=pages, write_fraction=w),
        "sequential": Sequential(pages=pages, write_fraction=w),
        "loop": Loop(length=pages // 4, write_fraction=w),
        "stride": Stride(pages=pages, stride=513, write_fraction=w),
        "mix": Mix(
            components=(
                MixComponent(weight=0.8, workload=Zipf(pages=pages // 2)),
                MixComponent(weight=0.2, workload=Sequential(pages=pages // 2, offset=pages // 2)),
            ),
            write_fraction=w,
        ),
        "phases": Phases(
            phases=(
                Phase(workload=Zipf(pages=pages // 2), accesses=3_000_000),
                Phase(workload=Uniform(pages=pages // 2, offset=pages // 2), accesses=1_000_000),
            ),
            write_fraction=w,
        ),
    }


def run_once(spec: WorkloadSpec, accesses: int, chunk: int, seed: int) -> dict[str, float]:
    """Time one stream: setup, then every chunk."""
    t0 = time.perf_counter()
    stream = Stream(spec, seed)
    t1 = time.perf_counter()
    c1 = time.process_time()
    writes = 0
    while stream.taken < accesses:
        writes += int(stream.take(min(chunk, accesses - stream.taken)).writes.sum())
    c2 = time.process_time()
    t2 = time.perf_counter()
    # summing the writes is part of the timed loop: it keeps the chunks honest (used) and
    # costs about 0.1 ns per access
    return {
        "setup_seconds": t1 - t0,
        "seconds": t2 - t1,
        "cpu_seconds": c2 - c1,
        "write_share": writes / accesses,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_json(path, data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accesses", type=int, default=20_000_000)
    parser.add_argument("--pages", type=int, default=1 << 20)
    parser.add_argument("--chunk", type=int, default=1 << 20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kinds", default="", help="comma-separated kinds (default: all)")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args(argv)

    all_specs = specs(args.pages)
    kinds = [k for k in args.kinds.split(",") if k] or list(all_specs)
    unknown = [k for k in kinds if k not in all_specs]
    if unknown:
        parser.error(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(all_specs)}")

    for kind in kinds:  # compile or load every kernel before timing
        generate_all(all_specs[kind], 1000, 0)

    results: dict[str, Any] = {}
    print(
        f"{args.accesses:,} accesses over {args.pages:,} pages, chunks of {args.chunk:,}, "
        f"write fraction {WRITE_FRACTION}, median of {args.repeat} runs"
    )
    header = f"{'kind':<11} {'M acc/s':>9} {'M acc/s CPU':>12} {'setup ms':>9} {'writes':>7}"
    print(header)
    print("-" * len(header))
    for kind in kinds:
        runs = [
            run_once(all_specs[kind], args.accesses, args.chunk, seed)
            for seed in range(1, args.repeat + 1)
        ]
        rate = statistics.median(args.accesses / r["seconds"] for r in runs) / 1e6
        cpu_rate = statistics.median(args.accesses / max(r["cpu_seconds"], 1e-9) for r in runs)
        setup = statistics.median(r["setup_seconds"] for r in runs) * 1e3
        share = statistics.median(r["write_share"] for r in runs)
        print(f"{kind:<11} {rate:>9.1f} {cpu_rate / 1e6:>12.1f} {setup:>9.1f} {share:>7.4f}")
        results[kind] = {
            "spec": all_specs[kind].model_dump(),
            "median_accesses_per_second": rate * 1e6,
            "median_cpu_accesses_per_second": cpu_rate,
            "median_setup_seconds": setup / 1e3,
            "runs": runs,
        }

    if args.json:
        write_json(
            args.json,
            {
                "accesses": args.accesses,
                "pages": args.pages,
                "chunk": args.chunk,
                "repeat": args.repeat,
                "kinds": results,
                "python": sys.version.split()[0],
                "numpy": np.__version__,
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
            },
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
