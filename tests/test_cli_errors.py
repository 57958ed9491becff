"""Every command that runs a scenario names it when the scenario cannot run.

A kernel may refuse a scenario only once it is built or running: a process
larger than memory without virtual memory, a trace whose addresses it cannot
map, a trace file that cannot be read. Those messages come from deep inside
(the kernel, a trace reader) and do not know which scenario they are in, so
``memvirt run``, ``explain``, ``compare`` and ``demo`` print them as ``PATH:
message`` with exit status 2, never a traceback; ``memvirt sweep`` records a
failed run's error in its catalog starting with the scenario and the run's
``--set`` overrides.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import memvirt.config
import memvirt.engine.scenario
import memvirt.scenarios
from memvirt.cli import app, in_scenario
from memvirt.sweep.catalog import Catalog
from memvirt.sweep.runner import Outcome, RunTask, local_runner, run_tasks

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NO_VM = EXAMPLES / "no-virtual-memory.toml"
DEMAND_PAGING = EXAMPLES / "demand-paging.toml"
REFUSAL = "app needs 96 MiB of contiguous physical memory, 64 MiB free"
SHORT = "run.accesses=2000"  # enough to show a run gets going; the refusals come first

runner = CliRunner()


def refused(*args: str) -> str:
    """Invoke memvirt, expect the one-line error of bad input, and return standard error."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an exception escaping
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("memvirt: error: "), result.stderr
    return lines[0].removeprefix("memvirt: error: ")


def trace_scenario(tmp_path: Path, trace: str, name: str = "traced.toml") -> Path:
    """A native scenario whose one process replays ``traces/t.txt`` with the text ``trace``."""
    (tmp_path / "traces").mkdir(exist_ok=True)
    (tmp_path / "traces" / "t.txt").write_text(trace)
    path = tmp_path / name
    path.write_text(
        '[host]\nmemory = "1MiB"\n\n[[processes]]\nname = "replay"\n'
        'trace = "traces/t.txt"\n\n[run]\naccesses = 100\n'
    )
    return path


# the three ways to run one scenario at the command line; compare runs a good scenario
# first, so that the message must name the second, failing one
COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "run": lambda path: ["run", str(path), "--set", SHORT],
    "explain": lambda path: ["explain", str(path), "--set", SHORT],
    "compare": lambda path: ["compare", str(DEMAND_PAGING), str(path), "--set", SHORT],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_process_larger_than_memory_without_virtual_memory_is_refused_naming_the_scenario(
    command: str,
) -> None:
    assert refused(*COMMANDS[command](NO_VM)) == f"{NO_VM}: {REFUSAL}"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_malformed_trace_is_refused_naming_the_scenario_and_the_trace_line(
    command: str, tmp_path: Path
) -> None:
    scenario = trace_scenario(tmp_path, "0x1000\n0x2000\nnot-an-address\n0x3000\n")
    trace = (tmp_path / "traces" / "t.txt").resolve()
    message = refused(*COMMANDS[command](scenario))
    assert message.startswith(f"{scenario}: {trace}:3: expected an address"), message
    assert message.endswith("got 'not-an-address'")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_trace_beyond_the_virtual_address_space_is_refused_naming_the_scenario(
    command: str, tmp_path: Path
) -> None:
    # 2^63 - 1: the kernel cannot give the process a region there (48-bit addresses)
    scenario = trace_scenario(tmp_path, "0x1000\n0x7fffffffffffffff\n")
    message = refused(*COMMANDS[command](scenario))
    assert message.startswith(f"{scenario}: region "), message
    assert message.endswith("beyond the 48-bit virtual address space")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_trace_file_is_refused_at_its_key(command: str, tmp_path: Path) -> None:
    scenario = trace_scenario(tmp_path, "0x1000\n")
    (tmp_path / "traces" / "t.txt").unlink()
    message = refused(*COMMANDS[command](scenario))
    # the scenario's own check: file, line and key, and where the path was looked for
    assert message.startswith(
        f"{scenario}:6: processes.0.trace.path = 'traces/t.txt': no such trace file: "
    ), message


@pytest.mark.parametrize("command", COMMANDS)
def test_a_trace_that_vanishes_after_the_scenario_is_loaded_is_named_with_the_scenario(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = trace_scenario(tmp_path, "0x1000\n0x2000\n")
    trace = tmp_path / "traces" / "t.txt"
    load = memvirt.config.load_scenario

    def load_then_delete(path: Path, overrides: Any = ()) -> Any:
        loaded = load(path, overrides)  # checks that the trace exists
        if Path(path) == scenario:
            trace.unlink()  # ... and then it is gone before the run reads it
        return loaded

    monkeypatch.setattr(memvirt.config, "load_scenario", load_then_delete)
    message = refused(*COMMANDS[command](scenario))
    assert message == f"{scenario}: {trace.resolve()}: no such file"


def test_compare_names_the_failing_run_among_finished_ones(tmp_path: Path) -> None:
    # a finished run's directory first, then the refused scenario
    done = tmp_path / "done"
    result = runner.invoke(app, ["run", str(DEMAND_PAGING), "--set", SHORT, "--out", str(done)])
    assert result.exit_code == 0, result.output
    assert refused("compare", str(done), str(NO_VM)) == f"{NO_VM}: {REFUSAL}"


def test_running_out_of_this_machines_memory_is_a_clear_error_in_every_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError  # what numpy raises when the run's arrays do not fit

    monkeypatch.setattr(memvirt.engine.scenario, "run", out_of_memory)
    for args in (["run", str(DEMAND_PAGING)], ["compare", str(NO_VM), str(DEMAND_PAGING)]):
        message = refused(*args)
        path = args[-1] if args[0] == "run" else str(NO_VM)  # compare stops at its first run
        assert message.startswith(f"{path}: this machine has not enough memory to simulate it")
        assert "make host.memory, the VMs' memory or the swap sizes smaller" in message


def test_an_out_that_cannot_be_a_directory_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_run(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the run started")

    monkeypatch.setattr(memvirt.engine.scenario, "run", no_run)
    taken = tmp_path / "taken"
    taken.write_text("")
    for args in (["run", str(DEMAND_PAGING)], ["demo"]):
        message = refused(*args, "--out", str(taken))
        assert message == f"--out {taken}: a file of that name exists, not a directory"
    below = taken / "out"
    message = refused("run", str(DEMAND_PAGING), "--out", str(below))
    assert message == f"--out {below}: cannot make the directory: {taken} is a file"
    # the demo writes two directories inside its own
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "swapping-only").write_text("")
    message = refused("demo", "--out", str(demo))
    assert message == f"--out {demo / 'swapping-only'}: a file of that name exists, not a directory"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    message = refused("run", str(DEMAND_PAGING), "--out", str(dangling / "out"))
    assert message.endswith(f"cannot make the directory: {dangling} is a broken symbolic link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "demo", "taken"]  # no more


# ---------------------------------------------------------------------------- memvirt demo


def short_demo(tmp_path: Path) -> Path:
    """memvirt's demo scenario, run for 0.05 simulated seconds instead of 4."""
    text = (memvirt.scenarios.scenario_path()).read_text(encoding="utf-8")
    short, count = re.subn(r"(?m)^seconds = 4\.0$", "seconds = 0.05", text)
    assert count == 1, "the demo's [run] changed: update this test"
    path = tmp_path / "demo.toml"
    path.write_text(short)
    return path


def test_demo_names_the_scenario_when_its_kernel_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memvirt.scenarios, "scenario_path", lambda: NO_VM)
    message = refused("demo", "--out", str(tmp_path / "demo"))
    assert message == f"{NO_VM}: {REFUSAL}"  # the first run: no overrides of its own
    assert not (tmp_path / "demo").exists()  # nothing written


def test_demo_names_its_second_run_by_its_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = short_demo(tmp_path)
    monkeypatch.setattr(memvirt.scenarios, "scenario_path", lambda: demo)
    run = memvirt.engine.scenario.run

    def swapping_runs_out_of_memory(scenario: Any, **kwargs: Any) -> Any:
        if not scenario.hypervisor.balloon.enabled:
            raise MemoryError
        return run(scenario, **kwargs)

    monkeypatch.setattr(memvirt.engine.scenario, "run", swapping_runs_out_of_memory)
    out = tmp_path / "out"
    message = refused("demo", "--out", str(out))
    assert message.startswith(
        f"{demo} --set hypervisor.balloon.enabled=false: this machine has not enough memory"
    ), message
    assert (out / "with-balloons" / "summary.json").exists()  # the first run went through
    assert not (out / "swapping-only").exists() and not (out / "report.html").exists()


def test_demo_missing_its_scenario_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "demo.toml"
    monkeypatch.setattr(memvirt.scenarios, "scenario_path", lambda: gone)
    assert refused("demo", "--out", str(tmp_path / "out")).startswith(f"{gone}: cannot read")


# ---------------------------------------------------------------------------- memvirt sweep


def test_a_sweeps_failed_run_is_recorded_naming_the_scenario_and_its_case(
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "no-virtual-memory.toml"
    shutil.copy(NO_VM, scenario)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        f'[sweep]\nscenario = "{scenario.name}"\nseeds = 1\nset = ["{SHORT}"]\n\n'
        '[cases.memory]\nsmall = ["host.memory=64MiB"]\nlarge = ["host.memory=128MiB"]\n'
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep", str(sweep), "--workers", "1", "--out", str(out)])
    assert result.exit_code == 1, result.output  # some runs failed
    expected = (
        f"{scenario} --set {SHORT} --set host.memory=64MiB --set run.seed=0: "
        f"AdmissionError: {REFUSAL} (at kernel.py:"
    )
    with Catalog.open(out) as catalog:
        assert catalog.counts() == {"pending": 0, "ok": 1, "failed": 1}
        (row,) = catalog.rows("failed")
    assert row["error"].startswith(expected), row["error"]
    assert f"memvirt: run memory=small seed=0 failed: {expected}" in result.stderr
    assert "Traceback" not in result.output
    # the report lists it the same way
    report = runner.invoke(app, ["sweep", "report", str(out), "--x", "memory"])
    assert report.exit_code == 0, report.output
    assert f"failed: memory=small seed=0: {expected}" in report.stdout


def test_a_lost_worker_is_recorded_naming_the_run() -> None:
    task = RunTask("k" * 64, "base.toml", "", ".", ("host.memory=1GiB", "run.seed=3"))
    assert task.arguments() == "base.toml --set host.memory=1GiB --set run.seed=3"

    def dies(task: RunTask) -> Outcome:
        raise RuntimeError("the process died")  # as a broken pool raises from the future

    outcomes: list[Outcome] = []
    run_tasks(local_runner(1), [task], outcomes.append, dies)
    (outcome,) = outcomes
    assert outcome.error is not None and not outcome.ok
    assert outcome.error.startswith(
        "base.toml --set host.memory=1GiB --set run.seed=3: the worker was lost: "
        "RuntimeError: the process died"
    )


# ---------------------------------------------------------------------------- in_scenario


def test_an_unreadable_file_met_while_running_is_named_after_the_scenario() -> None:
    err = PermissionError(errno.EACCES, "Permission denied", "/data/t.mvt")
    assert in_scenario("s.toml", err) == "s.toml: /data/t.mvt: Permission denied"
    assert in_scenario("s.toml", OSError("no space")) == "s.toml: no space"


def test_a_message_that_already_names_the_scenario_is_left_alone() -> None:
    own = ValueError("s.toml:4: processes.0.memory = '1GiB': too large")
    assert in_scenario("s.toml", own) == str(own)
    # a file whose name only starts like the scenario's is another file
    other = ValueError("s.toml.bak: not a trace")
    assert in_scenario("s.toml", other) == "s.toml: s.toml.bak: not a trace"
    assert in_scenario("s.toml", ValueError("refused"), ["a=1", "b=2"]) == (
        "s.toml --set a=1 --set b=2: refused"
    )
