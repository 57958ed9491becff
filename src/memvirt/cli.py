"""The ``memvirt`` command.

Every command validates its input at the edge: a bad file, size, policy or
geometry ends with one line on standard error that says where and what was
expected, and exit status 2 — never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memvirt.kernel.kernel import AdmissionError, KernelError
from memvirt.mmu.tlb import TLBConfig, TLBError, TLBLevel
from memvirt.policies import UnknownPolicyError, policy_names
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


@app.command("run")
def run_command(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (TOML), see docs/scenarios.md.")],
    out: Annotated[Path | None, typer.Option("--out", help="Directory for summary.json.")] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting by its dotted path: host.memory=8GiB."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run a scenario in simulated time and summarise it."""
    from memvirt.config import ScenarioError, load_scenario
    from memvirt.engine.scenario import run as run_scenario

    try:
        loaded = load_scenario(scenario, settings or ())
        result = run_scenario(loaded)
        if out is not None:
            result.write(out)
    except ScenarioError as err:
        fail(str(err))
    except INPUT_ERRORS as err:
        fail(str(err))
    except OSError as err:
        fail(f"{err.filename or out}: {err.strerror or err}")
    summary = result.summary
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return
    console = Console()
    if "vms" in summary:
        _print_vms(console, scenario, summary)
    else:
        _print_processes(console, scenario, summary)
    if out is not None:
        console.print(f"summary written to {escape(str(out / 'summary.json'))}")


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


def _print_vms(console: Console, scenario: Path, summary: dict[str, Any]) -> None:
    """The table of a run with VMs: one row per VM."""
    host = summary["host"]
    console.print(
        f"[bold]{escape(str(scenario))}[/]: {summary['simulated_seconds']:.3f} simulated s, "
        f"{summary['mode']} paging, {host['physical_pages']:,} frames of "
        f"{host['page_size']:,} B, overcommitted {summary['overcommit_ratio']:.2f}x"
    )
    table = Table(show_header=True)
    for column in ("VM", "accesses", "TLB misses", "walk refs", "guest faults",
                   "host faults", "host swap in/out", "VM exits", "throughput /s"):  # fmt: skip
        table.add_column(column, justify="left" if column == "VM" else "right")
    for vm in summary["vms"]:
        table.add_row(
            vm["name"], f"{vm['accesses']:,}", f"{vm['tlb_misses']:,}",
            f"{vm['walk_memory_references']:,}", f"{vm['guest_faults']:,}",
            f"{vm['host_faults']:,}", f"{vm['host_swap_ins']:,} / {vm['host_swap_outs']:,}",
            f"{vm['vm_exits']:,}", f"{vm['throughput']:,.0f}",
        )  # fmt: skip
    console.print(table)
    for vm in summary["vms"]:
        for p in vm["processes"]:
            if p["killed"]:
                console.print(f"[yellow]{escape(vm['name'])}/{escape(p['name'])}:[/] "
                              f"{escape(p['killed'])}")  # fmt: skip


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
    except INPUT_ERRORS as err:
        fail(str(err))
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


def main() -> None:
    """Entry point of the ``memvirt`` command."""
    app()


if __name__ == "__main__":
    main()
