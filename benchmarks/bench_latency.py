"""What a cache miss costs on this machine: the context for every other benchmark.

memvirt's state is arrays (about 63 bytes per simulated page: 10 MB for the
163,840 pages of ``bench_vms.py``), and an access reads rows of them that
depend on one another: the TLB set, the page-table entry, then the frame's
rows. How fast that goes depends on where those rows are: in the core's
caches, or in memory. This script measures it for working sets from 16 KiB
to 256 MiB, one cache line (64 bytes) per item, in two ways:

- **dependent**: a pointer chase over a random cycle, each load's address
  the value of the one before it (a walk, or a list's links): the latency of
  one load;
- **independent**: loads of the same lines in a random order known in
  advance (an access's rows when the next accesses are known and can be
  prefetched): the cost per load when the misses overlap.

    python benchmarks/bench_latency.py [--sizes 16K,256K,1M,2M,4M,16M,64M,256M] [--loads N]
                                       [--repeat R]

Prints one line per size: the median ns per load of each kind over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from numba import njit

#: 8-byte words in a cache line: one item per line.
LINE_WORDS = 8
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@njit(cache=True)
def chase(nodes: np.ndarray, start: int, loads: int) -> int:
    """Follow ``loads`` links from ``start``; return where it ended (so nothing is
    optimised away)."""
    x = start
    for _ in range(loads):
        x = nodes[x]
    return x


@njit(cache=True)
def gather(nodes: np.ndarray, order: np.ndarray, loads: int) -> int:
    """Read ``nodes[order[i]]`` for ``loads`` values of i (the order repeated): loads whose
    addresses do not wait for one another. Returns their sum."""
    total = 0
    n = order.shape[0]
    for i in range(loads):
        total += nodes[order[i % n]]
    return total


def ring(lines: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random cycle through ``lines`` cache lines: ``nodes[line * 8]`` holds the word
    index of the next line's first word. Also the order of the lines' first words."""
    order = rng.permutation(lines).astype(np.int64) * LINE_WORDS
    nodes = np.zeros(lines * LINE_WORDS, dtype=np.int64)
    nodes[order] = np.roll(order, -1)
    return nodes, order


def size(text: str) -> int:
    """Bytes of ``text``: a number with an optional K, M or G (binary)."""
    given = text.strip()
    upper = given.upper()
    unit = UNITS.get(upper[-1:], 1)
    number = upper[:-1] if upper[-1:] in UNITS else upper
    if not number.isdigit() or int(number) * unit < 64:
        raise argparse.ArgumentTypeError(f"{given!r}: a size of at least 64 bytes expected")
    return int(number) * unit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        type=lambda s: [size(x) for x in s.split(",")],
        default="16K,256K,1M,2M,4M,16M,64M,256M",
        help="working sets, comma-separated (K, M, G: binary units)",
    )
    ap.add_argument("--loads", type=int, default=4_000_000, help="loads timed per size")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.loads < 1 or args.repeat < 1:
        ap.error("--loads and --repeat: at least 1 expected")
    rng = np.random.default_rng(0)
    chase(np.zeros(8, dtype=np.int64), 0, 1)  # load the compiled functions
    gather(np.zeros(8, dtype=np.int64), np.zeros(1, dtype=np.int64), 1)
    print(f"{'working set':>12} {'dependent':>12} {'independent':>12}   (ns per load)")
    for nbytes in args.sizes:
        nodes, order = ring(max(1, nbytes // (LINE_WORDS * 8)), rng)
        chase(nodes, int(order[0]), order.size)  # once round, so the lines are where they stay
        dependent, independent = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            chase(nodes, int(order[0]), args.loads)
            dependent.append((time.perf_counter() - t) * 1e9 / args.loads)
            t = time.perf_counter()
            gather(nodes, order, args.loads)
            independent.append((time.perf_counter() - t) * 1e9 / args.loads)
        label = f"{nbytes / (1 << 20):g} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"
        print(f"{label:>12} {statistics.median(dependent):12.1f} "
              f"{statistics.median(independent):12.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
