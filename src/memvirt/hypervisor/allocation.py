"""How a hypervisor divides physical memory among VMs: shares, the idle memory tax,
reservations and limits, and the estimate of how much of its memory a VM uses.

Each VM has three controls (Waldspurger 2002, section 6.1 "Parameters"): a
*reservation* (minimum) it is guaranteed, a *limit* (maximum) it never
exceeds, and *shares*: its claim, relative to the others, on the memory in
between. Pure proportional sharing gives each VM pages in proportion to its
shares. When memory must be taken back, *min-funded revocation* takes it from
the VM that pays the fewest shares per page it holds (section 5.1
"Share-Based Allocation"), which converges to that proportional split.

Proportional sharing lets a VM with many shares hoard memory it does not
use. The *idle memory tax* (section 5.2 "Reclaiming Idle Memory") charges
more for an idle page than for an active one: with a tax rate tau the idle
cost is k = 1 / (1 - tau), and a VM with S shares, P pages and an active
fraction f pays

    rho = S / (P * (f + k * (1 - f)))

shares per page. tau = 0 is pure proportional sharing; ESX's default tau = 0.75
(k = 4) lets up to 75% of a VM's idle memory be reclaimed for VMs that use
theirs. :func:`entitlements` is the allocation at which min-funded
revocation with the tax stops moving pages; :func:`revoke` is the
revocation itself.

The active fraction f is not known to the hypervisor: it estimates it by
sampling (section 5.3 "Measuring Idle Memory"), invalidating the mappings
of a few random pages each period and counting how many are touched again.
:class:`ActiveEstimator` smooths those samples.

Source: C. A. Waldspurger, "Memory Resource Management in VMware ESX
Server", OSDI 2002, sections 5.1-5.4 and 6.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

#: ESX's default idle memory tax rate (Mem.IdleTax = 75%).
DEFAULT_IDLE_TAX = 0.75


def idle_cost(tau: float) -> float:
    """The cost of an idle page relative to an active one, k = 1 / (1 - tau), for a
    tax rate ``tau`` in [0, 1)."""
    if not 0.0 <= tau < 1.0:  # also rejects NaN
        raise ValueError(f"idle memory tax rate must be in [0, 1), got {tau!r}")
    return 1.0 / (1.0 - tau)


def shares_per_page(shares: float, pages: float, active: float, tau: float) -> float:
    """The adjusted shares-per-page ratio rho = S / (P * (f + k(1 - f))) of a VM with
    ``shares`` S holding ``pages`` P of which a fraction ``active`` f is in use;
    infinite when it holds no pages."""
    k = idle_cost(tau)
    if not 0.0 <= active <= 1.0:
        raise ValueError(f"active fraction must be in [0, 1], got {active!r}")
    if not (math.isfinite(shares) and shares >= 0):
        raise ValueError(f"shares must be a finite number, 0 or more, got {shares!r}")
    if pages < 0:
        raise ValueError(f"pages must be 0 or more, got {pages!r}")
    if pages == 0:
        return math.inf
    return shares / (pages * (active + k * (1.0 - active)))


@dataclass(frozen=True)
class Claim:
    """One VM as the allocator sees it, in pages: its ``shares``, its estimated
    ``active`` fraction, the frames it holds now (``allocated``), its reservation
    (``minimum``) and ``maximum`` (the smaller of its limit and its real memory)."""

    shares: float
    active: float
    allocated: int
    minimum: int
    maximum: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.shares) and self.shares > 0):
            raise ValueError(f"a VM's shares must be a finite number above 0, got {self.shares!r}")
        if not 0.0 <= self.active <= 1.0:
            raise ValueError(f"a VM's active fraction must be in [0, 1], got {self.active!r}")
        if self.allocated < 0:
            raise ValueError(f"a VM holds 0 pages or more, got allocated={self.allocated}")
        if not 0 <= self.minimum <= self.maximum:
            raise ValueError(
                "a VM's reservation and maximum must satisfy 0 <= minimum <= maximum, got "
                f"minimum={self.minimum}, maximum={self.maximum}"
            )


def _weight(claim: Claim, k: float) -> float:
    """f + k(1 - f): the pages a VM is charged for per page it holds (1 to k)."""
    return claim.active + k * (1.0 - claim.active)


def entitlements(claims: Sequence[Claim], available: int, tau: float) -> list[int]:
    """The pages each VM is entitled to when ``available`` pages are divided by
    proportional share with the idle memory tax ``tau``, within each VM's minimum
    and maximum: the allocation at which min-funded revocation stops, where every
    VM not at a bound pays the same shares per page."""
    k = idle_cost(tau)
    if available < 0:
        raise ValueError(f"available memory must be 0 pages or more, got {available}")
    maximums = [claim.maximum for claim in claims]
    minimums = [claim.minimum for claim in claims]
    if sum(maximums) <= available:
        return maximums
    if sum(minimums) > available:
        raise ValueError(
            f"the VMs' reservations add up to {sum(minimums)} pages, more than the "
            f"{available} available"
        )
    if sum(minimums) == available:
        return minimums
    # demand[i] / rho is VM i's unbounded allocation at shares per page rho.
    demand = [claim.shares / _weight(claim, k) for claim in claims]

    def allocation(rho: float) -> list[float]:
        return [
            min(max(d / rho, claim.minimum), claim.maximum)
            for d, claim in zip(demand, claims, strict=True)
        ]

    # The allocation falls as rho rises. Below the smallest d / maximum every VM is
    # at its maximum (too much); rising from there by doubling finds a rho with too
    # little, since the minimums alone fit.
    low = min(d / claim.maximum for d, claim in zip(demand, claims, strict=True) if claim.maximum)
    high = low
    while math.fsum(allocation(high)) > available:
        low, high = high, high * 2.0
    # Bisect until the two ends are adjacent floats: the result does not depend on
    # a tolerance, and is the same on every run.
    while True:
        middle = 0.5 * (low + high)
        if middle <= low or middle >= high:
            break
        if math.fsum(allocation(middle)) > available:
            low = middle
        else:
            high = middle
    return _round(allocation(high), claims, available)


def _round(shares: list[float], claims: Sequence[Claim], available: int) -> list[int]:
    """Whole pages from real ones that add up to at most ``available``: floors, then
    the pages left one at a time by highest fractional part, then index."""
    pages = [math.floor(x) for x in shares]
    left = available - sum(pages)
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - pages[i]), i))
    # Normally one pass suffices; more only when bisection's rounding left a VM
    # short by a whole page. Each pass gives to every VM with room, and the room
    # adds up to more than `left`, so this ends.
    while left > 0:
        for i in order:
            if left == 0:
                break
            if pages[i] < claims[i].maximum:
                pages[i] += 1
                left -= 1
    return pages


def revoke(claims: Sequence[Claim], need: int, tau: float, *, step: int = 0) -> list[int]:
    """Min-funded revocation: takes ``need`` pages, ``step`` at a time, each from the
    VM paying the fewest shares per page on what it still holds, never below its
    minimum. Returns the pages taken from each VM; they add up to less than
    ``need`` only when every VM is down to its minimum. ``step`` 0 means
    max(1, need // 1024)."""
    idle_cost(tau)  # checks tau
    if need < 0:
        raise ValueError(f"pages to revoke must be 0 or more, got {need}")
    if step < 0:
        raise ValueError(f"revocation step must be 0 (automatic) or more pages, got {step}")
    if step == 0:
        step = max(1, need // 1024)
    taken = [0] * len(claims)

    def rho(i: int) -> float:
        claim = claims[i]
        return shares_per_page(claim.shares, claim.allocated - taken[i], claim.active, tau)

    # (rho, index): ties go to the lower index.
    heap = [(rho(i), i) for i, claim in enumerate(claims) if claim.allocated > claim.minimum]
    heapq.heapify(heap)
    left = need
    while left > 0 and heap:
        _, i = heapq.heappop(heap)
        room = claims[i].allocated - taken[i] - claims[i].minimum
        amount = min(step, left, room)
        taken[i] += amount
        left -= amount
        if amount < room:
            heapq.heappush(heap, (rho(i), i))
    return taken


class ActiveEstimator:
    """Active-memory estimation by sampling (Waldspurger 2002, section 5.3).

    Each sampling period the hypervisor reports the fraction of its sampled pages
    a VM touched (:meth:`add_sample`). ESX keeps a slow and a fast exponentially
    weighted moving average of these fractions and takes the largest of them and
    of the current period's value, so the estimate rises as soon as the working
    set grows and falls only as fast as the slow average decays: a VM whose idle
    memory was taken can get it back quickly. The paper does not give its gains;
    ours, 0.5 for the fast average and 0.1 for the slow one, are our choice.

    ``estimate`` starts at 1.0, as do both averages: a VM counts as fully active
    until it is measured, so a new VM is not taxed before its first sample.
    """

    fast: float
    slow: float
    last: float | None
    estimate: float

    def __init__(self, *, fast_gain: float = 0.5, slow_gain: float = 0.1) -> None:
        for name, gain in (("fast_gain", fast_gain), ("slow_gain", slow_gain)):
            if not 0.0 < gain <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {gain!r}")
        self.fast_gain = fast_gain
        self.slow_gain = slow_gain
        self.fast = 1.0
        self.slow = 1.0
        self.last = None
        self.estimate = 1.0

    def add_sample(self, fraction: float) -> float:
        """Takes one period's touched fraction of the sampled pages; returns the new
        estimate of the active fraction."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"a sampled active fraction must be in [0, 1], got {fraction!r}")
        self.fast += self.fast_gain * (fraction - self.fast)
        self.slow += self.slow_gain * (fraction - self.slow)
        self.last = fraction
        self.estimate = max(self.fast, self.slow, fraction)
        return self.estimate
