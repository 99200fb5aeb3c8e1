"""Cross-hardware report: side by side, best marked, ratios to a baseline, energy per unit of
work, carbon, sparklines and the plot."""

import json

import pytest

from bench import results
from bench.cli import main
from bench.errors import UsageError
from bench.report.carbon import PRESETS, grams_co2e, grid_intensity
from bench.report.cells import sparkline
from bench.report.load import load
from bench.report.tables import ReportOptions, render_to_text
from bench.units import format_energy_per_work


def _doc(device, driver, limit, cases):
    return {
        "schema": results.SCHEMA,
        "run": {
            "id": device,
            "started_at": "2026-11-24T00:00:00Z",
            "finished_at": None,
            "wattbench_version": "0",
            "command": "t",
            "status": "complete",
        },
        "host": {"hostname": "h", "os": "Linux", "python": "3.11", "torch": "2.13", "driver": driver},
        "devices": [{"id": "cuda:0", "kind": "cuda", "name": device, "memory_bytes": 1, "power_limit_w": limit}],
        "cases": cases,
    }


def _case(throughput, watts, trace=None):
    return {
        "id": "matmul(m=8192)@cuda:0",
        "workload": "matmul",
        "params": {"m": 8192, "dtype": "bfloat16"},
        "device": "cuda:0",
        "status": "ok",
        "error": None,
        "work_unit": "FLOP",
        "work_per_iter": 1e12,
        "raw_seconds": [1e12 / throughput] * 3,
        "seconds_per_iter": {"median": 1e12 / throughput, "cv": 0.01},
        "throughput": {"median": throughput},
        "energy": {
            "joules": watts * 10,
            "avg_watts": watts,
            "peak_watts": watts,
            "source": "nvml_energy",
            "trace": [[i * 0.1, w] for i, w in enumerate(trace or [watts, watts])],
        },
        "efficiency": throughput / watts,
        "flags": [],
    }


@pytest.fixture
def two_machines(tmp_path):
    # H100: faster but hungrier; H200: slower here but more work per joule.
    (tmp_path / "h100.json").write_text(json.dumps(_doc("NVIDIA H100 80GB HBM3", "560.35", 700, [_case(700e12, 700)])))
    (tmp_path / "h200.json").write_text(json.dumps(_doc("NVIDIA H200", "565.1", 600, [_case(650e12, 500)])))
    return tmp_path


def test_hardware_side_by_side_best_by_metric(two_machines):
    df = load([two_machines])
    text = render_to_text(df, width=220)
    assert "NVIDIA H100 80GB HBM3 (driver 560.35)" in text  # fits whole at 220 columns
    assert "NVIDIA H200 (driver 565.1)" in text  # the power limit is an operating point, not the hardware's name
    assert "700 W)" not in text and "600 W)" not in text
    assert "* 700 TFLOP/s" in text  # best throughput
    assert "650 TFLOP/s" in text and "* 650" not in text
    assert "1 TFLOP/J" in text and "1.3 TFLOP/J" in text
    text = render_to_text(df, width=220, options=ReportOptions(metric="efficiency"))
    assert "* 650 TFLOP/s" in text  # best work per joule
    text = render_to_text(df, width=220, options=ReportOptions(metric="energy"))
    assert "* 650 TFLOP/s" in text  # least energy per unit of work


def test_baseline_ratios(two_machines, capsys):
    assert main(["report", str(two_machines), "--baseline", "H100"]) == 0
    out = capsys.readouterr().out
    assert "relative to NVIDIA H100 80GB HBM3" in out
    assert "1.00x" in out and "0.93x" in out  # 650 / 700
    assert main(["report", str(two_machines), "--baseline", "H100", "--metric", "efficiency"]) == 0
    assert "1.30x" in capsys.readouterr().out  # (650/500) / (700/700)
    assert main(["report", str(two_machines), "--baseline", "A100"]) == 2
    assert "matches none" in capsys.readouterr().err
    assert main(["report", str(two_machines), "--baseline", "NVIDIA"]) == 2
    assert "matches several" in capsys.readouterr().err


def test_energy_per_work_and_carbon_numbers():
    assert format_energy_per_work(1e12, "FLOP") == "1 pJ/FLOP"
    assert format_energy_per_work(3.2e10, "byte") == "31.3 pJ/B"
    assert format_energy_per_work(None, "FLOP") == "-"
    france = grid_intensity("France")
    assert france.g_per_kwh == 56.0 and "Ember" in france.source and france.year == 2023
    assert grams_co2e(3.6e6, france) == pytest.approx(56.0)
    assert grid_intensity("120").g_per_kwh == 120.0
    with pytest.raises(UsageError, match="give gCO2e/kWh"):
        grid_intensity("Atlantis")
    assert all(p.source and p.g_per_kwh > 0 and p.year and p.side in ("generation", "consumption") for p in PRESETS.values())
    korea = grid_intensity("south korea")  # the government's 2023 factor, consumption side (it replaced 413 g)
    assert (korea.g_per_kwh, korea.year, korea.side) == (417.0, 2023, "consumption") and "December 2025" in korea.source
    assert korea.describe().startswith("417 gCO2e/kWh, consumption side, 2023: Korean government")


def test_carbon_column(two_machines, capsys):
    assert main(["report", str(two_machines / "h100.json"), "--grid-intensity", "france"]) == 0
    out = capsys.readouterr().out
    # 1 TFLOP/J -> 1e15 FLOP = 1000 J -> 1000 / 3.6e6 kWh x 56 g = 0.0156 g per PFLOP
    assert "0.0156 g/PFLOP" in out
    assert "carbon at France: 56 gCO2e/kWh, generation side, 2023: Ember" in out
    assert "7 kJ" in out  # energy of the case's window: 700 W x 10 s


def test_sparkline():
    assert sparkline([100, 200, 300, 400, 500, 600, 700, 800], width=8) == "▁▂▃▄▅▆▇█"
    assert sparkline([5.0, 5.0, 5.0]) == "▅▅▅"
    assert sparkline([]) == "" and sparkline(None) == ""
    assert len(sparkline(list(range(1000)))) == 12


def test_plot_writes_png(two_machines, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.png"
    assert main(["report", str(two_machines), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_clear_error(two_machines, tmp_path, without_matplotlib, capsys):
    assert main(["report", str(two_machines), "--plot", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and len(err.strip().splitlines()) == 1


def test_hardware_headers_keep_a_number_with_its_unit(tmp_path):
    """A long hardware label wraps between words, never between "700" and "W"."""
    from bench.report.tables import _header

    label = "NVIDIA H100 80GB HBM3 (driver 570.86.15, 700 W)"
    for width in range(10, len(label)):
        lines = _header(label, width).split("\n")
        assert lines[-1].endswith("700 W)") and not any(line.endswith("700") for line in lines), lines
        assert " ".join(lines) == label and "\u00a0" not in label  # only spaces come back
    for i, name in enumerate(("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA B200", "NVIDIA A100-SXM4-80GB")):
        doc = _doc(name, "570.86.15", 700, [_case(700e12 * (1 + i / 10), 700)])
        (tmp_path / f"{i}.json").write_text(json.dumps(doc))
    text = render_to_text(load([tmp_path]), width=100, options=ReportOptions(baseline="H100"))
    assert max(len(line) for line in text.splitlines()) <= 100
    assert text.count("570.86.15)") == 5  # the heading and 4 headers
    assert not any(line.rstrip(" ┃").endswith("700") for line in text.splitlines())
