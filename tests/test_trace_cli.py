"""The ``memvirt trace`` commands: recording real programs, describing and converting traces.

The traces in ``tests/data`` were recorded from real programs with
``memvirt trace record`` (see ``expected-stats.json`` for each command);
their expected statistics are checked here, and checked again against an
independent count that decodes the files with plain NumPy.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from typer.testing import CliRunner

from memvirt.cli import app
from memvirt.replay import ReplayOptions, replay
from memvirt.traces.model import Trace

DATA = Path(__file__).resolve().parent / "data"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected-stats.json").read_text())
RECORDED = [name for name in EXPECTED["traces"] if ".mvt" in name]
LACKEY_SAMPLE = DATA / "lackey-echo-hello.txt"
COUNTS = ("accesses", "reads", "writes", "instruction_fetches", "distinct_pages")

VALGRIND = shutil.which("valgrind")
needs_valgrind = pytest.mark.skipif(
    VALGRIND is None, reason="valgrind is not installed (apt-get install valgrind)"
)

runner = CliRunner()


def info(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["trace", "info", *args, "--json"])
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def memvirt(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed command in a process of its own (for valgrind, which writes to fd 1)."""
    return subprocess.run(
        [sys.executable, "-m", "memvirt", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


# ---------------------------------------------------------------- independent counts


def decode_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Addresses and kinds of a .mvt file, read with the header layout alone (docs/traces.md)."""
    raw = path.read_bytes()
    if path.suffix == ".zst":
        raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
    elif path.suffix == ".gz":
        raw = gzip.decompress(raw)
    assert raw[:8] == b"MVTRACE\0"
    count = int.from_bytes(raw[24:32], "little")
    words = np.frombuffer(raw, dtype="<u8", offset=32)
    assert count in (words.shape[0], (1 << 64) - 1)  # all ones: up to the end (compressed)
    return (words >> np.uint64(2)).astype(np.int64), (words & np.uint64(3)).astype(np.int64)


def lackey_by_hand(path: Path, page_size: int) -> tuple[list[int], list[int]]:
    """Pages and kinds (0 read, 1 write, 2 fetch) of a lackey log, line by line in Python.

    An access touches every page its bytes cover; a modify (M) is a read and a write.
    """
    pages: list[int] = []
    kinds: list[int] = []
    for line in path.read_text().splitlines():
        if line.startswith("==") or not line.strip():
            continue
        op, rest = line.split()
        address, size = (int(rest.split(",")[0], 16), int(rest.split(",")[1]))
        touched = range(address // page_size, (address + size - 1) // page_size + 1)
        for kind in {"I": [2], "L": [0], "S": [1], "M": [0, 1]}[op]:
            for page in touched:
                pages.append(page)
                kinds.append(kind)
    return pages, kinds


def lru_faults_by_hand(pages: list[int], frames: int) -> int:
    memory: OrderedDict[int, None] = OrderedDict()
    faults = 0
    for page in pages:
        if page in memory:
            memory.move_to_end(page)
            continue
        faults += 1
        if len(memory) == frames:
            memory.popitem(last=False)
        memory[page] = None
    return faults


# ---------------------------------------------------------------- trace info


@pytest.mark.parametrize("name", list(EXPECTED["traces"]))
def test_recorded_traces_have_their_expected_statistics(name: str) -> None:
    expected = EXPECTED["traces"][name]
    out = info(str(DATA / name))
    assert {k: out[k] for k in COUNTS} == {k: expected[k] for k in COUNTS}
    assert out["format"] == expected["format"]
    assert out["footprint_bytes"] == expected["distinct_pages"] * 4096
    assert out["page_size"] == 4096 and out["bad_lines"] == 0
    curve = dict(map(tuple, out["miss_ratio_curve"]))
    assert {str(f): curve[int(f)] for f in expected["lru_misses"]} == expected["lru_misses"]


@pytest.mark.parametrize("name", RECORDED)
def test_the_expected_statistics_agree_with_an_independent_count(name: str) -> None:
    expected = EXPECTED["traces"][name]
    addresses, kinds = decode_binary(DATA / name)
    counts = np.bincount(kinds, minlength=3)
    pages = addresses >> 12
    assert addresses.shape[0] == expected["accesses"]
    assert (counts[0], counts[1], counts[2]) == (
        expected["reads"],
        expected["writes"],
        expected["instruction_fetches"],
    )
    assert len(set(pages.tolist())) == expected["distinct_pages"]
    # LRU's faults from the replay's own replacement loop, not from stack distances
    trace = Trace.from_pages(pages)
    for frames, misses in expected["lru_misses"].items():
        options = ReplayOptions(frames=int(frames), policy="lru", tlb=None, page_tables=False)
        assert replay(trace, options)["faults"] == misses


def test_the_lackey_sample_agrees_with_a_count_by_hand() -> None:
    expected = EXPECTED["traces"][LACKEY_SAMPLE.name]
    pages, kinds = lackey_by_hand(LACKEY_SAMPLE, 4096)
    assert len(pages) == expected["accesses"]
    assert [kinds.count(k) for k in (0, 1, 2)] == [
        expected["reads"],
        expected["writes"],
        expected["instruction_fetches"],
    ]
    assert len(set(pages)) == expected["distinct_pages"]
    for frames, misses in expected["lru_misses"].items():
        assert lru_faults_by_hand(pages, int(frames)) == misses


def test_the_lackey_sample_is_a_real_log_with_valgrinds_own_lines() -> None:
    lines = LACKEY_SAMPLE.read_text().splitlines()
    assert lines[0].startswith("==") and "Lackey" in lines[0]
    assert lines[-1].startswith("==") and "Exit code" in lines[-1]
    assert 300 <= len(lines) <= 400


def test_info_prints_a_table_of_the_mix_and_the_curve() -> None:
    result = runner.invoke(app, ["trace", "info", str(DATA / "true.mvt.zst")])
    assert result.exit_code == 0, result.output
    for text in ("accesses", "169,077", "instruction fetches", "127,904", "distinct pages"):
        assert text in result.stdout
    assert "556 KiB" in result.stdout  # 139 pages of 4 KiB
    assert "miss ratio" in result.stdout and "79,482" in result.stdout  # LRU with 1 frame


def test_without_instruction_fetches_only_the_data_accesses_remain() -> None:
    expected = EXPECTED["traces"]["ls-root.mvt.zst"]
    out = info(str(DATA / "ls-root.mvt.zst"), "--drop-fetches")
    assert out["instruction_fetches"] == 0
    assert out["accesses"] == expected["reads"] + expected["writes"]
    assert out["distinct_pages"] < expected["distinct_pages"]


def test_larger_pages_mean_fewer_distinct_pages_and_a_larger_page_size() -> None:
    four = info(str(DATA / "true.mvt.zst"))
    huge = info(str(DATA / "true.mvt.zst"), "--page-size", "2MiB")
    assert huge["page_size"] == 2 << 20
    assert huge["distinct_pages"] < four["distinct_pages"]
    assert huge["footprint_bytes"] == huge["distinct_pages"] << 21


def test_info_counts_the_malformed_lines_it_skips(tmp_path: Path) -> None:
    trace = tmp_path / "t.txt"
    trace.write_text("R 0x1000\nW 0x2000\nnot an access\nR 0x1008\n")
    bad = runner.invoke(app, ["trace", "info", str(trace)])
    assert bad.exit_code == 2
    assert f"{trace}:3: expected an address" in bad.stderr
    assert "Traceback" not in bad.output
    out = info(str(trace), "--skip-bad")
    assert (out["accesses"], out["reads"], out["writes"], out["bad_lines"]) == (3, 2, 1, 1)
    assert out["miss_ratio_curve"] == [[1, 3], [2, 2]]
    assert out["format"] == "text"


def test_info_on_a_text_trace_reads_the_page_faults_of_the_textbook() -> None:
    textbook = Path(__file__).resolve().parents[1] / "examples" / "traces" / "textbook.txt"
    out = info(str(textbook))
    assert dict(map(tuple, out["miss_ratio_curve"]))[3] == 12  # Silberschatz: LRU, 3 frames


@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_info_plots_the_miss_ratio_curve(tmp_path: Path, suffix: str) -> None:
    plot = tmp_path / f"mrc{suffix}"
    result = runner.invoke(app, ["trace", "info", str(DATA / "true.mvt.zst"), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    data = plot.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data[:1000]
    assert sorted(p.name for p in tmp_path.iterdir()) == [plot.name]  # no temporary left


def test_the_same_trace_plots_the_same_svg(tmp_path: Path) -> None:
    a, b = tmp_path / "a.svg", tmp_path / "b.svg"
    for plot in (a, b):
        args = ["trace", "info", str(LACKEY_SAMPLE), "--json", "--plot", str(plot)]
        assert runner.invoke(app, args).exit_code == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--page-size", "3000"], "must be a power of two"),
        (["--page-size", "4QB"], "unknown unit"),
        (["--plot", "curve.pdf"], "expected a file name ending in .svg or .png"),
        (["--format", "nope"], "unknown trace format 'nope'"),
        (
            ["--plot", "/no/such/dir/curve.svg"],
            "--plot /no/such/dir/curve.svg: cannot write the file: there is no directory "
            "/no/such/dir",
        ),
        (["--plot", "/"], "expected a file name ending in .svg or .png"),
    ],
)
def test_bad_info_options_end_with_one_line_and_status_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["trace", "info", str(DATA / "true.mvt.zst"), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("memvirt: error:")
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_a_plot_that_cannot_be_written_is_refused_before_the_trace_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memvirt.traces.analysis

    def no_analysis(*args: object, **kwargs: object) -> object:
        raise RuntimeError("the trace was read")

    monkeypatch.setattr(memvirt.traces.analysis, "trace_stats", no_analysis)
    taken = tmp_path / "taken"
    taken.write_text("")
    (tmp_path / "dir.svg").mkdir()
    for plot, problem in (
        (taken / "curve.svg", f"cannot write the file: {taken} is not a directory"),
        (tmp_path / "dir.svg", "a directory of that name exists"),
    ):
        result = runner.invoke(app, ["trace", "info", str(LACKEY_SAMPLE), "--plot", str(plot)])
        assert result.exit_code == 2, result.output
        assert result.stderr == f"memvirt: error: --plot {plot}: {problem}\n"


def test_a_missing_or_corrupt_trace_is_reported_by_name(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["trace", "info", str(tmp_path / "none.mvt")])
    assert missing.exit_code == 2 and "none.mvt" in missing.stderr
    whole = tmp_path / "whole.mvt"
    assert runner.invoke(app, ["trace", "convert", str(LACKEY_SAMPLE), str(whole)]).exit_code == 0
    cut = tmp_path / "cut.mvt"
    cut.write_bytes(whole.read_bytes()[:1000])
    result = runner.invoke(app, ["trace", "info", str(cut)])
    assert result.exit_code == 2
    assert f"{cut}: truncated: header says 302 records, file holds 121" in result.stderr


# ---------------------------------------------------------------- trace convert


@pytest.mark.parametrize("target", ["t.mvt", "t.npy", "t.mvt.gz", "t.npy.zst"])
def test_converting_keeps_every_access_and_its_kind(tmp_path: Path, target: str) -> None:
    out = tmp_path / target
    result = runner.invoke(app, ["trace", "convert", str(DATA / "echo-hello.mvt.gz"), str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 100,000 accesses" in result.stdout
    same = {"format": None, "trace": None}
    assert info(str(out)) | same == info(str(DATA / "echo-hello.mvt.gz")) | same


def test_converting_to_text_turns_instruction_fetches_into_reads(tmp_path: Path) -> None:
    out = tmp_path / "t.txt"
    assert runner.invoke(app, ["trace", "convert", str(LACKEY_SAMPLE), str(out)]).exit_code == 0
    expected = EXPECTED["traces"][LACKEY_SAMPLE.name]
    text = info(str(out))
    assert text["format"] == "text"
    assert text["reads"] == expected["reads"] + expected["instruction_fetches"]
    assert text["instruction_fetches"] == 0
    assert text["miss_ratio_curve"] == info(str(LACKEY_SAMPLE))["miss_ratio_curve"]


def test_converting_can_leave_out_fetches_and_bad_lines(tmp_path: Path) -> None:
    sample = tmp_path / "sample.lackey"
    sample.write_text(LACKEY_SAMPLE.read_text().replace(" S 1fff000768,8", " X oops", 1))
    out = tmp_path / "data.mvt"
    args = ["trace", "convert", str(sample), str(out), "--skip-bad", "--drop-fetches"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 malformed lines skipped" in result.stdout
    expected = EXPECTED["traces"][LACKEY_SAMPLE.name]
    got = info(str(out))
    assert got["accesses"] == expected["reads"] + expected["writes"] - 1
    assert got["instruction_fetches"] == 0


def test_a_failed_conversion_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("0x1000\n0x2000\nW 0xZZ\n")
    out = tmp_path / "out.mvt"
    result = runner.invoke(app, ["trace", "convert", str(bad), str(out)])
    assert result.exit_code == 2
    assert f"{bad}:3: expected an address" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]
    nowhere = runner.invoke(app, ["trace", "convert", str(bad), "/no/such/dir/out.mvt"])
    assert nowhere.exit_code == 2 and "/no/such/dir" in nowhere.stderr


# ---------------------------------------------------------------- trace record


@needs_valgrind
def test_recording_a_program_writes_its_accesses_and_not_its_output(tmp_path: Path) -> None:
    out = tmp_path / "echo.mvt"
    proc = memvirt("trace", "record", "-o", str(out), "--", "/bin/echo", "hello from echo")
    assert proc.returncode == 0, proc.stderr
    assert "hello from echo" in proc.stdout  # the program's output reaches the terminal
    assert "wrote" in proc.stdout
    got = info(str(out))
    assert got["format"] == "binary"
    # a whole run of echo: the dynamic loader, libc, and echo itself
    assert got["accesses"] > 50_000 and got["instruction_fetches"] > got["accesses"] // 2
    assert got["reads"] > 0 and got["writes"] > 0 and got["distinct_pages"] > 20


@needs_valgrind
def test_recording_stops_a_program_after_the_accesses_asked_for(tmp_path: Path) -> None:
    marker = f"memvirt-test-{uuid.uuid4()}"
    out = tmp_path / "loop.mvt.zst"
    proc = memvirt(
        "trace", "record", "-o", str(out), "--max-accesses", "20000", "--drop-fetches",
        "--", "/bin/sh", "-c", "while :; do :; done", marker,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "stopped /bin/sh after 20,000 accesses" in proc.stdout
    got = info(str(out))
    assert got["accesses"] == 20_000 and got["instruction_fetches"] == 0
    # valgrind and the endless program are gone
    assert not [
        pid for pid in os.listdir("/proc") if pid.isdigit() and marker.encode() in _cmdline(pid)
    ]


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@needs_valgrind
def test_a_program_that_cannot_be_started_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "x.mvt"
    missing = memvirt("trace", "record", "-o", str(out), "--", "no-such-program-here")
    assert missing.returncode == 2
    assert "memvirt: error: cannot start 'no-such-program-here'" in missing.stderr
    not_executable = memvirt("trace", "record", "-o", str(out), "--", str(LACKEY_SAMPLE))
    assert not_executable.returncode == 2 and "cannot start" in not_executable.stderr
    assert "Traceback" not in missing.stderr + not_executable.stderr
    assert not out.exists()


def test_without_valgrind_record_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = runner.invoke(app, ["trace", "record", "-o", str(tmp_path / "x.mvt"), "--", "true"])
    assert result.exit_code == 2
    assert "valgrind is not installed" in result.stderr
    assert "apt-get install valgrind" in result.stderr


def test_record_refuses_a_limit_below_one(tmp_path: Path) -> None:
    if VALGRIND is None:
        pytest.skip("valgrind is not installed (apt-get install valgrind)")
    result = runner.invoke(
        app, ["trace", "record", "-o", str(tmp_path / "x.mvt"), "--max-accesses", "0", "--", "true"]
    )
    assert result.exit_code == 2
    assert "--max-accesses must be at least 1, got 0" in result.stderr
