"""The sharing scan's kernels against the page-by-page scan they replaced.

Page sharing used to be plain Python: dictionaries for the hash table (content key ->
shared frame), the hints (content key -> the one page seen with it) and the owners of each
shared frame, and a loop over each scanned page. :class:`OldSharing` below is that code,
kept as the obviously-correct twin, with the rule the kernels follow since: a page has one
hint at most (``hint_of``, page -> the key it is hinted under), and its old hint goes when
it is hinted under a new key or shared, or when its hint is found stale. Hypothesis builds
small machines whose guests hold zero pages and the pages of a common OS image, runs them a
little, and then applies the same random steps to the machine (the kernels of
:mod:`memvirt.dataplane.sharing`) and to the twin (on a copy of the host's arrays): scans,
broken sharing before a host pass, balloon discards, a stopped VM's pages dropped, and guest
writes in between. After each step the host's arrays, the tables (and each page's hint) and
each VM's shared pages, in order, must be equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memvirt.config import scenario_from_dict
from memvirt.dataplane import reclaim
from memvirt.dataplane import sharing as sd
from memvirt.dataplane.layout import F_FLAGS, FR_PINNED, FR_TABLE, G_TOKEN
from memvirt.dataplane.state import Machine, copy_machine
from memvirt.engine.scenario import build, run
from memvirt.engine.virtual import VirtualizedMachine

# ----------------------------------------------------------------------------- the twin


class OldSharing:
    """Page sharing as it was written in Python, on its own copy of the host's arrays."""

    def __init__(self, machine: VirtualizedMachine) -> None:
        reclaimer = machine.reclaimer
        self.host = copy_machine(machine.host.machine)
        self.guests = [vm.guest.frames for vm in machine.vms]  # read only, as the scan does
        self.pids = [vm.host_pid for vm in machine.vms]
        self.spid = machine.hypervisor_pid
        self.inter_vm = reclaimer.config.sharing.inter_vm
        self.real_pages = [r.real_pages for r in reclaimer.vms]
        self.cursors = [r.scan_cursor for r in reclaimer.vms]
        self.shared = [dict(r.shared) for r in reclaimer.vms]
        self.owners = {f: (key, set(who)) for f, (key, who) in reclaimer.sharing.owners.items()}
        self.table, self.hints = tables_as_dicts(reclaimer.sharing.tables)
        self.hint_of = {hint: key for key, hint in self.hints.items()}
        self.reclaimed = reclaimer.reclaimed["sharing"]
        self.copies = reclaimer.sharing.copies

    def key(self, vm: int, token: int) -> Any:
        return token if self.inter_vm else (vm, token)

    def scan(self, vm: int, n: int) -> None:
        real_pages = self.real_pages[vm]
        pages = (self.cursors[vm] + np.arange(n, dtype=np.int64)) % real_pages
        self.cursors[vm] = int((self.cursors[vm] + n) % real_pages)
        tokens = self.guests[vm].fi64[pages, G_TOKEN]
        skip = (self.guests[vm].fi32[pages, F_FLAGS] & (FR_PINNED | FR_TABLE)) != 0
        for page, token, skipped in zip(
            pages.tolist(), tokens.tolist(), skip.tolist(), strict=True
        ):
            if skipped or page in self.shared[vm]:
                continue
            f = reclaim.frame_of(self.host, self.pids[vm], page)
            if f >= 0:
                self.consider(vm, page, int(token), f)

    def consider(self, vm: int, page: int, token: int, f: int) -> None:
        key = self.key(vm, token)
        shared = self.table.get(key)
        if shared is not None:
            self.forget_hint(vm, page)
            reclaim.map_shared(self.host, f, shared)
            self.owners[shared][1].add((vm, page))
            self.shared[vm][page] = shared
            self.reclaimed += 1
            return
        hint = self.hints.get(key)
        if hint == (vm, page):
            return
        if hint is not None:
            hvm, hpage = hint
            hf = reclaim.frame_of(self.host, self.pids[hvm], hpage)
            still = (
                hf >= 0
                and hpage not in self.shared[hvm]
                and int(self.guests[hvm].fi64[hpage, G_TOKEN]) == token
            )
            del self.hint_of[hint]  # the key's row is the frame's now, or this page's
            self.forget_hint(vm, page)
            if still:
                del self.hints[key]
                reclaim.make_shared(self.host, hf, self.spid)
                self.host.fi64[hf, G_TOKEN] = token
                self.table[key] = hf
                self.owners[hf] = (key, {(hvm, hpage)})
                self.shared[hvm][hpage] = hf
                reclaim.map_shared(self.host, f, hf)
                self.owners[hf][1].add((vm, page))
                self.shared[vm][page] = hf
                self.reclaimed += 1
                return
        self.forget_hint(vm, page)
        self.hints[key] = (vm, page)
        self.hint_of[(vm, page)] = key

    def forget_hint(self, vm: int, page: int) -> None:
        """The page's hint, if it has one, is gone: the page is shared or hinted anew."""
        key = self.hint_of.pop((vm, page), None)
        if key is not None and self.hints.get(key) == (vm, page):
            del self.hints[key]

    def before_host_pass(self, vm: int, written: np.ndarray) -> np.ndarray:
        if not self.shared[vm]:
            return np.zeros(0, dtype=np.int64)
        pages = np.fromiter(self.shared[vm].keys(), dtype=np.int64, count=len(self.shared[vm]))
        frames = np.fromiter(self.shared[vm].values(), dtype=np.int64, count=len(pages))
        now = self.guests[vm].fi64[pages, G_TOKEN]
        held = self.host.fi64[frames, G_TOKEN]
        broken: np.ndarray = pages[(now != held) | np.isin(pages, written)]
        for page in broken.tolist():
            self.unshare(vm, page)
            self.copies += 1
        return broken

    def unshare(self, vm: int, page: int) -> None:
        shared = self.shared[vm].pop(page)
        reclaim.unmap(self.host, self.pids[vm], page)
        self.drop_ref(shared, (vm, page))

    def drop_ref(self, shared: int, who: tuple[int, int]) -> None:
        key, owners = self.owners[shared]
        owners.discard(who)
        if not owners:
            del self.owners[shared]
            self.table.pop(key, None)
            reclaim.release_frames(self.host, np.array([shared], dtype=np.int64), 1)


def tables_as_dicts(tables: sd.SharingTables) -> tuple[dict[Any, int], dict[Any, tuple[int, int]]]:
    """The contents table as the twin's two dictionaries: shared frames and hints."""
    table: dict[Any, int] = {}
    hints: dict[Any, tuple[int, int]] = {}
    for row in tables.content_rows().tolist():
        key = sd.content_key(row[sd.H_A], row[sd.H_B])
        if row[sd.CT_VALUE] >= 0:
            table[key] = row[sd.CT_VALUE]
        else:
            hints[key] = sd.split_hint(row[sd.CT_VALUE])
    return table, hints


def assert_same(machine: VirtualizedMachine, twin: OldSharing) -> None:
    reclaimer = machine.reclaimer
    for name, ours, theirs in zip(Machine._fields, machine.host.machine, twin.host, strict=True):
        assert np.array_equal(ours, theirs), f"host array {name} differs"
    tables = reclaimer.sharing.tables
    table, hints = tables_as_dicts(tables)
    assert table == twin.table
    assert hints == twin.hints
    # a page has one hint at most, and knows its key: hints and pages match one to one
    assert {hint: key for key, hint in twin.hints.items()} == twin.hint_of
    by_page = {who: key if isinstance(key, int) else key[1] for who, key in twin.hint_of.items()}
    assert tables.page_hints() == by_page
    assert dict(reclaimer.sharing.owners.items()) == twin.owners
    assert len(reclaimer.sharing.owners) == len(twin.owners)
    for r in reclaimer.vms:
        # the same pages in the same order: the dictionary, the kernels' log and the twin's
        assert list(r.shared.items()) == list(twin.shared[r.index].items())
        assert tables.shared_pages(r.index) == list(twin.shared[r.index].items())
        assert r.scan_cursor == twin.cursors[r.index]
    assert reclaimer.reclaimed["sharing"] == twin.reclaimed
    assert reclaimer.sharing.copies == twin.copies


# ----------------------------------------------------------------------------- machines


def scenario(vms: int, inter_vm: bool, seed: int, accesses: int) -> dict[str, Any]:
    """Small VMs booted from one OS image (half its pages the image's, a fifth zeros) on a
    host with room for them, sharing in every state."""

    def vm(k: int) -> dict[str, Any]:
        return {
            "name": f"vm{k}",
            "memory": "3MiB",
            "guest": {
                "policy": "lru",
                "swap": "4MiB",
                "os_memory": "1MiB",
                "image": "os",
                "content": {"zero_fraction": 0.2, "image_fraction": 0.5},
            },
            "processes": [
                {
                    "name": "p",
                    "memory": "2MiB",
                    "rate": 1e6,
                    "workload": {"kind": "uniform", "pages": 400, "write_fraction": 0.2},
                }
            ],
        }

    return {
        "host": {"memory": "16MiB"},
        "hypervisor": {
            "host_swap": {"size": "8MiB"},
            "control_period": 0.002,
            "sharing": {"scan_period": 0.05, "inter_vm": inter_vm},
            "states": {"techniques": {"high": ["sharing"]}},
        },
        "vms": [vm(k) for k in range(vms)],
        "run": {"accesses": max(1, accesses), "seed": seed, "quantum_accesses": 500},
    }


def small_machine(vms: int, inter_vm: bool, seed: int, accesses: int) -> VirtualizedMachine:
    machine = build(scenario_from_dict(scenario(vms, inter_vm, seed, accesses), "test"))
    assert isinstance(machine, VirtualizedMachine)
    if accesses:
        machine.run(accesses=accesses)
    return machine


# ---------------------------------------------------------------------------- the steps

steps = st.lists(
    st.tuples(
        st.sampled_from(["scan", "write", "host pass", "discard", "drop"]),
        st.integers(0, 2),  # which VM (modulo their number)
        st.integers(1, 900),  # how many pages
        st.integers(0, 2**32 - 1),  # a seed for the pages and tokens chosen
    ),
    min_size=1,
    max_size=12,
)


def apply(machine: VirtualizedMachine, twin: OldSharing, step: tuple[str, int, int, int]) -> None:
    kind, v, n, seed = step
    reclaimer = machine.reclaimer
    vm = machine.vms[v % len(machine.vms)]
    r = reclaimer.vms[vm.index]
    rng = np.random.default_rng(seed)
    if kind == "scan":  # as a control step does: at most one pass over the VM
        reclaimer.scan(vm, min(n, r.real_pages))
        twin.scan(vm.index, min(n, r.real_pages))
    elif kind == "write":
        # the guest writes pages: some take a content another page has (so they may be
        # shared), the others a new one; page-table and balloon pages keep theirs
        fi32 = vm.guest.frames.fi32
        pages = rng.choice(r.real_pages, size=min(n, r.real_pages), replace=False)
        pages = pages[(fi32[pages, F_FLAGS] & (FR_PINNED | FR_TABLE)) == 0]
        common = machine.vms[int(rng.integers(len(machine.vms)))].guest.frames.fi64
        donors = rng.integers(0, len(common), size=pages.size)
        fresh = rng.integers(1, 2**62, size=pages.size)
        chosen = np.where(rng.random(pages.size) < 0.7, common[donors, G_TOKEN], fresh)
        set_tokens(vm, pages, chosen)
    elif kind == "host pass":
        written = rng.choice(r.real_pages, size=min(n // 3, r.real_pages), replace=False)
        ours = reclaimer.before_host_pass(vm, written.astype(np.int64))
        theirs = twin.before_host_pass(vm.index, written)
        assert ours.tolist() == theirs.tolist()
    elif kind == "discard":
        # balloon pages: the shared ones among them are unshared first, in order
        pages = rng.integers(0, r.real_pages, size=n).astype(np.int64)
        if r.shared:
            reclaimer._unshare_pages(vm, pages)
        for page in pages.tolist():
            if page in twin.shared[vm.index]:
                twin.unshare(vm.index, page)
    elif kind == "drop" and r.shared:
        # what reap does for a VM the host stopped, for a few of its shared pages; then the
        # (still running) host forgets their mappings, as the stopped one has
        for page, shared in list(r.shared.items())[: n % 7 + 1]:
            reclaimer._drop_ref(shared, (r.index, page))
            reclaim.unmap(machine.host.machine, vm.host_pid, page)
            del twin.shared[vm.index][page]
            twin.drop_ref(shared, (vm.index, page))
            reclaim.unmap(twin.host, vm.host_pid, page)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    vms=st.integers(1, 3),
    inter_vm=st.booleans(),
    seed=st.integers(0, 1000),
    accesses=st.integers(0, 6000),
    plan=steps,
)
def test_the_kernels_share_and_unshare_as_the_python_scan_did(
    vms: int, inter_vm: bool, seed: int, accesses: int, plan: list[tuple[str, int, int, int]]
) -> None:
    machine = small_machine(vms, inter_vm, seed, accesses)
    twin = OldSharing(machine)
    assert_same(machine, twin)
    for step in plan:
        apply(machine, twin, step)
        assert_same(machine, twin)


def test_a_long_run_of_steps_shares_unshares_and_agrees() -> None:
    # enough steps that the tables are rebuilt and the logs closed up more than once
    machine = small_machine(3, True, 5, 3000)
    twin = OldSharing(machine)
    rng = np.random.default_rng(11)
    kinds = ["scan", "scan", "write", "host pass", "discard", "drop"]
    across = 0  # steps after which a frame was shared by pages of different VMs
    for _ in range(150):
        step = (str(rng.choice(kinds)), int(rng.integers(3)), int(rng.integers(1, 900)),
                int(rng.integers(2**32)))  # fmt: skip
        apply(machine, twin, step)
        across += any(len({vm for vm, _ in who}) > 1 for _, who in twin.owners.values())
    assert_same(machine, twin)
    assert twin.copies > 100 and twin.reclaimed > 1000 and across > 10


# ------------------------------------------------------------------ the events' room


def test_a_scan_longer_than_the_last_has_room_for_its_events() -> None:
    # the tables had room left from the first reservation, and the events array (one
    # scan's worth) was grown only when the tables were: a scan of 128 pages after one of
    # 51 wrote its events past the end of an array of 102 rows
    tables = sd.SharingTables()
    tables.reserve(3, 1280, contents=51, pages=102, frames=51)
    assert tables.events.shape[0] >= 102
    tables.reserve(3, 1280, contents=128, pages=256, frames=128)
    assert tables.events.shape[0] >= 256


def property_example() -> dict[str, Any]:
    """The machine on which the property tests (tests/test_properties.py) found the events
    written out of bounds: three VMs on a host of 3 MiB with 1 MiB of swap, sharing (salted)
    only in the low state, so that scans of different lengths follow each other (12,001
    accesses: it reaches the low state a little later since one VM's quantum overlaps
    another's host pass)."""

    def vm(name: str, memory: str, workload: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "memory": memory,
            "balloon": False,
            "guest": {
                "policy": "lru",
                "swap": "0MiB",
                "os_memory": "0MiB",
                "image": "os",
                "content": {"zero_fraction": 0.2, "image_fraction": 0.3},
            },
            "processes": [{"name": "p", "memory": "4MiB", "rate": 1e6, "workload": workload}],
        }

    uniform = {"kind": "uniform", "pages": 256, "write_fraction": 0.1}
    return {
        "faults": {},
        "host": {"memory": "3MiB"},
        "hypervisor": {
            "paging": "nested",
            "host_swap": {"size": "1MiB"},
            "swap_victim": "random",
            "control_period": 0.005,
            "sharing": {"scan_period": 0.05, "inter_vm": False},
            "allocation": {"period": 0.02, "sample_period": 0.05},
            "states": {
                "techniques": {"high": [], "clear": [], "soft": [], "hard": [], "low": ["sharing"]}
            },
        },
        "vms": [
            vm("vm0", "2MiB", uniform),
            vm("vm1", "5MiB", {"kind": "zipf", "pages": 256, "alpha": 0.5, "write_fraction": 0.0}),
            vm("vm2", "2MiB", uniform),
        ],
        "run": {"accesses": 12001, "seed": 0, "quantum_accesses": 500, "check": True},
    }


def test_the_property_tests_machine_scans_within_its_arrays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # kernels run without bounds checks, so the write out of bounds corrupted the heap
    # silently (or aborted a later run): each scan is checked to have room for its events
    # first. With NUMBA_BOUNDSCHECK=1 any other access out of bounds raises as well.
    scans: list[int] = []
    kernel = sd.scan

    def checked(*args: Any) -> tuple[int, int, int, int]:
        n, events = args[8], args[14]
        assert events.shape[0] >= 2 * n, f"a scan of {n} pages, room for {events.shape[0]}"
        scans.append(n)
        return kernel(*args)

    monkeypatch.setattr(sd, "scan", checked)
    summary = run(scenario_from_dict(property_example(), "property example")).summary
    assert len(set(scans)) > 1  # scans of different lengths, the longest not first
    assert max(scans) > scans[0]
    assert any(vm["shared_pages_max"] for vm in summary["vms"])


# ------------------------------------------------------------------- one hint a page


def writable_pages(vm: Any) -> np.ndarray:
    """The real pages of ``vm`` that the scan considers (not page tables, not balloon)."""
    fi32 = vm.guest.frames.fi32
    pages: np.ndarray = np.flatnonzero((fi32[:, F_FLAGS] & (FR_PINNED | FR_TABLE)) == 0)
    return pages


def test_pages_that_keep_changing_keep_one_hint_each() -> None:
    # every page gets new contents before each pass of the scan: each pass used to leave a
    # hint row for every content it saw, so the table grew by the VMs' size each pass
    machine = small_machine(2, False, 4, 2000)
    reclaimer = machine.reclaimer
    tables = reclaimer.sharing.tables
    rng = np.random.default_rng(3)
    real_pages = sum(r.real_pages for r in reclaimer.vms)
    capacities = []
    for _ in range(16):
        for vm, r in zip(machine.vms, reclaimer.vms, strict=True):
            pages = writable_pages(vm)
            fi64 = vm.guest.frames.fi64
            # a quarter of the pages take the content of another page (to be shared)
            fresh = rng.integers(1, 2**62, size=pages.size)
            copied = fi64[rng.choice(pages, pages.size), G_TOKEN]
            set_tokens(vm, pages, np.where(rng.random(pages.size) < 0.25, copied, fresh))
            reclaimer.before_host_pass(vm, np.zeros(0, dtype=np.int64))
            reclaimer.scan(vm, r.real_pages)
        rows = tables.content_rows()
        hints = int(np.count_nonzero(rows[:, sd.CT_VALUE] < 0))
        assert hints == len(tables.page_hints()) <= real_pages
        assert rows.shape[0] <= real_pages + len(reclaimer.sharing.owners)
        capacities.append(tables.contents.shape[0])
    # 16 passes saw some 16 times as many contents as there are pages: the table did not
    # grow after the first passes (tombstones are cleared by the rebuilds)
    assert capacities[-1] <= capacities[1]
    assert int(tables.counts[sd.CONTENTS, 0]) == tables.content_rows().shape[0]


def set_tokens(vm: Any, pages: Any, tokens: Any) -> None:
    """The guest of ``vm`` writes ``tokens`` into ``pages`` (real pages)."""
    vm.guest.set_tokens(np.asarray(pages), tokens)


def scan_page(machine: VirtualizedMachine, v: int, page: int) -> None:
    r = machine.reclaimer.vms[v]
    r.scan_cursor = page
    machine.reclaimer.scan(machine.vms[v], 1)


def test_a_page_back_at_an_old_content_is_found_by_its_next_scan_not_its_old_hint() -> None:
    machine = small_machine(1, True, 3, 0)
    vm = machine.vms[0]
    tables = machine.reclaimer.sharing.tables
    resident = [
        page
        for page in writable_pages(vm).tolist()
        if reclaim.frame_of(machine.host.machine, vm.host_pid, page) >= 0
    ]
    a, b = resident[0], resident[-1]
    old, new = 0x5EED_0001, 0x5EED_0002  # contents no other page holds
    set_tokens(vm, [a], [old])
    scan_page(machine, 0, a)
    assert tables.page_hints()[(0, a)] == old
    set_tokens(vm, [a], [new])
    scan_page(machine, 0, a)  # hinted under its new content: the old row goes
    assert tables.page_hints()[(0, a)] == new
    assert sd.find(tables.contents, sd.NO_SALT, old) < 0
    # a is back at its old content, and b takes it too: b finds no hint (a's old one is
    # gone) and becomes the hint; a's next scan shares the two
    set_tokens(vm, [a, b], [old, old])
    scan_page(machine, 0, b)
    assert machine.reclaimer.vms[0].shared == {}
    assert tables.page_hints()[(0, b)] == old
    scan_page(machine, 0, a)
    shared = machine.reclaimer.vms[0].shared
    assert set(shared) == {a, b} and len(set(shared.values())) == 1
    assert (0, a) not in tables.page_hints() and (0, b) not in tables.page_hints()


# ------------------------------------------------------------------------------ salting


@pytest.mark.parametrize("inter_vm", [False, True])
def test_salting_keeps_each_shared_frame_within_one_vm(inter_vm: bool) -> None:
    machine = small_machine(3, inter_vm, 3, 0)
    for _ in range(2):  # the first scan of each VM leaves hints, the second shares
        for vm in machine.vms:
            machine.reclaimer.scan(vm, machine.reclaimer.vms[vm.index].real_pages)
    owners = machine.reclaimer.sharing.owners
    assert len(owners) > 0
    across = [who for _, who in owners.values() if len({vm for vm, _ in who}) > 1]
    if inter_vm:
        # the image's pages and the zero pages of all three VMs: one frame each
        assert across
        assert all(isinstance(key, int) for key, _ in owners.values())
    else:
        assert not across
        # each key names its VM, and the VM owns the frame
        assert all(key[0] == next(iter(who))[0] for key, who in owners.values())
    saved = sum(len(r.shared) for r in machine.reclaimer.vms) - len(owners)
    assert saved > 0


def test_salting_saves_less_than_sharing_between_vms() -> None:
    # the same two VMs (one OS image): salted, only pages within a VM share a frame
    saved = {}
    for inter_vm in (False, True):
        machine = small_machine(2, inter_vm, 9, 2000)
        for _ in range(2):
            for vm in machine.vms:
                machine.reclaimer.scan(vm, machine.reclaimer.vms[vm.index].real_pages)
        summary = machine.reclaimer.host_summary(machine.loop.now)
        saved[inter_vm] = summary["sharing_saved_pages"]
    assert 0 < saved[False] < saved[True]


# -------------------------------------------------------------------- the hash tables


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(-1, 3), st.integers(-(2**63), 2**63 - 1)),
        max_size=200,
    ),
    st.randoms(use_true_random=False),
)
def test_the_open_addressing_table_behaves_as_a_dict(
    ops: list[tuple[bool, int, int]], random: Any
) -> None:
    table = np.zeros((64, sd.N_FRAME), dtype=np.int64)
    counts = np.zeros((3, 2), dtype=np.int64)
    model: dict[tuple[int, int], int] = {}
    # a few keys come back often, so that removing and adding again is common
    keys = [(a, b) for _, a, b in ops] + [(0, 1), (0, 2), (-1, 1)]
    for value, (add, _, _) in enumerate(ops):
        a, b = random.choice(keys)
        row = sd.find(table, a, b)
        assert (row >= 0) == ((a, b) in model)
        if row >= 0:
            assert table[row, sd.FM_REFS] == model[(a, b)]
        if add and row < 0:
            if 2 * (int(counts[sd.FRAMES].sum()) + 1) > table.shape[0]:
                # rebuilt in place, twice as large (the new rows are zeros)
                rows = table.shape[0]
                table = np.concatenate([table, np.zeros_like(table)])
                scratch = np.zeros(rows * sd.N_FRAME, dtype=np.int64)
                sd.rehash(table, rows, 2 * rows, scratch, counts, sd.FRAMES)
            row = sd.place(table, counts, sd.FRAMES, a, b)
            table[row, sd.FM_REFS] = value
            model[(a, b)] = value
        elif not add and row >= 0:
            sd.remove(table, counts, sd.FRAMES, row)
            del model[(a, b)]
        assert counts[sd.FRAMES, 0] == len(model)
    live = table[table[:, sd.H_STATE] == sd.LIVE]
    assert {(int(r[sd.H_A]), int(r[sd.H_B])): int(r[sd.FM_REFS]) for r in live} == model
