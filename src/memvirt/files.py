"""Writing output files atomically: nothing a reader (or an interrupted run) sees is half
written.

Every output is written to a temporary file in the same directory and renamed over its
target: on POSIX a rename within a file system is atomic, so a reader finds the old file
or the new one, never a mix. The temporary file is removed if the write fails, and the
new file gets the mode a plain ``open()`` would give it (``mkstemp`` makes it private).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def output_dir_problem(path: Path) -> str | None:
    """Why outputs could not be written into the directory ``path`` (made when missing, with
    its parents), or None. Commands ask before they run, so that a long run's results are
    not lost to a bad ``--out`` at the end; nothing is made here."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        if existing.is_symlink():  # to nothing: a directory cannot be made in its place
            return f"cannot make the directory: {existing} is a broken symbolic link"
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            return "a file of that name exists, not a directory"
        return f"cannot make the directory: {existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == path:
            return "the directory cannot be written to"
        return f"cannot make the directory: {existing} cannot be written to"
    return None


def output_file_problem(path: Path) -> str | None:
    """Why a file could not be written at ``path`` (atomically, beside it: its directory must
    exist), or None; asked before the work whose result it is."""
    if path.is_dir():
        return "a directory of that name exists"
    folder = path.parent
    if not folder.exists():
        return f"cannot write the file: there is no directory {folder}"
    if not folder.is_dir():
        return f"cannot write the file: {folder} is not a directory"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write the file: {folder} cannot be written to"
    return None


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_output(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` write a temporary file beside ``path``, then rename it to ``path``."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_output(path, lambda tmp: tmp.write_bytes(data))


def atomic_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    """Write ``data`` to ``path`` as indented JSON (and a final newline), atomically."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys) + "\n"
    atomic_write(path, text.encode("utf-8"))
