"""The reporter: rich tables rendered into a string console, and the csv / markdown / json exports."""

import io
import json

import pandas as pd
import pytest

from bench import results
from bench.report.export import EXPORT_COLUMNS, export
from bench.report.load import load
from bench.report.tables import render_to_text
from bench.units import format_rate, format_seconds


def _doc(hostname="node1", started="2026-11-24T10:00:00.000Z"):
    def case(workload, params, status, throughput=None, unit="FLOP", error=None, flags=()):
        return {
            "id": f"{workload}(...)@cpu",
            "workload": workload,
            "params": params,
            "device": "cpu",
            "status": status,
            "error": error,
            "work_unit": unit,
            "work_per_iter": 1.0,
            "iterations": 10,
            "repeats": 5,
            "seconds_per_iter": {"median": 2.5e-3, "cv": 0.012} if throughput else None,
            "raw_seconds": [],
            "throughput": {"median": throughput} if throughput else None,
            "energy": None,
            "efficiency": None,
            "memory": None,
            "verify": None,
            "flags": list(flags),
        }

    return {
        "schema": results.SCHEMA,
        "run": {
            "id": "abc123",
            "started_at": started,
            "finished_at": started,
            "wattbench_version": "0",
            "command": "wattbench run",
            "status": "complete",
        },
        "host": {"hostname": hostname, "os": "Linux", "python": "3.11", "torch": "2.13"},
        "devices": [{"id": "cpu", "kind": "cpu", "name": "Test CPU", "memory_bytes": 1}],
        "workloads": {
            "matmul": {
                "params": {"m": {"kind": "int"}, "n": {"kind": "int"}, "k": {"kind": "int"}, "dtype": {"kind": "choice"}},
                "shape": ["m", "n", "k"],
            },
            "membw": {"params": {"op": {"kind": "choice"}, "size": {"kind": "bytes"}, "dtype": {"kind": "choice"}}},
        },
        "cases": [
            case("matmul", {"m": 2048, "n": 2048, "k": 2048, "dtype": "float32"}, "ok", 1.9412e11, flags=["power_unmeasured"]),
            case("membw", {"op": "triad", "size": 268435456, "dtype": "float32"}, "ok", 3.1234e10, unit="byte"),
            case("matmul", {"m": 8, "n": 8, "k": 8, "dtype": "float8"}, "skipped", error="float8 matmul needs an NVIDIA GPU"),
        ],
    }


@pytest.fixture
def frame(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_doc()))
    return load([path])


def test_table_text(frame):
    text = render_to_text(frame, width=200)
    assert "node1 | cpu Test CPU | 2026-11-24T10:00:00.000Z | complete" in text
    assert "2048³ fp32" in text
    assert "194.1 GFLOP/s" in text
    assert "31.23 GB/s" in text
    assert "op=triad size=256MiB fp32" in text
    assert "2.5 ms" in text and "1.2%" in text
    assert "power_unmeasured" not in text  # said once, not on every row
    assert text.count("energy not measured") == 1 and "--nominal-watts" in text
    assert "skipped" in text and "float8 matmul needs an NVIDIA GPU" in text


def test_several_runs_are_matched_and_aggregated(tmp_path):
    for i, host in enumerate(("alpha", "beta")):
        (tmp_path / f"{i}.json").write_text(json.dumps(_doc(hostname=host)))
    text = render_to_text(load([tmp_path]), width=200)
    assert "throughput by hardware, 2 run(s)" in text
    assert text.count("2048³ fp32") == 1  # one row per case, not per run
    assert "194.1 GFLOP/s" in text and "2 run(s)" in text


def test_plain_lines_align_and_wrap_between_words():
    from bench.report.layout import Column, fit, plain_lines

    columns = [Column("A", ["1", "333"]), Column("Bee", ["two\nlines", "x"], justify="left")]
    kept, _ = fit(columns, None)
    text = plain_lines(kept, "title")
    assert text.splitlines() == ["title", "  A | Bee", "----+------", "  1 | two", "    | lines", "333 | x"]
    wrapped = [Column("P", ["alpha beta gamma"], justify="left", wrap=True), Column("N", ["12.5 GB/s"])]
    kept, _ = fit(wrapped, 1 + 3 * 2 + 10 + 9)
    assert plain_lines(kept).splitlines()[2:] == ["alpha beta | 12.5 GB/s", "gamma      |"]


def test_plain_lines_wrap_title_and_caption_at_the_width():
    from bench.report.layout import Column, fit, plain_lines

    kept, _ = fit([Column("A", ["1"]), Column("Bee", ["x"], justify="left")], 40)
    title = "attention batch=4 heads=16 seq=2048 head_dim=128 bf16 on cuda:0"
    caption = (
        "left out at 40 columns: Power over time, Energy source, Energy, Energy/work, Time/iter "
        "(a wider terminal, or a pipe, shows them)"
    )
    lines = plain_lines(kept, title, caption, 40).splitlines()
    assert max(len(line) for line in lines) <= 40
    assert " ".join(lines[:2]) == title  # wrapped between words, nothing lost
    assert " ".join(lines[-4:]) == caption and lines[-4].startswith("left out at 40 columns:")
    assert plain_lines(kept, title, caption).splitlines()[0] == title  # no width: as it is


def test_a_large_table_is_plain_text_that_fits(frame, monkeypatch):
    """Past LARGE_TABLE_CELLS the table is plain text laid out by the same rules: it fits the
    console and keeps every figure whole."""
    from bench.report import tables as report

    monkeypatch.setattr(report, "LARGE_TABLE_CELLS", 0)
    text = render_to_text(frame, width=100)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert " | " in text and "┃" not in text
    assert "194.1 GFLOP/s" in text and "skipped" in text


def test_csv_reads_back_with_pandas(frame):
    back = pd.read_csv(io.StringIO(export(frame, "csv")))
    assert list(back.columns) == EXPORT_COLUMNS
    assert len(back) == 3
    assert back.loc[0, "throughput"] == pytest.approx(1.9412e11)
    assert back.loc[2, "status"] == "skipped"


def test_markdown_is_a_table(frame):
    lines = export(frame, "markdown").strip().splitlines()
    assert lines[0].startswith("| Host | Device | Workload |")
    assert set(lines[1]) <= {"|", "-"}
    assert len(lines) == 2 + 3
    assert "| 194.1 GFLOP/s |" in lines[2]


def test_json_export_has_nulls_not_nan(frame):
    records = json.loads(export(frame, "json"))
    assert records[2]["throughput"] is None
    assert records[0]["workload"] == "matmul"


@pytest.mark.parametrize(
    "value, unit, text",
    [
        (1.9412e11, "FLOP", "194.1 GFLOP/s"),
        (9.89e14, "FLOP", "989 TFLOP/s"),
        (3.35e12, "byte", "3.35 TB/s"),
        (512.0, "byte", "512 B/s"),
        (None, "FLOP", "-"),
    ],
)
def test_format_rate(value, unit, text):
    assert format_rate(value, unit) == text


def test_format_seconds():
    assert [format_seconds(x) for x in (2.0, 2.5e-3, 4e-6, 5e-9)] == ["2 s", "2.5 ms", "4 us", "5 ns"]


def test_compact_tokens_take_only_from_a_generator():
    """`only` is read once: a generator names every parameter it yields, not just the first."""
    from bench.params import ParamSchema, compact_tokens

    schema = ParamSchema({"op": "choice", "size": "bytes", "dtype": "choice"})
    params = {"op": "triad", "size": 268435456, "dtype": "float32"}
    assert compact_tokens(params, schema, only=(k for k in ("op", "size", "dtype"))) == ["op=triad", "size=256MiB", "fp32"]
    assert compact_tokens(params, schema, only=iter(["size", "dtype"])) == ["size=256MiB", "fp32"]
