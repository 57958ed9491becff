"""A workload's next accesses, generated ahead in a thread of their own.

Drawing a synthetic workload's pages (random words, then an alias table or a
CDF) is work the simulation does not depend on: a :class:`Stream` is the
same whatever the sizes of the batches it is taken in, and nothing the
simulation does changes it. So while the simulator runs one quantum of a
process, a second thread draws the next one. The numba kernels that draw
pages and write flags, and numpy's raw generator, release Python's global
interpreter lock, as do the data plane's kernels: on a machine with two
cores or more the two overlap, and on one core nothing changes but the
order in which the same work is done.

One worker thread serves every stream of the process (blocks are drawn in
the order they were asked for), and only that thread touches a stream
while a block of it is in flight, so no stream is ever drawn from two
threads at once. A child process (a sweep's worker, forked) starts a
worker of its own.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar

import numpy as np

from memvirt.workloads.synthetic import Stream

_lock = threading.Lock()
_worker: ThreadPoolExecutor | None = None


def _forget_worker() -> None:  # in a forked child: the parent's thread is not there
    global _worker
    _worker = None


os.register_at_fork(after_in_child=_forget_worker)


def _submit(stream: Stream, n: int) -> Future[tuple[np.ndarray, np.ndarray]]:
    global _worker
    with _lock:
        if _worker is None:
            _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memvirt-workload")
        return _worker.submit(_draw, stream, n)


def _draw(stream: Stream, n: int) -> tuple[np.ndarray, np.ndarray]:
    trace = stream.take(n)
    return trace.addresses, trace.writes


#: When set (to anything but ""), memvirt keeps to one thread: no workload drawn ahead, no
#: VM's guest run beside another VM's host pass. A sweep's local workers set it, since
#: they already keep every core busy. The results are the same either way.
ONE_THREAD = "MEMVIRT_ONE_THREAD"

_one_thread_here: ContextVar[bool] = ContextVar("memvirt_one_thread", default=False)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Runs started inside keep to one thread, as under ``MEMVIRT_ONE_THREAD``, but without
    touching the process's environment: a Dask worker runs a sweep's runs in threads of its
    own, several at once, and other tasks besides."""
    token = _one_thread_here.set(True)
    try:
        yield
    finally:
        _one_thread_here.reset(token)


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def cores() -> int:
    """CPUs a run may use: :func:`usable_cpus`, or 1 when ``MEMVIRT_ONE_THREAD`` is set or
    inside :func:`one_thread`."""
    return 1 if os.environ.get(ONE_THREAD) or _one_thread_here.get() else usable_cpus()


class AheadStream:
    """``stream``'s accesses, ``take(n)`` at a time as from the stream itself; after each
    take, the next ``n`` are drawn in the worker thread (when ``ahead``), to be ready for
    the next take.

    A take of another size than the block in flight still gives the stream's next
    accesses: it waits for the block, keeps what it does not need for later takes, and
    draws what is missing itself."""

    def __init__(self, stream: Stream, *, ahead: bool | None = None) -> None:
        self.stream = stream
        self.ahead = cores() > 1 if ahead is None else ahead
        self._pending: Future[tuple[np.ndarray, np.ndarray]] | None = None
        self._pages = np.zeros(0, dtype=np.int64)
        self._writes = np.zeros(0, dtype=np.uint8)
        self._at = 0  # the first access of the buffer not taken yet

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The stream's next ``n`` accesses: page numbers and write flags."""
        have = self._pages.shape[0] - self._at
        if have < n:
            pages = [self._pages[self._at :]]
            writes = [self._writes[self._at :]]
            if self._pending is not None:  # the block in flight comes first
                block_pages, block_writes = self._pending.result()
                self._pending = None
                pages.append(block_pages)
                writes.append(block_writes)
                have += block_pages.shape[0]
            if have < n:  # the stream is this thread's alone now
                trace = self.stream.take(n - have)
                pages.append(trace.addresses)
                writes.append(trace.writes)
            self._pages = pages[0] if len(pages) == 1 else np.concatenate(pages)
            self._writes = writes[0] if len(writes) == 1 else np.concatenate(writes)
            self._at = 0
        out = self._pages[self._at : self._at + n], self._writes[self._at : self._at + n]
        self._at += n
        if self.ahead and self._pending is None and n > 0:
            self._pending = _submit(self.stream, n)
        return out
