"""The HTML report: one file that shows a run — what was run, the tables and the figures.

``report.html`` is self-contained: the figures are inlined as SVG, the style sheet
is in the page, and there is no script, so it opens the same from a mail, an
archive or a machine with no network. It reads the run's summary (and time
series) only:

- a heading: the scenario file, its seed, the simulated seconds and the mode;
- the host: physical and free memory, minFree and the free-memory state, how
  long the host spent in each state, the pages reclaimed by each technique, the
  overcommitment;
- the VMs, one column each (natively: none), and every process;
- the figures of :mod:`memvirt.report.figures`, each with a sentence on what
  to look for;
- optionally, runs side by side (``comparison``): e.g. the same scenario with
  balloons and with host swapping only.

Every text comes from the run and may hold anything (a VM's name, a file name):
the template escapes all of it (jinja2's autoescape). Only the SVG that
matplotlib made here is inserted as markup, after its ids are made unique per
figure so that the figures' definitions do not clash in one page.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup

from memvirt.files import atomic_write
from memvirt.report.figures import STATES, RenderedFigure, render_figures

if TYPE_CHECKING:
    import pandas as pd

#: Reclamation techniques, in the summary's order.
TECHNIQUES = ("ballooning", "sharing", "compression", "swapping")

_MISSING = "—"
_MIB = 2**20


def write_report(
    summary: dict[str, Any],
    timeseries: pd.DataFrame | None,
    out_dir: Path,
    *,
    title: str,
    comparison: Sequence[tuple[str, dict[str, Any]]] = (),
    rendered: Sequence[RenderedFigure] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` (atomically) and return its path.

    ``comparison`` holds (label, summary) pairs shown side by side, one column each;
    ``rendered``, the run's figures if they were already rendered (with SVG).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    page = render_report(summary, timeseries, title=title, comparison=comparison, rendered=rendered)
    atomic_write(path, page.encode("utf-8"))
    return path


def render_report(
    summary: dict[str, Any],
    timeseries: pd.DataFrame | None,
    *,
    title: str,
    comparison: Sequence[tuple[str, dict[str, Any]]] = (),
    rendered: Sequence[RenderedFigure] | None = None,
) -> str:
    """The report's HTML, as :func:`write_report` writes it."""
    if rendered is None:
        rendered = render_figures(summary, timeseries, formats=("svg",))
    page_size = int(_dig(summary, "host", "page_size") or 4096)
    vms = summary.get("vms")
    figures = [
        {
            "name": f.info.name,
            "title": f.info.title,
            "caption": f.info.caption,
            "svg": Markup(inline_svg(f.data["svg"].decode("utf-8"), prefix=f.info.name)),
        }
        for f in rendered
    ]
    context = {
        "title": title,
        "run": _run_rows(summary),
        "host": _host_rows(summary, page_size),
        "vm_table": _vm_table(summary, timeseries, page_size) if vms else None,
        "processes": _process_table(summary),
        "figures": figures,
        "comparison": _comparison_table(comparison) if comparison else None,
        "page_size": _bytes(page_size),
    }
    return _template().render(context)


# ------------------------------------------------------------------------ the template


def _template() -> jinja2.Template:
    source = resources.files("memvirt.report").joinpath("templates", "report.html.j2")
    env = jinja2.Environment(
        autoescape=True,  # every text from the run is escaped, in every context
        undefined=jinja2.StrictUndefined,  # a typo in the template fails, never prints ""
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.from_string(source.read_text(encoding="utf-8"))


_ID = re.compile(r'\bid="([^"]+)"')


def inline_svg(svg: str, *, prefix: str) -> str:
    """matplotlib's SVG file made fit to sit inside an HTML page.

    The XML declaration, doctype, RDF metadata and namespace declarations go (the
    HTML parser knows SVG without them, and they only name URLs); every id gets
    ``prefix`` so that two figures' ids cannot clash in one document.
    """
    start = svg.find("<svg")
    if start < 0:
        raise ValueError("not an SVG document: no <svg> element")
    body = svg[start:]
    body = re.sub(r"<metadata>.*?</metadata>\s*", "", body, count=1, flags=re.S)
    head_end = body.find(">")
    head = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", body[:head_end])
    body = head + ' role="img"' + body[head_end:]
    ids = set(_ID.findall(body))

    def rename(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in ids:
            return match.group(0)
        return f"{match.group(1)}{prefix}-{name}{match.group(3)}"

    body = re.sub(r'(\bid=")([^"]+)(")', rename, body)
    body = re.sub(r'(href="#)([^"]+)(")', rename, body)
    body = re.sub(r"(url\(#)([^)]+)(\))", rename, body)
    return body.strip()


# ------------------------------------------------------------------------ formatting


def _dig(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...``, or None where a key is missing (older or partial summaries)."""
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _num(value: Any, digits: int = 0) -> str:
    """A count with thousands separators, a float with ``digits`` decimals, — if absent."""
    if value is None:
        return _MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", _MIB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:,.{0 if n % size == 0 else 1}f} {unit}"
    return f"{n:,.0f} B"


def _pages(value: Any, page_size: int) -> str:
    """Pages, with their size: "65,536 pages (256 MiB)"."""
    if value is None:
        return _MISSING
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if value == 0:
        return "0"
    return f"{_num(value)} ({_bytes(value * page_size)})"


def _seconds(value: Any) -> str:
    return _MISSING if value is None else f"{float(value):,.3f} s"


def _fraction(value: Any) -> str:
    return _MISSING if value is None else f"{float(value):.2f}"


@dataclass(frozen=True)
class _Table:
    """A table as the template draws it: a header row, then rows of cells (strings)."""

    header: list[str]
    rows: list[list[str]]
    #: columns holding text (left-aligned); the others hold numbers
    text_columns: int = 1


# ------------------------------------------------------------------------ the sections


def _run_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    mode = summary.get("mode")
    vms = summary.get("vms")
    if mode == "native":
        what = f"native: {len(summary.get('processes') or [])} processes on one kernel"
    elif vms is not None:
        what = f"{mode} paging: {len(vms)} VMs on one host (two-level mapping)"
    else:
        what = _num(mode)
    rows = [
        ("scenario", _num(_dig(summary, "scenario", "source"))),
        ("scenario hash", _num(_dig(summary, "scenario", "hash"))),
        ("seed", _num(summary.get("seed"))),
        ("simulated time", _seconds(summary.get("simulated_seconds"))),
        ("mode", what),
    ]
    return rows


def _host_rows(summary: dict[str, Any], page_size: int) -> list[tuple[str, str]]:
    host = summary.get("host") or {}
    rows: list[tuple[str, str]] = []

    def add(label: str, key: str, show: Any) -> None:
        if key in host:
            rows.append((label, show(host[key])))

    def pages(v: Any) -> str:
        return _pages(v, page_size)

    add("page size", "page_size", lambda v: _bytes(v))
    add("physical memory", "physical_pages", pages)
    add("free memory at the end", "free_pages", pages)
    add("minFree (the reserve the states are measured against)", "min_free_pages", pages)
    add("free-memory state at the end", "state", _num)
    for state in STATES:
        value = _dig(host, "time_in_state", state)
        if value is not None:
            rows.append((f"time in state {state}", _seconds(value)))
    for technique in TECHNIQUES:
        value = _dig(host, "reclaimed_pages", technique)
        if value is not None:
            rows.append((f"reclaimed by {technique}", pages(value)))
    add("frames saved by sharing at the end", "sharing_saved_pages", pages)
    add("shared frames at the end", "shared_frames", _num)
    add("copies on write (sharing broken)", "sharing_copies", _num)
    add("page-table pages", "table_pages", pages)
    add("swap slots used / total", "swap_used",
        lambda v: f"{_num(v)} / {_num(host.get('swap_slots'))}")  # fmt: skip
    add("processes killed (out of memory)", "oom_kills", _num)
    if summary.get("vms") is not None and "overcommit_ratio" in summary:
        rows.append(
            ("overcommitment (VMs' memory ÷ physical)", _ratio(summary["overcommit_ratio"]))
        )
    if "virtual_memory_ratio" in summary:
        rows.append(("virtual memory ÷ physical memory", _ratio(summary["virtual_memory_ratio"])))
    return rows


def _ratio(value: Any) -> str:
    return _MISSING if value is None else f"{float(value):.2f}\N{MULTIPLICATION SIGN}"


def _vm_table(summary: dict[str, Any], timeseries: pd.DataFrame | None, page_size: int) -> _Table:
    """One column per VM, one row per metric."""
    vms: list[dict[str, Any]] = summary.get("vms") or []
    allocated: dict[str, Any] = {}
    if timeseries is not None and len(timeseries) and "allocated_pages" in timeseries.columns:
        last = timeseries.groupby(timeseries["vm"].astype(str))["allocated_pages"].last()
        allocated = {str(k): int(v) for k, v in last.items()}

    def pages(key: str) -> list[str]:
        return [_pages(vm.get(key), page_size) for vm in vms]

    def count(key: str) -> list[str]:
        return [_num(vm.get(key)) for vm in vms]

    def frac(key: str) -> list[str]:
        return [_fraction(vm.get(key)) for vm in vms]

    def per_s(key: str) -> list[str]:
        return [_num(None if vm.get(key) is None else float(vm[key])) for vm in vms]

    rows: list[tuple[str, list[str]]] = [
        ("real memory", pages("real_pages")),
        ("allocated at the end (host frames)",
         [_pages(allocated.get(str(vm.get("name"))), page_size) for vm in vms]),
        ("resident at the end (real pages in host frames)", pages("host_resident_pages")),
        ("target at the end", pages("target_pages")),
        ("balloon, most", pages("balloon_pages_max")),
        ("shared pages, most", pages("shared_pages_max")),
        ("compressed pages, most", pages("compressed_pages_max")),
        ("host-swapped pages, most", pages("host_swapped_pages_max")),
        ("guest faults", count("guest_faults")),
        ("guest swap-ins (major faults)", count("guest_swap_ins")),
        ("host faults", count("host_faults")),
        ("host swap-ins", count("host_swap_ins")),
        ("double-paging reads", count("double_paging_reads")),
        ("active fraction: estimated", frac("active_fraction_estimated")),
        ("active fraction: true", frac("active_fraction_true")),
        ("accesses", count("accesses")),
        ("throughput (accesses per simulated s)", per_s("throughput")),
    ]  # fmt: skip
    if any("throughput_alone" in vm for vm in vms):
        rows.append(("throughput alone on the host", per_s("throughput_alone")))
        rows.append(("throughput ÷ throughput alone", [_relative(vm) for vm in vms]))
    if any(vm.get("blocked_seconds") for vm in vms):
        rows.append(("blocked (low state)", [_seconds(vm.get("blocked_seconds")) for vm in vms]))
    if any(vm.get("stopped") for vm in vms):
        rows.append(("stopped by the host", count("stopped")))
    # a metric no VM reports (an older summary) is left out rather than shown as dashes
    kept = [[label, *cells] for label, cells in rows if any(c != _MISSING for c in cells)]
    return _Table(["", *[str(vm.get("name", "?")) for vm in vms]], kept)


def _relative(vm: dict[str, Any]) -> str:
    alone, shared = vm.get("throughput_alone"), vm.get("throughput")
    if not alone or shared is None:
        return _MISSING
    return f"{float(shared) / float(alone):.2f}"


def _process_table(summary: dict[str, Any]) -> _Table | None:
    """One row per process: natively the host's, with VMs every guest's."""
    with_vm = summary.get("vms") is not None
    owned: list[tuple[str, dict[str, Any]]] = []
    if with_vm:
        for vm in summary.get("vms") or []:
            owned += [(str(vm.get("name", "?")), p) for p in vm.get("processes") or []]
    else:
        owned = [("", p) for p in summary.get("processes") or []]
    if not owned:
        return None
    header = [*(["VM"] if with_vm else []), "process", "ended", "accesses", "faults",
              "minor faults", "major faults", "evictions", "writebacks", "TLB misses",
              "throughput (accesses per simulated s)"]  # fmt: skip
    rows = []
    for vm_name, p in owned:
        if p.get("killed"):
            ended = f"killed: {p['killed']}"
        elif p.get("finished"):
            ended = "finished"
        else:
            ended = "running"
        throughput = p.get("throughput")
        rows.append([
            *([vm_name] if with_vm else []), str(p.get("name", "?")), ended,
            _num(p.get("accesses")), _num(p.get("faults")), _num(p.get("minor_faults")),
            _num(p.get("major_faults")), _num(p.get("evictions")), _num(p.get("writebacks")),
            _num(p.get("tlb_misses")), _num(None if throughput is None else float(throughput)),
        ])  # fmt: skip
    return _Table(header, rows, text_columns=3 if with_vm else 2)


# ------------------------------------------------------------------------ comparison


def combined_throughput(summary: dict[str, Any]) -> float | None:
    """Accesses per simulated second of all VMs (natively: all processes) together."""
    units = summary.get("vms")
    if units is None:
        units = summary.get("processes")
    if not units or any(u.get("throughput") is None for u in units):
        return None
    return float(sum(float(u["throughput"]) for u in units))


def major_faults(summary: dict[str, Any]) -> int | None:
    """Pages read back from swap: with VMs, guest and host swap-ins of all VMs (as in
    docs/experiments.md); natively, the processes' major faults."""
    vms = summary.get("vms")
    if vms is not None:
        if any("guest_swap_ins" not in vm or "host_swap_ins" not in vm for vm in vms):
            return None
        return sum(int(vm["guest_swap_ins"]) + int(vm["host_swap_ins"]) for vm in vms)
    total = _dig(summary, "totals", "major_faults")
    if total is not None:
        return int(total)
    processes = summary.get("processes")
    if not processes or any("major_faults" not in p for p in processes):
        return None
    return sum(int(p["major_faults"]) for p in processes)


def _comparison_table(comparison: Sequence[tuple[str, dict[str, Any]]]) -> _Table:
    """The key metrics of several runs: one row per metric, one column per run."""
    summaries = [s for _, s in comparison]

    def each(get: Any) -> list[str]:
        return [get(s) for s in summaries]

    rows: list[tuple[str, list[str]]] = [
        ("combined throughput (accesses per simulated s)",
         each(lambda s: _num(combined_throughput(s)))),
        ("major faults", each(lambda s: _num(major_faults(s)))),
    ]  # fmt: skip
    for technique in TECHNIQUES:
        rows.append(
            (
                f"pages reclaimed by {technique}",
                each(lambda s, t=technique: _num(_dig(s, "host", "reclaimed_pages", t))),
            )
        )
    for state in STATES:
        rows.append(
            (
                f"time in state {state}",
                each(lambda s, st=state: _seconds(_dig(s, "host", "time_in_state", st))),
            )
        )
    rows.append(
        (
            "double-paging reads",
            each(lambda s: _num(_sum_vms(s, "double_paging_reads"))),
        )
    )
    rows.append(("simulated time", each(lambda s: _seconds(s.get("simulated_seconds")))))
    kept = [[label, *cells] for label, cells in rows if any(c != _MISSING for c in cells)]
    return _Table(["", *[label for label, _ in comparison]], kept)


def _sum_vms(summary: dict[str, Any], key: str) -> int | None:
    vms = summary.get("vms")
    if not vms or any(key not in vm for vm in vms):
        return None
    return sum(int(vm[key]) for vm in vms)
