"""Property tests: random overcommitted machines keep every page, whatever reclaims them.

Hypothesis draws small hosts with a few VMs, tiny swap devices, every combination of the
reclamation techniques and blocking, both host victim choices and both paging modes, and
runs each with the check mode on (run.check): after every quantum each page touched reads what was
last written to it, every real page in use has a host copy holding its content, and the
host's frames, swap slots, shared frames and balloon pages are accounted for exactly once.
Any violation raises, so a run that ends is a run that lost nothing. Out-of-memory kills
(a guest killing a process, the host stopping a VM) are allowed: the others go on.

Half the machines also get injected faults (docs/reliability.md): host and guest swap
devices that fail reads and writes or fill up, a VM that crashes, a host that loses
memory; the check runs after each, too.

MEMVIRT_PROPERTY_EXAMPLES=500 pytest tests/test_properties.py runs more examples.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from memvirt.config import scenario_from_dict
from memvirt.engine.scenario import run
from memvirt.hypervisor.reclamation import STUCK_REASON

EXAMPLES = int(os.environ.get("MEMVIRT_PROPERTY_EXAMPLES", "12"))

workloads = st.one_of(
    st.builds(
        lambda pages, alpha, w: {
            "kind": "zipf",
            "pages": pages,
            "alpha": alpha,
            "write_fraction": w,
        },
        st.integers(256, 1024),
        st.sampled_from([0.5, 0.9, 1.2]),
        st.sampled_from([0.0, 0.3, 1.0]),
    ),
    st.builds(
        lambda pages, w: {"kind": "uniform", "pages": pages, "write_fraction": w},
        st.integers(256, 1024),
        st.sampled_from([0.1, 0.5]),
    ),
    st.builds(
        lambda pages, w: {
            "kind": "phases",
            "repeat": False,
            "phases": [
                {
                    "accesses": pages,
                    "workload": {"kind": "sequential", "pages": pages, "write_fraction": w},
                },
                {"accesses": 1, "workload": {"kind": "loop", "length": 32}},
            ],
        },
        st.integers(256, 1024),
        st.sampled_from([0.0, 1.0]),
    ),
)


@st.composite
def machines(draw: Any) -> dict[str, Any]:
    n_vms = draw(st.integers(1, 4))
    vms = []
    for k in range(n_vms):
        memory_mib = draw(st.integers(2, 6))
        vms.append(
            {
                "name": f"vm{k}",
                "memory": f"{memory_mib}MiB",
                "balloon": draw(st.booleans()),
                "guest": {
                    "policy": draw(st.sampled_from(["lru", "clock", "fifo", "random"])),
                    "swap": f"{draw(st.integers(0, 8))}MiB",
                    "os_memory": f"{draw(st.sampled_from([0, 1]))}MiB",
                    "image": "os",
                    "content": {"zero_fraction": 0.2, "image_fraction": 0.3},
                },
                "processes": [
                    {
                        "name": "p",
                        "memory": "4MiB",
                        "rate": 1e6,
                        "workload": draw(workloads),
                    }
                ],
            }
        )
    total = sum(int(vm["memory"].removesuffix("MiB")) for vm in vms)
    # mostly overcommitted: the processes touch up to 4 MiB each
    host_mib = draw(st.integers(max(2, total // 3), max(3, total // 2 + 2)))
    everything = ["sharing", "ballooning", "compression", "swapping", "blocking"]
    techniques = {
        state: draw(st.lists(st.sampled_from(everything), unique=True))
        for state in ("high", "clear", "soft", "hard", "low")
    }
    faults: dict[str, Any] = {}
    if draw(st.booleans()):
        when = st.sampled_from([0.0, 0.002, 0.005, 0.01, 0.02])
        devices = draw(st.lists(st.sampled_from(["host", *(vm["name"] for vm in vms)]),
                                unique=True, max_size=2))  # fmt: skip
        faults["swap"] = [
            {
                "device": device,
                "read_error_rate": draw(st.sampled_from([0.0, 0.001, 0.02])),
                "write_error_rate": draw(st.sampled_from([0.0, 0.05, 0.5, 1.0])),
                "full_at": draw(st.none() | when),
            }
            for device in devices
        ]
        if draw(st.booleans()):
            faults["vm_crash"] = [{"vm": draw(st.sampled_from(vms))["name"], "at": draw(when)}]
        if draw(st.booleans()):
            quarter = max(1, host_mib * 256 // 4)  # pages
            amount = draw(st.integers(1, quarter)) * 4
            faults["memory_loss"] = [{"at": draw(when), "amount": f"{amount}KiB"}]
    return {
        "faults": faults,
        "host": {"memory": f"{host_mib}MiB"},
        "hypervisor": {
            "paging": draw(st.sampled_from(["nested", "shadow"])),
            "host_swap": {"size": f"{draw(st.integers(1, 32))}MiB"},
            "swap_victim": draw(st.sampled_from(["random", "lru"])),
            "control_period": 0.005,
            "sharing": {"scan_period": 0.05, "inter_vm": draw(st.booleans())},
            "allocation": {"period": 0.02, "sample_period": 0.05},
            "states": {"techniques": techniques},
        },
        "vms": vms,
        "run": {
            "accesses": draw(st.integers(5_000, 30_000)),
            "seed": draw(st.integers(0, 1000)),
            "quantum_accesses": 500,
            "check": True,
        },
    }


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(machines())
def test_no_page_is_lost_or_counted_twice_on_any_small_machine(data: dict[str, Any]) -> None:
    summary = run(scenario_from_dict(data, source="property")).summary
    killed = sum(p["killed"] is not None for vm in summary["vms"] for p in vm["processes"])
    event(f"processes killed: {min(killed, 2)}{'+' if killed > 2 else ''}")
    event(f"host swapped: {any(vm['host_swap_outs'] for vm in summary['vms'])}")
    event(f"ballooned: {any(vm['balloon_pages_max'] for vm in summary['vms'])}")
    event(f"shared: {any(vm['shared_pages_max'] for vm in summary['vms'])}")
    event(f"compressed: {any(vm['compressed_pages_max'] for vm in summary['vms'])}")
    event(f"blocked: {any(vm['blocked_seconds'] for vm in summary['vms'])}")
    stuck = any(vm["stop_reason"] == STUCK_REASON for vm in summary["vms"])
    event(f"a VM stopped, every running VM blocked: {stuck}")
    injected = summary.get("faults", {"injected": [], "swap_devices": {}})
    errors = sum(sum(d.values()) for d in injected["swap_devices"].values())
    event(f"faults: {len(injected['injected'])} timed, swap errors: {min(errors, 1)}")
    # the run ended under the check: nothing was lost; and the books balance at the end
    assert summary["host"]["free_pages"] >= 0
    for vm in summary["vms"]:
        assert vm["host_resident_pages"] + vm["host_swapped_pages"] <= vm["real_pages"]
