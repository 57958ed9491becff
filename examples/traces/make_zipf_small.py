"""Write ``zipf-small.npy``: a synthetic trace with a Zipf-skewed page popularity.

200,000 accesses to 20,000 pages of 4 KiB. The page of each access is drawn
from a Zipf distribution of exponent 1.0 (the page of popularity rank k is
drawn with probability proportional to 1/k); ranks are given to pages in a
shuffled order, so popular pages are spread over the address range. Each
access is a write with probability 0.3, and touches a random 8-byte-aligned
offset in its page.

The result is an int64 array of shape (200000, 2): column 0 the byte address
(page * 4096 + offset), column 1 the write flag. The draw is seeded, so
running this again rewrites the same file::

    python examples/traces/make_zipf_small.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ACCESSES = 200_000
PAGES = 20_000
ALPHA = 1.0
WRITE_FRACTION = 0.3
PAGE_SIZE = 4096
SEED = 20240601


def make_trace(seed: int = SEED) -> np.ndarray:
    """The (ACCESSES, 2) int64 array of (address, is_write) rows."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, PAGES + 1, dtype=np.float64) ** ALPHA
    ranks = rng.choice(PAGES, size=ACCESSES, p=weights / weights.sum())
    page_of_rank = rng.permutation(PAGES)
    pages = page_of_rank[ranks].astype(np.int64)
    offsets = rng.integers(0, PAGE_SIZE // 8, size=ACCESSES, dtype=np.int64) * 8
    writes = (rng.random(ACCESSES) < WRITE_FRACTION).astype(np.int64)
    return np.column_stack([pages * PAGE_SIZE + offsets, writes])


def main() -> None:
    out = Path(__file__).with_name("zipf-small.npy")
    np.save(out, make_trace())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
