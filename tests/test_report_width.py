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
    "matmul": {"params": {"m": {"kind": "int"}, "n": {"kind": "int"}, "k": {"kind": "int"}, "dtype": {"kind": "choice"}},
               "shape": ["m", "n", "k"]},
    "attention": {"params": {k: {"kind": "int"} for k in ("batch", "heads", "seq", "head_dim")}
                  | {"causal": {"kind": "bool"}, "dtype": {"kind": "choice"}, "pass": {"kind": "choice"}, "backend": {"kind": "choice"}}},
    "membw": {"params": {"op": {"kind": "choice"}, "size": {"kind": "bytes"}, "dtype": {"kind": "choice"}}},
}


def _case(workload, params, throughput, unit="FLOP", watts=None, source="nvml_energy", status="ok", error=None, flags=()):
    energy = None
    if watts is not None:
        energy = {"joules": watts * 3.0, "avg_watts": watts, "peak_watts": watts * 1.1, "source": source,
                  "trace": [[i * 0.05, watts * (1 + 0.05 * (i % 7))] for i in range(60)]}
    ok = status == "ok"
    return {
        "id": f"{workload}(...)@cuda:0", "workload": workload, "params": params, "device": "cuda:0", "status": status,
        "error": error, "work_unit": unit, "work_per_iter": 1e9, "iterations": 10, "repeats": 15,
        "seconds_per_iter": {"median": 1e9 / throughput, "cv": 0.031} if ok else None,
        "raw_seconds": [1e9 / throughput] * 3 if ok else [], "throughput": {"median": throughput} if ok else None,
        "energy": energy if ok else None, "efficiency": throughput / watts if ok and watts else None,
        "memory": None, "verify": None, "flags": list(flags),
    }


def _doc(device="NVIDIA H100 80GB HBM3", run_id="a" * 32, scale=1.0):
    attention = {"batch": 4, "heads": 16, "seq": 2048, "head_dim": 128, "dtype": "bfloat16", "backend": "auto"}
    cases = [
        _case("matmul", {"m": 8192, "n": 8192, "k": 8192, "dtype": "bfloat16"}, 7.123e14 * scale, watts=688.4,
              flags=["throttled:sw_power_cap"]),
        _case("matmul", {"m": 8192, "n": 8192, "k": 8192, "dtype": "float8"}, 1.2345e15 * scale, watts=699.9),
        _case("matmul", {"m": 4096, "n": 1024, "k": 8192, "dtype": "tf32"}, 3.02e14 * scale, watts=512.0, flags=["unstable"]),
        *(_case("attention", {**attention, "causal": causal, "pass": p}, 4.5e14 * scale, watts=620.5)
          for causal in (False, True) for p in ("forward", "forward+backward")),
        _case("attention", {**attention, "causal": True, "pass": "forward", "backend": "cudnn"}, 0, status="failed",
              error="RuntimeError: cuDNN Frontend error: [cudnn_frontend] Error: No execution plans support the graph."),
        *(_case("membw", {"op": op, "size": 268435456, "dtype": "float32"}, 3.1e12 * scale, unit="byte", watts=410.25)
          for op in ("copy", "scale", "add", "triad", "dot")),
        _case("membw", {"op": "h2d", "size": 268435456, "dtype": "float32"}, 5.4e10 * scale, unit="byte", watts=120.0,
              source="nvml_power_instant", flags=["window_too_short"]),
    ]
    return {
        "schema": results.SCHEMA,
        "run": {"id": run_id, "started_at": "2026-11-30T10:00:00.000Z", "finished_at": None, "wattbench_version": "0",
                "command": "wattbench run", "status": "complete"},
        "host": {"hostname": "gpu-node-017.cluster.example", "os": "Linux", "python": "3.11", "torch": "2.13",
                 "driver": "570.86.15"},
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
    done = subprocess.run([sys.executable, "-m", "bench", "report", str(run_file)], capture_output=True, text=True,
                          check=True, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    text = done.stdout
    doc = json.loads(run_file.read_text())
    assert "…" not in text and "left out" not in text
    for figure in _figures(doc):
        rows = [line for line in text.splitlines() if figure in line and "│" in line]
        assert rows and all(" W " in line and "ok" in line for line in rows)  # each row whole, on one line
    assert "causal=false pass=forward+backward" in text
