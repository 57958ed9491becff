"""Reclamation under overcommitment: the experiments of docs/experiments.md, asserted.

Each example scenario is run as it is and with the one setting its comment says to
change; the assertions are the outcomes the literature reports (Waldspurger, OSDI 2002).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from memvirt.config import load_scenario, scenario_from_dict
from memvirt.engine.native import ContentError, NativeMachine
from memvirt.engine.scenario import RunResult, build, run
from memvirt.engine.virtual import AccountingError, VirtualizedMachine
from memvirt.hypervisor.reclamation import STUCK_REASON
from memvirt.hypervisor.states import STATES
from test_swap_growth import virtual

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *settings: str) -> RunResult:
    return run(load_scenario(EXAMPLES / name, list(settings)))


def combined(summary: dict[str, Any], key: str) -> float:
    return float(sum(vm[key] for vm in summary["vms"]))


def major_faults(summary: dict[str, Any]) -> int:
    return int(sum(vm["guest_swap_ins"] + vm["host_swap_ins"] for vm in summary["vms"]))


@pytest.fixture(scope="module")
def ballooning() -> tuple[RunResult, RunResult]:
    return (
        run_example("overcommit-ballooning.toml"),
        run_example("overcommit-ballooning.toml", "hypervisor.balloon.enabled=false"),
    )


def test_balloons_beat_hypervisor_swapping_alone(ballooning: tuple[RunResult, RunResult]) -> None:
    with_balloons, swapping_only = ballooning[0].summary, ballooning[1].summary
    assert combined(with_balloons, "throughput") > 1.1 * combined(swapping_only, "throughput")
    assert major_faults(with_balloons) < major_faults(swapping_only)
    assert all(vm["balloon_pages_max"] > 0 for vm in with_balloons["vms"])
    assert all(vm["balloon_pages_max"] == 0 for vm in swapping_only["vms"])
    # the guests gave up idle pages: what ballooning took exceeds what the host swapped
    reclaimed = with_balloons["host"]["reclaimed_pages"]
    assert reclaimed["ballooning"] > reclaimed["swapping"]
    assert swapping_only["host"]["reclaimed_pages"]["swapping"] > reclaimed["swapping"]


def test_a_balloon_never_holds_more_than_65_percent_of_its_vm(
    ballooning: tuple[RunResult, RunResult],
) -> None:
    for vm in ballooning[0].summary["vms"]:
        assert vm["balloon_pages_max"] <= 0.65 * vm["real_pages"]


def test_the_guest_swapping_a_page_the_host_swapped_costs_a_read(
    ballooning: tuple[RunResult, RunResult],
) -> None:
    assert combined(ballooning[0].summary, "double_paging_reads") > 0
    assert combined(ballooning[1].summary, "double_paging_reads") == 0  # the guests never swap


def test_time_in_the_free_memory_states_adds_up(ballooning: tuple[RunResult, RunResult]) -> None:
    for result in ballooning:
        host = result.summary["host"]
        assert set(host["time_in_state"]) == {"high", "clear", "soft", "hard", "low"}
        total = sum(host["time_in_state"].values())
        assert total == pytest.approx(result.summary["simulated_seconds"], abs=1e-6)
    # with balloons the host spent time in soft, where ballooning works
    assert ballooning[0].summary["host"]["time_in_state"]["soft"] > 0


def test_the_time_series_has_a_row_per_vm_per_step(
    ballooning: tuple[RunResult, RunResult], tmp_path: Path
) -> None:
    result = ballooning[0]
    result.write(tmp_path)
    frame = pd.read_parquet(tmp_path / "timeseries.parquet")
    assert list(frame["vm"].unique()) == ["vm1", "vm2", "vm3"]
    assert set(frame["host_state"]) <= {"high", "clear", "soft", "hard", "low"}
    last = frame[frame["time_s"] == frame["time_s"].max()].set_index("vm")
    for vm in result.summary["vms"]:
        assert last.loc[vm["name"], "balloon_pages"] == vm["balloon_pages"]
    assert frame.groupby("vm")["balloon_pages"].max().sum() == combined(
        result.summary, "balloon_pages_max"
    )


def test_the_idle_memory_tax_moves_memory_to_the_active_vm() -> None:
    untaxed = run_example("idle-memory-tax.toml", "hypervisor.allocation.idle_tax=0").summary
    taxed = run_example("idle-memory-tax.toml").summary
    u = {vm["name"]: vm for vm in untaxed["vms"]}
    t = {vm["name"]: vm for vm in taxed["vms"]}
    # equal shares, no tax: equal entitlements
    assert abs(u["idle"]["target_pages"] - u["busy"]["target_pages"]) <= 2
    # with the tax the idle VM's idle pages cost more: memory moves to the busy VM
    assert t["busy"]["target_pages"] > 1.4 * t["idle"]["target_pages"]
    assert t["busy"]["throughput"] > 1.2 * u["busy"]["throughput"]
    assert t["idle"]["balloon_pages_max"] > u["idle"]["balloon_pages_max"]
    # the estimate follows the truth for the busy VM
    assert t["busy"]["active_fraction_estimated"] == pytest.approx(
        t["busy"]["active_fraction_true"], abs=0.15
    )


def test_page_sharing_savings_grow_with_identical_vms() -> None:
    raw = tomllib.loads((EXAMPLES / "page-sharing.toml").read_text())
    os_pages = 32 * 256
    saved = []
    for n in (1, 2, 4):
        data = dict(raw, vms=raw["vms"][:n])
        summary = run(scenario_from_dict(data, source=f"page-sharing-{n}")).summary
        saved.append(summary["host"]["sharing_saved_pages"] / (n * os_pages))
    # one VM: its zero pages alone (a tenth of its OS memory, and zero pages of its process)
    assert 0.09 < saved[0] < 0.2
    assert saved[0] < saved[1] < saved[2] < 0.6  # toward image + zeros = 60%


def test_salting_keeps_sharing_within_each_vm() -> None:
    raw = tomllib.loads((EXAMPLES / "page-sharing.toml").read_text())
    data = dict(raw, vms=raw["vms"][:2])
    data["hypervisor"] = dict(raw["hypervisor"], sharing={"scan_period": 1.0, "inter_vm": False})
    summary = run(scenario_from_dict(data, source="salted")).summary
    # no image page is shared across the two VMs: only zero pages within each
    assert summary["host"]["sharing_saved_pages"] / (2 * 32 * 256) < 0.2


def test_compression_keeps_pages_that_fit_in_2_kib() -> None:
    summary = run_example(
        "overcommit-ballooning.toml",
        "hypervisor.balloon.enabled=false",
        "hypervisor.compression.enabled=true",
        "run.seconds=2.0",
    ).summary
    reclaimed = summary["host"]["reclaimed_pages"]
    assert reclaimed["compression"] > 0
    assert combined(summary, "compressed_pages_max") > 0
    for vm in summary["vms"]:
        # the cache holds at most 10% of the VM's memory, in compressed bytes of <= 2 KiB
        assert vm["compressed_pages_max"] * 256 <= 0.1 * vm["real_pages"] * 4096


def test_the_estimate_rises_at_once_and_falls_slowly() -> None:
    raw = tomllib.loads((EXAMPLES / "idle-memory-tax.toml").read_text())
    busy = raw["vms"][1]
    phases = {
        "kind": "phases",
        "repeat": False,
        "phases": [
            {"accesses": 100_000, "workload": {"kind": "loop", "length": 256}},
            {"accesses": 300_000, "workload": {"kind": "uniform", "pages": 16384}},
            {"accesses": 1, "workload": {"kind": "loop", "length": 256}},
        ],
    }
    proc = dict(busy["processes"][0], workload=phases, start=0.0)
    data = dict(raw, vms=[dict(busy, processes=[proc])])
    data["host"] = {"memory": "256MiB"}
    data["run"] = dict(raw["run"], seconds=3.0)
    result = run(scenario_from_dict(data, source="working-set"))
    assert result.timeseries is not None
    series = result.timeseries.drop_duplicates("active_estimated")
    est = result.timeseries.set_index("time_s")["active_estimated"]
    true = result.timeseries.set_index("time_s")["active_true"]
    grown = true[true > 0.3].index.min()  # the first period that saw the large set
    assert est[grown] >= 0.9 * true[grown]  # up within one period
    shrunk = true[(true.index > grown) & (true < 0.05)].index.min()
    after = est[est.index >= shrunk]
    # still high one period after the set shrank...
    assert after.iloc[0] > 0.1 and after.iloc[0] > 5 * true[shrunk]
    assert after.is_monotonic_decreasing and after.iloc[-1] < after.iloc[0]  # ...then falls
    assert len(series) > 3


def test_a_host_whose_running_vms_are_all_blocked_for_good_stops_the_largest() -> None:
    """A low state that only blocks: nothing is ever reclaimed, so once both VMs are above
    their targets neither would run again, and a run bounded by accesses would never end.
    After an allocation period of that, the host stops the largest VM (its out-of-memory
    rule) and the other runs its accesses to the end."""
    data = virtual("64MiB")
    techniques = {"high": [], "clear": ["sharing"], "soft": ["sharing", "ballooning"],
                  "hard": ["sharing", "compression", "swapping"], "low": ["blocking"]}  # fmt: skip
    data["hypervisor"]["states"] = {"techniques": techniques}
    data["run"] = {"accesses": 200_000, "quantum_accesses": 2000, "check": True}
    machine = build(scenario_from_dict(data))
    assert isinstance(machine, VirtualizedMachine)
    seconds = machine.run(seconds=30.0, accesses=200_000)  # (the seconds only as a backstop)
    vms = machine.summary(seconds)["vms"]
    stopped = [vm for vm in vms if vm["stop_reason"] == STUCK_REASON]
    assert len(stopped) == 1
    assert sum(vm["accesses"] for vm in vms) == 200_000
    assert all(vm["blocked_seconds"] > 0 for vm in vms)
    # stopped after an allocation period (0.05 s) and a step or two of being stuck
    period = data["hypervisor"]["allocation"]["period"]
    assert stopped[0]["simulated_seconds"] < 4 * period


def test_a_reclamation_step_frees_its_target_even_when_it_compresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pages compressed take frames back for the compression caches: a step that swaps
    and compresses counts free memory again after the caches took theirs, and goes on
    until it is at the level that ends the state (here host swap always has room)."""
    data = virtual("64MiB")
    data["run"]["check"] = False
    data["hypervisor"]["compression"] = {"enabled": True}
    machine = build(scenario_from_dict(data))
    assert isinstance(machine, VirtualizedMachine)
    reclaimer = machine.reclaimer
    swap = reclaimer._swap
    after: list[tuple[int, int]] = []  # (the step's target, free pages after it)

    def recorded(enabled: bool) -> None:
        target = reclaimer.states.target_free_pages()
        swap(enabled)
        after.append((target, reclaimer.free_pages()))

    monkeypatch.setattr(reclaimer, "_swap", recorded)
    seconds = machine.run(seconds=data["run"]["seconds"])
    assert any(target > 0 for target, _ in after)
    assert all(free >= target for target, free in after)
    assert all(vm["compressed_pages_max"] > 0 for vm in machine.summary(seconds)["vms"])


def test_a_blocked_vcpu_waits_until_just_after_the_next_reclamation_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In the low state a VM above its target may not run: each of its vCPU's waits ends
    1 ns after the next control step (the first moment it may be unblocked: at the same
    time the vCPU's turn goes first), not a whole control period after it blocked."""
    # two VMs of 8 MiB on a 12 MiB host, whose low state only blocks (nothing reclaims
    # there, so the VMs above their targets stay blocked, waking after every step)
    data = virtual("64MiB")
    data["run"]["check"] = False
    techniques = {"high": [], "clear": ["sharing"], "soft": ["sharing", "ballooning"],
                  "hard": ["sharing", "compression", "swapping"], "low": ["blocking"]}  # fmt: skip
    data["hypervisor"]["states"] = {"techniques": techniques}
    machine = build(scenario_from_dict(data))
    assert isinstance(machine, VirtualizedMachine)
    steps: list[float] = []
    waits: list[tuple[float, float]] = []
    tick, blocked_wait = machine.reclaimer.tick, machine.blocked_wait

    def counted_tick(now: float) -> None:
        steps.append(now)
        tick(now)

    def counted_wait(now: float) -> float:
        wait = blocked_wait(now)
        waits.append((now, wait))
        return wait

    monkeypatch.setattr(machine.reclaimer, "tick", counted_tick)
    monkeypatch.setattr(machine, "blocked_wait", counted_wait)
    seconds = machine.run(seconds=data["run"]["seconds"])
    assert waits, "no vCPU was blocked"
    for now, wait in waits:
        step = now + wait - 1.0
        assert step in steps or step > steps[-1]  # a step's time (or the run ended first)
        assert not [t for t in steps if now < t < step]  # the next one, no later
    blocked = sum(vm["blocked_seconds"] for vm in machine.summary(seconds)["vms"])
    assert blocked == pytest.approx(sum(wait for _, wait in waits) / 1e9)
    assert machine.blocked_wait(machine.next_control_ns) == 1.0  # at the step's own time


@pytest.mark.parametrize(
    ("example", "settings"),
    [
        ("overcommit-ballooning.toml", ()),
        ("overcommit-ballooning.toml", ("hypervisor.balloon.enabled=false",)),
        ("overcommit-ballooning.toml", ("hypervisor.compression.enabled=true",)),
        ("idle-memory-tax.toml", ()),
        ("page-sharing.toml", ()),
    ],
)
def test_every_experiment_passes_the_content_check(example: str, settings: tuple[str, ...]) -> None:
    summary = run_example(example, *settings, "run.check=true", "run.seconds=1.2").summary
    assert all(not vm["stopped"] for vm in summary["vms"])


def tiny_overcommitted(seed: int, victim: str, techniques: bool) -> dict[str, Any]:
    """Two VMs of 48 MiB on a 40 MiB host, writing a third of their accesses."""

    def vm(name: str) -> dict[str, Any]:
        process = {
            "name": "p",
            "memory": "28MiB",
            "rate": 1e6,
            "workload": {"kind": "uniform", "pages": 7168, "write_fraction": 0.3},
        }
        return {"name": name, "memory": "48MiB", "guest": {"swap": "64MiB"},
                "processes": [process]}  # fmt: skip

    hypervisor: dict[str, Any] = {
        "host_swap": {"size": "128MiB"},
        "swap_victim": victim,
        "control_period": 0.01,
        "sharing": {"scan_period": 0.5},
    }
    if not techniques:
        hypervisor["states"] = {"techniques": {s: [] for s in STATES}}
    return {
        "host": {"memory": "40MiB"},
        "hypervisor": hypervisor,
        "vms": [vm("a"), vm("b")],
        "run": {"accesses": 200_000, "seed": seed, "quantum_accesses": 2000, "check": True},
    }


@pytest.mark.parametrize("victim", ["random", "lru"])
@pytest.mark.parametrize("techniques", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_tiny_overcommitted_host_loses_no_page(victim: str, techniques: bool, seed: int) -> None:
    # host demand paging alone (no technique), then every technique, under the content check
    summary = run(scenario_from_dict(tiny_overcommitted(seed, victim, techniques))).summary
    assert sum(vm["host_swap_outs"] for vm in summary["vms"]) > 0
    assert all(not vm["stopped"] for vm in summary["vms"])


def test_the_content_check_catches_a_corrupted_swap_copy_natively() -> None:
    scenario = load_scenario(
        EXAMPLES / "demand-paging.toml", ["run.check=true", "run.accesses=600000"]
    )
    machine = build(scenario)
    assert isinstance(machine, NativeMachine)
    machine.run(accesses=300_000)
    kernel = machine.kernel
    assert kernel.swap.used() > 0
    kernel.swap.token[kernel.swap.owner >= 0] ^= 1  # every copy in swap now differs
    with pytest.raises(ContentError, match=r"reads .* it last wrote"):
        machine.run(accesses=600_000)


def test_the_content_check_catches_a_corrupted_host_copy() -> None:
    machine = build(scenario_from_dict(tiny_overcommitted(0, "random", False)))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=100_000)
    host = machine.host
    assert host.swap.used() > 0
    host.swap.token[host.swap.owner >= 0] ^= 1  # the host's swap no longer holds the pages
    # found by the check after a quantum, or first by the host pass's look at the stale
    # pages when the pass reads one of them
    found = "in the guest, but the host keeps|a host copy differs from the guest's content"
    with pytest.raises(ContentError, match=found):
        machine.run(accesses=200_000)


def test_the_accounting_check_finds_a_swap_slot_that_holds_no_page() -> None:
    machine = build(scenario_from_dict(tiny_overcommitted(0, "random", True)))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=60_000)
    machine.check_accounting("before")  # consistent so far
    host = machine.host
    free_slot = int(np.flatnonzero(host.swap.owner < 0)[0])
    host.swap.owner[free_slot] = machine.vms[0].host_pid  # a slot taken and never filled
    with pytest.raises(AccountingError, match="a used swap slot holds no page"):
        machine.check_accounting("after the leak")


def test_the_accounting_check_finds_a_frame_owned_and_free_at_once() -> None:
    machine = build(scenario_from_dict(tiny_overcommitted(1, "lru", False)))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=2_000)  # the host is not full yet: frames are free
    host = machine.host
    free = host.free_frames()
    assert free.size > 0
    frame = int(free[0])
    host.frames.fi32[frame, 0] = machine.vms[1].host_pid  # owned, yet on the free list
    with pytest.raises(AccountingError, match="on the free list has an owner"):
        machine.check_accounting("after the corruption")
