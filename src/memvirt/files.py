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
