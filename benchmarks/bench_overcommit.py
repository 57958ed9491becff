"""Four VMs, nested paging, overcommitted 1.5x, with ballooning and sharing at work.

This is the whole simulator under the load the project is about: a host too small for
its VMs, so that every technique of the hypervisor's control plane takes part. Four
192 MiB VMs (768 MiB of real memory) share a 512 MiB host. Each VM runs one process
with a Zipf(0.9) workload over 160 MiB. As the guests fill their memory the host's
free memory falls through ESXi's states: sharing scans (clear), balloons inflate
(soft), and the host swaps at random (hard). Simulated periods are scaled down, as in
``examples/overcommit-ballooning.toml``, so that the control plane acts many times
within a run of a few million accesses: a control step every 10 ms of simulated time,
targets every 0.1 s, active-memory samples every 0.2 s, and a sharing scan of each
VM's memory every simulated second.

The rate is accesses per second of wall time for ``machine.run`` alone (guest and
host data planes, the Python engine and the control plane); building the machine is
timed apart. Two short warm-up runs load the compiled data plane first: the scenario
itself, and the scenario on a 64 MiB host, sharing from the first control step and
short of memory soon (in the first run the host is not short of memory yet, so the
kernels of sharing and ballooning would otherwise be loaded in the first timed run);
then ``precompile.compile_all`` loads the rest (double paging's kernel was still left).

    python benchmarks/bench_overcommit.py [--accesses N] [--repeat R] [--json OUT]

Where the time goes: profile it with py-spy, then split the samples of the timed runs
(not the warm-up) by part of the simulator, the control plane's parts first:

    py-spy record -r 250 -f raw -o prof.txt -- python benchmarks/bench_overcommit.py
    python benchmarks/bench_overcommit.py --split prof.txt
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from memvirt.config import scenario_from_dict
from memvirt.engine import precompile
from memvirt.engine.scenario import build
from memvirt.engine.virtual import VirtualizedMachine
from memvirt.files import atomic_json

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_scale import state_bytes  # noqa: E402  (a sibling script, not a package)

VMS = 4


def scenario(seed: int = 1, scan_period: float = 1.0) -> dict[str, Any]:
    """The benchmark's scenario, as the tables of a TOML file."""
    return {
        "host": {"memory": "512MiB"},
        "hypervisor": {
            "paging": "nested",
            "host_swap": {"size": "512MiB", "device": "ssd"},
            "swap_victim": "random",
            "control_period": 0.01,
            "allocation": {"period": 0.1, "sample_period": 0.2},
            "balloon": {"enabled": True, "inflate_rate": "4GiB", "deflate_rate": "4GiB"},
            "sharing": {"enabled": True, "scan_period": scan_period},
            "compression": {"enabled": False},
        },
        "vms": [
            {
                "name": f"vm{i}",
                "memory": "192MiB",
                "guest": {"policy": "lru", "swap": "256MiB"},
                "processes": [
                    {
                        "name": "app",
                        "memory": "160MiB",
                        "workload": {
                            "kind": "zipf",
                            "pages": 40960,
                            "alpha": 0.9,
                            "write_fraction": 0.3,
                        },
                    }
                ],
            }
            for i in range(VMS)
        ],
        "run": {"seconds": 1e6, "seed": seed},
    }


def run_once(
    accesses: int, scan_period: float = 1.0, data: dict[str, Any] | None = None
) -> tuple[VirtualizedMachine, float, float]:
    """Build and run the scenario (or ``data``); the machine, build seconds and run
    seconds."""
    if data is None:
        data = scenario(scan_period=scan_period)
    start = time.perf_counter()
    machine = build(scenario_from_dict(data, "<bench_overcommit>"))
    assert isinstance(machine, VirtualizedMachine)
    built = time.perf_counter()
    machine.run(accesses=accesses)
    return machine, built - start, time.perf_counter() - built


def timed_run(accesses: int, scan_period: float) -> tuple[VirtualizedMachine, float, float]:
    """One of the runs the figures are of (a name of its own for --split to find)."""
    return run_once(accesses, scan_period)


#: The control plane's parts, for --split: the reclamation step's and the hypervisor's
#: hooks around each host pass, by the Reclaimer method a sample is in (the first found).
CONTROL = (
    ("sharing scan", ("_scan",)),
    ("ballooning", ("_balloon",)),
    ("sampling", ("_sample",)),
    ("allocation", ("_allocate",)),
    ("swapping", ("_swap", "_enforce_limits")),
    ("recording", ("_record",)),
    ("the rest of the step", ("tick",)),
    ("breaking sharing before a host pass", ("before_host_pass",)),
    ("after a host pass", ("after_host_pass",)),
)

#: The parts of the control plane that measure, share and hand out memory, for a line of
#: their own in --split.
DECIDING = ("sampling", "sharing scan", "ballooning", "allocation")


def part_of(stack: str) -> str:
    """The part of the simulator a py-spy sample (its stack, ';'-joined) is in."""
    for name, methods in CONTROL:
        if any(f"Reclaimer.{method} " in stack for method in methods):
            return f"control: {name} ({', '.join('Reclaimer.' + m for m in methods)})"
    if "Reclaimer." in stack:
        return "control: other hooks"
    if "sync_contents " in stack:
        return "host pass: content sync (sync_contents)"
    if "_host_pass " in stack:
        inner = stack.split("_host_pass ", 1)[1]
        return "host data plane (Kernel.run)" if "Kernel.run " in inner else "host pass: rest"
    if "Kernel.run " in stack:
        return "guest data plane (Kernel.run)"
    if "next_chunk " in stack:
        return "drawing the workload"
    return "rest of the engine (Python)"


def split(profile: Path) -> dict[str, float]:
    """The share of each part in the samples of a py-spy raw profile (``-f raw``) of this
    script that fall in its timed runs (not the warm-up), largest first."""
    counts: Counter[str] = Counter()
    for line in profile.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "timed_run " in stack and "EventLoop.run " in stack:
            counts[part_of(stack)] += int(n)
    total = sum(counts.values())
    return {name: n / total for name, n in counts.most_common()}


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--accesses", type=int, default=4_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scan-period", type=float, default=1.0, help="sharing, simulated s")
    ap.add_argument("--no-warm-up", action="store_true", help="e.g. under a profiler")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write the figures here")
    ap.add_argument("--split", type=Path, metavar="PROFILE", help="split a py-spy raw profile")
    args = ap.parse_args(argv)
    if args.split is not None:
        if not args.split.is_file():
            ap.error(f"--split: no such file {args.split} (a py-spy profile, -f raw)")
        shares = split(args.split)
        if not shares:
            ap.error(f"--split: {args.split} has no samples of this script's timed runs")
        for name, share in shares.items():
            print(f"{share:6.1%}  {name}")
        control = sum(share for name, share in shares.items() if name.startswith("control"))
        print(f"{control:6.1%}  the control plane in all")
        # sampling, scans, balloon steps and allocation alone: without the copies that the
        # guests' writes to shared pages cause, the time series and the hypervisor's swapping
        deciding = sum(
            share
            for name, share in shares.items()
            if any(name.startswith(f"control: {part} (") for part in DECIDING)
        )
        print(f"{deciding:6.1%}  of it, {', '.join(DECIDING)}")
        return 0
    if not args.no_warm_up:  # load the compiled data plane
        warm, _, _ = run_once(20_000)
        short = scenario(scan_period=0.05)
        short["host"]["memory"] = "64MiB"
        short["hypervisor"]["states"] = {"techniques": {"high": ["sharing"]}}
        run_once(150_000, data=short)
        # and every other kernel a timed run may call (the runs above left doubled_pages
        # to the first timed run)
        precompile.compile_all(warm)
    runs = []
    for _ in range(args.repeat):
        machine, build_s, run_s = timed_run(args.accesses, args.scan_period)
        runs.append(
            {
                "build_seconds": build_s,
                "run_seconds": run_s,
                "accesses": machine.total_accesses,
                "accesses_per_second": machine.total_accesses / run_s,
            }
        )
    rates = [r["accesses_per_second"] for r in runs]
    total, swap, pages = state_bytes(machine)
    host = machine.host.counters()
    reclaimer = machine.reclaimer
    summary = reclaimer.host_summary(machine.loop.now)
    report = {
        "scenario": "4 VMs x 192 MiB on a 512 MiB host, nested paging, 1.5x",
        "accesses": args.accesses,
        "scan_period": args.scan_period,
        "repeat": args.repeat,
        "accesses_per_second": statistics.median(rates),
        "runs": runs,
        "build_seconds": statistics.median(r["build_seconds"] for r in runs),
        "state_bytes": total,
        "swap_state_bytes": swap,
        "simulated_pages": pages,
        "bytes_per_page": total / pages,
        "bytes_per_page_without_swap": (total - swap) / pages,
        "host_faults": host["faults"],
        "host_swap_outs": host["writebacks"],
        "control_steps": len(reclaimer.rows) // VMS,
        "simulated_seconds": machine.loop.now / 1e9,
        "time_in_state": summary["time_in_state"],
        "reclaimed_pages": summary["reclaimed_pages"],
        "sharing_saved_pages": summary["sharing_saved_pages"],
        "balloon_pages_at_end": sum(r.balloon_n for r in reclaimer.vms),
    }
    print(f"4 VMs nested, 1.5x, ballooning + sharing: {args.accesses:,} accesses")
    print(f"accesses/s (median of {args.repeat}): {report['accesses_per_second'] / 1e6:.2f} M"
          f"  runs: {' '.join(f'{r / 1e6:.2f}' for r in rates)}"
          f"  build {report['build_seconds']:.2f} s")  # fmt: skip
    steps = len(reclaimer.rows) // VMS
    print(f"reclaimed pages {summary['reclaimed_pages']}, "
          f"control steps {steps}, host faults {host['faults']:,}")  # fmt: skip
    print(f"state: {total / pages:.1f} bytes per simulated page ({pages:,} pages)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
