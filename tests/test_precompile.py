"""The second process that compiles the hypervisor's kernels on a cold cache.

It compiles each kernel for the argument types of a small machine built without running;
that is only of use if a real run then calls each one with those very types (else the run
compiles its own, and the second process's work was for nothing).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from memvirt.config import scenario_from_dict
from memvirt.engine import precompile
from memvirt.engine.scenario import build


def busy_machine() -> Any:
    """The small machine, its host short of memory: every technique reclaims pages."""
    data: dict[str, Any] = copy.deepcopy(precompile.SMALL)
    data["host"]["memory"] = "6MiB"
    data["hypervisor"].update(
        control_period=0.002, allocation={"period": 0.01, "sample_period": 0.02}
    )
    data["hypervisor"]["sharing"]["scan_period"] = 0.02
    for vm in data["vms"]:
        vm["processes"][0]["memory"] = "6MiB"
        vm["processes"][0]["workload"] = {
            "kind": "zipf", "pages": 1536, "alpha": 0.8, "write_fraction": 0.2
        }  # fmt: skip
    return build(scenario_from_dict(data, "<test>"))


def test_a_run_with_vms_calls_each_kernel_with_the_types_it_was_compiled_for() -> None:
    busy_machine().run(accesses=2_000)  # run_batch, and what it compiles for its own calls
    precompile.compile_all(precompile.small_machine())
    kernels = [kernel for kernel, _ in precompile.calls(precompile.small_machine())]
    before = {kernel: list(kernel.signatures) for kernel in kernels}  # type: ignore[attr-defined]
    machine = busy_machine()
    seconds = machine.run(accesses=100_000)
    reclaimed = machine.summary(seconds)["host"]["reclaimed_pages"]
    assert all(reclaimed[kind] > 0 for kind in ("ballooning", "sharing", "compression", "swapping"))
    new = {
        kernel.py_func.__name__: [s for s in kernel.signatures if s not in before[kernel]]  # type: ignore[attr-defined]
        for kernel in kernels
    }
    assert not any(new.values()), f"compiled again for other types: {new}"


def test_the_second_process_is_not_started_when_turned_off_or_when_the_cache_is_warm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(precompile, "cached", lambda: False)
    monkeypatch.setenv(precompile.OFF, "1")
    assert precompile.start() is False
    monkeypatch.delenv(precompile.OFF)
    monkeypatch.setattr(precompile, "cached", lambda: True)
    assert precompile.start() is False


@pytest.fixture
def cold(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A cold cache, the second process not turned off nor launched yet: its lock's path."""
    lock = tmp_path / "memvirt-precompile.lock"
    monkeypatch.delenv(precompile.OFF, raising=False)
    monkeypatch.setattr(precompile, "cached", lambda: False)
    monkeypatch.setattr(precompile, "lock_path", lambda: lock)
    monkeypatch.setattr(precompile, "_started", False)
    return lock


def test_the_second_process_is_started_once_and_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch, cold: Path
) -> None:
    lock = cold
    launched: list[Any] = []

    class Launcher:  # the launcher starts the second process and exits
        def __init__(self, command: list[str], **_: Any) -> None:
            launched.append(command)

        def wait(self, timeout: float) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", Launcher)
    assert precompile.start() is True and lock.exists()
    assert launched[0][-2:] == ["-m", "memvirt.engine.precompile"]
    assert precompile.start() is False  # once per process
    monkeypatch.setattr(precompile, "_started", False)
    assert precompile.start() is False  # another process holds the lock
    assert len(launched) == 1
    # a lock left by a process that never finished is taken over after a while
    old = time.time() - precompile.STALE_LOCK - 1
    os.utime(lock, (old, old))
    monkeypatch.setattr(precompile, "_started", False)
    assert precompile.start() is True and len(launched) == 2


def test_a_launcher_that_fails_gives_the_lock_back(
    monkeypatch: pytest.MonkeyPatch, cold: Path
) -> None:
    monkeypatch.setattr(precompile, "_LAUNCH", "raise SystemExit(3)")
    assert precompile.start() is False
    assert not cold.exists()


def test_a_launcher_that_hangs_is_killed_and_gives_the_lock_back(
    monkeypatch: pytest.MonkeyPatch, cold: Path
) -> None:
    killed: list[bool] = []

    class Hanging:
        def __init__(self, command: list[str], **_: Any) -> None:
            pass

        def wait(self, timeout: float | None = None) -> int:
            if timeout is not None and not killed:
                raise subprocess.TimeoutExpired("launcher", timeout)
            return -9

        def kill(self) -> None:
            killed.append(True)

    monkeypatch.setattr(subprocess, "Popen", Hanging)
    assert precompile.start() is False
    assert killed == [True] and not cold.exists()


def test_the_launcher_starts_a_process_of_its_own_and_leaves_at_once(tmp_path: Path) -> None:
    """The launcher exits while the process it started runs on, in a session of its own."""
    marker = tmp_path / "done"
    partial = tmp_path / "partial"
    script = (f"import time, os; time.sleep(2); p = {str(partial)!r}; "
              f"open(p, 'w').write(str(os.getsid(0))); os.replace(p, {str(marker)!r})")  # fmt: skip
    launcher = subprocess.Popen([sys.executable, "-c", precompile._LAUNCH, sys.executable, "-c",
                                 script])  # fmt: skip
    assert launcher.wait(timeout=60) == 0
    assert not marker.exists()  # the second process is still running
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert int(marker.read_text()) != os.getsid(0)


def test_the_second_process_compiles_and_exits_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "memvirt.engine.precompile"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert precompile.cached()
    lock = precompile.lock_path()
    assert lock is not None and not lock.exists()  # given back
