"""Tables that fit: at 100, 120 and 200 columns and through a pipe, no number or unit is cut,
no parameter is broken across lines, and no line is wider than the console."""

import json
import re
import subprocess
import sys

import pytest

from bench import results
from bench.params import ParamSchema, compact_tokens
from bench.report.carbon import grid_intensity
from bench.report.load import load
from bench.report.tables import ReportOptions, render_to_text
from bench.units import format_rate

SCHEMAS = {
    "matmul": {
        "params": {"m": {"kind": "int"}, "n": {"kind": "int"}, "k": {"kind": "int"}, "dtype": {"kind": "choice"}},
        "shape": ["m", "n", "k"],
    },
    "attention": {
        "params": {k: {"kind": "int"} for k in ("batch", "heads", "seq", "head_dim")}
        | {"causal": {"kind": "bool"}, "dtype": {"kind": "choice"}, "pass": {"kind": "choice"}, "backend": {"kind": "choice"}}
    },
    "membw": {"params": {"op": {"kind": "choice"}, "size": {"kind": "bytes"}, "dtype": {"kind": "choice"}}},
}


def _case(workload, params, throughput, unit="FLOP", watts=None, source="nvml_energy", status="ok", error=None, flags=()):
    energy = None
    if watts is not None:
        energy = {
            "joules": watts * 3.0,
            "avg_watts": watts,
            "peak_watts": watts * 1.1,
            "source": source,
            "trace": [[i * 0.05, watts * (1 + 0.05 * (i % 7))] for i in range(60)],
        }
    ok = status == "ok"
    return {
        "id": f"{workload}(...)@cuda:0",
        "workload": workload,
        "params": params,
        "device": "cuda:0",
        "status": status,
        "error": error,
        "work_unit": unit,
        "work_per_iter": 1e9,
        "iterations": 10,
        "repeats": 15,
        "seconds_per_iter": {"median": 1e9 / throughput, "cv": 0.031} if ok else None,
        "raw_seconds": [1e9 / throughput] * 3 if ok else [],
        "throughput": {"median": throughput} if ok else None,
        "energy": energy if ok else None,
        "efficiency": throughput / watts if ok and watts else None,
        "memory": None,
        "verify": None,
        "flags": list(flags),
    }


def _doc(device="NVIDIA H100 80GB HBM3", run_id="a" * 32, scale=1.0):
    attention = {"batch": 4, "heads": 16, "seq": 2048, "head_dim": 128, "dtype": "bfloat16", "backend": "auto"}
    cases = [
        _case(
            "matmul",
            {"m": 8192, "n": 8192, "k": 8192, "dtype": "bfloat16"},
            7.123e14 * scale,
            watts=688.4,
            flags=["throttled:sw_power_cap"],
        ),
        _case("matmul", {"m": 8192, "n": 8192, "k": 8192, "dtype": "float8"}, 1.2345e15 * scale, watts=699.9),
        _case("matmul", {"m": 4096, "n": 1024, "k": 8192, "dtype": "tf32"}, 3.02e14 * scale, watts=512.0, flags=["unstable"]),
        *(
            _case("attention", {**attention, "causal": causal, "pass": p}, 4.5e14 * scale, watts=620.5)
            for causal in (False, True)
            for p in ("forward", "forward+backward")
        ),
        _case(
            "attention",
            {**attention, "causal": True, "pass": "forward", "backend": "cudnn"},
            0,
            status="failed",
            error="RuntimeError: cuDNN Frontend error: [cudnn_frontend] Error: No execution plans support the graph.",
        ),
        *(
            _case("membw", {"op": op, "size": 268435456, "dtype": "float32"}, 3.1e12 * scale, unit="byte", watts=410.25)
            for op in ("copy", "scale", "add", "triad", "dot")
        ),
        _case(
            "membw",
            {"op": "h2d", "size": 268435456, "dtype": "float32"},
            5.4e10 * scale,
            unit="byte",
            watts=120.0,
            source="nvml_power_instant",
            flags=["window_too_short"],
        ),
    ]
    return {
        "schema": results.SCHEMA,
        "run": {
            "id": run_id,
            "started_at": "2026-11-30T10:00:00.000Z",
            "finished_at": None,
            "wattbench_version": "0",
            "command": "wattbench run",
            "status": "complete",
        },
        "host": {
            "hostname": "gpu-node-017.cluster.example",
            "os": "Linux",
            "python": "3.11",
            "torch": "2.13",
            "driver": "570.86.15",
        },
        "devices": [{"id": "cuda:0", "kind": "cuda", "name": device, "memory_bytes": 1, "power_limit_w": 700}],
        "workloads": SCHEMAS,
        "cases": cases,
    }


@pytest.fixture
def run_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_doc()))
    return path


def _figures(doc):
    """Every throughput as the table writes it: each must appear whole."""
    return [format_rate(c["throughput"]["median"], c["work_unit"]) for c in doc["cases"] if c["status"] == "ok"]


def _tokens(doc):
    return {t for c in doc["cases"] for t in compact_tokens(c["params"], ParamSchema.from_dict(SCHEMAS[c["workload"]]))}


def _check(text, width, doc):
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, max(lines, key=len)
    assert "…" not in text
    for figure in _figures(doc):
        assert figure in text, figure
    # A parameter token is never split: wherever a token's first part shows, the whole token does.
    words = set(re.findall(r"[^\s│┃|]+", text))
    for token in _tokens(doc):
        head = token.split("=")[0] + "=" if "=" in token else token
        parts = [w for w in words if w.startswith(head)]
        assert all(w == token or w in _tokens(doc) or not token.startswith(w) for w in parts), (token, parts)
        assert token in words, token


@pytest.mark.parametrize("width", [100, 120, 200])
def test_one_run_fits_every_width(run_file, width):
    doc = json.loads(run_file.read_text())
    for options in (ReportOptions(), ReportOptions(grid=grid_intensity("France"))):
        text = render_to_text(load([run_file]), width=width, options=options)
        _check(text, width, doc)
        assert "throttled:sw_power_cap" in text and "execution" in text  # flags and the error, whole words
        if width == 200:
            assert "left out" not in text and "Power over time" in text


@pytest.mark.parametrize("width", [100, 120, 200])
def test_hardware_side_by_side_fits_every_width(tmp_path, width):
    names = ["NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA B200", "NVIDIA A100-SXM4-80GB"]
    for i, name in enumerate(names):
        (tmp_path / f"{i}.json").write_text(json.dumps(_doc(name, f"{i:032x}", 1 + i / 10)))
    text = render_to_text(load([tmp_path]), width=width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text
    for i in range(len(names)):
        for figure in _figures(_doc(scale=1 + i / 10)):
            assert figure in text


def test_shared_parameters_are_said_once(run_file):
    text = render_to_text(load([run_file]), width=200)
    assert "attention batch=4 heads=16 seq=2048 head_dim=128 bf16" in text  # the group's title
    assert text.count("head_dim=128") == 1
    assert "8192³" in text and "4096×1024×8192" in text and "tf32" in text
    assert "membw size=256MiB fp32" in text and "op=triad" in text


def test_a_pipe_gets_one_line_per_case(run_file):
    done = subprocess.run(
        [sys.executable, "-m", "bench", "report", str(run_file)],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    )
    text = done.stdout
    doc = json.loads(run_file.read_text())
    assert "…" not in text and "left out" not in text
    for figure in _figures(doc):
        rows = [line for line in text.splitlines() if figure in line and "│" in line]
        assert rows and all(" W " in line and "ok" in line for line in rows)  # each row whole, on one line
    assert "causal=false pass=forward+backward" in text


def test_a_large_table_wraps_its_title_and_caption(run_file, monkeypatch):
    """Past LARGE_TABLE_CELLS (plain lines) the group title and the "left out" caption wrap at
    the width too, between words."""
    from bench.report import tables

    monkeypatch.setattr(tables, "LARGE_TABLE_CELLS", 0)
    doc = json.loads(run_file.read_text())
    text = render_to_text(load([run_file]), width=100)
    _check(text, 100, doc)
    assert "┃" not in text and "left out at 100 columns:" in text
    assert "a wider terminal, or a pipe, shows them)" in " ".join(text.split())


# --- the gate's table ----------------------------------------------------------------------------

LONG_NOTE = "now failed: RuntimeError: cuDNN Frontend error: [cudnn_frontend] Error: No execution plans support the graph."


@pytest.fixture
def compared(tmp_path):
    """Three runs a side on different hardware (note "different hardware, 3 vs 3 runs"), and
    one case that now fails with a long error as its note; (base folder, current folder, comparisons)."""
    from dataclasses import replace

    from bench.report import gate

    base, cur = tmp_path / "base", tmp_path / "cur"
    base.mkdir()
    cur.mkdir()
    for i in range(3):
        (base / f"{i}.json").write_text(json.dumps(_doc(run_id=f"b{i:031x}", scale=1 + i / 100)))
        (cur / f"{i}.json").write_text(json.dumps(_doc("NVIDIA H200", run_id=f"c{i:031x}", scale=0.9 + i / 100)))
    comps = gate.compare(load([base]), load([cur]), allow_different_hardware=True)
    assert any(c.note == "different hardware, 3 vs 3 runs" and c.workload == "attention" for c in comps)
    comps.append(replace(comps[3], verdict="failed", current=None, ratio=None, low=None, high=None, note=LONG_NOTE))
    return base, cur, comps


def _comparison_text(comps, width):
    import io

    from rich.console import Console

    from bench.report.tables import comparison_table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width or 100_000, color_system=None)
    console.print(comparison_table(comps, "throughput", "throughput: cur vs base (threshold 5%)", width), crop=False)
    return buffer.getvalue()


def _check_comparison(text, width, comps):
    lines = text.splitlines()
    if width is not None:
        assert max(len(line) for line in lines) <= width, max(lines, key=len)
    assert "…" not in text
    words = set(re.findall(r"[^\s│┃|]+", text))
    for c in comps:
        for figure in (c.baseline, c.current):
            if figure is not None:
                assert format_rate(figure, c.unit) in text, format_rate(figure, c.unit)
        if c.ratio is not None:
            assert f"{c.ratio:.3f}" in words, f"{c.ratio:.3f}"
        assert c.workload in words and all(token in words for token in c.params.split()), c.params
    assert {"different", "hardware,", "runs"} <= words


@pytest.mark.parametrize("width", [100, 120, 200])
def test_comparison_fits_every_width(compared, width):
    _, _, comps = compared
    text = _comparison_text(comps, width)
    _check_comparison(text, width, comps)
    assert "Case" in text and "Workload" not in text
    if width == 100:
        assert "95% interval" not in text.replace("left out at 100 columns: 95% interval", "")
        assert "left out at 100 columns: 95% interval" in text
    else:
        assert "95% interval" in text and "left out" not in text
        assert all(f"{c.low:.3f} - {c.high:.3f}" in text for c in comps if c.low is not None)


def test_comparison_through_a_pipe_is_one_line_a_case(compared, capsys):
    from bench.cli import main

    base, cur, _ = compared
    assert main(["compare", str(base), str(cur), "--allow-different-hardware"]) == 1  # 10% slower
    text = capsys.readouterr().out
    comps = [c for c in compared[2] if c.note != LONG_NOTE]
    _check_comparison(text, None, comps)
    for c in comps:
        rows = [line for line in text.splitlines() if f"{c.workload} {c.params} " in line]
        assert len(rows) == 1 and c.note in rows[0] and c.verdict in rows[0]
    assert "left out" not in text


@pytest.mark.parametrize("width", [40, 60, 80])
def test_too_narrow_for_any_table_prints_stacked_lines(compared, run_file, width):
    """Narrower than the narrowest table: never a table rich would cut, but each row as
    "Column: value" lines wrapped at the width, every column kept."""
    _, _, comps = compared
    text = _comparison_text(comps, width)
    _check_comparison(text, width, comps)
    assert "┃" not in text and "left out" not in text
    assert "Ratio: 0.901" in text and "Verdict: slower" in text and "95% interval: 0.88" in text
    doc = json.loads(run_file.read_text())
    report = render_to_text(load([run_file]), width=width)
    _check(report, width, doc)  # a group that fits is still a table; one that does not is stacked
    assert ("Throughput: 712.3 TFLOP/s" in report) == (width <= 60)
