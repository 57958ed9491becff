"""``memvirt run``'s tables, ``memvirt compare`` and ``memvirt demo``.

A VM's throughput under overcommitment is judged against the same VM alone with
all its memory; runs are compared side by side, from scenario files or from the
directories ``--out`` wrote; the demo runs ballooning against hypervisor swapping
and says which was faster from the numbers.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from memvirt.cli import RunProgress, app, demo_conclusion
from memvirt.config import load_scenario
from memvirt.engine.baseline import alone_host_memory, alone_scenario, alone_throughputs
from memvirt.units import MiB

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BALLOONING = EXAMPLES / "overcommit-ballooning.toml"
NESTED = EXAMPLES / "two-level-nested.toml"
SHADOW = EXAMPLES / "two-level-shadow.toml"
#: the report package (figures, report.html) is exercised only where it imports

runner = CliRunner()


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def ballooning_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], Path]:
    """The ballooning example run with its tables and --out: (printed, summary, out dir)."""
    out = tmp_path_factory.mktemp("ballooning")
    # wide enough that no column header wraps
    result = runner.invoke(app, ["run", str(BALLOONING), "--out", str(out)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    return result.stdout, json.loads((out / "summary.json").read_text()), out


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """``memvirt demo`` into a fresh directory: (printed, out dir)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    return invoke("demo", "--out", str(out)).stdout, out


# ------------------------------------------------------------------------- memvirt run


def test_the_run_tables_show_the_host_and_each_vm_against_itself_alone(
    ballooning_run: tuple[str, dict[str, Any], Path],
) -> None:
    printed, summary, _ = ballooning_run
    for text in ("host", "physical memory", "256 MiB", "minFree", "state at the end",
                 "time in soft", "reclaimed by ballooning", "overcommitment", "1.50x",
                 "VM memory", "balloon", "host-swapped", "VM faults", "double paging",
                 "VM throughput", "throughput alone", "of alone"):  # fmt: skip
        assert text in printed, text
    for vm in summary["vms"]:
        assert vm["name"] in printed
        assert f"{vm['throughput_alone']:,.0f}" in printed
    assert f"{summary['host']['reclaimed_pages']['ballooning']:,} pages" in printed


def test_each_vm_alone_with_all_its_memory_is_not_slower(
    ballooning_run: tuple[str, dict[str, Any], Path],
) -> None:
    _, summary, _ = ballooning_run
    alone = alone_throughputs(load_scenario(BALLOONING))
    assert sorted(alone) == ["vm1", "vm2", "vm3"]
    for vm in summary["vms"]:
        assert alone[vm["name"]] >= vm["throughput"] > 0
        # the CLI's column is the same measurement, and deterministic
        assert vm["throughput_alone"] == alone[vm["name"]]
    # overcommitted 1.5x, the VMs lose a large part of their speed
    assert sum(vm["throughput"] for vm in summary["vms"]) < 0.75 * sum(alone.values())


def test_a_vm_alone_gets_a_host_with_room_for_all_its_memory() -> None:
    scenario = load_scenario(BALLOONING)
    vm = scenario.vms[1]
    memory = alone_host_memory(scenario, vm)
    assert memory >= vm.memory * 1.25 and memory % MiB == 0
    alone = alone_scenario(scenario, vm.name)
    assert [v.name for v in alone.vms] == [vm.name]
    assert alone.host.memory == memory and alone.overcommit_ratio < 1
    assert alone.run == scenario.run and alone.hypervisor == scenario.hypervisor


def test_run_out_writes_the_summary_time_series_and_report(
    ballooning_run: tuple[str, dict[str, Any], Path],
) -> None:
    printed, summary, out = ballooning_run
    assert (out / "timeseries.parquet").exists()
    assert all("throughput_alone" in vm for vm in summary["vms"])
    assert "summary written to" in printed and "also written: timeseries.parquet" in printed
    assert (out / "report.html").exists()
    assert list(out.glob("*.svg"))


def test_quiet_prints_nothing() -> None:
    result = invoke("run", str(NESTED), "--set", "run.accesses=20000", "--quiet")
    assert result.stdout == ""


def test_json_is_unchanged_unless_alone_is_asked_for() -> None:
    args = ("run", str(NESTED), "--set", "run.accesses=20000", "--json")
    plain = json.loads(invoke(*args).stdout)
    assert plain["schema_version"] == 1
    assert all("throughput_alone" not in vm for vm in plain["vms"])
    with_alone = json.loads(invoke(*args, "--alone").stdout)
    for vm, other in zip(with_alone["vms"], plain["vms"], strict=True):
        assert vm.pop("throughput_alone") >= vm["throughput"]
        assert vm == other


def test_no_alone_leaves_the_column_out() -> None:
    printed = invoke("run", str(NESTED), "--set", "run.accesses=20000", "--no-alone").stdout
    assert "VM throughput" in printed and "throughput alone" not in printed


def test_no_progress_bar_in_captured_output(
    ballooning_run: tuple[str, dict[str, Any], Path],
) -> None:
    printed, _, _ = ballooning_run
    assert "\r" not in printed and "\x1b" not in printed
    assert "/ 4 simulated s" not in printed


def test_the_progress_bar_follows_simulated_time_or_accesses() -> None:
    file = io.StringIO()
    console = Console(file=file, force_terminal=True, width=100)
    with RunProgress("run", 4.0, None, enabled=True, console=console, delay=0.0) as bar:
        bar(1.0e9, 5000)
    assert "1.00 / 4 simulated s" in file.getvalue()
    # with both ends given, the nearer one counts
    both = RunProgress("run", 4.0, 10_000, enabled=True)
    assert both.fraction(1.0e9, 5_000) == (0.5, "5,000 / 10,000 accesses")
    assert both.fraction(9.0e9, 0)[0] == 1.0
    silent = RunProgress("run", 4.0, None, enabled=False, console=console, delay=0.0)
    silent(2.0e9, 1)
    assert "2.00 / 4" not in file.getvalue()


# ----------------------------------------------------------------------- memvirt compare


def test_compare_two_output_directories(demo: tuple[str, Path]) -> None:
    _, out = demo
    printed = invoke("compare", str(out / "with-balloons"), str(out / "swapping-only")).stdout
    for text in ("with-balloons", "swapping-only", "combined throughput", "major faults",
                 "host faults", "reclaimed: ballooning", "reclaimed: swapping",
                 "time in soft", "vm vm1 throughput"):  # fmt: skip
        assert text in printed, text
    s1 = json.loads((out / "with-balloons" / "summary.json").read_text())
    assert f"{sum(vm['throughput'] for vm in s1['vms']):,.0f}" in printed


def test_compare_picks_rows_by_metric(demo: tuple[str, Path]) -> None:
    _, out = demo
    runs = [str(out / "with-balloons"), str(out / "swapping-only")]
    result = invoke("compare", *runs, "--metric", "host.time_in_state.soft",
                    "--metric", "vms.vm2.throughput", "--metric", "major_faults",
                    "--json")  # fmt: skip
    table = json.loads(result.stdout)
    assert table["columns"] == runs
    assert [row["metric"] for row in table["rows"]] == [
        "host.time_in_state.soft", "vms.vm2.throughput", "major_faults",
    ]  # fmt: skip
    summaries = [json.loads((Path(r) / "summary.json").read_text()) for r in runs]
    soft, vm2, major = (row["values"] for row in table["rows"])
    assert soft == [s["host"]["time_in_state"]["soft"] for s in summaries]
    assert vm2 == [s["vms"][1]["throughput"] for s in summaries]
    assert major == [sum(v["guest_swap_ins"] + v["host_swap_ins"] for v in s["vms"])
                     for s in summaries]  # fmt: skip


def test_compare_runs_scenario_files_with_the_overrides() -> None:
    result = invoke("compare", str(NESTED), str(SHADOW), "--set", "run.accesses=20000",
                    "--metric", "mode", "--metric", "vms.web.accesses", "--json")  # fmt: skip
    mode, accesses = (row["values"] for row in json.loads(result.stdout)["rows"])
    assert mode == ["nested", "shadow"]
    assert all(0 < a <= 20_000 for a in accesses)
    printed = invoke("compare", str(NESTED), str(SHADOW), "--set", "run.accesses=20000").stdout
    assert "two-level-nested.toml" in printed and "vm web throughput" in printed


def test_an_unknown_metric_is_an_error_listing_the_known_ones(demo: tuple[str, Path]) -> None:
    _, out = demo
    result = runner.invoke(
        app, ["compare", str(out / "with-balloons"), "--metric", "host.time_in_state.sof"]
    )
    assert result.exit_code == 2
    assert "--metric host.time_in_state.sof" in result.stderr
    assert "did you mean host.time_in_state.soft" in result.stderr
    assert "vms.vm1.throughput" in result.stderr and "Traceback" not in result.output


def test_a_missing_run_or_a_directory_without_a_summary_is_an_error(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["compare", str(tmp_path / "nowhere"), str(NESTED)])
    assert missing.exit_code == 2 and "no such file or directory" in missing.stderr
    empty = runner.invoke(app, ["compare", str(tmp_path)])
    assert empty.exit_code == 2 and "no summary.json" in empty.stderr
    (tmp_path / "summary.json").write_text("{not json")
    bad = runner.invoke(app, ["compare", str(tmp_path)])
    assert bad.exit_code == 2 and "not valid JSON" in bad.stderr


# -------------------------------------------------------------------------- memvirt demo


def test_the_demo_writes_both_runs_and_compares_them(demo: tuple[str, Path]) -> None:
    printed, out = demo
    for run in ("with-balloons", "swapping-only"):
        assert (out / run / "summary.json").exists()
        assert (out / run / "timeseries.parquet").exists()
    assert (out / "report.html").exists()
    assert list((out / "with-balloons").glob("*.svg"))
    assert "with balloons" in printed and "swapping only" in printed
    s1, s2 = (json.loads((out / r / "summary.json").read_text())
              for r in ("with-balloons", "swapping-only"))  # fmt: skip
    t1 = sum(vm["throughput"] for vm in s1["vms"])
    t2 = sum(vm["throughput"] for vm in s2["vms"])
    # the demo's point: balloons give more work and fewer major faults
    assert t1 > t2
    assert "ballooning was" in printed and f"{t1 / t2 - 1:.0%} faster" in printed
    assert s2["host"]["reclaimed_pages"]["ballooning"] == 0


def test_the_conclusion_follows_the_numbers() -> None:
    def summary(throughputs: list[float], swap_ins: int) -> dict[str, Any]:
        vms = [
            {"name": f"vm{k}", "throughput": t, "guest_swap_ins": 0, "host_swap_ins": swap_ins}
            for k, t in enumerate(throughputs)
        ]
        reclaimed = {"ballooning": 10, "sharing": 0, "compression": 0, "swapping": 20}
        return {"vms": vms, "host": {"reclaimed_pages": reclaimed}}

    text = demo_conclusion(summary([100.0, 100.0], 50), summary([150.0, 150.0], 10))
    assert "swapping alone was 50% faster" in text
    assert "50 major faults" not in text and "100 major faults" in text
    assert "more than the 20 of swapping only" in text
    assert "guests know" not in text  # the explanation is given only when it fits
