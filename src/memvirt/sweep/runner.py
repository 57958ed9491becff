"""Running a sweep's runs: in this process, in a pool of local processes, or on a Dask cluster.

Every run of a sweep is independent of the others, so they can run anywhere,
in any order. This module sends them out through one code path whatever runs
them: each place is a :class:`concurrent.futures.Executor` —

- :class:`SerialExecutor`: in this process, one after the other (``--workers 1``);
- :class:`concurrent.futures.ProcessPoolExecutor`: a pool of local processes
  (``--workers N``, the default is one per CPU);
- dask.distributed's ``ClientExecutor``: the workers of an existing Dask
  cluster (``--scheduler tcp://HOST:PORT``).

Each run keeps to one thread on a pool's or a cluster's worker (the workers
already keep every core busy): a local worker sets ``MEMVIRT_ONE_THREAD``,
and a Dask task runs inside :func:`memvirt.workloads.ahead.one_thread`,
which leaves the worker's environment alone.

Each gets the same callable, :func:`execute`, and a :class:`RunTask` of plain
data — the base scenario's text, the run's ``--set`` overrides (its seed
among them) — so that it pickles to another process or machine; it returns an
:class:`Outcome`: the run's key, its summary or its error, and the seconds it
took. A run that raises is an outcome with an error, never a failure of the
sweep. :func:`run_tasks` keeps a few runs in flight per worker and hands each
outcome to a callback as soon as it arrives (the catalog commits it there),
so that an interrupt loses at most the runs still in flight.

A run's summary depends only on its scenario and seed, so it is the same
whichever executor ran it (tests/test_sweep.py checks in-process, pool and
Dask against each other).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib
import multiprocessing
import os
import signal
import time
import tomllib
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memvirt.sweep.spec import PlannedRun, SweepError, SweepPlan
from memvirt.workloads.ahead import ONE_THREAD, one_thread, usable_cpus

if TYPE_CHECKING:
    from memvirt.sweep.catalog import Catalog


@dataclass(frozen=True)
class RunTask:
    """What a worker needs to do one run: plain data, so that it pickles anywhere.

    The scenario travels as its text, not its path, so that a worker on another
    machine needs no copy of it (trace files it names must still be at
    ``base_dir`` there).
    """

    key: str  # the hash the resolved scenario must have
    source: str  # the scenario's file name, as summary.json's scenario.source
    text: str  # the base scenario file's TOML text
    base_dir: str  # where its relative trace paths start
    overrides: tuple[str, ...]  # every --set of the run, its seed last

    def arguments(self) -> str:
        """The run as ``memvirt run``'s arguments: ``base.toml --set host.memory=256MiB
        --set run.seed=2`` (sweep.set, the case, the seed). A failed run's error starts with
        them: they name the run, and ``memvirt run`` given them runs the same scenario."""
        return " ".join([self.source, *(f"--set {setting}" for setting in self.overrides)])


@dataclass(frozen=True)
class Outcome:
    """What came back from one run: its summary, or the error that stopped it."""

    key: str
    summary: dict[str, Any] | None
    error: str | None
    seconds: float | None  # wall time of the run (None when the worker was lost)

    @property
    def ok(self) -> bool:
        return self.error is None


def tasks_of(plan: SweepPlan, keys: set[str] | None = None) -> list[RunTask]:
    """The tasks of a plan's runs (those in ``keys`` only, when given), in plan order."""
    source = str(plan.spec.scenario)
    base_dir = str(plan.spec.scenario.parent.resolve())
    return [
        RunTask(run.key, source, plan.scenario_text, base_dir, run.overrides)
        for run in plan.runs
        if keys is None or run.key in keys
    ]


def execute(task: RunTask) -> Outcome:
    """Do one run; any error becomes the outcome's ``error``: the run (its scenario and
    overrides), the error's type and message, and its last frame."""
    from memvirt.config import scenario_from_dict
    from memvirt.engine.scenario import run

    start = time.perf_counter()
    try:
        data = tomllib.loads(task.text)
        scenario = scenario_from_dict(data, task.source, task.overrides, base_dir=task.base_dir)
        if scenario.hash() != task.key:
            # the worker resolved the settings differently: another memvirt version there?
            raise RuntimeError(
                f"the scenario resolves to hash {scenario.hash()[:12]} on this worker, not "
                f"{task.key[:12]}: is the same memvirt version installed everywhere?"
            )
        summary = run(scenario).summary
    except Exception as err:
        return Outcome(task.key, None, _failure(task, err), time.perf_counter() - start)
    return Outcome(task.key, summary, None, time.perf_counter() - start)


def _failure(task: RunTask, err: BaseException, why: str = "") -> str:
    """A failed run's error, as the catalog records it: ``SCENARIO --set ...: why Type:
    message (at file:line in function)``. The run comes first, so that the message read alone
    (in the catalog, in a report, on a terminal) says which scenario and case failed."""
    return f"{task.arguments()}: {why}{_error_text(err)}"


def _error_text(err: BaseException) -> str:
    """``Type: message (at file:line in function)``: enough to find what failed."""
    text = f"{type(err).__name__}: {err}"
    frames = traceback.extract_tb(err.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return text


# --------------------------------------------------------------------- executors


class SerialExecutor(cf.Executor):
    """Runs each call in this process as it is submitted: the executor of ``--workers 1``."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # an interrupt propagates; an error belongs to the future
            future.set_exception(err)
        return future


@dataclass
class Runner:
    """An executor, how many runs to keep in flight on it, and what it is (for messages)."""

    executor: cf.Executor
    slots: int
    description: str
    client: Any = None  # the dask.distributed Client, to close

    def close(self, *, cancel: bool = False) -> None:
        """Shut the executor down; with ``cancel``, drop the runs not started yet."""
        if isinstance(self.executor, cf.ProcessPoolExecutor):
            self.executor.shutdown(wait=not cancel, cancel_futures=cancel)
            if cancel:
                # the runs in progress would otherwise finish first (and the interpreter wait
                # for them at exit); Python 3.14 has terminate_workers() for this
                processes = getattr(self.executor, "_processes", None) or {}
                for process in list(processes.values()):
                    process.terminate()
        else:
            self.executor.shutdown(wait=not cancel)
        if self.client is not None:
            with contextlib.suppress(Exception):  # a cluster already gone has nothing to close
                self.client.close()


def default_workers() -> int:
    """Local worker processes when ``--workers`` is not given: one per CPU this process may
    use."""
    return usable_cpus()


def local_runner(workers: int) -> Runner:
    """``workers`` local processes (started fresh, not forked), or this process for 1."""
    if workers < 1:
        raise SweepError(f"--workers: expected 1 or more, got {workers}")
    if workers == 1:
        return Runner(SerialExecutor(), 1, "in this process")
    # spawn, not fork: a forked child would inherit the parent's threads' locks (the
    # progress bar's), and numba is not fork-safe once it has compiled
    pool = cf.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker
    )
    return Runner(pool, 2 * workers, f"on {workers} local processes")


def _start_worker() -> None:
    """In a pool's worker: leave Ctrl-C to the parent, which cancels the sweep and ends the
    workers (a terminal sends SIGINT to the whole process group); and keep to one thread,
    since the workers already keep every core busy (the 63 runs of
    examples/sweep-overcommit.toml took 13-16 s so, against 19-21 s with a second thread
    in each worker, with the same results)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ[ONE_THREAD] = "1"


def in_one_thread(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, whose runs keep to one thread (:func:`memvirt.workloads.ahead.
    one_thread`)."""
    with one_thread():
        return fn(*args, **kwargs)


class OneThreadExecutor(cf.Executor):
    """``inner``, each of whose calls keeps to one thread: a Dask worker already runs as
    many tasks at once as it has threads, and a run's second thread would compete with
    them (as with the local pool's workers, which set ``MEMVIRT_ONE_THREAD``)."""

    def __init__(self, inner: cf.Executor) -> None:
        self.inner = inner

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        return self.inner.submit(in_one_thread, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.inner.shutdown(wait=wait)


def dask_runner(address: str, *, timeout: float = 10.0) -> Runner:
    """The workers of the Dask cluster whose scheduler is at ``address``."""
    try:
        # imported by name: dask.distributed is an optional dependency, and untyped
        distributed: Any = importlib.import_module("distributed")
    except ImportError:
        raise SweepError(
            f"--scheduler {address}: dask.distributed is not installed; "
            "install it with: pip install 'memvirt[dask]'"
        ) from None
    try:
        # a malformed address is refused here: a Client that fails on one is noisy at exit
        scheme, location = distributed.comm.parse_address(address)
        distributed.comm.registry.get_backend(scheme)
        if scheme != "inproc":  # a cluster in this process (tests) has no port
            distributed.comm.addressing.parse_host_port(location)
    except ValueError as err:
        raise SweepError(
            f"--scheduler {address}: expected a scheduler's address such as tcp://HOST:8786 ({err})"
        ) from None
    try:
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise SweepError(f"--scheduler {address}: cannot connect to the scheduler: {err}") from None
    threads = sum(client.nthreads().values())
    # a cluster may grow after the start: keep enough in flight for a few more workers
    slots = max(16, 4 * threads)
    return Runner(
        OneThreadExecutor(client.get_executor(pure=False)),
        slots,
        f"on the Dask cluster at {address} ({threads} worker threads)",
        client,
    )


def open_runner(workers: int | None, scheduler: str | None) -> Runner:
    """The runner the command line asks for: ``--scheduler`` or ``--workers``."""
    if scheduler is not None:
        if workers is not None:
            raise SweepError("--workers and --scheduler: give one; a cluster's workers are its own")
        return dask_runner(scheduler)
    return local_runner(default_workers() if workers is None else workers)


# ------------------------------------------------------------------------ the loop


def run_tasks(
    runner: Runner,
    tasks: Sequence[RunTask],
    on_outcome: Callable[[Outcome], None],
    fn: Callable[[RunTask], Outcome] = execute,
) -> None:
    """Run ``tasks`` on ``runner``, calling ``on_outcome`` once per task as each finishes.

    At most ``runner.slots`` runs are in flight at once. On any exception
    (an interrupt among them) the runs not yet finished are cancelled and the
    exception propagates; the outcomes already handed over stay handed over.
    """
    waiting: Iterator[RunTask] = iter(tasks)
    inflight: dict[cf.Future[Outcome], RunTask] = {}

    def fill() -> None:
        while len(inflight) < runner.slots:
            task = next(waiting, None)
            if task is None:
                return
            inflight[runner.executor.submit(fn, task)] = task

    try:
        fill()
        while inflight:
            done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
            # hand over in submission order, so that a serial run records in plan order
            for future in [f for f in inflight if f in done]:
                task = inflight.pop(future)
                on_outcome(_outcome(future, task))
            fill()
    except BaseException:
        for future in inflight:
            future.cancel()
        raise


@dataclass
class SweepRun:
    """What one invocation of a sweep did."""

    planned: int  # runs in the sweep
    skipped: int = 0  # already done before: ok in the catalog
    ok: int = 0
    failed: list[tuple[PlannedRun, str]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0  # wall time of this invocation

    @property
    def ran(self) -> int:
        return self.ok + len(self.failed)

    @property
    def remaining(self) -> int:
        return self.planned - self.skipped - self.ran


def run_sweep(
    plan: SweepPlan,
    catalog: Catalog,
    runner: Runner,
    on_outcome: Callable[[PlannedRun, Outcome], None] | None = None,
    fn: Callable[[RunTask], Outcome] = execute,
    *,
    on_start: Callable[[int], None] | None = None,
) -> SweepRun:
    """Run the runs of ``plan`` that the catalog does not have as ``ok``, recording each
    outcome as it arrives; then call ``on_outcome`` (a progress display). ``on_start`` is
    called first, with the number of runs to do.

    An interrupt (KeyboardInterrupt) stops the sweep: the runs in flight are
    cancelled, the result says ``interrupted``, and the catalog keeps every
    outcome recorded so far. The caller closes ``runner``.
    """
    start = time.perf_counter()
    result = SweepRun(len(plan.runs))
    by_key = {run.key: run for run in plan.runs}

    def handle(outcome: Outcome) -> None:
        catalog.record(outcome)
        planned = by_key[outcome.key]
        if outcome.ok:
            result.ok += 1
        else:
            result.failed.append((planned, outcome.error or ""))
        if on_outcome is not None:
            on_outcome(planned, outcome)

    try:
        todo = catalog.prepare(plan)
        result.skipped = len(plan.runs) - len(todo)
        if on_start is not None:
            on_start(len(todo))
        run_tasks(runner, tasks_of(plan, todo), handle, fn)
    except KeyboardInterrupt:
        result.interrupted = True
    result.seconds = time.perf_counter() - start
    return result


def _outcome(future: cf.Future[Outcome], task: RunTask) -> Outcome:
    """The future's outcome; a lost worker or a cancelled run becomes an error."""
    try:
        outcome = future.result()
    except cf.CancelledError:
        return Outcome(task.key, None, f"{task.arguments()}: cancelled before it ran", None)
    except Exception as err:  # the worker died (BrokenProcessPool, KilledWorker, ...)
        return Outcome(task.key, None, _failure(task, err, "the worker was lost: "), None)
    return outcome


__all__ = [
    "Outcome",
    "RunTask",
    "Runner",
    "SerialExecutor",
    "SweepRun",
    "dask_runner",
    "default_workers",
    "execute",
    "local_runner",
    "open_runner",
    "run_sweep",
    "run_tasks",
    "tasks_of",
]
