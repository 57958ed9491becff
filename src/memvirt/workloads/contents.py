"""Page contents: what each page of a virtual machine holds, and how well it compresses.

The simulator never stores page bytes. A page's contents are a 64-bit *content
token*: two pages hold the same bytes exactly when their tokens are equal. That
is all content-based page sharing needs (a hypervisor may back pages with
identical tokens by one frame, copy-on-write), and a *compressed size* per
token is all memory compression needs.

Where identical pages come from. Waldspurger ("Memory Resource Management in
VMware ESX Server", OSDI 2002, section 4) found two main sources of sharing:
pages filled with zeros, and pages identical across virtual machines that
run the same guest operating system and applications (kernel text, shared
libraries, cached files of the same image). Some pages also repeat within
one machine. So a :class:`ContentModel` puts each page of a VM in one of
four classes:

zero (``zero_fraction``)
    all zeros: token 0, in every VM.
image (``image_fraction``)
    identical in every VM that runs the same OS image: the token depends only
    on the image's name and the page number, so two VMs with the same
    ``image`` hold the same image pages at the same page numbers. (Real
    guests place them at different addresses; content-based sharing matches
    contents wherever they are, so the placement changes nothing it counts.)
duplicate (``duplicate_fraction``)
    repeated within one VM: each such page holds one of the VM's
    ``duplicate_pool`` distinct contents; other VMs have other pools.
unique (the rest)
    the token depends on the VM, the page and how many times it was written.

A page's class is a hash of (image or VM, page number), not a draw from a
sequential generator: any set of pages can be asked about, in any order, and
gets the same answer.

Writes. ``version`` counts the writes to a page (0: as first loaded). A
write changes a unique page's token (each version its own token), and makes
an image page unique: the guest's private copy no longer matches the image,
so a write breaks sharing. A duplicate page stays in its VM's pool (a
version may pick another pool entry), and a zero page stays zero: its class
says the program keeps it zeroed (a cleared buffer, memory the guest zeroes
when it frees it).

Tokens never collide across classes: token 0 is the zero page, and every
other token carries its class in bits 60-61 (image 1, duplicate 2, unique 3).
Tokens with those bits clear and not 0 are left to other sources (the
kernel's own per-write counter), so they cannot meet these either. Within a
class, image and unique tokens are 60-bit hashes: two different pages share
a token by accident with probability about n**2 / 2**61 for n pages (below
1e-4 for ten million), the same argument Waldspurger makes for ESX's 64-bit
page hashes. Duplicate tokens are distinct within a VM by construction.

Compression. ESX compresses a page it would otherwise swap, and keeps the
compressed copy only if it fits in 2 KiB (half a page), so that two
compressed pages share one frame; otherwise the page goes to swap (VMware,
"Understanding Memory Resource Management in VMware vSphere 5.0", 2011).
Here a page's compressed size is a function of its token (equal contents,
equal size): zero pages compress to ``zero_compressed_size`` bytes (0 by
default: zram and zswap keep a same-filled page as its fill value alone);
of the other pages a ``compressible_fraction`` compress to a size spread
uniformly over ``[min_compressed, 2048]`` bytes, the rest to
``(2048, 4096]``, which does not fit the 2 KiB rule.
"""

from __future__ import annotations

import hashlib
from typing import Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: ESX keeps a compressed page only if it fits in this many bytes (half a 4 KiB page).
COMPRESSION_LIMIT = 2048
PAGE_BYTES = 4096

#: Class codes, as :func:`classify` and :func:`token_class` return them.
CLASS_ZERO = 0
CLASS_IMAGE = 1
CLASS_DUPLICATE = 2
CLASS_UNIQUE = 3
#: A non-zero token from another source (not made by this model).
CLASS_OTHER = 4

#: A token's class sits in these bits (never bit 63: tokens are non-negative int64).
CLASS_SHIFT = 60
_LOW_BITS = (1 << CLASS_SHIFT) - 1
#: Largest duplicate pool: the pool index is the token's low 16 bits.
MAX_DUPLICATE_POOL = 1 << 16

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment, 2**64 / golden ratio

# one salt per question asked of the hash, so the answers are independent
_SALT_CLASS = 0x243F6A8885A308D3
_SALT_IMAGE = 0x13198A2E03707344
_SALT_POOL = 0xA4093822299F31D0
_SALT_UNIQUE = 0x082EFA98EC4E6C89
_SALT_SIZE = 0x452821E638D01377
_SALT_DUP_ID = 0xBE5466CF34E90C6C


class ContentModel(BaseModel):
    """What the pages of a VM hold: fractions of zero, image, duplicate and unique pages,
    and how well they compress.

    The defaults describe a VM with no sharing at all and half its pages compressible to
    2 KiB or less: an illustration, not a measurement; scenarios say what they assume.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    zero_fraction: float = Field(0.0, ge=0.0, le=1.0, description="pages that are all zeros")
    image_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="pages identical in every VM of the same OS image"
    )
    duplicate_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="pages repeated within the VM"
    )
    duplicate_pool: int = Field(
        64, ge=1, le=MAX_DUPLICATE_POOL, description="distinct contents of the duplicate pages"
    )
    compressible_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="non-zero pages that compress to 2 KiB or less"
    )
    min_compressed: int = Field(
        256, ge=1, le=COMPRESSION_LIMIT, description="smallest compressed size of a non-zero page"
    )
    zero_compressed_size: int = Field(0, ge=0, le=PAGE_BYTES, description="bytes of a zero page")

    @model_validator(mode="after")
    def _fractions_fit(self) -> Self:
        total = self.zero_fraction + self.image_fraction + self.duplicate_fraction
        if total > 1.0 + 1e-12:
            raise ValueError(
                f"zero_fraction + image_fraction + duplicate_fraction = {total:g}; "
                "expected at most 1 (the rest of the pages are unique)"
            )
        return self

    @property
    def unique_fraction(self) -> float:
        """The pages that are none of zero, image and duplicate."""
        total = self.zero_fraction + self.image_fraction + self.duplicate_fraction
        return max(0.0, 1.0 - total)


# ------------------------------------------------------------------------ hashing


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (Steele et al., OOPSLA 2014) on uint64 values: a bijection whose
    every output bit depends on every input bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = x ^ (x >> np.uint64(31))
    return out


def _mix_int(x: int) -> int:
    """:func:`_mix` on one Python int."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _hash(key: int, x: np.ndarray) -> np.ndarray:
    """The x-th output of splitmix64 seeded with ``key``, for each x (uint64)."""
    return _mix(x * np.uint64(_GOLDEN) + np.uint64(key & _MASK64))


def _key(*parts: int) -> int:
    """One 64-bit key from several integers."""
    k = 0
    for part in parts:
        k = _mix_int(k ^ _mix_int(part + _GOLDEN))
    return k


def image_key(image: str) -> int:
    """A stable 64-bit key for an image name (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(image.encode(), digest_size=8).digest(), "little")


def _unit(h: np.ndarray) -> np.ndarray:
    """uint64 hashes to floats uniform in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _as_pages(pages: np.ndarray | object) -> np.ndarray:
    p = np.atleast_1d(np.asarray(pages))
    if p.dtype.kind not in "iu":
        raise ValueError(f"pages must be integers, got an array of {p.dtype}")
    if p.size and int(p.min()) < 0:
        raise ValueError(f"pages must be non-negative, got {int(p.min())}")
    return p.astype(np.uint64)


# ------------------------------------------------------------------------- the API


def classify(
    model: ContentModel, pages: np.ndarray, *, vm_seed: int, image: str | None
) -> np.ndarray:
    """The class (CLASS_ZERO, CLASS_IMAGE, CLASS_DUPLICATE, CLASS_UNIQUE) of each page as
    first loaded, as uint8. With ``image=None`` the image share of the pages is unique."""
    p = _as_pages(pages)
    fi = model.image_fraction
    # image pages: decided by the image alone, so every VM of that image agrees
    decider = image_key(image) if image is not None else _key(vm_seed, 1)
    in_image = _unit(_hash(_key(decider, _SALT_IMAGE), p)) < fi
    # the other classes among the remaining pages, in proportions that make the totals right
    rest = 1.0 - fi
    fz = model.zero_fraction / rest if rest > 0.0 else 0.0
    fd = model.duplicate_fraction / rest if rest > 0.0 else 0.0
    u = _unit(_hash(_key(vm_seed, _SALT_CLASS), p))
    classes = np.full(p.shape, CLASS_UNIQUE, dtype=np.uint8)
    classes[u < fz + fd] = CLASS_DUPLICATE
    classes[u < fz] = CLASS_ZERO
    classes[in_image] = CLASS_IMAGE if image is not None else CLASS_UNIQUE
    return classes


def assign(
    model: ContentModel,
    pages: np.ndarray | int,
    *,
    vm_seed: int,
    image: str | None,
    version: np.ndarray | int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The content token (int64) and compressed size in bytes (int32) of each page of the VM
    ``vm_seed`` running ``image``, after ``version`` writes to it (per page, or one for all).

    Deterministic: the same arguments give the same answer for each page, whatever the other
    pages asked and their order.
    """
    p = _as_pages(pages)
    v = np.atleast_1d(np.asarray(version))
    if v.dtype.kind not in "iu" or (v.size and int(v.min()) < 0):
        raise ValueError("version must be a non-negative integer (the number of writes)")
    if v.size != 1 and v.shape != p.shape:
        raise ValueError(
            f"version must be one integer or one per page: {v.size} versions for {p.size} pages"
        )
    v = np.broadcast_to(v.astype(np.uint64), p.shape)
    classes = classify(model, p, vm_seed=vm_seed, image=image)
    written = v > 0
    low = np.uint64(_LOW_BITS)

    # unique: a token per (VM, page, version); a written image page becomes unique
    unique_key = _key(vm_seed, _SALT_UNIQUE)
    unique_low = _hash(unique_key, _mix(v * np.uint64(_GOLDEN) ^ p)) & low
    tokens = unique_low | np.uint64(CLASS_UNIQUE << CLASS_SHIFT)

    if image is not None:
        image_low = _hash(_key(image_key(image), _SALT_IMAGE + 1), p) & low
        is_image = (classes == CLASS_IMAGE) & ~written
        tokens[is_image] = image_low[is_image] | np.uint64(CLASS_IMAGE << CLASS_SHIFT)

    is_dup = classes == CLASS_DUPLICATE
    if is_dup.any():
        pick = _hash(_key(vm_seed, _SALT_POOL), _mix(v[is_dup] * np.uint64(_GOLDEN) ^ p[is_dup]))
        tokens[is_dup] = duplicate_tokens(model, vm_seed)[
            (pick % np.uint64(model.duplicate_pool)).astype(np.int64)
        ].astype(np.uint64)

    tokens[classes == CLASS_ZERO] = 0
    out = tokens.astype(np.int64)
    return out, compressed_size(model, out)


def duplicate_tokens(model: ContentModel, vm_seed: int) -> np.ndarray:
    """The VM's pool of ``duplicate_pool`` distinct duplicate-page tokens (int64)."""
    vm_part = _mix_int(_key(vm_seed, _SALT_DUP_ID)) & ((1 << (CLASS_SHIFT - 16)) - 1)
    base = (CLASS_DUPLICATE << CLASS_SHIFT) | (vm_part << 16)
    return base + np.arange(model.duplicate_pool, dtype=np.int64)


def compressed_size(model: ContentModel, tokens: np.ndarray) -> np.ndarray:
    """The compressed size in bytes (int32) of pages holding ``tokens``: a function of the
    token alone, so equal contents compress equally."""
    t = np.atleast_1d(np.asarray(tokens, dtype=np.int64))
    h = _hash(_SALT_SIZE, t.astype(np.uint64))
    u = _unit(h)  # compressible or not
    s = _unit(_mix(h))  # where in its range
    lo, limit = model.min_compressed, COMPRESSION_LIMIT
    small = lo + np.floor(s * (limit - lo + 1))
    large = limit + 1 + np.floor(s * (PAGE_BYTES - limit))
    sizes: np.ndarray = np.where(u < model.compressible_fraction, small, large).astype(np.int32)
    sizes[t == 0] = model.zero_compressed_size
    return sizes


def token_class(tokens: np.ndarray) -> np.ndarray:
    """The class of each token (uint8): CLASS_ZERO for 0, CLASS_OTHER for tokens this model
    does not make, else the class in the token's bits 60-61."""
    t = np.asarray(tokens, dtype=np.int64)
    classes = ((t >> CLASS_SHIFT) & 3).astype(np.uint8)
    classes[(classes == 0) & (t != 0)] = CLASS_OTHER
    return classes
