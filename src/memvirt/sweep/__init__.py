"""Sweeps: one scenario run over a grid of settings and seeds, locally or on a Dask cluster.

A sweep answers questions no single run does — how throughput falls as
overcommitment grows, which reclamation technique wins for which workload —
by running a base scenario once per combination of the settings it varies and
per seed. The parts:

- :mod:`memvirt.sweep.spec`: the sweep file (TOML) and the plan of its runs,
  each resolved to a validated scenario whose hash is the run's key;
- :mod:`memvirt.sweep.runner`: the runs sent out through one
  ``concurrent.futures`` code path — this process, local processes or a
  dask.distributed cluster;
- :mod:`memvirt.sweep.catalog`: the SQLite catalog, one row per run, each
  outcome committed on its own, so that a sweep resumes where it stopped;
- :mod:`memvirt.sweep.report`: means over seeds with 95% confidence intervals
  (Student's t), in tables and plots;
- :mod:`memvirt.sweep.cli`: ``memvirt sweep`` and ``memvirt sweep report``.

docs/sweeps.md describes them.
"""

from memvirt.sweep.catalog import Catalog, metrics_of
from memvirt.sweep.report import SweepReport, build_report, stats, t_critical, write_report
from memvirt.sweep.runner import (
    Outcome,
    Runner,
    RunTask,
    SweepRun,
    dask_runner,
    execute,
    local_runner,
    open_runner,
    run_sweep,
    run_tasks,
    tasks_of,
)
from memvirt.sweep.spec import (
    Dimension,
    PlannedRun,
    SweepError,
    SweepPlan,
    SweepSpec,
    load_sweep,
    plan_sweep,
)

__all__ = [
    "Catalog",
    "Dimension",
    "Outcome",
    "PlannedRun",
    "RunTask",
    "Runner",
    "SweepError",
    "SweepPlan",
    "SweepReport",
    "SweepRun",
    "SweepSpec",
    "build_report",
    "dask_runner",
    "execute",
    "load_sweep",
    "local_runner",
    "metrics_of",
    "open_runner",
    "plan_sweep",
    "run_sweep",
    "run_tasks",
    "stats",
    "t_critical",
    "tasks_of",
    "write_report",
]
