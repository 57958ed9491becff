"""Synthetic workloads: streams of page accesses with known statistics.

A real program's page accesses have *locality*: a few pages are used far
more often than the rest (temporal locality), and pages near a used page are
used soon (spatial locality). Replacement policies, TLBs and reclamation
techniques differ exactly in how they exploit it, so a simulator needs
access streams whose locality is known and can be dialled. Each workload
here is one classic shape:

``uniform``
    every page of a region equally likely: no locality at all, the worst
    case for every cache.
``zipf``
    the page of popularity rank *k* is used with probability proportional to
    ``1 / k**alpha`` (Zipf's law, as in web and storage traces; Breslau et
    al., INFOCOM 1999). Ranks are spread over the region by a seeded
    permutation, so the hot pages are not neighbours (which would flatter
    the page tables and the TLB).
``sequential``
    a scan over a region, wrapping at its end: a large file or array read
    once through, the pattern that defeats LRU when the region is larger
    than memory.
``loop``
    the same scan over a region ``[start, start + length)`` repeated; the
    textbook case where LRU faults on every access once the loop is one page
    larger than memory.
``hotcold``
    a fraction of the accesses (say 90%) to a fraction of the pages (say
    10%), each part uniform: the simplest model of a working set.
``stride``
    every *k*-th page, wrapping: a column walk through a row-major matrix,
    which touches a new page on every access.
``mix``
    several workloads at once, each access drawn from component *i* with
    probability proportional to its weight; components keep their own state
    (a scan in a mix advances only when the scan is chosen).
``phases``
    workloads one after another for exact numbers of accesses, so the
    working set changes over time (and, by default, the cycle repeats).

Every workload has an ``offset`` (its first page number), so several can
share an address space, and a ``write_fraction``: each access is a write
with that probability, independently of the page.

Randomness. A run has one ``numpy.random.Generator`` made from its seed.
Each workload in the spec tree gets its own child generator
(``Generator.spawn``), split again into a stream for pages and one for the
read/write flags. Every access consumes a fixed number of raw 64-bit words
from its streams, so the same spec and seed give the same accesses however
they are cut into batches, and changing only ``write_fraction`` keeps the
pages the same (common random numbers for comparisons).

Sampling. A uniform page among ``n`` is the high half of the 128-bit product
of a random 64-bit word and ``n`` (Lemire, "Fast random integer generation
in an interval", 2019, without the rejection step: each page's probability
is then within 2**-64 of 1/n). Zipf pages are drawn by the alias method (Walker 1977, in
Vose's linear-time construction, IEEE TSE 1991): a table built once per run
with one entry per page; a sample is one uniform column and one comparison
with that column's threshold, O(1) whatever the number of pages. The low
half of the same product supplies the comparison's uniform fraction, so a
Zipf sample costs one random word. Over many pages the table is larger than
the cache, so the kernel prefetches each entry a few dozen accesses ahead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import numpy as np
from numba import njit
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from memvirt.dataplane.jit import prefetch
from memvirt.traces.model import Trace

#: The most pages one region may have (8 TiB of 4 KiB pages); keeps every
#: region size below 2**32, which the 64-bit sampling arithmetic needs.
MAX_REGION_PAGES = 1 << 31

#: Page numbers stay below this: a 64-bit address space of 4 KiB pages.
PAGE_LIMIT = 1 << 52

DEFAULT_CHUNK = 1 << 20


class WorkloadError(ValueError):
    """A workload spec or request that cannot be run: says which and what was expected."""


# --------------------------------------------------------------------------- specs

_CONFIG = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

Pages = Annotated[int, Field(ge=1, le=MAX_REGION_PAGES, description="pages in the region")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Spec(BaseModel):
    """Fields every workload has."""

    model_config = _CONFIG

    offset: int = Field(0, ge=0, le=PAGE_LIMIT, description="first page number of the region")

    @model_validator(mode="after")
    def _below_page_limit(self) -> _Spec:
        hi = max(lo + step * (count - 1) + 1 for lo, step, count in _page_sets(self, 0))
        if hi > PAGE_LIMIT:
            raise ValueError(f"its pages reach {hi - 1}, beyond the largest page number 2**52 - 1")
        return self


class _Leaf(_Spec):
    write_fraction: Fraction = Field(0.0, description="probability that an access is a write")


class Uniform(_Leaf):
    """Every page of ``[offset, offset + pages)`` equally likely."""

    kind: Literal["uniform"] = "uniform"
    pages: Pages


class Zipf(_Leaf):
    """Page of popularity rank k (1-based) with probability proportional to ``k**-alpha``.

    With ``shuffle`` (the default) ranks are mapped to pages by a permutation
    drawn from the run's generator; without it rank k is page ``offset + k - 1``.
    """

    kind: Literal["zipf"] = "zipf"
    pages: Pages
    alpha: float = Field(1.0, ge=0.0, description="skew: 0 is uniform, larger is more skewed")
    shuffle: bool = True


class Sequential(_Leaf):
    """Pages ``offset, offset + 1, ...`` up to ``offset + pages - 1``, then again from the first."""

    kind: Literal["sequential"] = "sequential"
    pages: Pages


class Loop(_Leaf):
    """Pages ``offset + start`` to ``offset + start + length - 1`` in order, over and over."""

    kind: Literal["loop"] = "loop"
    start: int = Field(0, ge=0, le=PAGE_LIMIT, description="first page of the loop, after offset")
    length: Pages


class HotCold(_Leaf):
    """``hot_access_fraction`` of the accesses go to the first ``hot_pages`` pages, uniformly;
    the rest go uniformly to the other pages of the region."""

    kind: Literal["hotcold"] = "hotcold"
    pages: int = Field(ge=2, le=MAX_REGION_PAGES)
    hot_access_fraction: Fraction = 0.9
    hot_page_fraction: float = Field(0.1, gt=0.0, lt=1.0)

    @property
    def hot_pages(self) -> int:
        """Pages in the hot set: ``hot_page_fraction * pages`` rounded, at least 1, at most
        ``pages - 1``."""
        return max(1, min(self.pages - 1, math.floor(self.hot_page_fraction * self.pages + 0.5)))


class Stride(_Leaf):
    """Access i is page ``offset + (i * stride) % pages``."""

    kind: Literal["stride"] = "stride"
    pages: Pages
    stride: int = Field(ge=1, le=MAX_REGION_PAGES)


class MixComponent(BaseModel):
    """One workload of a mix and its weight."""

    model_config = _CONFIG

    weight: float = Field(gt=0.0, description="relative share of the accesses")
    workload: WorkloadSpec


class Mix(_Spec):
    """Each access comes from component i with probability ``weight_i / sum(weights)``.

    ``write_fraction``, when given, replaces the components' own."""

    kind: Literal["mix"] = "mix"
    components: tuple[MixComponent, ...] = Field(min_length=1)
    write_fraction: Fraction | None = None


class Phase(BaseModel):
    """One workload run for exactly ``accesses`` accesses."""

    model_config = _CONFIG

    workload: WorkloadSpec
    accesses: int = Field(ge=1)


class Phases(_Spec):
    """The phases' workloads one after another. After the last phase the cycle starts again
    from the first (``repeat``), or the last phase goes on for ever (``repeat = false``).
    Each phase's workload keeps its state from one cycle to the next.

    ``write_fraction``, when given, replaces the phases' own."""

    kind: Literal["phases"] = "phases"
    phases: tuple[Phase, ...] = Field(min_length=1)
    repeat: bool = True
    write_fraction: Fraction | None = None

    @property
    def boundaries(self) -> tuple[int, ...]:
        """The access index at which each phase of the first cycle starts."""
        starts = [0]
        for phase in self.phases[:-1]:
            starts.append(starts[-1] + phase.accesses)
        return tuple(starts)


WorkloadSpec = Annotated[
    Uniform | Zipf | Sequential | Loop | HotCold | Stride | Mix | Phases,
    Field(discriminator="kind"),
]

MixComponent.model_rebuild()
Phase.model_rebuild()
Mix.model_rebuild()
Phases.model_rebuild()

_ADAPTER: TypeAdapter[WorkloadSpec] = TypeAdapter(WorkloadSpec)

#: The workload kinds, as spelled in scenario files.
KINDS = ("uniform", "zipf", "sequential", "loop", "hotcold", "stride", "mix", "phases")


def parse_workload(data: Mapping[str, Any], where: str = "<workload>") -> WorkloadSpec:
    """The workload spec that ``data`` (a TOML table, a dict) describes.

    Raise :class:`WorkloadError` naming ``where`` and each field in error.
    """
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'workload'}: {e['msg']}"
            for e in err.errors()
        )
        raise WorkloadError(f"{where}: {problems}") from None


# --------------------------------------------------------------------- footprints


def _page_sets(spec: _Spec, base: int) -> list[tuple[int, int, int]]:
    """The pages ``spec`` may touch, as arithmetic progressions (first, step, count)."""
    off = base + spec.offset
    if isinstance(spec, Uniform | Zipf | Sequential):
        return [(off, 1, spec.pages)]
    if isinstance(spec, Loop):
        return [(off + spec.start, 1, spec.length)]
    if isinstance(spec, HotCold):
        hot = spec.hot_pages
        if spec.hot_access_fraction == 1.0:
            return [(off, 1, hot)]
        if spec.hot_access_fraction == 0.0:
            return [(off + hot, 1, spec.pages - hot)]
        return [(off, 1, spec.pages)]
    if isinstance(spec, Stride):
        # i * stride mod pages visits exactly the multiples of gcd(stride, pages)
        g = math.gcd(spec.stride, spec.pages)
        return [(off, g, spec.pages // g)]
    if isinstance(spec, Mix):
        return [s for c in spec.components for s in _page_sets(c.workload, off)]
    if isinstance(spec, Phases):
        return [s for p in spec.phases for s in _page_sets(p.workload, off)]
    raise WorkloadError(f"unknown workload {spec!r}")


def page_range(spec: WorkloadSpec) -> tuple[int, int]:
    """``(lo, hi)``: every page the workload may touch is in ``[lo, hi)``, and lo and hi - 1
    are touched."""
    sets = _page_sets(spec, 0)
    return (
        min(lo for lo, _, _ in sets),
        max(lo + step * (count - 1) + 1 for lo, step, count in sets),
    )


_WINDOW = 1 << 24


def footprint_pages(spec: WorkloadSpec) -> int:
    """How many distinct pages the workload may touch."""
    sets = _page_sets(spec, 0)
    if all(step == 1 for _, step, _ in sets):
        # intervals: sort and merge
        total, reach = 0, -1
        for lo, _, count in sorted(sets):
            hi = lo + count
            if hi > reach:
                total += hi - max(lo, reach)
                reach = hi
        return total
    # strided sets may interleave: count them in a bitmap, a window at a time
    lo, hi = page_range(spec)
    total = 0
    for w0 in range(lo, hi, _WINDOW):
        w1 = min(w0 + _WINDOW, hi)
        marked = np.zeros(w1 - w0, dtype=np.bool_)
        for first, step, count in sets:
            k0 = max(0, -((first - w0) // step))  # first member at or after w0
            k1 = min(count - 1, (w1 - 1 - first) // step)  # last member before w1
            if k1 >= k0:
                marked[first + k0 * step - w0 : first + k1 * step - w0 + 1 : step] = True
        total += int(np.count_nonzero(marked))
    return total


# ------------------------------------------------------------------ numba kernels

_S32 = np.uint64(32)
_MASK32 = np.uint64(0xFFFFFFFF)
_S11 = np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True, nogil=True)
def _mulhi(r: np.uint64, n: np.uint64) -> np.uint64:
    """floor(r * n / 2**64) for n < 2**32, without 128-bit integers."""
    return ((r >> _S32) * n + (((r & _MASK32) * n) >> _S32)) >> _S32


@njit(cache=True, nogil=True)
def _uniform_pages(raw: np.ndarray, n: np.uint64, offset: np.int64, out: np.ndarray) -> None:
    """out[i] = offset + floor(raw[i] * n / 2**64), for n < 2**32."""
    for i in range(out.shape[0]):
        out[i] = offset + np.int64(_mulhi(raw[i], n))


#: How many accesses ahead the alias kernel asks for its table entry. A table larger than
#: the cache makes every lookup a miss; the out-of-order core overlaps only the few misses
#: of the loop iterations it holds, while prefetches overlap as many as the memory system
#: takes (measured on a 2**20-page table: 16 ns an access without, 4.6 ns at 64 ahead).
_PREFETCH_DISTANCE = 64


@njit(cache=True, nogil=True)
def _alias_pages(
    raw: np.ndarray, n: np.uint64, table: np.ndarray, offset: np.int64, out: np.ndarray
) -> None:
    """Alias-method samples over ``n`` columns, one per page: column floor(raw * n / 2**64);
    the low half of that product is the uniform fraction compared with the column's 32-bit
    threshold (high half of ``table``): below it the column's own page, else its alias (low
    half of ``table``)."""
    m = out.shape[0]
    for i in range(m):
        if i + _PREFETCH_DISTANCE < m:
            prefetch(table, _mulhi(raw[i + _PREFETCH_DISTANCE], n))
        r = raw[i]
        col = _mulhi(r, n)
        frac = (r * n) >> _S32  # the low half of the product: wraps mod 2**64, as intended
        entry = table[col]
        # a select rather than a branch: the comparison is unpredictable
        out[i] = offset + np.int64(col if frac < (entry >> _S32) else (entry & _MASK32))


@njit(cache=True, nogil=True)
def _build_alias(weights: np.ndarray, table: np.ndarray) -> None:
    """Vose's alias table for ``weights`` (not all zero): ``table[c]`` is
    ``threshold << 32 | alias``, column c giving c with probability ``threshold / 2**32``
    and its alias otherwise."""
    n = weights.shape[0]
    total = 0.0
    for i in range(n):
        total += weights[i]
    scaled = np.empty(n, dtype=np.float64)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    ns = 0
    nl = 0
    for i in range(n):
        scaled[i] = weights[i] * n / total
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        nl -= 1
        g = large[nl]
        # rounding may leave a column a hair below 0: it never keeps itself
        threshold = np.uint64(max(scaled[s], 0.0) * 4294967296.0)
        table[s] = (threshold << _S32) | np.uint64(g)
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            small[ns] = g
            ns += 1
        else:
            large[nl] = g
            nl += 1
    # what is left holds probability 1 up to rounding: its own alias, so always itself
    for k in range(nl):
        g = large[k]
        table[g] = (_MASK32 << _S32) | np.uint64(g)
    for k in range(ns):
        s = small[k]
        table[s] = (_MASK32 << _S32) | np.uint64(s)


@njit(cache=True, nogil=True)
def _hotcold_pages(
    raw: np.ndarray, hot: np.int64, pages: np.int64, a: float, offset: np.int64, out: np.ndarray
) -> None:
    """With u = raw / 2**64: u < a picks hot page floor(u / a * hot), otherwise cold page
    hot + floor((u - a) / (1 - a) * (pages - hot))."""
    cold = pages - hot
    for i in range(out.shape[0]):
        u = np.float64(raw[i] >> _S11) * _TWO_M53
        if u < a:
            k = np.int64(u / a * hot)
            if k >= hot:
                k = hot - 1
        else:
            k = np.int64((u - a) / (1.0 - a) * cold)
            if k >= cold:
                k = cold - 1
            k += hot
        out[i] = offset + k


@njit(cache=True, nogil=True)
def _choose(raw: np.ndarray, bounds: np.ndarray, out: np.ndarray) -> None:
    """out[i] = how many of the increasing ``bounds`` are at most raw[i] >> 11: the component
    of a mix that access i comes from."""
    k = bounds.shape[0]
    for i in range(out.shape[0]):
        x = raw[i] >> _S11
        c = 0
        while c < k and x >= bounds[c]:
            c += 1
        out[i] = c


@njit(cache=True, nogil=True)
def _write_flags(
    raw: np.ndarray, skip_first_half: bool, threshold: np.uint64, out: np.ndarray
) -> None:
    """One flag per 32-bit half of ``raw`` (high half first): 1 when the half is below
    ``threshold``. With ``skip_first_half`` the first word's high half is not used."""
    j = 1 if skip_first_half else 0
    for i in range(out.shape[0]):
        w = raw[j >> 1]
        half = (w >> _S32) if (j & 1) == 0 else (w & _MASK32)
        out[i] = 1 if half < threshold else 0
        j += 1


# ------------------------------------------------------------------------ samplers


class _Writes:
    """Read/write flags: each access a write with probability ``fraction``.

    Two flags per raw word (32-bit halves); a half left over at the end of one
    batch is the first flag of the next, so batches do not change the stream."""

    def __init__(self, rng: np.random.Generator | None, fraction: float) -> None:
        self._rng = rng
        self._threshold = round(fraction * 2**32)
        self._spare: int | None = None  # the unused low half of the last word

    def take(self, n: int) -> np.ndarray:
        if self._threshold == 0 or self._rng is None:
            return np.zeros(n, dtype=np.uint8)
        if self._threshold >= 2**32:
            return np.ones(n, dtype=np.uint8)
        out = np.empty(n, dtype=np.uint8)
        if n == 0:
            return out
        need = n - (1 if self._spare is not None else 0)
        words = self._rng.bit_generator.random_raw((need + 1) // 2)
        if self._spare is not None:
            raw = np.empty(words.shape[0] + 1, dtype=np.uint64)
            raw[0] = self._spare
            raw[1:] = words
            _write_flags(raw, True, np.uint64(self._threshold), out)
        else:
            _write_flags(words, False, np.uint64(self._threshold), out)
        self._spare = int(words[-1] & 0xFFFFFFFF) if need % 2 == 1 else None
        return out


class _Sampler:
    """Pages (offset applied) and write flags for the next ``n`` accesses."""

    writes: _Writes

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.pages(n), self.writes.take(n)

    def pages(self, n: int) -> np.ndarray:
        raise NotImplementedError


def _leaf_streams(
    rng: np.random.Generator, fraction: float, with_writes: bool
) -> tuple[np.random.Generator, _Writes]:
    page_rng, write_rng = rng.spawn(2)
    return page_rng, _Writes(write_rng if with_writes else None, fraction)


class _UniformSampler(_Sampler):
    def __init__(self, spec: Uniform, rng: np.random.Generator, base: int, writes: bool) -> None:
        self._rng, self.writes = _leaf_streams(rng, spec.write_fraction, writes)
        self._n = np.uint64(spec.pages)
        self._offset = np.int64(base + spec.offset)

    def pages(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        _uniform_pages(self._rng.bit_generator.random_raw(n), self._n, self._offset, out)
        return out


def zipf_weights(spec: Zipf) -> np.ndarray:
    """The unnormalized probability ``k**-alpha`` of the page of each rank k = 1..pages."""
    return np.arange(1, spec.pages + 1, dtype=np.float64) ** -spec.alpha


class _ZipfSampler(_Sampler):
    """Zipf by the alias method, with one column per page: the rank-to-page permutation is
    folded into the table, so it costs nothing per access."""

    def __init__(self, spec: Zipf, rng: np.random.Generator, base: int, writes: bool) -> None:
        self._rng, self.writes = _leaf_streams(rng, spec.write_fraction, writes)
        weights = zipf_weights(spec)
        n = spec.pages
        if spec.shuffle:
            by_page = np.empty_like(weights)
            by_page[self._rng.permutation(n)] = weights
            weights = by_page
        self.table = np.empty(n, dtype=np.uint64)
        _build_alias(weights, self.table)
        self._n = np.uint64(n)
        self._offset = np.int64(base + spec.offset)

    def pages(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        raw = self._rng.bit_generator.random_raw(n)
        _alias_pages(raw, self._n, self.table, self._offset, out)
        return out


class _CycleSampler(_Sampler):
    """Sequential, loop and stride: position i is page first + (i * step) % length."""

    def __init__(
        self,
        first: int,
        length: int,
        step: int,
        rng: np.random.Generator,
        fraction: float,
        writes: bool,
    ) -> None:
        _, self.writes = _leaf_streams(rng, fraction, writes)
        self._first = first
        self._length = length
        self._step = step % length
        self._position = 0  # index into the cycle of the next access

    def pages(self, n: int) -> np.ndarray:
        i = np.arange(self._position, self._position + n, dtype=np.int64)
        if self._step != 1:
            i %= self._length
            i *= self._step
        i %= self._length
        i += self._first
        self._position = (self._position + n) % self._length
        return i


class _HotColdSampler(_Sampler):
    def __init__(self, spec: HotCold, rng: np.random.Generator, base: int, writes: bool) -> None:
        self._rng, self.writes = _leaf_streams(rng, spec.write_fraction, writes)
        self._hot = np.int64(spec.hot_pages)
        self._pages = np.int64(spec.pages)
        self._a = float(spec.hot_access_fraction)
        self._offset = np.int64(base + spec.offset)

    def pages(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        raw = self._rng.bit_generator.random_raw(n)
        _hotcold_pages(raw, self._hot, self._pages, self._a, self._offset, out)
        return out


class _MixSampler(_Sampler):
    def __init__(self, spec: Mix, rng: np.random.Generator, base: int, writes: bool) -> None:
        choice_rng, write_rng, *children = rng.spawn(2 + len(spec.components))
        self._rng = choice_rng
        override = spec.write_fraction is not None
        self.writes = _Writes(write_rng if writes else None, spec.write_fraction or 0.0)
        self._override = override or not writes
        self._parts = [
            _build(c.workload, child, base + spec.offset, writes and not override)
            for c, child in zip(spec.components, children, strict=True)
        ]
        weights = np.array([c.weight for c in spec.components], dtype=np.float64)
        cumulative = np.cumsum(weights / weights.sum())[:-1]
        # component i when bounds[i-1] <= word >> 11 < bounds[i], in units of 2**-53
        self._bounds = np.floor(cumulative * 2.0**53).astype(np.uint64)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        choice = np.empty(n, dtype=np.int32)
        _choose(self._rng.bit_generator.random_raw(n), self._bounds, choice)
        pages = np.empty(n, dtype=np.int64)
        writes = self.writes.take(n) if self._override else np.empty(n, dtype=np.uint8)
        for i, part in enumerate(self._parts):
            where = np.flatnonzero(choice == i)
            p, w = part.take(where.shape[0])
            pages[where] = p
            if not self._override:
                writes[where] = w
        return pages, writes


class _PhasesSampler(_Sampler):
    def __init__(self, spec: Phases, rng: np.random.Generator, base: int, writes: bool) -> None:
        write_rng, *children = rng.spawn(1 + len(spec.phases))
        override = spec.write_fraction is not None
        self.writes = _Writes(write_rng if writes else None, spec.write_fraction or 0.0)
        self._override = override or not writes
        self._parts = [
            _build(p.workload, child, base + spec.offset, writes and not override)
            for p, child in zip(spec.phases, children, strict=True)
        ]
        self._lengths = [p.accesses for p in spec.phases]
        self._repeat = spec.repeat
        self._phase = 0
        self._done = 0  # accesses of the current phase already given

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        pages = np.empty(n, dtype=np.int64)
        writes = self.writes.take(n) if self._override else np.empty(n, dtype=np.uint8)
        filled = 0
        last = len(self._parts) - 1
        while filled < n:
            endless = self._phase == last and not self._repeat
            left = n - filled if endless else self._lengths[self._phase] - self._done
            k = min(left, n - filled)
            p, w = self._parts[self._phase].take(k)
            pages[filled : filled + k] = p
            if not self._override:
                writes[filled : filled + k] = w
            filled += k
            self._done += k
            if not endless and self._done == self._lengths[self._phase]:
                self._phase = (self._phase + 1) % len(self._parts)
                self._done = 0
        return pages, writes


def _build(spec: _Spec, rng: np.random.Generator, base: int, writes: bool) -> _Sampler:
    """The sampler for ``spec``, its pages shifted by ``base``; without ``writes`` its write
    flags are all 0 and cost nothing (a parent supplies them)."""
    if isinstance(spec, Uniform):
        return _UniformSampler(spec, rng, base, writes)
    if isinstance(spec, Zipf):
        return _ZipfSampler(spec, rng, base, writes)
    if isinstance(spec, Sequential):
        return _CycleSampler(base + spec.offset, spec.pages, 1, rng, spec.write_fraction, writes)
    if isinstance(spec, Loop):
        first = base + spec.offset + spec.start
        return _CycleSampler(first, spec.length, 1, rng, spec.write_fraction, writes)
    if isinstance(spec, Stride):
        first = base + spec.offset
        return _CycleSampler(first, spec.pages, spec.stride, rng, spec.write_fraction, writes)
    if isinstance(spec, HotCold):
        return _HotColdSampler(spec, rng, base, writes)
    if isinstance(spec, Mix):
        return _MixSampler(spec, rng, base, writes)
    if isinstance(spec, Phases):
        return _PhasesSampler(spec, rng, base, writes)
    raise WorkloadError(f"unknown workload {spec!r}")


# --------------------------------------------------------------------------- API


def _check_count(name: str, value: int, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise WorkloadError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


class Stream:
    """A workload's access stream, taken a batch at a time.

    ``Stream(spec, seed)`` makes the run's generator from ``seed``; a
    ``numpy.random.Generator`` handed down by the caller is used as is (and
    advanced). Batches of any sizes concatenate to the same stream.
    """

    def __init__(self, spec: WorkloadSpec, seed: int | np.random.Generator) -> None:
        if not isinstance(spec, _Spec):
            raise WorkloadError(
                f"expected a workload spec ({', '.join(KINDS)}), got {type(spec).__name__}; "
                "parse_workload() makes one from a dict"
            )
        if isinstance(seed, np.random.Generator):
            rng = seed
            self.source = f"{spec.kind} workload"
        else:
            rng = np.random.default_rng(_check_count("seed", seed, 0))
            self.source = f"{spec.kind} workload, seed {seed}"
        self.spec = spec
        self.taken = 0
        self._sampler = _build(spec, rng, 0, True)

    def take(self, n: int) -> Trace:
        """The next ``n`` accesses, as page numbers with write flags."""
        n = _check_count("accesses", n, 0)
        pages, writes = self._sampler.take(n)
        self.taken += n
        return Trace(pages, writes, page_numbers=True, source=self.source)


def generate(
    spec: WorkloadSpec, accesses: int, seed: int, chunk: int = DEFAULT_CHUNK
) -> Iterator[Trace]:
    """The first ``accesses`` accesses of ``spec`` run with ``seed``, in traces of ``chunk``
    accesses (the last one shorter). Same spec and seed, same accesses, whatever ``chunk``."""
    accesses = _check_count("accesses", accesses, 0)
    chunk = _check_count("chunk", chunk, 1)
    stream = Stream(spec, seed)

    def chunks() -> Iterator[Trace]:
        while stream.taken < accesses:
            yield stream.take(min(chunk, accesses - stream.taken))

    return chunks()


def generate_all(spec: WorkloadSpec, accesses: int, seed: int) -> Trace:
    """The first ``accesses`` accesses of ``spec`` run with ``seed``, as one trace."""
    accesses = _check_count("accesses", accesses, 0)
    return Stream(spec, seed).take(accesses)


__all__ = (
    "DEFAULT_CHUNK",
    "KINDS",
    "MAX_REGION_PAGES",
    "PAGE_LIMIT",
    "HotCold",
    "Loop",
    "Mix",
    "MixComponent",
    "Phase",
    "Phases",
    "Sequential",
    "Stream",
    "Stride",
    "Uniform",
    "WorkloadError",
    "WorkloadSpec",
    "Zipf",
    "footprint_pages",
    "generate",
    "generate_all",
    "page_range",
    "parse_workload",
    "zipf_weights",
)
