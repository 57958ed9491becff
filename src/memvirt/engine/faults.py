"""Injected faults: failing swap devices, crashing VMs, a host that loses memory.

A simulator's numbers are trusted when its memory system is seen to survive
what real ones meet. The ``[faults]`` table of a scenario injects:

- **swap errors** at a rate: a failed *write* leaves the page in memory,
  dirty, and the kernel picks another victim (Linux redirties a page whose
  write-back failed); a failed *read* loses the page's only copy, so its
  process dies of a bus error (Linux's ``do_swap_page`` returns
  ``VM_FAULT_SIGBUS``) — under a hypervisor the process is the VM, which is
  stopped and its memory freed;
- **a swap device filling up** at a simulated time: its free slots are taken
  by something outside the simulation; pages that need a slot then find
  none, and the kernel's out-of-memory killer (or, under a hypervisor,
  the other techniques and then the host's) takes over;
- **a VM crash** at a simulated time: the hypervisor stops the VM and frees
  everything it held (frames, swap slots, its shares of shared frames, its
  compression cache); the other VMs go on;
- **memory loss** at a simulated time: the host's physical memory shrinks,
  as when a memory module fails or memory is taken offline. The lost frames
  are taken as a fault takes a frame — a free one, or one whose page is
  evicted first — and pinned to a pseudo-process that never gives them
  back. When no page can be evicted, processes (natively) or VMs (under a
  hypervisor) are stopped by the out-of-memory killer's rule, the largest
  first, until the loss is taken.

Every fault is recorded (``summary.json``: ``faults``), and the check mode
(``run.check``) checks the machine's accounting right after each one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from memvirt.config import FaultsConfig
from memvirt.kernel.kernel import Kernel


@dataclass(frozen=True)
class Injected:
    """One fault that happened: when, what, where, and what the system did."""

    time_s: float
    kind: str
    target: str
    outcome: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "time_s": self.time_s,
            "kind": self.kind,
            "target": self.target,
            "outcome": self.outcome,
        }


class Faultable(Protocol):
    """What a machine offers the injector."""

    def swap_kernel(self, device: str) -> Kernel:
        """The kernel whose swap device is ``device`` ("host" or a VM's name)."""

    def crash_vm(self, name: str) -> str:
        """Stop VM ``name`` at once; what happened, in words."""

    def lose_memory(self, pages: int) -> str:
        """The host loses ``pages`` frames; what happened, in words."""

    def after_fault(self, step: str) -> None:
        """Called after each fault (the check mode checks the accounting)."""

    def running(self) -> bool:
        """True while some process or vCPU runs."""


def lose_frames(
    kernel: Kernel, owner: int, pages: int, reason: str, settle: Callable[[], None]
) -> tuple[int, list[int]]:
    """Pin ``pages`` frames of ``kernel`` to pseudo-process ``owner`` (memory lost): free
    frames, or frames whose pages are evicted; when nothing more can be evicted, the
    out-of-memory killer ends its victims (for ``reason``) until the frames are had or none
    is left. ``settle`` runs after each step (the layer above catches up: shootdowns).
    Returns the frames taken and the pids killed."""
    got = kernel.take_frames(owner, pages)
    settle()
    killed: list[int] = []
    while got < pages:
        victim = kernel.oom_kill(reason)
        if victim is None:
            break
        killed.append(victim)
        settle()
        got += kernel.take_frames(owner, pages - got)
        settle()
    return got, killed


class FaultInjector:
    """Applies a scenario's faults to a machine: the error rates at once, the timed
    faults as an actor of the event loop (a daemon: it never keeps a run going)."""

    def __init__(self, machine: Faultable, faults: FaultsConfig, page_size: int) -> None:
        self.machine = machine
        self.log: list[Injected] = []
        self.kernels: dict[str, Kernel] = {}
        events: list[tuple[float, int, str, Any]] = []
        for f in faults.swap:
            kernel = machine.swap_kernel(f.device)
            self.kernels[f.device] = kernel
            kernel.set_swap_errors(f.read_error_rate, f.write_error_rate)
            if f.full_at is not None:
                events.append((f.full_at * 1e9, len(events), "swap_full", f.device))
        for c in faults.vm_crash:
            events.append((c.at * 1e9, len(events), "vm_crash", c.vm))
        for loss in faults.memory_loss:
            events.append((loss.at * 1e9, len(events), "memory_loss", loss.amount // page_size))
        events.sort()
        self.events = events
        self.next = 0

    @property
    def first_ns(self) -> float | None:
        """When the first timed fault comes, or None when there is none."""
        return self.events[0][0] if self.events else None

    def turn(self, now: float) -> float | None:
        """Inject every fault due at ``now``; the time to the next one, or None."""
        while self.next < len(self.events) and self.events[self.next][0] <= now:
            _, _, kind, what = self.events[self.next]
            self.next += 1
            if not self.machine.running():
                return None
            self._inject(now, kind, what)
        if self.next == len(self.events):
            return None
        return self.events[self.next][0] - now

    def _inject(self, now: float, kind: str, what: Any) -> None:
        machine = self.machine
        if kind == "swap_full":
            taken = machine.swap_kernel(what).fill_swap()
            target, outcome = f"swap:{what}", f"{taken} free slots taken"
        elif kind == "vm_crash":
            target, outcome = f"vm:{what}", machine.crash_vm(what)
        else:
            target, outcome = "host", machine.lose_memory(int(what))
        self.log.append(Injected(now / 1e9, kind, target, outcome))
        machine.after_fault(f"after the injected fault {kind} on {target} at {now / 1e9:g} s")

    def summary(self) -> dict[str, Any]:
        """The ``faults`` section of summary.json: the timed faults that happened, and the
        swap errors of each failing device."""
        devices = {}
        for device, kernel in self.kernels.items():
            c = kernel.counters()
            devices[device] = {
                "swap_read_errors": c["swap_read_errors"],
                "swap_write_errors": c["swap_write_errors"],
            }
        return {"injected": [e.as_dict() for e in self.log], "swap_devices": devices}
