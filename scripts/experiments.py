"""Run the reclamation experiments of docs/experiments.md: print their numbers, draw their
figures into docs/figures/ (SVG).

    python scripts/experiments.py [--out docs/figures]

Each experiment is an example scenario (examples/); tests/test_reclamation.py asserts the
same outcomes. Runs are deterministic: the numbers printed are those in the document.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from memvirt.config import load_scenario, scenario_from_dict
from memvirt.engine.scenario import RunResult, run
from memvirt.files import atomic_output

matplotlib.rcParams["svg.hashsalt"] = "memvirt"  # stable ids: the same figure, the same bytes
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PAGE_MIB = 256  # 4 KiB pages per MiB


def example(name: str, *settings: str) -> RunResult:
    return run(load_scenario(EXAMPLES / name, list(settings)))


def save(fig: Any, out: Path, name: str) -> None:
    """Write the figure atomically as SVG."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_output(
        out / f"{name}.svg", lambda tmp: fig.savefig(tmp, format="svg", metadata={"Date": None})
    )
    plt.close(fig)


def totals(summary: dict[str, Any]) -> tuple[int, int]:
    throughput = sum(vm["throughput"] for vm in summary["vms"])
    major = sum(vm["guest_swap_ins"] + vm["host_swap_ins"] for vm in summary["vms"])
    return int(throughput), int(major)


def ballooning(out: Path) -> None:
    runs = {
        "with balloons": example("overcommit-ballooning.toml"),
        "swapping only": example("overcommit-ballooning.toml", "hypervisor.balloon.enabled=false"),
    }
    print("a. ballooning against hypervisor swapping")
    for label, result in runs.items():
        s = result.summary
        throughput, major = totals(s)
        states = {k: round(v, 2) for k, v in s["host"]["time_in_state"].items()}
        dp = sum(vm["double_paging_reads"] for vm in s["vms"])
        print(f"  {label}: throughput {throughput:,}, major faults {major:,}, "
              f"reclaimed {s['host']['reclaimed_pages']}, states {states}, "
              f"double paging {dp}")  # fmt: skip
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    for col, (label, result) in enumerate(runs.items()):
        ts = result.timeseries
        assert ts is not None
        host = ts.drop_duplicates("time_s")
        axes[0, col].plot(host["time_s"], host["host_free_pages"] / PAGE_MIB, color="black")
        axes[0, col].set_title(label)
        axes[0, col].set_ylabel("host free memory (MiB)")
        for vm, rows in ts.groupby("vm"):
            axes[1, col].plot(rows["time_s"], rows["allocated_pages"] / PAGE_MIB, label=f"{vm}")
            axes[1, col].plot(rows["time_s"], rows["balloon_pages"] / PAGE_MIB, linestyle=":",
                              label=f"{vm} balloon")  # fmt: skip
        axes[1, col].set_ylabel("MiB")
        axes[1, col].set_xlabel("simulated seconds")
    axes[1, 0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save(fig, out, "overcommit-ballooning")


def idle_tax(out: Path) -> None:
    runs = {
        "tau = 0": example("idle-memory-tax.toml", "hypervisor.allocation.idle_tax=0"),
        "tau = 0.75": example("idle-memory-tax.toml"),
    }
    print("b. the idle memory tax")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, (label, result) in zip(axes, runs.items(), strict=True):
        for vm in result.summary["vms"]:
            print(f"  {label}: {vm['name']} target {vm['target_pages']:,} throughput "
                  f"{int(vm['throughput']):,} balloon max {vm['balloon_pages_max']:,} "
                  f"active est {vm['active_fraction_estimated']:.2f} "
                  f"true {vm['active_fraction_true']:.2f}")  # fmt: skip
        ts = result.timeseries
        assert ts is not None
        for vm, rows in ts.groupby("vm"):
            ax.plot(rows["time_s"], rows["target_pages"] / PAGE_MIB, label=f"{vm} target")
            ax.plot(rows["time_s"], rows["allocated_pages"] / PAGE_MIB, linestyle=":",
                    label=f"{vm} allocated")  # fmt: skip
        ax.set_title(label)
        ax.set_xlabel("simulated seconds")
    axes[0].set_ylabel("MiB")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save(fig, out, "idle-memory-tax")


def sharing(out: Path) -> None:
    raw = tomllib.loads((EXAMPLES / "page-sharing.toml").read_text())
    os_pages = 32 * PAGE_MIB
    counts = [1, 2, 3, 4]
    saved = []
    print("c. page sharing across identical VMs")
    for n in counts:
        data = dict(raw, vms=raw["vms"][:n])
        s = run(scenario_from_dict(data, source=f"page-sharing-{n}")).summary
        saved.append(s["host"]["sharing_saved_pages"] / (n * os_pages))
        print(f"  {n} VMs: saved {s['host']['sharing_saved_pages']:,} frames, "
              f"{saved[-1]:.3f} of the OS memory")  # fmt: skip
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar([str(n) for n in counts], saved, color="tab:green")
    ax.axhline(0.6, color="gray", linestyle="--", label="image + zero pages (60%)")
    ax.set_xlabel("identical VMs")
    ax.set_ylabel("frames saved / OS memory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, out, "page-sharing")


def working_set(out: Path) -> None:
    raw = tomllib.loads((EXAMPLES / "idle-memory-tax.toml").read_text())
    busy = raw["vms"][1]
    phases = {
        "kind": "phases",
        "repeat": False,
        "phases": [
            {"accesses": 100_000, "workload": {"kind": "loop", "length": 256}},
            {"accesses": 300_000, "workload": {"kind": "uniform", "pages": 16384}},
            {"accesses": 1, "workload": {"kind": "loop", "length": 256}},
        ],
    }
    proc = dict(busy["processes"][0], workload=phases, start=0.0)
    data = dict(raw, vms=[dict(busy, processes=[proc])], host={"memory": "256MiB"})
    data["run"] = dict(raw["run"], seconds=3.0)
    result = run(scenario_from_dict(data, source="working-set"))
    ts = result.timeseries
    assert ts is not None
    print("d. working-set estimation: see the figure")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.step(ts["time_s"], ts["active_true"], where="post", label="true active fraction")
    ax.step(ts["time_s"], ts["active_estimated"], where="post", label="estimate (sampled)")
    ax.set_xlabel("simulated seconds")
    ax.set_ylabel("fraction of the VM's memory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, out, "working-set")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = ap.parse_args()
    ballooning(args.out)
    idle_tax(args.out)
    sharing(args.out)
    working_set(args.out)


if __name__ == "__main__":
    main()
