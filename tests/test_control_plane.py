"""The control plane's own bookkeeping, against the plain Python it replaced.

The hypervisor's control plane keeps some of its state in arrays that kernels read and
update, so that a control step or a host pass costs a few calls rather than a loop in
Python: the sharing tables grow and are cleared of tombstones in place, the active-memory
sample is a bitmap of the pages not yet seen, double paging is read from the guest's
eviction ring, and each VM's shared pages are a view of its sharing log. Each is checked
here against the obvious Python it stands for, on random inputs or on a machine run for a
while.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memvirt.config import scenario_from_dict
from memvirt.dataplane import native, reclaim
from memvirt.dataplane import sharing as sd
from memvirt.dataplane.layout import (
    N_RING,
    PTE_SWAPPED,
    RING_FRAME,
    RING_WRITTEN,
    S_COW_N,
    S_RING_N,
)
from memvirt.engine.scenario import build
from memvirt.engine.virtual import VirtualizedMachine
from memvirt.hypervisor import reclamation

# ------------------------------------------------------------- tables rebuilt in place


def table_as_dict(tables: sd.SharingTables) -> dict[tuple[int, int], int]:
    frames = tables.frames
    live = frames[frames[:, sd.H_STATE] == sd.LIVE]
    return {(int(r[sd.H_A]), int(r[sd.H_B])): int(r[sd.FM_REFS]) for r in live}


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(st.integers(0, 10_000), min_size=1, max_size=400, unique=True),
    gone=st.floats(0.0, 1.0),
    extra=st.sampled_from([0, 1, 100, 5000]),
    held=st.booleans(),
)
def test_a_table_rebuilt_in_place_keeps_its_rows_whatever_its_new_size(
    keys: list[int], gone: float, extra: int, held: bool
) -> None:
    # rows placed, some removed (tombstones), then the table rebuilt for `extra` more rows:
    # grown, kept at its size or shrunk; the same rows, found by key, no tombstone left
    tables = sd.SharingTables()
    tables.frames = np.zeros((2048, sd.N_FRAME), dtype=np.int64)
    for value, key in enumerate(keys):
        row = sd.place(tables.frames, tables.counts, sd.FRAMES, key, 0)
        tables.frames[row, sd.FM_REFS] = value
    for key in keys[: int(gone * len(keys))]:
        sd.remove(tables.frames, tables.counts, sd.FRAMES, sd.find(tables.frames, key, 0))
    before = table_as_dict(tables)
    # a view of the table held elsewhere: the table is not resized under it (its memory
    # would move), a new array takes its place when its size changes
    view = tables.frames[:8] if held else None
    first = id(tables.frames)
    live = int(tables.counts[sd.FRAMES, 0])
    tables._rebuild("frames", sd.FRAMES, live, extra)
    assert (id(tables.frames) == first) == (view is None or sd._capacity(live + extra, extra)
                                            == 2048)  # fmt: skip
    assert tables.frames.shape[0] == sd._capacity(live + extra, extra)
    assert table_as_dict(tables) == before
    assert all(sd.find(tables.frames, a, b) >= 0 for a, b in before)
    assert int(tables.counts[sd.FRAMES, 1]) == 0
    assert not np.any(tables.frames[:, sd.H_STATE] == sd.DEAD)
    # the rows left empty are zeros: a later insertion finds them as a new table's
    empty = tables.frames[tables.frames[:, sd.H_STATE] == sd.EMPTY]
    assert not empty.any()


def test_tables_that_fill_up_are_grown_where_they_are() -> None:
    # the frames table doubles in place as rows arrive, a reservation at a time: the
    # same array object, its rows all found afterwards
    tables = sd.SharingTables()
    rng = np.random.default_rng(5)
    keys = rng.choice(10**9, size=5000, replace=False)
    first = id(tables.frames)  # not a reference: the table would be held, and copied
    for chunk in np.array_split(keys, 50):
        tables.reserve(1, 64, contents=0, pages=0, frames=chunk.size)
        assert id(tables.frames) == first
        for key in chunk.tolist():
            sd.place(tables.frames, tables.counts, sd.FRAMES, key, 0)
        assert 2 * int(tables.counts[sd.FRAMES].sum()) <= tables.frames.shape[0]
    assert tables.frames.shape[0] >= 3 * 5000
    assert all(sd.find(tables.frames, int(k), 0) >= 0 for k in keys)


# ------------------------------------------------------------------- the sample's bits


@settings(max_examples=60, deadline=None)
@given(
    real_pages=st.integers(1, 3000),
    sample=st.integers(1, 100),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_sample_counts_each_page_touched_once_as_the_byte_per_page_did(
    real_pages: int, sample: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    pick = rng.choice(real_pages, size=min(sample, real_pages), replace=False)
    unseen = np.zeros(-(-real_pages // 64), dtype=np.uint64)
    np.bitwise_or.at(unseen, pick >> 6, np.left_shift(np.uint64(1), (pick & 63).astype(np.uint64)))
    sampled = np.zeros(real_pages, dtype=np.uint8)  # the old marks: 1 sampled, 2 touched
    sampled[pick] = 1
    seen = 0
    for _ in range(4):  # host passes, each touching pages (with repeats)
        pages = rng.integers(0, real_pages, size=int(rng.integers(0, 2 * real_pages)))
        seen += reclaim.mark_touched(unseen, pages.astype(np.int64))
        sampled[pages[sampled[pages] == 1]] = 2
        assert seen == int(np.count_nonzero(sampled == 2))
        still = np.flatnonzero(sampled == 1)
        bits = (unseen[still >> 6] >> (still & 63).astype(np.uint64)) & np.uint64(1)
        assert bits.all() and int(np.bitwise_count(unseen).sum()) == still.size


# ---------------------------------------------------------------------- double paging


def swapping_machine(seed: int) -> VirtualizedMachine:
    """Two VMs of 8 MiB on a 8 MiB host that swaps: many real pages are in host swap."""

    def vm(name: str) -> dict[str, Any]:
        workload = {"kind": "uniform", "pages": 1536, "write_fraction": 0.3}
        process = {"name": "p", "memory": "6MiB", "rate": 1e6, "workload": workload}
        return {"name": name, "memory": "8MiB", "guest": {"swap": "16MiB"},
                "processes": [process]}  # fmt: skip

    data = {
        "host": {"memory": "8MiB"},
        "hypervisor": {"host_swap": {"size": "32MiB"}, "control_period": 0.01},
        "vms": [vm("a"), vm("b")],
        "run": {"accesses": 60_000, "seed": seed, "quantum_accesses": 1000},
    }
    machine = build(scenario_from_dict(data, "test"))
    assert isinstance(machine, VirtualizedMachine)
    machine.run(accesses=60_000)
    return machine


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_double_paging_is_read_from_the_guest_ring_as_the_numpy_masks_did(seed: int) -> None:
    machine = swapping_machine(seed)
    reclaimer = machine.reclaimer
    rng = np.random.default_rng(seed)
    for vm in machine.vms:
        guest = vm.guest
        host_m = machine.host.machine
        swapped = [
            page
            for page in range(vm.real_pages)
            if (t := reclaim.leaf_entry(host_m, vm.host_pid, page))[0] >= 0
            and host_m.tables[t[0], t[1]] & PTE_SWAPPED
        ]
        assert swapped, "the host has swapped none of the VM's pages"
        # a ring of evictions: some of pages the host swapped, some written to the guest's
        # swap; its count may run past its rows (an overflow), as the guest's may
        rows = guest.ring.shape[0]
        n = int(rng.integers(1, rows + 5))
        ring = np.zeros((rows, N_RING), dtype=np.int64)
        pick = rng.choice(np.array(swapped + list(range(vm.real_pages))), size=rows)
        ring[:, RING_FRAME] = pick
        ring[:, RING_WRITTEN] = rng.random(rows) < 0.6
        guest.ring[:] = ring
        guest.st[S_RING_N] = n
        before = reclaimer.vms[vm.index].double_paging_reads
        # as it was: the written pages of the ring, then those the host holds in swap
        written = ring[: min(n, rows)]
        written = written[written[:, RING_WRITTEN] == 1, RING_FRAME]
        expected = written[np.isin(written, swapped)]
        doubled = reclaimer.double_paging(vm)
        assert doubled.tolist() == expected.tolist() and doubled.size > 0
        assert reclaimer.vms[vm.index].double_paging_reads == before + expected.size


# ------------------------------------------------------------- the shared pages' view


def test_a_vms_shared_pages_read_as_the_dictionary_they_replaced() -> None:
    from test_sharing_scan import small_machine  # a sibling module, as reference.py is

    machine = small_machine(3, True, 7, 2000)
    reclaimer = machine.reclaimer
    for _ in range(2):
        for vm in machine.vms:
            reclaimer.scan(vm, reclaimer.vms[vm.index].real_pages)
    tables = reclaimer.sharing.tables
    for r in reclaimer.vms:
        pairs = tables.shared_pages(r.index)
        assert pairs, "the scan shared none of the VM's pages"
        as_dict = dict(pairs)
        assert len(r.shared) == len(as_dict) and bool(r.shared)
        assert list(r.shared) == list(as_dict) and r.shared == as_dict
        assert all(r.shared[page] == frame for page, frame in pairs)
        assert all(page in r.shared for page in as_dict)
        absent = next(p for p in range(r.real_pages) if p not in as_dict)
        assert absent not in r.shared and -1 not in r.shared and 10**9 not in r.shared
        with pytest.raises(KeyError):
            r.shared[absent]


# ------------------------------------------------------------- the guests' watch logs


def sharing_machine_summary(seed: int) -> tuple[dict[str, Any], int]:
    """The page-sharing example (shortened, checked after every quantum) run for a while:
    its summary, and how many sharings writes broke."""
    from memvirt.config import load_scenario
    from memvirt.engine.scenario import run

    example = Path(__file__).resolve().parents[1] / "examples" / "page-sharing.toml"
    settings = ["run.accesses=100000", f"run.seed={seed}", "run.check=true",
                "hypervisor.sharing.scan_period=0.02"]  # fmt: skip
    result = run(load_scenario(example, settings))
    return result.summary, int(result.summary["host"]["sharing_copies"])


@pytest.mark.parametrize("seed", [0])
def test_a_watch_log_that_overflows_breaks_the_same_sharings_as_one_that_does_not(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with room for two pages a pass, the log overflows at nearly every pass and every
    # shared page is judged; with the usual room, only the pages the guest noted: the same
    # sharings break, in the same order (the check after each quantum finds every real
    # page's host copy holding its content)
    usual, copies = sharing_machine_summary(seed)
    assert copies > 50, "writes broke too few sharings for the test to tell"
    monkeypatch.setattr(reclamation, "WATCH_LOG_CAPACITY", 2)
    tiny, _ = sharing_machine_summary(seed)
    assert json.dumps(tiny, sort_keys=True) == json.dumps(usual, sort_keys=True)


def test_a_guest_notes_a_watched_frame_once_and_no_other() -> None:
    from test_sharing_scan import small_machine

    machine = small_machine(1, True, 7, 2000)
    reclaimer = machine.reclaimer
    vm = machine.vms[0]
    for _ in range(2):  # hints first, then shared frames
        reclaimer.scan(vm, reclaimer.vms[0].real_pages)
    shared = list(reclaimer.vms[0].shared)
    assert len(shared) >= 3
    guest = vm.guest
    guest.st[S_COW_N] = 0
    free = next(p for p in range(vm.real_pages) if p not in reclaimer.vms[0].shared)
    watched = np.array([shared[0], shared[1], shared[0], free, shared[1]], dtype=np.int64)
    native.note_changes(guest.machine, watched)
    # each watched frame once, in order; its watch bit is off until the check for broken
    # sharing has judged it
    assert int(guest.st[S_COW_N]) == 2
    assert guest.watch_log[:2].tolist() == [shared[0], shared[1]]
    # nothing changed their contents (the tokens are the shared frames'): both stay shared,
    # watched again, and a second change is noted anew
    assert reclaimer.before_host_pass(vm, np.zeros(0, dtype=np.int64)).size == 0
    assert int(guest.st[S_COW_N]) == 0 and shared[0] in reclaimer.vms[0].shared
    native.note_changes(guest.machine, watched[:1])
    assert int(guest.st[S_COW_N]) == 1


def test_a_shared_page_the_guest_writes_through_its_tlb_is_copied_at_the_next_host_pass() -> None:
    from test_sharing_scan import small_machine

    machine = small_machine(1, True, 7, 2000)
    reclaimer = machine.reclaimer
    vm = machine.vms[0]
    for _ in range(2):
        reclaimer.scan(vm, reclaimer.vms[0].real_pages)
    guest = vm.guest
    # a process page whose real page maps a shared frame
    pid = vm.reports[0].pid
    page_of = {reclaim.frame_of(guest.machine, pid, v): v for v in range(4096)}
    target = next(p for p in reclaimer.vms[0].shared if p in page_of)
    vpn = page_of[target]
    guest.st[S_COW_N] = 0
    # a read, then a write: the write hits the TLB entry the read filled, and the host
    # sees no walk of it (the written pages of the pass do not name it)
    guest.run(pid, np.array([vpn, vpn], dtype=np.int64), np.array([0, 1], dtype=np.uint8),
              page_numbers=True)  # fmt: skip
    assert guest.watch_log[: int(guest.st[S_COW_N])].tolist() == [target]
    broken = reclaimer.before_host_pass(vm, np.zeros(0, dtype=np.int64))
    assert broken.tolist() == [target] and target not in reclaimer.vms[0].shared
