"""Every example scenario, one idea each: its outcome, asserted.

The reclamation examples (overcommit-ballooning, idle-memory-tax, page-sharing) are
asserted in tests/test_reclamation.py, the others' mechanics in tests/test_run.py and
tests/test_virtual.py; here each example is run as the README presents it.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from memvirt.cli import app
from memvirt.config import load_scenario
from memvirt.engine.scenario import run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
runner = CliRunner()


def test_without_virtual_memory_a_process_larger_than_memory_is_refused() -> None:
    result = runner.invoke(app, ["run", str(EXAMPLES / "no-virtual-memory.toml")])
    assert result.exit_code == 2
    # the refusal names the scenario, like any error of memvirt run
    assert (
        "no-virtual-memory.toml: app needs 96 MiB of contiguous physical memory, 64 MiB free"
        in (result.output)
    )


def test_with_virtual_memory_the_same_process_runs() -> None:
    summary = run(load_scenario(EXAMPLES / "demand-paging.toml", ["run.accesses=200000"])).summary
    (process,) = summary["processes"]
    assert process["killed"] is None and process["accesses"] == 200_000
    assert process["major_faults"] > 0  # larger than memory: pages come back from swap


def test_the_two_level_examples_overcommit_and_swap_behind_the_guests() -> None:
    for name in ("two-level-nested.toml", "two-level-shadow.toml"):
        s = run(load_scenario(EXAMPLES / name, ["run.accesses=2000000"])).summary
        assert s["overcommit_ratio"] == 1.5
        assert sum(vm["host_swap_outs"] for vm in s["vms"]) > 0
        assert all(vm["guest_swap_outs"] == 0 for vm in s["vms"])  # the guests do not know
