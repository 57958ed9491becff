"""Scenarios that ship with memvirt, as package data.

``demo.toml`` is what ``memvirt demo`` runs: three VMs on a host overcommitted
1.5 times, once with balloons and once with hypervisor swapping only. It is
read with :mod:`importlib.resources` (:func:`scenario_path`), so it is found in
an installed package as well as in a source checkout.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

#: The file name of the demo scenario in this package.
DEMO = "demo.toml"


def scenario_path(name: str = DEMO) -> Traversable:
    """The packaged scenario ``name`` (use :func:`importlib.resources.as_file` for a path)."""
    return resources.files(__name__).joinpath(name)


__all__ = ["DEMO", "scenario_path"]
