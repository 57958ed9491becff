"""Compiling the hypervisor's kernels in a second process while the first compiles its own.

numba compiles a kernel on its first call and keeps it in its cache (``__pycache__``, or
``NUMBA_CACHE_DIR``). A first run with VMs, on a cold cache, compiles the data plane's
``run_batch`` (the guests' and the host's accesses, about 18 s on a 2-core machine) and
then, one by one as the run reaches them, the kernels of the host pass and of the control
plane (the content sync, the sharing scan, the check for broken sharing, the balloon's
kernels, about 15 s more). Those need not wait: when a machine with VMs is built and the
cache does not hold them, :func:`start` launches ``python -m memvirt.engine.precompile``.
That process builds a small machine of the same kind, without running it, and compiles
each of those kernels for the argument types the run will call it with (:func:`calls`).
The first process then finds them in the cache. Results are unchanged: the same code is
compiled, only elsewhere.

Set ``MEMVIRT_NO_PRECOMPILE=1`` to keep to one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memvirt.dataplane import native, reclaim
from memvirt.dataplane import sharing as sharing_dp

if TYPE_CHECKING:
    from memvirt.engine.virtual import VirtualizedMachine

#: The environment variable that turns the second process off.
OFF = "MEMVIRT_NO_PRECOMPILE"

#: A small machine with every technique on: the kernels' argument types are those of any
#: machine with VMs (the arrays' element types and shapes do not depend on sizes).
SMALL = {
    "host": {"memory": "8MiB"},
    "hypervisor": {
        "paging": "nested",
        "host_swap": {"size": "8MiB"},
        "balloon": {"enabled": True},
        "sharing": {"enabled": True},
        "compression": {"enabled": True},
    },
    "vms": [
        {
            "name": f"vm{i}",
            "memory": "8MiB",
            "guest": {"policy": "lru", "swap": "8MiB", "os_memory": "0MiB"},
            "processes": [
                {
                    "name": "p",
                    "memory": "4MiB",
                    "workload": {"kind": "zipf", "pages": 256, "alpha": 0.9},
                }
            ],
        }
        for i in range(2)
    ],
    "run": {"accesses": 1000, "seed": 0},
}


def calls(machine: VirtualizedMachine) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
    """Each kernel a run with VMs calls from Python (apart from ``run_batch``), with
    arguments of the types its call sites pass (in ``engine/virtual.py`` and
    ``hypervisor/reclamation.py``): ``tests/test_precompile.py`` checks that a run compiles
    nothing more."""
    reclaimer = machine.reclaimer
    reclaimer._reserve(16)  # the sharing tables as a scan leaves them, watch maps set
    tables = reclaimer.sharing.tables
    vm, r = machine.vms[0], reclaimer.vms[0]
    host_m, guest_m = machine.host.machine, vm.guest.machine
    content = vm.guest.frames.fi64
    pid = vm.host_pid
    pages = np.zeros(1, dtype=np.int64)
    flags = np.zeros(1, dtype=np.uint8)
    scan_args = (host_m, tables.bundle, content, vm.guest.frames.fi32, 0, pid, 0, 0, 0,
                 r.real_pages, reclaimer._host_pids, machine.hypervisor_pid,
                 sharing_dp.NO_HINTS, sharing_dp.NO_HINTS, tables.events)  # fmt: skip
    break_args = (host_m, tables.bundle, content, 0, pid, pages, vm.guest.watch_log, 0,
                  tables.marks_for(r.real_pages), pages, pages)  # fmt: skip
    return [
        (reclaim.sync_changed, (host_m, pid, content, vm.guest.changed)),
        (reclaim.split_record, (vm.guest.record, 0, pages, flags, flags, pages, pages)),
        (reclaim.mark_stale_changed, (pages, flags, flags, vm.guest.changed)),
        (reclaim.prefetch_pages, (host_m, pid, pages)),
        (reclaim.sync_contents, (host_m, pid, content)),
        (reclaim.mark_stale, (host_m, pid, pages, content, pages)),
        (reclaim.settle_tokens, (host_m, pid, pages, content)),
        (reclaim.settle_changed, (host_m, pid, pages, content, vm.settle_marks, vm.guest.changed)),
        (reclaim.fix_swap_copies, (host_m, machine.host.ring, 0, pid, content)),
        (reclaim.fix_all_swap_copies, (host_m, pid, content)),
        (reclaim.shoot_down, (guest_m, pages)),
        (reclaim.shoot_down_ring, (guest_m, machine.host.ring, 0, pid)),
        (reclaim.doubled_pages, (host_m, pid, vm.guest.ring, 0, pages)),
        (reclaim.mark_touched, (r.sample_unseen, pages)),
        (reclaim.mark_span, (np.zeros(1, dtype=bool), pages, 0)),
        (reclaim.making_room, (machine.host.pctr,)),
        (reclaim.walk_depth, (host_m, pid, 1)),
        (reclaim.release_frames, (host_m, pages, 0)),
        (reclaim.balloon_inflate, (guest_m, r.balloon_pid, 0, pages)),
        (reclaim.pick_frames, (host_m, pid, 0, False, pages)),
        (reclaim.evict_frames, (host_m, pages, 0)),
        (reclaim.grab_frames, (host_m, machine.hypervisor_pid, 0, pages)),
        (native.note_changes, (guest_m, pages)),
        (native.tlb_flush_asid, (guest_m, -1)),
        (sharing_dp.scan, scan_args),
        (
            sharing_dp.hints_elsewhere,
            (tables.bundle, content, vm.guest.frames.fi32, 0, 0, 0, 0, r.real_pages, pages),
        ),
        (sharing_dp.break_sharing, break_args),
        (sharing_dp.discard_pages, (host_m, tables.bundle, 0, pid, False, pages, pages)),
        (sharing_dp.unshare_pages, (host_m, tables.bundle, 0, pid, pages, pages)),
        (sharing_dp.drop_ref, (host_m, tables.bundle, 0, 0, 0)),
    ]


def compile_all(machine: VirtualizedMachine) -> None:
    """Compile (or load from the cache) every kernel of :func:`calls`, without running any."""
    from numba import typeof

    for kernel, args in calls(machine):
        signature = tuple(typeof(a) for a in args)  # type: ignore[no-untyped-call]
        kernel.compile(signature)  # type: ignore[attr-defined]


def small_machine() -> VirtualizedMachine:
    """The machine :data:`SMALL` describes, built (not run)."""
    from memvirt.config import scenario_from_dict
    from memvirt.engine.scenario import build
    from memvirt.engine.virtual import VirtualizedMachine

    machine = build(scenario_from_dict(SMALL, "<precompile>"))
    assert isinstance(machine, VirtualizedMachine)
    return machine


#: Seconds after which a lock left by a second process that never finished is ignored.
STALE_LOCK = 600.0

_started = False  # this process launched one already

#: The launcher: a bare interpreter (no import of memvirt, so it starts in milliseconds) that
#: starts the second process in a session of its own (Ctrl-C at the terminal is the run's,
#: not its) and exits. This process waits for the launcher alone and keeps no handle on the
#: second process: nothing to reap, and no "still running" warning when this one exits
#: first. The second process stops by itself.
_LAUNCH = (
    "import subprocess, sys; d = subprocess.DEVNULL; "
    "subprocess.Popen(sys.argv[1:], stdin=d, stdout=d, stderr=d, start_new_session=True)"
)


def _index() -> Path | None:
    """Where numba keeps the sharing scan's cache index (None: not known here)."""
    try:
        return Path(sharing_dp.scan._cache._cache_file._index_path)  # type: ignore[attr-defined]
    except AttributeError:  # another numba
        return None


def cached() -> bool:
    """Whether numba's cache holds the sharing scan already (then it holds the rest: they
    are compiled together), or cannot be looked at."""
    index = _index()
    return index is None or index.exists()


def lock_path() -> Path | None:
    """The lock a second process holds while it compiles, beside the cache."""
    index = _index()
    return None if index is None else index.with_name("memvirt-precompile.lock")


def _take_lock() -> bool:
    """Take the lock, unless another process holds it (and has not held it too long)."""
    lock = lock_path()
    if lock is None:
        return False
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            if time.time() - lock.stat().st_mtime > STALE_LOCK:
                lock.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except OSError:  # held by another, or a cache we cannot write to
        return False
    os.close(fd)
    return True


def start() -> bool:
    """Launch the second process if the cache is cold, once per process and one at a time
    (it holds a lock beside the cache), unless turned off; whether it was launched."""
    global _started
    if _started or os.environ.get(OFF) or cached():
        return False
    _started = True
    if not _take_lock():
        return False
    command = [sys.executable, "-c", _LAUNCH, sys.executable, "-m", "memvirt.engine.precompile"]
    try:
        launcher = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        launched = launcher.wait(timeout=60) == 0
    except OSError:
        launched = False
    except subprocess.TimeoutExpired:  # a launcher that hangs is not left running
        launcher.kill()
        launcher.wait()
        launched = False
    if not launched:
        _release_lock()
    return launched


def _release_lock() -> None:
    lock = lock_path()
    if lock is not None:
        lock.unlink(missing_ok=True)


def main() -> int:
    """The second process: build the small machine, compile its kernels, drop the lock."""
    os.environ[OFF] = "1"  # building the small machine must not launch another
    try:
        compile_all(small_machine())
    finally:
        _release_lock()
    return 0


if __name__ == "__main__":
    sys.exit(main())
