"""Synthetic workloads: their exact sequences, their statistics, and their reproducibility.

Statistical checks allow a few standard errors of the sample size; the seeds are fixed, so
every run draws the same samples and the checks are not flaky.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from memvirt.traces.model import Trace
from memvirt.workloads import (
    KINDS,
    HotCold,
    Loop,
    Mix,
    MixComponent,
    Phase,
    Phases,
    Sequential,
    Stream,
    Stride,
    Uniform,
    WorkloadError,
    WorkloadSpec,
    Zipf,
    footprint_pages,
    generate,
    generate_all,
    page_range,
    parse_workload,
)
from memvirt.workloads.synthetic import (
    _alias_pages,
    _build_alias,
    _choose,
    _hotcold_pages,
    _uniform_pages,
    _write_flags,
    _ZipfSampler,
    zipf_weights,
)

M32 = (1 << 32) - 1
M64 = (1 << 64) - 1


def pages_of(spec: WorkloadSpec, accesses: int, seed: int = 1) -> list[int]:
    return list(generate_all(spec, accesses, seed).addresses.tolist())


def close(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """``count`` successes in ``n`` trials is within ``sigmas`` standard errors of ``p``."""
    return abs(count / n - p) <= sigmas * math.sqrt(p * (1 - p) / n)


def component(weight: float, workload: WorkloadSpec) -> MixComponent:
    return MixComponent(weight=weight, workload=workload)


# Every kind, with writes and offsets, nested where the kind nests.
EVERY_KIND: dict[str, WorkloadSpec] = {
    "uniform": Uniform(pages=5000, write_fraction=0.3, offset=7),
    "zipf": Zipf(pages=5000, alpha=0.9, write_fraction=0.25),
    "sequential": Sequential(pages=300, write_fraction=0.5, offset=1000),
    "loop": Loop(start=10, length=40, write_fraction=0.1, offset=2),
    "hotcold": HotCold(pages=1000, write_fraction=0.2),
    "stride": Stride(pages=512, stride=16, write_fraction=0.4),
    "mix": Mix(
        components=(
            component(2.0, Zipf(pages=800, write_fraction=0.6)),
            component(1.0, Sequential(pages=100, offset=5000)),
            component(0.5, Uniform(pages=50, offset=9000, write_fraction=1.0)),
        ),
        offset=100,
    ),
    "phases": Phases(
        phases=(
            Phase(workload=Uniform(pages=100, write_fraction=0.5), accesses=333),
            Phase(
                workload=Mix(
                    components=(
                        component(1.0, Loop(length=7, offset=500)),
                        component(1.0, HotCold(pages=90, offset=700)),
                    ),
                    write_fraction=0.9,
                ),
                accesses=250,
            ),
        )
    ),
}


def test_every_kind_has_an_example() -> None:
    assert sorted(EVERY_KIND) == sorted(KINDS)


# --------------------------------------------------------------------- exact sequences


def test_a_sequential_scan_starts_at_its_offset_and_wraps() -> None:
    assert pages_of(Sequential(pages=4, offset=10), 10) == [10, 11, 12, 13, 10, 11, 12, 13, 10, 11]


def test_a_loop_repeats_its_region() -> None:
    assert pages_of(Loop(start=3, length=3, offset=100), 8) == [103, 104, 105] * 2 + [103, 104]


def test_a_stride_takes_every_kth_page_and_wraps() -> None:
    assert pages_of(Stride(pages=10, stride=3), 12) == [0, 3, 6, 9, 2, 5, 8, 1, 4, 7, 0, 3]
    # stride and pages sharing a factor 4: only the multiples of 4 are touched
    assert pages_of(Stride(pages=12, stride=8, offset=1), 5) == [1, 9, 5, 1, 9]


def test_phases_change_workload_at_exact_access_counts_and_each_resumes_its_state() -> None:
    spec = Phases(
        phases=(
            Phase(workload=Sequential(pages=3), accesses=5),
            Phase(workload=Loop(start=100, length=2), accesses=3),
        )
    )
    expected = [0, 1, 2, 0, 1, 100, 101, 100, 2, 0, 1, 2, 0, 101, 100, 101, 1, 2, 0, 1]
    assert pages_of(spec, 20) == expected
    assert spec.boundaries == (0, 5)
    for chunk in (1, 4, 6, 20):
        got = np.concatenate([t.addresses for t in generate(spec, 20, 0, chunk=chunk)])
        assert got.tolist() == expected


def test_without_repeat_the_last_phase_goes_on() -> None:
    spec = Phases(
        phases=(
            Phase(workload=Loop(length=1), accesses=2),
            Phase(workload=Sequential(pages=100, offset=50), accesses=1),
        ),
        repeat=False,
    )
    assert pages_of(spec, 6) == [0, 0, 50, 51, 52, 53]


def test_random_phases_switch_at_exactly_their_boundaries() -> None:
    spec = Phases(
        phases=(
            Phase(workload=Zipf(pages=1000), accesses=1234),
            Phase(workload=Uniform(pages=1000, offset=5000), accesses=777),
            Phase(workload=HotCold(pages=1000, offset=9000), accesses=1),
        )
    )
    got = np.concatenate([t.addresses for t in generate(spec, 2 * 2012, 3, chunk=1000)])
    phase = np.digitize(got, [5000, 9000])
    one_cycle = [0] * 1234 + [1] * 777 + [2]
    assert phase.tolist() == one_cycle * 2


def test_components_of_a_mix_keep_their_own_state() -> None:
    spec = Mix(
        components=(
            component(3.0, Sequential(pages=1000)),
            component(1.0, Sequential(pages=1000, offset=10_000)),
        )
    )
    pages = generate_all(spec, 40_000, 5).addresses
    first = pages[pages < 10_000]
    second = pages[pages >= 10_000]
    assert first.tolist() == [i % 1000 for i in range(first.shape[0])]
    assert second.tolist() == [10_000 + i % 1000 for i in range(second.shape[0])]
    assert close(first.shape[0], 40_000, 0.75)


# ------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("kind", sorted(EVERY_KIND))
def test_the_stream_does_not_depend_on_the_chunk_size(kind: str) -> None:
    spec = EVERY_KIND[kind]
    whole = generate_all(spec, 3000, 42)
    for chunk in (1, 7, 1000, 2999, 3000, 1 << 20):
        parts = list(generate(spec, 3000, 42, chunk=chunk))
        assert [len(t) for t in parts[:-1]] == [chunk] * (len(parts) - 1)
        assert np.array_equal(np.concatenate([t.addresses for t in parts]), whole.addresses)
        assert np.array_equal(np.concatenate([t.writes for t in parts]), whole.writes)


@pytest.mark.parametrize("kind", sorted(EVERY_KIND))
def test_the_same_seed_gives_the_same_stream_and_another_seed_another(kind: str) -> None:
    spec = EVERY_KIND[kind]
    a, b, c = (generate_all(spec, 2000, s) for s in (9, 9, 10))
    assert np.array_equal(a.addresses, b.addresses) and np.array_equal(a.writes, b.writes)
    if kind not in ("sequential", "loop", "stride"):
        assert not np.array_equal(a.addresses, c.addresses)


@pytest.mark.parametrize("kind", sorted(EVERY_KIND))
def test_generated_traces_hold_page_numbers_inside_the_page_range(kind: str) -> None:
    spec = EVERY_KIND[kind]
    trace = generate_all(spec, 5000, 1)
    lo, hi = page_range(spec)
    assert isinstance(trace, Trace) and trace.page_numbers
    assert trace.addresses.dtype == np.int64 and trace.writes.dtype == np.uint8
    assert lo <= int(trace.addresses.min()) and int(trace.addresses.max()) < hi
    assert len(np.unique(trace.addresses)) <= footprint_pages(spec)
    assert set(np.unique(trace.writes).tolist()) <= {0, 1}


def test_a_stream_takes_a_handed_down_generator_and_batches_of_any_size() -> None:
    spec = Zipf(pages=100, write_fraction=0.5)
    stream = Stream(spec, np.random.default_rng(8))
    batches = [stream.take(n) for n in (0, 5, 1, 94)]
    assert stream.taken == 100
    same = Stream(spec, np.random.default_rng(8)).take(100)
    assert np.array_equal(np.concatenate([b.addresses for b in batches]), same.addresses)
    assert np.array_equal(np.concatenate([b.writes for b in batches]), same.writes)
    assert generate_all(spec, 0, 1).addresses.shape == (0,)
    assert list(generate(spec, 0, 1)) == []


def test_changing_only_the_write_fraction_keeps_the_pages() -> None:
    a = generate_all(Zipf(pages=1000, write_fraction=0.1), 5000, 4)
    b = generate_all(Zipf(pages=1000, write_fraction=0.7), 5000, 4)
    assert np.array_equal(a.addresses, b.addresses)
    assert not np.array_equal(a.writes, b.writes)


# -------------------------------------------------------------------- statistics


def test_the_write_fraction_is_the_share_of_writes() -> None:
    n = 200_000
    writes = generate_all(Uniform(pages=10, write_fraction=0.3), n, 2).writes
    assert close(int(writes.sum()), n, 0.3)
    assert generate_all(Uniform(pages=10), 1000, 2).writes.sum() == 0
    assert generate_all(Uniform(pages=10, write_fraction=1.0), 1000, 2).writes.sum() == 1000


def test_a_uniform_workload_uses_every_page_equally() -> None:
    n, pages = 200_000, 50
    counts = np.bincount(generate_all(Uniform(pages=pages, offset=3), n, 6).addresses - 3)
    assert counts.shape == (pages,)
    assert all(close(int(c), n, 1 / pages) for c in counts)


def test_zipf_rank_one_takes_one_over_the_harmonic_number_of_the_accesses() -> None:
    n, pages = 200_000, 1000
    harmonic = sum(1 / k for k in range(1, pages + 1))  # H_1000 = 7.485
    counts = np.bincount(generate_all(Zipf(pages=pages, shuffle=False), n, 1).addresses)
    assert close(int(counts[0]), n, 1 / harmonic)
    for rank in (2, 3, 10, 100):
        assert close(int(counts[rank - 1]), n, 1 / (rank * harmonic))


def test_a_shuffled_zipf_spreads_the_popular_pages_but_keeps_their_frequencies() -> None:
    n, pages = 200_000, 1000
    harmonic = sum(1 / k for k in range(1, pages + 1))
    counts = np.bincount(generate_all(Zipf(pages=pages), n, 1).addresses, minlength=pages)
    top = np.argsort(counts)[::-1][:10]
    assert close(int(counts[top[0]]), n, 1 / harmonic)
    assert np.ptp(top) > 100  # the ten hottest pages are not neighbours
    ranked = np.sort(counts)[::-1]
    assert close(int(ranked[1]), n, 1 / (2 * harmonic))


def test_zipf_with_alpha_zero_is_uniform_and_larger_alpha_is_more_skewed() -> None:
    n = 100_000
    flat = np.bincount(generate_all(Zipf(pages=20, alpha=0.0, shuffle=False), n, 3).addresses)
    assert all(close(int(c), n, 1 / 20) for c in flat)
    steep = np.bincount(generate_all(Zipf(pages=20, alpha=2.0, shuffle=False), n, 3).addresses)
    weights = 1 / np.arange(1, 21) ** 2.0
    assert close(int(steep[0]), n, float(weights[0] / weights.sum()))


def test_hot_pages_take_the_hot_share_of_the_accesses() -> None:
    n = 200_000
    spec = HotCold(pages=1000, hot_access_fraction=0.9, hot_page_fraction=0.1, offset=50)
    assert spec.hot_pages == 100
    pages = generate_all(spec, n, 11).addresses - 50
    hot = int((pages < 100).sum())
    assert close(hot, n, 0.9)
    counts = np.bincount(pages, minlength=1000)
    assert close(int(counts[0]), n, 0.9 / 100) and close(int(counts[999]), n, 0.1 / 900)
    assert pages.min() == 0 and pages.max() == 999


def test_mix_components_take_their_weights_share() -> None:
    n = 100_000
    spec = Mix(
        components=(
            component(1.0, Uniform(pages=10)),
            component(3.0, Uniform(pages=10, offset=100)),
            component(6.0, Uniform(pages=10, offset=200)),
        ),
        write_fraction=0.5,
    )
    trace = generate_all(spec, n, 12)
    shares = np.bincount(trace.addresses // 100)
    assert [close(int(c), n, p) for c, p in zip(shares, (0.1, 0.3, 0.6), strict=True)] == [True] * 3
    assert close(int(trace.writes.sum()), n, 0.5)


def test_a_mix_without_its_own_write_fraction_uses_its_components() -> None:
    n = 100_000
    spec = Mix(
        components=(
            component(1.0, Uniform(pages=10, write_fraction=1.0)),
            component(1.0, Uniform(pages=10, offset=100)),
        )
    )
    trace = generate_all(spec, n, 12)
    assert np.array_equal(trace.writes, (trace.addresses < 100).astype(np.uint8))


# ------------------------------------------------------------------- footprints


def test_footprints_and_page_ranges() -> None:
    assert footprint_pages(Uniform(pages=10, offset=5)) == 10
    assert page_range(Uniform(pages=10, offset=5)) == (5, 15)
    assert footprint_pages(Loop(start=4, length=6, offset=10)) == 6
    assert page_range(Loop(start=4, length=6, offset=10)) == (14, 20)
    assert footprint_pages(Stride(pages=12, stride=8)) == 3
    assert page_range(Stride(pages=12, stride=8, offset=1)) == (1, 10)
    assert footprint_pages(HotCold(pages=100, hot_access_fraction=1.0)) == 10
    assert page_range(HotCold(pages=100, hot_access_fraction=0.0)) == (10, 100)
    overlapping = Mix(
        components=(component(1, Uniform(pages=100)), component(1, Loop(start=50, length=100))),
        offset=1000,
    )
    assert footprint_pages(overlapping) == 150
    assert page_range(overlapping) == (1000, 1150)
    strided = Phases(
        phases=(
            Phase(workload=Stride(pages=100, stride=2), accesses=1),  # the 50 even pages
            Phase(workload=Stride(pages=99, stride=3), accesses=1),  # multiples of 3 below 99
            Phase(workload=Sequential(pages=10, offset=200), accesses=1),
        )
    )
    evens, threes = set(range(0, 100, 2)), set(range(0, 99, 3))
    assert footprint_pages(strided) == len(evens | threes) + 10
    assert page_range(strided) == (0, 210)


def test_a_sequential_scan_touches_exactly_its_footprint() -> None:
    spec = Sequential(pages=1234, offset=77)
    pages = generate_all(spec, 1234, 0).addresses
    assert len(np.unique(pages)) == footprint_pages(spec) == 1234
    assert (int(pages.min()), int(pages.max()) + 1) == page_range(spec)


# ------------------------------------------------------------- specs from files


def test_a_nested_spec_reads_from_a_toml_like_table() -> None:
    data: dict[str, Any] = {
        "kind": "phases",
        "phases": [
            {"accesses": 1000, "workload": {"kind": "zipf", "pages": 100, "alpha": 1.2}},
            {
                "accesses": 500,
                "workload": {
                    "kind": "mix",
                    "components": [
                        {"weight": 0.7, "workload": {"kind": "uniform", "pages": 10}},
                        {"weight": 0.3, "workload": {"kind": "stride", "pages": 8, "stride": 2}},
                    ],
                },
            },
        ],
    }
    spec = parse_workload(data)
    assert isinstance(spec, Phases)
    assert spec.phases[0].workload == Zipf(pages=100, alpha=1.2)
    assert parse_workload(spec.model_dump()) == spec
    assert hash(spec) == hash(parse_workload(data))  # frozen, so usable as a cache key


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kind": "zipf", "pages": 10, "alpah": 1}, "alpah: Extra inputs are not permitted"),
        ({"kind": "uniform", "pages": 10, "write_fraction": 1.5}, "write_fraction: Input should"),
        ({"kind": "uniform", "pages": 0}, "uniform.pages: Input should be greater than or equal"),
        ({"kind": "hotcold", "pages": 1}, "hotcold.pages"),
        ({"kind": "zipf", "pages": 10, "alpha": float("nan")}, "alpha: Input should be a finite"),
        ({"kind": "fifo"}, "does not match any of the expected tags"),
        ({"pages": 10}, "Unable to extract tag using discriminator 'kind'"),
        ({"kind": "mix", "components": []}, "mix.components: Tuple should have at least 1 item"),
        (
            {"kind": "mix", "components": [{"weight": 0, "workload": {"kind": "loop"}}]},
            "components.0.weight: Input should be greater than 0",
        ),
        ({"kind": "uniform", "pages": 10, "offset": 2**52}, "beyond the largest page number"),
    ],
)
def test_a_bad_spec_is_reported_with_where_and_what(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(WorkloadError) as info:
        parse_workload(data, where="scenario.toml [vm.web.workload]")
    message = str(info.value)
    assert message.startswith("scenario.toml [vm.web.workload]: ")
    assert expected in message


def test_the_toml_examples_in_the_docs_are_valid_workloads() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "workloads.md").read_text()
    tables = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", text, re.S)]
    kinds = [
        parse_workload(t["workload"], "docs/workloads.md").kind for t in tables if "workload" in t
    ]
    assert sorted(kinds) == sorted(KINDS)


def test_specs_are_frozen() -> None:
    spec = Uniform(pages=10)
    with pytest.raises(ValidationError):
        spec.pages = 11


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: generate_all(Uniform(pages=4), -1, 0), "accesses must be an integer >= 0"),
        (lambda: generate(Uniform(pages=4), 10, 0, chunk=0), "chunk must be an integer >= 1"),
        (lambda: generate(Uniform(pages=4), 10, -3), "seed must be an integer >= 0, got -3"),
        (lambda: generate_all({"kind": "uniform"}, 10, 0), "parse_workload() makes one"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_request_fails_at_once_with_a_clear_message(call: Any, expected: str) -> None:
    with pytest.raises(WorkloadError) as info:
        call()
    assert expected in str(info.value)


# ------------------------------------------------- kernels against pure-Python twins


def alias_twin(raw: list[int], n: int, table: list[int], offset: int) -> list[int]:
    out = []
    for r in raw:
        col = (r * n) >> 64
        frac = ((r * n) & M64) >> 32
        entry = table[col]
        out.append(offset + (col if frac < entry >> 32 else entry & M32))
    return out


def test_the_alias_kernel_matches_its_twin() -> None:
    rng = np.random.default_rng(0)
    raw = rng.bit_generator.random_raw(5000)
    raw[:3] = [0, M64, 1 << 63]
    sampler = _ZipfSampler(Zipf(pages=37, alpha=1.3), rng, 0, False)
    out = np.empty(5000, dtype=np.int64)
    _alias_pages(raw, np.uint64(37), sampler.table, np.int64(9), out)
    assert out.tolist() == alias_twin(raw.tolist(), 37, sampler.table.tolist(), 9)


def test_the_uniform_kernel_is_the_high_half_of_the_128_bit_product() -> None:
    raw = np.random.default_rng(1).bit_generator.random_raw(5000)
    raw[:2] = [0, M64]
    for n in (1, 3, 1000, (1 << 31) - 1):
        out = np.empty(5000, dtype=np.int64)
        _uniform_pages(raw, np.uint64(n), np.int64(5), out)
        assert out.tolist() == [5 + ((r * n) >> 64) for r in raw.tolist()]


def test_the_hotcold_kernel_matches_its_twin() -> None:
    raw = np.random.default_rng(2).bit_generator.random_raw(5000)
    out = np.empty(5000, dtype=np.int64)
    _hotcold_pages(raw, np.int64(7), np.int64(50), 0.8, np.int64(0), out)
    expected = []
    for r in raw.tolist():
        u = (r >> 11) * 2.0**-53
        if u < 0.8:
            expected.append(min(int(u / 0.8 * 7), 6))
        else:
            expected.append(7 + min(int((u - 0.8) / 0.2 * 43), 42))
    assert out.tolist() == expected


def test_a_mix_chooses_the_component_whose_interval_holds_the_word() -> None:
    raw = np.random.default_rng(3).bit_generator.random_raw(5000)
    bounds = np.array([1 << 50, 1 << 52, 3 << 51], dtype=np.uint64)
    out = np.empty(5000, dtype=np.int32)
    _choose(raw, bounds, out)
    assert out.tolist() == [sum(r >> 11 >= b for b in bounds.tolist()) for r in raw.tolist()]


def test_write_flags_use_each_32_bit_half_high_first() -> None:
    raw = np.array([(5 << 32) | 9, (1 << 32) | 100], dtype=np.uint64)
    out = np.empty(4, dtype=np.uint8)
    _write_flags(raw, False, np.uint64(8), out)
    assert out.tolist() == [1, 0, 1, 0]
    out3 = np.empty(3, dtype=np.uint8)
    _write_flags(raw, True, np.uint64(10), out3)
    assert out3.tolist() == [1, 1, 0]


def alias_probabilities(table: np.ndarray) -> np.ndarray:
    """The distribution an alias table samples: column c gives c with probability
    threshold/2**32 and its alias otherwise, each column chosen with probability 1/n."""
    n = table.shape[0]
    p = np.zeros(n)
    for col, entry in enumerate(table.tolist()):
        keep = (entry >> 32) / 2**32
        p[col] += keep / n
        p[entry & M32] += (1 - keep) / n
    return p


@pytest.mark.parametrize(("pages", "alpha"), [(1, 1.0), (2, 0.5), (1000, 1.0), (999, 2.5)])
def test_the_alias_table_reproduces_the_zipf_probabilities(pages: int, alpha: float) -> None:
    spec = Zipf(pages=pages, alpha=alpha, shuffle=False)
    weights = zipf_weights(spec)
    table = np.empty(pages, dtype=np.uint64)
    _build_alias(weights, table)
    assert np.allclose(alias_probabilities(table), weights / weights.sum(), rtol=0, atol=1e-9)


def test_a_shuffled_table_gives_each_page_its_ranks_probability() -> None:
    spec = Zipf(pages=500, alpha=1.1)
    sampler = _ZipfSampler(spec, np.random.default_rng(4), 0, False)
    by_page = alias_probabilities(sampler.table)
    weights = zipf_weights(spec)
    assert np.allclose(np.sort(by_page)[::-1], weights / weights.sum(), rtol=0, atol=1e-9)
    assert by_page.argmax() != 0  # rank 1 was moved
