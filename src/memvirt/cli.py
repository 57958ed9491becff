"""The ``memvirt`` command.

Every command validates its input at the edge: a bad file, size, policy or
geometry ends with one line on standard error that says where and what was
expected, and exit status 2 — never a traceback.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from memvirt.kernel.kernel import AdmissionError, KernelError
from memvirt.mmu.tlb import TLBConfig, TLBError, TLBLevel
from memvirt.policies import UnknownPolicyError, policy_names
from memvirt.sweep.cli import register as register_sweep
from memvirt.traces.model import TraceError
from memvirt.units import (
    GeometryError,
    PageGeometry,
    SizeError,
    format_size,
    is_power_of_two,
    parse_size,
)

if TYPE_CHECKING:
    from memvirt.config import Scenario
    from memvirt.engine.scenario import RunResult
    from memvirt.traces.analysis import TraceStats

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="memvirt: a page-by-page simulator of memory virtualization.",
)

#: Errors that are the user's input, reported in one line with exit status 2.
INPUT_ERRORS = (
    TraceError,
    KernelError,
    AdmissionError,
    UnknownPolicyError,
    SizeError,
    GeometryError,
    TLBError,
)


def fail(message: str) -> NoReturn:
    """Print ``memvirt: error: message`` on standard error and exit with status 2."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]memvirt: error:[/] {escape(message)}", markup=True
    )
    raise typer.Exit(2)


def in_scenario(scenario: Path | str, err: BaseException) -> str:
    """The message of an error met while running ``scenario``, naming the scenario when the
    message does not (a kernel's refusal, an out-of-memory condition of this machine)."""
    if isinstance(err, MemoryError):
        return (
            f"{scenario}: this machine has not enough memory to simulate it (every page is "
            "simulated in memory): make host.memory, the VMs' memory or the swap sizes smaller"
        )
    text = str(err)
    return text if text.startswith(str(scenario)) else f"{scenario}: {text}"


def parse_tlb_level(text: str, option: str) -> TLBLevel:
    """Read ``ENTRIES:WAYS`` (e.g. ``64:4``) for a TLB level."""
    try:
        entries, ways = (int(x) for x in text.split(":"))
    except ValueError:
        fail(f"{option}: expected ENTRIES:WAYS such as 64:4, got {text!r}")
    return TLBLevel(entries, ways)


def build_geometry(page_size: str, levels: int, bits: str) -> PageGeometry:
    """The radix geometry from the command-line options."""
    size = parse_size(page_size)
    if not is_power_of_two(size):
        raise GeometryError(f"--page-size must be a power of two, got {page_size!r} ({size} bytes)")
    try:
        widths = tuple(int(b) for b in bits.split(","))
    except ValueError:
        raise GeometryError(
            f"--bits-per-level: expected a number or a comma-separated list, got {bits!r}"
        ) from None
    if len(widths) == 1:
        widths = widths * levels
    elif len(widths) != levels:
        raise GeometryError(f"--bits-per-level lists {len(widths)} widths for --levels {levels}")
    return PageGeometry(bits_per_level=widths, offset_bits=size.bit_length() - 1)


PageSizeOption = Annotated[
    str, typer.Option("--page-size", help="Page size (a power of two): 4KiB, 2MiB.")
]
SkipBadOption = Annotated[
    bool,
    typer.Option("--skip-bad", help="Skip malformed lines and count them, instead of failing."),
]
DropFetchesOption = Annotated[
    bool, typer.Option("--drop-fetches", help="Leave instruction fetches out: data accesses only.")
]
FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format", help="Input format: text, npy, lackey or binary (default: recognised)."
    ),
]


@app.callback()
def cli() -> None:
    """memvirt: a page-by-page simulator of memory virtualization."""


@app.command()
def replay(
    trace: Annotated[Path, typer.Argument(help="Trace file: text (one address per line) or .npy.")],
    frames: Annotated[int, typer.Option("--frames", help="Frames for data pages.")],
    policy: Annotated[
        str, typer.Option("--policy", help=f"Replacement policy: {', '.join(policy_names())}.")
    ] = "lru",
    page_size: Annotated[str, typer.Option("--page-size", help="Base page size.")] = "4KiB",
    levels: Annotated[int, typer.Option("--levels", help="Page-table levels (2 to 5).")] = 4,
    bits_per_level: Annotated[
        str, typer.Option("--bits-per-level", help="Index bits per level: 9, or 10,10.")
    ] = "9",
    tlb_l1: Annotated[
        str, typer.Option("--tlb-l1", help="First-level TLB as ENTRIES:WAYS.")
    ] = "64:4",
    tlb_l2: Annotated[
        str, typer.Option("--tlb-l2", help="Second-level TLB as ENTRIES:WAYS, or 'none'.")
    ] = "1536:12",
    no_tlb: Annotated[bool, typer.Option("--no-tlb", help="No TLB: every access walks.")] = False,
    no_page_tables: Annotated[
        bool,
        typer.Option(
            "--no-page-tables",
            help="Replacement alone: a flat page-to-frame map, no walks, no TLB.",
        ),
    ] = False,
    swap_slots: Annotated[
        int | None, typer.Option("--swap-slots", help="Swap size in pages (default: enough).")
    ] = None,
    swap_device: Annotated[str, typer.Option("--swap-device", help="ssd or hdd.")] = "ssd",
    page_numbers: Annotated[
        bool, typer.Option("--page-numbers", help="Trace lines are page numbers, not addresses.")
    ] = False,
    no_virtual_memory: Annotated[
        bool,
        typer.Option(
            "--no-virtual-memory",
            help="Load the process whole into contiguous memory, as before virtual memory.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random policy.")] = 0,
    skip_bad: SkipBadOption = False,
    drop_fetches: DropFetchesOption = False,
    fmt: FormatOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Replay a trace as one process: TLB, page walks, demand paging, replacement.

    The trace may be text, .npy, valgrind lackey or memvirt's binary format,
    gzip- or zstd-compressed.
    """
    from memvirt.replay import ReplayOptions, warm_up
    from memvirt.replay import replay as run_replay
    from memvirt.traces.readers import open_trace

    try:
        if frames <= 0:
            raise KernelError(f"--frames must be at least 1, got {frames}")
        if swap_slots is not None and swap_slots < 0:
            raise KernelError(f"--swap-slots must be 0 or more, got {swap_slots}")
        geometry = build_geometry(page_size, levels, bits_per_level)
        tlb = None
        if not (no_tlb or no_page_tables):
            lv = [parse_tlb_level(tlb_l1, "--tlb-l1")]
            if tlb_l2.lower() != "none":
                lv.append(parse_tlb_level(tlb_l2, "--tlb-l2"))
            tlb = TLBConfig(tuple(lv))
        options = ReplayOptions(
            frames=frames,
            policy=policy,
            geometry=geometry,
            tlb=tlb,
            swap_slots=swap_slots,
            swap_kind=swap_device,
            seed=seed,
            virtual_memory=not no_virtual_memory,
            page_tables=not no_page_tables,
        )
        with open_trace(
            trace,
            format=fmt,
            page_numbers=page_numbers,
            skip_bad=skip_bad,
            drop_fetches=drop_fetches,
            page_size=geometry.page_size,
        ) as stream:
            data = stream.read_all()
            bad_lines = stream.bad_lines
        warm_up()
        result = run_replay(data, options)
    except ValueError as err:  # the INPUT_ERRORS, and e.g. an unknown swap device
        fail(str(err))

    out = result.to_dict()
    out["trace"] = str(trace)
    out["bad_lines"] = bad_lines
    if as_json:
        sys.stdout.write(json.dumps(out, indent=2, sort_keys=True) + "\n")
        return
    console = Console()
    table = Table(title=f"{policy}, {frames:,} frames", caption=str(trace), show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("accesses", out["accesses"]),
        ("reads / writes", f"{out['reads']:,} / {out['writes']:,}"),
        ("distinct pages", out["distinct_pages"]),
        ("page faults", out["faults"]),
        ("  minor (first touch)", out["minor_faults"]),
        ("  major (from swap)", out["major_faults"]),
        ("evictions", out["evictions"]),
        ("write-backs to swap", out["writebacks"]),
        ("TLB hits / misses", f"{out['tlb_hits']:,} / {out['tlb_misses']:,}"),
        ("page walks", out["walks"]),
        ("walk memory references", out["walk_memory_references"]),
        ("page-table pages", out["table_pages"]),
        ("fault rate", f"{out['faults'] / max(1, out['accesses']):.4f}"),
        ("simulation time", f"{out['seconds']:.3f} s"),
    ]
    for name, value in rows:
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    for reason in result.killed:
        console.print(f"[yellow]killed:[/] {escape(reason)}")
    if bad_lines:
        console.print(f"[yellow]skipped {bad_lines:,} malformed lines[/]")


# --------------------------------------------------------------------------- memvirt trace

trace_app = typer.Typer(
    no_args_is_help=True,
    help="Record memory traces of real programs, inspect them, and convert between formats.",
)
app.add_typer(trace_app, name="trace")

#: Suffixes that ``--plot`` writes, and the matplotlib format of each.
PLOT_FORMATS = {".svg": "svg", ".png": "png"}
#: How many points of the miss-ratio curve the table shows.
TABLE_CURVE_POINTS = 8


def page_size_bytes(text: str) -> int:
    """The ``--page-size`` option in bytes: a power of two."""
    size = parse_size(text)
    if not is_power_of_two(size):
        raise GeometryError(f"--page-size must be a power of two, got {text!r} ({size} bytes)")
    return size


@trace_app.command("info")
def trace_info(
    trace: Annotated[Path, typer.Argument(help="Trace file: lackey, text, .mvt or .npy.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write the miss-ratio curve to this .svg or .png file."),
    ] = None,
    page_size: PageSizeOption = "4KiB",
    skip_bad: SkipBadOption = False,
    drop_fetches: DropFetchesOption = False,
    fmt: FormatOption = None,
) -> None:
    """Describe a trace: its reads, writes and fetches, footprint and LRU miss-ratio curve."""
    from memvirt.traces.analysis import trace_stats
    from memvirt.traces.readers import open_trace

    try:
        size = page_size_bytes(page_size)
        if plot is not None and plot.suffix.lower() not in PLOT_FORMATS:
            raise TraceError(
                f"--plot {plot}: expected a file name ending in .svg or .png, got {plot.suffix!r}"
            )
        with open_trace(
            trace, format=fmt, skip_bad=skip_bad, drop_fetches=drop_fetches, page_size=size
        ) as stream:
            stats = trace_stats(stream, page_size=size)
            if stats.accesses == 0:
                raise TraceError(f"{stream.source}: the trace has no accesses")
            bad_lines, trace_format = int(stream.bad_lines), str(stream.format)
        if plot is not None:
            plot_miss_ratio_curve(stats, plot, title=f"LRU miss-ratio curve of {trace.name}")
    except ValueError as err:  # the INPUT_ERRORS are all ValueErrors
        fail(str(err))
    except OSError as err:
        fail(f"{err.filename or trace}: {err.strerror or err}")

    out: dict[str, Any] = stats.to_dict()
    out.update({"bad_lines": bad_lines, "format": trace_format, "trace": str(trace)})
    if as_json:
        sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
        return
    console = Console()
    table = Table(title=escape(f"{trace} ({trace_format})"), show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("accesses", f"{stats.accesses:,}"),
        ("  reads", f"{stats.reads:,}"),
        ("  writes", f"{stats.writes:,}"),
        ("  instruction fetches", f"{stats.instruction_fetches:,}"),
        ("distinct pages", f"{stats.distinct_pages:,}"),
        ("footprint", f"{format_size(stats.footprint_bytes)} ({stats.page_size:,}-byte pages)"),
    ]
    if bad_lines:
        rows.append(("malformed lines skipped", f"{bad_lines:,}"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if stats.accesses:
        curve = Table(
            title="LRU miss-ratio curve", caption="misses include first touches", show_header=True
        )
        for column in ("frames", "memory", "misses", "miss ratio"):
            curve.add_column(column, justify="right")
        for frames, misses in curve_points(stats.miss_ratio_curve, TABLE_CURVE_POINTS):
            curve.add_row(
                f"{frames:,}",
                format_size(frames * stats.page_size),
                f"{misses:,}",
                f"{misses / stats.accesses:.4f}",
            )
        console.print(curve)
    if plot is not None:
        console.print(f"miss-ratio curve written to {plot}", markup=False)


def curve_points(curve: list[list[int]], count: int) -> list[list[int]]:
    """About ``count`` points of a miss-ratio curve, log-spaced in frames, the last included."""
    if len(curve) <= count:
        return curve
    last = curve[-1][0]
    picked: list[list[int]] = []
    for k in range(count):
        target = last ** (k / (count - 1))
        point = min(curve, key=lambda p: abs(p[0] - target))
        if point not in picked:
            picked.append(point)
    return picked


def plot_miss_ratio_curve(stats: TraceStats, path: Path, *, title: str) -> None:
    """Draw the miss ratio against frames (log scale) into ``path``, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = PLOT_FORMATS[path.suffix.lower()]
    frames = [p[0] for p in stats.miss_ratio_curve]
    ratios = [p[1] / max(1, stats.accesses) for p in stats.miss_ratio_curve]
    # a fixed hash salt and no date keep the SVG the same from run to run
    with matplotlib.rc_context({"svg.hashsalt": "memvirt", "svg.fonttype": "path"}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        try:
            ax.step(frames, ratios, where="post", color="tab:blue")
            ax.set_xscale("log")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel(f"memory (frames of {format_size(stats.page_size)})")
            ax.set_ylabel("miss ratio (page faults / accesses)")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                metadata = {"Date": None} if kind == "svg" else {"Software": None}
                fig.savefig(tmp, format=kind, metadata=metadata, dpi=100)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        finally:
            plt.close(fig)


@trace_app.command("convert")
def trace_convert(
    source: Annotated[Path, typer.Argument(metavar="IN", help="Trace file to read.")],
    target: Annotated[
        Path,
        typer.Argument(
            metavar="OUT", help="File to write; its suffix picks the format (.mvt, .txt, .npy)."
        ),
    ],
    page_size: PageSizeOption = "4KiB",
    skip_bad: SkipBadOption = False,
    drop_fetches: DropFetchesOption = False,
    fmt: FormatOption = None,
) -> None:
    """Convert a trace to another format, chunk by chunk."""
    from memvirt.traces.readers import open_trace
    from memvirt.traces.writers import write_trace

    try:
        size = page_size_bytes(page_size)
        with open_trace(
            source, format=fmt, skip_bad=skip_bad, drop_fetches=drop_fetches, page_size=size
        ) as stream:
            written = write_trace(target, stream, page_size=size)
            bad_lines = int(stream.bad_lines)
    except ValueError as err:  # the INPUT_ERRORS are all ValueErrors
        fail(str(err))
    except OSError as err:
        fail(f"{err.filename or target}: {err.strerror or err}")
    note = f" ({bad_lines:,} malformed lines skipped)" if bad_lines else ""
    Console(highlight=False, soft_wrap=True).print(
        f"wrote {written:,} accesses to {target}{note}", markup=False
    )


@trace_app.command(
    "record",
    context_settings={"allow_interspersed_args": False},
)
def trace_record(
    program: Annotated[
        list[str],
        typer.Argument(
            metavar="-- PROGRAM ARGS", help="The program to trace and its arguments, after --."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="Trace file to write; its suffix picks the format (.mvt)."
        ),
    ],
    max_accesses: Annotated[
        int | None,
        typer.Option("--max-accesses", help="Stop the program after this many accesses."),
    ] = None,
    drop_fetches: DropFetchesOption = False,
    page_size: PageSizeOption = "4KiB",
) -> None:
    """Run a program under valgrind's lackey tool and record its memory accesses.

    Example: memvirt trace record -o ls.mvt --max-accesses 1000000 -- ls -l /

    Lackey's log reaches memvirt through a named pipe and is converted as the
    program runs, so no text log is kept on disk; the program's own output
    goes to the terminal as usual.
    """
    from memvirt.traces.recorder import LackeyRecording
    from memvirt.traces.writers import write_trace

    valgrind = shutil.which("valgrind")
    if valgrind is None:
        fail(
            "valgrind is not installed (it is not on PATH): install it with "
            "'apt-get install valgrind' or your distribution's valgrind package"
        )
    try:
        size = page_size_bytes(page_size)
        if max_accesses is not None and max_accesses < 1:
            raise TraceError(f"--max-accesses must be at least 1, got {max_accesses}")
        executable = shutil.which(program[0])
        if executable is None:
            raise TraceError(
                f"cannot start {program[0]!r}: no such program "
                f"({'not an executable file' if os.sep in program[0] else 'not found on PATH'})"
            )
        with LackeyRecording(valgrind, program, page_size=size, drop_fetches=drop_fetches) as rec:
            written = write_trace(output, rec.accesses(max_accesses), page_size=size)
            status = rec.stop()
    except ValueError as err:  # the INPUT_ERRORS are all ValueErrors
        fail(str(err))
    except OSError as err:
        fail(f"{err.filename or output}: {err.strerror or err}")
    console = Console(highlight=False, soft_wrap=True)
    if max_accesses is not None and written >= max_accesses:
        console.print(f"stopped {program[0]} after {written:,} accesses", markup=False)
    elif status:
        console.print(f"{program[0]} exited with status {status}", markup=False)
    console.print(f"wrote {written:,} accesses to {output}", markup=False)


# ----------------------------------------------------------------- memvirt run, compare, demo

#: Seconds of wall time a run takes before its progress bar appears: short runs show none.
PROGRESS_DELAY_S = 0.5


class RunProgress:
    """A progress bar over a run's simulated seconds or accesses, whichever the scenario
    ends it by (the nearer to its end, when it gives both).

    Pass it as the ``progress`` callback of :func:`memvirt.engine.scenario.run`. It
    draws nothing unless ``enabled`` (the commands enable it only when standard output
    is a terminal and no JSON is asked for), and only once the run has taken
    ``delay`` seconds of wall time; it is transient: the bar is erased at the end.
    """

    def __init__(
        self,
        label: str,
        seconds: float | None,
        accesses: int | None,
        *,
        enabled: bool,
        console: Console | None = None,
        delay: float = PROGRESS_DELAY_S,
    ) -> None:
        self.label = label
        self.seconds = seconds
        self.accesses = accesses
        self.enabled = enabled
        self.console = console
        self.delay = delay
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._started = time.monotonic()

    def __enter__(self) -> RunProgress:
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def fraction(self, now_ns: float, accesses: int) -> tuple[float, str]:
        """How far the run is toward its end (0 to 1), and the same in words."""
        parts: list[tuple[float, str]] = []
        if self.seconds is not None:
            reached = min(now_ns / 1e9, self.seconds)
            parts.append((reached / self.seconds, f"{reached:.2f} / {self.seconds:g} simulated s"))
        if self.accesses is not None:
            done = min(accesses, self.accesses)
            parts.append((done / self.accesses, f"{done:,} / {self.accesses:,} accesses"))
        return max(parts) if parts else (0.0, "")

    def __call__(self, now_ns: float, accesses: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self._started < self.delay:
                return
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=self.console or Console(),
                transient=True,
            )
            self._task = self._bar.add_task(escape(self.label), total=1.0, detail="")
            self._bar.start()
        assert self._task is not None
        done, detail = self.fraction(now_ns, accesses)
        self._bar.update(self._task, completed=done, detail=detail)


def _show_progress(*, quiet: bool = False, as_json: bool = False) -> bool:
    """Progress bars go to a terminal only, and never with --quiet or --json."""
    return sys.stdout.isatty() and not quiet and not as_json


def _run(scenario: Scenario, label: str, show: bool) -> RunResult:
    """Run ``scenario`` with a progress bar when ``show``."""
    from memvirt.engine.scenario import run as run_scenario

    with RunProgress(label, scenario.run.seconds, scenario.run.accesses, enabled=show) as bar:
        return run_scenario(scenario, progress=bar)


def _add_alone_throughputs(scenario: Scenario, summary: dict[str, Any], show: bool) -> None:
    """Add ``throughput_alone`` to each VM of ``summary``: its throughput when it runs
    alone on a host with room for all its memory (:mod:`memvirt.engine.baseline`)."""
    from memvirt.engine.baseline import run_alone

    for vm in summary.get("vms", []):
        config = scenario.vm(vm["name"])
        if not config.processes:
            vm["throughput_alone"] = 0.0
            continue
        label = f"{vm['name']} alone"
        with RunProgress(label, scenario.run.seconds, scenario.run.accesses, enabled=show) as bar:
            vm["throughput_alone"] = float(
                run_alone(scenario, vm["name"], progress=bar)["throughput"]
            )


def write_outputs(result: RunResult, out: Path, *, title: str, report: bool = True) -> list[Path]:
    """Write a run into ``out``: summary.json, timeseries.parquet (with VMs), the figures
    and, when ``report``, report.html. Returns the files written."""
    written = [result.write(out)]
    if result.timeseries is not None:
        written.append(out / "timeseries.parquet")
    from memvirt.report import write_figures, write_report  # matplotlib and jinja2: lazily

    written += write_figures(result.summary, result.timeseries, out)
    if report:
        written.append(write_report(result.summary, result.timeseries, out, title=title))
    return written


@app.command("run")
def run_command(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (TOML), see docs/scenarios.md.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Directory for summary.json, timeseries.parquet (with VMs), the figures "
            "and report.html.",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting by its dotted path: host.memory=8GiB."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing (errors still go to stderr).")
    ] = False,
    alone: Annotated[
        bool | None,
        typer.Option(
            "--alone/--no-alone",
            help="With VMs, run each VM again alone, on a host with room for all its memory, "
            "and add its throughput there to the summary as the VM's 'throughput_alone'. "
            "Default: on for the tables and for --out, off with --json.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a scenario in simulated time and summarise it.

    Natively it prints a table per process. With VMs it prints the host (physical
    and free memory, minFree, the free-memory states, the pages reclaimed by each
    technique, the overcommitment) and, per VM, its memory, its faults and its
    throughput against its throughput alone ('throughput_alone' in summary.json:
    the same VM with the same accesses, alone on a host with room for all its
    memory). On a terminal a progress bar shows how far the run is.
    """
    from memvirt.config import ScenarioError, load_scenario

    show = _show_progress(quiet=quiet, as_json=as_json)
    with_alone = alone if alone is not None else not as_json
    if quiet and out is None:
        with_alone = False  # nothing is shown or written: no need to measure
    try:
        loaded = load_scenario(scenario, settings or ())
        result = _run(loaded, str(scenario), show)
        if with_alone and not loaded.is_native:
            _add_alone_throughputs(loaded, result.summary, show)
        written = [] if out is None else write_outputs(result, out, title=scenario.stem)
    except ScenarioError as err:
        fail(str(err))
    except (*INPUT_ERRORS, MemoryError) as err:
        fail(in_scenario(scenario, err))
    except OSError as err:
        fail(f"{err.filename or out}: {err.strerror or err}")
    summary = result.summary
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return
    if quiet:
        return
    console = Console()
    if "vms" in summary:
        _print_vms(console, scenario, summary)
    else:
        _print_processes(console, scenario, summary)
    if out is not None:
        console.print(f"summary written to {escape(str(out / 'summary.json'))}")
        console.print(f"also written: {escape(_files_written(written[1:]))}", highlight=False)


def _files_written(paths: Sequence[Path]) -> str:
    """The files written besides summary.json, in words: figures counted, not listed."""
    figures = {p.stem for p in paths if p.suffix in (".svg", ".png")}
    names = [p.name for p in paths if p.suffix not in (".svg", ".png")]
    if figures:
        names.append(f"{len(figures)} figures ({', '.join(sorted(figures))}; SVG and PNG)")
    return ", ".join(names) if names else "nothing else"


def _print_processes(console: Console, scenario: Path, summary: dict[str, Any]) -> None:
    """The table of a native run: one row per process."""
    host = summary["host"]
    console.print(
        f"[bold]{escape(str(scenario))}[/]: {summary['simulated_seconds']:.3f} simulated s, "
        f"{host['physical_pages']:,} frames of {host['page_size']:,} B, "
        f"virtual/physical {summary['virtual_memory_ratio']:.2f}"
    )
    table = Table(show_header=True)
    for column in ("process", "accesses", "faults", "major", "writebacks", "TLB misses",
                   "throughput /s", "ended"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("process", "ended") else "right")
    for p in summary["processes"]:
        ended = "killed" if p["killed"] else ("finished" if p["finished"] else "running")
        table.add_row(
            p["name"], f"{p['accesses']:,}", f"{p['faults']:,}", f"{p['major_faults']:,}",
            f"{p['writebacks']:,}", f"{p['tlb_misses']:,}", f"{p['throughput']:,.0f}", ended,
        )  # fmt: skip
    console.print(table)
    for p in summary["processes"]:
        if p["killed"]:
            console.print(f"[yellow]{escape(p['name'])}:[/] {escape(p['killed'])}")


def _pages(count: int, page_size: int) -> str:
    """A number of pages as a size (``0`` for none)."""
    return format_size(count * page_size) if count else "0"


def _print_vms(console: Console, scenario: Path, summary: dict[str, Any]) -> None:
    """The tables of a run with VMs: the host, then each VM's memory, faults and speed."""
    host = summary["host"]
    ps = host["page_size"]
    console.print(
        f"[bold]{escape(str(scenario))}[/]: {summary['simulated_seconds']:.3f} simulated s, "
        f"{summary['mode']} paging, {len(summary['vms'])} VMs"
    )
    table = Table(title="host", show_header=True, title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("physical memory", f"{format_size(host['physical_pages'] * ps)} "
                  f"({host['physical_pages']:,} pages)")  # fmt: skip
    table.add_row("free at the end", f"{format_size(host['free_pages'] * ps)} "
                  f"({host['free_pages']:,} pages)")  # fmt: skip
    if "min_free_pages" in host:
        table.add_row("minFree", f"{format_size(host['min_free_pages'] * ps)} "
                      f"({host['min_free_pages']:,} pages)")  # fmt: skip
        table.add_row("state at the end", str(host["state"]))
        for state, seconds in host["time_in_state"].items():
            table.add_row(f"time in {state}", f"{seconds:.2f} s")
        for technique, pages in host["reclaimed_pages"].items():
            table.add_row(f"reclaimed by {technique}", f"{pages:,} pages")
    table.add_row("overcommitment (real / physical)", f"{summary['overcommit_ratio']:.2f}x")
    console.print(table)

    vms = summary["vms"]
    memory = Table(title="VM memory (most at any control step)", title_justify="left")
    for column in ("VM", "real memory", "resident", "balloon", "shared", "compressed",
                   "host-swapped"):  # fmt: skip
        memory.add_column(column, justify="left" if column == "VM" else "right")
    for vm in vms:
        memory.add_row(
            vm["name"], _pages(vm["real_pages"], ps), _pages(vm["host_resident_pages"], ps),
            _pages(vm.get("balloon_pages_max", 0), ps), _pages(vm.get("shared_pages_max", 0), ps),
            _pages(vm.get("compressed_pages_max", 0), ps),
            _pages(vm.get("host_swapped_pages_max", 0), ps),
        )  # fmt: skip
    console.print(memory)
    console.print("  resident: the VM's real pages in host frames at the end", highlight=False)

    faults = Table(title="VM faults", title_justify="left")
    for column in ("VM", "guest faults", "guest swap-ins", "host faults", "host swap-ins",
                   "double paging"):  # fmt: skip
        faults.add_column(column, justify="left" if column == "VM" else "right")
    for vm in vms:
        faults.add_row(
            vm["name"], f"{vm['guest_faults']:,}", f"{vm['guest_swap_ins']:,}",
            f"{vm['host_faults']:,}", f"{vm['host_swap_ins']:,}",
            f"{vm.get('double_paging_reads', 0):,}",
        )  # fmt: skip
    console.print(faults)

    translation = Table(title="VM address translation", title_justify="left")
    for column in ("VM", "TLB misses", "walk references", "VM exits"):
        translation.add_column(column, justify="left" if column == "VM" else "right")
    for vm in vms:
        translation.add_row(vm["name"], f"{vm['tlb_misses']:,}",
                            f"{vm['walk_memory_references']:,}", f"{vm['vm_exits']:,}")  # fmt: skip
    console.print(translation)

    alone = all("throughput_alone" in vm for vm in vms)
    speed = Table(title="VM throughput (accesses per simulated second)", title_justify="left")
    columns = ["VM", "accesses", "throughput"]
    if alone:
        columns += ["throughput alone", "of alone"]
    for column in columns:
        speed.add_column(column, justify="left" if column == "VM" else "right", no_wrap=True)
    for vm in vms:
        row = [vm["name"], f"{vm['accesses']:,}", f"{vm['throughput']:,.0f}"]
        if alone:
            base = vm["throughput_alone"]
            row += [f"{base:,.0f}", f"{vm['throughput'] / base:.0%}" if base else "—"]
        speed.add_row(*row)
    console.print(speed)
    if alone:
        console.print(
            "  throughput alone: the same VM, alone with room for all its memory",
            highlight=False,
        )
    for vm in vms:
        for p in vm["processes"]:
            if p["killed"]:
                console.print(f"[yellow]{escape(vm['name'])}/{escape(p['name'])}:[/] "
                              f"{escape(p['killed'])}")  # fmt: skip


# ------------------------------------------------------------------- comparing runs

#: Names of the figures :func:`comparison_rows` derives rather than reads.
DERIVED_METRICS = ("combined_throughput", "major_faults", "host_faults")


def _derived(summary: dict[str, Any], name: str) -> Any:
    """A figure computed from a summary: None where it does not apply."""
    vms = summary.get("vms")
    if vms is not None:
        if name == "combined_throughput":
            return sum(vm["throughput"] for vm in vms)
        if name == "major_faults":
            return sum(vm["guest_swap_ins"] + vm["host_swap_ins"] for vm in vms)
        if name == "host_faults":
            return sum(vm["host_faults"] for vm in vms)
        return None
    procs = summary.get("processes", [])
    if name == "combined_throughput":
        return sum(p["throughput"] for p in procs)
    if name == "major_faults":
        return sum(p["major_faults"] for p in procs)
    return None


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a summary by dotted path; list items (VMs, processes) by their name."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list):
        out = {}
        for k, item in enumerate(value):
            name = item.get("name", k) if isinstance(item, dict) else k
            out.update(flatten(item, f"{prefix}{name}."))
        return out
    return {prefix[:-1]: value}


def lookup(summary: dict[str, Any], metric: str) -> Any:
    """The value at ``metric`` in ``summary``, a dotted path (``host.time_in_state.soft``,
    ``vms.web.throughput``) or a derived figure; KeyError when there is none."""
    if metric in DERIVED_METRICS:
        value = _derived(summary, metric)
        if value is None:
            raise KeyError(metric)
        return value
    node: Any = summary
    for part in metric.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list):
            named = [x for x in node if isinstance(x, dict) and x.get("name") == part]
            if named:
                node = named[0]
            elif part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise KeyError(metric)
        else:
            raise KeyError(metric)
    if isinstance(node, dict | list):
        raise KeyError(metric)  # a table, not a figure
    return node


def comparison_rows(summaries: Sequence[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The default rows comparing runs: one value per summary (None where it has none).

    With VMs: combined throughput, major faults (guest swap-ins + host swap-ins),
    host faults, pages reclaimed by technique, seconds in each free-memory state and
    each VM's throughput; natively: combined throughput, major faults and each
    process's throughput and faults.
    """
    rows: list[tuple[str, list[Any]]] = []

    def row(label: str, metric: str) -> None:
        values = [lookup(s, metric) if _has(s, metric) else None for s in summaries]
        if any(v is not None for v in values):
            rows.append((label, values))

    row("combined throughput /s", "combined_throughput")
    row("major faults", "major_faults")
    row("host faults", "host_faults")
    for technique in ("ballooning", "sharing", "compression", "swapping"):
        row(f"reclaimed: {technique}", f"host.reclaimed_pages.{technique}")
    for state in ("high", "clear", "soft", "hard", "low"):
        row(f"time in {state} (s)", f"host.time_in_state.{state}")
    vm_names = list(dict.fromkeys(vm["name"] for s in summaries for vm in s.get("vms", [])))
    for name in vm_names:
        row(f"vm {name} throughput", f"vms.{name}.throughput")
    procs = list(dict.fromkeys(p["name"] for s in summaries for p in s.get("processes", [])))
    for name in procs:
        row(f"process {name} throughput", f"processes.{name}.throughput")
        row(f"process {name} faults", f"processes.{name}.faults")
    return rows


def metric_rows(
    summaries: Sequence[dict[str, Any]], metrics: Sequence[str]
) -> list[tuple[str, list[Any]]]:
    """One row per metric (dotted path or derived figure); ValueError naming the known
    metrics when one is in none of the summaries."""
    rows: list[tuple[str, list[Any]]] = []
    for metric in metrics:
        values: list[Any] = []
        for s in summaries:
            try:
                values.append(lookup(s, metric))
            except KeyError:
                values.append(None)
        if all(v is None for v in values) and not any(_has(s, metric) for s in summaries):
            known = list(DERIVED_METRICS)
            for s in summaries:
                known += [k for k in flatten(s) if k not in known]
            close = difflib.get_close_matches(metric, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(
                f"--metric {metric}: no such figure in the summaries{hint}; the known metrics "
                f"are {', '.join(known)}"
            )
        rows.append((metric, values))
    return rows


def _has(summary: dict[str, Any], metric: str) -> bool:
    try:
        lookup(summary, metric)
    except KeyError:
        return False
    return True


def _cell(value: Any) -> str:
    """A value as a table cell: thousands separators, two decimals below 1,000."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def comparison_table(labels: Sequence[str], rows: Sequence[tuple[str, list[Any]]]) -> Table:
    """A table with one row per figure and one column per run."""
    names = {row for row, _ in rows}
    notes = []
    if "major faults" in names:
        notes.append("major faults: swap-ins (with VMs, the guests' and the host's)")
    if any(name.startswith("reclaimed: ") for name in names):
        notes.append("reclaimed: pages taken back by each technique")
    table = Table(show_header=True, caption="; ".join(notes) or None, caption_justify="left")
    table.add_column("")
    for label in labels:
        table.add_column(escape(label), justify="right")
    for name, values in rows:
        table.add_row(escape(name), *(_cell(v) for v in values))
    return table


def column_labels(paths: Sequence[Path]) -> list[str]:
    """Short column headers for runs: their file or directory names when those differ,
    else the paths as given."""
    names = [p.name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


class SummaryError(ValueError):
    """A run to compare that cannot be read: missing, or not a memvirt summary."""


def read_summary(path: Path) -> dict[str, Any]:
    """The summary.json of a finished run: ``path`` is the file or its directory."""
    file = path / "summary.json" if path.is_dir() else path
    if not file.exists():
        raise SummaryError(
            f"{path}: no summary.json in this directory: expected a directory written by "
            "'memvirt run --out' or a scenario file"
        )
    try:
        summary = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise SummaryError(f"{file}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}") from None
    if not isinstance(summary, dict) or "schema_version" not in summary:
        raise SummaryError(f"{file}: expected a memvirt summary (an object with schema_version)")
    return summary


@app.command("compare")
def compare_command(
    runs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN...",
            help="Scenario files (run now) or finished output directories (their summary.json).",
        ),
    ],
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            help="A row to show, by dotted path into the summary: host.time_in_state.soft, "
            "vms.web.throughput (VMs and processes by name); or combined_throughput, "
            "major_faults, host_faults. Repeat for more rows.",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting of every scenario given: KEY=VALUE."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Compare runs side by side: one column per scenario or output directory.

    By default the rows are the combined throughput, major faults (guest swap-ins
    + host swap-ins), host faults, pages reclaimed by each technique, seconds in
    each free-memory state and each VM's throughput (natively: each process's
    throughput and faults). --json prints {"columns": [...], "rows": [{"metric",
    "values"}]}.
    """
    from memvirt.config import ScenarioError, load_scenario

    show = _show_progress(as_json=as_json)
    summaries: list[dict[str, Any]] = []
    try:
        for path in runs:
            if not path.exists():
                raise SummaryError(
                    f"{path}: no such file or directory: expected a scenario file or a "
                    "directory written by 'memvirt run --out'"
                )
            if path.is_dir() or path.suffix == ".json":
                summaries.append(read_summary(path))
            else:
                summaries.append(_run(load_scenario(path, settings or ()), str(path), show).summary)
        rows = metric_rows(summaries, metrics) if metrics else comparison_rows(summaries)
    except ScenarioError as err:
        fail(str(err))
    except INPUT_ERRORS as err:
        fail(str(err))
    except OSError as err:
        fail(f"{err.filename}: {err.strerror or err}")
    except ValueError as err:  # an unknown metric, a summary that cannot be read
        fail(str(err))
    if as_json:
        labels = [str(p) for p in runs]
        out = {"columns": labels, "rows": [{"metric": m, "values": v} for m, v in rows]}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    Console().print(comparison_table(column_labels(runs), rows))


# ---------------------------------------------------------------------------- memvirt demo

#: The demo's two runs: the label, the output subdirectory and the overrides.
DEMO_RUNS = (
    ("with balloons", "with-balloons", ()),
    ("swapping only", "swapping-only", ("hypervisor.balloon.enabled=false",)),
)


def demo_conclusion(balloons: dict[str, Any], swapping: dict[str, Any]) -> str:
    """One paragraph, in plain words, on what the two demo runs show, from their numbers."""
    t1, t2 = _derived(balloons, "combined_throughput"), _derived(swapping, "combined_throughput")
    m1, m2 = _derived(balloons, "major_faults"), _derived(swapping, "major_faults")
    r1, r2 = balloons["host"]["reclaimed_pages"], swapping["host"]["reclaimed_pages"]
    n = len(balloons["vms"])
    if t1 > t2:
        verdict = (
            f"ballooning was {t1 / t2 - 1:.0%} faster" if t2 else "only ballooning got work done"
        )
    elif t2 > t1:
        verdict = (
            f"swapping alone was {t2 / t1 - 1:.0%} faster" if t1 else "only swapping got work done"
        )
    else:
        verdict = "both were equally fast"
    faults = "fewer" if m1 < m2 else ("more" if m1 > m2 else "as many")
    text = (
        f"With balloons the {n} VMs together made {t1:,.0f} accesses per simulated second; "
        f"with hypervisor swapping only, {t2:,.0f}: {verdict}. With balloons they took "
        f"{m1:,} major faults (pages read back from a swap device), {faults} than the "
        f"{m2:,} of swapping only. The balloons took back {r1['ballooning']:,} pages by "
        f"asking the guests for memory, and the host swapped {r1['swapping']:,} more; "
        f"without balloons the host swapped {r2['swapping']:,} pages itself."
    )
    if t1 > t2 and m1 < m2:
        text += (
            " The guests know which of their pages are idle and give those up; the "
            "hypervisor does not know, so the pages it swaps include hot ones, which come "
            "back by major faults from swap."
        )
    return text


@app.command("demo")
def demo_command(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the two runs and report.html.")
    ] = Path("out/demo"),
) -> None:
    """Ballooning against hypervisor swapping: run the demo scenario both ways and compare.

    Three VMs share a host overcommitted 1.5 times. The scenario (memvirt's packaged
    demo.toml) runs once with balloons and once with hypervisor swapping only; the
    command prints the two side by side with a conclusion, and writes
    OUT/with-balloons/ and OUT/swapping-only/ (summary.json, timeseries.parquet,
    figures) and OUT/report.html.
    """
    from importlib.resources import as_file

    from memvirt.config import ScenarioError, load_scenario
    from memvirt.scenarios import scenario_path

    console = Console(highlight=False)
    show = _show_progress()
    console.print(
        "[bold]memvirt demo[/]: three VMs on a host overcommitted 1.5 times, run once with "
        "balloons and once with hypervisor swapping only."
    )
    results: list[tuple[str, RunResult]] = []
    try:
        with as_file(scenario_path()) as path:
            base = load_scenario(path)
            for label, subdir, overrides in DEMO_RUNS:
                scenario = base.with_overrides(overrides) if overrides else base
                result = _run(scenario, label, show)
                write_outputs(result, out / subdir, title=f"memvirt demo: {label}", report=False)
                results.append((label, result))
        from memvirt.report import write_report

        (_, first), _ = results
        report = write_report(
            first.summary, first.timeseries, out,
            title="memvirt demo: ballooning against hypervisor swapping",
            comparison=[(label, r.summary) for label, r in results],
        )  # fmt: skip
    except ScenarioError as err:
        fail(str(err))
    except INPUT_ERRORS as err:
        fail(str(err))
    except OSError as err:
        fail(f"{err.filename or out}: {err.strerror or err}")
    summaries = [r.summary for _, r in results]
    console.print(comparison_table([label for label, _ in results], comparison_rows(summaries)))
    console.print(demo_conclusion(*summaries))
    written = ", ".join(str(out / subdir) for _, subdir, _ in DEMO_RUNS)
    console.print(f"written: {escape(written)}, {escape(str(report))}")


@app.command("explain")
def explain_command(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (TOML).")],
    vm: Annotated[str | None, typer.Option("--vm", help="The VM (default: the first).")] = None,
    process: Annotated[
        str | None, typer.Option("--process", help="Process name or pid (default: the first).")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Virtual address, hex or decimal (default: one touched)."),
    ] = None,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: KEY=VALUE.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run a scenario, then show one translation step by step: every level of the walk."""
    from memvirt.config import ScenarioError, load_scenario
    from memvirt.engine.explain import explain

    try:
        loaded = load_scenario(scenario, settings or ())
        va = None if address is None else _parse_address(address)
        out = explain(loaded, vm=vm, process=process, address=va)
    except ScenarioError as err:
        fail(str(err))
    except (*INPUT_ERRORS, MemoryError) as err:
        fail(in_scenario(scenario, err))
    if as_json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    console = Console(highlight=False)
    two_level = out["mode"] != "native"
    where = f"VM {out['vm']}, " if two_level else ""
    console.print(
        f"[bold]{escape(where + out['process'])}[/]: virtual address "
        f"{out['virtual_address']:#x} ({out['mode']} paging, {out['guest_levels']}-level "
        + (f"guest and {out['host_levels']}-level host tables)" if two_level else "table)")
    )
    table = Table(show_header=True)
    columns = ["level", "table frame", "index", "entry address", "entry"]
    if two_level:
        columns = ["level", "table (real page)", "index", "entry: real address",
                   "physical address", "host refs", "entry"]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "entry" else "right")
    for step in out["steps"]:
        if two_level:
            pa = step["entry_physical_address"]
            table.add_row(
                str(step["level"]), str(step["table_real_frame"]), str(step["index"]),
                f"{step['entry_real_address']:#x}", "swapped" if pa is None else f"{pa:#x}",
                str(len(step["host_steps"])), escape(step["meaning"]),
            )  # fmt: skip
        else:
            table.add_row(
                str(step["level"]), str(step["table_frame"]), str(step["index"]),
                f"{step['entry_address']:#x}", escape(step["meaning"]),
            )  # fmt: skip
    console.print(table)
    if two_level and out["real_address"] is not None:
        console.print(
            f"real address: {out['real_address']:#x}, translated by the host table in "
            f"{len(out['data_host_steps'])} references"
        )
    pa = out["physical_address"]
    console.print(
        f"physical address: {pa:#x}" if pa is not None else "the page is not in memory",
        f"— {out['memory_references']} memory references",
    )


def _parse_address(text: str) -> int:
    """A virtual address from ``--address``: hex with 0x, or decimal."""
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise TraceError(
            f"--address: expected an address (hex with 0x or decimal), got {text!r}"
        ) from None
    if value < 0:
        raise TraceError(f"--address: expected a non-negative address, got {text!r}")
    return value


# memvirt sweep SWEEP.toml ... and memvirt sweep report DIR (docs/sweeps.md)
register_sweep(app)


def main() -> None:
    """Entry point of the ``memvirt`` command."""
    app()


if __name__ == "__main__":
    main()
