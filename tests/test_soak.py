"""The soak script, on a short run: the check holds and the report is written.

The real soak (``python scripts/soak.py``: three simulated hours, about four million
faults, a few minutes) is documented in docs/reliability.md; here ten simulated minutes
of the same scenario run through the same script, so that it keeps working.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def soak() -> Any:
    """scripts/soak.py, loaded as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("soak", ROOT / "scripts" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_soak_passes_the_check_and_reports_its_memory(soak: Any, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    # a generous tolerance: in ten minutes the first kernels are still being loaded
    status = soak.main(["--set", "run.seconds=600", "--samples", "4", "--tolerance-mib", "64",
                        "--json", str(out)])  # fmt: skip
    assert status == 0
    report = json.loads(out.read_text())
    assert report["simulated_seconds"] >= 600
    assert report["faults"] > 100_000
    assert [s["simulated_s"] for s in report["samples"]] == [150, 300, 450, 600]
    assert report["stopped_vms"] == []
    assert report["faults_injected"]["swap_devices"]["host"]["swap_write_errors"] > 0
    assert report["timeseries_rows"] == 3 * 60  # a row per VM every 10 simulated s
    assert report["flat"] is True


def test_a_bad_soak_scenario_is_one_line_and_status_2(
    soak: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert soak.main(["--set", "run.seconds=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("soak.py: error: ") and "run.seconds = -1" in err
    assert "Traceback" not in err
