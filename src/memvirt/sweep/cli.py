"""``memvirt sweep``: run a sweep file, and ``memvirt sweep report DIR``: report on one.

:func:`register` adds the command to memvirt's typer app. One command takes
both spellings — ``memvirt sweep SWEEP.toml [--workers N] [--scheduler ADDRESS]
[--out DIR] [--quiet]`` and ``memvirt sweep report DIR [--metric M] [--x SETTING]
[--lines SETTING]`` — told apart by the first argument. Bad input ends with
one line per problem on standard error and exit status 2; a sweep in which
some runs failed ends with status 1, an interrupted one with 130.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from memvirt.config import ScenarioError
from memvirt.sweep.catalog import CATALOG, Catalog
from memvirt.sweep.report import SweepReport, build_report, format_stats, write_report
from memvirt.sweep.runner import Outcome, open_runner, run_sweep
from memvirt.sweep.spec import PlannedRun, SweepPlan, load_sweep, plan_sweep

#: Exit status of a sweep in which some runs failed (bad input is 2, as everywhere).
EXIT_FAILED_RUNS = 1
#: Exit status of an interrupted sweep (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
#: Failed runs listed on standard error; the catalog has them all.
LISTED_FAILURES = 10


def fail(message: str) -> NoReturn:
    """Print ``memvirt: error: message`` on standard error and exit with status 2 (as
    memvirt.cli.fail does)."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]memvirt: error:[/] {escape(message)}", markup=True
    )
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add the ``sweep`` command to ``app``."""
    app.command(
        "sweep",
        help=(
            "Run a scenario over a grid of settings and seeds, on local processes or a Dask "
            "cluster, into a resumable SQLite catalog; or report on one.\n\n"
            "memvirt sweep SWEEP.toml [--workers N | --scheduler ADDRESS] [--out DIR] [--quiet]"
            "\n\nmemvirt sweep report DIR [--metric M] [--x SETTING] [--lines SETTING]\n\n"
            "See docs/sweeps.md."
        ),
    )(sweep_command)


def sweep_command(
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="SWEEP.toml | report DIR",
            help="A sweep file to run, or 'report' and a sweep's output directory.",
            show_default=False,
        ),
    ],
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Local worker processes (default: one per CPU; 1 runs in this process).",
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Run on the Dask cluster at tcp://HOST:PORT instead."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Directory of the catalog (default: out/SWEEP, the file's name without .toml).",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress, no summary: errors only.")
    ] = False,
    metric: Annotated[
        str | None, typer.Option("--metric", help="report: the metric (default: throughput).")
    ] = None,
    x: Annotated[
        str | None, typer.Option("--x", help="report: the dimension on the x axis.")
    ] = None,
    lines: Annotated[
        str | None, typer.Option("--lines", help="report: one line per label of this dimension.")
    ] = None,
) -> None:
    """Run a sweep file, or report on a sweep's catalog."""
    if args[0] == "report":
        if len(args) != 2:
            fail("expected: memvirt sweep report DIR")
        given = [n for n, v in (("--workers", workers), ("--scheduler", scheduler),
                                ("--out", out)) if v is not None]  # fmt: skip
        if given:
            fail(f"{', '.join(given)}: options of a sweep's run, not of its report")
        report_command(Path(args[1]), metric, x, lines, quiet)
        return
    if len(args) != 1:
        fail(f"expected one sweep file, got {len(args)} arguments: {' '.join(args)}")
    given = [n for n, v in (("--metric", metric), ("--x", x), ("--lines", lines)) if v is not None]
    if given:
        fail(f"{', '.join(given)}: options of memvirt sweep report DIR")
    run_command(Path(args[0]), workers, scheduler, out, quiet)


def run_command(
    path: Path, workers: int | None, scheduler: str | None, out: Path | None, quiet: bool
) -> None:
    """``memvirt sweep SWEEP.toml``: plan, run what is not done yet, record, summarise."""
    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    out_dir = out if out is not None else Path("out") / path.stem
    try:  # nothing is written until the sweep, the options and the catalog are all good
        plan = plan_sweep(load_sweep(path))
        runner = open_runner(workers, scheduler)
    except ScenarioError as err:  # SweepError among them
        fail(str(err))
    try:
        catalog = Catalog.open(out_dir, create=True)
    except ScenarioError as err:
        runner.close(cancel=True)
        fail(str(err))
    try:
        catalog.check(plan)
    except ScenarioError as err:
        catalog.close()
        runner.close(cancel=True)
        fail(str(err))

    progress: Progress | None = None
    if not quiet and errors.is_terminal:
        progress = Progress(
            TextColumn("[bold]runs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=errors,
        )
    bar = progress.add_task("runs", total=None, failed="") if progress is not None else None
    todo = done = failed = 0

    def on_start(count: int) -> None:
        nonlocal todo
        todo = count
        if progress is not None and bar is not None:
            progress.update(bar, total=count)

    def on_outcome(run: PlannedRun, outcome: Outcome) -> None:
        nonlocal done, failed
        done += 1
        failed += not outcome.ok
        if progress is not None and bar is not None:
            progress.update(bar, advance=1, failed=f"{failed} failed" if failed else "")
        elif not quiet:
            status = "ok" if outcome.ok else "failed"
            took = "" if outcome.seconds is None else f" ({outcome.seconds:.1f} s)"
            console.print(f"[{done}/{todo}] {run.describe()}: {status}{took}", markup=False)

    if not quiet:
        console.print(
            f"{path}: {len(plan.runs)} runs ({_shape(plan)}), {runner.description}; "
            f"catalog {out_dir / CATALOG}",
            markup=False,
        )
    cancel = True  # unless the sweep ends by itself: then wait for the executor to finish
    try:
        if progress is not None:
            progress.start()
        result = run_sweep(plan, catalog, runner, on_outcome, on_start=on_start)
        cancel = result.interrupted
    finally:
        if progress is not None:
            progress.stop()
        catalog.close()
        runner.close(cancel=cancel)

    for run, error in result.failed[:LISTED_FAILURES]:
        errors.print(f"memvirt: run {run.describe()} failed: {error}", markup=False)
    if len(result.failed) > LISTED_FAILURES:
        errors.print(
            f"memvirt: ... and {len(result.failed) - LISTED_FAILURES} more failed runs "
            f"(their errors are in {out_dir / CATALOG})",
            markup=False,
        )
    if result.interrupted:
        errors.print(
            f"memvirt: interrupted: {result.ran} runs recorded, {result.remaining} not done; "
            "run the same command again to resume",
            markup=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if not quiet:
        console.print(
            f"{result.planned} runs: {result.skipped} done before, {result.ok} ok, "
            f"{len(result.failed)} failed, in {result.seconds:.1f} s. "
            f"Report: memvirt sweep report {out_dir}",
            markup=False,
        )
    if result.failed:
        raise typer.Exit(EXIT_FAILED_RUNS)


def _shape(plan: SweepPlan) -> str:
    """``7 overcommit x 3 technique x 3 seeds``."""
    parts = [f"{len(d.labels)} {d.name}" for d in plan.spec.dimensions]
    seeds = len({run.seed for run in plan.runs})
    return " x ".join([*parts, f"{seeds} seed{'s' if seeds != 1 else ''}"])


def report_command(
    out_dir: Path, metric: str | None, x: str | None, lines: str | None, quiet: bool
) -> None:
    """``memvirt sweep report DIR``: tables on standard output, plots in DIR/plots."""
    try:
        with Catalog.open(out_dir) as catalog:
            report = build_report(catalog, metric, x, lines)
        written = write_report(report)
    except ScenarioError as err:
        fail(str(err))
    except OSError as err:
        fail(f"{err.filename or out_dir}: {err.strerror or err}")
    if quiet:
        return
    console = Console(highlight=False, soft_wrap=True)
    print_report(console, report)
    plots = [p for p in written if p.suffix == ".svg"]
    console.print(
        f"{len(plots)} plot{'s' if len(plots) != 1 else ''} (SVG and PNG) and the table "
        f"(CSV) written to {out_dir / 'plots'}",
        markup=False,
    )


def print_report(console: Console, report: SweepReport) -> None:
    """One table per panel: x labels down, line labels across, mean ± CI (n) in each cell."""
    c = report.counts
    console.print(
        f"{sum(c.values())} runs in the catalog: {c['ok']} ok, {c['failed']} failed, "
        f"{c['pending']} pending",
        markup=False,
    )
    for run, error in report.failed[:LISTED_FAILURES]:
        console.print(f"  failed: {escape(run)}: {escape(error)}")
    xs = report.labels[report.x] if report.x else [""]
    ls = report.labels[report.lines] if report.lines else [""]
    for panel in report.panels:
        runs = {s.n for s in panel.cells.values()}
        same = runs.pop() if len(runs) == 1 else None  # every cell has that many runs
        title = f"{report.metric}: mean ± 95% confidence interval over " + (
            f"{same} seed{'s' if same != 1 else ''}" if same else "seeds (runs)"
        )
        if panel.fixed:
            title += "\n" + ", ".join(f"{d} = {v}" for d, v in panel.fixed)
        table = Table(title=escape(title), show_header=True)
        table.add_column(escape(report.x or ""), justify="left")
        columns = [ll for ll in ls if any((xl, ll) in panel.cells for xl in xs)]
        for ll in columns:
            table.add_column(escape(ll or report.metric), justify="right")
        for xl in xs:
            if not any((xl, ll) in panel.cells for ll in columns):
                continue
            cells = []
            for ll in columns:
                s = panel.cells.get((xl, ll))
                if s is None:
                    cells.append("")
                    continue
                text = format_stats(s)
                cells.append(text if same else f"{text} ({s.n})")
            table.add_row(escape(xl), *cells)
        console.print(table)


__all__ = ["fail", "print_report", "register", "report_command", "run_command", "sweep_command"]
