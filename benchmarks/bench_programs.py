"""The full path on a real program's memory trace: natively, and under a hypervisor.

The other benchmarks draw synthetic page-reference strings (a Zipf workload draws a
page for every access), where most accesses miss the TLB and walk the page table.
A real program is different: consecutive accesses mostly fall in the same few pages,
so nearly all of them hit the TLB. This benchmark measures memvirt on such a trace:
``xz -6`` compressing 2.6 MB of seeded random words, recorded with valgrind's lackey
tool (``memvirt trace record``; instruction fetches, loads and stores), 60 million
accesses by default. Recording needs ``valgrind`` and ``xz`` and takes a minute or
two; the trace is kept in ``benchmarks/.cache`` for the next runs.

Two machines replay it, sized from the trace's footprint (F, its distinct pages):

- ``native``: one process on a host with 3/4 F of memory, LRU replacement, the
  default two-level TLB (64 + 1536 entries) and 4-level page tables, swapping to
  an SSD: the native full path.
- ``nested``: four VMs, each replaying the trace in a process of its own, each VM
  with F + 2 MiB of real memory, on a host overcommitted 1.5x, with nested paging,
  hypervisor swapping, ballooning and content-based sharing active, and the
  control-plane periods of ``bench_overcommit.py`` (a control step every 10 ms
  of simulated time, a sharing scan of each VM every simulated second).

The rate is accesses per second of wall time for ``machine.run`` alone, the median of
``--repeat`` runs after a short warm-up run of each machine. Reading the binary trace
is part of it (chunk by chunk, as every run does).

    python benchmarks/bench_programs.py [--accesses N] [--repeat R] [--json OUT]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from memvirt.config import scenario_from_dict
from memvirt.engine.native import NativeMachine
from memvirt.engine.scenario import build
from memvirt.engine.virtual import VirtualizedMachine
from memvirt.files import atomic_json
from memvirt.traces.readers import open_trace

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"

PAGE = 4096
MIB = 1 << 20
VMS = 4


def words_file(path: Path, words: int = 400_000, seed: int = 1) -> None:
    """A text of ``words`` words drawn (seeded) from 5,000 random ones: xz's input."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = [
        "".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(5000)
    ]
    path.write_text(" ".join(rng.choice(vocabulary) for _ in range(words)))


def recorded_trace(accesses: int) -> Path:
    """The xz trace of ``accesses`` accesses, recorded now unless it is in the cache."""
    trace = CACHE / f"xz-lackey-n{accesses}.mvt"
    if trace.is_file():
        return trace
    missing = [tool for tool in ("valgrind", "xz") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"bench_programs: recording the trace needs {' and '.join(missing)}")
    CACHE.mkdir(exist_ok=True)
    text = CACHE / "xz-input-words.txt"
    words_file(text)
    memvirt = Path(sys.executable).with_name("memvirt")
    command = [str(memvirt), "trace", "record", "--max-accesses", str(accesses)]
    command += ["-o", str(trace), "--", "xz", "-6", "-c", str(text)]
    print(f"recording {accesses:,} accesses of xz under valgrind (a minute or two)...")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return trace


def footprint_pages(trace: Path) -> int:
    """The number of distinct 4 KiB pages the trace touches."""
    seen: set[int] = set()
    with open_trace(trace) as stream:
        for chunk in stream:
            seen.update(np.unique(chunk.addresses >> 12).tolist())
    return len(seen)


def whole_mib(n_bytes: float) -> str:
    """A size rounded up to whole MiB, as the scenario files write it."""
    return f"{max(1, -(-int(n_bytes) // MIB))}MiB"


def native_scenario(trace: Path, footprint: int) -> dict[str, Any]:
    """One process replaying ``trace`` on a host with 3/4 of its footprint."""
    return {
        "host": {
            "memory": whole_mib(0.75 * footprint * PAGE),
            "policy": "lru",
            "swap": {"size": whole_mib(2 * footprint * PAGE), "device": "ssd"},
        },
        "processes": [{"name": "xz", "trace": {"path": str(trace)}}],
        "run": {"seconds": 1e6, "seed": 1},
    }


def nested_scenario(trace: Path, footprint: int) -> dict[str, Any]:
    """Four VMs replaying ``trace``, overcommitted 1.5x, with reclamation active."""
    vm_bytes = footprint * PAGE + 2 * MIB
    return {
        "host": {"memory": whole_mib(VMS * vm_bytes / 1.5)},
        "hypervisor": {
            "paging": "nested",
            "host_swap": {"size": whole_mib(VMS * vm_bytes), "device": "ssd"},
            "swap_victim": "random",
            "control_period": 0.01,
            "allocation": {"period": 0.1, "sample_period": 0.2},
            "balloon": {"enabled": True, "inflate_rate": "4GiB", "deflate_rate": "4GiB"},
            "sharing": {"enabled": True, "scan_period": 1.0},
            "compression": {"enabled": False},
        },
        "vms": [
            {
                "name": f"vm{i}",
                "memory": whole_mib(vm_bytes),
                "guest": {"policy": "lru", "swap": whole_mib(2 * vm_bytes)},
                "processes": [{"name": "xz", "trace": {"path": str(trace)}}],
            }
            for i in range(VMS)
        ],
        "run": {"seconds": 1e6, "seed": 1},
    }


def run_once(
    data: dict[str, Any], accesses: int | None
) -> tuple[NativeMachine | VirtualizedMachine, float]:
    """Build and run ``data`` (to the end of its traces, or ``accesses``); the machine
    and the seconds ``machine.run`` took."""
    machine = build(scenario_from_dict(data, "<bench_programs>"))
    assert isinstance(machine, NativeMachine | VirtualizedMachine)
    start = time.perf_counter()
    machine.run(accesses=accesses)
    return machine, time.perf_counter() - start


def figures(machine: NativeMachine | VirtualizedMachine) -> dict[str, Any]:
    """What the run did: TLB misses, faults, swapping and reclamation."""
    out: dict[str, Any] = {"accesses": machine.total_accesses}
    if isinstance(machine, NativeMachine):
        c = machine.kernel.counters()
        out.update(
            tlb_miss_ratio=c["tlb_misses"] / c["accesses"],
            faults=c["faults"],
            major_faults=c["major_faults"],
            swap_outs=c["writebacks"],
        )
        return out
    host = machine.host.counters()
    guests = [vm.guest.counters() for vm in machine.vms]
    summary = machine.reclaimer.host_summary(machine.loop.now)
    out.update(
        tlb_miss_ratio=sum(g["tlb_misses"] for g in guests) / sum(g["accesses"] for g in guests),
        guest_faults=sum(g["faults"] for g in guests),
        host_faults=host["faults"],
        host_swap_outs=host["writebacks"],
        reclaimed_pages=summary["reclaimed_pages"],
        time_in_state=summary["time_in_state"],
    )
    return out


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--trace-accesses", type=int, default=60_000_000, help="to record")
    ap.add_argument("--accesses", type=int, help="run only this many (default: the whole trace)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--parts", default="native,nested", help="native, nested or both")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write the figures here")
    args = ap.parse_args(argv)
    trace = recorded_trace(args.trace_accesses)
    footprint = footprint_pages(trace)
    print(f"trace {trace.name}: footprint {footprint:,} pages ({footprint * PAGE / MIB:.1f} MiB)")
    report: dict[str, Any] = {"trace": trace.name, "footprint_pages": footprint}
    builders = {"native": native_scenario, "nested": nested_scenario}
    for part in args.parts.split(","):
        data = builders[part](trace, footprint)
        run_once(data, 20_000)  # load the compiled data plane
        rates = []
        for _ in range(args.repeat):
            machine, seconds = run_once(data, args.accesses)
            rates.append(machine.total_accesses / seconds)
        result = {
            "host_memory": data["host"]["memory"],
            "accesses_per_second": statistics.median(rates),
            "runs": rates,
            **figures(machine),
        }
        report[part] = result
        print(
            f"{part}: {result['accesses_per_second'] / 1e6:.1f} M accesses/s "
            f"(runs {' '.join(f'{r / 1e6:.1f}' for r in rates)}), "
            f"{result['accesses']:,} accesses, TLB miss ratio {result['tlb_miss_ratio']:.5f}"
        )
        extra = {k: v for k, v in result.items() if k not in ("runs", "accesses_per_second")}
        print("   ", extra)
    if args.json is not None:
        atomic_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
