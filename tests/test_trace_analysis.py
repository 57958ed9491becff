"""A trace's statistics and its LRU miss-ratio curve (Mattson's stack algorithm).

The compiled one-pass kernel is held against an obviously-correct twin that
keeps the LRU stack as a Python list, and the curve against memvirt's own
replay of LRU at every memory size.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memvirt.replay import ReplayOptions, replay
from memvirt.traces.analysis import (
    ALL_SIZES_UP_TO,
    curve_sizes,
    distance_histogram,
    stack_distances,
    trace_stats,
)
from memvirt.traces.model import KIND_FETCH, KIND_READ, KIND_WRITE, Trace

TEXTBOOK = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]

page_lists = st.lists(st.integers(min_value=0, max_value=12), max_size=120)


def naive_stack_distances(pages: list[int]) -> list[int]:
    """Each access's depth in the LRU stack (a list, most recent first); -1 on a first touch."""
    stack: list[int] = []
    out: list[int] = []
    for page in pages:
        if page in stack:
            depth = stack.index(page)
            stack.pop(depth)
            out.append(depth)
        else:
            out.append(-1)
        stack.insert(0, page)
    return out


def naive_lru_faults(pages: list[int], frames: int) -> int:
    """Page faults of LRU with ``frames`` frames, simulated access by access."""
    memory: list[int] = []  # least recently used first
    faults = 0
    for page in pages:
        if page in memory:
            memory.remove(page)
        else:
            faults += 1
            if len(memory) == frames:
                memory.pop(0)
        memory.append(page)
    return faults


# ---------------------------------------------------------------- stack distances


def test_the_stack_distance_counts_the_distinct_pages_touched_since_the_last_use() -> None:
    # a b c b a a: b is one page deep (c since), a two (b, c), then zero
    assert stack_distances([10, 20, 30, 20, 10, 10]).tolist() == [-1, -1, -1, 1, 2, 0]


def test_the_textbook_reference_string_has_these_stack_distances() -> None:
    assert stack_distances(TEXTBOOK).tolist() == naive_stack_distances(TEXTBOOK)
    assert stack_distances(TEXTBOOK).tolist()[:8] == [-1, -1, -1, -1, 2, -1, 1, -1]


@settings(max_examples=300, deadline=None)
@given(page_lists)
def test_mattsons_one_pass_agrees_with_walking_the_lru_stack(pages: list[int]) -> None:
    assert stack_distances(pages).tolist() == naive_stack_distances(pages)


@settings(max_examples=300, deadline=None)
@given(page_lists, st.data())
def test_moving_the_marks_when_their_slots_run_out_changes_no_distance(
    pages: list[int], data: st.DataObject
) -> None:
    distinct = len(set(pages))
    slots = data.draw(st.integers(min_value=distinct + 1, max_value=distinct + 4))
    assert stack_distances(pages, slots=slots).tolist() == naive_stack_distances(pages)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=700),
    st.data(),
)
def test_marks_in_many_64_slot_words_count_the_same_as_the_lru_stack(
    pages: list[int], data: st.DataObject
) -> None:
    distinct = len(set(pages))
    slots = data.draw(st.sampled_from([distinct + 1, distinct + 63, 2 * distinct + 64, 4096]))
    assert stack_distances(pages, slots=slots).tolist() == naive_stack_distances(pages)


def test_too_few_slots_for_the_distinct_pages_are_refused() -> None:
    with pytest.raises(ValueError, match="3 slots cannot hold the marks of 3 pages"):
        stack_distances([1, 2, 3, 1, 2, 3], slots=3)


def test_a_long_trace_moves_its_marks_many_times_and_keeps_every_distance() -> None:
    rng = np.random.default_rng(4)
    pages = rng.zipf(1.2, 300_000) % 5000
    default = distance_histogram(pages)
    tight = distance_histogram(pages, slots=len(np.unique(pages)) + 1)
    assert default[1] == tight[1] == len(np.unique(pages))
    assert default[0].tolist() == tight[0].tolist()
    # and both agree with LRU itself at a few sizes
    for frames in (1, 10, 300):
        flat = ReplayOptions(frames=frames, policy="lru", tlb=None, page_tables=False)
        faults = replay(Trace.from_pages(pages), flat)["faults"]
        assert faults == default[1] + int(default[0][frames:].sum())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 4095, 1 << 40, (1 << 62) + 7, (1 << 63) - 1]), max_size=60))
def test_page_numbers_far_apart_are_told_apart(pages: list[int]) -> None:
    assert stack_distances(pages).tolist() == naive_stack_distances(pages)


def test_many_distinct_pages_grow_the_renumbering_table_without_mixing_them_up() -> None:
    rng = np.random.default_rng(3)
    pages = rng.integers(0, 1 << 50, 20_000)
    pages = np.concatenate([pages, pages[::-1]])
    hist, cold = distance_histogram(pages)
    assert cold == np.unique(pages).shape[0]
    assert int(hist.sum()) + cold == pages.shape[0]
    d = stack_distances(pages)
    # the second half revisits the first in reverse: page i's distance is the pages after it
    n = pages.shape[0] // 2
    assert d[n] == 0 and d[-1] == cold - 1


def test_the_histogram_counts_every_reuse_once() -> None:
    hist, cold = distance_histogram([1, 2, 1, 2, 3, 3, 1])
    # distances: -, -, 1, 1, -, 0, 2
    assert cold == 3
    assert hist.tolist() == [1, 2, 1]


# ---------------------------------------------------------------- the curve


def test_the_textbook_string_needs_these_faults_under_lru_at_every_size() -> None:
    stats = trace_stats(Trace.from_pages(TEXTBOOK))
    # Silberschatz et al.: LRU takes 12 faults with 3 frames
    assert stats.miss_ratio_curve == [[1, 20], [2, 17], [3, 12], [4, 8], [5, 7], [6, 6]]
    assert stats.misses(3) == 12
    assert stats.misses(100) == 6 == stats.distinct_pages


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=80))
def test_the_curve_is_lrus_fault_count_simulated_at_each_size(pages: list[int]) -> None:
    stats = trace_stats(Trace.from_pages(pages))
    for frames, misses in stats.miss_ratio_curve:
        assert misses == naive_lru_faults(pages, frames)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=300),
    st.data(),
)
def test_the_curve_equals_replays_lru_faults_at_every_size(
    pages: list[int], data: st.DataObject
) -> None:
    writes = data.draw(st.lists(st.integers(0, 1), min_size=len(pages), max_size=len(pages)))
    trace = Trace.from_pages(pages, writes)
    stats = trace_stats(trace)
    for frames, misses in stats.miss_ratio_curve:
        options = ReplayOptions(frames=frames, policy="lru", tlb=None, page_tables=False)
        assert replay(trace, options)["faults"] == misses, frames


def test_the_curve_equals_lrus_faults_through_page_tables_and_tlb() -> None:
    rng = np.random.default_rng(11)
    # a hot set and a cold tail, at byte addresses spread over two regions
    pages = np.where(rng.random(4000) < 0.8, rng.integers(0, 40, 4000), rng.integers(40, 400, 4000))
    addresses = np.where(pages % 2 == 0, 0x400000, 0x7F0000000000) + pages * 4096 + 8
    trace = Trace(addresses.astype(np.int64), (rng.random(4000) < 0.3).astype(np.uint8))
    stats = trace_stats(trace)
    for frames in (1, 7, 40, 41, 150, stats.distinct_pages):
        assert replay(trace, ReplayOptions(frames=frames, policy="lru"))["faults"] == stats.misses(
            frames
        )
        assert [frames, stats.misses(frames)] in stats.miss_ratio_curve


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=200))
def test_lru_never_faults_more_with_more_memory(pages: list[int]) -> None:
    # the stack property: no Belady anomaly for LRU
    misses = [m for _, m in trace_stats(Trace.from_pages(pages)).miss_ratio_curve]
    assert misses == sorted(misses, reverse=True)


def test_a_small_footprint_gets_every_size_and_a_large_one_200_log_spaced() -> None:
    assert curve_sizes(0) == []
    assert curve_sizes(5) == [1, 2, 3, 4, 5]
    assert curve_sizes(ALL_SIZES_UP_TO) == list(range(1, ALL_SIZES_UP_TO + 1))
    sizes = curve_sizes(1_000_000)
    assert sizes[0] == 1 and sizes[-1] == 1_000_000
    assert sizes == sorted(set(sizes))
    assert len(sizes) == 200
    assert 90_000 < sizes[len(sizes) * 5 // 6] < 200_000  # log-spaced, not linear


def test_a_large_footprint_curve_matches_lru_at_its_sampled_sizes() -> None:
    rng = np.random.default_rng(5)
    pages = rng.integers(0, 6000, 30_000)
    stats = trace_stats(Trace.from_pages(pages))
    assert stats.distinct_pages > ALL_SIZES_UP_TO
    assert len(stats.miss_ratio_curve) < 210
    for frames, misses in stats.miss_ratio_curve[::40]:
        flat = ReplayOptions(frames=frames, policy="lru", tlb=None, page_tables=False)
        assert replay(Trace.from_pages(pages), flat)["faults"] == misses


# ---------------------------------------------------------------- the access mix


def test_reads_writes_and_fetches_are_counted_apart() -> None:
    kinds = [KIND_FETCH, KIND_READ, KIND_WRITE, KIND_FETCH, KIND_READ, KIND_READ]
    addresses = [0x401000, 0x7000, 0x7008, 0x401004, 0x9000, 0x7FF0]
    stats = trace_stats(Trace.from_kinds(np.array(addresses), np.array(kinds)))
    assert (stats.accesses, stats.reads, stats.writes, stats.instruction_fetches) == (6, 3, 1, 2)
    assert stats.distinct_pages == 3  # 0x401, 0x7, 0x9
    assert stats.footprint_bytes == 3 * 4096


def test_the_page_size_decides_which_addresses_share_a_page() -> None:
    trace = Trace(np.array([0x0, 0xFFF, 0x1000, 0x3FFF], dtype=np.int64), np.zeros(4, np.uint8))
    assert trace_stats(trace, page_size=4096).distinct_pages == 3
    assert trace_stats(trace, page_size=8192).distinct_pages == 2
    assert trace_stats(trace, page_size=16384).footprint_bytes == 16384


def test_chunks_give_the_same_statistics_as_the_whole_trace() -> None:
    rng = np.random.default_rng(2)
    addresses = rng.integers(0, 1 << 24, 5000)
    kinds = rng.integers(0, 3, 5000)
    whole = Trace.from_kinds(addresses, kinds)
    chunks = [
        Trace.from_kinds(addresses[i : i + 700], kinds[i : i + 700]) for i in range(0, 5000, 700)
    ]
    assert trace_stats(chunks).to_dict() == trace_stats(whole).to_dict()


def test_page_number_traces_are_taken_as_pages_whatever_the_page_size() -> None:
    trace = Trace.from_pages([1, 2, 3, 1])
    assert trace_stats(trace, page_size=1 << 21).distinct_pages == 3
    assert trace_stats(trace, page_size=1 << 21).footprint_bytes == 3 << 21


def test_an_empty_trace_has_no_pages_and_no_curve() -> None:
    stats = trace_stats([])
    assert stats.to_dict() == {
        "accesses": 0,
        "reads": 0,
        "writes": 0,
        "instruction_fetches": 0,
        "distinct_pages": 0,
        "footprint_bytes": 0,
        "page_size": 4096,
        "miss_ratio_curve": [],
    }


@pytest.mark.parametrize("page_size", [0, 3000, -4096])
def test_a_page_size_that_is_not_a_power_of_two_is_refused(page_size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        trace_stats(Trace.from_pages([1]), page_size=page_size)


def test_the_same_trace_gives_the_same_statistics() -> None:
    rng = np.random.default_rng(9)
    trace = Trace.from_pages(rng.zipf(1.3, 20_000) % 7000)
    assert trace_stats(trace).to_dict() == trace_stats(trace).to_dict()
