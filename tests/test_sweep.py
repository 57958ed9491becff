"""Sweeps: a scenario over a grid of settings and seeds, recorded in a resumable catalog.

The scenarios here are tiny (two 8 MiB VMs on a 12 MiB host, 40,000 accesses) so
that a sweep of a dozen runs takes about a second.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from memvirt.config import _parse_value, load_scenario
from memvirt.engine.scenario import run
from memvirt.sweep import (
    Catalog,
    Outcome,
    RunTask,
    SweepError,
    build_report,
    execute,
    load_sweep,
    local_runner,
    metrics_of,
    plan_sweep,
    run_sweep,
    run_tasks,
    stats,
    t_critical,
    tasks_of,
    write_report,
)
from memvirt.sweep import cli as sweep_cli
from memvirt.sweep.cli import register
from memvirt.sweep.report import panel_stem
from memvirt.sweep.runner import Runner, SerialExecutor, dask_runner
from memvirt.sweep.spec import METRIC_NAMES, toml_value
from memvirt.workloads.ahead import ONE_THREAD, cores, one_thread, usable_cpus

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
# two 8 MiB VMs on a 12 MiB host: overcommitted 1.33 times
[host]
memory = "12MiB"

[hypervisor]
host_swap = { size = "32MiB" }

[[vms]]
name = "a"
memory = "8MiB"
guest = { policy = "lru", swap = "16MiB" }

[[vms.processes]]
name = "p"
memory = "6MiB"
workload = { kind = "zipf", pages = 1536, alpha = 0.6, write_fraction = 0.3 }

[[vms]]
name = "b"
memory = "8MiB"
guest = { policy = "lru", swap = "16MiB" }

[[vms.processes]]
name = "p"
memory = "6MiB"
workload = { kind = "zipf", pages = 1536, alpha = 0.6, write_fraction = 0.3 }

[run]
accesses = 40000
seed = 3
quantum_accesses = 2000
"""

SWEEP = """\
[sweep]
scenario = "base.toml"
seeds = 2

[cases.memory]
small = ["host.memory=10MiB"]
large = ["host.memory=16MiB"]

[grid]
vms.a.guest.policy = ["lru", "fifo"]
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    write(tmp_path / "base.toml", BASE)
    return write(tmp_path / "sweep.toml", SWEEP)


def app() -> typer.Typer:
    """memvirt's app as cli.py builds it, with the sweep command registered."""
    app = typer.Typer(add_completion=False, no_args_is_help=True)

    @app.callback()
    def cli() -> None:
        """memvirt."""

    register(app)
    return app


runner = CliRunner()


def serial() -> Runner:
    return local_runner(1)


def summaries(catalog: Catalog) -> dict[str, str]:
    return {r["key"]: r["summary"] for r in catalog.rows("ok")}


# -------------------------------------------------------------------- the sweep file


def test_a_sweep_runs_every_combination_of_cases_grid_and_seeds(sweep_file: Path) -> None:
    plan = plan_sweep(load_sweep(sweep_file))
    assert [r.describe() for r in plan.runs[:3]] == [
        "memory=small vms.a.guest.policy=lru seed=0",
        "memory=small vms.a.guest.policy=lru seed=1",
        "memory=small vms.a.guest.policy=fifo seed=0",
    ]
    assert len(plan.runs) == 2 * 2 * 2
    assert len({r.key for r in plan.runs}) == 8  # eight different scenarios
    last = plan.runs[-1]
    assert last.overrides == ("host.memory=16MiB", 'vms.a.guest.policy="fifo"', "run.seed=1")
    # the key is the hash of the scenario the overrides resolve to
    scenario = load_scenario(sweep_file.parent / "base.toml", last.overrides)
    assert last.key == scenario.hash()
    assert scenario.host.memory == 16 << 20 and scenario.vms[0].guest.policy == "fifo"


def test_a_grid_may_be_written_with_quoted_or_bare_dotted_keys(tmp_path: Path) -> None:
    write(tmp_path / "base.toml", BASE)
    head = '[sweep]\nscenario = "base.toml"\n[grid]\n'
    bare = write(
        tmp_path / "a.toml",
        head + "hypervisor.balloon.enabled = [true, false]\nrun.accesses = [1000, 2000]\n",
    )
    quoted = write(
        tmp_path / "b.toml",
        head + '"hypervisor.balloon.enabled" = [true, false]\n"run.accesses" = [1000, 2000]\n',
    )
    a, b = plan_sweep(load_sweep(bare)), plan_sweep(load_sweep(quoted))
    assert [r.key for r in a.runs] == [r.key for r in b.runs]
    assert [d.labels for d in a.spec.dimensions] == [("true", "false"), ("1000", "2000")]
    # without seeds, each run keeps the scenario's own seed
    assert {r.seed for r in a.runs} == {3}


def test_seeds_are_a_count_or_a_list(tmp_path: Path) -> None:
    write(tmp_path / "base.toml", BASE)
    three = write(tmp_path / "a.toml", '[sweep]\nscenario = "base.toml"\nseeds = 3\n')
    listed = write(tmp_path / "b.toml", '[sweep]\nscenario = "base.toml"\nseeds = [7, 11]\n')
    assert [r.seed for r in plan_sweep(load_sweep(three)).runs] == [0, 1, 2]
    assert [r.seed for r in plan_sweep(load_sweep(listed)).runs] == [7, 11]


@st.composite
def toml_values(draw: st.DrawFn) -> object:
    text = st.text(st.characters(codec="utf-8"), max_size=12)  # no lone surrogates
    scalars = (
        st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | text
    )
    return draw(
        st.recursive(
            scalars,
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
            max_leaves=8,
        )
    )


@given(toml_values())
def test_a_grid_value_reaches_the_scenario_as_it_was_written(value: object) -> None:
    # the override text --set reads back is the grid's value, whatever its type
    assert _parse_value(toml_value(value)) == value


BAD_SWEEPS = [
    ('[sweep]\nscenario = "base.toml"\nseed = 3\n',
     "sweep.toml:3: sweep.seed: unknown key; expected one of: scenario, seeds, set"),
    ('[sweep]\nscenario = "base.toml"\nseeds = 0\n',
     "sweep.toml:3: sweep.seeds = 0: a count of seeds must be at least 1"),
    ('[sweep]\nscenario = "base.toml"\nseeds = [1, 1]\n',
     "sweep.toml:3: sweep.seeds = [1, 1]: each seed may appear once"),
    ('[sweep]\nscenario = "base.toml"\n[grid]\nhost.memory = "16MiB"\n',
     "sweep.toml:4: grid.host.memory = '16MiB': expected a list of the values to try, "
     'such as ["16MiB"]'),
    ('[sweep]\nscenario = "base.toml"\n[grid]\n"host.memory" = []\n',
     "sweep.toml:4: grid.host.memory = []: expected at least one value"),
    ('[sweep]\nscenario = "base.toml"\n[cases.t]\na = ["hypervisor.balloon.enabled"]\n',
     "sweep.toml:4: cases.t.a.0 = 'hypervisor.balloon.enabled': expected KEY=VALUE"),
    ('[sweep]\nscenario = "base.toml"\n[cases.throughput]\na = []\n',
     "sweep.toml:3: cases.throughput: is a metric of the catalog; choose another name"),
    ('[sweep]\nscenario = "base.toml"\n[cases.t]\na = []\n[report]\nx = "u"\n',
     "sweep.toml:6: report.x = 'u': not a dimension of the sweep (they are: t)"),
    ("[sweep]\nscenario = \n", "sweep.toml:2:12: Invalid value"),
    ("[sweep]\n", "sweep.toml:1: sweep.scenario: required, but not given"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_SWEEPS)
def test_a_bad_sweep_file_is_reported_by_line_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    write(tmp_path / "base.toml", BASE)
    path = write(tmp_path / "sweep.toml", text)
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert str(err.value).startswith(str(tmp_path) + "/")
    assert message in str(err.value)


BAD_PLANS = [
    ('[sweep]\nscenario = "nothere.toml"\n', "sweep.toml:2: sweep.scenario: "),
    ('[sweep]\nscenario = "base.toml"\nset = ["host.memroy=1GiB"]\n',
     "sweep.toml:3: sweep.set: "),
    ('[sweep]\nscenario = "base.toml"\n[cases.t]\na = ["hypervisor.balon.enabled=true"]\n',
     "sweep.toml:4: cases.t.a: --set hypervisor.balon.enabled=true: hypervisor has no key "
     "'balon'"),
    ('[sweep]\nscenario = "base.toml"\n[grid]\nrun.seed = [1, 2]\n',
     "sweep.toml:4: grid.run.seed: sets run.seed, which the sweep's seeds set"),
    ('[sweep]\nscenario = "base.toml"\n[cases.t]\na = ["vms.a.memory=6MiB"]\n'
     '[grid]\n"vms.0.memory" = ["4MiB"]\n',
     "grid.vms.0.memory: sets vms.0.memory, which cases.t sets too"),
    ('[sweep]\nscenario = "base.toml"\n[grid]\n"host.memory" = ["12MiB", "1001KiB"]\n',
     "sweep.toml: run host.memory=1001KiB seed=3: "),
    ('[sweep]\nscenario = "base.toml"\n[cases.t]\na = []\nb = ["run.seed=3"]\n',
     "sweep.toml:3: cases.t: sets run.seed"),
    ('[sweep]\nscenario = "base.toml"\n[grid]\n"host.memory" = ["12MiB", 12582912]\n',
     "resolve to the same scenario"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_PLANS)
def test_a_sweep_is_checked_whole_before_anything_runs(
    tmp_path: Path, text: str, message: str
) -> None:
    write(tmp_path / "base.toml", BASE)
    path = write(tmp_path / "sweep.toml", text)
    with pytest.raises(SweepError) as err:
        plan_sweep(load_sweep(path))
    assert message in str(err.value)


def test_the_command_reports_bad_input_in_one_line_per_problem(tmp_path: Path) -> None:
    write(tmp_path / "base.toml", BASE)
    path = write(tmp_path / "sweep.toml", '[sweep]\nscenario = "base.toml"\nseeds = 0\nx = 1\n')
    result = runner.invoke(app(), ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert (
        lines[0]
        == f"memvirt: error: {path}:3: sweep.seeds = 0: a count of seeds must be at least 1"
    )
    assert lines[1] == f"{path}:4: sweep.x: unknown key; expected one of: scenario, seeds, set"
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing is made for a sweep that cannot run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report"], "expected: memvirt sweep report DIR"),
        (["a.toml", "b.toml"], "expected one sweep file, got 2 arguments"),
        (["SWEEP", "--metric", "faults"], "--metric: options of memvirt sweep report DIR"),
        (["report", "d", "--workers", "2"], "--workers: options of a sweep's run"),
        (["SWEEP", "--workers", "0"], "--workers: expected 1 or more, got 0"),
        (["SWEEP", "--workers", "2", "--scheduler", "tcp://h:1"], "give one"),
        (["SWEEP", "--scheduler", "nowhere"], "expected a scheduler's address such as"),
    ],
)
def test_the_command_refuses_options_that_do_not_fit(
    sweep_file: Path, args: list[str], message: str
) -> None:
    args = [str(sweep_file) if a == "SWEEP" else a for a in args]
    out = sweep_file.parent / "out"
    result = runner.invoke(app(), ["sweep", *args, "--out", str(out)] if "report" not in args
                           else ["sweep", *args])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.startswith("memvirt: error: ")
    assert not out.exists()


# ------------------------------------------------------------------- running


def test_a_runs_summary_is_the_same_in_process_in_a_pool_and_on_dask(sweep_file: Path) -> None:
    distributed = pytest.importorskip("distributed")
    plan = plan_sweep(load_sweep(sweep_file))
    tasks = tasks_of(plan)[:4]
    # the reference: the scenario run directly, as memvirt run does
    direct = {t.key: run(load_scenario(t.source, t.overrides)).summary for t in tasks}
    results: dict[str, dict[str, object]] = {}

    def collect(name: str, make: Callable[[], Runner]) -> None:
        outcomes: list[Outcome] = []
        runner_ = make()
        try:
            run_tasks(runner_, tasks, outcomes.append)
        finally:
            runner_.close()
        assert all(o.ok for o in outcomes), [o.error for o in outcomes]
        results[name] = {o.key: o.summary for o in outcomes}

    collect("in process", serial)
    collect("pool", lambda: local_runner(2))
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        collect("dask threads", lambda: dask_runner(cluster.scheduler_address))
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        collect("dask processes", lambda: dask_runner(cluster.scheduler_address))
    expected = json.dumps(direct, sort_keys=True)
    for name, got in results.items():
        assert json.dumps(got, sort_keys=True) == expected, name


def _cores_seen(task: RunTask) -> Outcome:
    """A run that reports how many CPUs a run started there would use."""
    return Outcome(task.key, {"cores": cores()}, None, 0.0)


def test_one_thread_keeps_the_runs_inside_to_one_thread_and_leaves_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ONE_THREAD, raising=False)
    assert cores() == usable_cpus()
    with one_thread():
        assert cores() == 1
        assert ONE_THREAD not in os.environ
    assert cores() == usable_cpus()


def test_a_dask_workers_runs_keep_to_one_thread(
    sweep_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    distributed = pytest.importorskip("distributed")
    monkeypatch.delenv(ONE_THREAD, raising=False)
    tasks = tasks_of(plan_sweep(load_sweep(sweep_file)))[:2]
    outcomes: list[Outcome] = []
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        runner_ = dask_runner(cluster.scheduler_address)
        try:
            run_tasks(runner_, tasks, outcomes.append, fn=_cores_seen)
        finally:
            runner_.close()
    assert [o.summary for o in outcomes] == [{"cores": 1}] * 2
    assert ONE_THREAD not in os.environ
    serial_outcomes: list[Outcome] = []
    run_tasks(serial(), tasks, serial_outcomes.append, fn=_cores_seen)
    assert [o.summary for o in serial_outcomes] == [{"cores": usable_cpus()}] * 2


def test_the_command_runs_on_a_dask_cluster_through_the_same_path(
    sweep_file: Path, tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    local = runner.invoke(app(), ["sweep", str(sweep_file), "--workers", "1", "-q",
                                  "--out", str(tmp_path / "local")])  # fmt: skip
    assert local.exit_code == 0, local.output
    assert local.stdout == ""  # --quiet
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        args = ["sweep", str(sweep_file), "--scheduler", cluster.scheduler_address,
                "--out", str(tmp_path / "dask")]  # fmt: skip
        remote = runner.invoke(app(), args)
    assert remote.exit_code == 0, remote.output
    assert f"on the Dask cluster at {cluster.scheduler_address}" in remote.stdout
    with Catalog.open(tmp_path / "local") as a, Catalog.open(tmp_path / "dask") as b:
        assert summaries(a) == summaries(b) and len(summaries(a)) == 8


def test_a_worker_that_resolves_another_scenario_refuses_to_run_it(sweep_file: Path) -> None:
    task = tasks_of(plan_sweep(load_sweep(sweep_file)))[0]
    outcome = execute(RunTask("0" * 64, task.source, task.text, task.base_dir, task.overrides))
    assert outcome.summary is None and outcome.error is not None
    assert "is the same memvirt version installed everywhere?" in outcome.error


# ------------------------------------------------------------------- the catalog


def test_the_catalog_has_a_row_per_run_with_its_settings_and_metrics(
    sweep_file: Path, tmp_path: Path
) -> None:
    plan = plan_sweep(load_sweep(sweep_file))
    with Catalog.open(tmp_path / "out", create=True) as catalog:
        result = run_sweep(plan, catalog, serial())
        assert (result.ok, result.failed, result.skipped) == (8, [], 0)
        rows = catalog.rows()
    assert len(rows) == 8
    row = next(r for r in rows if r["point"] == plan.runs[-1].point)
    assert (row["memory"], row["vms.a.guest.policy"], row["seed"]) == ("large", "fifo", 1)
    assert (row["status"], row["error"]) == ("ok", None) and row["seconds"] > 0
    summary = json.loads(row["summary"])
    assert summary["seed"] == 1 and summary["scenario"]["hash"] == row["key"]
    assert row["throughput"] == pytest.approx(sum(vm["throughput"] for vm in summary["vms"]))
    assert row["host_swap_outs"] == sum(vm["host_swap_outs"] for vm in summary["vms"])
    assert row["vms.b.guest_faults"] == summary["vms"][1]["guest_faults"]
    assert row["host.time_in_state.high"] == summary["host"]["time_in_state"]["high"]
    assert json.loads(row["overrides"]) == list(plan.runs[-1].overrides)
    # the catalog is plain SQLite, in WAL mode
    db = sqlite3.connect(tmp_path / "out" / "catalog.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("SELECT count(*) FROM runs WHERE \"memory\" = 'small'").fetchone() == (4,)


def test_every_plain_metric_name_is_reserved(tmp_path: Path) -> None:
    native = run(load_scenario(ROOT / "examples" / "multiprogramming.toml",
                               ["run.accesses=20000"])).summary  # fmt: skip
    virtual = run(load_scenario(write(tmp_path / "base.toml", BASE))).summary
    for summary in (native, virtual):
        plain = {name for name in metrics_of(summary) if "." not in name}
        assert plain <= set(METRIC_NAMES)
        assert "throughput" in plain and "major_faults" in plain


def test_running_a_sweep_again_skips_the_runs_already_done(
    sweep_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with Catalog.open(out, create=True) as catalog:
        run_sweep(plan_sweep(load_sweep(sweep_file)), catalog, serial())
        before = summaries(catalog)

    def must_not_run(task: RunTask) -> Outcome:
        raise AssertionError(f"ran {task.overrides} again")

    with Catalog.open(out) as catalog:
        again = run_sweep(plan_sweep(load_sweep(sweep_file)), catalog, serial(), fn=must_not_run)
        assert (again.skipped, again.ran) == (8, 0)
    # one more seed: only its runs are new
    write(sweep_file, SWEEP.replace("seeds = 2", "seeds = 3"))
    ran: list[RunTask] = []

    def counted(task: RunTask) -> Outcome:
        ran.append(task)
        return execute(task)

    with Catalog.open(out) as catalog:
        more = run_sweep(plan_sweep(load_sweep(sweep_file)), catalog, serial(), fn=counted)
        assert (more.skipped, more.ok) == (8, 4)
        assert {t.overrides[-1] for t in ran} == {"run.seed=2"}
        assert {k: v for k, v in summaries(catalog).items() if k in before} == before


def test_a_run_whose_scenario_changed_runs_again_and_a_relabelled_one_does_not(
    sweep_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with Catalog.open(out, create=True) as catalog:
        run_sweep(plan_sweep(load_sweep(sweep_file)), catalog, serial())
    # relabelling a case keeps its scenarios: nothing runs
    write(sweep_file, SWEEP.replace("small =", "tiny ="))
    with Catalog.open(out) as catalog:
        result = run_sweep(plan_sweep(load_sweep(sweep_file)), catalog, serial())
        assert (result.skipped, result.ran) == (8, 0)
        assert {r["memory"] for r in catalog.rows()} == {"tiny", "large"}
    # a changed base scenario changes every run's scenario: all run again, old rows go
    write(sweep_file.parent / "base.toml", BASE.replace("accesses = 40000", "accesses = 30000"))
    with Catalog.open(out) as catalog:
        result = run_sweep(plan_sweep(load_sweep(sweep_file)), catalog, serial())
        assert (result.skipped, result.ok) == (0, 8)
        rows = catalog.rows()
        assert len(rows) == 8
        assert all(sum(vm["accesses"] for vm in json.loads(r["summary"])["vms"]) == 30000
                   for r in rows)  # fmt: skip


def test_a_catalog_belongs_to_one_sweeps_dimensions(sweep_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Catalog.open(out, create=True) as catalog:
        run_sweep(plan_sweep(load_sweep(sweep_file)), catalog, serial())
    other = write(tmp_path / "other.toml", '[sweep]\nscenario = "base.toml"\n[grid]\n'
                  '"run.accesses" = [1000]\n')  # fmt: skip
    result = runner.invoke(app(), ["sweep", str(other), "--out", str(out)])
    assert result.exit_code == 2
    assert "this catalog records a sweep over (memory, vms.a.guest.policy), not " in result.stderr


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path: Path) -> None:
    # a native machine replaying one of two traces; one trace vanishes before the runs
    write(tmp_path / "good.txt", "\n".join(str(4096 * (k % 7)) for k in range(200)))
    write(tmp_path / "gone.txt", "\n".join(str(4096 * (k % 5)) for k in range(200)))
    base = '# a trace\n[host]\nmemory = "64KiB"\nswap = { size = "1MiB" }\n[[processes]]\n'
    write(tmp_path / "base.toml", base + 'name = "t"\ntrace = { path = "good.txt" }\n[run]\n'
          "accesses = 200\n")  # fmt: skip
    sweep = write(tmp_path / "sweep.toml", '[sweep]\nscenario = "base.toml"\nseeds = 2\n[grid]\n'
                  '"processes.t.trace.path" = ["good.txt", "gone.txt"]\n')  # fmt: skip
    plan = plan_sweep(load_sweep(sweep))  # both traces exist when the sweep is planned
    (tmp_path / "gone.txt").unlink()
    with Catalog.open(tmp_path / "out", create=True) as catalog:
        result = run_sweep(plan, catalog, serial())
        assert (result.ok, len(result.failed)) == (2, 2)
        failed = catalog.rows("failed")
        assert {r["processes.t.trace.path"] for r in failed} == {"gone.txt"}
        assert all("no such trace file" in r["error"] for r in failed)
        assert all(r["summary"] is None and r["throughput"] is None for r in failed)
    # once the trace is back, running the sweep again runs the failed runs alone
    write(tmp_path / "gone.txt", "0\n4096\n")
    again = runner.invoke(app(), ["sweep", str(sweep), "--workers", "1",
                                  "--out", str(tmp_path / "out")])  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "4 runs: 2 done before, 2 ok, 0 failed" in again.stdout


def test_the_command_lists_failed_runs_and_exits_with_status_1(
    sweep_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def seed_1_fails(task: RunTask) -> Outcome:
        if task.overrides[-1] == "run.seed=1":
            return Outcome(task.key, None, "RuntimeError: out of luck", 0.0)
        return execute(task)

    monkeypatch.setattr(sweep_cli, "run_sweep", functools.partial(run_sweep, fn=seed_1_fails))
    result = runner.invoke(app(), ["sweep", str(sweep_file), "--workers", "1",
                                   "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 1
    assert "memvirt: run memory=small vms.a.guest.policy=lru seed=1 failed: RuntimeError: out " \
        "of luck" in result.stderr  # fmt: skip
    assert "8 runs: 0 done before, 4 ok, 4 failed" in result.stdout
    with Catalog.open(tmp_path / "out") as catalog:
        assert catalog.counts() == {"pending": 0, "ok": 4, "failed": 4}


def test_an_interrupt_leaves_the_catalog_consistent_and_the_sweep_resumes(
    sweep_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    calls = 0

    def interrupted_at_the_third(task: RunTask) -> Outcome:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return execute(task)

    plan = plan_sweep(load_sweep(sweep_file))
    with Catalog.open(out, create=True) as catalog:
        result = run_sweep(plan, catalog, serial(), fn=interrupted_at_the_third)
        assert result.interrupted and (result.ok, result.remaining) == (2, 6)
        assert catalog.counts() == {"pending": 6, "ok": 2, "failed": 0}
    db = sqlite3.connect(out / "catalog.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    with Catalog.open(out) as catalog:
        resumed = run_sweep(plan, catalog, serial())
        assert (resumed.skipped, resumed.ok) == (2, 6)
        assert catalog.counts() == {"pending": 0, "ok": 8, "failed": 0}


def test_ctrl_c_stops_the_command_and_leaves_the_catalog_consistent(tmp_path: Path) -> None:
    # runs long enough (about half a second each), and so many (minutes of work), that the
    # sweep is still going when the first one is in the catalog and Ctrl-C comes
    write(tmp_path / "base.toml", BASE.replace("accesses = 40000", "accesses = 4000000"))
    sweep = write(tmp_path / "sweep.toml", '[sweep]\nscenario = "base.toml"\nseeds = 300\n')
    out = tmp_path / "out"
    script = (
        "import typer\nfrom memvirt.sweep.cli import register\n"
        "app = typer.Typer()\n@app.callback()\ndef cli() -> None: pass\n"
        "register(app)\napp()\n"
    )
    args = [sys.executable, "-c", script, "sweep", str(sweep), "--workers", "2", "-q",
            "--out", str(out)]  # fmt: skip
    # in a session of its own, so that Ctrl-C can reach its whole process group, as a
    # terminal's does: the pool's workers too
    # and with Ctrl-C's default action: a job started in the background by a shell (`cmd &`)
    # ignores SIGINT, and so would this command, run from it, without the reset
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        counts: dict[str, int] = {}
        while time.monotonic() < deadline and process.poll() is None:
            if (out / "catalog.sqlite").exists():
                with Catalog.open(out) as catalog:
                    counts = catalog.counts()
                    if counts["ok"] >= 1:
                        break
            time.sleep(0.05)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.communicate()  # its pipes closed, whatever happened
    assert process.returncode == 130, (counts, stdout, stderr)
    assert "interrupted: " in stderr and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    with Catalog.open(out) as catalog:
        counts = catalog.counts()
    assert counts["ok"] >= 1 and counts["pending"] >= 1 and counts["failed"] == 0


# ------------------------------------------------------------------- the report


@pytest.mark.parametrize(
    ("df", "t"),
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706), (10, 2.2281),
     (30, 2.0423), (100, 1.9840), (1000, 1.9623)],
)  # fmt: skip
def test_the_t_quantile_matches_the_published_table(df: int, t: float) -> None:
    assert t_critical(df) == pytest.approx(t, abs=1e-4)


def test_the_t_quantile_at_other_confidence_levels() -> None:
    assert t_critical(1, 0.99) == pytest.approx(63.6567, abs=1e-3)
    assert t_critical(9, 0.90) == pytest.approx(1.8331, abs=1e-4)


def test_the_interval_is_t_times_the_standard_error() -> None:
    s = stats([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    assert s.ci == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)
    one = stats([5.0])
    assert one.mean == 5.0 and math.isnan(one.ci)


def test_the_report_aggregates_over_seeds_and_draws_the_same_files_twice(
    sweep_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with Catalog.open(out, create=True) as catalog:
        run_sweep(plan_sweep(load_sweep(sweep_file)), catalog, serial())
        report = build_report(catalog)
        rows = catalog.rows("ok")
    # defaults: x is the first dimension, lines the next
    assert (report.metric, report.x, report.lines) == ("throughput", "memory", "vms.a.guest.policy")
    (panel,) = report.panels
    seeds = [r["throughput"] for r in rows if (r["memory"], r["vms.a.guest.policy"]) ==
             ("small", "fifo")]  # fmt: skip
    cell = panel.cells[("small", "fifo")]
    assert cell.n == 2 and cell.mean == pytest.approx(sum(seeds) / 2)
    assert cell.ci == pytest.approx(12.7062 * abs(seeds[0] - seeds[1]) / 2, rel=1e-4)
    # the small host swaps: less throughput than the large one
    assert panel.cells[("small", "lru")].mean < panel.cells[("large", "lru")].mean

    first = {p.name: p.read_bytes() for p in write_report(report)}
    assert sorted(first) == [
        "throughput-vs-memory-by-vms.a.guest.policy.csv",
        "throughput-vs-memory-by-vms.a.guest.policy.png",
        "throughput-vs-memory-by-vms.a.guest.policy.svg",
    ]
    assert b"<svg" in first["throughput-vs-memory-by-vms.a.guest.policy.svg"]
    second = {p.name: p.read_bytes() for p in write_report(report)}
    assert first == second
    assert not [p for p in (out / "plots").iterdir() if p.name.startswith(".")]


def test_the_report_command_prints_a_table_per_figure(sweep_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = runner.invoke(app(), ["sweep", str(sweep_file), "--workers", "1", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "[8/8] memory=large vms.a.guest.policy=fifo seed=1: ok" in done.stdout
    assert f"Report: memvirt sweep report {out}" in done.stdout
    result = runner.invoke(
        app(), ["sweep", "report", str(out), "--metric", "host_swap_outs",
                "--x", "vms.a.guest.policy", "--lines", "memory"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "8 runs in the catalog: 8 ok, 0 failed, 0 pending" in result.stdout
    assert "host_swap_outs: mean ± 95% confidence interval over 2 seeds" in result.stdout
    assert (out / "plots" / "host_swap_outs-vs-vms.a.guest.policy-by-memory.svg").is_file()
    # a dimension neither on x nor as lines: a figure per label
    with Catalog.open(out) as catalog:
        report = build_report(catalog, "throughput", x="memory", lines=None)
    assert report.lines == "vms.a.guest.policy"  # chosen, as the file does not say
    with Catalog.open(out) as catalog:
        report = build_report(catalog, "throughput", x="memory", lines="vms.a.guest.policy")
        assert [panel_stem(report, p) for p in report.panels] == [
            "throughput-vs-memory-by-vms.a.guest.policy"
        ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metric", "speed"], "--metric speed: not a metric of this catalog; the plain ones"),
        (["--x", "policy"], "--x policy: not a dimension of the sweep (they are: memory, vms."),
        (["--x", "memory", "--lines", "memory"], "--lines memory: must differ from --x"),
    ],
)
def test_the_report_refuses_what_the_catalog_does_not_have(
    sweep_file: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    with Catalog.open(out, create=True) as catalog:
        run_sweep(plan_sweep(load_sweep(sweep_file)), catalog, serial())
    result = runner.invoke(app(), ["sweep", "report", str(out), *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_report_needs_a_catalog_with_finished_runs(tmp_path: Path) -> None:
    result = runner.invoke(app(), ["sweep", "report", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path}: no sweep catalog here (catalog.sqlite not found)" in result.stderr
    write(tmp_path / "catalog.sqlite", "not a database, only text")
    result = runner.invoke(app(), ["sweep", "report", str(tmp_path)])
    assert result.exit_code == 2 and "not a memvirt sweep catalog" in result.stderr


# ------------------------------------------------------------------- the example


def test_the_example_sweep_crosses_seven_ratios_three_techniques_and_three_seeds() -> None:
    plan = plan_sweep(load_sweep(ROOT / "examples" / "sweep-overcommit.toml"))
    assert len(plan.runs) == 7 * 3 * 3
    ratios = {}
    for r in plan.runs:
        scenario = load_scenario(ROOT / "examples" / "overcommit-ballooning.toml", r.overrides)
        ratios[dict(r.labels)["overcommit"]] = scenario.overcommit_ratio
    assert all(abs(ratio - float(label)) < 0.005 for label, ratio in ratios.items())
    assert min(ratios.values()) == 1.0 and max(ratios.values()) == 2.0


def test_the_serial_executor_runs_at_submission(sweep_file: Path) -> None:
    order: list[str] = []
    tasks = tasks_of(plan_sweep(load_sweep(sweep_file)))[:3]

    def record(task: RunTask) -> Outcome:
        order.append(task.key)
        return Outcome(task.key, {}, None, 0.0)

    got: list[str] = []
    run_tasks(Runner(SerialExecutor(), 1, "test"), tasks, lambda o: got.append(o.key), record)
    assert order == got == [t.key for t in tasks]


def test_a_new_catalog_appears_whole_under_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new catalog is made under a temporary name and renamed, so that a reader never
    opens a file without its meta table; a failure leaves neither file behind."""
    from memvirt.sweep import catalog as catalog_module

    renamed: list[tuple[Path, Path]] = []
    replace = os.replace

    def spy(src: Path, dst: Path) -> None:
        with sqlite3.connect(src) as db:  # complete before it takes the catalog's name
            assert [
                r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ] == ["meta"]
        renamed.append((Path(src), Path(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    with catalog_module.Catalog.open(tmp_path / "a", create=True) as cat:
        assert cat.meta()["schema_version"] == catalog_module.SCHEMA_VERSION
    assert [dst.name for _, dst in renamed] == [catalog_module.CATALOG]
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")) == []

    def fail(src: Path, dst: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(SweepError, match="cannot make the sweep catalog"):
        catalog_module.Catalog.open(tmp_path / "b", create=True)
    assert list((tmp_path / "b").iterdir()) == []
