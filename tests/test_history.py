"""The check mode reports the history of the page it finds wrong.

A corruption is planted the same way in every run of a scenario (by wrapping a
method, so that the rerun that follows the page meets it again), and the error
must carry the page's states, step by step, up to the failure.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memvirt.config import load_scenario, scenario_from_dict
from memvirt.engine.history import HISTORY_LINES, PageRef, PageWatch
from memvirt.engine.native import ContentError
from memvirt.engine.scenario import build, run
from memvirt.engine.virtual import AccountingError, VirtualizedMachine
from memvirt.kernel.kernel import Kernel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def corrupt_a_swap_copy_on_call(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the ``n``-th run of each kernel, flip the token in every used swap slot."""
    original = Kernel.run

    def run_and_corrupt(self: Kernel, *args: Any, **kwargs: Any) -> int:
        done = original(self, *args, **kwargs)
        calls = getattr(self, "_test_calls", 0) + 1
        self._test_calls = calls  # type: ignore[attr-defined]
        if calls == n:
            self.swap.token[self.swap.owner >= 0] ^= 0x5A5A
        return done

    monkeypatch.setattr(Kernel, "run", run_and_corrupt)


def test_a_native_content_error_carries_the_pages_history(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = load_scenario(
        EXAMPLES / "demand-paging.toml", ["run.check=true", "run.accesses=600000"]
    )
    corrupt_a_swap_copy_on_call(20, monkeypatch)
    with pytest.raises(ContentError) as caught:
        run(scenario)
    err = caught.value
    text = str(err)
    assert re.search(r"reads 0x[0-9a-f]+ at virtual page 0x[0-9a-f]+; it last wrote", text)
    assert isinstance(err.page, PageRef) and err.page.vpn is not None
    head, _, history = text.partition("history of the page")
    got = re.search(r"reads (0x[0-9a-f]+)", head)
    assert got is not None
    lines = [ln for ln in history.splitlines()[1:] if ln.strip()]
    assert 2 <= len(lines) <= HISTORY_LINES
    assert any("swap slot" in ln for ln in lines)  # it went to swap...
    # ...and was read back, wrong, in the failing step
    assert "frame" in lines[-1] and lines[-1].endswith(f"token {got.group(1)}")
    times = [float(ln.split(" s,")[0]) for ln in lines]
    assert times == sorted(times)


def tiny_vms() -> dict[str, Any]:
    def vm(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "memory": "8MiB",
            "balloon": False,
            "guest": {"swap": "8MiB"},
            "processes": [
                {
                    "name": "app",
                    "memory": "6MiB",
                    "rate": 1e6,
                    "workload": {"kind": "uniform", "pages": 1536, "write_fraction": 0.5},
                }
            ],
        }

    return {
        "host": {"memory": "8MiB"},
        "hypervisor": {
            "host_swap": {"size": "32MiB"},
            "control_period": 0.01,
            "sharing": {"enabled": False},
            "compression": {"enabled": False},
        },
        "vms": [vm("a"), vm("b")],
        "run": {"accesses": 120_000, "check": True, "quantum_accesses": 2000},
    }


def test_a_host_copy_error_carries_the_real_pages_history(monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt_a_swap_copy_on_call(60, monkeypatch)  # the host's swap copies: the guests' swap
    with pytest.raises(ContentError) as caught:  # is unused until the host's fills
        run(scenario_from_dict(tiny_vms()))
    text = str(caught.value)
    assert "history of the page" in text
    page = caught.value.page
    assert page is not None and page.vm in ("a", "b")
    lines = text.partition("history of the page")[2].splitlines()[1:]
    assert any(re.search(r"host: real page \d+: (frame|swap slot)", ln) for ln in lines)


def test_an_accounting_error_names_the_real_page_for_its_history() -> None:
    machine = build(scenario_from_dict(tiny_vms()))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=20_000)
    host = machine.host
    free_slot = int(np.flatnonzero(host.swap.owner < 0)[0])
    vm = machine.vms[0]
    # a swapped page's entry is pointed at a slot that belongs to nobody
    rpn = next(
        r for r in range(vm.real_pages)
        if host.walk(vm.host_pid, r << 12).steps
        and host.walk(vm.host_pid, r << 12).steps[-1].entry & 64
    )  # fmt: skip
    t_entry = host.walk(vm.host_pid, rpn << 12).steps[-1]
    table = int(np.flatnonzero(host.table_frame == t_entry.table_frame)[0])
    host.tables[table, t_entry.index] = (free_slot << 12) | 64
    with pytest.raises(AccountingError) as caught:
        machine.check_accounting("after the corruption")
    assert caught.value.page == PageRef(vm="a", real_page=rpn)


def test_the_watch_keeps_the_last_lines_and_counts_the_rest() -> None:
    machine = build(scenario_from_dict(tiny_vms()))
    watch = PageWatch(machine, PageRef(vm="a", real_page=5))
    for k in range(HISTORY_LINES + 7):
        watch.last = None  # each step a change
        watch.observe(k * 1e6, f"step {k}")
    assert len(watch.lines) == HISTORY_LINES
    assert watch.dropped == 7
    assert "7 earlier changes not shown" in watch.text()
    assert watch.lines[-1].startswith(f"  {(HISTORY_LINES + 6) / 1e3:.6f} s, step")


def test_a_run_without_faults_is_not_watched() -> None:
    s = copy.deepcopy(tiny_vms())
    s["run"]["accesses"] = 10_000
    machine = build(scenario_from_dict(s))
    assert machine.watch is None


def test_memvirt_run_check_reports_a_violation_with_exit_status_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from memvirt.cli import app

    corrupt_a_swap_copy_on_call(20, monkeypatch)
    scenario = str(EXAMPLES / "demand-paging.toml")
    result = CliRunner().invoke(
        app, ["run", scenario, "--check", "--set", "run.accesses=600000", "--quiet"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"memvirt: check failed: {scenario}: app: process 0 reads")
    assert "history of the page" in result.stderr
    assert "Traceback" not in result.output


def test_memvirt_run_check_passes_a_sound_run() -> None:
    from typer.testing import CliRunner

    from memvirt.cli import app

    scenario = str(EXAMPLES / "demand-paging.toml")
    result = CliRunner().invoke(
        app, ["run", scenario, "--check", "--set", "run.accesses=100000", "--json"]
    )
    assert result.exit_code == 0, result.output
