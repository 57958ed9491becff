"""Trace reading speed: valgrind lackey parsing and memvirt's binary format.

Two traces are generated once under ``benchmarks/.cache/`` (seeded, so every
run reads the same bytes) and then read with :func:`memvirt.traces.readers.open_trace`,
chunk by chunk as a replay would, ``--repeat`` times each:

- a lackey log of ``--lackey-records`` records (5,000,000 by default) in the
  shape valgrind prints: an instruction pointer stepping through code
  (``I  0401ab70,3``: 8 hex digits), about one data access per two
  instructions on the stack (10 digits) or the heap (8 digits), loads,
  stores and modifies 60/30/10, sizes 1 to 32 bytes, some accesses crossing
  a page boundary, valgrind's ``==PID==`` lines before and after. The
  figure is **records per second**: lines of the log that are accesses.
- a binary trace (``.mvt``) of ``--binary-records`` records (50,000,000 by
  default): random addresses below 2**40 and kinds read/write/fetch
  50/20/30. The figure is **accesses per second**.
- the same two compressed with zstd (level 3), read through the streaming
  decompressor; and the binary trace read whole with ``read_trace``, which
  also concatenates the chunks.

Before timing, one untimed pass loads the compiled parsers (numba cache) and
the files into the page cache, so the figures are parse and decode speed,
not disk speed. The table gives the median of the runs by wall time, with
the slowest and fastest run, and the median by CPU time of this process:
on a busy shared machine the CPU-time rate is the steadier figure.

    python benchmarks/bench_traces.py
    python benchmarks/bench_traces.py --json out/bench_traces.json
    python benchmarks/bench_traces.py --lackey-records 500000 --binary-records 5000000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from memvirt.traces.model import KIND_FETCH, KIND_READ, KIND_WRITE, Trace
from memvirt.traces.readers import open_trace, read_trace
from memvirt.traces.writers import write_trace

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".cache"
GENERATOR_VERSION = 1  # bump when a generator changes, so old cached files are not reused
BLOCK = 1_000_000  # records generated at a time


# ------------------------------------------------------------------ the traces


def lackey_lines(records: int, seed: int) -> Iterator[str]:
    """A lackey log of ``records`` access lines, in blocks of text."""
    rng = np.random.default_rng(seed)
    yield "==4242== Lackey, an example Valgrind tool\n==4242== Command: ./bench\n==4242== \n"
    ip = 0x0401AB70
    done = 0
    while done < records:
        n = min(BLOCK, records - done)
        is_data = rng.random(n) < 1 / 3  # one data access per two instructions
        ops = rng.choice(np.array([" L ", " S ", " M "]), size=n, p=[0.6, 0.3, 0.1])
        on_stack = rng.random(n) < 0.5
        stack = 0x1FFEFFF000 - rng.integers(0, 1 << 14, size=n)
        heap = 0x04A00000 + rng.integers(0, 1 << 22, size=n)
        data_sizes = rng.choice(np.array([1, 2, 4, 8, 8, 8, 16, 32]), size=n)
        fetch_sizes = rng.integers(1, 16, size=n)
        jumps = rng.random(n) < 0.1
        targets = 0x04000000 + rng.integers(0, 1 << 20, size=n)
        lines = []
        for i in range(n):
            if is_data[i]:
                address = int(stack[i]) if on_stack[i] else int(heap[i])
                lines.append(f"{ops[i]}{address:08x},{data_sizes[i]}\n")
            else:
                lines.append(f"I  {ip:08x},{fetch_sizes[i]}\n")
                ip = int(targets[i]) if jumps[i] else ip + int(fetch_sizes[i])
        yield "".join(lines)
        done += n
    yield "==4242== \n==4242== Counted 1 call to main()\n"


def binary_chunks(records: int, seed: int) -> Iterator[Trace]:
    rng = np.random.default_rng(seed)
    kinds = np.array([KIND_READ, KIND_WRITE, KIND_FETCH], dtype=np.uint8)
    done = 0
    while done < records:
        n = min(BLOCK, records - done)
        addresses = rng.integers(0, 1 << 40, size=n)
        yield Trace.from_kinds(addresses, rng.choice(kinds, size=n, p=[0.5, 0.2, 0.3]))
        done += n


def ensure_cache_dir(cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    ignore = cache_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# generated traces and scratch files\n*\n!.gitignore\n")


def cached(path: Path, make: Callable[[Path], None]) -> tuple[Path, bool]:
    """``path``, made by ``make`` (into a temporary name, then renamed) unless it exists."""
    if path.exists():
        return path, True
    temporary = path.with_name(path.name + ".partial")
    make(temporary)
    temporary.replace(path)
    return path, False


def make_lackey(records: int, seed: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(path, "w") as f:
            for block in lackey_lines(records, seed):
                f.write(block)

    return make


def make_zstd(source: Path) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(source, "rb") as plain, open(path, "wb") as out:
            zstandard.ZstdCompressor(level=3).copy_stream(plain, out)

    return make


def make_binary(records: int, seed: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        # write_trace picks the format from the name: the temporary name has none
        write_trace(path, binary_chunks(records, seed), format="binary")

    return make


# ------------------------------------------------------------------ timing


def stream_through(path: Path) -> int:
    """Read ``path`` chunk by chunk, as a replay would; the number of accesses."""
    accesses = 0
    with open_trace(path) as stream:
        for chunk in stream:
            accesses += len(chunk)
    return accesses


def read_whole(path: Path) -> int:
    """Read ``path`` into one Trace; the number of accesses."""
    return len(read_trace(path))


def measure(
    name: str, path: Path, records: int, unit: str, repeat: int, how: Callable[[Path], int]
) -> dict[str, Any]:
    """Wall and CPU seconds of ``repeat`` reads of ``path`` (after one untimed read)."""
    accesses = how(path)  # untimed: loads the numba cache and the page cache
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        n = how(path)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        if n != accesses:
            raise SystemExit(f"{name}: read {accesses} accesses, then {n}")
    median, median_cpu = statistics.median(wall), statistics.median(cpu)
    return {
        "case": name,
        "file": str(path),
        "file_bytes": path.stat().st_size,
        "records": records,
        "accesses": accesses,
        "unit": unit,
        "seconds": wall,
        "cpu_seconds": cpu,
        "median_seconds": median,
        "median_cpu_seconds": median_cpu,
        "rate": records / median,
        "cpu_rate": records / median_cpu,
        "min_rate": records / max(wall),
        "max_rate": records / min(wall),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lackey-records", type=int, default=5_000_000)
    parser.add_argument("--binary-records", type=int, default=50_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--no-compressed", action="store_true", help="skip the zstd cases")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)

    ensure_cache_dir(args.cache_dir)
    v, seed = GENERATOR_VERSION, args.seed
    started = time.perf_counter()
    lackey, lackey_cached = cached(
        args.cache_dir / f"lackey-v{v}-n{args.lackey_records}-s{seed}.lackey",
        make_lackey(args.lackey_records, seed),
    )
    binary, binary_cached = cached(
        args.cache_dir / f"binary-v{v}-n{args.binary_records}-s{seed}.mvt",
        make_binary(args.binary_records, seed),
    )
    cases = [
        ("lackey", lackey, args.lackey_records, "records/s", stream_through),
        ("binary", binary, args.binary_records, "accesses/s", stream_through),
        ("binary, read_trace", binary, args.binary_records, "accesses/s", read_whole),
    ]
    if not args.no_compressed:
        lackey_zst, _ = cached(lackey.with_name(lackey.name + ".zst"), make_zstd(lackey))
        binary_zst, _ = cached(binary.with_name(binary.name + ".zst"), make_zstd(binary))
        cases[1:1] = [
            ("lackey, zstd", lackey_zst, args.lackey_records, "records/s", stream_through)
        ]
        cases.append(
            ("binary, zstd", binary_zst, args.binary_records, "accesses/s", stream_through)
        )
    prepare = time.perf_counter() - started

    results = [measure(*case[:4], args.repeat, case[4]) for case in cases]

    header = f"{'case':<20} {'records':>11} {'file MB':>8} {'wall s':>7} {'rate (wall)':>12}"
    print(f"{header} {'min-max':>12} {'rate (CPU)':>11}   unit")
    for r in results:
        print(
            f"{r['case']:<20} {r['records']:>11,} {r['file_bytes'] / 1e6:>8.1f} "
            f"{r['median_seconds']:>7.3f} {r['rate'] / 1e6:>10.1f} M "
            f"{r['min_rate'] / 1e6:>5.1f}-{r['max_rate'] / 1e6:<6.1f} "
            f"{r['cpu_rate'] / 1e6:>9.1f} M   {r['unit']}"
        )
    print(
        f"(median of {args.repeat} runs; traces "
        f"{'cached' if lackey_cached and binary_cached else 'generated'}, {prepare:.1f} s)"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "repeat": args.repeat,
            "seed": seed,
            "cases": results,
            "python": sys.version,
            "numpy": np.__version__,
            "machine": platform.machine(),
            "processor": platform.processor(),
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
