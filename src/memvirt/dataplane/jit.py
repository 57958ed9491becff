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
from llvmlite import binding, ir  # type: ignore[import-untyped]
from numba.core import cgutils, types
from numba.core.caching import CacheImpl
from numba.extending import intrinsic

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
    options: dict[str, Any] = {"cache": True, "_nrt": False, "nogil": True}
    return cast(F, _njit(**options)(fn))


def inlined(fn: F) -> F:
    """Compile ``fn`` for the data plane, inlined wherever it is called."""
    options: dict[str, Any] = {"cache": True, "inline": "always", "_nrt": False, "nogil": True}
    return cast(F, _njit(**options)(fn))


# llvm.prefetch's name carries its pointer type: opaque pointers from LLVM 15 on
_PREFETCH = "llvm.prefetch.p0" if binding.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"

_cg: Any = cgutils  # numba's code-generation helpers carry no annotations


def _prefetch_codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
    array_type = sig.args[0]
    view = context.make_array(array_type)(context, builder, args[0])
    where = [
        context.cast(builder, a, t, types.intp) for a, t in zip(args[1:], sig.args[1:], strict=True)
    ]
    pointer = _cg.get_item_pointer(context, builder, array_type, view, where, wraparound=False)
    byte_pointer = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    function = _cg.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), _PREFETCH
    )
    # read (0), keep in all cache levels (3), data cache (1)
    hints = [ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
    builder.call(function, [builder.bitcast(pointer, byte_pointer), *hints])
    return context.get_dummy_value()


def _prefetch_typing(typingctx: Any, array: Any, index: Any) -> Any:
    """Hint the CPU to load ``array[index]`` of a 1-D array into the cache (a read, kept in
    every cache level). It changes no state and cannot fault: an index out of bounds is
    harmless."""
    if not isinstance(array, types.Array) or array.ndim != 1:
        return None
    return types.void(array, index), _prefetch_codegen


def _prefetch2_typing(typingctx: Any, array: Any, row: Any, col: Any) -> Any:
    """:func:`prefetch` for element ``array[row, col]`` of a 2-D array."""
    if not isinstance(array, types.Array) or array.ndim != 2:
        return None
    return types.void(array, row, col), _prefetch_codegen


#: ``prefetch(array, i)`` and ``prefetch2(array, row, col)`` in a kernel (numba only): a
#: cache hint for an element read soon, where the out-of-order core would meet its miss
#: too late to overlap it with others
prefetch: Any = intrinsic(_prefetch_typing)
prefetch2: Any = intrinsic(_prefetch2_typing)


def _lowest_bit_codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
    i64 = ir.IntType(64)
    word = context.cast(builder, args[0], sig.args[0], types.int64)
    function = _cg.get_or_insert_function(
        builder.module, ir.FunctionType(i64, [i64, ir.IntType(1)]), "llvm.cttz.i64"
    )
    # zero is not poison: cttz(0) is 64 (callers only ask about a word with a bit set)
    return builder.call(function, [word, ir.Constant(ir.IntType(1), 0)])


def _lowest_bit_typing(typingctx: Any, word: Any) -> Any:
    """The index of the lowest set bit of a 64-bit ``word`` (64 when none is set): one
    instruction (``tzcnt``) where a loop over the bits takes up to 64 steps."""
    if not isinstance(word, types.Integer):
        return None
    return types.int64(word), _lowest_bit_codegen


#: ``lowest_bit(word)`` in a kernel (numba only): the index of the lowest bit set
lowest_bit: Any = intrinsic(_lowest_bit_typing)
