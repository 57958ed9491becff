"""Replay speed: memvirt's three replay paths against libCacheSim on one Zipf trace.

For each of lru, fifo and clock the same trace is run by libCacheSim
(``process_trace`` over a raw uint64 file) and by memvirt's ``replay`` in
three ways, interleaved (lcs, flat, radix, radix+tlb, lcs, flat, ...):

- flat: replacement alone, a flat page-to-frame map (``page_tables=False``,
  ``tlb=None``), the experiment libCacheSim runs; its faults must equal
  libCacheSim's misses, and flat / libCacheSim is the headline ratio;
- radix: 4-level page tables walked on every access (``tlb=None``);
- radix+tlb: page tables behind the default two-level TLB.

The three paths must count the same faults. The first-run compile time of
the data plane is measured in fresh subprocesses (cold and warm numba cache).

Rates are requests (accesses) per second of simulation: libCacheSim's is the
wall time of ``process_trace``; memvirt's is ``ReplayResult.seconds``, the
wall time of the access loop only (building the kernel, its page tables or
the flat map is excluded, and kept apart as ``wall_seconds``).

    python benchmarks/bench_replay.py --json out/bench_replay.json
    python benchmarks/bench_replay.py --accesses 300000 --pages 30000 --frames 3000 --repeat 1

The exit status is 1 when a miss or fault count differs, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".cache"
POLICIES = ("lru", "fifo", "clock")
# memvirt's replay paths: name -> (label, ReplayOptions keywords besides frames and policy).
# An absent "tlb" keyword means the default two-level TLB.
PATHS: dict[str, tuple[str, dict[str, Any]]] = {
    "flat": ("flat", {"tlb": None, "page_tables": False}),
    "radix": ("radix", {"tlb": None}),
    "tlb": ("radix+tlb", {}),
}
TRACE_VERSION = 1  # bump when the generator changes, so old cached files are not reused

COMPILE_SNIPPET = (
    "import time; t=time.perf_counter(); "
    "from memvirt.replay import warm_up; i=time.perf_counter()-t; "
    "warm_up(); print(time.perf_counter()-t, i)"
)


# --------------------------------------------------------------------------- trace


def zipf_pages(accesses: int, pages: int, alpha: float, seed: int) -> np.ndarray:
    """``accesses`` page ids in 0..pages-1, Zipf(alpha) by popularity.

    Inverse-CDF sampling: the rank of each access is found with
    ``np.searchsorted`` over the cumulative weights 1/k^alpha. Ranks are then
    mapped to page ids by a seeded permutation, so that popular pages are not
    neighbours in the address space (which would flatter the page tables).
    """
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(1.0 / np.arange(1, pages + 1, dtype=np.float64) ** alpha)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(accesses), side="right")
    np.minimum(ranks, pages - 1, out=ranks)
    perm = rng.permutation(pages).astype(np.int64)
    return perm[ranks]


def ensure_cache_dir(cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    ignore = cache_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# generated traces and scratch files\n*\n!.gitignore\n")


def cached_trace(args: argparse.Namespace) -> tuple[np.ndarray, Path, Path, dict[str, Any]]:
    """The trace as an int64 array, plus its .u64 (libCacheSim) and .npy (memvirt) files."""
    cache_dir: Path = args.cache_dir
    ensure_cache_dir(cache_dir)
    stem = f"zipf-v{TRACE_VERSION}-a{args.alpha:g}-n{args.accesses}-p{args.pages}-s{args.seed}"
    raw, npy = cache_dir / f"{stem}.u64", cache_dir / f"{stem}.npy"
    info: dict[str, Any] = {"raw_file": str(raw), "npy_file": str(npy)}
    if raw.exists() and npy.exists() and raw.stat().st_size == 8 * args.accesses:
        t = time.perf_counter()
        pages = np.load(npy)
        info.update(cached=True, load_seconds=time.perf_counter() - t)
    else:
        t = time.perf_counter()
        pages = zipf_pages(args.accesses, args.pages, args.alpha, args.seed)
        info["generate_seconds"] = time.perf_counter() - t
        writers: list[tuple[Path, Callable[[BinaryIO], None]]] = [
            (raw, lambda f: pages.astype("<u8").tofile(f)),
            (npy, lambda f: np.save(f, pages)),
        ]
        for path, write in writers:
            tmp = path.with_suffix(path.suffix + ".tmp")
            with open(tmp, "wb") as f:
                write(f)
            os.replace(tmp, path)
        info["cached"] = False
    if pages.dtype != np.int64 or pages.shape != (args.accesses,):
        raise SystemExit(f"{npy}: unexpected contents {pages.dtype} {pages.shape}; delete it")
    info["distinct_pages"] = int(np.unique(pages).shape[0])
    return np.ascontiguousarray(pages), raw, npy, info


# --------------------------------------------------------------------------- runners


def lcs_cache(lcs: Any, policy: str, frames: int) -> Any:
    if policy == "lru":
        return lcs.LRU(cache_size=frames)
    if policy == "fifo":
        return lcs.FIFO(cache_size=frames)
    if policy == "clock":
        # One reference bit, clear on insertion (init_freq=0).
        return lcs.Clock(cache_size=frames, init_freq=0, n_bit_counter=1)
    raise ValueError(policy)


def lcs_reader(lcs: Any, path: Path) -> Any:
    # VALPIN_TRACE: a raw file of little-endian uint64 object ids, 8 bytes each.
    # ignore_obj_size gives every object size 1, so cache_size counts objects.
    return lcs.TraceReader(
        trace=str(path),
        trace_type=lcs.TraceType.VALPIN_TRACE,
        reader_init_params=lcs.ReaderInitParam(ignore_obj_size=True),
    )


def run_lcs(lcs: Any, path: Path, policy: str, frames: int, n: int) -> dict[str, Any]:
    reader = lcs_reader(lcs, path)
    if reader.n_total_req != n:
        raise SystemExit(f"{path}: libCacheSim sees {reader.n_total_req} requests, not {n}")
    cache = lcs_cache(lcs, policy, frames)
    t = time.perf_counter()
    miss_ratio, _byte_miss_ratio = cache.process_trace(reader)
    seconds = time.perf_counter() - t
    return {
        "misses": round(miss_ratio * n),
        "miss_ratio": miss_ratio,
        "seconds": seconds,
        "rate": n / seconds,
    }


def run_memvirt(trace: Any, policy: str, frames: int, path: str) -> dict[str, Any]:
    from memvirt.replay import ReplayOptions, replay

    opts = ReplayOptions(frames=frames, policy=policy, **PATHS[path][1])
    t = time.perf_counter()
    res = replay(trace, opts)
    wall = time.perf_counter() - t
    c = res.counters
    out: dict[str, Any] = {
        "misses": c["faults"],
        "seconds": res.seconds,
        "wall_seconds": wall,
        "rate": c["accesses"] / res.seconds,
    }
    if path != "flat":
        out.update(table_pages=res.table_pages, walks=c["walks"])
    if path == "tlb":
        out.update(tlb_l1_misses=c["tlb_l1_misses"], tlb_misses=c["tlb_misses"])
    return out


def compile_times() -> dict[str, Any]:
    """warm_up() in a fresh interpreter: cold (empty numba cache dir), then warm (same dir)."""
    out: dict[str, Any] = {"command": [sys.executable, "-c", COMPILE_SNIPPET]}
    with tempfile.TemporaryDirectory(prefix="memvirt-numba-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold", "warm"):
            t = time.perf_counter()
            proc = subprocess.run(
                out["command"], env=env, capture_output=True, text=True, check=False
            )
            process = time.perf_counter() - t
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"compile-time subprocess ({label}) failed")
            total, imports = (float(x) for x in proc.stdout.split())
            out[label] = {
                "seconds": total,  # import memvirt.replay + warm_up()
                "import_seconds": imports,
                "warm_up_seconds": total - imports,
                "process_seconds": process,  # including interpreter start-up
            }
    return out


# --------------------------------------------------------------------------- report


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt_mps(x: float) -> str:
    return f"{x / 1e6:.2f}"


def print_report(res: dict[str, Any]) -> None:
    cfg = res["config"]
    paths: list[str] = cfg["paths"]
    print()
    print(
        f"Zipf(alpha={cfg['alpha']:g}) trace: {cfg['accesses']:,} accesses over "
        f"{cfg['pages']:,} pages ({res['trace']['distinct_pages']:,} touched), "
        f"{cfg['frames']:,} frames, {cfg['repeat']} interleaved repeats, "
        f"{cfg['cpu_count']} CPUs"
    )
    print("medians of requests/s of simulation; ratios are medians of pairwise ratios")
    print()
    cols = [("lcs M/s", 8)] + [(f"{PATHS[k][0]} M/s", 9) for k in PATHS]
    cols += [("flat/lcs", 8), ("misses equal?", 13)]
    head = f"{'policy':<7}" + "".join(f" {name:>{max(w, len(name))}}" for name, w in cols)
    print(head)
    print("-" * len(head))
    for p, r in res["policies"].items():
        cells = [fmt_mps(r["libcachesim"]["median_rate"])]
        for k in PATHS:
            cells.append(fmt_mps(r["paths"][k]["median_rate"]) if k in paths else "-")
        cells.append(f"{r['median_ratio']:.3f}x" if r["median_ratio"] is not None else "-")
        cells.append(f"{'yes' if r['misses_match'] else 'NO'} {r['libcachesim']['misses'][0]:,}")
        print(
            f"{p:<7}"
            + "".join(
                f" {c:>{max(w, len(name))}}" for c, (name, w) in zip(cells, cols, strict=True)
            )
        )
    print()
    print("ratios to lcs, median (per run):")
    for p, r in res["policies"].items():
        parts = [
            f"{PATHS[k][0]} {r['paths'][k]['median_ratio']:.3f}"
            f" ({' '.join(f'{x:.3f}' for x in r['paths'][k]['ratios'])})"
            for k in paths
        ]
        print(f"  {p:<6} " + "  ".join(parts))
    if "compile" in res:
        c = res["compile"]
        print()
        print(
            "first run in a fresh interpreter (import memvirt.replay + warm_up()): "
            f"cold cache {c['cold']['seconds']:.2f} s "
            f"(warm_up {c['cold']['warm_up_seconds']:.2f} s), "
            f"warm cache {c['warm']['seconds']:.2f} s "
            f"(warm_up {c['warm']['warm_up_seconds']:.2f} s)"
        )
    print()
    print(f"total wall time {res['total_wall_seconds']:.1f} s")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accesses", type=int, default=10_000_000)
    ap.add_argument("--pages", type=int, default=1_000_000)
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--json", type=Path, metavar="OUT", help="write all figures here")
    ap.add_argument(
        "--paths",
        default=",".join(PATHS),
        help="comma-separated memvirt paths out of flat,radix,tlb (tlb: radix+tlb)",
    )
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time runs")
    args = ap.parse_args(argv)
    if min(args.accesses, args.pages, args.frames, args.repeat) < 1:
        ap.error("--accesses, --pages, --frames and --repeat must be at least 1")
    args.policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if bad := set(args.policies) - set(POLICIES):
        ap.error(f"unknown policies {sorted(bad)}; choose from {POLICIES}")
    chosen = {p.strip() for p in args.paths.split(",") if p.strip()}
    if bad := chosen - set(PATHS):
        ap.error(f"unknown paths {sorted(bad)}; choose from {tuple(PATHS)}")
    if not chosen:
        ap.error("--paths needs at least one of flat,radix,tlb")
    args.paths = [k for k in PATHS if k in chosen]  # always in the order flat, radix, tlb
    return args


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)

    import libcachesim as lcs
    import numba

    import memvirt
    from memvirt.replay import ReplayOptions, replay, warm_up
    from memvirt.traces.model import Trace

    labels = {k: PATHS[k][0] for k in args.paths}
    res: dict[str, Any] = {
        "config": {
            "accesses": args.accesses,
            "pages": args.pages,
            "frames": args.frames,
            "repeat": args.repeat,
            "alpha": args.alpha,
            "seed": args.seed,
            "paths": args.paths,
            "path_options": {k: PATHS[k][1] for k in args.paths},
            "tlb": "default: L1 64 entries 4-way, L2 1536 entries 12-way",
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__,
            "libcachesim": lcs.__version__,
            "memvirt": getattr(memvirt, "__version__", None),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "order": "interleaved per repeat: libcachesim, " + ", ".join(labels.values()),
        }
    }

    pages, raw, _npy, info = cached_trace(args)
    res["trace"] = info
    trace = Trace.from_pages(pages, source=raw.stem)

    # Compile or load the data plane, and touch every configuration once on a
    # tiny trace, so no timed run pays for compilation.
    t = time.perf_counter()
    warm_up()
    tiny = Trace.from_pages([1, 2, 3, 1, 4, 1, 5, 2])
    for p in args.policies:
        for k in args.paths:
            replay(tiny, ReplayOptions(frames=3, policy=p, **PATHS[k][1]))
    res["in_process_warm_up_seconds"] = time.perf_counter() - t

    mismatch = False
    res["policies"] = {}
    for p in args.policies:
        lcs_runs: dict[str, list[Any]] = {"misses": [], "seconds": [], "rates": []}
        mv_runs: dict[str, list[dict[str, Any]]] = {k: [] for k in args.paths}
        for i in range(args.repeat):
            a = run_lcs(lcs, raw, p, args.frames, args.accesses)
            lcs_runs["misses"].append(a["misses"])
            lcs_runs["seconds"].append(a["seconds"])
            lcs_runs["rates"].append(a["rate"])
            line = f"  {p:<6} #{i + 1} lcs {a['rate'] / 1e6:7.2f} M/s {a['misses']:>10,} misses"
            for k in args.paths:
                b = run_memvirt(trace, p, args.frames, k)
                mv_runs[k].append(b)
                line += f" | {labels[k]} {b['rate'] / 1e6:7.2f} M/s {b['misses']:>10,}"
            print(line, flush=True)

        lm = lcs_runs["misses"]
        paths_out: dict[str, Any] = {}
        for k, runs in mv_runs.items():
            rates = [r["rate"] for r in runs]
            ratios = [m / c for m, c in zip(rates, lcs_runs["rates"], strict=True)]
            paths_out[k] = {
                "label": labels[k],
                "misses": [r["misses"] for r in runs],
                "seconds": [r["seconds"] for r in runs],
                "wall_seconds": [r["wall_seconds"] for r in runs],
                "rates": rates,
                "median_rate": med(rates),
                "ratios": ratios,  # this path / libcachesim, per repeat
                "median_ratio": med(ratios),
                # counters other than faults, from the first run (they do not vary)
                **{
                    c: v
                    for c, v in runs[0].items()
                    if c not in ("misses", "seconds", "wall_seconds", "rate")
                },
            }
        # Faults of every memvirt path (every repeat) against each other ...
        all_faults = {m for k in args.paths for m in paths_out[k]["misses"]}
        paths_equal = len(all_faults) == 1
        # ... and against libCacheSim (flat is the comparable one; the other paths
        # count the same faults by design, so they stand in when flat is skipped).
        first = args.paths[0]
        lcs_equal = len(set(lm)) == 1 and lm == paths_out[first]["misses"]
        if not paths_equal:
            mismatch = True
            detail = ", ".join(f"{labels[k]} {paths_out[k]['misses']}" for k in args.paths)
            print(
                f"\n!!!!!!!! MISMATCH ({p}): memvirt paths count different faults: {detail} "
                "!!!!!!!!\n",
                file=sys.stderr,
                flush=True,
            )
        if not lcs_equal:
            mismatch = True
            print(
                f"\n!!!!!!!! MISMATCH ({p}): libcachesim misses {lm} != memvirt "
                f"{labels[first]} faults {paths_out[first]['misses']} !!!!!!!!\n",
                file=sys.stderr,
                flush=True,
            )
        res["policies"][p] = {
            "libcachesim": {**lcs_runs, "median_rate": med(lcs_runs["rates"])},
            "paths": paths_out,
            # the headline: flat / libcachesim, median of the pairwise ratios
            "median_ratio": paths_out["flat"]["median_ratio"] if "flat" in paths_out else None,
            "faults_equal_lcs": lcs_equal,
            "faults_equal_paths": paths_equal,
            "misses_match": lcs_equal and paths_equal,
        }

    if not args.no_compile:
        res["compile"] = compile_times()

    res["total_wall_seconds"] = time.perf_counter() - t_start
    print_report(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")
    if mismatch:
        print("MISMATCH: miss or fault counts differ, see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
