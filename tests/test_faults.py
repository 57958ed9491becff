"""Injected faults: failing and filling swap devices, VM crashes, a host losing memory.

Each test runs a small machine with the check mode on (every page a process touches
reads what was last written to it; with VMs, every frame, slot and page is accounted
for once after every quantum and after every fault), injects one kind of fault and
asserts the reaction a real system has: the process or VM hit is ended and recorded,
the others go on, and nobody else's state is touched.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from memvirt.cli import app
from memvirt.config import ScenarioError, scenario_from_dict
from memvirt.dataplane.layout import K_SWAP_READ_FAIL, K_SWAP_WRITE_FAIL
from memvirt.engine.native import NativeMachine
from memvirt.engine.scenario import build, run
from memvirt.engine.virtual import VirtualizedMachine
from memvirt.kernel.kernel import SWAP_FILLED, Kernel, KernelConfig, Region, error_threshold

runner = CliRunner()


def zipf(pages: int, writes: float = 0.4) -> dict[str, Any]:
    return {"kind": "zipf", "pages": pages, "alpha": 0.6, "write_fraction": writes}


#: Two processes over 6 MiB each on a 4 MiB machine with 16 MiB of swap: it pages.
NATIVE: dict[str, Any] = {
    "host": {"memory": "4MiB", "swap": {"size": "16MiB"}},
    "processes": [
        {"name": "one", "memory": "6MiB", "rate": 1e6, "workload": zipf(1536)},
        {"name": "two", "memory": "6MiB", "rate": 1e6, "workload": zipf(1536)},
    ],
    "run": {"seconds": 0.4, "check": True, "quantum_accesses": 2000},
}


def vm(name: str, pages: int = 2048) -> dict[str, Any]:
    return {
        "name": name,
        "memory": "12MiB",
        "guest": {"swap": "16MiB"},
        "processes": [{"name": "app", "memory": "10MiB", "rate": 1e6, "workload": zipf(pages)}],
    }


#: Three 12 MiB VMs on a 24 MiB host (1.5x) with 64 MiB of host swap.
VIRTUAL: dict[str, Any] = {
    "host": {"memory": "24MiB"},
    "hypervisor": {
        "host_swap": {"size": "64MiB"},
        "control_period": 0.01,
        "allocation": {"period": 0.05, "sample_period": 0.1},
        "sharing": {"scan_period": 0.2},
    },
    "vms": [vm("a"), vm("b"), vm("c")],
    "run": {"seconds": 0.4, "check": True, "quantum_accesses": 2000},
}


def with_faults(base: dict[str, Any], **faults: Any) -> dict[str, Any]:
    s = copy.deepcopy(base)
    s["faults"] = faults
    return s


def summary(s: dict[str, Any]) -> dict[str, Any]:
    return run(scenario_from_dict(s)).summary


def procs(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in result["processes"]}


def vms(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in result["vms"]}


# ------------------------------------------------------------------ the kernel's side


def kernel(swap_slots: int = 64) -> Kernel:
    return Kernel(KernelConfig(frames=16, tlb=None, swap_slots=swap_slots, seed=3))


def test_an_error_rate_maps_to_the_data_planes_threshold() -> None:
    assert error_threshold(0.0) == 0
    assert error_threshold(0.5) == 1 << 62
    assert error_threshold(1.0) == (1 << 63) - 1
    with pytest.raises(ValueError, match="from 0 to 1"):
        error_threshold(1.5)
    k = kernel()
    k.set_swap_errors(read_rate=0.25, write_rate=1.0)
    assert k.cfg[K_SWAP_READ_FAIL] == 1 << 61
    assert k.cfg[K_SWAP_WRITE_FAIL] == (1 << 63) - 1


def test_when_every_write_fails_dirty_pages_stay_and_clean_ones_go() -> None:
    k = kernel()
    k.set_swap_errors(write_rate=1.0)
    pid = k.spawn([Region(0, 64 * 4096)])
    # 6 dirty and 6 clean pages fill memory (4 frames go to tables); more clean ones follow
    writes = np.array([1] * 6 + [0] * 34, np.uint8)
    k.run(pid, np.arange(40), writes, page_numbers=True)
    assert k.alive(pid)
    c = k.counters(pid)
    assert c["swap_write_errors"] > 0
    assert c["writebacks"] == 0
    assert c["zero_drops"] > 0  # never-written pages were evicted in their place
    assert set(range(6)) <= set(k.resident_vpns(pid))  # every dirty page is still in memory
    k.check_invariants()


def test_when_every_write_fails_and_only_dirty_pages_are_left_the_oom_killer_acts() -> None:
    k = kernel()
    k.set_swap_errors(write_rate=1.0)
    pid = k.spawn([Region(0, 64 * 4096)])
    done = k.run(pid, np.arange(40), np.ones(40, np.uint8), page_numbers=True)
    assert done < 40
    assert not k.alive(pid)
    assert "OOM killer" in k.kills[0].reason
    assert k.counters(pid)["swap_write_errors"] > 0


def test_a_failed_swap_read_is_a_bus_error_for_that_process_only() -> None:
    k = Kernel(KernelConfig(frames=24, tlb=None, swap_slots=64, seed=3))
    a = k.spawn([Region(0, 32 * 4096)], name="a")
    b = k.spawn([Region(0, 32 * 4096)], name="b")
    k.run(a, np.arange(16), np.ones(16, np.uint8), page_numbers=True)
    k.run(b, np.arange(16), np.ones(16, np.uint8), page_numbers=True)  # a's pages go to swap
    k.set_swap_errors(read_rate=1.0)
    k.run(a, np.arange(4), page_numbers=True)
    assert not k.alive(a)
    assert k.kills[0].reason.startswith("bus error: the swap device failed to read")
    assert k.counters(a)["swap_read_errors"] == 1
    assert k.alive(b)
    k.set_swap_errors()
    k.run(b, np.arange(16), page_numbers=True)  # b's pages read back as written
    k.check_invariants()


def test_a_filled_swap_device_gives_no_slot_until_one_is_freed() -> None:
    k = kernel(swap_slots=8)
    pid = k.spawn([Region(0, 64 * 4096)])
    k.run(pid, np.arange(14), np.ones(14, np.uint8), page_numbers=True)
    used = k.swap.used()
    assert k.fill_swap() == 8 - used
    assert int(np.count_nonzero(k.swap.owner == SWAP_FILLED)) == 8 - used
    assert k.fill_swap() == 0
    k.run(pid, np.arange(14, 40), np.ones(26, np.uint8), page_numbers=True)
    assert not k.alive(pid)  # no slot for a dirty victim: out of memory
    assert int(np.count_nonzero(k.swap.owner == SWAP_FILLED)) == 8 - used  # never given back


def test_lost_frames_are_pinned_to_a_pseudo_process() -> None:
    k = kernel()
    pid = k.spawn([Region(0, 64 * 4096)])
    k.run(pid, np.arange(20), np.ones(20, np.uint8), page_numbers=True)
    lost = k.spawn_pseudo("lost memory")
    assert k.take_frames(lost, 5) == 5
    assert k.resident(lost) == 5
    assert k.oom_kill("test") == pid  # the pseudo-process is never the victim
    k.check_invariants()


# ------------------------------------------------------------------ native machines


@pytest.fixture(scope="module")
def native_clean() -> dict[str, Any]:
    return summary(NATIVE)


def test_swap_write_errors_keep_pages_and_cost_nothing_else(native_clean: dict[str, Any]) -> None:
    faulty = summary(with_faults(NATIVE, swap=[{"write_error_rate": 0.2}]))
    p, clean = procs(faulty), procs(native_clean)
    assert sum(q["swap_write_errors"] for q in p.values()) > 0
    assert all(q["killed"] is None for q in p.values())
    assert faulty["faults"]["swap_devices"]["host"]["swap_write_errors"] > 0
    assert sum(q["swap_write_errors"] for q in clean.values()) == 0
    assert "faults" not in native_clean


def test_a_swap_read_error_ends_one_process_and_the_other_goes_on() -> None:
    s = with_faults(NATIVE, swap=[{"read_error_rate": 0.01}])
    # "two" works on 1 MiB that stays in memory once "one" is gone
    s["processes"][1]["memory"] = "1MiB"
    s["processes"][1]["workload"] = zipf(256)
    s["run"]["seconds"] = 0.5
    p = procs(summary(s))
    killed = [q for q in p.values() if q["killed"] is not None]
    assert len(killed) == 1
    assert "bus error: the swap device failed to read" in killed[0]["killed"]
    assert killed[0]["swap_read_errors"] == 1
    (survivor,) = [q for q in p.values() if q["killed"] is None]
    assert survivor["name"] == "two"
    assert survivor["accesses"] > 10 * killed[0]["accesses"]


def test_a_swap_device_that_fills_up_leads_to_the_oom_killer(native_clean: dict[str, Any]) -> None:
    s = with_faults(NATIVE, swap=[{"full_at": 0.05}])
    result = summary(s)
    (event,) = result["faults"]["injected"]
    assert event["kind"] == "swap_full" and event["time_s"] == 0.05
    assert result["host"]["oom_kills"] >= 1
    assert native_clean["host"]["oom_kills"] == 0
    killed = [q for q in result["processes"] if q["killed"]]
    assert killed and all("OOM killer" in q["killed"] for q in killed)


def test_memory_loss_takes_frames_and_the_processes_fault_more(
    native_clean: dict[str, Any],
) -> None:
    result = summary(with_faults(NATIVE, memory_loss=[{"at": 0.1, "amount": "1MiB"}]))
    (event,) = result["faults"]["injected"]
    assert event["outcome"] == "256 of 256 frames lost"
    assert all(q["killed"] is None for q in result["processes"])
    faults = sum(q["major_faults"] for q in result["processes"])
    assert faults > sum(q["major_faults"] for q in native_clean["processes"])


def test_memory_loss_beyond_what_can_be_evicted_kills_processes() -> None:
    s = with_faults(NATIVE, memory_loss=[{"at": 0.05, "amount": "3MiB"}])
    s["host"]["swap"]["size"] = "2MiB"  # too little swap to take the processes' pages
    result = summary(s)
    (event,) = result["faults"]["injected"]
    assert "the OOM killer ended" in event["outcome"]
    assert event["outcome"].startswith("768 of 768 frames lost")
    assert any("machine lost memory" in (q["killed"] or "") for q in result["processes"])


def test_a_fault_after_the_last_process_ends_does_not_lengthen_the_run() -> None:
    s = copy.deepcopy(NATIVE)
    del s["run"]["seconds"]
    s["run"]["accesses"] = 20_000
    for p in s["processes"]:
        p["accesses"] = 10_000
    plain = summary(s)
    late = summary(with_faults(s, memory_loss=[{"at": 50.0, "amount": "1MiB"}]))
    assert late["simulated_seconds"] == plain["simulated_seconds"] < 1.0
    assert late["faults"]["injected"] == []


def test_faults_are_deterministic() -> None:
    s = with_faults(
        NATIVE,
        swap=[{"read_error_rate": 0.001, "write_error_rate": 0.1, "full_at": 0.3}],
        memory_loss=[{"at": 0.2, "amount": "512KiB"}],
    )
    assert json.dumps(summary(s), sort_keys=True) == json.dumps(summary(s), sort_keys=True)


def test_a_native_machine_has_one_swap_device_and_no_vms() -> None:
    machine = build(scenario_from_dict(NATIVE))
    assert isinstance(machine, NativeMachine)
    with pytest.raises(KeyError):
        machine.swap_kernel("a")
    with pytest.raises(KeyError):
        machine.crash_vm("a")


# ------------------------------------------------------------------ virtual machines


@pytest.fixture(scope="module")
def virtual_clean() -> dict[str, Any]:
    return summary(VIRTUAL)


def test_a_crashed_vm_is_stopped_its_memory_freed_and_the_others_go_on(
    virtual_clean: dict[str, Any],
) -> None:
    result = summary(with_faults(VIRTUAL, vm_crash=[{"vm": "b", "at": 0.1}]))
    v, clean = vms(result), vms(virtual_clean)
    (event,) = result["faults"]["injected"]
    assert event["kind"] == "vm_crash" and event["target"] == "vm:b"
    assert event["outcome"].startswith("stopped;")
    assert v["b"]["stopped"] and v["b"]["stop_reason"] == "crashed (an injected fault)"
    assert v["b"]["host_resident_pages"] == 0 and v["b"]["host_swapped_pages"] == 0
    assert "crashed" in v["b"]["processes"][0]["killed"]
    for name in ("a", "c"):
        assert not v[name]["stopped"] and v[name]["stop_reason"] is None
        # with b's memory free, the others run at least as well as before
        assert v[name]["accesses"] >= clean[name]["accesses"]
    assert v["b"]["accesses"] < clean["b"]["accesses"]


def test_crashing_a_stopped_vm_changes_nothing() -> None:
    s = with_faults(VIRTUAL, vm_crash=[{"vm": "a", "at": 0.1}, {"vm": "a", "at": 0.2}])
    first, second = summary(s)["faults"]["injected"]
    assert first["outcome"].startswith("stopped;")
    assert second["outcome"].startswith("already stopped (crashed")


def test_a_host_swap_read_error_stops_the_vm_it_hit_only() -> None:
    s = with_faults(VIRTUAL, swap=[{"device": "host", "read_error_rate": 0.01}])
    s["hypervisor"]["balloon"] = {"enabled": False}  # the host swaps, and reads back
    result = summary(s)
    stopped = [v for v in result["vms"] if v["stopped"]]
    assert stopped, "some host swap-in should have failed"
    for v in stopped:
        assert v["stop_reason"].startswith("bus error: the swap device failed to read")
    assert len(stopped) < 3
    errors = result["faults"]["swap_devices"]["host"]["swap_read_errors"]
    assert errors == len(stopped)


def test_a_guest_swap_device_that_fills_up_is_that_guests_problem() -> None:
    s = copy.deepcopy(VIRTUAL)
    s["vms"][0]["processes"][0]["memory"] = "16MiB"  # more than the VM: the guest swaps
    s["vms"][0]["processes"][0]["workload"] = zipf(4096, writes=0.8)
    s["vms"][0]["guest"]["swap"] = "8MiB"
    result = summary(with_faults(s, swap=[{"device": "a", "full_at": 0.02}]))
    v = vms(result)
    assert "OOM killer" in (v["a"]["processes"][0]["killed"] or "")
    assert not v["a"]["stopped"]  # the guest killed its process; the VM runs on
    assert all(v[n]["processes"][0]["killed"] is None for n in ("b", "c"))


def test_memory_loss_under_a_hypervisor_is_reclaimed_from_the_vms(
    virtual_clean: dict[str, Any],
) -> None:
    result = summary(with_faults(VIRTUAL, memory_loss=[{"at": 0.1, "amount": "4MiB"}]))
    (event,) = result["faults"]["injected"]
    assert event["outcome"] == "1024 of 1024 frames lost"
    assert not any(v["stopped"] for v in result["vms"])
    swapped = sum(v["host_swap_outs"] for v in result["vms"])
    assert swapped > sum(v["host_swap_outs"] for v in virtual_clean["vms"])


def test_memory_loss_beyond_what_can_be_evicted_stops_vms() -> None:
    s = with_faults(VIRTUAL, memory_loss=[{"at": 0.1, "amount": "16MiB"}])
    s["hypervisor"]["host_swap"]["size"] = "4MiB"
    s["hypervisor"]["balloon"] = {"enabled": False}
    result = summary(s)
    (event,) = result["faults"]["injected"]
    assert "VMs stopped" in event["outcome"]
    stopped = [v for v in result["vms"] if v["stopped"]]
    assert 0 < len(stopped) < 3
    assert all("after losing memory" in v["stop_reason"] for v in stopped)


def test_every_fault_at_once_keeps_the_accounting_whole() -> None:
    s = with_faults(
        VIRTUAL,
        swap=[
            {"device": "host", "read_error_rate": 0.0005, "write_error_rate": 0.1},
            {"device": "b", "write_error_rate": 0.3, "full_at": 0.15},
        ],
        vm_crash=[{"vm": "c", "at": 0.2}],
        memory_loss=[{"at": 0.25, "amount": "2MiB"}],
    )
    machine = build(scenario_from_dict(s))
    assert isinstance(machine, VirtualizedMachine)
    seconds = machine.run(seconds=0.4)
    machine.check_accounting("at the end")  # the check ran after every quantum too
    out = machine.summary(seconds)
    assert [e["kind"] for e in out["faults"]["injected"]] == [
        "swap_full", "vm_crash", "memory_loss",
    ]  # fmt: skip


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("base", "faults", "where", "what"),
    [
        (VIRTUAL, {"swap": [{"device": "z"}]}, "faults.swap.0.device", "one of host, a, b, c"),
        (VIRTUAL, {"swap": [{}, {"device": "host"}]}, "faults.swap.1.device", "faults.swap.0"),
        (VIRTUAL, {"vm_crash": [{"vm": "z", "at": 1}]}, "faults.vm_crash.0.vm", "one of a, b, c"),
        (NATIVE, {"vm_crash": [{"vm": "a", "at": 1}]}, "faults.vm_crash.0", "no VM"),
        (NATIVE, {"swap": [{"read_error_rate": 2}]}, "faults.swap.0.read_error_rate", "1"),
        (
            NATIVE,
            {"memory_loss": [{"at": 1, "amount": "4MiB"}]},
            "faults.memory_loss.0.amount",
            "less than host.memory",
        ),
        (
            NATIVE,
            {"memory_loss": [{"at": 1, "amount": "1000"}]},
            "faults.memory_loss.0.amount",
            "whole number",
        ),
        (NATIVE, {"memory_loss": [{"at": -1, "amount": "4KiB"}]}, "faults.memory_loss.0.at", "0"),
        (NATIVE, {"crash": []}, "faults.crash", "unknown key; expected one of: swap"),
    ],
)
def test_bad_faults_are_rejected_naming_the_key(
    base: dict[str, Any], faults: dict[str, Any], where: str, what: str
) -> None:
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(with_faults(base, **faults))
    text = str(err.value)
    assert where in text and what in text


def test_the_cli_rejects_a_bad_fault_with_exit_status_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[host]\nmemory = "4MiB"\n[[processes]]\nname = "p"\nmemory = "1MiB"\n'
        'workload = { kind = "uniform", pages = 16 }\n[run]\naccesses = 100\n'
        '[[faults.vm_crash]]\nvm = "x"\nat = 1\n'
    )
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert "bad.toml" in result.stderr and "faults.vm_crash.0" in result.stderr
    assert "Traceback" not in result.output


def test_memvirt_run_shows_the_faults_and_why_vms_stopped() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "fault-injection.toml"
    result = runner.invoke(
        app, ["run", str(example), "--no-alone", "--set", "run.seconds=2.1"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "faults injected" in out
    for text in ("swap_full", "vm_crash", "memory_loss", "vm:c", "swap:b", "swap:host"):
        assert text in out
    assert "c stopped: crashed (an injected fault)" in out
