"""The ``memvirt replay`` command: textbook numbers, JSON output, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memvirt.cli import app

ROOT = Path(__file__).resolve().parents[1]
TEXTBOOK = ROOT / "examples" / "traces" / "textbook.txt"
BELADY = ROOT / "examples" / "traces" / "belady.txt"

runner = CliRunner()


def replay_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["replay", *args, "--json"])
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


@pytest.mark.parametrize(("policy", "faults"), [("fifo", 15), ("lru", 12), ("opt", 9)])
def test_replay_gives_the_textbook_fault_counts(policy: str, faults: int) -> None:
    out = replay_json(str(TEXTBOOK), "--frames", "3", "--policy", policy)
    assert out["faults"] == faults
    assert out["accesses"] == 20
    assert out["policy"] == policy and out["frames"] == 3


def test_replay_shows_beladys_anomaly_under_fifo() -> None:
    three = replay_json(str(BELADY), "--frames", "3", "--policy", "fifo")
    four = replay_json(str(BELADY), "--frames", "4", "--policy", "fifo")
    assert (three["faults"], four["faults"]) == (9, 10)


def test_replay_json_has_every_documented_key() -> None:
    out = replay_json(str(TEXTBOOK), "--frames", "3")
    for key in (
        "accesses",
        "faults",
        "minor_faults",
        "major_faults",
        "evictions",
        "writebacks",
        "tlb_hits",
        "tlb_misses",
        "walk_memory_references",
        "policy",
        "frames",
        "seconds",
    ):
        assert key in out, key
    assert out["faults"] == out["minor_faults"] + out["major_faults"]
    assert out["tlb_hits"] + out["tlb_misses"] == out["accesses"]


def test_replay_without_tlb_walks_on_every_access() -> None:
    out = replay_json(str(TEXTBOOK), "--frames", "3", "--no-tlb")
    assert out["tlb_hits"] == 0
    assert out["walk_memory_references"] == 4 * 20
    five = replay_json(str(TEXTBOOK), "--frames", "3", "--no-tlb", "--levels", "5")
    assert five["walk_memory_references"] == 5 * 20


def test_replay_reads_page_numbers_and_npy(tmp_path: Path) -> None:
    import numpy as np

    text = tmp_path / "pages.txt"
    text.write_text("7\n0\n1\n2\n0\n3\n0\n4\n2\n3\n0\n3\n2\n1\n2\n0\n1\n7\n0\n1\n")
    assert (
        replay_json(str(text), "--frames", "3", "--page-numbers", "--policy", "fifo")["faults"]
        == 15
    )
    arr = tmp_path / "pages.npy"
    np.save(arr, np.array([7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]) * 4096)
    assert replay_json(str(arr), "--frames", "3", "--policy", "lru")["faults"] == 12


def test_replay_prints_a_table_without_json() -> None:
    result = runner.invoke(app, ["replay", str(TEXTBOOK), "--frames", "3"])
    assert result.exit_code == 0
    assert "page faults" in result.stdout and "12" in result.stdout


def test_without_virtual_memory_a_trace_larger_than_memory_is_refused() -> None:
    result = runner.invoke(app, ["replay", str(TEXTBOOK), "--frames", "3", "--no-virtual-memory"])
    assert result.exit_code == 2
    assert "needs" in result.stderr and "free" in result.stderr
    ok = replay_json(str(TEXTBOOK), "--frames", "8", "--no-virtual-memory")
    assert ok["faults"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "0"], "--frames must be at least 1, got 0"),
        (["--frames", "3", "--page-size", "3000"], "must be a power of two"),
        (["--frames", "3", "--page-size", "4QB"], "unknown unit"),
        (["--frames", "3", "--policy", "nope"], "known policies are clock, fifo, lru, opt, random"),
        (["--frames", "3", "--levels", "6"], "2 to 5 levels"),
        (["--frames", "3", "--tlb-l1", "64"], "expected ENTRIES:WAYS"),
        (["--frames", "3", "--tlb-l1", "65:4"], "multiple of its ways"),
    ],
)
def test_bad_options_end_with_a_clear_message_and_status_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["replay", str(TEXTBOOK), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_a_malformed_trace_line_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("# header\n0x1000\nW 0xZZ\n")
    result = runner.invoke(app, ["replay", str(bad), "--frames", "3"])
    assert result.exit_code == 2
    assert f"{bad}:3: expected an address" in result.stderr
    assert "got 'W 0xZZ'" in result.stderr


def test_a_missing_trace_and_an_empty_trace_are_errors(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["replay", str(tmp_path / "none.txt"), "--frames", "3"])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    result = runner.invoke(app, ["replay", str(empty), "--frames", "3"])
    assert result.exit_code == 2 and "no accesses" in result.stderr


def test_the_installed_command_exits_2_on_bad_input_without_a_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "memvirt", "replay", str(TEXTBOOK), "--frames", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--frames must be at least 1" in proc.stderr


@pytest.mark.parametrize(("policy", "faults"), [("fifo", 15), ("lru", 12), ("opt", 9)])
def test_replay_without_page_tables_gives_the_same_textbook_counts(
    policy: str, faults: int
) -> None:
    out = replay_json(str(TEXTBOOK), "--frames", "3", "--policy", policy, "--no-page-tables")
    assert out["faults"] == faults
    assert out["walk_memory_references"] == 0 and out["table_pages"] == 0


DATA = ROOT / "tests" / "data"


@pytest.mark.parametrize(
    "name", ["lackey-echo-hello.txt", "true.mvt.zst", "echo-hello.mvt.gz", "ls-root.mvt.zst"]
)
def test_replay_reads_every_trace_format(name: str) -> None:
    stats = json.loads((DATA / "expected-stats.json").read_text())["traces"][name]
    frames = "4" if name.startswith("lackey") else "16"
    out = replay_json(str(DATA / name), "--frames", frames, "--policy", "lru")
    assert out["accesses"] == stats["accesses"]
    assert out["instruction_fetches"] == stats["instruction_fetches"]
    assert out["reads"] + out["writes"] + out["instruction_fetches"] == out["accesses"]
    # LRU's faults are the miss-ratio curve's point at that many frames
    assert out["faults"] == stats["lru_misses"][frames]


def test_replay_can_drop_instruction_fetches() -> None:
    out = replay_json(str(DATA / "lackey-echo-hello.txt"), "--frames", "16", "--drop-fetches")
    assert out["instruction_fetches"] == 0
    assert out["accesses"] == out["reads"] + out["writes"]


def test_replay_skips_and_counts_malformed_lines_when_asked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("0x1000\nnonsense\n0x2000\n0x1000\n")
    strict = runner.invoke(app, ["replay", str(bad), "--frames", "3"])
    assert strict.exit_code == 2 and f"{bad}:2:" in strict.stderr
    out = replay_json(str(bad), "--frames", "3", "--skip-bad")
    assert out["bad_lines"] == 1 and out["accesses"] == 3 and out["faults"] == 2


def test_trace_info_of_an_empty_trace_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# no accesses\n")
    result = runner.invoke(app, ["trace", "info", str(empty), "--json"])
    assert result.exit_code == 2
    assert "no accesses" in result.stderr


def test_random_frame_needs_page_tables() -> None:
    result = runner.invoke(
        app,
        ["replay", str(TEXTBOOK), "--frames", "3", "--policy", "random-frame", "--no-page-tables"],
    )
    assert result.exit_code == 2
    assert "needs page tables" in result.stderr
