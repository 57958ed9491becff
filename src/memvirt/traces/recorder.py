"""Recording the memory accesses of a real program with valgrind's lackey tool.

``valgrind --tool=lackey --trace-mem=yes PROGRAM`` prints one line per
instruction fetch, load, store and modify of the program (Nethercote and
Seward, "Valgrind: a framework for heavyweight dynamic binary
instrumentation", PLDI 2007). memvirt reads that log through a named pipe
as the program runs and converts it on the fly, so the multi-gigabyte text
log of a real run never reaches the disk.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from memvirt.traces.model import Trace, TraceError
from memvirt.traces.readers import open_trace

#: How long a stopped recording waits for valgrind to end before killing it.
STOP_GRACE_SECONDS = 5.0


class LackeyRecording:
    """``valgrind --tool=lackey --trace-mem=yes PROGRAM``, its log read through a named pipe.

    Valgrind writes its log to the pipe (``--log-file``), apart from the
    program's own standard output and error, and memvirt reads it as it
    comes. Opening a pipe waits for the other end; a valgrind that fails
    before it opens its log would leave the reader waiting, so once valgrind
    has ended a watcher opens and closes the write end until the reader is
    done: the reader then sees the end of the log.
    """

    def __init__(
        self, valgrind: str, program: list[str], *, page_size: int, drop_fetches: bool
    ) -> None:
        self.valgrind = valgrind
        self.program = program
        self.page_size = page_size
        self.drop_fetches = drop_fetches
        self._dir = tempfile.TemporaryDirectory(prefix="memvirt-record-")
        self.fifo = Path(self._dir.name) / "lackey.log"
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._end_log_when_done, daemon=True)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LackeyRecording:
        os.mkfifo(self.fifo)
        log_file = str(self.fifo).replace("%", "%%")  # valgrind expands %p and %q{VAR}
        command = [
            self.valgrind,
            "--tool=lackey",
            "--trace-mem=yes",
            f"--log-file={log_file}",
            *self.program,
        ]
        # a session of its own, so that stopping it reaches the program's children too
        self.process = subprocess.Popen(command, start_new_session=True)
        self._watcher.start()
        return self

    def _end_log_when_done(self) -> None:
        assert self.process is not None
        self.process.wait()
        while not self._done.wait(0.05):
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet (ENXIO), or the pipe is gone
                continue
            os.close(fd)

    def accesses(self, limit: int | None) -> Iterator[Trace]:
        """The recorded accesses in chunks, ``limit`` of them at most."""
        chunk = 1 << 22 if limit is None else max(1, min(limit, 1 << 22))
        taken = 0
        with open_trace(
            self.fifo,
            format="lackey",
            drop_fetches=self.drop_fetches,
            page_size=self.page_size,
            chunk_accesses=chunk,
        ) as stream:
            for part in stream:
                if limit is not None and taken + len(part) >= limit:
                    yield part.head(limit - taken)
                    return
                taken += len(part)
                yield part
        status = self.stop()
        if taken == 0 and status != 0:
            raise TraceError(
                f"valgrind could not run {' '.join(self.program)!r} "
                f"(exit status {status}; see its message above)"
            )

    def stop(self) -> int:
        """End valgrind and the program if they still run; their exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return int(self.process.returncode)

    def __exit__(self, *exc: object) -> None:
        try:
            if self.process is not None:
                self.stop()
        finally:
            self._done.set()
            if self._watcher.is_alive():
                self._watcher.join()
            self._dir.cleanup()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group that ``pid`` leads, if it still exists."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
