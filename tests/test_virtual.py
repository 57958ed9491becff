"""Virtual machines: two-level mapping, nested and shadow paging, host swapping."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import memvirt.engine.virtual as virtual
from memvirt.config import ScenarioError, load_scenario, scenario_from_dict
from memvirt.dataplane.layout import S_REC_N
from memvirt.engine.explain import explain, explain_two_level
from memvirt.engine.scenario import build, run
from memvirt.engine.virtual import VirtualizedMachine

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

PAGE = 4096


def two_vms(paging: str = "nested", **host: Any) -> dict[str, Any]:
    """Two 8 MiB VMs on a 12 MiB host (1.33x overcommitted), each touching most of its memory."""
    vm = {
        "memory": "8MiB",
        "guest": {"policy": "lru", "swap": "16MiB"},
        "processes": [
            {
                "name": "p",
                "memory": "6MiB",
                "workload": {"kind": "zipf", "pages": 1536, "alpha": 0.6, "write_fraction": 0.3},
            }
        ],
    }
    return {
        "host": {"memory": "12MiB", **host},
        "hypervisor": {"paging": paging, "host_swap": {"size": "32MiB"}},
        "vms": [{"name": "a", **vm}, {"name": "b", **vm}],
        "run": {"accesses": 60_000, "seed": 3, "quantum_accesses": 2000},
    }


@pytest.mark.parametrize(
    ("levels", "paging", "refs"),
    [(4, "nested", 24), (5, "nested", 35), (4, "shadow", 4), (5, "shadow", 5)],
)
def test_a_two_dimensional_walk_takes_the_textbook_number_of_references(
    levels: int, paging: str, refs: int
) -> None:
    data = two_vms(paging, levels=levels)
    for vm in data["vms"]:
        vm["guest"]["levels"] = levels
    out = explain(scenario_from_dict(data), vm="b")
    assert out["mode"] == paging
    assert (out["guest_levels"], out["host_levels"]) == (levels, levels)
    assert out["memory_references"] == refs


def test_every_guest_walk_sends_each_real_page_it_reads_through_the_host_table() -> None:
    data = two_vms(tlb=False)
    data["host"]["memory"] = "32MiB"  # room for both VMs: no host swapping
    machine = build(scenario_from_dict(data))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=30_000)
    for vm in machine.vms:
        guest = vm.guest.counters()
        host = machine.host.counters(vm.host_pid)
        # a walk reads one guest entry per level it reaches, then the data page:
        # each of those real pages is one translation by the host table
        assert host["accesses"] == guest["walk_memory_references"] + guest["walks"]
        # warm host walks read all 4 host levels; only first touches stop early
        cold = host["minor_faults"]
        assert 4 * (host["accesses"] - cold) <= host["walk_memory_references"]
        assert host["walk_memory_references"] <= 4 * host["accesses"]


def test_the_same_real_page_in_two_vms_maps_to_different_frames() -> None:
    machine = build(scenario_from_dict(two_vms()))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=20_000)
    a, b = machine.vms
    both = sorted(set(a.guest.resident_vpns(0)) & set(b.guest.resident_vpns(0)))
    assert both
    real_a = a.guest.translate(0, both[0] * PAGE)
    real_b = b.guest.translate(0, both[0] * PAGE)
    assert real_a is not None and real_b is not None
    pa = machine.host.translate(a.host_pid, real_a)
    pb = machine.host.translate(b.host_pid, real_b)
    assert pa is not None and pb is not None and pa != pb


def test_the_same_virtual_address_in_two_processes_of_a_vm_maps_to_different_real_pages() -> None:
    data = two_vms()
    proc = data["vms"][0]["processes"][0]
    data["vms"][0]["processes"] = [proc, {**proc, "name": "q"}]
    machine = build(scenario_from_dict(data))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=20_000)
    guest = machine.vms[0].guest
    common = sorted(set(guest.resident_vpns(0)) & set(guest.resident_vpns(1)))
    assert common
    assert guest.translate(0, common[0] * PAGE) != guest.translate(1, common[0] * PAGE)


def test_an_overcommitted_host_swaps_real_pages_behind_the_guests_backs() -> None:
    result = run(scenario_from_dict(two_vms()))
    summary = result.summary
    assert summary["overcommit_ratio"] == pytest.approx(16 / 12)
    assert summary["host"]["swap_used"] > 0
    for vm in summary["vms"]:
        assert vm["host_swap_outs"] > 0 and vm["host_faults"] > 0
        assert vm["guest_swap_outs"] == 0  # the guest has memory enough: it never knows
        assert not vm["stopped"]


def test_no_guest_tlb_entry_maps_a_real_page_the_host_took_away() -> None:
    machine = build(scenario_from_dict(two_vms()))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=40_000)
    assert machine.host.counters()["evictions"] > 0
    for vm in machine.vms:
        vm.guest.check_tlb()
        for entry in vm.guest.tlb_entries():
            assert machine.host.translate(vm.host_pid, entry.pfn * PAGE) is not None
        machine.host.check_invariants()


def test_shadow_paging_walks_native_length_and_traps_page_table_writes() -> None:
    nested = run(scenario_from_dict(two_vms("nested"))).summary["vms"][0]
    shadow = run(scenario_from_dict(two_vms("shadow"))).summary["vms"][0]
    assert shadow["host_walk_references"] == 0
    assert shadow["walk_memory_references"] == shadow["guest_walk_references"]
    assert shadow["vm_exits"] >= shadow["guest_faults"] > 0
    assert nested["vm_exits"] == 0
    assert nested["walk_memory_references"] > 4 * nested["guest_walk_references"]


def test_a_virtualized_run_is_deterministic() -> None:
    first = json.dumps(run(scenario_from_dict(two_vms())).summary, sort_keys=True)
    again = json.dumps(run(scenario_from_dict(two_vms())).summary, sort_keys=True)
    assert first == again


def test_reservations_that_do_not_fit_are_refused() -> None:
    data = two_vms()
    for vm in data["vms"]:
        vm["reservation"] = "7MiB"
    with pytest.raises(ScenarioError, match="reservation"):
        scenario_from_dict(data)


def test_page_walk_caches_spare_the_host_walks_of_guest_table_pages() -> None:
    plain = two_vms()
    cached = copy.deepcopy(plain)
    cached["hypervisor"]["page_walk_caches"] = True
    without = run(scenario_from_dict(plain)).summary["vms"][0]
    with_caches = run(scenario_from_dict(cached)).summary["vms"][0]
    assert with_caches["walk_cache_hits"] > 0 and without["walk_cache_hits"] == 0
    # the same guest walks (up to the host's shootdowns, which fall at other points of the
    # guests' streams when the host's work takes other times), fewer host references
    assert with_caches["guest_walk_references"] == pytest.approx(
        without["guest_walk_references"], rel=0.01
    )
    assert with_caches["host_walk_references"] < without["host_walk_references"] / 2
    # a warm walk whose guest table pages are all cached: n guest + m host references
    out = explain(scenario_from_dict(cached), vm="b")
    assert all(step["walk_cache_hit"] for step in out["steps"])
    assert out["memory_references"] == 4 + 4


def test_processes_of_a_vm_share_its_vcpus() -> None:
    def busy_over_elapsed(vcpus: int) -> float:
        data = two_vms()
        vm = data["vms"][0]
        proc = vm["processes"][0]
        vm["processes"] = [proc, {**proc, "name": "q"}]
        vm["vcpus"] = vcpus
        data["vms"] = [vm]
        data["run"] = {"seconds": 0.05, "seed": 3, "quantum_accesses": 1000}
        machine = build(scenario_from_dict(data))
        assert isinstance(machine, VirtualizedMachine)
        elapsed = machine.run(seconds=0.05)
        reports = machine.vms[0].reports
        assert all(r.counters["accesses"] > 0 for r in reports)  # both got turns
        return sum(r.busy_ns for r in reports) / 1e9 / elapsed

    # one vCPU runs one process at a time; two run both at once
    assert busy_over_elapsed(1) <= 1.0
    assert busy_over_elapsed(2) > 1.8


def test_a_2mib_guest_page_shortens_the_nested_walk() -> None:
    data = two_vms()
    vm = data["vms"][1]
    vm["guest"]["huge_pages"] = 2
    vm["processes"][0]["regions"] = [{"start": 1 << 30, "length": 4 << 20, "huge": True}]
    vm["processes"][0]["accesses"] = 5000
    machine = build(scenario_from_dict(data))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=20_000)
    vm_b = machine.vms[1]
    vm_b.guest.st[S_REC_N] = 0  # the run's last quantum is already translated
    assert vm_b.guest.access(0, (1 << 30) + 0x1234, write=True)
    # the host backs the real pages the walk read, as after a quantum
    machine._host_pass(vm_b)
    out = explain_two_level(machine, vm="b", address=(1 << 30) + 0x1234)
    # 3 guest entries (the leaf is one level up), each and the data page by 4 host references
    assert out["memory_references"] == 3 + 4 * 4
    assert out["physical_address"] is not None


def test_a_huge_region_in_a_vm_needs_guest_huge_pages() -> None:
    data = two_vms()
    data["vms"][0]["processes"][0]["regions"] = [
        {"start": 1 << 30, "length": 2 << 20, "huge": True}
    ]
    with pytest.raises(ScenarioError, match=r"needs guest.huge_pages > 0"):
        scenario_from_dict(data)


def test_the_host_learns_of_writes_made_through_the_tlb() -> None:
    machine = build(scenario_from_dict(two_vms()))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=40_000)
    host = machine.host
    assert host.counters()["writebacks"] > 0
    for vm in machine.vms:
        machine.sync_contents(vm)
        for frame in range(host.config.frames):
            if host.frames.owner(frame) != vm.host_pid or host.frames.flags(frame).table:
                continue
            real = host.frames.vpn(frame)
            # the host frame holds what the guest last wrote to that real page...
            assert host.frames.token(frame) == vm.guest.frames.token(real)
            # ...and a swap copy it keeps is current: a changed page lost its copy
            slot = host.frames.swap_slot(frame)
            if slot >= 0:
                assert int(host.swap.token[slot]) == host.frames.token(frame)
                assert not host.frames.flags(frame).dirty


def test_2mib_host_pages_shorten_the_nested_walk() -> None:
    data = two_vms(memory="18MiB")  # room for both VMs' 8 MiB in huge pages and the tables
    data["hypervisor"]["huge_pages"] = True
    out = explain(scenario_from_dict(data), vm="b")
    # 4 guest entries, then each of the 5 real pages through a 3-level host walk
    assert out["memory_references"] == 4 + 5 * 3
    assert out["physical_address"] is not None


def test_2mib_host_and_guest_pages_shorten_it_further() -> None:
    data = two_vms(memory="18MiB")
    data["hypervisor"]["huge_pages"] = True
    vm = data["vms"][1]
    vm["guest"]["huge_pages"] = 2
    vm["processes"][0]["regions"] = [{"start": 1 << 30, "length": 4 << 20, "huge": True}]
    vm["processes"][0]["accesses"] = 5000
    machine = build(scenario_from_dict(data))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=20_000)
    vm_b = machine.vms[1]
    vm_b.guest.st[S_REC_N] = 0
    assert vm_b.guest.access(0, (1 << 30) + 0x1234, write=True)
    machine._host_pass(vm_b)
    out = explain_two_level(machine, vm="b", address=(1 << 30) + 0x1234)
    # 3 guest entries and the data page, each through a 3-level host walk
    assert out["memory_references"] == 3 + 4 * 3


def test_vms_on_host_huge_pages_keep_their_contents() -> None:
    data = two_vms(memory="18MiB")
    data["hypervisor"]["huge_pages"] = True
    data["run"]["check"] = True
    summary = run(scenario_from_dict(data)).summary
    assert all(vm["host_swap_outs"] == 0 and not vm["stopped"] for vm in summary["vms"])
    # the host backs each VM with whole huge pages: 8 MiB each, touched or not
    assert all(vm["host_resident_pages"] % 512 == 0 for vm in summary["vms"])


def test_host_huge_pages_cannot_be_overcommitted() -> None:
    data = two_vms()  # two 8 MiB VMs on 12 MiB
    data["hypervisor"]["huge_pages"] = True
    with pytest.raises(ScenarioError, match="cannot be overcommitted"):
        scenario_from_dict(data)


def test_a_host_pass_that_evicts_more_than_its_log_holds_keeps_every_swap_copy_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a log of 8 evictions, so that nearly every pass of a thrashing host overflows it:
    # the swap copies must then all be put right, or the check finds a page wrong
    monkeypatch.setattr(virtual, "RING_CAPACITY", 8)
    settings = ["run.accesses=400000", "run.check=true", "host.memory=96MiB",
                "vms.0.memory=64MiB", "vms.1.memory=96MiB"]  # fmt: skip
    scenario = load_scenario(EXAMPLES / "two-level-nested.toml", settings)
    summary = run(scenario).summary  # the check runs after every quantum
    assert sum(vm["host_swap_outs"] for vm in summary["vms"]) > 1000
