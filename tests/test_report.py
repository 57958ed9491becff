"""The report: figures of a run and a self-contained HTML page that a browser renders."""

from __future__ import annotations

import copy
import io
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from memvirt.config import load_scenario
from memvirt.engine.scenario import RunResult, run
from memvirt.report import render_report, write_figures, write_report
from memvirt.report.figures import render_figures
from memvirt.report.html import combined_throughput, inline_svg, major_faults

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

VM_FIGURES = ("host-memory", "vm-memory", "states", "activity")


@pytest.fixture(scope="module")
def ballooning() -> RunResult:
    return run(load_scenario(EXAMPLES / "overcommit-ballooning.toml"))


@pytest.fixture(scope="module")
def swapping() -> RunResult:
    return run(
        load_scenario(EXAMPLES / "overcommit-ballooning.toml", ["hypervisor.balloon.enabled=false"])
    )


@pytest.fixture(scope="module")
def native() -> RunResult:
    return run(load_scenario(EXAMPLES / "multiprogramming.toml", ["run.accesses=200000"]))


@pytest.fixture(scope="module")
def report_dir(
    tmp_path_factory: pytest.TempPathFactory, ballooning: RunResult, swapping: RunResult
) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(
        ballooning.summary,
        ballooning.timeseries,
        out,
        title="Ballooning against host swapping",
        comparison=[("with balloons", ballooning.summary), ("swapping only", swapping.summary)],
    )
    return out


def assert_a_picture(data: bytes) -> None:
    """A PNG that decodes, and shows something: not one flat colour."""
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    assert image.width >= 500 and image.height >= 300
    colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 20


# ------------------------------------------------------------------------ figures


@pytest.fixture(scope="module")
def figure_dir(tmp_path_factory: pytest.TempPathFactory, ballooning: RunResult) -> Path:
    out = tmp_path_factory.mktemp("figures")
    paths = write_figures(ballooning.summary, ballooning.timeseries, out)
    assert all(p.parent == out for p in paths)
    assert sorted(p.name for p in paths) == sorted(
        f"{name}.{kind}" for name in VM_FIGURES for kind in ("svg", "png")
    )
    return out


def test_a_run_with_vms_gets_four_figures_in_svg_and_png(figure_dir: Path) -> None:
    # written atomically: nothing but the figures is left in the directory
    names = sorted(p.name for p in figure_dir.iterdir())
    assert names == sorted(f"{name}.{kind}" for name in VM_FIGURES for kind in ("svg", "png"))
    for path in figure_dir.iterdir():
        assert path.stat().st_size > 1000
        if path.suffix == ".png":
            assert_a_picture(path.read_bytes())
        else:
            text = path.read_text()
            assert text.startswith("<?xml") and "<svg" in text


def test_the_same_run_gives_byte_identical_svg(
    tmp_path: Path, figure_dir: Path, ballooning: RunResult
) -> None:
    again = write_figures(ballooning.summary, ballooning.timeseries, tmp_path)
    svgs = [p for p in again if p.suffix == ".svg"]
    assert len(svgs) == len(VM_FIGURES)
    for path in svgs:
        assert path.read_bytes() == (figure_dir / path.name).read_bytes(), path.name


def test_the_host_memory_figure_names_every_layer(figure_dir: Path) -> None:
    # text is drawn as paths; matplotlib keeps each text in a comment beside them
    text = (figure_dir / "host-memory.svg").read_text()
    for label in ("vm1 allocated", "vm3 allocated", "shared frames", "host page tables, other",
                  "free", "host-swapped pages"):  # fmt: skip
        assert f"<!-- {label} -->" in text


def test_the_stacked_layers_add_up_to_physical_memory(ballooning: RunResult) -> None:
    # what the stack draws above the VMs' frames, the shared frames and the free frames
    # is the rest of physical memory: the hypervisor's page tables, never negative
    ts = ballooning.timeseries
    assert ts is not None
    step = ts.groupby("time_s").agg(
        allocated=("allocated_pages", "sum"),
        free=("host_free_pages", "last"),
        shared=("host_shared_frames", "last"),
    )
    host = ballooning.summary["host"]
    rest = host["physical_pages"] - step["allocated"] - step["free"] - step["shared"]
    assert rest.min() >= 0
    assert rest.max() <= host["table_pages"]


def test_a_native_run_gets_a_figure_of_its_processes(tmp_path: Path, native: RunResult) -> None:
    assert native.timeseries is None
    paths = write_figures(native.summary, None, tmp_path)
    assert [p.name for p in paths] == ["processes.svg", "processes.png"]
    assert_a_picture(paths[1].read_bytes())
    text = paths[0].read_text()
    for process in native.summary["processes"]:
        assert f"<!-- {process['name']} -->" in text


def test_a_run_with_vms_but_no_time_series_draws_nothing(
    tmp_path: Path, ballooning: RunResult
) -> None:
    assert write_figures(ballooning.summary, None, tmp_path) == []


def test_a_time_series_of_one_step_still_draws_every_figure(ballooning: RunResult) -> None:
    ts = ballooning.timeseries
    assert ts is not None
    first = ts[ts["time_s"] == ts["time_s"].min()]
    figures = render_figures(ballooning.summary, first, formats=("png",))
    assert [f.info.name for f in figures] == list(VM_FIGURES)
    for figure in figures:
        assert_a_picture(figure.data["png"])


def test_figures_read_a_time_series_loaded_back_from_parquet(
    tmp_path: Path, ballooning: RunResult
) -> None:
    ballooning.write(tmp_path / "run")
    loaded = pd.read_parquet(tmp_path / "run" / "timeseries.parquet")
    direct = render_figures(ballooning.summary, ballooning.timeseries)
    reread = render_figures(ballooning.summary, loaded)
    assert [f.info.name for f in reread] == list(VM_FIGURES)
    for a, b in zip(direct, reread, strict=True):
        assert a.data["svg"] == b.data["svg"], a.info.name


# ------------------------------------------------------------------------ the HTML page


def test_the_report_is_self_contained(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert "<link" not in page.lower() and "<img" not in page.lower()
    assert "@import" not in page
    # every reference is to something inside the page
    for ref in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert ref.startswith("#"), ref
    for ref in re.findall(r"url\(([^)]*)\)", page):
        assert ref.startswith("#"), ref
    assert sorted(p.name for p in report_dir.iterdir()) == ["report.html"]


def test_the_report_holds_the_tables_and_the_figures(
    report_dir: Path, ballooning: RunResult
) -> None:
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<h1>Ballooning against host swapping</h1>" in page
    assert page.count("<svg") == len(VM_FIGURES)
    assert page.count("<figcaption>") == len(VM_FIGURES)
    for table in ('id="run"', 'id="vm-table"', 'id="process-table"', 'id="comparison-table"'):
        assert table in page
    summary = ballooning.summary
    assert "examples/overcommit-ballooning.toml" in page
    assert '<th scope="row">seed</th><td>1</td>' in page
    assert "nested paging: 3 VMs" in page
    host = summary["host"]
    assert f"{host['physical_pages']:,} (256 MiB)" in page
    assert f"{host['reclaimed_pages']['ballooning']:,} (" in page
    for vm in summary["vms"]:
        assert f'<th scope="col">{vm["name"]}</th>' in page
        assert f"<td>{vm['balloon_pages_max']:,} (" in page
        assert f"<td>{vm['throughput']:,.0f}</td>" in page
    # the host's time in each state, to the millisecond
    for seconds in host["time_in_state"].values():
        assert f"{seconds:,.3f} s" in page


def test_figure_ids_are_unique_in_the_page(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    ids = Counter(re.findall(r'\bid="([^"]+)"', page))
    assert ids and max(ids.values()) == 1, ids.most_common(3)
    # and every internal reference points at an id that exists
    refs = set(re.findall(r'href="#([^"]+)"', page)) | set(re.findall(r"url\(#([^)]+)\)", page))
    assert refs and refs <= set(ids)


def test_the_comparison_puts_runs_side_by_side(
    report_dir: Path, ballooning: RunResult, swapping: RunResult
) -> None:
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    table = page[page.index('id="comparison-table"') :]
    table = table[: table.index("</table>")]
    assert '<th scope="col">with balloons</th>' in table
    assert '<th scope="col">swapping only</th>' in table

    def row(label: str) -> list[str]:
        match = re.search(rf"<th scope=\"row\">{re.escape(label)}</th>(.*?)</tr>", table, re.S)
        assert match, label
        return re.findall(r"<td>([^<]*)</td>", match.group(1))

    runs = (ballooning.summary, swapping.summary)
    throughput = [combined_throughput(s) for s in runs]
    assert row("combined throughput (accesses per simulated s)") == [
        f"{t:,.0f}" for t in throughput if t is not None
    ]
    assert row("major faults") == [f"{major_faults(s):,}" for s in runs]
    assert row("pages reclaimed by ballooning") == [
        f"{s['host']['reclaimed_pages']['ballooning']:,}" for s in runs
    ]
    assert row("pages reclaimed by swapping") == [
        f"{s['host']['reclaimed_pages']['swapping']:,}" for s in runs
    ]
    assert row("time in state soft") == [
        f"{s['host']['time_in_state']['soft']:,.3f} s" for s in runs
    ]
    # the experiment's outcome: balloons reclaim, and without them the host swaps more
    assert ballooning.summary["host"]["reclaimed_pages"]["ballooning"] > 0
    assert swapping.summary["host"]["reclaimed_pages"]["ballooning"] == 0


def test_the_combined_metrics_add_up_the_vms(ballooning: RunResult) -> None:
    vms = ballooning.summary["vms"]
    assert combined_throughput(ballooning.summary) == pytest.approx(
        sum(vm["throughput"] for vm in vms)
    )
    assert major_faults(ballooning.summary) == sum(
        vm["guest_swap_ins"] + vm["host_swap_ins"] for vm in vms
    )


def test_hostile_names_are_escaped(tmp_path: Path, ballooning: RunResult) -> None:
    summary = copy.deepcopy(ballooning.summary)
    assert ballooning.timeseries is not None
    timeseries = ballooning.timeseries.copy()
    summary["vms"][0]["name"] = "<b>x</b>"
    summary["vms"][1]["name"] = "$x_1$"  # mathtext in a matplotlib label
    summary["vms"][0]["processes"][0]["name"] = "<i>p</i>"
    summary["scenario"]["source"] = "<script>alert(1)</script>.toml"
    timeseries["vm"] = timeseries["vm"].replace({"vm1": "<b>x</b>", "vm2": "$x_1$"})
    path = write_report(summary, timeseries, tmp_path, title="<u>title</u> & more")
    page = path.read_text(encoding="utf-8")
    for raw in ("<b>x</b>", "<i>p</i>", "<script", "<u>title</u>"):
        assert raw not in page
    assert '<th scope="col">&lt;b&gt;x&lt;/b&gt;</th>' in page
    assert "&lt;i&gt;p&lt;/i&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.toml" in page
    assert "<h1>&lt;u&gt;title&lt;/u&gt; &amp; more</h1>" in page
    assert page.count("<svg") == len(VM_FIGURES)


def test_the_report_is_the_same_for_the_same_run(
    report_dir: Path, ballooning: RunResult, swapping: RunResult
) -> None:
    page = render_report(
        ballooning.summary,
        ballooning.timeseries,
        title="Ballooning against host swapping",
        comparison=[("with balloons", ballooning.summary), ("swapping only", swapping.summary)],
    )
    assert page == (report_dir / "report.html").read_text(encoding="utf-8")


def test_throughput_alone_is_shown_when_the_cli_adds_it(ballooning: RunResult) -> None:
    summary = copy.deepcopy(ballooning.summary)
    page = render_report(summary, None, title="t")
    assert "throughput alone" not in page
    for vm in summary["vms"]:
        vm["throughput_alone"] = 2 * vm["throughput"]
    page = render_report(summary, None, title="t")
    assert "throughput alone on the host" in page
    assert page.count("<td>0.50</td>") == len(summary["vms"])


def test_a_native_report_has_its_processes(tmp_path: Path, native: RunResult) -> None:
    page = write_report(native.summary, None, tmp_path, title="native").read_text()
    assert 'id="process-table"' in page and 'id="vm-table"' not in page
    assert "native: 3 processes" in page
    assert page.count("<svg") == 1
    for p in native.summary["processes"]:
        assert f'<th scope="row">{p["name"]}</th>' in page
        assert f"<td>{p['major_faults']:,}</td>" in page


def test_a_partial_summary_still_renders(ballooning: RunResult) -> None:
    summary: dict[str, Any] = copy.deepcopy(ballooning.summary)
    del summary["host"]["time_in_state"], summary["host"]["reclaimed_pages"]
    del summary["scenario"], summary["seed"]
    for vm in summary["vms"]:
        for key in ("balloon_pages_max", "double_paging_reads", "processes", "throughput"):
            del vm[key]
    page = render_report(summary, None, title="partial", comparison=[("a", summary)])
    assert "balloon, most" not in page and "time in state" not in page
    assert '<th scope="row">seed</th><td>—</td>' in page
    # the comparison keeps what it can compute; a metric no run has is left out
    assert "major faults" in page and "combined throughput" not in page
    assert render_report({"mode": "native", "processes": []}, None, title="empty")


def test_inline_svg_drops_the_xml_preamble_and_prefixes_ids() -> None:
    svg = (
        '<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n'
        '  "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
        '<svg xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 1 1" '
        'xmlns="http://www.w3.org/2000/svg">\n <metadata><rdf:RDF/></metadata>\n'
        ' <defs><path id="m1" d="M 0 0"/><clipPath id="p1"/></defs>\n'
        ' <use xlink:href="#m1" clip-path="url(#p1)"/><a href="#other"/>\n</svg>\n'
    )
    out = inline_svg(svg, prefix="fig")
    assert out.startswith('<svg viewBox="0 0 1 1" role="img">')
    assert "http" not in out and "metadata" not in out
    assert 'id="fig-m1"' in out and 'xlink:href="#fig-m1"' in out
    assert 'clip-path="url(#fig-p1)"' in out
    assert 'href="#other"' in out  # not an id of this SVG: left alone


# ------------------------------------------------------------------------ in a browser


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "headless Chromium is needed to check that report.html renders: "
        "install the Debian package `chromium` (apt-get install chromium)"
    )


def test_the_report_renders_in_a_browser(report_dir: Path, tmp_path: Path) -> None:
    browser = chromium()
    url = (report_dir / "report.html").as_uri()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu",
              f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1280,2000", url],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1 << 24)
    assert colours is not None
    assert len(colours) > 50  # text, table shading and the first figure's colours
    white = sum(n for n, rgb in colours if rgb == (255, 255, 255))
    assert white < 0.9 * image.width * image.height

    dom = subprocess.run(
        [*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count("<svg") == len(VM_FIGURES)
    assert dom.count("<table") >= 5  # run, host, VMs, processes, comparison
    assert 'id="vm-table"' in dom and 'id="comparison-table"' in dom
    assert "Ballooning against host swapping" in dom
