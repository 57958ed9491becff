"""The data plane's compiled kernels are thrown away when any of its sources changes.

numba checks a cached kernel against the file that defines it, but the kernels inline
helpers and read field offsets from the package's other files: a kernel compiled for
an older layout must not be loaded (it would read and write the wrong memory).
"""

from __future__ import annotations

from pathlib import Path

from memvirt.dataplane.jit import STAMP, drop_stale_kernels


def package(tmp_path: Path) -> Path:
    pkg = tmp_path / "dataplane"
    pkg.mkdir()
    (pkg / "native.py").write_text("def f():\n    return LAYOUT\n")
    (pkg / "layout.py").write_text("LAYOUT = 1\n")
    (pkg / "__pycache__").mkdir()
    return pkg


def cache(pkg: Path, name: str) -> Path:
    path = pkg / "__pycache__" / name
    path.write_bytes(b"compiled")
    return path


def test_kernels_of_changed_sources_are_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    pkg = package(tmp_path)
    drop_stale_kernels(pkg)
    index = cache(pkg, "native.f-1.py311.nbi")
    data = cache(pkg, "native.f-1.py311.1.nbc")
    bytecode = cache(pkg, "native.cpython-311.pyc")
    drop_stale_kernels(pkg)  # nothing changed: the kernels stay
    assert index.exists() and data.exists()
    # a change in another file of the package makes native's kernels stale
    (pkg / "layout.py").write_text("LAYOUT = 2\n")
    drop_stale_kernels(pkg)
    assert not index.exists() and not data.exists()
    assert bytecode.exists()  # Python's own cache is not numba's to drop
    assert (pkg / "__pycache__" / STAMP).read_text() != ""


def test_a_cache_without_a_stamp_is_taken_as_stale(tmp_path: Path) -> None:
    pkg = package(tmp_path)
    index = cache(pkg, "native.f-1.py311.nbi")
    drop_stale_kernels(pkg)
    assert not index.exists()
    assert (pkg / "__pycache__" / STAMP).exists()
