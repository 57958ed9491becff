"""Sizes and radix page geometry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memvirt.units import (
    GeometryError,
    PageGeometry,
    SizeError,
    format_size,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        ("4KiB", 4096),
        ("1.5GiB", 3 * 2**29),
        ("2 MiB", 2 * 2**20),
        ("4096", 4096),
        (4096, 4096),
        ("1G", 2**30),
        ("1GB", 10**9),
        ("0.5KiB", 512),
    ],
)
def test_sizes_read_binary_and_decimal_units(text: str | int, nbytes: int) -> None:
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("bad", ["", "four", "4XB", "-1", "0.3B", "1.1KiB7", True])
def test_bad_sizes_say_what_was_expected(bad: object) -> None:
    with pytest.raises(SizeError):
        parse_size(bad)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=2**50))
def test_a_formatted_power_of_two_size_reads_back(n: int) -> None:
    size = 1 << (n.bit_length())
    assert parse_size(format_size(size).replace(" ", "")) == size


def test_x86_64_has_48_bit_addresses_with_four_levels_and_57_with_five() -> None:
    four = PageGeometry()
    assert (four.levels, four.va_bits, four.page_size, four.entries_per_table) == (4, 48, 4096, 512)
    assert PageGeometry.x86_64(levels=5).va_bits == 57
    assert four.huge_page_size == 2 * 2**20
    assert four.leaf_page_size(1) == 2**30


def test_indices_split_a_page_number_from_the_root_down() -> None:
    geo = PageGeometry()
    vpn = (3 << 27) | (5 << 18) | (7 << 9) | 9
    assert [geo.index(vpn, lvl) for lvl in range(4)] == [3, 5, 7, 9]
    odd = PageGeometry(bits_per_level=(10, 10), offset_bits=12)
    assert odd.va_bits == 32 and odd.index((1 << 10) | 3, 0) == 1


@pytest.mark.parametrize(
    "bad",
    [
        lambda: PageGeometry(bits_per_level=(9,)),
        lambda: PageGeometry(bits_per_level=(9,) * 6),
        lambda: PageGeometry(bits_per_level=(0, 9)),
        lambda: PageGeometry.uniform(4, 9, page_size=3000),
    ],
)
def test_impossible_geometries_are_refused(bad: object) -> None:
    with pytest.raises(GeometryError):
        bad()  # type: ignore[operator]
