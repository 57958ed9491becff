"""Sizes and page geometry.

A size is a number of bytes. People write sizes as strings: ``"4KiB"``,
``"1.5GiB"``; binary suffixes (KiB, MiB, GiB, TiB, and the short K, M, G, T)
are powers of 1024, decimal ones (kB, MB, GB, TB) powers of 1000, and a plain
integer is bytes.

A virtual address is split by a radix page table into one index per level
and a page offset. x86-64 uses 4 levels of 9 bits above a 12-bit offset
(48-bit virtual addresses); 5-level paging (LA57) adds a fifth level for
57 bits. A leaf may also sit higher in the tree: one level up it maps a
2 MiB page, two levels up a 1 GiB page (Intel SDM vol. 3A, section 4.5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kib": KiB,
    "kb": 1000,
    "m": MiB,
    "mib": MiB,
    "mb": 1000**2,
    "g": GiB,
    "gib": GiB,
    "gb": 1000**3,
    "t": TiB,
    "tib": TiB,
    "tb": 1000**4,
}

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")

#: Page sizes that x86-64 translates with one leaf: 4 KiB, 2 MiB and 1 GiB.
PAGE_SIZES = (4 * KiB, 2 * MiB, 1 * GiB)


class SizeError(ValueError):
    """A size string that cannot be read."""


def parse_size(value: str | int) -> int:
    """Return the number of bytes that ``value`` names.

    ``value`` is an integer (bytes) or a string such as ``"4KiB"``,
    ``"1.5GiB"`` or ``"4096"``. Raise :class:`SizeError` when it is not a
    whole, non-negative number of bytes.
    """
    if isinstance(value, bool):
        raise SizeError(f"expected a size such as '4KiB' or 4096, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise SizeError(f"expected a non-negative size, got {value}")
        return value
    if not isinstance(value, str):
        raise SizeError(f"expected a size such as '4KiB' or 4096, got {value!r}")
    match = _SIZE_RE.match(value)
    if match is None:
        raise SizeError(f"expected a size such as '4KiB', '1.5GiB' or 4096, got {value!r}")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        known = "KiB, MiB, GiB, TiB, kB, MB, GB, TB"
        raise SizeError(f"unknown unit {unit!r} in {value!r}: expected one of {known}")
    if "." in number:
        whole, frac = number.split(".")
        scale = 10 ** len(frac)
        numerator = (int(whole) * scale + int(frac)) * factor
        if numerator % scale:
            raise SizeError(f"{value!r} is not a whole number of bytes")
        return int(numerator // scale)
    return int(number) * int(factor)


def format_size(nbytes: int) -> str:
    """Return ``nbytes`` as a short binary size: ``4096`` gives ``"4 KiB"``."""
    for name, unit in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= unit:
            value = nbytes / unit
            text = f"{value:.0f}" if value == int(value) else f"{value:.3g}"
            return f"{text} {name}"
    return f"{nbytes} B"


def is_power_of_two(n: int) -> bool:
    """True when ``n`` is 1, 2, 4, 8, ..."""
    return n > 0 and n & (n - 1) == 0


class GeometryError(ValueError):
    """A page geometry that no radix page table could have."""


@dataclass(frozen=True)
class PageGeometry:
    """How a virtual address splits into radix indices and a page offset.

    ``bits_per_level`` lists the index widths from the root (level 0) down
    to the leaf level. The default is x86-64's 4 levels of 9 bits above a
    12-bit offset: 48-bit virtual addresses and 4 KiB pages.
    """

    bits_per_level: tuple[int, ...] = (9, 9, 9, 9)
    offset_bits: int = 12

    def __post_init__(self) -> None:
        levels = len(self.bits_per_level)
        if not 2 <= levels <= 5:
            raise GeometryError(f"a page table has 2 to 5 levels, got {levels}")
        for level, bits in enumerate(self.bits_per_level):
            if not 1 <= bits <= 12:
                raise GeometryError(f"level {level} indexes 1 to 12 bits, got {bits}")
        if not 10 <= self.offset_bits <= 30:
            raise GeometryError(
                f"the page offset is 10 to 30 bits (1 KiB to 1 GiB pages), got {self.offset_bits}"
            )
        if self.va_bits > 62:
            raise GeometryError(f"virtual addresses of at most 62 bits, got {self.va_bits}")

    @classmethod
    def x86_64(cls, levels: int = 4, page_size: int = 4 * KiB) -> PageGeometry:
        """x86-64 paging: 4 levels (48-bit) or 5 levels (57-bit), 9 bits each."""
        return cls.uniform(levels=levels, bits=9, page_size=page_size)

    @classmethod
    def uniform(cls, levels: int, bits: int, page_size: int = 4 * KiB) -> PageGeometry:
        """``levels`` levels of ``bits`` bits each above pages of ``page_size`` bytes."""
        if not is_power_of_two(page_size):
            raise GeometryError(f"the page size must be a power of two, got {page_size}")
        return cls(bits_per_level=(bits,) * levels, offset_bits=page_size.bit_length() - 1)

    @property
    def levels(self) -> int:
        """Number of levels in the radix tree."""
        return len(self.bits_per_level)

    @property
    def page_size(self) -> int:
        """Bytes in a base page."""
        return 1 << self.offset_bits

    @property
    def va_bits(self) -> int:
        """Width of a virtual address: 48 for 4-level x86-64, 57 for 5-level."""
        return self.offset_bits + sum(self.bits_per_level)

    @property
    def vpn_bits(self) -> int:
        """Width of a virtual page number."""
        return sum(self.bits_per_level)

    @property
    def entries_per_table(self) -> int:
        """Entries in the widest table page (512 on x86-64)."""
        return 1 << max(self.bits_per_level)

    def shift(self, level: int) -> int:
        """Right shift that brings ``level``'s index to the bottom of a vpn."""
        return sum(self.bits_per_level[level + 1 :])

    def index(self, vpn: int, level: int) -> int:
        """The index of ``vpn`` in a table of ``level`` (0 is the root)."""
        return (vpn >> self.shift(level)) & ((1 << self.bits_per_level[level]) - 1)

    def leaf_page_size(self, level: int) -> int:
        """Bytes mapped by a leaf at ``level``: the base page at the last level,
        2 MiB one level up on x86-64, 1 GiB two levels up."""
        return self.page_size << self.shift(level)

    @property
    def huge_page_size(self) -> int:
        """Bytes of a leaf one level above the last (2 MiB on x86-64)."""
        return self.leaf_page_size(self.levels - 2)
