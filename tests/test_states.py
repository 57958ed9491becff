"""ESXi's free-memory states: minFree's sliding scale, thresholds with hysteresis,
the techniques each state enables, and the time a host spends in each."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memvirt.hypervisor import (
    DEFAULT_TECHNIQUES,
    DEFAULT_THRESHOLDS,
    STATES,
    TECHNIQUES,
    FreeMemoryStates,
    min_free_bytes,
)

GiB = 2**30
MiB = 2**20
SECOND = 1e9


def mib(text: str) -> int:
    """A documented size in MiB (with decimals), floored to bytes."""
    return math.floor(Fraction(text) * MiB)


# ---------------------------------------------------------------- minFree


@pytest.mark.parametrize(
    ("host", "documented_mib"),
    [
        (4 * GiB, "245.76"),  # 6% of 4 GiB
        (12 * GiB, "573.44"),  # + 4% of the next 8 GiB: 327.68
        (28 * GiB, "901.12"),  # + 2% of the next 16 GiB: 327.68
        (128 * GiB, "1925.12"),  # + 1% of the other 100 GiB: 1024
    ],
)
def test_min_free_follows_esxis_sliding_scale(host: int, documented_mib: str) -> None:
    assert min_free_bytes(host) == mib(documented_mib)


def test_min_free_is_exact_in_bytes_and_floored_once() -> None:
    # 88% of a GiB is 944892805.12 bytes; flooring each tier would give 944892803.
    assert min_free_bytes(28 * GiB) == 944_892_805
    assert min_free_bytes(4 * GiB) == 257_698_037
    assert min_free_bytes(1 * GiB) == 6 * GiB // 100
    assert min_free_bytes(0) == 0


@given(st.integers(min_value=0, max_value=2**45))
def test_more_host_memory_never_means_a_smaller_reserve(host: int) -> None:
    assert min_free_bytes(host) <= min_free_bytes(host + 4096)
    # The marginal rate never exceeds 6% nor falls below 1%.
    assert host // 100 <= min_free_bytes(host) <= 6 * host // 100


@pytest.mark.parametrize("bad", [-1, 1.5, "4GiB", True])
def test_min_free_rejects_what_is_not_a_byte_count(bad: object) -> None:
    with pytest.raises(ValueError, match="physical memory"):
        min_free_bytes(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- thresholds


def test_thresholds_are_percents_of_min_free_rounded_up_to_pages() -> None:
    host = FreeMemoryStates(1000)
    assert [host.threshold_pages(s) for s in STATES] == [4000, 1000, 640, 320, 160]
    tiny = FreeMemoryStates(3)
    # 1.92 pages and 0.96 and 0.48 round up: a state needs at least a page of slack.
    assert [tiny.threshold_pages(s) for s in STATES] == [12, 3, 2, 1, 1]


def test_the_default_states_are_esxis() -> None:
    assert STATES == ("high", "clear", "soft", "hard", "low")
    assert DEFAULT_THRESHOLDS == {"high": 400, "clear": 100, "soft": 64, "hard": 32, "low": 16}
    assert DEFAULT_TECHNIQUES["high"] == frozenset()
    assert DEFAULT_TECHNIQUES["clear"] == {"sharing"}
    assert DEFAULT_TECHNIQUES["soft"] == {"sharing", "ballooning"}
    assert DEFAULT_TECHNIQUES["hard"] == {"sharing", "compression", "swapping"}
    assert DEFAULT_TECHNIQUES["low"] == {"compression", "swapping", "blocking"}


# ---------------------------------------------------------------- a walk with hysteresis


def test_a_host_enters_a_state_below_its_threshold_and_leaves_it_at_the_one_above() -> None:
    host = FreeMemoryStates(1000)  # enter clear < 1000, soft < 640, hard < 320, low < 160
    walk = [
        (5000, 1, "high"),
        (999, 2, "clear"),  # below 100% of minFree
        (3999, 3, "clear"),  # leaving clear takes 400%
        (640, 4, "clear"),  # soft needs fewer than 640
        (639, 5, "soft"),
        (999, 6, "soft"),  # leaving soft takes 100%
        (1000, 7, "clear"),
        (100, 8, "low"),  # a sudden shortage drops through soft and hard at once
        (319, 9, "low"),  # leaving low takes 32%
        (320, 10, "hard"),
        (5000, 12, "high"),  # plenty of memory climbs all the way
    ]
    for free, seconds, expected in walk:
        assert host.update(free, seconds * SECOND) == expected, (free, seconds)
        assert host.state == expected
    assert host.transitions == [
        (0.0, "high"),
        (2e9, "clear"),
        (5e9, "soft"),
        (7e9, "clear"),
        (8e9, "low"),
        (10e9, "hard"),
        (12e9, "high"),
    ]
    spent = host.time_in_state(15 * SECOND)
    assert list(spent) == list(STATES)
    assert spent == {"high": 5.0, "clear": 4.0, "soft": 2.0, "hard": 2.0, "low": 2.0}
    assert sum(spent.values()) == 15.0
    # Asking does not close the open interval: the host is still in high.
    assert host.time_in_state(16 * SECOND)["high"] == 6.0


def test_a_host_climbing_out_of_low_stops_below_the_first_exit_it_has_not_reached() -> None:
    host = FreeMemoryStates(1000)
    host.update(10, 1.0)
    assert host.state == "low"
    # 700 free pages pass low's exit (320) and hard's (640) but not soft's (1000).
    assert host.update(700, 2.0) == "soft"
    assert host.transitions[-1] == (2.0, "soft")


def test_each_state_enables_its_techniques_and_aims_at_its_exit() -> None:
    host = FreeMemoryStates(1000)
    expectations = {
        # free pages: (state, enabled techniques, target free pages)
        5000: ("high", set(), 0),
        900: ("clear", {"sharing"}, 4000),
        600: ("soft", {"sharing", "ballooning"}, 1000),
        300: ("hard", {"sharing", "compression", "swapping"}, 640),
        100: ("low", {"compression", "swapping", "blocking"}, 320),
    }
    for now, (free, (state, techniques, target)) in enumerate(expectations.items()):
        assert host.update(free, float(now)) == state
        assert {t for t in TECHNIQUES if host.enabled(t)} == techniques
        assert host.target_free_pages() == target


def test_a_host_may_start_later_than_time_zero() -> None:
    host = FreeMemoryStates(100, start_ns=5e9)
    assert host.transitions == [(5e9, "high")]
    host.update(80, 6e9)  # below 100 free pages, above 64
    assert host.time_in_state(8e9) == {"high": 1.0, "clear": 2.0, "soft": 0, "hard": 0, "low": 0}


def test_custom_thresholds_and_techniques_replace_esxis() -> None:
    host = FreeMemoryStates(
        100,
        thresholds={"high": 300, "clear": 200, "soft": 50, "hard": 20, "low": 10},
        techniques={
            "high": [],
            "clear": [],
            "soft": ["ballooning"],
            "hard": ["ballooning", "swapping"],
            "low": ["swapping", "blocking"],
        },
    )
    assert host.update(150, 1.0) == "clear"
    assert not host.enabled("sharing")
    assert host.update(49, 2.0) == "soft"
    assert host.enabled("ballooning")
    assert host.target_free_pages() == 200


@given(
    min_free=st.integers(min_value=0, max_value=5000),
    path=st.lists(
        st.tuples(st.integers(min_value=0, max_value=25_000), st.integers(0, 10**12)),
        max_size=40,
    ),
)
def test_after_every_update_free_memory_lies_between_the_states_entry_and_exit(
    min_free: int, path: list[tuple[int, int]]
) -> None:
    host = FreeMemoryStates(min_free)
    now = 0
    for free, step in path:
        now += step
        state = host.update(free, float(now))
        level = STATES.index(state)
        if level > 0:  # not climbed further: below the exit
            assert free < host.threshold_pages(STATES[level - 1])
        if level < len(STATES) - 1:  # not dropped further: at or above the next entry
            assert free >= host.threshold_pages(STATES[level + 1])
    entered = [s for _, s in host.transitions]
    assert all(a != b for a, b in itertools.pairwise(entered))
    spent = host.time_in_state(float(now))
    assert math.isclose(sum(spent.values()), now / 1e9, rel_tol=1e-12, abs_tol=1e-12)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ({"high": 400, "clear": 100, "soft": 64, "hard": 32}, "'low' has no threshold"),
        ({"high": 400, "clear": 100, "soft": 100, "hard": 32, "low": 16}, "'soft'.*below"),
        ({"high": 400, "clear": 100, "soft": 64, "hard": 32, "low": 0}, "'low'.*above 0"),
        ({"high": 400, "clear": 100, "soft": 64, "hard": 32, "low": -5}, "'low'.*above 0"),
        ({**DEFAULT_THRESHOLDS, "minimal": 1}, "unknown state 'minimal'"),
        ({**DEFAULT_THRESHOLDS, "hard": "32%"}, "'hard'.*'32%'"),
    ],
)
def test_bad_thresholds_name_the_state(thresholds: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FreeMemoryStates(1000, thresholds=thresholds)


def test_an_unknown_technique_names_the_state_and_the_name() -> None:
    techniques = {**DEFAULT_TECHNIQUES, "soft": ["sharing", "ballooon"]}
    with pytest.raises(ValueError, match=r"state 'soft'.*'ballooon'"):
        FreeMemoryStates(1000, techniques=techniques)
    with pytest.raises(ValueError, match="state 'hard' is missing"):
        FreeMemoryStates(1000, techniques={"high": [], "clear": [], "soft": [], "low": []})
    with pytest.raises(ValueError, match="string 'sharing'"):
        FreeMemoryStates(1000, techniques={**DEFAULT_TECHNIQUES, "clear": "sharing"})


def test_time_never_goes_backwards() -> None:
    host = FreeMemoryStates(1000)
    host.update(500, 10.0)
    with pytest.raises(ValueError, match="backwards"):
        host.update(500, 9.0)
    with pytest.raises(ValueError, match="backwards"):
        host.time_in_state(9.0)


def test_unknown_names_and_negative_counts_are_refused() -> None:
    host = FreeMemoryStates(1000)
    with pytest.raises(ValueError, match="unknown reclamation technique 'dedup'"):
        host.enabled("dedup")
    with pytest.raises(ValueError, match="unknown free-memory state 'medium'"):
        host.threshold_pages("medium")
    with pytest.raises(ValueError, match="0 pages or more"):
        host.update(-1, 1.0)
    with pytest.raises(ValueError, match="minFree"):
        FreeMemoryStates(-1)
