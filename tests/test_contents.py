"""Page contents: which pages VMs share, what writes do to them, and how they compress."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from memvirt.workloads.contents import (
    CLASS_DUPLICATE,
    CLASS_IMAGE,
    CLASS_OTHER,
    CLASS_UNIQUE,
    CLASS_ZERO,
    COMPRESSION_LIMIT,
    ContentModel,
    assign,
    classify,
    compressed_size,
    duplicate_tokens,
    image_key,
    token_class,
)

PAGES = np.arange(200_000, dtype=np.int64)
MODEL = ContentModel(
    zero_fraction=0.1,
    image_fraction=0.3,
    duplicate_fraction=0.2,
    duplicate_pool=32,
    compressible_fraction=0.6,
    min_compressed=300,
)


def close(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """``count`` of ``n`` is within ``sigmas`` standard errors of the fraction ``p``."""
    return abs(count / n - p) <= sigmas * math.sqrt(p * (1 - p) / n)


def tokens_of(vm_seed: int, image: str | None, model: ContentModel = MODEL) -> np.ndarray:
    return assign(model, PAGES, vm_seed=vm_seed, image=image)[0]


def test_the_class_fractions_hold_over_many_pages() -> None:
    classes = classify(MODEL, PAGES, vm_seed=1, image="linux")
    n = PAGES.shape[0]
    for cls, p in [
        (CLASS_ZERO, 0.1),
        (CLASS_IMAGE, 0.3),
        (CLASS_DUPLICATE, 0.2),
        (CLASS_UNIQUE, 0.4),
    ]:
        assert close(int((classes == cls).sum()), n, p), cls
    assert MODEL.unique_fraction == pytest.approx(0.4)


def test_each_token_carries_its_class() -> None:
    tokens = tokens_of(1, "linux")
    assert np.array_equal(token_class(tokens), classify(MODEL, PAGES, vm_seed=1, image="linux"))
    assert tokens.dtype == np.int64 and int(tokens.min()) >= 0
    # the kernel's own per-write counter tokens are not mistaken for any class
    assert token_class(np.array([0, 1, 2, 12345])).tolist() == [CLASS_ZERO] + [CLASS_OTHER] * 3


def test_two_vms_of_one_image_share_exactly_the_image_pages_and_the_zero_pages() -> None:
    a, b = tokens_of(1, "linux"), tokens_of(2, "linux")
    cls_a, cls_b = token_class(a), token_class(b)
    image = cls_a == CLASS_IMAGE
    assert np.array_equal(image, cls_b == CLASS_IMAGE)  # the same pages are image pages
    assert np.array_equal(a[image], b[image])
    common = np.intersect1d(a, b)
    assert np.array_equal(common, np.union1d([0], a[image]))
    assert close(len(common) - 1, PAGES.shape[0], 0.3)  # all image pages are distinct
    assert not np.array_equal(cls_a == CLASS_ZERO, cls_b == CLASS_ZERO)  # zeros lie elsewhere


def test_vms_of_different_images_share_only_zero_pages() -> None:
    assert np.intersect1d(tokens_of(1, "linux"), tokens_of(2, "windows")).tolist() == [0]
    assert np.intersect1d(tokens_of(1, "linux"), tokens_of(3, None)).tolist() == [0]


def test_duplicate_pages_repeat_within_a_vm_and_nowhere_else() -> None:
    a, b = tokens_of(1, "linux"), tokens_of(2, "linux")
    dup_a = a[token_class(a) == CLASS_DUPLICATE]
    values, counts = np.unique(dup_a, return_counts=True)
    assert np.array_equal(values, np.sort(duplicate_tokens(MODEL, 1)))  # every pool entry used
    assert counts.min() > 1000  # 40,000 duplicate pages over 32 contents
    assert np.intersect1d(dup_a, b).size == 0


def test_the_duplicate_pool_holds_distinct_tokens() -> None:
    pool = duplicate_tokens(ContentModel(duplicate_pool=65536), 7)
    assert np.unique(pool).shape == (65536,)
    assert set(token_class(pool).tolist()) == {CLASS_DUPLICATE}


def test_unique_pages_are_distinct() -> None:
    tokens = tokens_of(5, "linux")
    unique = tokens[token_class(tokens) == CLASS_UNIQUE]
    assert np.unique(unique).shape == unique.shape


def test_any_subset_of_pages_in_any_order_gets_the_same_answer() -> None:
    tokens, sizes = assign(MODEL, PAGES, vm_seed=9, image="linux")
    subset = np.random.default_rng(0).permutation(PAGES.shape[0])[:5000]
    t, s = assign(MODEL, PAGES[subset], vm_seed=9, image="linux")
    assert np.array_equal(t, tokens[subset]) and np.array_equal(s, sizes[subset])
    one, _ = assign(MODEL, 1234, vm_seed=9, image="linux")
    assert one.tolist() == [tokens[1234]]


def test_tokens_do_not_change_between_releases() -> None:
    # pins the hashes: a changed token would silently change every saved result
    assert image_key("linux") == 0xD84A10DEDB87E462
    pages = np.array([0, 7, 1, 3])  # a zero, an image, a duplicate and a unique page
    tokens, sizes = assign(MODEL, pages, vm_seed=1, image="linux")
    assert token_class(tokens).tolist() == [CLASS_ZERO, CLASS_IMAGE, CLASS_DUPLICATE, CLASS_UNIQUE]
    assert tokens.tolist() == [0, 1596304903322521806, 2590087569823629313, 3938565233037076937]
    assert sizes.tolist() == [0, 4044, 1620, 1565]
    written, _ = assign(MODEL, pages, vm_seed=1, image="linux", version=1)
    assert written.tolist() == [0, 3938290837895923784, 2590087569823629319, 3588552277622634961]


# ---------------------------------------------------------------------- writes


def test_no_pages_give_no_tokens() -> None:
    tokens, sizes = assign(MODEL, np.array([], dtype=np.int64), vm_seed=1, image="linux")
    assert tokens.shape == sizes.shape == (0,)


def test_each_write_gives_a_unique_page_a_new_token() -> None:
    versions = [assign(MODEL, PAGES, vm_seed=1, image="linux", version=v)[0] for v in range(4)]
    unique = token_class(versions[0]) == CLASS_UNIQUE
    stacked = np.stack([v[unique] for v in versions])
    assert all(np.unique(stacked[:, i]).shape == (4,) for i in range(0, unique.sum(), 997))


def test_a_write_to_an_image_page_breaks_sharing() -> None:
    before = tokens_of(1, "linux")
    image = token_class(before) == CLASS_IMAGE
    written, _ = assign(MODEL, PAGES, vm_seed=1, image="linux", version=image.astype(np.int64))
    assert set(token_class(written[image]).tolist()) == {CLASS_UNIQUE}
    assert np.intersect1d(written[image], tokens_of(2, "linux")).size == 0
    assert np.array_equal(written[~image], before[~image])  # unwritten pages unchanged


def test_written_zero_pages_stay_zero_and_duplicates_stay_in_the_pool() -> None:
    versions = np.full(PAGES.shape, 3)
    before, after = (
        tokens_of(1, "linux"),
        assign(MODEL, PAGES, vm_seed=1, image="linux", version=versions)[0],
    )
    zero = before == 0
    assert np.all(after[zero] == 0)
    dup = token_class(before) == CLASS_DUPLICATE
    assert np.isin(after[dup], duplicate_tokens(MODEL, 1)).all()
    assert not np.array_equal(after[dup], before[dup])  # another pool entry, often


def test_without_an_image_the_image_share_is_unique() -> None:
    classes = token_class(tokens_of(4, None))
    n = PAGES.shape[0]
    assert (classes == CLASS_IMAGE).sum() == 0
    assert close(int((classes == CLASS_ZERO).sum()), n, 0.1)
    assert close(int((classes == CLASS_DUPLICATE).sum()), n, 0.2)
    assert close(int((classes == CLASS_UNIQUE).sum()), n, 0.7)


# ------------------------------------------------------------------ compression


def test_compressed_sizes_are_in_range_and_the_compressible_fraction_holds() -> None:
    tokens, sizes = assign(MODEL, PAGES, vm_seed=1, image="linux")
    assert sizes.dtype == np.int32
    assert np.all(sizes[tokens == 0] == 0)
    # the size belongs to the content, so the fraction holds over distinct contents (the
    # duplicate pages of one pool entry are one content)
    distinct, first = np.unique(tokens[tokens != 0], return_index=True)
    nonzero = sizes[tokens != 0][first]
    assert nonzero.min() == 300 and nonzero.max() == 4096  # both ends are reached
    fits = int((nonzero <= COMPRESSION_LIMIT).sum())
    assert close(fits, distinct.shape[0], 0.6)


def test_equal_contents_compress_to_equal_sizes() -> None:
    a, sa = assign(MODEL, PAGES, vm_seed=1, image="linux")
    _, sb = assign(MODEL, PAGES, vm_seed=2, image="linux")
    image = token_class(a) == CLASS_IMAGE
    assert np.array_equal(sa[image], sb[image])
    assert np.array_equal(compressed_size(MODEL, a), sa)
    dup = token_class(a) == CLASS_DUPLICATE
    for token in np.unique(a[dup])[:5]:
        assert np.unique(sa[a == token]).shape == (1,)


def test_zero_pages_compress_to_the_configured_size() -> None:
    model = ContentModel(zero_fraction=0.5, zero_compressed_size=24, compressible_fraction=0.0)
    tokens, sizes = assign(model, np.arange(1000), vm_seed=1, image=None)
    assert np.all(sizes[tokens == 0] == 24)
    assert np.all(sizes[tokens != 0] > COMPRESSION_LIMIT)


# ------------------------------------------------------------------ validation


def test_fractions_above_one_are_refused_with_their_sum() -> None:
    with pytest.raises(ValidationError) as info:
        ContentModel(zero_fraction=0.5, image_fraction=0.4, duplicate_fraction=0.2)
    assert "zero_fraction + image_fraction + duplicate_fraction = 1.1; expected at most 1" in str(
        info.value
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"zero_fraction": -0.1}, "zero_fraction"),
        ({"duplicate_pool": 0}, "duplicate_pool"),
        ({"min_compressed": 3000}, "min_compressed"),
        ({"compressible_fraction": float("nan")}, "compressible_fraction"),
        ({"shared_fraction": 0.1}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_model_is_refused_naming_the_field(kwargs: dict[str, float], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        ContentModel(**kwargs)


@pytest.mark.parametrize(
    ("pages", "version", "expected"),
    [
        (np.array([1, -2]), 0, "pages must be non-negative, got -2"),
        (np.array([1.5]), 0, "pages must be integers"),
        (np.array([1, 2]), -1, "version must be a non-negative integer"),
        (np.array([1, 2]), np.array([1, 2, 3]), "one per page: 3 versions for 2 pages"),
    ],
)
def test_bad_pages_or_versions_are_refused(
    pages: np.ndarray, version: int | np.ndarray, expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        assign(MODEL, pages, vm_seed=1, image=None, version=version)


def test_the_toml_example_in_the_docs_is_a_valid_model() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "workloads.md").read_text()
    tables = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", text, re.S)]
    (contents,) = [t["vm"]["web"]["contents"] for t in tables if "vm" in t]
    assert ContentModel(**contents).image_fraction == 0.3
