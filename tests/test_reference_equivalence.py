"""The compiled replay agrees, counter for counter, with a naive model of paging.

``tests/reference.py`` replays a trace with dicts and ordered dicts: demand
paging with zero-fill and swap, the fifo, lru, clock and opt policies, a
0-, 1- or 2-level set-associative TLB that caches dirty bits, and a radix
page table whose walks read one entry per level. Here the same random traces
run through :func:`memvirt.replay.replay` (the numba data plane) and through
the model, on random memory sizes, page-table geometries and TLB shapes, and
every counter must agree. The textbook examples pin the model itself down,
and a last property checks that a page's contents survive eviction and
reload in both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memvirt.dataplane.native import next_uses
from memvirt.mmu.tlb import TLBConfig, TLBLevel
from memvirt.replay import ReplayOptions, build_kernel, replay
from memvirt.traces.model import Trace
from memvirt.units import PageGeometry
from reference import COUNTER_NAMES, POLICIES, simulate

TEXTBOOK = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]
BELADY = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]

GEOMETRIES = (
    PageGeometry((9, 9, 9, 9), 12),
    PageGeometry((9, 9, 9, 9, 9), 12),
    PageGeometry((10, 10), 12),
    PageGeometry((4, 4, 4), 12),
)

#: Multipliers that spread page numbers over TLB sets and over many page tables.
STRIDES = (1, 3, 1000, 512 + 1, (1 << 18) + 7)

COMPARED = (*COUNTER_NAMES, "faults", "tlb_hits", "tlb_misses")

FaultCounter = Callable[[list[int], int, str], int]


@dataclass(frozen=True)
class Scenario:
    """One replay: the accesses and the machine they run on."""

    pages: list[int]
    writes: list[bool]
    frames: int
    geometry: PageGeometry
    tlb: tuple[tuple[int, int], ...]  # (entries, ways) per level, first level first

    def options(self, policy: str) -> ReplayOptions:
        levels = tuple(TLBLevel(entries, ways) for entries, ways in self.tlb)
        tlb = TLBConfig(levels) if levels else None
        return ReplayOptions(frames=self.frames, policy=policy, geometry=self.geometry, tlb=tlb)

    def trace(self) -> Trace:
        return Trace.from_pages(self.pages, self.writes)


@st.composite
def tlb_levels(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    """No TLB, or one or two levels of 1..8 sets of 1..4 ways."""
    depth = draw(st.integers(0, 2))
    shapes = []
    for _ in range(depth):
        ways = draw(st.integers(1, 4))
        sets = draw(st.integers(1, 8))
        shapes.append((sets * ways, ways))
    return tuple(shapes)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A random trace on a random memory, page table and TLB.

    Pages are numbers up to ``distinct``, a share of the accesses going to a
    few hot pages (so that TLB entries and resident pages are hit again while
    cold pages push others out), then spread by a stride over TLB sets and
    page tables. A share of the accesses are writes.
    """
    geometry = draw(st.sampled_from(GEOMETRIES))
    distinct = draw(st.integers(1, 40))
    hot = draw(st.integers(1, 4))
    hot_tenths = draw(st.integers(0, 9))
    stride = draw(st.sampled_from(STRIDES))
    offset = draw(st.integers(0, 7))
    write_tenths = draw(st.integers(0, 10))
    length = draw(st.integers(1, 300))
    numbers = draw(st.lists(st.integers(0, distinct), min_size=length, max_size=length))
    # one roll per access, its tens deciding hot or not, its units read or write
    rolls = draw(st.lists(st.integers(0, 99), min_size=length, max_size=length))
    numbers = [
        p % hot if roll // 10 < hot_tenths else p for p, roll in zip(numbers, rolls, strict=True)
    ]
    space = 1 << geometry.vpn_bits
    return Scenario(
        pages=[(p * stride + offset) % space for p in numbers],
        writes=[roll % 10 < write_tenths for roll in rolls],
        frames=draw(st.integers(1, 20)),
        geometry=geometry,
        tlb=draw(tlb_levels()),
    )


def reference_faults(pages: list[int], frames: int, policy: str) -> int:
    return simulate(pages, [False] * len(pages), frames, policy, levels=4).counters["faults"]


def fast_faults(pages: list[int], frames: int, policy: str) -> int:
    return replay(Trace.from_pages(pages), ReplayOptions(frames=frames, policy=policy))["faults"]


@pytest.mark.parametrize("faults_of", [reference_faults, fast_faults], ids=["reference", "fast"])
@pytest.mark.parametrize(("policy", "expected"), [("fifo", 15), ("lru", 12), ("opt", 9)])
def test_textbook_reference_string_faults_as_in_silberschatz(
    faults_of: FaultCounter, policy: str, expected: int
) -> None:
    assert faults_of(TEXTBOOK, 3, policy) == expected


@pytest.mark.parametrize("faults_of", [reference_faults, fast_faults], ids=["reference", "fast"])
def test_fifo_shows_beladys_anomaly(faults_of: FaultCounter) -> None:
    assert faults_of(BELADY, 3, "fifo") == 9
    assert faults_of(BELADY, 4, "fifo") == 10


def assert_same_counters(scenario: Scenario, policy: str) -> None:
    levels = scenario.geometry.levels
    expected = simulate(
        scenario.pages, scenario.writes, scenario.frames, policy, levels, scenario.tlb
    ).counters
    got = replay(scenario.trace(), scenario.options(policy)).counters
    mismatched = {k: (got[k], expected[k]) for k in COMPARED if got[k] != expected[k]}
    assert not mismatched, f"{policy}: counter (fast, reference) differ: {mismatched}"


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=200, deadline=None)
@given(scenario=scenarios())
def test_replacement_policy_matches_reference_on_random_traces(
    policy: str, scenario: Scenario
) -> None:
    assert_same_counters(scenario, policy)


@settings(max_examples=100, deadline=None)
@given(scenario=scenarios(), policy=st.sampled_from(POLICIES))
def test_page_contents_survive_eviction_and_reload(scenario: Scenario, policy: str) -> None:
    """Each page ends holding the token of its last write (zeros if never written)."""
    last_write: dict[int, int] = {}
    token = 0
    for page, write in zip(scenario.pages, scenario.writes, strict=True):
        last_write.setdefault(page, 0)
        if write:
            token += 1
            last_write[page] = token

    model = simulate(
        scenario.pages,
        scenario.writes,
        scenario.frames,
        policy,
        scenario.geometry.levels,
        scenario.tlb,
    )
    assert model.tokens == last_write

    trace = scenario.trace()
    options = scenario.options(policy)
    kernel, pid, vpns = build_kernel(trace, options)
    nu = next_uses(vpns) if policy == "opt" else None
    assert kernel.run(pid, vpns, trace.writes, next_use=nu, page_numbers=True) == len(trace)
    kernel.check_invariants()
    offset_bits = scenario.geometry.offset_bits
    fast = {page: kernel.read_token(pid, page << offset_bits) for page in model.tokens}
    assert fast == model.tokens
    assert not kernel.kills
