"""Replacement alone (a flat page-to-frame map) counts exactly what the full path counts."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from memvirt.replay import ReplayOptions, replay
from memvirt.traces.model import Trace

COUNTERS = (
    "accesses",
    "reads",
    "writes",
    "faults",
    "minor_faults",
    "major_faults",
    "evictions",
    "writebacks",
    "clean_drops",
    "zero_drops",
)


@settings(max_examples=150, deadline=None)
@given(
    pages=st.lists(st.integers(0, 30), min_size=1, max_size=300),
    data=st.data(),
    frames=st.integers(1, 16),
    policy=st.sampled_from(["fifo", "lru", "clock", "opt", "random"]),
    seed=st.integers(0, 2**32),
)
def test_replacement_alone_matches_the_full_translation_path(
    pages: list[int], data: st.DataObject, frames: int, policy: str, seed: int
) -> None:
    writes = data.draw(st.lists(st.booleans(), min_size=len(pages), max_size=len(pages)))
    spread = np.array(pages, dtype=np.int64) * 1000 + 7  # sparse page numbers
    trace = Trace.from_pages(spread, writes)
    full = replay(trace, ReplayOptions(frames=frames, policy=policy, tlb=None, seed=seed))
    flat = replay(
        trace,
        ReplayOptions(frames=frames, policy=policy, tlb=None, seed=seed, page_tables=False),
    )
    for name in COUNTERS:
        assert flat[name] == full[name], name
    assert flat["walk_memory_references"] == 0


def test_zipf_trace_counts_agree_between_the_two_paths() -> None:
    rng = np.random.default_rng(5)
    weights = 1 / np.arange(1, 5001)
    cdf = np.cumsum(weights) / weights.sum()
    pages = np.searchsorted(cdf, rng.random(50_000)).astype(np.int64)
    trace = Trace.from_pages(pages, rng.random(50_000) < 0.2)
    for policy in ("fifo", "lru", "clock", "opt"):
        full = replay(trace, ReplayOptions(frames=500, policy=policy))
        flat = replay(trace, ReplayOptions(frames=500, policy=policy, tlb=None, page_tables=False))
        assert [flat[c] for c in COUNTERS] == [full[c] for c in COUNTERS], policy
