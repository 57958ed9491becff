"""Fuzzing the input edges: no scenario file and no trace file makes memvirt print a traceback.

memvirt reads two kinds of files a user hands it: scenario files (TOML) and
trace files (text, valgrind lackey, NumPy ``.npy`` and the binary ``.mvt``,
each of them plain, gzip or zstd). Whatever bytes they hold, reading them
must end in one of two ways: the input is accepted, or it is refused with
memvirt's own error (:class:`~memvirt.config.ScenarioError`,
:class:`~memvirt.traces.model.TraceError`) whose message names the file and
where in it the problem is. From the command line a refusal is exit status 2
and one ``memvirt: error:`` message, never a Python traceback.

The inputs are made by hypothesis: the real example scenarios and small valid
traces of every format, mutated (keys deleted, duplicated or replaced by
values of the wrong type, huge or negative numbers, bits flipped, bytes cut
off or appended, headers broken), and arbitrary TOML documents and bytes.

Each test tries a modest number of inputs so that the suite stays fast. For a
long run set ``MEMVIRT_FUZZ_EXAMPLES``::

    MEMVIRT_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py

``docs/reliability.md`` records what the long runs found.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from memvirt.cli import app
from memvirt.config import ScenarioError, load_scenario
from memvirt.traces.formats import UNKNOWN_COUNT, encode_records, pack_header
from memvirt.traces.model import Trace, TraceError
from memvirt.traces.readers import FORMATS, open_trace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.toml") if not p.name.startswith("sweep-"))
LACKEY_SAMPLE = ROOT / "tests" / "data" / "lackey-echo-hello.txt"

#: Inputs per test: the default keeps the file fast; MEMVIRT_FUZZ_EXAMPLES asks for more.
_ASKED = int(os.environ.get("MEMVIRT_FUZZ_EXAMPLES", "0") or 0)


def fuzz(default: int) -> Callable[[Any], Any]:
    """Hypothesis settings for a fuzz test of ``default`` inputs (or MEMVIRT_FUZZ_EXAMPLES)."""
    return settings(
        max_examples=_ASKED or default,
        deadline=None,
        database=None,  # nothing written into the working tree
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


runner = CliRunner()

# ------------------------------------------------------------------ what a good refusal is

# After "FILE", where the problem is: ":LINE", ":LINE:COLUMN", a byte offset, a --set
# setting, or a key path such as "vms.0.memory" (or "(the scenario)" for the whole file).
_SCENARIO_WHERE = re.compile(
    r":\d+(:\d+)?: \S"
    r"|: byte \d+: "
    r"|: --set "
    r"|: (\(the scenario\)|{key}(\.{key})*)( = .*)?( \(from --set .*\))?: \S".format(
        key=r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")'  # bare, or quoted as TOML quotes it
    )
)


def assert_located_scenario_error(err: ScenarioError, path: Path) -> None:
    """Every line of the error names the file and a place in it."""
    text = str(err)
    assert text, "an empty error message"
    for line in text.split("\n"):
        assert line.isprintable(), f"the error holds characters a terminal does not show: {line!r}"
        assert line.startswith(str(path)), f"the error does not name the file: {line!r}"
        rest = line[len(str(path)) :]
        assert _SCENARIO_WHERE.match(rest), f"the error does not say where: {line!r}"


# A trace error names the file, then the place: ":LINE", a record, an index, a byte
# count, or the part of the file at fault (its header or magic: what says the format) and
# why the file as a whole is refused (it is empty, or of a kind memvirt does not read).
_TRACE_WHERE = re.compile(
    r":\d+: \S"
    r"|: .*(record \d+|index \d+|after \d+ decompressed bytes|file holds|bytes after them)"
    r"|: (truncated: the file ends inside the \d+-byte header"
    r"|not a memvirt binary trace \(bad magic\)"
    r"|binary trace (version|address mode) \d+ is not"
    r"|not a NumPy \.npy file \((it|its header|its dtype|the file ends inside the header|"
    r"format version)"
    r"|expected a 1-D integer array"
    r"|the trace has no accesses"
    r"|\.npz archives are not read"
    r"|(a lackey trace|the binary trace's header) .*holds byte addresses, not page numbers)"
)


def assert_located_trace_error(err: TraceError, path: Path) -> None:
    """The error names the file and a place in it (or the part of it at fault)."""
    text = str(err)
    assert "\n" not in text, f"a trace error is one line: {text!r}"
    assert text.startswith(str(path)), f"the error does not name the file: {text!r}"
    assert _TRACE_WHERE.match(text[len(str(path)) :]), f"the error does not say where: {text!r}"


def assert_clean_cli(result: Any) -> None:
    """Exit status 0, or 2 with a ``memvirt: error:`` message; never a traceback."""
    exc = result.exception
    shown = result.output  # stdout and stderr, as a terminal shows them
    assert exc is None or isinstance(exc, SystemExit), (
        f"{type(exc).__name__}: {exc}\n{shown[-2000:]}"
    )
    assert "Traceback" not in shown
    assert result.exit_code in (0, 2), shown[-2000:]
    event(f"exit status {result.exit_code}")
    if result.exit_code == 2:
        assert result.stderr.startswith("memvirt: error: "), result.stderr[:500]


# ------------------------------------------------------------------ TOML, written back


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: object) -> str:
    """``value`` as a TOML value on one line (tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{_toml_string(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_document(data: dict[str, Any]) -> str:
    """A TOML document of ``data``: one line per top-level key."""
    return "".join(f"{_toml_string(k)} = {toml_value(v)}\n" for k, v in data.items())


# ------------------------------------------------------------------ scenario strategies

SAFE_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)

WEIRD_NUMBERS = st.sampled_from(
    [0, -1, 1, 2, 3, 7, 4095, 4097, 2**31, 2**62, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63)]
)
WEIRD_STRINGS = st.sampled_from(
    [
        "",
        "4KiB",
        "0B",
        "-1GiB",
        "1.5MiB",
        "99999999999TiB",
        "1e9",
        "0x400000",
        "0x",
        "lru",
        "fifo",
        "nested",
        "shadow",
        "ssd",
        "hdd",
        "random",
        "zipf",
        "hotcold",
        "nan",
        "inf",
        "64:4",
        "0:0",
        "high",
        "vm1",
        "app",
        "does-not-exist.mvt",
    ]
)
LEAVES = st.one_of(
    WEIRD_NUMBERS,
    st.integers(),
    st.floats(),
    WEIRD_STRINGS,
    SAFE_TEXT,
    st.booleans(),
)
WEIRD_VALUES = st.one_of(
    LEAVES,
    st.lists(LEAVES, max_size=3),
    st.dictionaries(
        st.sampled_from(["kind", "name", "memory", "x"]) | SAFE_TEXT, LEAVES, max_size=3
    ),
)

#: Arbitrary TOML documents: nested tables and lists of anything.
TOML_DOCUMENTS = st.dictionaries(
    st.sampled_from(["host", "run", "vms", "processes", "hypervisor", "cost"]) | SAFE_TEXT,
    st.recursive(
        LEAVES,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["memory", "name", "kind", "workload", "pages", "seed"])
                | SAFE_TEXT,
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    ),
    max_size=6,
)


def _paths(node: object, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a parsed TOML document (list items by index)."""
    found: list[tuple[Any, ...]] = [here] if here else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*here, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*here, i))
    return found


def _parent(doc: dict[str, Any], path: tuple[Any, ...]) -> Any:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    return node


#: Values near the valid ones: numbers and sizes, so that many mutated scenarios still load
#: and run, and the settings' extremes are tried, not only their types.
NEAR_VALUES = st.one_of(
    WEIRD_NUMBERS,
    st.integers(0, 10**6),
    st.floats(0.0, 1e6),
    st.sampled_from(["4KiB", "1MiB", "64MiB", "2GiB", "1TiB", "0B", "1KiB"]),
    st.booleans(),
)


@st.composite
def mutated_documents(draw: st.DrawFn, gentle: bool = False) -> dict[str, Any]:
    """An example scenario's tables with a few keys deleted, duplicated, added or replaced by
    values of any type; ``gentle``: only plain values replaced by numbers and sizes, or list
    items duplicated, so that many of them still load and run."""
    source = draw(st.sampled_from(EXAMPLES))
    doc: dict[str, Any] = tomllib.loads(source.read_text())
    values = NEAR_VALUES if gentle else WEIRD_VALUES
    ops = (
        ["replace", "replace", "duplicate"] if gentle else ["delete", "replace", "duplicate", "add"]
    )
    for _ in range(draw(st.integers(1, 2 if gentle else 4))):
        paths = _paths(doc)
        if gentle:
            paths = [p for p in paths if not isinstance(_parent(doc, p)[p[-1]], dict | list)]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        key = path[-1]
        op = draw(st.sampled_from(ops))
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(values)
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[key])))
        elif op == "duplicate" and isinstance(parent, dict) and not gentle:
            parent[f"{key}2"] = json.loads(json.dumps(parent[key]))
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "name", "memory", "kind"]))] = draw(values)
    return doc


_NUMBER_OR_STRING = re.compile(rb'"[^"\n]*"|\b\d[\d_.]*\b')


@st.composite
def mutated_bytes(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few byte-level mutations."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                ["flip", "truncate", "insert", "delete", "append", "value", "lines", "prefix"]
            )
        )
        n = len(data)
        at = draw(st.integers(0, n))
        if op == "flip" and n:
            at = min(at, n - 1)
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=64))
        elif op == "prefix":
            data[:0] = draw(st.binary(min_size=1, max_size=16))
        elif op == "value":
            # a number or a string value replaced by another literal: still TOML, mostly
            spots = list(_NUMBER_OR_STRING.finditer(bytes(data)))
            if spots:
                spot = draw(st.sampled_from(spots))
                new = toml_value(draw(WEIRD_VALUES)).encode()
                data[spot.start() : spot.end()] = new
        else:  # "lines": a line duplicated or two lines swapped
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if draw(st.booleans()):
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@st.composite
def scenario_bytes(draw: st.DrawFn) -> bytes:
    """The bytes of a scenario file: mutated examples, arbitrary TOML, or random bytes."""
    kind = draw(st.sampled_from(["tables", "bytes", "both", "document", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    if kind == "document":
        return toml_document(draw(TOML_DOCUMENTS)).encode()
    if kind == "bytes":
        return draw(mutated_bytes(draw(st.sampled_from(EXAMPLES)).read_bytes()))
    text = toml_document(draw(mutated_documents())).encode()
    return draw(mutated_bytes(text)) if kind == "both" else text


# ------------------------------------------------------------------ scenario tests


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz")
    # a trace that a fuzzed scenario may name, next to the scenario
    (path / "t.txt").write_text("0x400000\nW 0x401000\n")
    return path


def check_scenario(path: Path) -> None:
    """Load ``path``: accepted, or refused by a located ScenarioError."""
    try:
        load_scenario(path)
    except ScenarioError as err:
        assert_located_scenario_error(err, path)
        event("refused")
    else:
        event("loaded")


@fuzz(300)
@given(data=scenario_bytes())
@example(data=b"[host]\nmemory = 1\n[run]\naccesses = 1\n")
@example(data=b'"')  # found: a TOML error at the end of the file named no line
@example(data=b'"host" = []\n"\\"" = []\n')  # found: the key path '"' was unreadable
# found: levels = 2**31 made a list of 2**31 page-table widths (the machine ran out of memory)
@example(data=b'[host]\nmemory = "64MiB"\nlevels = 10000000000\n')
@example(data=b'"host" = []\n"\xc2\x85" = {}\n')  # found: a key's U+0085 broke the line
@example(data=b'[run]\naccesses = 1\n[[processes]]\nworkload = { kind = "\\u001b[2J" }\n')
def test_a_fuzzed_scenario_file_is_loaded_or_refused_with_its_location(
    workdir: Path, data: bytes
) -> None:
    path = workdir / "scenario.toml"
    path.write_bytes(data)
    check_scenario(path)


@fuzz(150)
@given(doc=mutated_documents())
def test_a_scenario_with_mutated_settings_is_loaded_or_refused_with_its_location(
    workdir: Path, doc: dict[str, Any]
) -> None:
    path = workdir / "mutated.toml"
    path.write_text(toml_document(doc))
    check_scenario(path)


def _setting_keys() -> list[str]:
    keys: set[str] = set()
    for source in EXAMPLES:
        for path in _paths(tomllib.loads(source.read_text())):
            keys.add(".".join(str(p) for p in path))
    return sorted(keys)


SETTINGS = st.builds(
    "{}={}".format,
    st.sampled_from(_setting_keys()) | st.sampled_from(["vms.vm1.memory", "x", "", "a..b"]),
    st.builds(toml_value, WEIRD_VALUES) | SAFE_TEXT,
) | SAFE_TEXT.filter(lambda t: "\x00" not in t)


@fuzz(150)
@given(example_file=st.sampled_from(EXAMPLES), overrides=st.lists(SETTINGS, min_size=1, max_size=3))
@example(example_file=EXAMPLES[0], overrides=["\x1f"])  # found: the setting was echoed raw
@example(example_file=EXAMPLES[0], overrides=["run.seed=\x1b[2J"])
def test_fuzzed_overrides_are_applied_or_refused_naming_the_setting(
    example_file: Path, overrides: list[str]
) -> None:
    try:
        load_scenario(example_file, overrides)
    except ScenarioError as err:
        assert_located_scenario_error(err, example_file)
        event("refused")
    else:
        event("loaded")


@fuzz(25)
@given(
    data=st.one_of(
        st.builds(toml_document, mutated_documents(gentle=True)).map(str.encode),
        scenario_bytes(),
    )
)
# found: a host of 2**62 bytes passed validation and the run died of MemoryError
@example(
    data=b'[host]\nmemory = 4611686018427387904\n[[processes]]\nname = "a"\nmemory = "1MiB"\n'
    b'workload = { kind = "uniform", pages = 256 }\n[run]\naccesses = 10\n'
)
# found: a quantum of 2**31 accesses passed validation and the run died of MemoryError
@example(
    data=(ROOT / "examples" / "demand-paging.toml")
    .read_bytes()
    .replace(b"seed = 1", b"seed = 1\nquantum_accesses = 2147483648")
)
def test_memvirt_run_on_a_fuzzed_scenario_exits_0_or_2_without_a_traceback(
    workdir: Path, data: bytes
) -> None:
    path = workdir / "run.toml"
    path.write_bytes(data)
    result = runner.invoke(
        app, ["run", str(path), "--set", "run.accesses=1000", "--no-alone", "--quiet"]
    )
    assert_clean_cli(result)


# ------------------------------------------------------------------ valid traces to mutate


def _npy(array: np.ndarray[Any, Any], fortran: bool = False) -> bytes:
    out = io.BytesIO()
    np.save(out, np.asfortranarray(array) if fortran else array)
    return out.getvalue()


def _mvt(page_numbers: bool, count_known: bool) -> bytes:
    addresses = np.array([0x400000, 0x401000, 0x7FFF0000, 3, 0x400008], dtype=np.int64)
    kinds = np.array([0, 1, 2, 0, 1], dtype=np.uint8)
    count = len(addresses) if count_known else UNKNOWN_COUNT
    header = pack_header(page_numbers=page_numbers, page_shift=12, count=count)
    return header + encode_records(addresses, kinds).tobytes()


def _valid_traces() -> dict[str, tuple[str, bytes]]:
    """Small valid traces of every format: name → (file suffix, bytes)."""
    lackey = b"".join(LACKEY_SAMPLE.read_bytes().splitlines(keepends=True)[:40])
    structured = np.zeros(4, dtype=[("address", "<u8"), ("write", "?"), ("fetch", "u1")])
    structured["address"] = [0x1000, 0x2000, 0x3000, 0x4000]
    structured["write"] = [0, 1, 0, 0]
    structured["fetch"] = [0, 0, 1, 0]
    pairs = np.array([[0x1000, 0], [0x2000, 1], [0x1FFF, 1]], dtype=np.int32)
    return {
        "text": (".txt", b"# a comment\n0x7000\nR 0x0\nW 4096   # write\nw,0x2a10\n12345\n"),
        "text-crlf": (".txt", b"\xef\xbb\xbf0x10\r\nW 0X7F3a\r\n\r\n99\r"),
        "lackey": (".txt", lackey),
        "lackey-bare": ("", b"I  04001c80,3\n L 1ffefffd78,8\n S 1ffefffd70,8\n M 0401b0a0,4\n"),
        "npy-1d": (".npy", _npy(np.array([0x1000, 0x2000, 5], dtype=np.int64))),
        "npy-pairs": (".npy", _npy(pairs)),
        "npy-fortran": (".npy", _npy(pairs, fortran=True)),
        "npy-structured": (".npy", _npy(structured)),
        "mvt": (".mvt", _mvt(page_numbers=False, count_known=True)),
        "mvt-pages": (".mvt", _mvt(page_numbers=True, count_known=True)),
        "mvt-streamed": (".mvt", _mvt(page_numbers=False, count_known=False)),
    }


VALID_TRACES = _valid_traces()
SUFFIXES = ["", ".txt", ".npy", ".mvt", ".npz", ".gz", ".zst", ".npy.gz", ".mvt.zst", ".log"]


def _compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


@st.composite
def trace_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, bytes) of a trace: a valid one mutated before or after compression,
    or random bytes (sometimes behind a real gzip/zstd/format header)."""
    kind = draw(st.sampled_from(sorted(VALID_TRACES)) | st.just("random"))
    compression = draw(st.sampled_from(["none", "none", "gzip", "zstd"]))
    if kind == "random":
        head = draw(
            st.sampled_from([b"", b"\x93NUMPY", b"MVTRACE\0", b"\x1f\x8b", b"\x28\xb5\x2f\xfd"])
        )
        data = head + draw(st.binary(max_size=256))
        suffix = draw(st.sampled_from(SUFFIXES))
    else:
        suffix, plain = VALID_TRACES[kind]
        if draw(st.integers(0, 9)) == 0:
            suffix = draw(st.sampled_from(SUFFIXES))
        where = draw(st.sampled_from(["plain", "plain", "compressed", "none"]))
        if where == "plain":
            plain = draw(mutated_bytes(plain))
        data = _compress(plain, compression)
        if where == "compressed":
            data = draw(mutated_bytes(data))
        if compression != "none" and draw(st.booleans()):
            suffix += ".gz" if compression == "gzip" else ".zst"
    return "trace" + suffix, data


TRACE_OPTIONS = st.fixed_dictionaries(
    {
        "format": st.sampled_from([None, None, None, *FORMATS]),
        "page_numbers": st.booleans(),
        "skip_bad": st.booleans(),
        "drop_fetches": st.booleans(),
        "page_size": st.sampled_from([4096, 4096, 1024, 1 << 21]),
        "chunk_accesses": st.sampled_from([1 << 22, 1, 3, 64]),
    }
)


def check_trace(path: Path, options: dict[str, Any]) -> None:
    """Read ``path`` whole: a sane trace, or a located TraceError."""
    try:
        with open_trace(path, **options) as stream:
            trace = stream.read_all()
    except TraceError as err:
        assert_located_trace_error(err, path)
        event("refused")
        return
    event("read")
    assert isinstance(trace, Trace)
    assert len(trace) > 0
    assert trace.addresses.dtype == np.int64 and (trace.addresses >= 0).all()
    assert set(np.unique(trace.writes).tolist()) <= {0, 1}
    if trace.fetches is not None:
        assert not (trace.fetches.astype(bool) & trace.writes.astype(bool)).any()


# ------------------------------------------------------------------ trace tests


def _npy_announcing(rows: int, fortran: bool) -> bytes:
    """An .npy file whose header announces ``rows`` rows of (address, write) and holds two."""
    header = f"{{'descr': '<i4', 'fortran_order': {fortran}, 'shape': ({rows}, 2), }}"
    header += " " * (63 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(16)


DEFAULT_OPTIONS: dict[str, Any] = {
    "format": None,
    "page_numbers": False,
    "skip_bad": False,
    "drop_fetches": False,
    "page_size": 4096,
    "chunk_accesses": 1 << 22,
}


@fuzz(600)
@given(file=trace_files(), options=TRACE_OPTIONS)
# found: a header announcing more rows than one read can ask for raised OverflowError
@example(file=("trace.npy", _npy_announcing(10**19, fortran=True)), options=DEFAULT_OPTIONS)
@example(file=("trace.npy", _npy_announcing(10**19, fortran=False)), options=DEFAULT_OPTIONS)
def test_a_fuzzed_trace_file_is_read_or_refused_with_its_location(
    workdir: Path, file: tuple[str, bytes], options: dict[str, Any]
) -> None:
    name, data = file
    path = workdir / name
    path.write_bytes(data)
    try:
        check_trace(path, options)
    finally:
        path.unlink()


@fuzz(60)
@given(file=trace_files())
def test_memvirt_trace_info_on_a_fuzzed_trace_exits_0_or_2_without_a_traceback(
    workdir: Path, file: tuple[str, bytes]
) -> None:
    name, data = file
    path = workdir / name
    path.write_bytes(data)
    try:
        assert_clean_cli(runner.invoke(app, ["trace", "info", str(path), "--json"]))
    finally:
        path.unlink()


@fuzz(25)
@given(file=trace_files(), page_numbers=st.booleans())
# found: an address beyond the virtual address space stopped the run before the trace's
# second stream was read, and its file was left open (a ResourceWarning)
@example(file=("trace.npy", _npy(np.array([0x1000, 1 << 60], dtype=np.int64))), page_numbers=False)
def test_memvirt_run_replaying_a_fuzzed_trace_exits_0_or_2_without_a_traceback(
    workdir: Path, file: tuple[str, bytes], page_numbers: bool
) -> None:
    name, data = file
    trace = workdir / f"replayed-{name}"
    trace.write_bytes(data)
    scenario = workdir / "replay.toml"
    scenario.write_text(
        '[host]\nmemory = "16MiB"\nswap = { size = "64MiB" }\n'
        '[[processes]]\nname = "app"\n'
        f"trace = {{ path = {_toml_string(trace.name)}, "
        f"page_numbers = {toml_value(page_numbers)} }}\n"
        "[run]\naccesses = 1000\n"
    )
    try:
        result = runner.invoke(app, ["run", str(scenario), "--no-alone", "--quiet"])
        assert_clean_cli(result)
    finally:
        trace.unlink()
