"""A page's history, for the check mode's reports.

When the check mode finds a page that does not read what was last written to
it, or that is not accounted for exactly once, the page and the step are
known, but rarely the cause: that lies in the steps before. Keeping every
page's history during every run would cost memory in proportion to the run.
memvirt instead uses its determinism: the same scenario and seed give the
same run, bit for bit. So when a check fails, :func:`with_history` runs the
scenario again from the start with a *watch* on that one page, noting its
state after every step (a quantum of a process, a hypervisor control step,
an injected fault) that changed it, until the check fails again; the error
is then raised with that history appended.

A page's state, in words: natively, its page-table entry (frame and token,
swap slot and token, or not mapped); with VMs, where the guest keeps it (a
guest frame, that is a real page, or a guest swap slot) and where the host
keeps that real page (a frame of its own, a shared frame, a swap slot, the
compression cache), with the content tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memvirt.dataplane.layout import PTE_PRESENT, PTE_SHIFT, PTE_SWAPPED
from memvirt.kernel.kernel import Kernel, describe_pte

if TYPE_CHECKING:
    from memvirt.config import Scenario

#: The most history lines an error carries (the earliest are dropped, and counted).
HISTORY_LINES = 40


@dataclass(frozen=True)
class PageRef:
    """A page the check found wrong: a process's virtual page (``pid``, ``vpn``), or, with
    ``real_page``, a real page of VM ``vm``."""

    vm: str | None = None
    pid: int | None = None
    vpn: int | None = None
    real_page: int | None = None


def _entry_state(kernel: Kernel, pid: int, vpn: int) -> tuple[str, int | None]:
    """The leaf entry of ``vpn`` in ``pid``'s table in words, and the frame it maps."""
    if not kernel.alive(pid):
        return "its process has ended", None
    walk = kernel.walk(pid, vpn << kernel.geometry.offset_bits)
    if not walk.steps:
        return "not mapped", None
    entry = walk.steps[-1].entry
    if walk.pfn is not None:
        token = kernel.frames.token(walk.pfn)
        return f"frame {walk.pfn}, token {token:#x}", walk.pfn
    if entry & PTE_SWAPPED:
        slot = entry >> PTE_SHIFT
        size = int(kernel.swap.csize[slot])
        where = f"compressed ({size} bytes)" if size > 0 else "swap slot"
        return f"{where} {slot}, token {int(kernel.swap.token[slot]):#x}", None
    if not entry & PTE_PRESENT and walk.steps[-1].level < kernel.geometry.levels - 1:
        return "not mapped (no table below)", None
    return describe_pte(entry), None


@dataclass
class PageWatch:
    """Notes the state of one page after each step that changed it."""

    machine: Any
    page: PageRef
    lines: list[str] = field(default_factory=list)
    dropped: int = 0
    last: str | None = None

    def describe(self) -> str:
        m, p = self.machine, self.page
        if p.vm is None:
            assert p.pid is not None and p.vpn is not None
            return _entry_state(m.kernel, p.pid, p.vpn)[0]
        vm = next(v for v in m.vms if v.name == p.vm)
        real = p.real_page
        parts = []
        if p.pid is not None and p.vpn is not None:
            text, real = _entry_state(vm.guest, p.pid, p.vpn)
            parts.append(f"guest: {text}")
        elif real is not None:
            g = vm.guest.frames
            owner = g.owner(real)
            parts.append(
                "guest: free" if owner < 0
                else f"guest: page {g.vpn(real):#x} of pid {owner}, token {g.token(real):#x}"
            )  # fmt: skip
        if real is not None:
            host_text, frame = _entry_state(m.host, vm.host_pid, real)
            if frame is not None and m.host.frames.owner(frame) == m.hypervisor_pid:
                host_text = "shared " + host_text
            parts.append(f"host: real page {real}: {host_text}")
        return "; ".join(parts)

    def observe(self, now_ns: float, step: str) -> None:
        """After ``step`` at ``now_ns``: note the page's state if it changed."""
        state = self.describe()
        if state == self.last:
            return
        self.last = state
        self.lines.append(f"  {now_ns / 1e9:.6f} s, {step}: {state}")
        if len(self.lines) > HISTORY_LINES:
            del self.lines[0]
            self.dropped += 1

    def text(self) -> str:
        head = "history of the page (its state after each step that changed it"
        head += f"; {self.dropped} earlier changes not shown):" if self.dropped else "):"
        return "\n".join([head, *self.lines])


def with_history(scenario: Scenario, err: AssertionError, page: PageRef | None) -> AssertionError:
    """``err`` (a check failure about ``page``) with the page's history: the scenario run
    again, watched, to the same failure. Without a page, ``err`` as it is."""
    from memvirt.engine.scenario import build

    if page is None:
        return err
    machine = build(scenario)
    watch = PageWatch(machine, page)
    machine.watch = watch
    try:
        machine.run(seconds=scenario.run.seconds, accesses=scenario.run.accesses)
    except AssertionError:
        pass
    else:  # pragma: no cover - a deterministic run fails again where it failed
        return err
    out = type(err)(f"{err}\n{watch.text()}")
    out.page = page  # type: ignore[attr-defined]
    return out
