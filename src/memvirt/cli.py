"""The ``memvirt`` command.

Every command validates its input at the edge: a bad file, size, policy or
geometry ends with one line on standard error that says where and what was
expected, and exit status 2 — never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from memvirt.kernel.kernel import AdmissionError, KernelError
from memvirt.mmu.tlb import TLBConfig, TLBError, TLBLevel
from memvirt.policies import UnknownPolicyError, policy_names
from memvirt.traces.model import TraceError
from memvirt.units import GeometryError, PageGeometry, SizeError, is_power_of_two, parse_size

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
        f"[bold red]memvirt: error:[/] {message}", markup=True
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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Replay a trace as one process: TLB, page walks, demand paging, replacement."""
    from memvirt.replay import ReplayOptions, warm_up
    from memvirt.replay import replay as run_replay
    from memvirt.traces.readers import read_trace

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
        data = read_trace(trace, page_numbers=page_numbers)
        warm_up()
        result = run_replay(data, options)
    except INPUT_ERRORS as err:
        fail(str(err))
    except ValueError as err:  # e.g. an unknown swap device
        fail(str(err))

    out = result.to_dict()
    out["trace"] = str(trace)
    if as_json:
        sys.stdout.write(json.dumps(out, indent=2, sort_keys=True) + "\n")
        return
    console = Console()
    table = Table(title=f"replay of {trace} — {policy}, {frames} frames", show_header=True)
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
        console.print(f"[yellow]killed:[/] {reason}")


def main() -> None:
    """Entry point of the ``memvirt`` command."""
    app()


if __name__ == "__main__":
    main()
