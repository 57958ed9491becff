"""The benchmark suite: every benchmark in one command, a table, and a JSON file.

Each benchmark runs in its own Python process, so that the peak resident memory the
table shows (``os.wait4``'s ``ru_maxrss``) is that run's alone, and a fresh process
pays no cost left behind by another. Figures are medians of several runs; ratios
(memvirt against libCacheSim) are measured within one run of ``bench_replay.py``.

    python benchmarks/run.py [--quick] [--json out/bench.json] [--big]

Parts:

- ``replay``: ``bench_replay.py`` (memvirt's replay paths against libCacheSim);
- ``traces``: ``bench_traces.py`` (reading lackey and binary traces);
- ``native``: a native run with the TLB (``bench_scale.py --mode native``);
- ``programs``: ``bench_programs.py`` (a real program's trace, ``xz`` recorded under
  valgrind, replayed natively and by four VMs with reclamation active; skipped
  without valgrind and xz);
- ``overcommit``: ``bench_overcommit.py`` (4 VMs, nested, 1.5x, ballooning, sharing),
  and a py-spy profile of it that splits the time between data planes and control
  plane (when py-spy is installed);
- ``scale``: ``bench_scale.py`` against host size, VM count and trace length;
- ``compile``: the data plane's cold compile (empty ``NUMBA_CACHE_DIR``) and
  ``memvirt run`` start-up with a warm cache.

``--quick`` makes every part smaller (a few minutes in all); ``--big`` adds the largest
host memvirt accepts, 64 GiB (16M frames), with 64 VMs (about 3 GB and half a minute).
``--parts`` picks parts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from memvirt.files import atomic_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
PARTS = ("replay", "traces", "native", "programs", "overcommit", "scale", "compile")


def child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[str, float, int, int]:
    """Run ``cmd``; its stdout, wall seconds, peak resident bytes and exit status."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        print(f"  ! {' '.join(cmd)} exited {proc.returncode}\n{err[-2000:]}", file=sys.stderr)
    return text, seconds, usage.ru_maxrss * 1024, proc.returncode


def scale_point(args: list[str], repeat: int) -> dict[str, Any]:
    """Median figures of ``repeat`` runs of ``bench_scale.py args``, each its own process."""
    runs = []
    for _ in range(repeat):
        text, _, rss, status = child([PY, str(HERE / "bench_scale.py"), *args])
        if status == 0:
            point = json.loads(text.strip().splitlines()[-1])
            point["peak_rss_bytes"] = rss
            runs.append(point)
    if not runs:  # reported on stderr by child(); the row says "failed"
        return {"args": args, "error": "failed", "accesses_per_second": float("nan"),
                "build_seconds": float("nan"), "run_seconds": float("nan"),
                "bytes_per_page": float("nan"), "peak_rss_bytes": 0}  # fmt: skip
    med = dict(runs[-1])
    for key in ("accesses_per_second", "build_seconds", "run_seconds", "peak_rss_bytes"):
        med[key] = statistics.median(r[key] for r in runs)
    med["runs_accesses_per_second"] = [r["accesses_per_second"] for r in runs]
    return med


def classify(stack: str) -> str:
    """Which part of the simulator a py-spy sample (a ';'-joined stack) was in."""
    if "EventLoop.run" not in stack:
        return "outside the event loop (start-up, build, warm-up)"
    if "Reclaimer.tick" in stack:
        return "control plane: Reclaimer.tick"
    if "Reclaimer." in stack:
        return "control plane: Reclaimer hooks around the host pass"
    if "sync_contents" in stack:
        return "host pass: content sync (sync_contents)"
    if "_host_pass" in stack and "Kernel.run" in stack:
        return "host data plane (recorded walks)"
    if "shoot_down" in stack:
        return "TLB shootdowns"
    if "Kernel.run" in stack:
        return "guest data plane"
    if "next_chunk" in stack or "workloads" in stack:
        return "drawing the workload"
    return "engine (other Python)"


def profile_overcommit(accesses: int) -> dict[str, Any] | None:
    """py-spy profile of one overcommit run; the share of samples in each part."""
    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or shutil.which("py-spy")
    if spy is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        cmd = [spy, "record", "-r", "200", "-f", "raw", "-o", str(raw), "--", PY]
        cmd += [str(HERE / "bench_overcommit.py"), "--repeat", "1", "--accesses", str(accesses)]
        _, _, _, status = child(cmd)
        if status != 0 or not raw.exists():
            return None
        parts: Counter[str] = Counter()
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if "timed_run " not in stack:  # the warm-up runs and the set-up are not timed
                continue
            parts[classify(stack)] += int(n)
    loop = sum(n for part, n in parts.items() if not part.startswith("outside"))
    return {
        "samples": sum(parts.values()),
        "loop_samples": loop,
        "share_of_loop": {p: n / loop for p, n in parts.most_common() if loop and p[0] != "o"},
        "control_plane_share": sum(n for p, n in parts.items() if p.startswith("control")) / loop
        if loop
        else 0.0,
    }


def compile_times() -> dict[str, float]:
    """Cold compile of the data plane, warm import, and ``memvirt run`` start-up."""
    figures: dict[str, float] = {}
    code = "import memvirt.replay as r; r.warm_up()"
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        figures["cold_compile_seconds"] = child([PY, "-c", code], env)[1]
        figures["warm_load_seconds"] = child([PY, "-c", code], env)[1]
    memvirt = str(Path(PY).parent / "memvirt")
    example = str(ROOT / "examples" / "demand-paging.toml")
    with tempfile.TemporaryDirectory() as out:
        cmd = [memvirt, "run", example, "--set", "run.accesses=1000", "--out", out]
        child(cmd)  # warm the cache of this command's kernels
        figures["memvirt_run_startup_seconds"] = statistics.median(child(cmd)[1] for _ in range(3))
    return figures


def fmt_rate(r: float) -> str:
    return f"{r / 1e6:.2f} M/s" if r >= 1e5 else f"{r / 1e3:.1f} k/s"


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs: a few minutes")
    ap.add_argument("--big", action="store_true", help="add the 64 GiB, 64-VM host")
    ap.add_argument("--json", type=Path, default=Path("out/bench.json"), metavar="OUT")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ",".join(PARTS))
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"--parts: unknown {', '.join(unknown)}; known: {', '.join(PARTS)}")
    quick = args.quick
    repeat = 3
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join([Path(PY).name, *sys.argv]),
        "quick": quick,
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        },
    }
    rows: list[tuple[str, str, str, str]] = []  # benchmark, figure, build / note, peak RSS

    def row(name: str, figure: str, note: str, rss: float | None) -> None:
        rows.append((name, figure, note, "" if rss is None else f"{rss / 2**30:.2f} GiB"))
        print(f"{name:<44} {figure:>14}  {note}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        if "replay" in parts:
            out = Path(tmp) / "replay.json"
            cmd = [PY, str(HERE / "bench_replay.py"), "--json", str(out), "--no-compile"]
            if quick:
                cmd += ["--accesses", "2000000", "--pages", "200000", "--frames", "20000"]
                cmd += ["--repeat", "1", "--policies", "lru"]
            _, sec, rss, status = child(cmd)
            if status == 0:
                rep = json.loads(out.read_text())
                report["replay"] = rep
                for policy, fig in rep["policies"].items():
                    row(f"replay {policy} libCacheSim", fmt_rate(
                        fig["libcachesim"]["median_rate"]), "", rss)  # fmt: skip
                    for path, pf in fig["paths"].items():
                        ratio = pf.get("median_ratio")
                        note = "" if ratio is None else f"{ratio:.2f}x libCacheSim"
                        row(f"replay {policy} {path}", fmt_rate(pf["median_rate"]), note, rss)
            report.setdefault("wall_seconds", {})["replay"] = sec
        if "traces" in parts:
            out = Path(tmp) / "traces.json"
            cmd = [PY, str(HERE / "bench_traces.py"), "--json", str(out)]
            if quick:
                cmd += ["--lackey-records", "1000000", "--binary-records", "10000000"]
                cmd += ["--repeat", "3", "--no-compressed"]
            _, sec, rss, status = child(cmd)
            if status == 0:
                report["traces"] = json.loads(out.read_text())
            row("trace parsing (see JSON)", "done" if status == 0 else "failed", "", rss)
        if "native" in parts:
            n = "2000000" if quick else "8000000"
            report["native"] = {}
            for label, over in (("fits", "0.9"), ("1.5x", "1.5")):
                point = scale_point(
                    ["--mode", "native", "--host-gib", "1", "--accesses", n, "--overcommit", over],
                    repeat,
                )
                report["native"][label] = point
                row(f"native 1 GiB, TLB, zipf over {over}x host", fmt_rate(
                    point["accesses_per_second"]), f"{point['bytes_per_page']:.1f} B/page",
                    point["peak_rss_bytes"])  # fmt: skip
        if "programs" in parts:
            if shutil.which("valgrind") is None or shutil.which("xz") is None:
                row("real program trace (xz)", "skipped", "needs valgrind and xz", None)
            else:
                out = Path(tmp) / "programs.json"
                cmd = [PY, str(HERE / "bench_programs.py"), "--json", str(out)]
                cmd += ["--repeat", str(repeat)]
                if quick:
                    cmd += ["--accesses", "20000000"]
                _, sec, rss, status = child(cmd)
                if status == 0:
                    pg = json.loads(out.read_text())
                    report["programs"] = pg
                    for part, label in (("native", "native"), ("nested", "4 VMs nested 1.5x")):
                        fig = pg[part]
                        row(f"xz trace, {label}", fmt_rate(fig["accesses_per_second"]),
                            f"TLB miss ratio {fig['tlb_miss_ratio']:.4f}", rss)  # fmt: skip
                else:
                    row("real program trace (xz)", "failed", "", rss)
        if "overcommit" in parts:
            out = Path(tmp) / "overcommit.json"
            n = "1000000" if quick else "4000000"
            cmd = [PY, str(HERE / "bench_overcommit.py"), "--accesses", n, "--json", str(out)]
            _, sec, rss, status = child([*cmd, "--repeat", str(repeat)])
            if status == 0:
                oc = json.loads(out.read_text())
                report["overcommit"] = oc
                row("4 VMs nested 1.5x, balloon+sharing", fmt_rate(oc["accesses_per_second"]),
                    f"{oc['bytes_per_page']:.1f} B/page", rss)  # fmt: skip
            prof = profile_overcommit(int(n))
            report["overcommit_profile"] = prof
            if prof is not None:
                row("  control plane share (py-spy)", f"{prof['control_plane_share']:.1%}",
                    "target <= 10%", None)  # fmt: skip
        if "scale" in parts:
            n = "1000000" if quick else "4000000"
            hosts = ["1", "4", "16"] if quick else ["1", "4", "16", "64"]
            vms = ["1", "4", "16", "64"] if quick else ["1", "2", "4", "8", "16", "32", "64"]
            lengths = ["1000000", "4000000"] if quick else ["1000000", "4000000", "16000000"]
            scale: dict[str, list[dict[str, Any]]] = {"host": [], "vms": [], "length": []}
            r = 1 if quick else repeat
            for h in hosts:
                p = scale_point(["--host-gib", h, "--vms", "16", "--accesses", n], r)
                scale["host"].append(p)
                row(f"scale host {h} GiB, 16 VMs, {int(n):,} acc", fmt_rate(
                    p["accesses_per_second"]), f"build {p['build_seconds']:.2f} s",
                    p["peak_rss_bytes"])  # fmt: skip
            for v in vms:
                p = scale_point(["--host-gib", "4", "--vms", v, "--accesses", n], r)
                scale["vms"].append(p)
                row(f"scale 4 GiB host, {v} VMs", fmt_rate(p["accesses_per_second"]),
                    f"build {p['build_seconds']:.2f} s", p["peak_rss_bytes"])  # fmt: skip
            for length in lengths:
                p = scale_point(["--host-gib", "1", "--vms", "4", "--accesses", length], r)
                scale["length"].append(p)
                row(f"scale 1 GiB, 4 VMs, {int(length):,} acc", fmt_rate(
                    p["accesses_per_second"]), f"run {p['run_seconds']:.2f} s",
                    p["peak_rss_bytes"])  # fmt: skip
            if args.big:
                # the largest machine the aims name: 256 GiB, 64 VMs (about 10 GiB of state)
                p = scale_point(["--host-gib", "256", "--vms", "64", "--accesses", "1000000"], 1)
                scale["host"].append(p)
                row("scale host 256 GiB, 64 VMs, 1,000,000 acc", fmt_rate(
                    p["accesses_per_second"]), f"build {p['build_seconds']:.1f} s",
                    p["peak_rss_bytes"])  # fmt: skip
            report["scale"] = scale
        if "compile" in parts:
            comp = compile_times()
            report["compile"] = comp
            row("cold compile (empty NUMBA_CACHE_DIR)", f"{comp['cold_compile_seconds']:.1f} s",
                "target < 30 s", None)  # fmt: skip
            row("memvirt run start-up, warm", f"{comp['memvirt_run_startup_seconds']:.2f} s",
                "target < 2 s", None)  # fmt: skip

    report["table"] = [list(r) for r in rows]
    print()
    print("| benchmark | figure | note | peak RSS |")
    print("|---|---|---|---|")
    for line in rows:
        print("| " + " | ".join(line) + " |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_json(args.json, report)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
