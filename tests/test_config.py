"""Scenario files: a machine is described once, validated once, and every mistake is named.

Each rule of the format is checked by the message it gives: the file, the key path in
dotted form, the value given, and what was expected.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from memvirt.config import (
    DEFAULT_BASE,
    Scenario,
    ScenarioError,
    load_scenario,
    scenario_from_dict,
)
from memvirt.kernel.kernel import KernelConfig
from memvirt.mmu.tlb import TLBConfig, TLBLevel
from memvirt.units import GiB, MiB
from memvirt.workloads import Zipf

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

NATIVE: dict[str, Any] = {
    "host": {"memory": "64MiB", "swap": {"size": "256MiB"}},
    "processes": [{"name": "app", "memory": "96MiB", "workload": {"kind": "zipf", "pages": 24576}}],
    "run": {"accesses": 1000},
}

VIRTUAL: dict[str, Any] = {
    "host": {"memory": "256MiB"},
    "vms": [
        {
            "name": "web",
            "memory": "192MiB",
            "processes": [
                {"name": "s", "memory": "64MiB", "workload": {"kind": "uniform", "pages": 100}}
            ],
        },
        {
            "name": "db",
            "memory": "192MiB",
            "processes": [
                {"name": "q", "memory": "64MiB", "workload": {"kind": "loop", "length": 100}}
            ],
        },
    ],
    "run": {"seconds": 1.0},
}


def native(**changes: Any) -> dict[str, Any]:
    """The native scenario with top-level tables replaced."""
    data = copy.deepcopy(NATIVE)
    data.update(changes)
    return data


def virtual() -> dict[str, Any]:
    return copy.deepcopy(VIRTUAL)


def rejected(data: dict[str, Any], overrides: tuple[str, ...] = ()) -> str:
    """The message a scenario is rejected with."""
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(data, source="s.toml", overrides=overrides)
    return str(info.value)


def write(tmp_path: Path, text: str, name: str = "scenario.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------ examples


#: example scenarios (sweep files, examples/sweep-*.toml, are tested in tests/test_sweep.py)
SCENARIOS = sorted(p for p in EXAMPLES.glob("*.toml") if not p.name.startswith("sweep-"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_example_validates_and_opens_with_comments(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.source == str(path)
    assert path.read_text().startswith("# ")


def test_every_example_scenario_loads() -> None:
    names = [p.name for p in SCENARIOS]
    assert names == [
        "demand-paging.toml",
        "fault-injection.toml",
        "idle-memory-tax.toml",
        "multiprogramming.toml",
        "no-virtual-memory.toml",
        "overcommit-ballooning.toml",
        "page-sharing.toml",
        "soak.toml",
        "two-level-nested.toml",
        "two-level-shadow.toml",
    ]
    for name in names:
        load_scenario(EXAMPLES / name)


def test_demand_paging_has_an_address_space_larger_than_memory() -> None:
    s = load_scenario(EXAMPLES / "demand-paging.toml")
    assert s.is_native and s.overcommit_ratio == 0.0
    assert s.host.frames == 16384
    (app,) = s.processes
    assert app.memory == 96 * MiB > s.host.memory
    assert s.host.swap_slots == 65536  # room for every page of the process
    assert s.host.swap_slots * s.host.page_size >= app.memory


def test_multiprogramming_processes_together_exceed_memory() -> None:
    s = load_scenario(EXAMPLES / "multiprogramming.toml")
    assert [p.name for p in s.processes] == ["db", "scan", "batch"]
    assert sum(p.memory or 0 for p in s.processes) == 88 * MiB > s.host.memory == 64 * MiB


@pytest.mark.parametrize("paging", ["nested", "shadow"])
def test_two_level_examples_overcommit_one_and_a_half_times(paging: str) -> None:
    s = load_scenario(EXAMPLES / f"two-level-{paging}.toml")
    assert not s.is_native
    assert s.overcommit_ratio == 1.5
    assert s.hypervisor is not None and s.hypervisor.paging == paging
    assert [vm.guest.levels for vm in s.vms] == [4, 4]
    assert s.host.levels == 4
    assert [vm.real_pages(s.host.page_size) for vm in s.vms] == [49152, 49152]
    assert all(isinstance(vm.processes[0].workload, Zipf) for vm in s.vms)
    assert len(s.vms) == 2 and all(len(vm.processes) == 1 for vm in s.vms)


def test_the_two_level_examples_differ_only_in_paging() -> None:
    nested = load_scenario(EXAMPLES / "two-level-nested.toml")
    shadow = load_scenario(EXAMPLES / "two-level-shadow.toml")
    assert nested.hash() != shadow.hash()
    assert nested.with_overrides(["hypervisor.paging=shadow"]).hash() == shadow.hash()


# ------------------------------------------------------------------------ defaults


def test_a_native_scenario_gets_x86_64_and_the_documented_defaults() -> None:
    s = scenario_from_dict(NATIVE)
    h = s.host
    assert (h.page_size, h.levels, h.bits_per_level) == (4096, 4, (9, 9, 9, 9))
    assert h.geometry().va_bits == 48
    assert (h.policy, h.scope, h.virtual_memory, h.huge_pages) == ("lru", "global", True, 0)
    assert h.swap.device == "ssd"
    assert h.tlb_config() == TLBConfig((TLBLevel(64, 4), TLBLevel(1536, 12)), False)
    c = s.cost
    assert (c.tlb_hit_ns, c.memory_reference_ns, c.minor_fault_ns) == (1, 100, 1000)
    assert (c.vm_exit_ns, c.host_fault_ns) == (1000, 2000)
    assert (c.swap_read_ns, c.swap_write_ns) == (80_000, 20_000)
    p = s.processes[0]
    assert (p.base, p.rate, p.start, p.accesses, p.regions) == (DEFAULT_BASE, 1e8, 0, None, ())
    assert DEFAULT_BASE == 0x400000
    assert (s.run.seed, s.run.quantum_accesses, s.run.seconds) == (0, 10_000, None)
    assert s.hypervisor is None and s.vms == ()


def test_a_virtual_scenario_gets_a_default_hypervisor_and_esx_like_vms() -> None:
    s = scenario_from_dict(VIRTUAL)
    assert s.hypervisor is not None
    hyp = s.hypervisor
    assert (hyp.paging, hyp.page_walk_caches, hyp.swap_victim) == ("nested", False, "random")
    assert (hyp.host_swap.size, hyp.host_swap.device) == (0, "ssd")
    web = s.vm("web")
    assert (web.vcpus, web.reservation, web.limit, web.balloon) == (1, 0, None, True)
    assert web.shares == 10 * 192  # "normal": 10 shares per MiB
    assert (web.guest.policy, web.guest.swap, web.guest.levels) == ("lru", 0, 4)
    assert web.geometry(s.host).va_bits == 48


def test_swap_latencies_follow_the_swap_device_unless_given() -> None:
    hdd = scenario_from_dict(NATIVE, overrides=["host.swap.device=hdd"])
    assert (hdd.cost.swap_read_ns, hdd.cost.swap_write_ns) == (8_000_000, 8_000_000)
    given = scenario_from_dict(NATIVE, overrides=["host.swap.device=hdd", "cost.swap_read_ns=5e6"])
    assert (given.cost.swap_read_ns, given.cost.swap_write_ns) == (5_000_000, 8_000_000)
    vms = scenario_from_dict(VIRTUAL, overrides=["hypervisor.host_swap.device=hdd"])
    assert vms.cost.swap_read_ns == 8_000_000  # with VMs: the hypervisor's swap device


def test_shares_are_per_mib_of_memory_by_level_or_absolute() -> None:
    data = virtual()
    data["vms"][0]["shares"] = "high"
    data["vms"][1]["shares"] = 777
    s = scenario_from_dict(data)
    assert [vm.shares for vm in s.vms] == [20 * 192, 777]
    low = scenario_from_dict(VIRTUAL, overrides=["vms.web.shares=low"])
    assert low.vm("web").shares == 5 * 192


# --------------------------------------------------------------------------- sizes


def test_sizes_are_read_in_binary_and_decimal_units_or_as_bytes() -> None:
    data = native()
    data["host"] = {"memory": "1.5GiB", "swap": {"size": 8192}}
    data["processes"][0]["memory"] = "128MB"  # 128,000,000 bytes: 31,250 pages
    s = scenario_from_dict(data)
    assert s.host.memory == 3 * GiB // 2
    assert s.host.frames == 393_216
    assert s.host.swap_slots == 2
    assert s.processes[0].memory == 128_000_000


def test_the_page_table_geometry_follows_levels_and_widths() -> None:
    five = scenario_from_dict(NATIVE, overrides=["host.levels=5"])
    assert five.host.bits_per_level == (9, 9, 9, 9, 9)
    assert five.host.geometry().va_bits == 57
    two = scenario_from_dict(NATIVE, overrides=["host.levels=2", "host.bits_per_level=[10, 10]"])
    assert two.host.geometry().va_bits == 32
    big = scenario_from_dict(
        NATIVE, overrides=["host.page_size=16KiB", "processes.0.workload.pages=6144"]
    )
    assert (big.host.frames, big.host.geometry().offset_bits) == (4096, 14)


def test_the_tlb_is_written_as_entries_colon_ways_or_as_tables_or_switched_off() -> None:
    one = scenario_from_dict(NATIVE, overrides=['host.tlb={l1 = "32:4", l2 = "none"}'])
    assert one.host.tlb_config() == TLBConfig((TLBLevel(32, 4),))
    table = scenario_from_dict(
        NATIVE, overrides=["host.tlb.l2={entries = 512, ways = 8}", "host.tlb.flush_on_switch=true"]
    )
    assert table.host.tlb_config() == TLBConfig((TLBLevel(64, 4), TLBLevel(512, 8)), True)
    off = scenario_from_dict(NATIVE, overrides=["host.tlb=false"])
    assert off.host.tlb is None and off.host.tlb_config() is None


def test_the_native_kernel_is_configured_from_the_host() -> None:
    s = load_scenario(EXAMPLES / "demand-paging.toml")
    assert s.host.kernel_config(seed=s.run.seed) == KernelConfig(
        frames=16384, swap_slots=65536, swap_kind="ssd", seed=1
    )


# ------------------------------------------------------------------------- traces


def test_a_trace_path_is_taken_from_the_scenario_files_directory(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    np.save(tmp_path / "traces" / "t.npy", np.arange(10, dtype=np.int64))
    path = write(
        tmp_path,
        '[host]\nmemory = "1MiB"\n\n[[processes]]\nname = "t"\n'
        'trace = { path = "traces/t.npy", format = "npy", page_numbers = true }\n\n'
        "[run]\naccesses = 10\n",
    )
    s = load_scenario(path)
    trace = s.processes[0].trace
    assert trace is not None
    assert trace.path == str((tmp_path / "traces" / "t.npy").resolve())
    assert (trace.format, trace.page_numbers) == ("npy", True)
    assert s.processes[0].memory is None  # the regions the trace touches


def test_a_trace_can_be_given_as_a_bare_path(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("0x1000\n")
    data = native()
    data["processes"][0] = {"name": "t", "trace": "t.txt"}
    s = scenario_from_dict(data, base_dir=tmp_path)
    assert s.processes[0].trace is not None
    assert s.processes[0].trace.format is None


def test_a_missing_trace_file_is_named_with_its_resolved_path(tmp_path: Path) -> None:
    data = native()
    data["processes"][0] = {"name": "t", "trace": "nothere.mvt"}
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(data, source="s.toml", base_dir=tmp_path)
    message = str(info.value)
    assert "processes.0.trace.path = 'nothere.mvt'" in message
    assert f"no such trace file: {tmp_path.resolve() / 'nothere.mvt'}" in message


def test_a_trace_format_must_be_one_of_the_readers(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("0x1000\n")
    data = native()
    data["processes"][0] = {
        "name": "t",
        "trace": {"path": str(tmp_path / "t.txt"), "format": "csv"},
    }
    assert (
        "processes.0.trace.format = 'csv': unknown trace format 'csv': known formats are "
        "text, npy, lackey, binary" in rejected(data)
    )


def test_a_process_has_a_workload_or_a_trace_not_both(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("0x1000\n")
    data = native()
    data["processes"][0]["trace"] = str(tmp_path / "t.txt")
    assert "processes.0.workload: give a workload table or a trace file (exactly one)" in (
        rejected(data)
    )
    del data["processes"][0]["trace"], data["processes"][0]["workload"]
    assert "processes.0.workload: give a workload table or a trace file" in rejected(data)


# -------------------------------------------------------------------- the rules


def test_vm_names_are_unique() -> None:
    data = virtual()
    data["vms"][1]["name"] = "web"
    assert "s.toml: vms.1.name = 'web': is already the name of vms.0" in rejected(data)


def test_vm_names_can_select_the_vm_in_an_override() -> None:
    data = virtual()
    data["vms"][1]["name"] = "db.1"
    message = rejected(data)
    assert "vms.1.name = 'db.1': expected a name of letters, digits, '-' and '_'" in message


def test_a_reservation_fits_in_the_vms_memory() -> None:
    data = virtual()
    data["vms"][0]["reservation"] = "256MiB"
    assert "vms.0.reservation = '256MiB': must be at most the VM's memory (192 MiB)" in rejected(
        data
    )


def test_a_limit_is_at_least_the_reservation() -> None:
    data = virtual()
    data["vms"][0].update(reservation="64MiB", limit="32MiB")
    assert "vms.0.limit = '32MiB': must be at least the reservation (64 MiB)" in rejected(data)
    data["vms"][0]["limit"] = "unlimited"
    assert scenario_from_dict(data).vms[0].limit is None
    data["vms"][0]["limit"] = "128MiB"
    assert scenario_from_dict(data).vms[0].limit == 128 * MiB


def test_reservations_together_fit_in_physical_memory() -> None:
    data = virtual()
    for vm in data["vms"]:
        vm["reservation"] = "160MiB"
    assert (
        "vms: the VMs' reservations add up to 320 MiB, more than host.memory (256 MiB)"
        in rejected(data)
    )


def test_sizes_are_whole_pages() -> None:
    data = virtual()
    data["host"]["memory"] = 256 * MiB + 100
    data["vms"][1]["guest"] = {"swap": "1000"}
    message = rejected(data)
    assert "host.memory = 268435556: must be a whole number of 4 KiB pages" in message
    assert "vms.1.guest.swap = '1000': must be a whole number of 4 KiB pages" in message


def test_a_bad_size_string_says_what_a_size_looks_like() -> None:
    data = native()
    data["host"]["memory"] = "lots"
    assert (
        "host.memory = 'lots': expected a size such as '4KiB', '1.5GiB' or 4096, got 'lots'"
        in rejected(data)
    )


def test_the_page_size_is_a_power_of_two() -> None:
    data = native()
    data["host"]["page_size"] = "3KiB"
    assert (
        "host.page_size = '3KiB': expected a power of two from 1 KiB to 1 GiB, got 3072 bytes"
        in rejected(data)
    )


def test_regions_fit_in_the_virtual_address_space() -> None:
    data = native()
    data["processes"][0]["regions"] = [{"start": 0xFFFF_FFFF_0000, "length": "1MiB"}]
    assert (
        "processes.0.regions.0 = '0xffffffff0000 + 1 MiB': ends at 0x10000000f0000, beyond the "
        "48-bit virtual address space (which ends at 0x1000000000000: 4 levels of page table)"
    ) in rejected(data)


def test_a_guest_address_space_follows_the_guests_page_table_levels() -> None:
    data = virtual()
    data["vms"][0]["guest"] = {"levels": 2}  # 2 x 9 bits + 12: a 30-bit (1 GiB) space
    data["vms"][0]["processes"][0]["memory"] = "1GiB"
    message = rejected(data)
    assert (
        "vms.0.processes.0.memory = '1GiB': ends at 0x40400000, beyond the 30-bit "
        "virtual address space" in message
    )


def test_regions_of_a_process_do_not_overlap() -> None:
    data = native()
    data["processes"][0]["regions"] = [{"start": "0x1000000", "length": "4KiB"}]
    assert (
        "processes.0.regions.0 = '0x1000000 + 4 KiB': overlaps processes.0.memory "
        "(0x400000 + 96 MiB)" in rejected(data)
    )


def test_a_workload_stays_inside_the_process_regions() -> None:
    data = native()
    data["processes"][0]["memory"] = "64MiB"
    assert (
        "processes.0.workload: its pages 0..24575 reach 0x400000..0x63fffff, outside the "
        "process's regions (memory: 64 MiB from 0x400000)" in rejected(data)
    )


def test_a_native_scenario_has_top_level_processes() -> None:
    assert "s.toml: processes: a native scenario (no [[vms]]) needs [[processes]]" in rejected(
        native(processes=[])
    )


def test_a_virtual_scenario_has_processes_only_inside_vms() -> None:
    data = virtual()
    data["processes"] = copy.deepcopy(NATIVE["processes"])
    assert (
        "processes = ['app']: with VMs, processes run inside them ([[vms.processes]]), "
        "not at top level" in rejected(data)
    )
    for vm in data["vms"]:
        vm["processes"] = []
    del data["processes"]
    assert "vms: no VM has a process to run" in rejected(data)


def test_a_hypervisor_table_needs_vms() -> None:
    message = rejected(native(hypervisor={"paging": "shadow"}))
    assert (
        "hypervisor: a [hypervisor] table needs [[vms]]; a native scenario has no hypervisor"
        in (message)
    )


def test_with_vms_the_hypervisor_owns_the_swap() -> None:
    data = virtual()
    data["host"]["swap"] = {"size": "1GiB"}
    assert "host.swap.size = '1GiB': with VMs the hypervisor swaps to" in rejected(data)


def test_policy_names_come_from_the_registry() -> None:
    data = virtual()
    data["host"]["policy"] = "mru"
    data["vms"][1]["guest"] = {"policy": "lruu"}
    message = rejected(data)
    assert (
        "host.policy = 'mru': unknown replacement policy 'mru': known policies are "
        "clock, fifo, lru, opt, random" in message
    )
    assert "vms.1.guest.policy = 'lruu': unknown replacement policy 'lruu'" in message


def test_a_run_says_when_it_stops() -> None:
    assert "s.toml: run: give seconds, accesses or both: when the run stops" in rejected(
        native(run={"seed": 3})
    )


def test_shares_are_a_level_or_a_positive_integer() -> None:
    data = virtual()
    data["vms"][0]["shares"] = "medium"
    assert (
        "vms.0.shares = 'medium': expected 'high', 'normal', 'low' or a positive integer"
        in rejected(data)
    )


def test_huge_pages_fit_in_memory() -> None:
    data = native()
    data["host"]["huge_pages"] = 33
    assert (
        "host.huge_pages = 33: 33 huge pages of 2 MiB need 66 MiB, more than host.memory (64 MiB)"
        in rejected(data)
    )


def test_a_workloads_own_errors_carry_their_key_path() -> None:
    data = native()
    data["processes"][0]["workload"]["alpha"] = -1
    # the key path has no trace of the union's tag ("zipf")
    assert "processes.0.workload.alpha = -1: Input should be greater than or equal to 0" in (
        rejected(data)
    )


def test_bits_per_level_has_one_width_per_level() -> None:
    assert (
        "s.toml: host.bits_per_level = [9, 9, 9] (from --set host.bits_per_level=[9, 9, 9]): "
        "needs one width per level (4 levels)"
        in rejected(NATIVE, ("host.bits_per_level=[9, 9, 9]",))
    )


def test_every_problem_is_reported_on_its_own_line() -> None:
    data = native()
    data["host"]["scope"] = "everywhere"
    data["run"]["seed"] = -1
    lines = rejected(data).splitlines()
    assert lines == [
        "s.toml: host.scope = 'everywhere': Input should be 'global' or 'local'",
        "s.toml: run.seed = -1: Input should be greater than or equal to 0",
    ]


# ---------------------------------------------------------------- unknown keys


def test_an_unknown_key_is_rejected_naming_its_path_and_the_known_keys() -> None:
    data = virtual()
    data["vms"][1]["guest"] = {"polcy": "fifo"}
    assert (
        "vms.1.guest.polcy = 'fifo': unknown key; expected one of: policy, swap, levels"
        in rejected(data)
    )


def test_an_unknown_table_is_rejected() -> None:
    message = rejected(native(hosts={"memory": "1GiB"}))
    assert "hosts = {'memory': '1GiB'}: unknown key; expected one of: host, cost," in message


def test_an_unknown_workload_key_lists_that_kinds_keys() -> None:
    data = native()
    data["processes"][0]["workload"]["skew"] = 2
    assert (
        "processes.0.workload.skew = 2: unknown key; expected one of: offset, write_fraction, "
        "kind, pages, alpha, shuffle" in rejected(data)
    )


# ----------------------------------------------------------------- TOML and files


def test_a_toml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[host]\nmemory = "64MiB"\npolicy = lru\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}:3:10: Invalid value"


def test_an_unreadable_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nothere\.toml: cannot read the scenario"):
        load_scenario(tmp_path / "nothere.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'# caf\xe9\n[host]\nmemory = "1MiB"\n')
    with pytest.raises(ScenarioError, match=r"latin1\.toml: byte 5: not UTF-8 text"):
        load_scenario(path)


def test_errors_in_a_file_name_the_line_of_the_key(tmp_path: Path) -> None:
    text = (EXAMPLES / "two-level-nested.toml").read_text()
    text = text.replace(
        'guest = { policy = "lru", swap = "256MiB", levels = 4 }\n\n'
        '[[vms.processes]]\nname = "query"',
        'guest = { policy = "lruu", swap = "256MiB", levels = 4 }\n\n'
        '[[vms.processes]]\nname = "query"',
    )
    text = text.replace("alpha = 1.1", "alpha = -1.1")
    path = write(tmp_path, text)
    lines = text.splitlines()
    guest_line = 1 + next(i for i, t in enumerate(lines) if '"lruu"' in t)
    workload_line = 1 + next(i for i, t in enumerate(lines) if "alpha = -1.1" in t)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).splitlines() == [
        f"{path}:{guest_line}: vms.1.guest.policy = 'lruu': unknown replacement policy 'lruu': "
        "known policies are clock, fifo, lru, opt, random, random-frame",
        f"{path}:{workload_line}: vms.1.processes.0.workload.alpha = -1.1: Input should be "
        "greater than or equal to 0",
    ]
    problem = info.value.problems[0]
    assert (problem.path, problem.value, problem.line) == (
        "vms.1.guest.policy",
        "'lruu'",
        guest_line,
    )


def test_keys_under_table_headers_and_array_items_are_found(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[host]\nmemory = "64MiB"\n\n[host.tlb]\nl1 = "64:5"\n\n'
        '[[processes]]\nname = "a"\nmemory = "4MiB"\nworkload = { kind = "uniform", pages = 1 }\n\n'
        '[[processes]]\nname = "b"\nmemory = "4MiB"\nrate = 0\n'
        'workload = { kind = "uniform", pages = 1 }\n\n[run]\nseconds = 1\n',
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).splitlines() == [
        f"{path}:5: host.tlb.l1.entries = 64: must be a multiple of ways (5)",
        f"{path}:15: processes.1.rate = 0: Input should be greater than or equal to 0.000001",
    ]


def test_a_rate_too_slow_for_a_finite_time_is_refused() -> None:
    # found by the fuzzing: 1e9 / 2.2e-311 ns an access is inf, and the run failed on it
    data = copy.deepcopy(NATIVE)
    data["processes"][0]["rate"] = 2.225073858507e-311
    with pytest.raises(ScenarioError, match=r"processes\.0\.rate = 2\.225073858507e-311: "):
        scenario_from_dict(data)
    data["processes"][0]["rate"] = 1e-6  # the slowest allowed: an access in 11.6 days
    assert scenario_from_dict(data).processes[0].rate == 1e-6


def test_errors_inside_nested_workloads_name_their_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[host]\nmemory = "64MiB"\nbits_per_level = [\n  9, 9,\n  9, 9,\n]\n\n'
        '[[processes]]\nname = "a"\nmemory = "64MiB"\n\n[processes.workload]\nkind = "mix"\n\n'
        "[[processes.workload.components]]\nweight = 1\n"
        'workload = { kind = "zipf", pages = 10, alpha = -2 }\n\n'
        "[[processes.workload.components]]\nweight = -1\n"
        'workload = { kind = "zipff", pages = 10 }\n\n[run]\nseconds = 1\n',
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    where = "processes.0.workload.components"
    assert str(info.value).splitlines() == [
        f"{path}:17: {where}.0.workload.alpha = -2: Input should be greater than or equal to 0",
        f"{path}:20: {where}.1.weight = -1: Input should be greater than 0",
        f"{path}:21: {where}.1.workload = {{'kind': 'zipff', 'pages': 10}}: Input tag 'zipff' "
        "found using 'kind' does not match any of the expected tags: 'uniform', 'zipf', "
        "'sequential', 'loop', 'hotcold', 'stride', 'mix', 'phases'",
    ]


# ---------------------------------------------------------------------- overrides


def test_an_override_sets_a_scalar_before_validation() -> None:
    s = scenario_from_dict(NATIVE, overrides=["host.memory=128MiB", "run.seed=3"])
    assert (s.host.memory, s.run.seed) == (128 * MiB, 3)


def test_an_override_selects_a_list_item_by_index_or_by_name() -> None:
    s = scenario_from_dict(VIRTUAL, overrides=["vms.0.memory=64MiB", "vms.db.memory=128MiB"])
    assert [vm.memory for vm in s.vms] == [64 * MiB, 128 * MiB]
    assert s.overcommit_ratio == 0.75


def test_override_values_are_toml_when_they_parse() -> None:
    s = scenario_from_dict(
        NATIVE,
        overrides=[
            "host.virtual_memory=false",
            'processes.app.name="main"',
            "processes.0.workload={kind = 'uniform', pages = 10, write_fraction = 0.5}",
            "processes.0.base=0x800000",
            "run.seconds=2.5",
        ],
    )
    assert s.host.virtual_memory is False
    p = s.processes[0]
    assert (p.name, p.base, s.run.seconds) == ("main", 0x800000, 2.5)
    assert p.workload is not None and p.workload.kind == "uniform"


def test_an_override_may_add_a_key_the_model_has() -> None:
    s = scenario_from_dict(VIRTUAL, overrides=["hypervisor.paging=shadow", "cost.vm_exit_ns=500"])
    assert s.hypervisor is not None and s.hypervisor.paging == "shadow"
    assert s.cost.vm_exit_ns == 500


def test_an_override_of_a_key_the_model_lacks_names_the_path() -> None:
    assert rejected(NATIVE, ("host.memroy=1GiB",)) == (
        "s.toml: --set host.memroy=1GiB: host has no key 'memroy' (its keys are: memory, "
        "page_size, levels, bits_per_level, swap, huge_pages, tlb, policy, scope, virtual_memory)"
    )
    assert "--set vms.5.memory=1GiB: vms has 2 items, no item 5" in rejected(
        VIRTUAL, ("vms.5.memory=1GiB",)
    )
    assert "--set vms.mail.memory=1GiB: no item named 'mail' in vms (names: web, db)" in rejected(
        VIRTUAL, ("vms.mail.memory=1GiB",)
    )
    assert "--set host.memory.size=1: host.memory is '64MiB', not a table" in rejected(
        NATIVE, ("host.memory.size=1",)
    )
    assert "--set vms.0.memory=1GiB: vms is a list with no items in the file" in rejected(
        NATIVE, ("vms.0.memory=1GiB",)
    )
    assert "--set run: expected KEY=VALUE" in rejected(NATIVE, ("run",))


def test_an_invalid_override_value_is_reported_as_coming_from_the_override() -> None:
    assert rejected(VIRTUAL, ("vms.db.guest.policy=mru",)).startswith(
        "s.toml: vms.1.guest.policy = 'mru' (from --set vms.db.guest.policy=mru): "
        "unknown replacement policy 'mru'"
    )


def test_with_overrides_reapplies_the_file_as_written() -> None:
    s = load_scenario(EXAMPLES / "demand-paging.toml", overrides=["run.seed=5"])
    hdd = s.with_overrides(["host.swap.device=hdd"])
    assert hdd.run.seed == 5  # earlier overrides stay
    assert hdd.cost.swap_read_ns == 8_000_000  # derived defaults are derived again
    assert s.cost.swap_read_ns == 80_000  # the original is unchanged
    assert hdd.source == s.source


# ------------------------------------------------------------- frozen and hashed


def test_a_scenario_is_frozen_all_the_way_down() -> None:
    s = scenario_from_dict(VIRTUAL)
    with pytest.raises(ValidationError, match="frozen"):
        s.run = s.run
    with pytest.raises(ValidationError, match="frozen"):
        s.host.memory = 1
    with pytest.raises(ValidationError, match="frozen"):
        s.vms[0].guest.policy = "fifo"
    assert isinstance(s.vms, tuple)


def test_the_hash_is_stable_across_loads_and_spellings() -> None:
    path = EXAMPLES / "two-level-shadow.toml"
    first, again = load_scenario(path), load_scenario(path)
    assert first.hash() == again.hash()
    assert re.fullmatch(r"[0-9a-f]{64}", first.hash())
    # the same machine written in other words
    spelled = first.with_overrides(["host.memory=268435456", "vms.web.shares=1920"])
    assert spelled.hash() == first.hash()


def test_the_hash_changes_when_a_value_changes() -> None:
    s = load_scenario(EXAMPLES / "two-level-shadow.toml")
    hashes = {
        s.hash(),
        s.with_overrides(["run.seed=1"]).hash(),
        s.with_overrides(["vms.db.memory=128MiB"]).hash(),
        s.with_overrides(["cost.tlb_hit_ns=0.5"]).hash(),
    }
    assert len(hashes) == 4


def test_to_dict_is_json_with_every_value_resolved() -> None:
    s = load_scenario(EXAMPLES / "two-level-nested.toml")
    d = json.loads(json.dumps(s.to_dict()))
    assert d["host"]["memory"] == 256 * MiB
    assert d["cost"]["swap_read_ns"] == 80_000
    assert d["vms"][0]["shares"] == 1920 and d["vms"][0]["limit"] is None
    assert d["vms"][0]["processes"][0]["workload"]["kind"] == "zipf"
    assert scenario_from_dict(d).hash() == s.hash()


def test_a_scenario_built_in_code_can_be_overridden_too() -> None:
    s = Scenario.model_validate(
        {**NATIVE, "cost": {"swap_read_ns": 1, "swap_write_ns": 1}}, context={"base_dir": "."}
    )
    assert s.with_overrides(["run.seed=9"]).run.seed == 9


# --------------------------------------------------------------------------- docs

DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"


def test_the_annotated_example_in_the_docs_validates(tmp_path: Path) -> None:
    text = DOC.read_text()
    example = text.split("## An annotated example", 1)[1].split("```toml\n", 1)[1].split("```")[0]
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "query.mvt.zst").write_bytes(b"")  # existence is what is checked
    s = load_scenario(write(tmp_path, example))
    assert s.overcommit_ratio == 1.5
    assert [vm.shares for vm in s.vms] == [3840, 1920]
    assert s.vms[0].processes[0].regions[0].writable is False
    assert s.vms[1].processes[0].memory is None


def test_the_docs_describe_every_key() -> None:
    from memvirt import config

    text = DOC.read_text()
    models: list[type[BaseModel]] = [
        config.HostConfig,
        config.SwapConfig,
        config.TLBSettings,
        config.TLBLevelConfig,
        config.CostModel,
        config.HypervisorConfig,
        config.VMConfig,
        config.GuestConfig,
        config.ProcessConfig,
        config.RegionConfig,
        config.TraceFile,
        config.RunConfig,
        config.SwapFault,
        config.VMCrash,
        config.MemoryLoss,
    ]
    missing = [
        f"{m.__name__}.{name}"
        for m in models
        for name in m.model_fields
        if f"| `{name}` |" not in text
    ]
    assert missing == []


def test_an_override_can_select_by_name_at_every_level() -> None:
    s = scenario_from_dict(VIRTUAL, overrides=["vms.web.processes.s.rate=5e7"])
    assert s.vm("web").processes[0].rate == 5e7


def test_the_python_example_in_the_docs_runs_and_says_what_it_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)[0]
    monkeypatch.chdir(DOC.parent.parent)
    names: dict[str, Any] = {}
    exec(compile(block, str(DOC), "exec"), names)
    s = names["s"]
    assert (s.is_native, s.overcommit_ratio) == (False, 1.25)
    assert (s.host.frames, s.host.geometry().va_bits) == (65536, 48)
    assert s.vm("web").real_pages(s.host.page_size) == 32768
