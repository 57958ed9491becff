"""Which kernels, and which source lines in them, a run's time goes to (Linux ``perf``).

A sampling profiler of Python (py-spy) stops at the call of a compiled kernel, and
``perf`` sees the kernels' code as anonymous memory. This script closes the gap in two
steps:

1. ``run``: runs ``examples/two-level-nested.toml`` in one thread (as
   ``bench_vms.py --parts`` does), with every kernel compiled in this process, into an
   empty numba cache, with debug information (``NUMBA_ENABLE_PROFILING``); then writes
   each kernel's object code and the address it was loaded at into ``--out``. Run it
   under ``perf record``.
2. ``report``: reads ``perf script``'s sampled addresses, finds the kernel each falls
   in, and the source line of each (``addr2line`` on the kernel's object code), and
   prints the share of samples per kernel and per line.

    perf record -e cpu-clock -F 4000 -o out/perf.data -- \\
        python benchmarks/profile_kernels.py run --out out/kernels [--accesses N] [--set K=V]
    perf script -F ip -i out/perf.data > out/ips.txt
    python benchmarks/profile_kernels.py report --out out/kernels --ips out/ips.txt

Compiling every kernel takes a minute or two, spent before the timed runs. Read the
shares as where to look, not as costs, and time a change with the benchmarks:

- lines are as the optimiser left them: an inlined helper's lines count in its caller,
  a loop's loads may be charged to the line that set up a value they use, and some code
  has no line at all ("?");
- a sample lands on the instruction that waits, so a prefetch pass that takes the cache
  misses off a later pass shows the misses, not the time saved: ``prefetch_pages`` had
  19% of the kernels' samples in one profile, yet the host's ``run_batch`` took 23 ns an
  access longer without it, against the 11 it cost (docs/benchmarks.md);
- the kernels are compiled with debug information, and the runs are slower than
  ``bench_vms.py``'s.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from memvirt.files import atomic_json, atomic_write

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "two-level-nested.toml"


def run(out: Path, accesses: int, repeat: int, settings: list[str]) -> None:
    """Compile every kernel here, run the scenario, write the kernels' objects."""
    # before numba is imported: a cache of our own (so that every kernel compiles in this
    # process and keeps its object code) and debug information for the line table
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="memvirt-profile-")
    os.environ["NUMBA_ENABLE_PROFILING"] = "1"
    os.environ["MEMVIRT_ONE_THREAD"] = "1"
    os.environ["MEMVIRT_NO_PRECOMPILE"] = "1"  # no second process filling that cache
    from memvirt.config import ScenarioError, load_scenario
    from memvirt.engine import precompile
    from memvirt.engine.scenario import build
    from memvirt.engine.virtual import VirtualizedMachine

    try:
        scenario = load_scenario(EXAMPLE, [f"run.accesses={accesses}", "run.seconds=1000",
                                           *settings])  # fmt: skip
    except ScenarioError as err:
        fail(str(err))
    warm = build(scenario)
    warm.run(accesses=min(accesses, 1_000_000))
    assert isinstance(warm, VirtualizedMachine)
    precompile.compile_all(warm)
    for _ in range(repeat):
        build(scenario).run(accesses=accesses)
    dump(out)


def dump(out: Path) -> None:
    """Each compiled kernel's object code (``NAME.o``) and where its entry was loaded
    (``kernels.json``: name, entry symbol, address)."""
    from numba.core.registry import CPUDispatcher

    out.mkdir(parents=True, exist_ok=True)
    kernels = []
    dispatchers = [d for d in gc.get_objects() if isinstance(d, CPUDispatcher)]
    for number, dispatcher in enumerate(dispatchers):
        overloads: dict[Any, Any] = dispatcher.overloads  # (numba's are untyped)
        for variant, result in enumerate(overloads.values()):
            library, symbol = result.library, result.fndesc.llvm_func_name
            try:
                code = library._get_compiled_object()
                entry = library.get_pointer_to_function(symbol)
            except RuntimeError:  # loaded from a cache: no object code kept
                continue
            name = f"{dispatcher.py_func.__name__}.{number}.{variant}"
            atomic_write(out / f"{name}.o", code)
            kernels.append([name, symbol, entry])
    atomic_json(out / "kernels.json", kernels)  # (last: it names the objects written)
    print(f"{len(kernels)} kernels written to {out}")


def _tool(*args: str | Path) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def report(out: Path, ips_file: Path, top: int) -> None:
    """Samples per kernel, and per source line of the kernels with most."""
    spans = []  # (start, end, name, object file)
    for name, symbol, entry in json.loads((out / "kernels.json").read_text()):
        obj = out / f"{name}.o"
        offset = next((int(f[0], 16) for f in map(str.split, _tool("nm", obj).splitlines())
                       if len(f) == 3 and f[2] == symbol), None)  # fmt: skip
        size = max((int(f[2], 16) for f in map(str.split, _tool("objdump", "-h", obj).splitlines())
                    if len(f) > 2 and f[1] in (".text", ".ltext")), default=0)  # fmt: skip
        if offset is not None:  # the code section's start: the entry less its offset
            spans.append((entry - offset, entry - offset + size, name, obj))
    spans.sort()
    starts = [s[0] for s in spans]
    try:
        samples = collections.Counter(int(word, 16) for word in ips_file.read_text().split())
    except ValueError:
        wrong = f"{ips_file}: not what perf script -F ip writes (an address a line)"
        raise ValueError(wrong) from None
    total = sum(samples.values())
    per_kernel: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for ip, n in samples.items():
        k = bisect.bisect_right(starts, ip) - 1
        if k >= 0 and ip < spans[k][1]:
            per_kernel[spans[k][2]][ip - spans[k][0]] += n
    in_kernels = sum(sum(c.values()) for c in per_kernel.values())
    print(f"{total:,} samples, {in_kernels:,} of them in kernels ({100 * in_kernels / total:.1f}%)")
    ranked = sorted(per_kernel, key=lambda k: -sum(per_kernel[k].values()))
    for name in ranked[:top]:
        print(f"  {100 * sum(per_kernel[name].values()) / in_kernels:5.1f}%  {name}")
    for name in ranked[:2]:
        obj = next(s[3] for s in spans if s[2] == name)
        offsets = sorted(per_kernel[name])
        lines = _tool("addr2line", "-e", str(obj), *(hex(o) for o in offsets)).splitlines()
        by_line: collections.Counter[str] = collections.Counter()
        for offset, where in zip(offsets, lines, strict=True):
            by_line[where] += per_kernel[name][offset]
        n = sum(by_line.values())
        print(f"\n{name}: the {top} lines with most of its {n:,} samples")
        for where, count in by_line.most_common(top):
            print(f"  {100 * count / n:5.1f}%  {where}  {_source(where)}")


def _source(where: str) -> str:
    """The text of source line ``FILE:LINE`` (addr2line's answer), if it can be read."""
    path, _, line = where.rpartition(":")
    try:
        return Path(path).read_text().splitlines()[int(line.split()[0]) - 1].strip()
    except (OSError, ValueError, IndexError):
        return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    run_ap = sub.add_parser("run", help="run the scenario (under perf record)")
    run_ap.add_argument("--out", type=Path, required=True)
    run_ap.add_argument("--accesses", type=int, default=3_000_000)
    run_ap.add_argument("--repeat", type=int, default=3)
    run_ap.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE")  # fmt: skip
    report_ap = sub.add_parser("report", help="samples per kernel and per line")
    report_ap.add_argument("--out", type=Path, required=True)
    report_ap.add_argument("--ips", type=Path, required=True, help="perf script -F ip output")
    report_ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    if args.step == "run":
        run(args.out, args.accesses, args.repeat, args.settings)
    else:
        try:
            report(args.out, args.ips, args.top)
        except (OSError, ValueError, KeyError, subprocess.CalledProcessError) as err:
            fail(str(err))


def fail(message: str) -> NoReturn:
    """End with ``message`` and exit status 2 (bad input), without a traceback."""
    print(f"profile_kernels.py: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
