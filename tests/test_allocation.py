"""Dividing host memory among VMs: shares, the idle memory tax, reservations and
limits, min-funded revocation and the sampled estimate of active memory
(Waldspurger, OSDI 2002)."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from memvirt.hypervisor import (
    DEFAULT_IDLE_TAX,
    ActiveEstimator,
    Claim,
    entitlements,
    idle_cost,
    revoke,
    shares_per_page,
)

BIG = 10**9  # a maximum that never binds


def vm(
    shares: float, active: float = 1.0, *, allocated: int = 0, minimum: int = 0, maximum: int = BIG
) -> Claim:
    return Claim(shares, active, allocated, minimum, maximum)


# ---------------------------------------------------------------- the tax


def test_the_default_tax_makes_an_idle_page_cost_four_active_ones() -> None:
    assert DEFAULT_IDLE_TAX == 0.75
    assert idle_cost(DEFAULT_IDLE_TAX) == 4.0
    assert idle_cost(0.5) == 2.0
    assert idle_cost(0.0) == 1.0  # no tax: pure proportional sharing


@pytest.mark.parametrize("tau", [1.0, -0.1, 1.5, math.nan])
def test_a_tax_rate_is_below_one(tau: float) -> None:
    with pytest.raises(ValueError, match=r"tax rate must be in \[0, 1\)"):
        idle_cost(tau)


@pytest.mark.parametrize(
    ("shares", "pages", "active", "tau", "rho"),
    [
        (1000, 100, 1.0, 0.75, 10.0),  # all active: no tax
        (1000, 100, 0.0, 0.75, 2.5),  # all idle: charged k = 4 per page
        (1000, 100, 0.5, 0.75, 4.0),  # 1000 / (100 * (0.5 + 4 * 0.5))
        (1000, 100, 0.0, 0.0, 10.0),  # no tax: idleness is free
        (500, 0, 0.3, 0.75, math.inf),  # holding nothing, nothing to take
    ],
)
def test_shares_per_page_charges_idle_pages_more(
    shares: float, pages: int, active: float, tau: float, rho: float
) -> None:
    assert shares_per_page(shares, pages, active, tau) == rho


def test_shares_per_page_refuses_fractions_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="active fraction"):
        shares_per_page(1000, 100, 1.5, 0.75)
    with pytest.raises(ValueError, match="pages"):
        shares_per_page(1000, -1, 0.5, 0.75)


# ---------------------------------------------------------------- entitlements


def test_without_the_tax_an_idle_vm_keeps_its_proportional_share() -> None:
    idle, active = vm(1000, active=0.0), vm(1000, active=1.0)
    assert entitlements([idle, active], 1000, 0.0) == [500, 500]


def test_with_the_default_tax_an_active_vm_gets_four_times_an_idle_ones_pages() -> None:
    idle, active = vm(1000, active=0.0), vm(1000, active=1.0)
    assert entitlements([idle, active], 1000, DEFAULT_IDLE_TAX) == [200, 800]
    # Half the tax: k = 2.
    assert entitlements([idle, active], 999, 0.5) == [333, 666]


def test_entitlements_follow_shares_when_all_are_equally_active() -> None:
    claims = [vm(20), vm(10), vm(5)]  # high, normal and low shares per MB
    assert entitlements(claims, 7000, DEFAULT_IDLE_TAX) == [4000, 2000, 1000]


def test_a_limited_vm_leaves_its_unused_share_to_the_others() -> None:
    claims = [vm(100, maximum=100), vm(100), vm(100)]
    assert entitlements(claims, 900, 0.0) == [100, 400, 400]


def test_a_reservation_is_honoured_even_above_the_share() -> None:
    claims = [vm(100, minimum=500), vm(100), vm(100)]
    assert entitlements(claims, 900, 0.0) == [500, 200, 200]


def test_rounding_hands_out_the_remaining_pages_by_largest_fraction_then_index() -> None:
    # 100 pages among three equal VMs: 33.33 each, and the lowest index gets the page left.
    assert entitlements([vm(1), vm(1), vm(1)], 100, 0.0) == [34, 33, 33]
    # 2/7, 2/7, 3/7 of 10: 2.857, 2.857, 4.286; the two largest fractions get a page.
    assert entitlements([vm(2), vm(2), vm(3)], 10, 0.0) == [3, 3, 4]


def test_when_memory_suffices_every_vm_gets_its_maximum() -> None:
    claims = [vm(1, maximum=300), vm(1000, maximum=200)]
    assert entitlements(claims, 500, DEFAULT_IDLE_TAX) == [300, 200]
    assert entitlements(claims, 10_000, DEFAULT_IDLE_TAX) == [300, 200]


def test_reservations_that_do_not_fit_are_refused() -> None:
    claims = [vm(1, minimum=300), vm(1, minimum=300)]
    with pytest.raises(ValueError, match="reservations add up to 600 pages, more than the 500"):
        entitlements(claims, 500, DEFAULT_IDLE_TAX)
    assert entitlements(claims, 600, DEFAULT_IDLE_TAX) == [300, 300]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((0, 1.0, 0, 0, 10), "shares"),
        ((1, 1.5, 0, 0, 10), "active fraction"),
        ((1, 1.0, -1, 0, 10), "0 pages or more"),
        ((1, 1.0, 0, 20, 10), "minimum <= maximum"),
        ((1, 1.0, 0, -1, 10), "minimum <= maximum"),
    ],
)
def test_a_claim_checks_its_numbers(
    fields: tuple[float, float, int, int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Claim(*fields)


# ---------------------------------------------------------------- entitlement properties

claims_strategy = st.lists(
    st.builds(
        lambda shares, active, minimum, room: Claim(shares, active, 0, minimum, minimum + room),
        st.integers(min_value=1, max_value=2000).map(float),
        st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]) | st.floats(0.0, 1.0),
        st.integers(min_value=0, max_value=400),
        st.integers(min_value=0, max_value=1500),
    ),
    min_size=1,
    max_size=6,
)
taxes = st.sampled_from([0.0, 0.5, DEFAULT_IDLE_TAX]) | st.floats(0.0, 0.95)


def available_for(claims: list[Claim], data: st.DataObject) -> int:
    low = sum(c.minimum for c in claims)
    high = sum(c.maximum for c in claims)
    return data.draw(st.integers(min_value=low, max_value=high + 50), label="available")


@given(claims=claims_strategy, tau=taxes, data=st.data())
def test_entitlements_respect_bounds_and_hand_out_all_memory(
    claims: list[Claim], tau: float, data: st.DataObject
) -> None:
    available = available_for(claims, data)
    pages = entitlements(claims, available, tau)
    assert all(c.minimum <= p <= c.maximum for c, p in zip(claims, pages, strict=True))
    assert sum(pages) == min(available, sum(c.maximum for c in claims))
    assert entitlements(claims, available, tau) == pages  # deterministic


def no_page_would_move(claims: list[Claim], pages: list[int], tau: float) -> bool:
    """Whether every VM that could give a page pays, after giving it, at least what
    any VM that could take a page pays after taking it: min-funded revocation has
    nothing left to move, up to one page of rounding."""
    for i, (giver, given_pages) in enumerate(zip(claims, pages, strict=True)):
        for j, (taker, taken_pages) in enumerate(zip(claims, pages, strict=True)):
            if i == j or given_pages <= giver.minimum or taken_pages >= taker.maximum:
                continue
            rho_giver = shares_per_page(giver.shares, given_pages - 1, giver.active, tau)
            rho_taker = shares_per_page(taker.shares, taken_pages + 1, taker.active, tau)
            if rho_giver < rho_taker * (1 - 1e-9):
                return False
    return True


@given(claims=claims_strategy, tau=taxes, data=st.data())
def test_at_the_entitlements_min_funded_revocation_would_move_no_page(
    claims: list[Claim], tau: float, data: st.DataObject
) -> None:
    available = available_for(claims, data)
    assert no_page_would_move(claims, entitlements(claims, available, tau), tau)


@given(
    shares=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=8),
    active=st.floats(0.0, 1.0),
    available=st.integers(min_value=0, max_value=100_000),
)
def test_without_the_tax_equally_active_vms_get_pages_in_proportion_to_shares(
    shares: list[int], active: float, available: int
) -> None:
    pages = entitlements([vm(s, active) for s in shares], available, 0.0)
    for s, p in zip(shares, pages, strict=True):
        assert abs(p - available * s / sum(shares)) <= 1


@given(claims=claims_strategy, tau=st.floats(0.01, 0.95), data=st.data())
def test_a_vm_that_uses_more_of_its_memory_is_never_entitled_to_less(
    claims: list[Claim], tau: float, data: st.DataObject
) -> None:
    available = available_for(claims, data)
    i = data.draw(st.integers(0, len(claims) - 1), label="vm")
    busier = data.draw(st.floats(claims[i].active, 1.0), label="new active fraction")
    raised = list(claims)
    raised[i] = Claim(claims[i].shares, busier, 0, claims[i].minimum, claims[i].maximum)
    assert entitlements(raised, available, tau)[i] >= entitlements(claims, available, tau)[i]


@given(shares=st.integers(1, 10_000), available=st.integers(0, 50_000))
def test_an_idle_vm_gets_a_quarter_of_the_pages_per_share_of_an_active_one(
    shares: int, available: int
) -> None:
    idle, active = entitlements([vm(shares, 0.0), vm(shares, 1.0)], available, DEFAULT_IDLE_TAX)
    assert idle + active == available
    assert abs(active - 4 * idle) <= 4


# ---------------------------------------------------------------- revocation


def test_revocation_takes_first_from_the_vm_paying_least_per_page() -> None:
    # A pays 1000 shares for 100 pages (10 per page), B 1000 for 200 (5 per page).
    a, b = vm(1000, allocated=100), vm(1000, allocated=200)
    assert revoke([a, b], 1, DEFAULT_IDLE_TAX, step=1) == [0, 1]
    # B gives until it too holds 100 pages; at the tie the lower index gives next.
    assert revoke([a, b], 100, DEFAULT_IDLE_TAX, step=1) == [0, 100]
    assert revoke([a, b], 101, DEFAULT_IDLE_TAX, step=1) == [1, 100]
    assert revoke([a, b], 110, DEFAULT_IDLE_TAX, step=1) == [5, 105]


def test_the_idle_tax_makes_an_idle_vm_give_first() -> None:
    # Same shares and pages; the idle VM pays a quarter as much per page.
    idle, active = vm(1000, 0.0, allocated=400), vm(1000, 1.0, allocated=400)
    assert revoke([active, idle], 300, DEFAULT_IDLE_TAX, step=1) == [0, 300]
    # Without the tax they give equally.
    assert revoke([active, idle], 300, 0.0, step=1) == [150, 150]


def test_revocation_stops_at_reservations() -> None:
    a, b = vm(1000, allocated=100, minimum=80), vm(1, allocated=50, minimum=50)
    assert revoke([a, b], 500, DEFAULT_IDLE_TAX) == [20, 0]
    assert revoke([a, b], 0, DEFAULT_IDLE_TAX) == [0, 0]


def test_revocation_takes_large_needs_in_steps_of_a_thousandth() -> None:
    a, b = vm(1000, allocated=10_000), vm(1000, allocated=10_000)
    # step 0: 2048 // 1024 = 2 pages a step, alternating, lower index first at ties.
    assert revoke([a, b], 2048, 0.0) == [1024, 1024]
    assert revoke([a, b], 3, 0.0, step=2) == [2, 1]
    assert revoke([a, b], 3, 0.0, step=5) == [3, 0]


def test_revocation_refuses_negative_needs_and_steps() -> None:
    with pytest.raises(ValueError, match="revoke"):
        revoke([vm(1, allocated=10)], -1, 0.0)
    with pytest.raises(ValueError, match="step"):
        revoke([vm(1, allocated=10)], 1, 0.0, step=-1)


@given(claims=claims_strategy, tau=taxes, data=st.data())
@settings(max_examples=60)
def test_revocation_from_the_maximums_stops_where_the_entitlements_are(
    claims: list[Claim], tau: float, data: st.DataObject
) -> None:
    full = [Claim(c.shares, c.active, c.maximum, c.minimum, c.maximum) for c in claims]
    available = available_for(claims, data)
    assume(available < sum(c.maximum for c in claims))
    taken = revoke(full, sum(c.maximum for c in claims) - available, tau, step=1)
    left = [c.maximum - t for c, t in zip(claims, taken, strict=True)]
    assert sum(left) == available
    assert all(c.minimum <= p for c, p in zip(claims, left, strict=True))
    assert no_page_would_move(claims, left, tau)
    # Both stop within the same one-page band around the exact division; where in
    # it differs by how ties and rounding fall.
    expected = entitlements(claims, available, tau)
    assert all(abs(p - e) <= 2 for p, e in zip(left, expected, strict=True)), (left, expected)


@given(claims=claims_strategy, tau=taxes, need=st.integers(0, 5000), step=st.integers(0, 300))
def test_revocation_takes_what_it_can_and_never_goes_below_a_reservation(
    claims: list[Claim], tau: float, need: int, step: int
) -> None:
    held = [Claim(c.shares, c.active, c.maximum, c.minimum, c.maximum) for c in claims]
    taken = revoke(held, need, tau, step=step)
    room = sum(c.allocated - c.minimum for c in held)
    assert sum(taken) == min(need, room)
    assert all(0 <= t <= c.allocated - c.minimum for c, t in zip(held, taken, strict=True))
    assert revoke(held, need, tau, step=step) == taken


# ---------------------------------------------------------------- active memory


def test_a_new_vm_counts_as_fully_active_until_sampled() -> None:
    estimator = ActiveEstimator()
    assert (estimator.estimate, estimator.fast, estimator.slow, estimator.last) == (1, 1, 1, None)


def test_an_estimate_falls_only_as_fast_as_the_slow_average() -> None:
    estimator = ActiveEstimator()
    # The VM touches nothing: the fast average halves, the slow one loses a tenth.
    assert estimator.add_sample(0.0) == pytest.approx(0.9)
    assert estimator.fast == pytest.approx(0.5)
    assert estimator.add_sample(0.0) == pytest.approx(0.81)
    assert estimator.add_sample(0.0) == pytest.approx(0.729)
    assert estimator.last == 0.0
    for _ in range(7):
        estimator.add_sample(0.0)
    assert estimator.estimate == pytest.approx(0.9**10)


def test_an_estimate_rises_within_one_sample_when_the_working_set_grows() -> None:
    estimator = ActiveEstimator()
    for _ in range(10):
        estimator.add_sample(0.0)
    assert estimator.estimate == pytest.approx(0.9**10)  # about 0.35
    assert estimator.add_sample(0.8) == 0.8  # the current period counts at once
    # The next idle period falls back to the slow average, which has moved a tenth
    # of the way to 0.8 and then a tenth of the way to 0.
    assert estimator.add_sample(0.0) == pytest.approx(0.9 * (0.9**11 + 0.08))


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50))
def test_an_estimate_is_a_fraction_at_least_the_latest_sample(samples: list[float]) -> None:
    estimator = ActiveEstimator()
    for sample in samples:
        estimate = estimator.add_sample(sample)
        assert sample <= estimate <= 1.0
        assert estimate == max(estimator.fast, estimator.slow, sample)


def test_gains_and_samples_are_fractions() -> None:
    with pytest.raises(ValueError, match="fast_gain"):
        ActiveEstimator(fast_gain=0.0)
    with pytest.raises(ValueError, match="slow_gain"):
        ActiveEstimator(slow_gain=1.5)
    with pytest.raises(ValueError, match="sampled active fraction"):
        ActiveEstimator().add_sample(1.2)
