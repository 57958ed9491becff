"""Two VMs with nested paging on a host overcommitted 1.5x: whole-simulator speed.

Runs ``examples/two-level-nested.toml`` (two 192 MiB VMs on a 256 MiB host,
a Zipf workload in each, hypervisor swapping at random) for ``--accesses``
accesses, ``--repeat`` times after one warm-up, and prints accesses per
second of wall time (median) with the time in each part, plus the state
the simulation holds per simulated page. With ``--parts`` the runs take one
thread, so that the parts add up: one VM's guest no longer runs beside
another VM's host pass, and the rate is lower.

It also prints the accesses a turn took on average (a guest's quantum, then its
host pass: ``--set run.quantum_accesses=N`` sets how many) and, for each VM of
the last run, its accesses, guest faults and host swap-ins, so that settings
can be compared by what they simulate as well as by their speed. With
``--compare-threads`` each run is followed by the same run in one thread, so that
what the second core buys is measured side by side in one process (on a shared
machine, separate processes alternated vary far more).

    python benchmarks/bench_vms.py [--accesses N] [--repeat R] [--paging nested|shadow]
                                   [--parts | --compare-threads] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memvirt.config import ScenarioError, load_scenario
from memvirt.dataplane import native
from memvirt.engine import precompile
from memvirt.engine.scenario import build
from memvirt.engine.virtual import VM, VirtualizedMachine, Walked
from memvirt.workloads.ahead import one_thread

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "two-level-nested.toml"
sys.path.insert(0, str(HERE))
from bench_scale import state_bytes  # noqa: E402  (a sibling script, not a package)

RUN_BATCH = native.run_batch
PARTS = ("guest run_batch", "host run_batch", "content sync", "settling", "host pass, the rest",
         "the rest")  # fmt: skip


def timed_parts(machine: VirtualizedMachine) -> dict[str, float]:
    """Wrap the machine's data-plane calls and host-pass steps in timers; the dict they
    add their seconds to."""
    spent = dict.fromkeys(("guest", "host", "sync", "settle", "pass"), 0.0)
    host_cfg = machine.host.cfg
    run_batch = RUN_BATCH

    def batch(m: Any, *args: Any) -> Any:
        t = time.perf_counter()
        out = run_batch(m, *args)
        spent["host" if m.cfg is host_cfg else "guest"] += time.perf_counter() - t
        return out

    native.run_batch = batch  # type: ignore[assignment]  # (the kernel calls it through the module)

    def timer(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            t = time.perf_counter()
            out = fn(*args)
            spent[name] += time.perf_counter() - t
            return out

        return call

    machine.sync_contents = timer("sync", machine.sync_contents)  # type: ignore[method-assign]
    machine._settle_pass = timer("settle", machine._settle_pass)  # type: ignore[method-assign]
    machine._host_pass = timer("pass", machine._host_pass)  # type: ignore[method-assign]
    return spent


def count_turns(machine: VirtualizedMachine) -> list[int]:
    """Count the machine's host passes (one a turn: a guest's quantum, then its pass) in
    the one-element list returned."""
    turns = [0]
    host_pass = machine._host_pass

    def counted(vm: VM, walked: Walked | None = None) -> int:
        turns[0] += 1
        return host_pass(vm, walked)

    machine._host_pass = counted  # type: ignore[method-assign]
    return turns


def split(spent: dict[str, float], seconds: float) -> list[float]:
    """Seconds in each of PARTS (the host pass's own time less what it contains)."""
    # the host pass's time contains the host's run_batch, the content sync and the settling
    rest_of_pass = spent["pass"] - spent["host"] - spent["sync"] - spent["settle"]
    guest = spent["guest"]
    return [guest, spent["host"], spent["sync"], spent["settle"], rest_of_pass,
            seconds - guest - spent["pass"]]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accesses", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--paging", default="nested", choices=("nested", "shadow"))
    ap.add_argument(
        "--parts",
        action="store_true",
        help="time each part of the runs (in one thread: see VirtualizedMachine.threads)",
    )
    ap.add_argument(
        "--compare-threads",
        action="store_true",
        help="after each run, run again in one thread (no second core: see "
        "memvirt.workloads.ahead.one_thread), and print both medians and their ratio",
    )
    ap.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the scenario, as memvirt run --set does "
        "(run.quantum_accesses=40000)",
    )
    args = ap.parse_args()
    if args.parts and args.compare_threads:
        ap.error("--parts runs in one thread: it cannot be given with --compare-threads")
    settings = [
        f"run.accesses={args.accesses}",
        "run.seconds=1000",
        f"hypervisor.paging={args.paging}",
        *args.settings,
    ]
    try:
        scenario = load_scenario(EXAMPLE, settings)
    except ScenarioError as err:
        ap.error(str(err))  # (exit status 2)
    # load the compiled data plane: run_batch by a run, every other kernel the timed runs
    # may call by precompile.compile_all (a warm-up run of 1M accesses left four of the
    # control plane's, which host swapping calls later, to the first timed run)
    warm = build(scenario)
    warm.run(accesses=1_000_000)
    assert isinstance(warm, VirtualizedMachine)
    precompile.compile_all(warm)
    rates = []
    one_rates: list[float] = []
    turns: list[int] = []
    parts: list[list[float]] = []
    for _ in range(args.repeat):
        machine = build(scenario)
        assert isinstance(machine, VirtualizedMachine)
        spent = timed_parts(machine) if args.parts else {}
        passes = count_turns(machine)
        if args.parts:  # the parts add up to the run's time only when they take turns
            machine.threads = False
        start = time.perf_counter()
        simulated = machine.run(accesses=args.accesses)
        seconds = time.perf_counter() - start
        rates.append(machine.total_accesses / seconds)
        turns.append(machine.total_accesses // max(1, passes[0]))
        if args.compare_threads:  # the same run in one thread, right after: side by side
            with one_thread():
                alone = build(scenario)
                start = time.perf_counter()
                alone.run(accesses=args.accesses)
                one_rates.append(alone.total_accesses / (time.perf_counter() - start))
        if args.parts:
            parts.append([1e9 * p / machine.total_accesses for p in split(spent, seconds)])
    native.run_batch = RUN_BATCH
    assert isinstance(machine, VirtualizedMachine)
    host = machine.host.counters()
    print(f"{args.paging} paging, {args.accesses:,} accesses, 2 VMs, overcommit 1.5x")
    print(f"accesses/s (median of {args.repeat}): {statistics.median(rates) / 1e6:.2f} M"
          f"  runs: {' '.join(f'{r / 1e6:.2f}' for r in rates)}")  # fmt: skip
    if one_rates:
        pairs = statistics.median(a / b for a, b in zip(rates, one_rates, strict=True))
        print(f"in one thread (median of {args.repeat}): "
              f"{statistics.median(one_rates) / 1e6:.2f} M  runs: "
              f"{' '.join(f'{r / 1e6:.2f}' for r in one_rates)}; pairs (default / one "
              f"thread) {pairs:.3f}")  # fmt: skip
    print(f"host faults {host['faults']:,}, host swap-outs {host['writebacks']:,}; "
          f"{statistics.median(turns):,} accesses a turn on average")  # fmt: skip
    for vm in machine.summary(simulated)["vms"]:  # the last run's, to compare settings by
        print(
            f"  VM {vm['name']}: {vm['accesses']:,} accesses, {vm['guest_faults']:,} guest "
            f"faults, {vm['host_swap_ins']:,} host swap-ins "
            f"({1000 * vm['host_swap_ins'] / max(1, vm['accesses']):.2f} per 1,000 accesses)"
        )
    for k, name in enumerate(PARTS if parts else ()):
        ns = statistics.median(p[k] for p in parts)
        print(f"  {name:22s} {ns:6.1f} ns per access")
    total, swap, pages = state_bytes(machine)
    print(f"state: {total / pages:.1f} bytes per simulated page, {swap / pages:.1f} of them "
          f"the swap devices' slots ({pages:,} pages: host frames + VM real pages)")  # fmt: skip


if __name__ == "__main__":
    main()
