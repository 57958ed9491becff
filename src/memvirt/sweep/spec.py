"""Sweep files: one scenario, the settings to vary, and the seeds, in TOML.

A single run answers "how does *this* machine behave?". Questions such as "how
does throughput fall as overcommitment grows?" or "which reclamation technique
wins for which workload?" need the same scenario run many times: once per
combination of the settings being compared, and several times per combination
with different seeds, so that the differences can be told apart from chance.

A sweep file names a base scenario and the *dimensions* to vary:

- a **grid** dimension varies one setting by its dotted path, exactly as
  ``--set`` would (``hypervisor.paging = ["nested", "shadow"]``);
- a **case** dimension is a named list of labelled cases, each a list of
  ``--set`` overrides (``ballooning = ["hypervisor.balloon.enabled=true"]``).
  Cases express what no single setting does: a technique that needs three
  switches, or an overcommitment ratio reached by changing the host's memory.

The runs are every combination of one value of each dimension (the cross
product), each run once per seed. :func:`load_sweep` reads and validates the
file (errors name the file, the line and the key, as :mod:`memvirt.config`
does); :func:`plan_sweep` resolves every run to a validated scenario, whose
hash (:meth:`memvirt.config.Scenario.hash`) is the run's key in the catalog.
docs/sweeps.md describes the format.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from memvirt.config import (
    Problem,
    Scenario,
    ScenarioError,
    _apply_override,
    _dotted,
    _key_lines,
    _show,
    load_scenario,
)

#: Columns every catalog row has (memvirt.sweep.catalog); no dimension may take their names.
FIXED_COLUMNS = (
    "key",
    "point",
    "seed",
    "status",
    "error",
    "seconds",
    "finished_at",
    "overrides",
    "summary",
)

#: The catalog's whole-machine metrics (memvirt.sweep.catalog.metrics_of): a VM run's
#: sums over its VMs, a native run's totals; no dimension may take their names either.
METRIC_NAMES = (
    "throughput", "accesses", "major_faults", "simulated_seconds", "overcommit_ratio",
    "virtual_memory_ratio",
    # VMs, summed
    "tlb_misses", "walk_memory_references", "walk_cache_hits", "guest_faults",
    "guest_swap_ins", "guest_swap_outs", "host_faults", "host_swap_ins", "host_swap_outs",
    "vm_exits", "compressions", "decompressions", "double_paging_reads", "blocked_seconds",
    # a native machine's totals
    "reads", "writes", "faults", "minor_faults", "evictions", "writebacks", "clean_drops",
    "zero_drops", "swap_ins", "swap_outs", "tlb_hits", "tlb_l1_hits", "tlb_l1_misses",
    "tlb_l2_hits", "tlb_l2_misses", "walks", "table_pages_allocated", "dirty_bit_updates",
    "swap_read_errors", "swap_write_errors",
)  # fmt: skip

#: A case dimension's name: a word, so that it cannot be taken for a dotted setting.
_CASE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class SweepError(ScenarioError):
    """A sweep that cannot be read or planned: one line per problem, each naming the file,
    the line when it can be found, the key and what was expected."""


# ----------------------------------------------------------------------- the file


def _seeds(value: object) -> object:
    """A count of seeds (``3``: seeds 0, 1 and 2) or an explicit list of them."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError("a count of seeds must be at least 1")
        return tuple(range(value))
    if isinstance(value, list):
        if not value:
            raise ValueError("expected at least one seed")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
            raise ValueError("expected seeds as integers of 0 or more, such as [1, 2, 3]")
        if len(set(value)) != len(value):
            raise ValueError("each seed may appear once")
        return tuple(value)
    raise ValueError("expected a count of seeds (3: seeds 0, 1, 2) or a list such as [1, 5, 9]")


def _override(value: str) -> str:
    """A ``KEY=VALUE`` setting, as ``--set`` takes it."""
    key, sep, _ = value.partition("=")
    if not sep or not key.strip():
        raise ValueError("expected KEY=VALUE, such as host.memory=256MiB")
    return value


Override = Annotated[str, AfterValidator(_override)]
Seeds = Annotated[tuple[int, ...] | None, BeforeValidator(_seeds)]

_MODEL = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class SweepTable(BaseModel):
    """``[sweep]``: the base scenario, the seeds and the settings every run shares."""

    model_config = _MODEL

    scenario: str = Field(
        min_length=1, description="the base scenario file, relative to the sweep file"
    )
    seeds: Seeds = Field(
        None,
        description="a count (3: seeds 0, 1, 2) or a list of seeds; absent: the scenario's own",
    )
    settings: tuple[Override, ...] = Field(
        (), alias="set", description="KEY=VALUE overrides applied to every run, before the rest"
    )


class ReportTable(BaseModel):
    """``[report]``: what ``memvirt sweep report`` draws when its options do not say."""

    model_config = _MODEL

    metric: str = Field("throughput", min_length=1, description="the metric on the y axis")
    x: str | None = Field(None, description="the dimension on the x axis")
    lines: str | None = Field(None, description="the dimension drawn as one line per value")


class SweepFile(BaseModel):
    """A whole sweep file, validated (the grid already flattened to dotted paths)."""

    model_config = _MODEL

    sweep: SweepTable
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    cases: dict[str, dict[str, list[Override]]] = Field(default_factory=dict)
    report: ReportTable = Field(default_factory=ReportTable)

    @model_validator(mode="after")
    def _dimensions(self) -> SweepFile:
        problems: list[tuple[tuple[str | int, ...], object, str]] = []
        names: list[str] = []
        for name, labels in self.cases.items():
            if not _CASE_NAME.fullmatch(name):
                problems.append(
                    (("cases", name), None, "a case name is a word: a letter, then letters, "
                     "digits, '-' or '_' (a dotted setting belongs in [grid])")
                )  # fmt: skip
            if not labels:
                problems.append((("cases", name), None, "expected at least one labelled case"))
            names.append(name)
        for path, values in self.grid.items():
            if not values:
                problems.append((("grid", path), values, "expected at least one value"))
            rendered = [toml_value(v) for v in values]
            for k, text in enumerate(rendered):
                if text in rendered[:k]:
                    problems.append((("grid", path, k), values[k], "appears twice"))
            names.append(path)
        for n, name in enumerate(names):
            table = "cases" if n < len(self.cases) else "grid"
            if name in FIXED_COLUMNS or name in METRIC_NAMES:
                what = "a column" if name in FIXED_COLUMNS else "a metric"
                problems.append(
                    ((table, name), None, f"is {what} of the catalog; choose another name")
                )
            elif name in names[:n]:
                problems.append(((table, name), None, "is also the name of a case dimension"))
        for field in ("x", "lines"):
            chosen = getattr(self.report, field)
            if chosen is not None and chosen not in names:
                known = ", ".join(names) or "none"
                problems.append(
                    (("report", field), chosen, f"not a dimension of the sweep (they are: {known})")
                )
        if self.report.x is not None and self.report.x == self.report.lines:
            problems.append((("report", "lines"), self.report.lines, "must differ from x"))
        _raise_located(problems)
        return self


def _raise_located(problems: list[tuple[tuple[str | int, ...], object, str]]) -> None:
    from pydantic_core import InitErrorDetails, PydanticCustomError

    if problems:
        raise ValidationError.from_exception_data(
            "SweepFile",
            [
                InitErrorDetails(
                    type=PydanticCustomError("sweep", "{message}", {"message": message}),
                    loc=loc,
                    input=value,
                )
                for loc, value, message in problems
            ],
        )


# -------------------------------------------------------------------- TOML values


def toml_value(value: object) -> str:
    """``value`` written as a TOML value, so that ``--set KEY=<text>`` reads it back equal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are all valid in a TOML basic string, which also forbids a raw DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if hasattr(value, "isoformat"):  # TOML dates and times
        return str(value.isoformat())
    raise TypeError(f"cannot write {value!r} as a TOML value")


def label_of(value: object) -> str:
    """How a grid value is shown and stored: strings as they are, the rest as TOML."""
    return value if isinstance(value, str) else toml_value(value)


# ----------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Dimension:
    """One thing a sweep varies: a case dimension or a grid setting, with its labels in file
    order and the overrides each label stands for."""

    name: str
    kind: str  # "case" or "grid"
    labels: tuple[str, ...]
    overrides: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "labels": list(self.labels)}


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file."""

    path: Path
    scenario: Path  # the base scenario, as a path from the current directory
    seeds: tuple[int, ...] | None
    settings: tuple[str, ...]
    dimensions: tuple[Dimension, ...]
    report: ReportTable
    text: str

    def line_of(self, *loc: str | int) -> int | None:
        """The line of ``loc`` (a key path, a dotted setting split into parts) in the file."""
        lines = _key_lines(self.text)
        parts = _split(loc)
        for n in range(len(parts), 0, -1):
            if parts[:n] in lines:
                return lines[parts[:n]]
        return None

    def where(self, *loc: str | int) -> str:
        """``FILE:LINE`` of ``loc``, or the file alone."""
        line = self.line_of(*loc)
        return f"{self.path}:{line}" if line is not None else str(self.path)


def _split(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """A location whose dotted grid paths are split into their parts, as _key_lines keys."""
    out: list[str | int] = []
    for part in loc:
        out.extend(part.split(".") if isinstance(part, str) else [part])
    return tuple(out)


def _flatten_grid(grid: object, problems: list[tuple[str, str]]) -> object:
    """``[grid]`` with nested tables (``hypervisor.balloon.enabled = [...]`` unquoted) as
    dotted paths; each setting's value must be a list of the values to try."""
    if not isinstance(grid, Mapping):
        return grid
    flat: dict[str, object] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping):
                walk(value, path)
            elif isinstance(value, list):
                flat[path] = value
            else:
                problems.append(
                    (path, f"{_show(value)}: expected a list of the values to try, such as "
                     f"[{toml_value(value)}]")
                )  # fmt: skip

    walk(grid, "")
    return flat


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate the sweep file at ``path``; :class:`SweepError` otherwise."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise SweepError(f"{path}: cannot read the sweep file: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise SweepError(
            f"{path}: byte {err.start}: not UTF-8 text; a sweep is a TOML file"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", str(err))
        if found:
            message = str(err)[: found.start()]
            raise SweepError(f"{path}:{found.group(1)}:{found.group(2)}: {message}") from None
        raise SweepError(f"{path}: {err}") from None
    lines = _key_lines(text)

    def where(loc: Sequence[str | int]) -> tuple[str, int | None]:
        parts = _split(loc)
        for n in range(len(parts), -1, -1):
            if parts[:n] in lines:
                return f"{path}:{lines[parts[:n]]}", lines[parts[:n]]
        return str(path), None

    grid_problems: list[tuple[str, str]] = []
    data = dict(raw)
    if "grid" in data:
        data["grid"] = _flatten_grid(data["grid"], grid_problems)
    problems: list[Problem] = []
    rendered: list[str] = []
    for setting, message in grid_problems:
        place, line = where(("grid", setting))
        problems.append(Problem(f"grid.{setting}", message, None, line))
        rendered.append(f"{place}: grid.{setting} = {message}")
    spec: SweepFile | None = None
    try:
        spec = SweepFile.model_validate(data)
    except ValidationError as err:
        for e in err.errors(include_url=False):
            loc = tuple(e["loc"])
            dotted = _dotted(loc)
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] == "missing":
                message, value = "required, but not given", None
            elif e["type"] == "extra_forbidden":
                message, value = f"unknown key; expected one of: {_keys_at(loc)}", None
            else:
                value = None if e["input"] is None else _show(e["input"])
            place, line = where(loc)
            problems.append(Problem(dotted, message, value, line))
            shown = f"{dotted} = {value}" if value is not None else dotted
            rendered.append(f"{place}: {shown}: {message}")
    if problems:
        order = sorted(range(len(problems)), key=lambda k: problems[k].line or 0)
        raise SweepError("\n".join(rendered[k] for k in order), [problems[k] for k in order])
    assert spec is not None
    dimensions = [
        Dimension(name, "case", tuple(labels), tuple(tuple(o) for o in labels.values()))
        for name, labels in spec.cases.items()
    ]
    dimensions += [
        Dimension(
            setting,
            "grid",
            tuple(label_of(v) for v in values),
            tuple((f"{setting}={toml_value(v)}",) for v in values),
        )
        for setting, values in spec.grid.items()
    ]
    return SweepSpec(
        path=path,
        scenario=path.parent / spec.sweep.scenario,
        seeds=spec.sweep.seeds,
        settings=spec.sweep.settings,
        dimensions=tuple(dimensions),
        report=spec.report,
        text=text,
    )


def _keys_at(loc: tuple[str | int, ...]) -> str:
    """The keys the table holding ``loc`` may have."""
    models: dict[tuple[str | int, ...], type[BaseModel]] = {
        (): SweepFile,
        ("sweep",): SweepTable,
        ("report",): ReportTable,
    }
    model = models.get(loc[:-1])
    if model is None:
        return "none"
    return ", ".join(f.alias or name for name, f in model.model_fields.items())


# ---------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: a value of each dimension and a seed, resolved to a scenario."""

    key: str  # Scenario.hash() of the resolved scenario
    labels: tuple[tuple[str, str], ...]  # (dimension, label), in dimension order
    seed: int
    overrides: tuple[str, ...]  # every --set of the run, sweep.set first, run.seed last

    @property
    def point(self) -> str:
        """The run's place in the sweep as canonical JSON: its labels and its seed."""
        return json.dumps([*map(list, self.labels), ["seed", self.seed]], separators=(",", ":"))

    def describe(self) -> str:
        """``overcommit=1.5 technique=ballooning seed=2``."""
        return " ".join([*(f"{d}={v}" for d, v in self.labels), f"seed={self.seed}"])


@dataclass(frozen=True)
class SweepPlan:
    """Every run of a sweep, validated, in order (the last dimension and the seed vary
    fastest)."""

    spec: SweepSpec
    base: Scenario  # the base scenario with sweep.set applied
    scenario_text: str
    runs: tuple[PlannedRun, ...]


#: Runs that do not validate listed before the rest are only counted.
_MAX_LISTED = 8


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Resolve every run of ``spec`` to a validated scenario and its hash.

    Raise :class:`SweepError` when the base scenario, a case's or a grid's
    override, or any combination does not validate: a sweep is checked whole
    before anything runs.
    """
    for key, settings in (("scenario", ()), ("set", spec.settings)):
        try:
            base = load_scenario(spec.scenario, settings)
        except ScenarioError as err:
            place = spec.where("sweep", key)
            lines = str(err).splitlines()
            raise SweepError("\n".join(f"{place}: sweep.{key}: {line}" for line in lines)) from None
    text = spec.scenario.read_text(encoding="utf-8")
    raw = tomllib.loads(text)

    # every override must name a setting the scenario has; which settings each dimension
    # sets (resolved, list items by index) must not overlap another dimension's
    problems: list[str] = []
    data = copy.deepcopy(raw)
    for setting in spec.settings:
        _apply_override(data, setting, str(spec.path))
    seed_path = ("run", "seed")
    if any(_resolved(data, s, str(spec.path)) == seed_path for s in spec.settings):
        problems.append(f"{spec.where('sweep', 'set')}: sweep.set: {_SEED_RULE}")
    touched: dict[tuple[str | int, ...], str] = {}
    for dim in spec.dimensions:
        table = "cases" if dim.kind == "case" else "grid"
        mine: set[tuple[str | int, ...]] = set()
        for label, overrides in zip(dim.labels, dim.overrides, strict=True):
            loc = (table, dim.name, label) if dim.kind == "case" else (table, dim.name)
            place = spec.where(*loc)
            for setting in overrides:
                try:
                    mine.add(_resolved(data, setting, f"{place}: {_dotted(loc)}"))
                except ScenarioError as err:
                    problems.append(str(err))
        if seed_path in mine:
            problems.append(f"{spec.where(table, dim.name)}: {table}.{dim.name}: {_SEED_RULE}")
        for path in sorted(mine, key=str):
            other = touched.get(path)
            if other is not None and path != seed_path:
                problems.append(
                    f"{spec.where(table, dim.name)}: {table}.{dim.name}: sets {_dotted(path)}, "
                    f"which {other} sets too: which would win depends on their order"
                )
            touched.setdefault(path, f"{table}.{dim.name}")
    if problems:
        raise SweepError("\n".join(problems))

    seeds = spec.seeds if spec.seeds is not None else (base.run.seed,)
    runs: list[PlannedRun] = []
    failures: list[str] = []
    failed = 0
    seen: dict[str, PlannedRun] = {}
    choices = [range(len(d.labels)) for d in spec.dimensions]
    for combo in itertools.product(*choices):
        labels = tuple((d.name, d.labels[k]) for d, k in zip(spec.dimensions, combo, strict=True))
        dims = tuple(o for d, k in zip(spec.dimensions, combo, strict=True) for o in d.overrides[k])
        for seed in seeds:
            overrides = (*dims, f"run.seed={seed}")
            planned = PlannedRun("", labels, seed, (*spec.settings, *overrides))
            try:
                scenario = base.with_overrides(overrides)
            except ScenarioError as err:
                failed += 1
                if failed <= _MAX_LISTED:
                    failures.extend(
                        f"{spec.path}: run {planned.describe()}: {line}"
                        for line in str(err).splitlines()
                    )
                continue
            key = scenario.hash()
            if key in seen:
                raise SweepError(
                    f"{spec.path}: runs {seen[key].describe()} and {planned.describe()} resolve "
                    f"to the same scenario: a sweep runs each scenario once (hash {key[:12]})"
                )
            run = PlannedRun(key, labels, seed, planned.overrides)
            seen[key] = run
            runs.append(run)
    if failures:
        more = failed - min(failed, _MAX_LISTED)
        tail = [f"{spec.path}: ... and {more} more runs that do not validate"] if more > 0 else []
        raise SweepError("\n".join([*failures, *tail]))
    return SweepPlan(spec, base, text, tuple(runs))


_SEED_RULE = "sets run.seed, which the sweep's seeds set: give them as sweep.seeds"


def _resolved(data: dict[str, Any], setting: str, source: str) -> tuple[str | int, ...]:
    """The key path (list items by index) that ``setting`` sets in the scenario ``data``;
    a :class:`ScenarioError` whose message starts with ``source`` when it sets none."""
    return _apply_override(copy.deepcopy(data), setting, source)


__all__ = [
    "FIXED_COLUMNS",
    "METRIC_NAMES",
    "Dimension",
    "PlannedRun",
    "ReportTable",
    "SweepError",
    "SweepPlan",
    "SweepSpec",
    "label_of",
    "load_sweep",
    "plan_sweep",
    "toml_value",
]
