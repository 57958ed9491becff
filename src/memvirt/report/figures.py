"""Figures of a run: where the host's memory went, and what it cost the VMs, over time.

A run with VMs records one row per VM per reclamation step (``timeseries.parquet``,
docs/scenarios.md). Four figures read it:

``host-memory``
    The host's physical memory, stacked: each VM's allocated frames, the shared
    frames, the host's own page tables and the free frames; the stack is the
    whole of physical memory. Compressed pages live in compression-cache frames
    that are already counted in the VMs' allocations, so they are drawn as a line
    over the stack; host-swapped pages are not in physical memory at all, so they
    get an axes of their own below.
``vm-memory``
    One panel per VM: the frames it holds against its target (its entitlement),
    its balloon, and how much of its memory is active — truly, and as the
    hypervisor's sampling estimates it.
``states``
    The free-memory state (high, clear, soft, hard, low) step by step, above the
    free memory that decides it and the minFree reserve.
``activity``
    Major faults per simulated second (the guest's own, and the host's when it
    brings a page back from swap or the compression cache) and each VM's
    throughput: what reclamation cost.

A native run has no time series; its figure, ``processes``, compares the
processes' minor and major faults and their throughput.

Each figure is a matplotlib :class:`~matplotlib.figure.Figure` made without
pyplot (no global state, no backend switch), saved as SVG and PNG. The SVG is
the same byte for byte from run to run: its date is left out and its ids are
hashed with a fixed salt; text is drawn as paths, so it looks the same
everywhere, also inlined in the HTML report.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from memvirt.files import atomic_write

if TYPE_CHECKING:
    import pandas as pd

#: The free-memory states from most free memory to least: top to bottom in ``states``.
STATES = ("high", "clear", "soft", "hard", "low")

#: A background colour per state: green when memory is plentiful, red when it is short.
STATE_COLOURS = {
    "high": "#b7e4c7",
    "clear": "#d8f3dc",
    "soft": "#fff3b0",
    "hard": "#ffd6a5",
    "low": "#ffadad",
}

_MIB = 2**20
_TIME_LABEL = "simulated seconds"


@dataclass(frozen=True)
class FigureInfo:
    """A figure the report shows: its file name (without suffix), title and caption."""

    name: str
    title: str
    #: one sentence: what to look for in the figure
    caption: str


@dataclass(frozen=True)
class RenderedFigure:
    """A figure rendered in memory: its description and its bytes per format."""

    info: FigureInfo
    #: "svg" and/or "png" -> the file's bytes
    data: dict[str, bytes]


HOST_MEMORY = FigureInfo(
    "host-memory",
    "Host memory over time",
    "The stack is all of physical memory: watch the free band shrink as the VMs fill "
    "memory, and which VMs give frames back when the host reclaims; the lower panel "
    "shows the pages pushed out of memory to host swap.",
)
VM_MEMORY = FigureInfo(
    "vm-memory",
    "Each VM's memory over time",
    "A VM above its target (dashed) is where reclamation takes frames; its balloon "
    "grows as its allocation falls, and the active lines show how much of its memory "
    "it really uses, and how well sampling estimates it.",
)
STATES_FIGURE = FigureInfo(
    "states",
    "Free-memory states over time",
    "Each drop of free memory below a threshold moves the host down to a state that "
    "enables costlier reclamation (soft: ballooning; hard and low: compression and "
    "swapping); see how long it stays there.",
)
ACTIVITY = FigureInfo(
    "activity",
    "Faults and throughput over time",
    "Bursts of major faults (guest: solid, host: dashed) are the price of reclamation; "
    "look for the throughput dips they cause in the same VM.",
)
PROCESSES = FigureInfo(
    "processes",
    "Faults and throughput per process",
    "Major faults read a page back from swap and cost far more than minor ones: a "
    "process with many of them runs with a lower throughput.",
)


def write_figures(
    summary: dict[str, Any],
    timeseries: pd.DataFrame | None,
    out_dir: Path,
    *,
    rendered: Sequence[RenderedFigure] | None = None,
) -> list[Path]:
    """Write the run's figures into ``out_dir`` as SVG and PNG, atomically; return the paths.

    With VMs and a time series: ``host-memory``, ``vm-memory``, ``states`` and
    ``activity``; natively: ``processes``. A run with nothing to draw writes nothing.
    ``rendered``: the figures already rendered in both formats (:func:`render_figures`),
    so that a report written beside them need not draw them again.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if rendered is None:
        rendered = render_figures(summary, timeseries, formats=("svg", "png"))
    for figure in rendered:
        for kind, data in figure.data.items():
            path = out / f"{figure.info.name}.{kind}"
            atomic_write(path, data)
            paths.append(path)
    return paths


def render_figures(
    summary: dict[str, Any],
    timeseries: pd.DataFrame | None,
    *,
    formats: Sequence[str] = ("svg",),
) -> list[RenderedFigure]:
    """The run's figures, rendered in memory in each of ``formats`` ("svg", "png")."""
    rendered = []
    for info, draw in _figures(summary, timeseries):
        with _settings():
            fig = draw()
            data = {kind: _save(fig, kind) for kind in formats}
        rendered.append(RenderedFigure(info, data))
    return rendered


# ------------------------------------------------------------------------ which figures


def _figures(
    summary: dict[str, Any], timeseries: pd.DataFrame | None
) -> list[tuple[FigureInfo, Callable[[], Figure]]]:
    """The figures that apply to this run, each with the function that draws it."""
    vms = summary.get("vms")
    if vms is not None:
        if timeseries is None or len(timeseries) == 0 or not vms:
            return []
        series = _Series(summary, timeseries)
        return [
            (HOST_MEMORY, series.host_memory),
            (VM_MEMORY, series.vm_memory),
            (STATES_FIGURE, series.states),
            (ACTIVITY, series.activity),
        ]
    processes = summary.get("processes") or []
    if processes:
        return [(PROCESSES, lambda: _processes(processes))]
    return []


@contextmanager
def _settings() -> Iterator[None]:
    # the same output from run to run: a fixed salt for the SVG ids (otherwise random);
    # text as paths, so that no font is needed to view it
    with matplotlib.rc_context({"svg.hashsalt": "memvirt", "svg.fonttype": "path", "font.size": 9}):
        yield


def _save(fig: Figure, kind: str) -> bytes:
    buf = io.BytesIO()
    # no date in the SVG, no software tag in the PNG: the same run, the same bytes
    metadata: dict[str, str | None] = {"Date": None} if kind == "svg" else {"Software": None}
    fig.savefig(buf, format=kind, metadata=metadata, dpi=100)
    return buf.getvalue()


def _label(text: object) -> str:
    """A name as a matplotlib label: ``$`` would start mathtext, and a label starting
    with ``_`` is left out of legends."""
    s = str(text).replace("$", r"\$")
    return " " + s if s.startswith("_") else s


def _thousands() -> FuncFormatter:
    """Tick labels with thousands separators, and decimals only where a tick has them
    (an axis of zeros ticks at 0.2, 0.4...). A formatter serves one axis only."""
    return FuncFormatter(lambda x, _pos: f"{x:,.0f}" if x == round(x) else f"{x:,.3g}")


def _colour(k: int) -> Any:
    return matplotlib.colormaps["tab10"](k % 10)


# ------------------------------------------------------------------------ runs with VMs


class _Series:
    """The time series reshaped for drawing: one column per VM, indexed by time."""

    #: about this many windows over a run for the rates of ``activity``: a step holds a
    #: few quanta, so per-step rates jump between multiples of one quantum per step
    RATE_WINDOWS = 80

    def __init__(self, summary: dict[str, Any], ts: pd.DataFrame) -> None:
        self.summary = summary
        host = summary.get("host", {})
        self.page_mib = float(host.get("page_size", 4096)) / _MIB
        self.physical_pages = host.get("physical_pages")
        self.min_free_pages = host.get("min_free_pages")
        named = [str(vm.get("name")) for vm in summary.get("vms", [])]
        seen = [str(v) for v in ts["vm"].drop_duplicates()]
        # the summary's order (the scenario's), then any VM only the series names
        self.vms = [v for v in named if v in seen] + [v for v in seen if v not in named]
        self.real_pages = {
            str(vm.get("name")): vm.get("real_pages") for vm in summary.get("vms", [])
        }
        self.ts = ts.assign(vm=ts["vm"].astype(str))
        # host-wide columns repeat on every VM's row of a step: one row per step
        self.host = self.ts.groupby("time_s", sort=True).last()
        self.time = self.host.index.to_numpy(dtype=float)
        # a step's values hold until the next step: the last ones for one more period,
        # or to the end of the run if that comes first
        last = float(self.time[-1])
        self.period = float(np.median(np.diff(self.time))) if len(self.time) > 1 else 0.0
        run_end = float(summary.get("simulated_seconds") or 0.0)
        if run_end > last:
            end = min(last + self.period, run_end) if self.period > 0 else run_end
        else:
            end = last + self.period
        self.end = end if end > last else last + 1.0

    def per_vm(self, column: str) -> pd.DataFrame:
        """``column`` as a frame: index time_s (every step), one column per VM."""
        if column not in self.ts.columns:
            return _zeros(self.host.index, self.vms)
        table = self.ts.pivot_table(index="time_s", columns="vm", values=column, aggfunc="last")
        return table.reindex(index=self.host.index, columns=self.vms).astype(float).fillna(0.0)

    def has(self, column: str) -> bool:
        return column in self.ts.columns

    def steps(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) for a ``where="post"`` step plot whose last value holds to the end."""
        v = np.asarray(values, dtype=float)
        return np.append(self.time, self.end), np.append(v, v[-1])

    def _time_axis(self, ax: Any) -> None:
        ax.set_xlim(0, self.end)
        ax.set_xlabel(_TIME_LABEL)

    def host_memory(self) -> Figure:
        fig = Figure(figsize=(10, 6.5), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        layers: list[np.ndarray] = []
        labels: list[str] = []
        colours: list[Any] = []
        allocated = self.per_vm("allocated_pages")
        for k, vm in enumerate(self.vms):
            layers.append(allocated[vm].to_numpy() * self.page_mib)
            labels.append(f"{_label(vm)} allocated")
            colours.append(_colour(k))
        shared = _host_column(self.host, "host_shared_frames")
        free = _host_column(self.host, "host_free_pages")
        layers.append(shared * self.page_mib)
        labels.append("shared frames")
        colours.append("#9d4edd")
        if self.physical_pages is not None:
            # what no VM holds and is not free: the hypervisor's own page tables
            other = self.physical_pages - free - allocated.sum(axis=1).to_numpy() - shared
            layers.append(np.clip(other, 0, None) * self.page_mib)
            labels.append("host page tables, other")
            colours.append("#adb5bd")
        layers.append(free * self.page_mib)
        labels.append("free")
        colours.append("#e9ecef")
        t = np.append(self.time, self.end)
        stacked = [np.append(layer, layer[-1]) for layer in layers]
        top.stackplot(t, stacked, labels=labels, colors=colours, step="post", edgecolor="none")
        compressed = self.per_vm("compressed_pages").sum(axis=1).to_numpy() * self.page_mib
        top.step(*self.steps(compressed), where="post", color="black", linestyle="--",
                 linewidth=1.2,
                 label="compressed pages\n(in cache frames, within allocated)")  # fmt: skip
        if self.physical_pages is not None:
            top.set_ylim(0, self.physical_pages * self.page_mib)
        top.set_ylabel("physical memory (MiB)")
        top.set_title("Host physical memory")
        _legend_outside(top)
        swapped = self.per_vm("host_swapped_pages").sum(axis=1).to_numpy() * self.page_mib
        xs, ys = self.steps(swapped)
        bottom.fill_between(xs, ys, step="post", color="#e76f51", alpha=0.35, linewidth=0)
        bottom.step(xs, ys, where="post", color="#e76f51", label="host-swapped pages")
        bottom.set_ylabel("host swap (MiB)")
        bottom.set_title("Not in physical memory: pages on the host swap device", fontsize=9)
        _from_zero(bottom)
        _legend_outside(bottom)
        self._time_axis(bottom)
        return fig

    def vm_memory(self) -> Figure:
        n = len(self.vms)
        fig = Figure(figsize=(10, 1.2 + 2.3 * n), layout="constrained")
        axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
        allocated = self.per_vm("allocated_pages")
        target = self.per_vm("target_pages")
        balloon = self.per_vm("balloon_pages")
        active_true = self.per_vm("active_true")
        active_estimated = self.per_vm("active_estimated")
        for k, (ax, vm) in enumerate(zip(axes, self.vms, strict=True)):
            mib = self.page_mib
            ax.step(*self.steps(allocated[vm] * mib), where="post", color=_colour(k),
                    linewidth=1.8, label="allocated")  # fmt: skip
            ax.step(*self.steps(target[vm] * mib), where="post", color="black",
                    linestyle="--", linewidth=1, label="target")  # fmt: skip
            xs, ys = self.steps(balloon[vm] * mib)
            ax.fill_between(xs, ys, step="post", color="#f4a261", alpha=0.45, linewidth=0,
                            label="balloon")  # fmt: skip
            real = self.real_pages.get(vm)
            if real is not None:
                real_mib = real * mib
                ax.axhline(real_mib, color="#6c757d", linewidth=0.8, linestyle=":",
                           label="real memory")  # fmt: skip
                ax.step(*self.steps(active_true[vm] * real_mib), where="post",
                        color="#2a9d8f", linewidth=1, label="active (true)")  # fmt: skip
                ax.step(*self.steps(active_estimated[vm] * real_mib), where="post",
                        color="#2a9d8f", linestyle="-.", linewidth=1,
                        label="active (estimated)")  # fmt: skip
            ax.set_title(_label(vm), loc="left", fontsize=9, fontweight="bold")
            ax.set_ylabel("MiB")
            ax.set_ylim(bottom=0)
        _legend_outside(axes[0])
        self._time_axis(axes[-1])
        return fig

    def _state_runs(self) -> list[tuple[float, float, str]]:
        """(start, end, state) for each run of steps in the same state."""
        states = [str(s) for s in self.host["host_state"]]
        runs: list[tuple[float, float, str]] = []
        for k, state in enumerate(states):
            end = float(self.time[k + 1]) if k + 1 < len(states) else self.end
            if runs and runs[-1][2] == state:
                runs[-1] = (runs[-1][0], end, state)
            else:
                runs.append((float(self.time[k]), end, state))
        return runs

    def states(self) -> Figure:
        fig = Figure(figsize=(10, 5.5), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 2])
        runs = self._state_runs() if self.has("host_state") else []
        level = {s: len(STATES) - 1 - k for k, s in enumerate(STATES)}  # high on top
        for start, end, state in runs:
            colour = STATE_COLOURS.get(state, "#e9ecef")
            y = level.get(state, 0)
            top.fill_between([start, end], [y - 0.4] * 2, [y + 0.4] * 2, color=colour,
                             edgecolor="#495057", linewidth=0.5)  # fmt: skip
            bottom.axvspan(start, end, color=colour, alpha=0.6, linewidth=0)
        if runs:
            xs = [r[0] for r in runs] + [runs[-1][1]]
            ys = [level.get(r[2], 0) for r in runs] + [level.get(runs[-1][2], 0)]
            top.step(xs, ys, where="post", color="#212529", linewidth=1)
        top.set_yticks(range(len(STATES)), list(reversed(STATES)))
        top.set_ylim(-0.6, len(STATES) - 0.4)
        top.set_title("Free-memory state (background below: the same states)")
        free = _host_column(self.host, "host_free_pages") * self.page_mib
        bottom.step(*self.steps(free), where="post", color="#212529", label="free memory")
        if self.min_free_pages is not None:
            bottom.axhline(self.min_free_pages * self.page_mib, color="#d62828", linestyle="--",
                           linewidth=1, label="minFree")  # fmt: skip
        bottom.set_ylim(bottom=0)
        bottom.set_ylabel("host free memory (MiB)")
        bottom.legend(loc="upper right", fontsize=8)
        self._time_axis(bottom)
        return fig

    def _rates(self, column: str) -> tuple[np.ndarray, pd.DataFrame, float]:
        """Per-second rates of a cumulative column, per VM, over windows of a few steps:
        the window edges (one more than the rates), the rates, and the window's length."""
        counts = self.per_vm(column)
        n = len(self.time)
        width = max(1, round((n - 1) / self.RATE_WINDOWS))
        edges = list(range(0, n, width))
        if edges[-1] != n - 1:
            edges.append(n - 1)
        t = self.time[edges]
        rates = counts.iloc[edges].diff().iloc[1:].div(np.diff(t), axis=0)
        return t, rates.clip(lower=0).fillna(0.0), width * self.period

    def activity(self) -> Figure:
        fig = Figure(figsize=(10, 6), layout="constrained")
        faults_ax, through_ax = fig.subplots(2, 1, sharex=True)
        window = 0.0
        if len(self.time) > 1:
            t, guest, window = self._rates("guest_major_faults")
            _, host, _ = self._rates("host_major_faults")
            _, accesses, _ = self._rates("accesses")

            def steps(values: Any) -> list[float]:
                v = [float(x) for x in values]
                return [*v, v[-1]]

            for k, vm in enumerate(self.vms):
                colour = _colour(k)
                faults_ax.step(t, steps(guest[vm]), where="post", color=colour, linewidth=1.2,
                               label=f"{_label(vm)} guest")  # fmt: skip
                faults_ax.step(t, steps(host[vm]), where="post", color=colour, linewidth=1.2,
                               linestyle="--", label=f"{_label(vm)} host")  # fmt: skip
                through_ax.step(t, steps(accesses[vm]), where="post", color=colour,
                                linewidth=1.2, label=_label(vm))  # fmt: skip
            for ax in (faults_ax, through_ax):
                ax.yaxis.set_major_formatter(_thousands())
        else:
            for ax in (faults_ax, through_ax):
                ax.text(0.5, 0.5, "one reclamation step: no rates to draw", ha="center",
                        va="center", transform=ax.transAxes, color="#6c757d")  # fmt: skip
        over = f", averaged over {window:.3g} s" if window else ""
        faults_ax.set_title(f"Major faults (pages read back from swap or compression{over})")
        faults_ax.set_ylabel("faults per simulated s")
        _from_zero(faults_ax)
        _legend_outside(faults_ax)
        through_ax.set_title(f"Throughput{over}")
        through_ax.set_ylabel("accesses per simulated s")
        _from_zero(through_ax)
        _legend_outside(through_ax)
        self._time_axis(through_ax)
        return fig


def _zeros(index: Any, columns: list[str]) -> pd.DataFrame:
    """A frame of zeros: a column the time series lacks (an older run) draws as 0."""
    import pandas as pd

    return pd.DataFrame(0.0, index=index, columns=columns)


def _from_zero(ax: Any) -> None:
    """A y axis from 0; from 0 to 1 when all is 0 (matplotlib would centre it on 0)."""
    top = ax.dataLim.ymax
    ax.set_ylim(0, None if np.isfinite(top) and top > 0 else 1)


def _legend_outside(ax: Any) -> None:
    if ax.get_legend_handles_labels()[1]:  # a legend of nothing is a warning
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _host_column(host: pd.DataFrame, column: str) -> np.ndarray:
    if column not in host.columns:
        return np.zeros(len(host))
    values: np.ndarray = host[column].to_numpy(dtype=float)
    return values


# ------------------------------------------------------------------------ native runs


def _processes(processes: list[dict[str, Any]]) -> Figure:
    names = [_label(p.get("name", "?")) for p in processes]
    minor = np.array([float(p.get("minor_faults", 0)) for p in processes])
    major = np.array([float(p.get("major_faults", 0)) for p in processes])
    throughput = np.array([float(p.get("throughput", 0.0)) for p in processes])
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    faults_ax, through_ax = fig.subplots(1, 2)
    x = np.arange(len(processes))
    width = 0.38
    bars = faults_ax.bar(x - width / 2, minor, width, label="minor", color="#8ecae6")
    faults_ax.bar_label(bars, fmt="{:,.0f}", fontsize=7)
    bars = faults_ax.bar(x + width / 2, major, width, label="major", color="#e76f51")
    faults_ax.bar_label(bars, fmt="{:,.0f}", fontsize=7)
    faults_ax.set_xticks(x, names)
    faults_ax.set_ylabel("page faults")
    faults_ax.set_title("Page faults")
    faults_ax.legend(fontsize=8)
    faults_ax.yaxis.set_major_formatter(_thousands())
    bars = through_ax.bar(x, throughput, 0.6, color=[_colour(k) for k in range(len(x))])
    through_ax.bar_label(bars, fmt="{:,.0f}", fontsize=7)
    through_ax.set_xticks(x, names)
    through_ax.set_ylabel("accesses per simulated s")
    through_ax.set_title("Throughput")
    through_ax.yaxis.set_major_formatter(_thousands())
    return fig
