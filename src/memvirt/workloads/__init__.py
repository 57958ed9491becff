"""Workloads: synthetic page-access streams and models of what pages hold.

:mod:`memvirt.workloads.synthetic` generates access streams (uniform, Zipf,
scans, loops, hot/cold sets, strides, mixes and phases) as :class:`Trace`
chunks of page numbers, and :mod:`memvirt.workloads.ahead` draws a stream's
next accesses in a thread of their own while the simulator runs the ones
before; :mod:`memvirt.workloads.contents` says what each page
of a virtual machine holds (a 64-bit content token) and how well it
compresses, for content-based page sharing and memory compression.
"""

from memvirt.workloads.contents import ContentModel, assign
from memvirt.workloads.synthetic import (
    KINDS,
    HotCold,
    Loop,
    Mix,
    MixComponent,
    Phase,
    Phases,
    Sequential,
    Stream,
    Stride,
    Uniform,
    WorkloadError,
    WorkloadSpec,
    Zipf,
    footprint_pages,
    generate,
    generate_all,
    page_range,
    parse_workload,
)

__all__ = [
    "KINDS",
    "ContentModel",
    "HotCold",
    "Loop",
    "Mix",
    "MixComponent",
    "Phase",
    "Phases",
    "Sequential",
    "Stream",
    "Stride",
    "Uniform",
    "WorkloadError",
    "WorkloadSpec",
    "Zipf",
    "assign",
    "footprint_pages",
    "generate",
    "generate_all",
    "page_range",
    "parse_workload",
]
