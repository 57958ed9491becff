"""Fixtures for every test.

memvirt reads a few settings from the environment (``MEMVIRT_ONE_THREAD``,
``MEMVIRT_NO_PRECOMPILE``, ...). A test that sets one and leaves it set
changes how every test after it runs, silently (one such leak once kept the
tests after it to one thread), so each test must leave them as it found them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def _memvirt_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("MEMVIRT_")}


@pytest.fixture(autouse=True)
def _environment_left_as_found() -> Iterator[None]:
    before = _memvirt_settings()
    yield
    after = _memvirt_settings()
    assert after == before, f"the test left memvirt's settings changed: {before} -> {after}"
