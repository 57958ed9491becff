"""Reports of a sweep: a metric's mean over seeds with its 95% confidence interval, in
tables and plots.

Each place in a sweep (one label of every dimension) was run with several
seeds. The seeds change the random choices of a run — which pages a workload
touches, which page the host swaps — and so its numbers; their mean is the
estimate, and the **95% confidence interval** says how far it could be from
the true mean by chance. With n runs, mean m and sample standard deviation s,
the interval is m ± t · s / √n, where t is the 97.5% quantile of Student's t
distribution with n - 1 degrees of freedom (12.71 for 2 runs, 4.30 for 3,
2.26 for 10; 1.96 as n grows): fewer runs, wider intervals. Two settings whose
intervals do not overlap differ by more than chance — the converse does not
hold. A place with one run has no interval.

:func:`build_report` aggregates the catalog's ``ok`` runs for a metric
against one dimension (x), one line per label of another (lines), one figure
per combination of the rest; :func:`write_report` draws each figure as SVG and
PNG (deterministic files: fixed SVG ids, no dates) and writes the numbers as
CSV, all under ``DIR/plots``.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memvirt.files import atomic_output
from memvirt.sweep.catalog import Catalog
from memvirt.sweep.spec import SweepError
from memvirt.units import SizeError, parse_size

#: The confidence level of the intervals.
CONFIDENCE = 0.95

#: Axis labels of the whole-machine metrics; other metrics are labelled by their name.
METRIC_LABELS = {
    "throughput": "combined throughput (accesses per simulated second)",
    "accesses": "accesses",
    "major_faults": "major faults (guest + host swap-ins)",
    "host_swap_outs": "pages written to host swap",
    "double_paging_reads": "double-paging reads",
    "simulated_seconds": "simulated seconds",
}


# ------------------------------------------------------------------ Student's t


def _t_within(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with ``df`` degrees of freedom: the finite series of
    Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df), θ = atan(t / √df)."""
    theta = math.atan(t / math.sqrt(df))
    sin, cos = math.sin(theta), math.cos(theta)
    c2 = cos * cos
    if df % 2:  # 2/π [θ + sinθ (cosθ + 2/3 cos³θ + … + (2·4···(df-3))/(1·3···(df-2)) cos^(df-2)θ)]
        if df == 1:
            return 2 * theta / math.pi
        term = total = cos
        for k in range(3, df - 1, 2):
            term *= (k - 1) / k * c2
            total += term
        return 2 / math.pi * (theta + sin * total)
    term = total = 1.0  # sinθ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + … up to cos^(df-2)θ)
    for k in range(2, df - 1, 2):
        term *= (k - 1) / k * c2
        total += term
    return sin * total


def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """The t such that P(|T| < t) = ``confidence`` for Student's t with ``df`` degrees of
    freedom: 12.706 for df = 1 and 95%, 4.303 for df = 2, 1.960 as df grows."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    lo, hi = 0.0, 1.0
    while _t_within(hi, df) < confidence:
        lo, hi = hi, 2 * hi
    for _ in range(200):  # bisection: the probability rises with t
        mid = (lo + hi) / 2
        if _t_within(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class Stats:
    """A metric over the seeds of one place: count, mean, sample standard deviation and the
    confidence interval's half-width (NaN with fewer than two values)."""

    n: int
    mean: float
    std: float
    ci: float


def stats(values: Sequence[float], confidence: float = CONFIDENCE) -> Stats:
    """Mean and confidence interval (Student's t) of ``values``."""
    n = len(values)
    if n == 0:
        return Stats(0, math.nan, math.nan, math.nan)
    mean = math.fsum(values) / n
    if n == 1:
        return Stats(1, mean, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Stats(n, mean, std, t_critical(n - 1, confidence) * std / math.sqrt(n))


# ------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Panel:
    """One figure: the metric against x, one line per label of ``lines``, with the other
    dimensions fixed at ``fixed``."""

    fixed: tuple[tuple[str, str], ...]
    #: (x label, line label or "") -> stats
    cells: dict[tuple[str, str], Stats]


@dataclass(frozen=True)
class SweepReport:
    """What ``memvirt sweep report`` shows."""

    out_dir: Path
    metric: str
    x: str | None
    lines: str | None
    labels: dict[str, list[str]]  # each dimension's labels in order
    panels: list[Panel]
    counts: dict[str, int]  # runs by status
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run, error)

    @property
    def stem(self) -> str:
        """The plots' common file name: ``throughput-vs-overcommit-by-technique``."""
        stem = self.metric + (f"-vs-{self.x}" if self.x else "")
        return stem + (f"-by-{self.lines}" if self.lines else "")


def _numeric(labels: Sequence[str]) -> list[float] | None:
    """The labels as numbers (plain numbers, or sizes in bytes), or None if some are not."""
    for parse in (float, parse_size):
        try:
            return [float(parse(label)) for label in labels]
        except (ValueError, SizeError):
            continue
    return None


def build_report(
    catalog: Catalog,
    metric: str | None = None,
    x: str | None = None,
    lines: str | None = None,
    confidence: float = CONFIDENCE,
) -> SweepReport:
    """Aggregate the catalog's ``ok`` runs: ``metric`` against ``x``, by ``lines``.

    Absent, each comes from the sweep file's ``[report]`` table, else: the
    metric ``throughput``; x the first dimension whose labels are all numbers,
    else the first; lines the first other dimension with more than one label.
    """
    meta = catalog.meta()
    defaults = meta.get("report", {})
    dims = [d["name"] for d in meta.get("dimensions", [])]
    labels = {d["name"]: list(d["labels"]) for d in meta.get("dimensions", [])}
    where = str(catalog.path.parent)
    for option, chosen in (("--x", x), ("--lines", lines)):
        if chosen is not None and chosen not in dims:
            known = ", ".join(dims) or "none"
            raise SweepError(f"{option} {chosen}: not a dimension of the sweep (they are: {known})")
    metric = metric or defaults.get("metric") or "throughput"
    columns = catalog.metric_columns()
    rows = catalog.rows("ok")
    if rows and metric not in columns:
        plain = ", ".join(c for c in columns if "." not in c)
        raise SweepError(
            f"--metric {metric}: not a metric of this catalog; the plain ones are {plain}, and "
            f"there are host.*, vms.NAME.* and processes.NAME.* ({len(columns)} in all)"
        )
    if x is None:
        x = defaults.get("x")
        if x is None and dims:
            x = next((d for d in dims if _numeric(labels[d]) is not None), dims[0])
    if lines is None:
        # the file's choice of lines goes with its choice of x
        if defaults.get("x") in (None, x) and defaults.get("lines") != x:
            lines = defaults.get("lines")
        if lines is None:
            lines = next((d for d in dims if d != x and len(labels[d]) > 1), None)
    if lines is not None and lines == x:
        raise SweepError(f"--lines {lines}: must differ from --x")

    # labels found in rows the sweep file no longer lists come after its own, sorted
    for row in rows:
        for d in dims:
            if row[d] not in labels[d]:
                labels[d].append(row[d])
    others = [d for d in dims if d not in (x, lines)]
    values: dict[tuple[tuple[str, str], ...], dict[tuple[str, str], list[float]]] = {}
    for row in sorted(rows, key=lambda r: ([labels[d].index(r[d]) for d in dims], r["seed"])):
        value = row.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        fixed = tuple((d, row[d]) for d in others)
        cell = (row[x] if x else "", row[lines] if lines else "")
        values.setdefault(fixed, {}).setdefault(cell, []).append(float(value))
    panels = []
    for fixed in sorted(values, key=lambda f: [labels[d].index(v) for d, v in f]):
        cells = {cell: stats(v, confidence) for cell, v in values[fixed].items()}
        panels.append(Panel(fixed, cells))
    failed = [(_describe(row, dims), row["error"] or "") for row in catalog.rows("failed")]
    if not rows:
        counts = catalog.counts()
        raise SweepError(
            f"{where}: no finished runs in the catalog yet ({counts['pending']} pending, "
            f"{counts['failed']} failed)"
        )
    return SweepReport(
        catalog.path.parent, metric, x, lines, labels, panels, catalog.counts(), failed
    )


def _describe(row: dict[str, Any], dims: Sequence[str]) -> str:
    return " ".join([*(f"{d}={row[d]}" for d in dims), f"seed={row['seed']}"])


# --------------------------------------------------------------------- writing


def _safe(text: str) -> str:
    """``text`` as part of a file name."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text)


def panel_stem(report: SweepReport, panel: Panel) -> str:
    """The file name (without suffix) of one panel's plot."""
    return _safe(report.stem + "".join(f"-{d}={v}" for d, v in panel.fixed))


def write_report(report: SweepReport) -> list[Path]:
    """Write each panel's plot (SVG and PNG) and the numbers (CSV) into ``DIR/plots``;
    return the files written."""
    plots = report.out_dir / "plots"
    try:
        plots.mkdir(exist_ok=True)
    except OSError as err:
        raise SweepError(f"{plots}: cannot make the directory: {err.strerror}") from None
    written: list[Path] = []
    table = plots / f"{_safe(report.stem)}.csv"
    atomic_output(table, lambda tmp: _write_csv(report, tmp))
    written.append(table)
    if report.x is None:
        return written  # a sweep of seeds alone: nothing to draw against
    for panel in report.panels:
        stem = panel_stem(report, panel)
        for kind in ("svg", "png"):
            path = plots / f"{stem}.{kind}"
            atomic_output(path, functools.partial(_draw, report, panel, kind=kind))
            written.append(path)
    return written


def _write_csv(report: SweepReport, path: Path) -> None:
    dims = [d for d, _ in report.panels[0].fixed] if report.panels else []
    head = [*dims, *(d for d in (report.x, report.lines) if d)]
    with path.open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow([*head, "n", "mean", "std", f"ci{round(CONFIDENCE * 100)}"])
        for panel in report.panels:
            for (xl, ll), s in _ordered(report, panel):
                key = [v for _, v in panel.fixed]
                key += ([xl] if report.x else []) + ([ll] if report.lines else [])
                out.writerow([*key, s.n, _plain(s.mean), _plain(s.std), _plain(s.ci)])


def _plain(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


def _ordered(report: SweepReport, panel: Panel) -> list[tuple[tuple[str, str], Stats]]:
    """A panel's cells, by line label, then by x label, in the sweep's order."""
    xs = report.labels.get(report.x, [""]) if report.x else [""]
    ls = report.labels.get(report.lines, [""]) if report.lines else [""]
    return [((xl, ll), panel.cells[(xl, ll)]) for ll in ls for xl in xs if (xl, ll) in panel.cells]


def _draw(report: SweepReport, panel: Panel, path: Path, *, kind: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    assert report.x is not None
    xs = report.labels[report.x]
    numbers = _numeric(xs)
    positions = numbers if numbers is not None else [float(k) for k in range(len(xs))]
    span = (max(positions) - min(positions)) or 1.0
    ls = report.labels[report.lines] if report.lines else [""]
    # a fixed hash salt and no date keep the SVG the same from run to run
    with matplotlib.rc_context({"svg.hashsalt": "memvirt-sweep", "svg.fonttype": "path"}):
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        try:
            drawn = [ll for ll in ls if any((xl, ll) in panel.cells for xl in xs)]
            for k, ll in enumerate(drawn):
                # lines side by side, a little apart, so that their error bars do not hide
                shift = (k - (len(drawn) - 1) / 2) * 0.012 * span
                points = [
                    (p + shift, panel.cells[(xl, ll)])
                    for xl, p in zip(xs, positions, strict=True)
                    if (xl, ll) in panel.cells
                ]
                ax.errorbar(
                    [p for p, _ in points],
                    [s.mean for _, s in points],
                    yerr=[0.0 if math.isnan(s.ci) else s.ci for _, s in points],
                    marker="os^Dv<>p*h"[k % 10],
                    capsize=3,
                    label=ll or None,
                )
            ax.set_xticks(positions, xs)
            ax.set_xlabel(report.x)
            ax.set_ylabel(METRIC_LABELS.get(report.metric, report.metric))
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.6g}"))
            title = f"{report.metric} against {report.x}"
            if panel.fixed:
                title += " (" + ", ".join(f"{d} = {v}" for d, v in panel.fixed) + ")"
            ax.set_title(title, fontsize=11)
            runs = sorted({s.n for s in panel.cells.values()})
            seeds = "/".join(str(n) for n in runs)
            ax.text(
                0.99, 0.01,
                f"mean of {seeds} seeds; bars: {round(CONFIDENCE * 100)}% confidence interval",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="0.35",
            )  # fmt: skip
            if report.lines:
                ax.legend(title=report.lines, fontsize=9)
            ax.grid(True, alpha=0.3)
            fig.tight_layout()
            metadata = {"Date": None} if kind == "svg" else {"Software": None}
            fig.savefig(path, format=kind, metadata=metadata, dpi=100)
        finally:
            plt.close(fig)


def format_number(value: float, scale: float | None = None) -> str:
    """A number for a table, with as many decimals as ``scale`` (default: the number itself)
    calls for: none from 100 up, thousands separated; two from 1; three significant below."""
    if math.isnan(value):
        return "—"
    size = abs(value if scale is None else scale)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_stats(s: Stats) -> str:
    """``mean ± ci`` (the mean alone for one run), both to the mean's precision."""
    if s.n < 2 or math.isnan(s.ci):
        return format_number(s.mean)
    return f"{format_number(s.mean)} ± {format_number(s.ci, s.mean)}"


__all__ = [
    "CONFIDENCE",
    "METRIC_LABELS",
    "Panel",
    "Stats",
    "SweepReport",
    "build_report",
    "format_number",
    "format_stats",
    "panel_stem",
    "stats",
    "t_critical",
    "write_report",
]
