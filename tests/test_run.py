"""Running scenarios: memvirt run, summary.json, determinism, and the Python API."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memvirt.cli import app
from memvirt.config import load_scenario, scenario_from_dict
from memvirt.engine.scenario import run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
runner = CliRunner()

SMALL = {
    "host": {"memory": "4MiB", "swap": {"size": "16MiB"}},
    "processes": [
        {
            "name": "a",
            "memory": "6MiB",
            "workload": {"kind": "zipf", "pages": 1536, "alpha": 0.8, "write_fraction": 0.3},
        },
        {
            "name": "b",
            "memory": "2MiB",
            "workload": {"kind": "loop", "start": 0, "length": 256},
        },
    ],
    "run": {"accesses": 200_000, "seed": 7},
}


def test_a_process_larger_than_physical_memory_runs_with_demand_paging() -> None:
    result = run(load_scenario(EXAMPLES / "demand-paging.toml", ["run.accesses=300000"]))
    (app_,) = result.summary["processes"]
    assert result.summary["virtual_memory_ratio"] > 1
    assert app_["accesses"] == 300_000 and not app_["killed"]
    assert app_["major_faults"] > 0 and app_["writebacks"] > 0


def test_processes_that_together_exceed_physical_memory_run_together() -> None:
    scenario = load_scenario(EXAMPLES / "multiprogramming.toml", ["run.accesses=300000"])
    result = run(scenario)
    procs = result.summary["processes"]
    assert len(procs) == 3 and all(p["accesses"] > 0 and not p["killed"] for p in procs)
    assert result.summary["virtual_memory_ratio"] > 1


def test_the_same_scenario_and_seed_give_an_identical_summary(tmp_path: Path) -> None:
    texts = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        result = runner.invoke(
            app, ["run", str(EXAMPLES / "multiprogramming.toml"), "--out", str(out),
                  "--set", "run.accesses=200000"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        texts.append((out / "summary.json").read_bytes())
    assert texts[0] == texts[1]
    other = run(scenario_from_dict(SMALL, overrides=["run.seed=8"]))
    assert other.summary != run(scenario_from_dict(SMALL)).summary


def test_summary_json_has_the_documented_keys(tmp_path: Path) -> None:
    result = run(scenario_from_dict(SMALL))
    path = result.write(tmp_path)
    summary = json.loads(path.read_text())
    assert summary["schema_version"] == 1
    assert set(summary["host"]) >= {"physical_pages", "page_size", "free_pages"}
    assert summary["host"]["physical_pages"] == 1024
    for proc in summary["processes"]:
        for key in ("name", "accesses", "faults", "minor_faults", "major_faults",
                    "tlb_misses", "walk_memory_references", "throughput",
                    "simulated_seconds", "killed"):  # fmt: skip
            assert key in proc, key
    assert sum(p["accesses"] for p in summary["processes"]) >= 200_000


def test_set_overrides_change_the_machine() -> None:
    base = run(scenario_from_dict(SMALL))
    bigger = run(scenario_from_dict(SMALL, overrides=["host.memory=16MiB"]))
    assert bigger.summary["host"]["physical_pages"] == 4096
    faults = sum(p["major_faults"] for p in bigger.summary["processes"])
    assert faults < sum(p["major_faults"] for p in base.summary["processes"])


def test_the_python_api_gives_the_summary_and_a_dataframe() -> None:
    result = run(scenario_from_dict(SMALL))
    frame = result.processes_frame()
    assert list(frame.index) == ["a", "b"]
    assert frame.loc["a", "accesses"] == result.summary["processes"][0]["accesses"]
    assert (frame["throughput"] > 0).all()


def test_a_scenario_with_virtual_machines_runs_and_reports_each_vm(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", str(EXAMPLES / "two-level-nested.toml"), "--set", "run.accesses=40000",
         "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mode"] == "nested" and summary["overcommit_ratio"] == 1.5
    for vm in summary["vms"]:
        for key in ("name", "real_pages", "accesses", "tlb_misses", "walk_memory_references",
                    "guest_faults", "host_faults", "guest_swap_ins", "guest_swap_outs",
                    "host_swap_ins", "host_swap_outs", "throughput", "simulated_seconds",
                    "processes"):  # fmt: skip
            assert key in vm, key


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "host.memory=lots"], "host.memory"),
        (["--set", "nope.key=1"], "nope"),
    ],
)
def test_bad_settings_end_with_a_clear_message_and_status_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["run", str(EXAMPLES / "demand-paging.toml"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_a_missing_scenario_file_is_an_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path / "none.toml")])
    assert result.exit_code == 2
    assert "none.toml" in result.stderr


def test_the_run_example_in_the_scenario_docs_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    doc = ROOT / "docs" / "scenarios.md"
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
                if "engine.scenario" in b]  # fmt: skip
    monkeypatch.chdir(ROOT)
    block = block.replace('"out/mp"', repr(str(tmp_path / "mp")))
    names: dict[str, object] = {}
    exec(compile(block, str(doc), "exec"), names)
    assert (tmp_path / "mp" / "summary.json").exists()


def explain_json(*args: str) -> dict[str, object]:
    result = runner.invoke(
        app,
        ["explain", str(EXAMPLES / "multiprogramming.toml"), "--set", "run.accesses=50000",
         *args, "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out: dict[str, object] = json.loads(result.stdout)
    return out


def test_explain_shows_the_one_level_walk_of_a_touched_address() -> None:
    out = explain_json()
    for key in ("mode", "guest_levels", "host_levels", "memory_references", "steps",
                "virtual_address", "real_address", "physical_address"):  # fmt: skip
        assert key in out, key
    assert out["mode"] == "native" and out["memory_references"] == 4
    steps = out["steps"]
    assert isinstance(steps, list) and [s["level"] for s in steps] == [0, 1, 2, 3]
    # each entry points at the next level's table page
    for step, nxt in itertools.pairwise(steps):
        assert step["entry"] >> 12 == nxt["table_frame"]
    assert out["physical_address"] is not None
    va = out["virtual_address"]
    assert isinstance(va, int)
    assert out["physical_address"] % 4096 == va % 4096  # type: ignore[operator]


def test_explain_takes_a_process_and_an_address() -> None:
    out = explain_json("--process", "batch", "--address", "0x400000")
    assert out["process"] == "batch" and out["virtual_address"] == 0x400000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--process", "nobody"], "the processes are db, scan, batch"),
        (["--vm", "web"], "has no VMs"),
        (["--address", "0xZZ"], "--address"),
    ],
)
def test_explain_rejects_what_is_not_there(args: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["explain", str(EXAMPLES / "multiprogramming.toml"), "--set",
              "run.accesses=20000", *args],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.stderr
