"""The hypervisor's time series: compact columns that read back as the rows written."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from memvirt.config import scenario_from_dict
from memvirt.engine.scenario import run
from memvirt.hypervisor.reclamation import TIMESERIES_COLUMNS
from memvirt.hypervisor.timeseries import TimeSeries

COLUMNS = ("time_s", "vm", "pages", "ratio", "state")

rows = st.lists(
    st.fixed_dictionaries(
        {
            "time_s": st.floats(0, 1e6, allow_nan=False),
            "vm": st.sampled_from(["a", "b", "web"]),
            "pages": st.integers(-(2**40), 2**40),
            "ratio": st.floats(0, 1),
            "state": st.sampled_from(["high", "soft", "low"]),
        }
    ),
    min_size=1,
    max_size=300,
)


@settings(max_examples=50, deadline=None)
@given(rows)
def test_the_frame_equals_the_one_a_list_of_rows_makes(data: list[dict[str, object]]) -> None:
    series = TimeSeries(COLUMNS, floats=("time_s", "ratio"), labels=("vm", "state"))
    for row in data:
        series.append(row)
    assert len(series) == len(data)
    pd.testing.assert_frame_equal(series.frame(), pd.DataFrame(data, columns=list(COLUMNS)))


VMS: dict[str, Any] = {
    "host": {"memory": "8MiB"},
    "hypervisor": {"control_period": 0.01, "host_swap": {"size": "16MiB"}},
    "vms": [
        {
            "name": n,
            "memory": "8MiB",
            "processes": [
                {
                    "name": "p",
                    "memory": "6MiB",
                    "rate": 1e6,
                    "workload": {"kind": "uniform", "pages": 1536, "write_fraction": 0.3},
                },
            ],
        }
        for n in ("a", "b")
    ],
    "run": {"seconds": 0.3},
}


def test_a_timeseries_period_keeps_a_row_per_vm_per_period() -> None:
    every = run(scenario_from_dict(VMS)).timeseries
    sparse_scenario = copy.deepcopy(VMS)
    sparse_scenario["hypervisor"]["timeseries_period"] = 0.05
    sparse = run(scenario_from_dict(sparse_scenario))
    assert every is not None and sparse.timeseries is not None
    assert list(sparse.timeseries.columns) == list(TIMESERIES_COLUMNS)
    times = sorted(set(sparse.timeseries["time_s"]))
    assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(times))
    assert len(every) > 4 * len(sparse.timeseries)
    # the rows kept are those of the same steps in the full series
    kept = every[every["time_s"].isin(times)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, sparse.timeseries.reset_index(drop=True))
    # the maxima see every step either way
    for a, b in zip(run(scenario_from_dict(VMS)).summary["vms"], sparse.summary["vms"],
                    strict=True):  # fmt: skip
        assert a["host_swapped_pages_max"] == b["host_swapped_pages_max"]
