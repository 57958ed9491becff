"""The catalog: one SQLite table that records every run of a sweep.

A sweep's output directory holds ``catalog.sqlite``. Its table ``runs`` has
one row per run: the run's key (the hash of its resolved scenario), its
place in the sweep (one column per dimension, holding the label, and
``seed``), its ``--set`` overrides, its ``status`` (``pending``, ``ok`` or
``failed``), its ``error``, the wall ``seconds`` it took, when it finished,
its whole ``summary`` (summary.json, as text) and its metrics, one column
each. The table ``meta`` holds the sweep: its file, its base scenario and its
dimensions with their labels in order.

**Metrics as columns.** Each finished run's numeric summary values become
columns, added (``ALTER TABLE``) the first time a name appears:

- whole-machine metrics under plain names (:func:`metrics_of`): ``throughput``
  (accesses per simulated second, summed over the VMs — or the processes of a
  native machine), ``accesses``, ``major_faults``, the VMs' counters summed
  (``host_swap_outs``, ``double_paging_reads``, …) or a native run's totals,
  ``simulated_seconds``, ``overcommit_ratio``;
- the host's values under ``host.`` (``host.time_in_state.soft``,
  ``host.reclaimed_pages.ballooning``), each VM's under ``vms.NAME.``, each
  native process's under ``processes.NAME.``.

Booleans are stored as 0 and 1; strings (``host.state``) stay in the summary
only. A metric whose name is already a column (a dimension's) stays in the
summary only, and so do names beyond :data:`MAX_COLUMNS`.

**Consistency.** The database is in WAL mode, and each finished run is
committed in a transaction of its own, so an interrupt (Ctrl-C) or a crash
leaves every row either as it was or fully updated. Running the sweep again
(:meth:`Catalog.prepare`) skips the runs whose row is ``ok`` and runs the
``pending`` and ``failed`` ones; a run whose settings now resolve to another
scenario (the base file was edited) is run again; relabelling a case does not
rerun it (the key is the scenario, not the label).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memvirt.sweep.spec import FIXED_COLUMNS, SweepError

if TYPE_CHECKING:
    import pandas as pd

    from memvirt.sweep.runner import Outcome
    from memvirt.sweep.spec import SweepPlan

#: The catalog's file name in a sweep's output directory.
CATALOG = "catalog.sqlite"
#: Raised on an incompatible change of the catalog's tables.
SCHEMA_VERSION = 1
#: Columns a catalog may reach; metrics beyond stay in the summary (SQLite allows 2000).
MAX_COLUMNS = 1500

#: VM counters whose sum over the VMs is a whole-machine metric.
VM_SUMS = (
    "accesses", "tlb_misses", "walk_memory_references", "walk_cache_hits", "guest_faults",
    "guest_swap_ins", "guest_swap_outs", "host_faults", "host_swap_ins", "host_swap_outs",
    "vm_exits", "compressions", "decompressions", "double_paging_reads", "blocked_seconds",
)  # fmt: skip


def quote(name: str) -> str:
    """``name`` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _number(value: object) -> int | float | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value if not (isinstance(value, float) and math.isnan(value)) else None
    return None


def _flatten(prefix: str, node: object, out: dict[str, int | float | None]) -> None:
    """Numeric leaves of ``node`` under dotted names; list items by their ``name``."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            _flatten(f"{prefix}.{key}", value, out)
    elif isinstance(node, list):
        for k, item in enumerate(node):
            name = item.get("name", k) if isinstance(item, Mapping) else k
            _flatten(f"{prefix}.{name}", item, out)
    else:
        value = _number(node)
        if value is not None or node is None:
            out[prefix] = value


def metrics_of(summary: Mapping[str, Any]) -> dict[str, int | float | None]:
    """The metrics of a run's summary, by column name (the module docstring lists them)."""
    out: dict[str, int | float | None] = {}
    for key in ("simulated_seconds", "overcommit_ratio", "virtual_memory_ratio"):
        if key in summary:
            out[key] = _number(summary[key])
    if "vms" in summary:
        vms = summary["vms"]
        out["throughput"] = math.fsum(vm["throughput"] for vm in vms)
        for key in VM_SUMS:
            if all(key in vm for vm in vms):
                if all(isinstance(vm[key], int) for vm in vms):
                    out[key] = sum(vm[key] for vm in vms)
                else:
                    out[key] = math.fsum(vm[key] for vm in vms)
        out["major_faults"] = sum(vm["guest_swap_ins"] + vm["host_swap_ins"] for vm in vms)
        for vm in vms:
            for key, value in vm.items():
                if key not in ("name", "processes"):
                    _flatten(f"vms.{vm['name']}.{key}", value, out)
    else:
        processes = summary.get("processes", [])
        out["throughput"] = math.fsum(p["throughput"] for p in processes)
        for key, value in summary.get("totals", {}).items():
            number = _number(value)
            if number is not None:
                out[key] = number
        for p in processes:
            for key, value in p.items():
                if key != "name":
                    _flatten(f"processes.{p['name']}.{key}", value, out)
    _flatten("host", summary.get("host", {}), out)
    return out


def _create_meta(db: sqlite3.Connection) -> None:
    """The table that makes a database a catalog, with its schema version."""
    db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta (name, value) VALUES (?, ?)",
               ("schema_version", json.dumps(SCHEMA_VERSION)))  # fmt: skip


def _make(path: Path) -> None:
    """A new, empty catalog at ``path``, made under a temporary name and renamed: a reader
    (``memvirt sweep status`` while the sweep starts) never finds a file without its meta
    table."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with closing(sqlite3.connect(tmp, isolation_level=None)) as db:
            _create_meta(db)
        os.replace(tmp, path)
    except (OSError, sqlite3.DatabaseError) as err:
        tmp.unlink(missing_ok=True)
        raise SweepError(f"{path}: cannot make the sweep catalog: {err}") from None


class Catalog:
    """A sweep's SQLite catalog, open for reading and writing (one writer: the process that
    runs the sweep)."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    # ---- opening

    @classmethod
    def open(cls, out_dir: str | Path, *, create: bool = False) -> Catalog:
        """The catalog in ``out_dir``; made (with the directory) when ``create``."""
        out = Path(out_dir)
        path = out / CATALOG
        if not create and not path.is_file():
            raise SweepError(f"{out}: no sweep catalog here ({CATALOG} not found)")
        if create:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise SweepError(
                    f"--out {out}: cannot make the directory: {err.strerror}"
                ) from None
            if not path.exists():
                _make(path)
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a crash of memvirt
            catalog = cls(path, db)
            catalog._check_or_create(create)
        except sqlite3.DatabaseError as err:
            raise SweepError(f"{path}: not a memvirt sweep catalog: {err}") from None
        return catalog

    def _check_or_create(self, create: bool) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        if "meta" not in tables:
            if tables or not create:
                raise SweepError(f"{self.path}: not a memvirt sweep catalog (no meta table)")
            with self.transaction():
                _create_meta(self._db)
            return
        version = self.meta().get("schema_version")
        if version != SCHEMA_VERSION:
            raise SweepError(
                f"{self.path}: catalog schema version {version}; this memvirt reads version "
                f"{SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed at the end, rolled back on any exception (an
        interrupt among them)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---- meta

    def _set_meta(self, name: str, value: object) -> None:
        self._db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, json.dumps(value)),
        )

    def meta(self) -> dict[str, Any]:
        """The sweep the catalog records: ``schema_version``, ``sweep`` (the file),
        ``scenario``, ``dimensions`` (name, kind, labels), ``report`` (the file's
        defaults)."""
        return {n: json.loads(v) for n, v in self._db.execute("SELECT name, value FROM meta")}

    def dimensions(self) -> list[str]:
        return [d["name"] for d in self.meta().get("dimensions", [])]

    def _has_runs(self) -> bool:
        """Whether the runs table exists yet (it is made when the first sweep is planned)."""
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
        return self._db.execute(query).fetchone() is not None

    def columns(self) -> list[str]:
        if not self._has_runs():
            return []
        with closing(self._db.execute("SELECT * FROM runs LIMIT 0")) as cursor:
            return [d[0] for d in cursor.description]

    def metric_columns(self) -> list[str]:
        """The metric columns, in the order they were added."""
        skip = {*FIXED_COLUMNS, *self.dimensions()}
        return [c for c in self.columns() if c not in skip]

    # ---- planning

    def check(self, plan: SweepPlan) -> None:
        """Raise :class:`SweepError` unless the catalog is empty or records a sweep over the
        same dimensions as ``plan``."""
        names = [d.name for d in plan.spec.dimensions]
        had = self.meta().get("dimensions")
        if had is not None and [d["name"] for d in had] != names:
            before = ", ".join(d["name"] for d in had) or "none"
            raise SweepError(
                f"{self.path}: this catalog records a sweep over ({before}), not "
                f"({', '.join(names) or 'none'}): give the sweep another --out directory"
            )

    def prepare(self, plan: SweepPlan) -> set[str]:
        """Record ``plan``'s runs (new ones as ``pending``) and return the keys of those to
        run: every planned run whose row is not ``ok``."""
        names = [d.name for d in plan.spec.dimensions]
        with self.transaction() as db:
            self.check(plan)
            if "dimensions" not in self.meta():
                dims = ", ".join(f"{quote(n)} TEXT NOT NULL" for n in names)
                db.execute(
                    "CREATE TABLE runs ("
                    "key TEXT PRIMARY KEY, point TEXT NOT NULL UNIQUE, "
                    + (dims + ", " if dims else "")
                    + "seed INTEGER NOT NULL, "
                    "status TEXT NOT NULL CHECK (status IN ('pending', 'ok', 'failed')), "
                    "error TEXT, seconds REAL, finished_at TEXT, overrides TEXT NOT NULL, "
                    "summary TEXT)"
                )
            self._set_meta("sweep", str(plan.spec.path))
            self._set_meta("scenario", str(plan.spec.scenario))
            self._set_meta("dimensions", [d.to_dict() for d in plan.spec.dimensions])
            self._set_meta("report", plan.spec.report.model_dump())

            planned = {run.key: run for run in plan.runs}
            points = {run.point for run in plan.runs}
            for key, point, status in db.execute("SELECT key, point, status FROM runs").fetchall():
                # a place in the sweep that now resolves to another scenario, or a run the
                # sweep no longer has and that never finished: drop them
                stale = key not in planned and point in points
                gone = key not in planned and status != "ok"
                if stale or gone:
                    db.execute("DELETE FROM runs WHERE key = ?", (key,))
                elif key in planned and point != planned[key].point:
                    # relabelled: park the point, so that labels may move between rows
                    db.execute("UPDATE runs SET point = 'moving:' || key WHERE key = ?", (key,))
            have = {k for (k,) in db.execute("SELECT key FROM runs")}
            label_columns = "".join(f", {quote(n)}" for n in names)
            for run in plan.runs:
                labels = [label for _, label in run.labels]
                if run.key in have:
                    sets = "".join(f", {quote(n)} = ?" for n in names)
                    db.execute(
                        f"UPDATE runs SET point = ?, seed = ?, overrides = ?{sets} WHERE key = ?",
                        (run.point, run.seed, json.dumps(run.overrides), *labels, run.key),
                    )
                else:
                    marks = ", ?" * len(names)
                    db.execute(
                        f"INSERT INTO runs (key, point{label_columns}, seed, status, overrides) "
                        f"VALUES (?, ?{marks}, ?, 'pending', ?)",
                        (run.key, run.point, *labels, run.seed, json.dumps(run.overrides)),
                    )
            done = {k for (k,) in db.execute("SELECT key FROM runs WHERE status = 'ok'")}
        return set(planned) - done

    # ---- recording

    def record(self, outcome: Outcome) -> None:
        """Store one run's outcome, in a transaction of its own."""
        finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        values: dict[str, object] = {
            "status": "ok" if outcome.ok else "failed",
            "error": outcome.error,
            "seconds": outcome.seconds,
            "finished_at": finished,
            "summary": None if outcome.summary is None else json.dumps(outcome.summary),
        }
        with self.transaction() as db:
            if outcome.summary is not None:
                columns = self.columns()
                dims = set(self.dimensions())
                known = set(columns)
                count = len(columns)
                for name, value in metrics_of(outcome.summary).items():
                    if name in dims or name in FIXED_COLUMNS:
                        continue  # a dimension's column: the value stays in the summary
                    if name not in known:
                        if count >= MAX_COLUMNS:
                            continue
                        db.execute(f"ALTER TABLE runs ADD COLUMN {quote(name)} NUMERIC")
                        known.add(name)
                        count += 1
                    values[name] = value
            sets = ", ".join(f"{quote(n)} = ?" for n in values)
            db.execute(f"UPDATE runs SET {sets} WHERE key = ?", (*values.values(), outcome.key))

    # ---- reading

    def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        """The runs (with ``status`` only, when given), ordered by their place in the sweep."""
        if not self._has_runs():
            return []
        query = "SELECT * FROM runs" + (" WHERE status = ?" if status else "") + " ORDER BY point"
        with closing(self._db.execute(query, (status,) if status else ())) as cursor:
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor]

    def counts(self) -> dict[str, int]:
        """Runs by status."""
        out = {"pending": 0, "ok": 0, "failed": 0}
        if not self._has_runs():
            return out
        for status, n in self._db.execute("SELECT status, count(*) FROM runs GROUP BY status"):
            out[status] = n
        return out

    def frame(self, status: str | None = "ok") -> pd.DataFrame:
        """The runs as a pandas DataFrame (without the summaries), one row each."""
        import pandas as pd

        rows = self.rows(status)
        columns = [c for c in self.columns() if c != "summary"]
        return pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns)


__all__ = ["CATALOG", "MAX_COLUMNS", "SCHEMA_VERSION", "VM_SUMS", "Catalog", "metrics_of", "quote"]
