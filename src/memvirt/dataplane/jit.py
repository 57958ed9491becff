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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

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
