"""Replacement policies, registered by name.

A replacement policy chooses which page leaves memory when a frame is
needed and none is free. The built-in policies run inside the data plane
(:mod:`memvirt.dataplane.native`), so each class here names its kernel code
and states its rule; the registry maps a name to its class, and an unknown
name fails listing the known ones.

- ``fifo``: the page loaded longest ago.
- ``lru``: the page used least recently (exact, a linked list in use order).
- ``clock``: second chance. Pages sit in load order; the oldest page is
  evicted unless its referenced bit is set, in which case the bit is cleared
  and the page goes to the back. A page's bit is *clear* when it is loaded
  and set by each later access, as libCacheSim's Clock does.
- ``opt``: Belady's MIN: the page whose next use is farthest in the future
  (never used again counts as farthest; ties go to the lowest page number).
  It needs the whole future, so only a replayed trace can use it.
- ``random``: a page chosen uniformly by the run's seeded generator (the
  k-th page of the list, so the choice costs a walk of the list).
- ``random-frame``: a frame chosen uniformly among all frames, drawn again
  until it holds an evictable page: the same distribution over the pages
  that can be evicted, in constant expected time when memory is full. The
  hypervisor swaps real pages out this way (ESX picks its victims at
  random, Waldspurger, OSDI 2002).

Replacement is global (the victim may belong to any process) or local
(each process replaces only its own pages, within an equal share of the
frames), after Silberschatz et al., Operating System Concepts, 10.5.
"""

from __future__ import annotations

from typing import ClassVar

from memvirt.dataplane.layout import (
    POLICY_CLOCK,
    POLICY_FIFO,
    POLICY_LRU,
    POLICY_OPT,
    POLICY_RANDOM,
    POLICY_RANDOM_FRAME,
)


class UnknownPolicyError(ValueError):
    """A policy name that is not in the registry."""


class ReplacementPolicy:
    """A replacement policy: its name, its data-plane code, and whether it needs the future."""

    name: ClassVar[str]
    code: ClassVar[int]
    needs_future: ClassVar[bool] = False
    flat: ClassVar[bool] = True  # replay --no-page-tables can run it


class FIFO(ReplacementPolicy):
    """Evict the page loaded longest ago."""

    name = "fifo"
    code = POLICY_FIFO


class LRU(ReplacementPolicy):
    """Evict the page used least recently."""

    name = "lru"
    code = POLICY_LRU


class Clock(ReplacementPolicy):
    """Second chance: skip (and clear) referenced pages in load order."""

    name = "clock"
    code = POLICY_CLOCK


class Random(ReplacementPolicy):
    """Evict a page chosen by the run's seeded generator."""

    name = "random"
    code = POLICY_RANDOM


class RandomFrame(ReplacementPolicy):
    """Evict the page in a uniformly drawn frame (drawn again until it holds one)."""

    name = "random-frame"
    code = POLICY_RANDOM_FRAME
    flat = False


class OPT(ReplacementPolicy):
    """Belady's MIN: evict the page whose next use is farthest away."""

    name = "opt"
    code = POLICY_OPT
    needs_future = True


REGISTRY: dict[str, type[ReplacementPolicy]] = {
    cls.name: cls for cls in (FIFO, LRU, Clock, OPT, Random, RandomFrame)
}


def get_policy(name: str) -> type[ReplacementPolicy]:
    """Return the policy registered as ``name``."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise UnknownPolicyError(
            f"unknown replacement policy {name!r}: known policies are {known}"
        ) from None


def policy_names() -> list[str]:
    """The registered policy names, sorted."""
    return sorted(REGISTRY)
