"""How data-plane functions are compiled.

Every kernel is ``numba.njit`` with ``cache=True`` (compiled once, then
loaded from ``__pycache__``) and without numba's reference counting
(``_nrt=False``): data-plane functions only index arrays handed to them and
allocate nothing, and reference counting each array of the state tuple at
every call cost more than the simulation itself (measured: 1.4M to 4.8M
faults per second). Helpers on the per-fault path are also inlined into
their callers (``inline="always"``): passing the state tuple to a call
copies it (docs/benchmarks.md gives the figures: 4.8M faults per second
before inlining, 19-26M after, in benchmarks/bench_faults.py).

numba checks a cached kernel against its own source file only, but a kernel
here inlines helpers and reads layout constants from the package's other
files: change ``layout.py`` and a kernel of ``sharing.py`` would load from
the cache compiled for the old field offsets, and read or write the wrong
memory. So the first import of this module compares a digest of every
source file of the package with the one stamped beside the cache, and when
they differ throws the package's cached kernels away (they compile again on
first use). This covers numba's three cache places: ``__pycache__`` beside
the sources, ``NUMBA_CACHE_DIR``, and the per-user cache numba falls back to.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import numba
from numba.core.caching import CacheImpl

#: The file beside a cache that names the sources its kernels were compiled from.
STAMP = "memvirt-dataplane.stamp"


def sources_digest(package: Path) -> str:
    """A digest of every Python source of the data-plane package."""
    digest = hashlib.sha256()
    for source in sorted(package.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_dirs(package: Path) -> list[Path]:
    """The directories numba may keep the package's compiled kernels in."""

    def probe() -> None:  # locators want a function; only its file matters
        pass

    found = []
    locator_classes: list[Any] = list(CacheImpl._locator_classes)
    for locator_class in locator_classes:
        try:
            locator = locator_class.from_function(probe, str(package / "native.py"))
        except Exception:  # a locator that does not apply here
            locator = None
        if locator is not None:
            found.append(Path(locator.get_cache_path()))
    return found


def drop_stale_kernels(package: Path) -> None:
    """Remove the package's cached kernels wherever their stamp is not the sources'."""
    digest = sources_digest(package)
    modules = tuple(f"{source.stem}." for source in package.glob("*.py"))
    for folder in cache_dirs(package):
        stamp = folder / STAMP
        try:
            if stamp.read_text() == digest:
                continue
        except OSError:
            pass
        if not folder.is_dir():
            continue
        try:
            for cached in folder.iterdir():
                if cached.suffix in (".nbi", ".nbc") and cached.name.startswith(modules):
                    cached.unlink(missing_ok=True)
            tmp = folder / f"{STAMP}.{os.getpid()}"
            tmp.write_text(digest)
            tmp.replace(stamp)
        except OSError:
            pass  # a cache we cannot write to is one numba cannot write to either


drop_stale_kernels(Path(__file__).resolve().parent)

F = TypeVar("F", bound=Callable[..., Any])

# numba's stubs do not list the private _nrt option; call njit untyped
_njit: Any = numba.njit


def kernel(fn: F) -> F:
    """Compile ``fn`` for the data plane."""
    options: dict[str, Any] = {"cache": True, "_nrt": False}
    return cast(F, _njit(**options)(fn))


def inlined(fn: F) -> F:
    """Compile ``fn`` for the data plane, inlined wherever it is called."""
    options: dict[str, Any] = {"cache": True, "inline": "always", "_nrt": False}
    return cast(F, _njit(**options)(fn))
