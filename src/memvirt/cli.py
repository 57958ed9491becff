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
from collections.abc import Collection, Iterable, Sequence
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

from memvirt.config import ScenarioError
from memvirt.files import atomic_output, output_dir_problem, output_file_problem
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

#: What can stop a scenario while it is loaded, built and run: a setting (ScenarioError), a
#: kernel's refusal or a trace that cannot be read (INPUT_ERRORS), this machine's memory,
#: or a trace file that went away or cannot be opened (OSError). Each ends as one line that
#: names the scenario (:func:`in_scenario`).
SCENARIO_ERRORS = (ScenarioError, *INPUT_ERRORS, MemoryError, OSError)


def fail(message: str) -> NoReturn:
    """Print ``memvirt: error: message`` on standard error and exit with status 2."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]memvirt: error:[/] {escape(message)}", markup=True
    )
    raise typer.Exit(2)


def in_scenario(scenario: Path | str, err: BaseException, case: Sequence[str] = ()) -> str:
    """The message of an error met while loading, building or running ``scenario``, naming
    the scenario when the message does not (a kernel's refusal, a trace that cannot be read,
    an out-of-memory condition of this machine).

    ``case`` is the ``--set`` overrides of this run that the user did not type (the demo's
    second run): they are named with the scenario, so that the message says which run failed.
    """
    where = " ".join([str(scenario), *(f"--set {setting}" for setting in case)])
    if isinstance(err, MemoryError):
        return (
            f"{where}: this machine has not enough memory to simulate it (every page is "
            "simulated in memory): make host.memory, the VMs' memory or the swap sizes smaller"
        )
    if isinstance(err, OSError):
        # a trace file that vanished after the scenario was loaded, or cannot be read
        text = f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)
    else:
        text = str(err)
    # a ScenarioError starts with the file (and line), and names an override it comes from
    return text if text.startswith(f"{scenario}:") else f"{where}: {text}"


def make_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    left: Collection[str] | None = None,
    title: str | None = None,
    caption: str | None = None,
    left_titles: bool = False,
    no_wrap: bool = False,
) -> Table:
    """A table of text cells, as every command prints them: the first column, which names
    the row, left-aligned and the others (numbers) right-aligned; or, given ``left``, the
    columns of those names left-aligned and the others right-aligned.

    ``left_titles`` puts the title and caption at the left, over a group of tables;
    ``no_wrap`` keeps every cell on one line. Titles, captions and headers are rich
    markup: escape what comes from input.
    """
    table = Table(
        title=title,
        caption=caption,
        show_header=True,
        title_justify="left" if left_titles else "center",
        caption_justify="left" if left_titles else "center",
    )
    for k, column in enumerate(columns):
        at_left = k == 0 if left is None else column in left
        table.add_column(column, justify="left" if at_left else "right", no_wrap=no_wrap)
    for row in rows:
        table.add_row(*row)
    return table


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
    console = Console()
    console.print(
        make_table(
            ("figure", "value"),
            [
                (name, f"{value:,}" if isinstance(value, int) else str(value))
                for name, value in rows
            ],
            title=f"{policy}, {frames:,} frames",
            caption=str(trace),
        )
    )
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
        if plot is not None and (problem := output_file_problem(plot)) is not None:
            raise TraceError(f"--plot {plot}: {problem}")  # before the trace is read through
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
    console = Console()
    console.print(make_table(("figure", "value"), rows, title=escape(f"{trace} ({trace_format})")))
    if stats.accesses:
        points = curve_points(stats.miss_ratio_curve, TABLE_CURVE_POINTS)
        curve = make_table(
            ("frames", "memory", "misses", "miss ratio"),
            [(f"{frames:,}", format_size(frames * stats.page_size), f"{misses:,}",
              f"{misses / stats.accesses:.4f}") for frames, misses in points],
            left=(),  # every column is a number
            title="LRU miss-ratio curve",
            caption="misses include first touches",
        )  # fmt: skip
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
            metadata = {"Date": None} if kind == "svg" else {"Software": None}
            try:
                atomic_output(
                    path, lambda tmp: fig.savefig(tmp, format=kind, metadata=metadata, dpi=100)
                )
            except OSError as err:  # (named by the file asked for, not the temporary one)
                raise TraceError(
                    f"--plot {path}: cannot write the file ({err.strerror or err})"
                ) from None
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
    from memvirt.report.figures import render_figures

    # drawn once, for the files and for the report
    rendered = render_figures(result.summary, result.timeseries, formats=("svg", "png"))
    written += write_figures(result.summary, result.timeseries, out, rendered=rendered)
    if report:
        written.append(
            write_report(result.summary, result.timeseries, out, title=title, rendered=rendered)
        )
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
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="The check mode (run.check = true): after every quantum, every page touched "
            "reads what was last written to it and, with VMs, every frame, swap slot and page "
            "is accounted for once. A violation stops the run with the page's history; exit "
            "status 1.",
        ),
    ] = False,
) -> None:
    """Run a scenario in simulated time and summarise it.

    Natively it prints a table per process. With VMs it prints the host (physical
    and free memory, minFree, the free-memory states, the pages reclaimed by each
    technique, the overcommitment) and, per VM, its memory, its faults and its
    throughput against its throughput alone ('throughput_alone' in summary.json:
    the same VM with the same accesses, alone on a host with room for all its
    memory). On a terminal a progress bar shows how far the run is.
    """
    from memvirt.config import load_scenario

    show = _show_progress(quiet=quiet, as_json=as_json)
    with_alone = alone if alone is not None else not as_json
    if quiet and out is None:
        with_alone = False  # nothing is shown or written: no need to measure
    try:
        checking = ["run.check=true"] if check else []
        loaded = load_scenario(scenario, [*(settings or ()), *checking])
        if out is not None:
            _check_out(out)
        result = _run(loaded, str(scenario), show)
        if with_alone and not loaded.is_native:
            _add_alone_throughputs(loaded, result.summary, show)
    except SCENARIO_ERRORS as err:
        fail(in_scenario(scenario, err))
    except AssertionError as err:
        from memvirt.engine.native import ContentError  # loaded by the run already

        if not isinstance(err, ContentError):
            raise
        # the check mode found a page lost, mixed up or counted twice
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]memvirt: check failed:[/] {escape(str(scenario))}: {escape(str(err))}"
        )
        raise typer.Exit(1) from None
    try:
        written = [] if out is None else write_outputs(result, out, title=scenario.stem)
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


def _check_out(*dirs: Path) -> None:
    """Fail (exit 2) unless outputs can be written into each of ``dirs``: before a run, not
    after it."""
    for path in dirs:
        problem = output_dir_problem(path)
        if problem is not None:
            fail(f"--out {path}: {problem}")


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
    rows = [
        (p["name"], f"{p['accesses']:,}", f"{p['faults']:,}", f"{p['major_faults']:,}",
         f"{p['writebacks']:,}", f"{p['tlb_misses']:,}", f"{p['throughput']:,.0f}",
         "killed" if p["killed"] else ("finished" if p["finished"] else "running"))
        for p in summary["processes"]
    ]  # fmt: skip
    columns = ("process", "accesses", "faults", "major", "writebacks", "TLB misses",
               "throughput /s", "ended")  # fmt: skip
    console.print(make_table(columns, rows, left=("process", "ended")))
    for p in summary["processes"]:
        if p["killed"]:
            console.print(f"[yellow]{escape(p['name'])}:[/] {escape(p['killed'])}")
    _print_faults(console, summary)


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

    def pages(key: str) -> str:
        return f"{format_size(host[key] * ps)} ({host[key]:,} pages)"

    rows = [("physical memory", pages("physical_pages")), ("free at the end", pages("free_pages"))]
    if "min_free_pages" in host:
        rows += [("minFree", pages("min_free_pages")), ("state at the end", str(host["state"]))]
        rows += [(f"time in {state}", f"{seconds:.2f} s")
                 for state, seconds in host["time_in_state"].items()]  # fmt: skip
        rows += [(f"reclaimed by {technique}", f"{count:,} pages")
                 for technique, count in host["reclaimed_pages"].items()]  # fmt: skip
    rows.append(("overcommitment (real / physical)", f"{summary['overcommit_ratio']:.2f}x"))
    console.print(make_table(("figure", "value"), rows, title="host", left_titles=True))

    vms = summary["vms"]
    memory = [
        (vm["name"], _pages(vm["real_pages"], ps), _pages(vm["host_resident_pages"], ps),
         _pages(vm.get("balloon_pages_max", 0), ps), _pages(vm.get("shared_pages_max", 0), ps),
         _pages(vm.get("compressed_pages_max", 0), ps),
         _pages(vm.get("host_swapped_pages_max", 0), ps))
        for vm in vms
    ]  # fmt: skip
    columns: tuple[str, ...] = ("VM", "real memory", "resident", "balloon", "shared",
                                "compressed", "host-swapped")  # fmt: skip
    title = "VM memory (most at any control step)"
    console.print(make_table(columns, memory, title=title, left_titles=True))
    console.print("  resident: the VM's real pages in host frames at the end", highlight=False)

    faults = [
        (vm["name"], f"{vm['guest_faults']:,}", f"{vm['guest_swap_ins']:,}",
         f"{vm['host_faults']:,}", f"{vm['host_swap_ins']:,}",
         f"{vm.get('double_paging_reads', 0):,}")
        for vm in vms
    ]  # fmt: skip
    columns = ("VM", "guest faults", "guest swap-ins", "host faults", "host swap-ins",
               "double paging")  # fmt: skip
    console.print(make_table(columns, faults, title="VM faults", left_titles=True))

    translation = [
        (vm["name"], f"{vm['tlb_misses']:,}", f"{vm['walk_memory_references']:,}",
         f"{vm['vm_exits']:,}")
        for vm in vms
    ]  # fmt: skip
    columns = ("VM", "TLB misses", "walk references", "VM exits")
    console.print(make_table(columns, translation, title="VM address translation",
                             left_titles=True))  # fmt: skip

    alone = all("throughput_alone" in vm for vm in vms)
    speed = []
    for vm in vms:
        row = [vm["name"], f"{vm['accesses']:,}", f"{vm['throughput']:,.0f}"]
        if alone:
            base = vm["throughput_alone"]
            row += [f"{base:,.0f}", f"{vm['throughput'] / base:.0%}" if base else "—"]
        speed.append(row)
    columns = ("VM", "accesses", "throughput") + (("throughput alone", "of alone") if alone else ())
    title = "VM throughput (accesses per simulated second)"
    console.print(make_table(columns, speed, title=title, left_titles=True, no_wrap=True))
    if alone:
        console.print(
            "  throughput alone: the same VM, alone with room for all its memory",
            highlight=False,
        )
    for vm in vms:
        if vm.get("stop_reason"):
            console.print(f"[yellow]{escape(vm['name'])} stopped:[/] {escape(vm['stop_reason'])}")
        for p in vm["processes"]:
            if p["killed"]:
                console.print(f"[yellow]{escape(vm['name'])}/{escape(p['name'])}:[/] "
                              f"{escape(p['killed'])}")  # fmt: skip
    _print_faults(console, summary)


def _print_faults(console: Console, summary: dict[str, Any]) -> None:
    """The faults injected ([faults]) and what the simulated system did."""
    faults = summary.get("faults")
    if faults is None:
        return
    rows = [(f"{e['time_s']:g} s", e["kind"], e["target"], e["outcome"])
            for e in faults["injected"]]  # fmt: skip
    rows += [
        ("all run", "swap errors", f"swap:{device}",
         f"{c['swap_read_errors']:,} reads and {c['swap_write_errors']:,} writes failed")
        for device, c in faults["swap_devices"].items()
    ]  # fmt: skip
    columns = ("when", "fault", "target", "outcome")
    console.print(make_table(columns, rows, left=columns, title="faults injected"))


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
    return make_table(
        ["", *(escape(label) for label in labels)],
        [(escape(name), *(_cell(v) for v in values)) for name, values in rows],
        caption="; ".join(notes) or None,
        left_titles=True,
    )


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


def _summary_to_compare(path: Path, settings: Sequence[str], show: bool) -> dict[str, Any]:
    """The summary of one of ``memvirt compare``'s runs: a finished run's summary.json, or a
    scenario file, run now (an error while it runs ends the command, naming the file)."""
    from memvirt.config import load_scenario

    if not path.exists():
        raise SummaryError(
            f"{path}: no such file or directory: expected a scenario file or a "
            "directory written by 'memvirt run --out'"
        )
    if path.is_dir() or path.suffix == ".json":
        return read_summary(path)
    try:
        return _run(load_scenario(path, settings), str(path), show).summary
    except SCENARIO_ERRORS as err:
        fail(in_scenario(path, err))


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
    show = _show_progress(as_json=as_json)
    try:
        summaries = [_summary_to_compare(path, settings or (), show) for path in runs]
        rows = metric_rows(summaries, metrics) if metrics else comparison_rows(summaries)
    except OSError as err:  # a summary.json that cannot be read
        fail(f"{err.filename}: {err.strerror or err}")
    except ValueError as err:  # an unknown metric, a summary that is not one
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

    from memvirt.config import load_scenario
    from memvirt.report import write_report
    from memvirt.scenarios import scenario_path

    _check_out(out, *(out / subdir for _, subdir, _ in DEMO_RUNS))
    console = Console(highlight=False)
    show = _show_progress()
    console.print(
        "[bold]memvirt demo[/]: three VMs on a host overcommitted 1.5 times, run once with "
        "balloons and once with hypervisor swapping only."
    )
    results: list[tuple[str, RunResult]] = []
    with as_file(scenario_path()) as path:
        for label, subdir, overrides in DEMO_RUNS:
            try:
                result = _run(load_scenario(path, overrides), label, show)
            except SCENARIO_ERRORS as err:
                # the path of the packaged demo.toml, and which of the two runs it was
                fail(in_scenario(path, err, overrides))
            try:
                write_outputs(result, out / subdir, title=f"memvirt demo: {label}", report=False)
            except OSError as err:
                fail(f"{err.filename or out}: {err.strerror or err}")
            results.append((label, result))
    try:
        (_, first), _ = results
        report = write_report(
            first.summary, first.timeseries, out,
            title="memvirt demo: ballooning against hypervisor swapping",
            comparison=[(label, r.summary) for label, r in results],
        )  # fmt: skip
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
    from memvirt.config import load_scenario
    from memvirt.engine.explain import explain

    try:
        va = None if address is None else _parse_address(address)
    except TraceError as err:  # the option's fault, not the scenario's
        fail(str(err))
    try:
        out = explain(load_scenario(scenario, settings or ()), vm=vm, process=process, address=va)
    except SCENARIO_ERRORS as err:
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
    columns = ["level", "table frame", "index", "entry address", "entry"]
    if two_level:
        columns = ["level", "table (real page)", "index", "entry: real address",
                   "physical address", "host refs", "entry"]  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for step in out["steps"]:
        if two_level:
            pa = step["entry_physical_address"]
            rows.append((
                str(step["level"]), str(step["table_real_frame"]), str(step["index"]),
                f"{step['entry_real_address']:#x}", "swapped" if pa is None else f"{pa:#x}",
                str(len(step["host_steps"])), escape(step["meaning"]),
            ))  # fmt: skip
        else:
            rows.append((
                str(step["level"]), str(step["table_frame"]), str(step["index"]),
                f"{step['entry_address']:#x}", escape(step["meaning"]),
            ))  # fmt: skip
    console.print(make_table(columns, rows, left=("entry",)))
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
