"""The soak run: hours of simulated time under the check, with memory use watched.

    python scripts/soak.py [SCENARIO] [--set KEY=VALUE ...] [--samples N] [--json OUT]

Runs ``examples/soak.toml`` (by default: three VMs overcommitted 1.5x for three hours of
simulated time, every reclamation technique at work, host swap writes failing at random)
with ``run.check`` on, so that every quantum is checked for contents and accounting. While
it runs it samples the process's resident memory (``/proc/self/statm``) at ``--samples``
points of simulated time and prints them with the faults taken so far. The run passes
when the check finds nothing and memory stays flat: the resident size at the end is
within ``--tolerance-mib`` of its size a quarter of the way in (once the machine's pages
have all been touched and the compiled code loaded). Exit status 1 otherwise.

The time series (one row per VM per control step) is the one thing that grows with
simulated time by design; its size is printed apart.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from memvirt.config import ScenarioError, load_scenario
from memvirt.engine.scenario import build
from memvirt.engine.virtual import VirtualizedMachine
from memvirt.files import atomic_json

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    """This process's resident memory now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def faults_so_far(machine: Any) -> int:
    """Page faults taken so far: the guests' and the host's (or the native kernel's)."""
    if isinstance(machine, VirtualizedMachine):
        guest = sum(vm.guest.counters()["faults"] for vm in machine.vms)
        return guest + machine.host.counters()["faults"]
    return int(machine.kernel.counters()["faults"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", default=str(ROOT / "examples" / "soak.toml"))
    parser.add_argument("--set", dest="settings", action="append", default=[])
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--tolerance-mib", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    try:
        scenario = load_scenario(args.scenario, ["run.check=true", *args.settings])
    except ScenarioError as err:
        print(f"soak.py: error: {err}", file=sys.stderr)
        return 2
    seconds = scenario.run.seconds
    if seconds is None:
        parser.error("the soak scenario must give run.seconds")
    machine = build(scenario)
    marks = [seconds * (k + 1) / args.samples for k in range(args.samples)]
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()

    def sample(simulated_s: float, accesses: int) -> None:
        rows.append(
            {
                "simulated_s": simulated_s,
                "wall_s": time.perf_counter() - start,
                "accesses": accesses,
                "faults": faults_so_far(machine),
                "rss_mib": rss_mib(),
            }
        )
        r = rows[-1]
        print(
            f"{r['simulated_s']:>9.0f} s  {r['wall_s']:>7.1f} s wall  "
            f"{r['accesses']:>12,} accesses  {r['faults']:>10,} faults  "
            f"{r['rss_mib']:>7.1f} MiB",
            flush=True,
        )

    def progress(now_ns: float, accesses: int) -> None:
        while marks and now_ns / 1e9 >= marks[0]:
            sample(marks.pop(0), accesses)

    print(f"soak: {args.scenario}, {seconds:g} simulated seconds, check on")
    reached = machine.run(seconds=seconds, accesses=scenario.run.accesses, progress=progress)
    if marks:  # the last mark is the end of the run, which no turn passes
        sample(marks[-1], machine.total_accesses)
    wall = time.perf_counter() - start
    summary = machine.summary(reached)
    series_rows = len(machine.reclaimer.rows) if isinstance(machine, VirtualizedMachine) else 0
    quarter = next((r for r in rows if r["simulated_s"] >= seconds / 4), rows[0])
    growth = rows[-1]["rss_mib"] - quarter["rss_mib"]
    flat = growth <= args.tolerance_mib
    result = {
        "scenario": str(args.scenario),
        "simulated_seconds": reached,
        "wall_seconds": wall,
        "accesses": machine.total_accesses,
        "faults": faults_so_far(machine),
        "rss_growth_mib_after_first_quarter": growth,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "timeseries_rows": series_rows,
        "samples": rows,
        "stopped_vms": [v["name"] for v in summary.get("vms", []) if v["stopped"]],
        "faults_injected": summary.get("faults"),
        "flat": flat,
    }
    print(
        f"done: {reached:g} simulated s in {wall:.0f} s, {result['faults']:,} faults, "
        f"check passed; resident memory {quarter['rss_mib']:.1f} MiB at a quarter, "
        f"{rows[-1]['rss_mib']:.1f} MiB at the end ({growth:+.1f} MiB); "
        f"{series_rows:,} time-series rows"
    )
    if args.json is not None:
        atomic_json(args.json, result)
    if not flat:
        print(f"memory grew by {growth:.1f} MiB (tolerance {args.tolerance_mib} MiB)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
