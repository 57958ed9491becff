"""The hypervisor's control plane: the decisions a hypervisor takes now and then,
not on every memory access.

A hypervisor that overcommits memory lets its VMs' real memories add up to
more than the host's physical memory, and must take frames back when they
run short. Two questions drive that:

- *When*, and with which techniques: the host's free-memory state
  (:mod:`memvirt.hypervisor.states`), ESXi's high / clear / soft / hard / low,
  set by free memory against a reserve called minFree, each state enabling
  cheaper or costlier reclamation (page sharing, ballooning, compression,
  host swapping, blocking allocations).
- *From whom*: the allocation policy (:mod:`memvirt.hypervisor.allocation`),
  proportional sharing by each VM's shares within its reservation and limit,
  with an idle memory tax that charges more for pages a VM does not use, an
  estimate of each VM's active memory by sampling, and min-funded
  revocation, which takes pages from the VM paying the fewest shares per page.

These are plain Python policies over numbers of pages; the simulator
(:mod:`memvirt.engine.virtual`) applies them to VMs. Sources: Waldspurger,
"Memory Resource Management in VMware ESX Server", OSDI 2002; VMware vSphere
Resource Management guide.
"""

from memvirt.hypervisor.allocation import (
    DEFAULT_IDLE_TAX,
    ActiveEstimator,
    Claim,
    entitlements,
    idle_cost,
    revoke,
    shares_per_page,
)
from memvirt.hypervisor.states import (
    DEFAULT_TECHNIQUES,
    DEFAULT_THRESHOLDS,
    STATES,
    TECHNIQUES,
    FreeMemoryStates,
    min_free_bytes,
)

__all__ = [
    "DEFAULT_IDLE_TAX",
    "DEFAULT_TECHNIQUES",
    "DEFAULT_THRESHOLDS",
    "STATES",
    "TECHNIQUES",
    "ActiveEstimator",
    "Claim",
    "FreeMemoryStates",
    "entitlements",
    "idle_cost",
    "min_free_bytes",
    "revoke",
    "shares_per_page",
]
