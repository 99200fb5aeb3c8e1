"""The site projection (`report --site`, bench/report/site.py) against a hand calculation.

A result file with known figures: an llm decode case on an H100 at 1,000 tokens/s and 500 W
(measured by NVML, device boundary), 100 W idle, for a demand of 1e9 tokens a day at a load
factor of 0.5, PUE 1.2, Korea's grid (417 g/kWh) and price (182.7 KRW/kWh). Worked by hand:

    one device serves   1,000 tok/s x 86,400 s x 0.5         = 43,200,000 tokens a day
    devices             ceil(1e9 / 43,200,000) = ceil(23.15)  = 24
    watts per device    0.5 x 500 W + 0.5 x 100 W             = 300 W
    IT power            24 x 300 W x (10.2 / 5.6 = 1.8214...) = 13,114.29 W   (default node overhead: ~)
    facility power      13,114.29 W x 1.2                     = 15,737.14 W
    energy a year       15.73714 kW x 8,760 h                 = 137.8574 MWh
    CO2 a year          137.8574 MWh x 417 kg/MWh             = 57.4865 t
    cost a year         137,857.37 kWh x 182.7 KRW            = 25,186,541.76 KRW
    per million tokens  a year serves 1e9 x 365 / 1e6          = 365,000 M tokens
                        25,186,541.76 / 365,000               = 69.0042 KRW
                        57,486,523.9 g / 365,000              = 157.497 g

With node energy measured (the same 500 W and 100 W at the node boundary), no overhead is applied:
24 x 300 W x 1.2 = 8,640 W at the facility, 75.6864 MWh, 31.5612 t, 13,827,905.28 KRW.

With both measured over the same windows (device 500 W by NVML, node 700 W by its BMC): the
measured ratio 700 / 500 = 1.4 replaces the default overhead, and nothing is an estimate:
    IT power            24 x 300 W x 1.4                      = 10,080 W
    facility power      10,080 W x 1.2                        = 12,096 W
    energy a year       12.096 kW x 8,760 h                   = 105.96096 MWh
    CO2 a year          105.96096 MWh x 417 kg/MWh            = 44.18572 t
    cost a year         105,960.96 kWh x 182.7 KRW            = 19,359,067.39 KRW

The same measured on one GPU of a node of eight (the other seven idle, in the node's 700 W but
not in the device's 500 W): the ratio overstates the node's share and is left out, said so; the
default applies, and the figures are the first calculation's (13,114 W IT, 25,186,542 KRW).
"""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.report.carbon import grid_intensity
from bench.report.load import load
from bench.report.site import PRICES, Site, project


def _file(tmp_path, boundary: str = "device", node_watts: float | None = None, gpus_on_node: int | None = None):
    raw = [0.001] * 5  # seconds per token: 1,000 tokens/s
    doc = {
        "schema": "wattbench.run/1",
        "run": {
            "id": "site",
            "started_at": "2026-12-01T00:00:00Z",
            "finished_at": None,
            "wattbench_version": "0",
            "command": "test",
            "status": "complete",
        },
        "host": {"hostname": "h", "os": "Linux", "python": "3.11", "torch": "2.13", "driver": "560.35.03"},
        "devices": [{"id": "cuda:0", "kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 1}],
        "cases": [
            {
                "id": "llm(model=tiny,phase=decode)@cuda:0",
                "workload": "llm",
                "params": {"model": "tiny", "phase": "decode"},
                "device": "cuda:0",
                "status": "ok",
                "error": None,
                "work_unit": "token",
                "work_per_iter": 1.0,
                "raw_seconds": raw,
                "seconds_per_iter": {"median": 0.001},
                "throughput": {"median": 1000.0},
                "energy": {
                    "joules": 5000.0,
                    "avg_watts": 500.0,
                    "source": "nvml_energy",
                    "boundary": boundary,
                    "duration_s": 10.0,
                    "idle_watts": 100.0,
                },
                "efficiency": 2.0,
                "flags": [],
            }
        ],
    }
    if node_watts is not None:
        node = {
            "joules": node_watts * 10.0,
            "avg_watts": node_watts,
            "source": "redfish_energy",
            "boundary": "node",
            "duration_s": 10.0,
        }
        doc["cases"][0]["node_energy"] = node
        if gpus_on_node is not None:
            doc["run"]["node_power"] = {"source": "redfish_energy", "gpus_on_node": gpus_on_node, "gpus_per_case": 1}
    path = tmp_path / f"{boundary}{'-node' if node_watts else ''}{gpus_on_node or ''}.json"
    path.write_text(json.dumps(doc))
    return path


KOREA = grid_intensity("South Korea")
SITE = Site(units_per_day=1e9, unit="token", pue=1.2, load_factor=0.5, grid=KOREA, price=PRICES["south korea"])


def test_the_projection_matches_the_hand_calculation_with_the_default_node_overhead(tmp_path):
    (p,) = project(load([_file(tmp_path)]), SITE)
    assert p.devices == 24 and p.device_watts == pytest.approx(300.0)
    assert round(p.it_mw * 1e6) == 13_114  # to the watt
    assert round(p.facility_mw * 1e6) == 15_737
    assert p.mwh_per_year == pytest.approx(137.8573714, rel=1e-9)
    assert round(p.t_co2_per_year) == 57 and p.t_co2_per_year == pytest.approx(57.48652389, rel=1e-9)  # to the tonne
    assert round(p.cost_per_year) == 25_186_542  # to the won
    assert p.cost_per_million == pytest.approx(69.004224, rel=1e-9)
    assert p.g_co2_per_million == pytest.approx(157.4973257, rel=1e-9)
    assert p.estimate and p.boundary.startswith("device x 1.82 node overhead (default: NVIDIA DGX H100")


def test_with_node_energy_measured_no_overhead_is_applied_and_it_says_so(tmp_path):
    (p,) = project(load([_file(tmp_path, "node")]), SITE)
    assert round(p.facility_mw * 1e6) == 8_640 and p.mwh_per_year == pytest.approx(75.6864, rel=1e-9)
    assert p.t_co2_per_year == pytest.approx(31.5612288, rel=1e-9) and round(p.cost_per_year) == 13_827_905
    assert p.boundary == "node (measured)" and not p.estimate


def test_with_both_measured_the_measured_node_to_device_ratio_replaces_the_default(tmp_path):
    (p,) = project(load([_file(tmp_path, node_watts=700.0)]), SITE)
    assert round(p.it_mw * 1e6) == 10_080 and round(p.facility_mw * 1e6) == 12_096
    assert p.mwh_per_year == pytest.approx(105.96096, rel=1e-9) and round(p.t_co2_per_year) == 44
    assert round(p.cost_per_year) == 19_359_067
    assert p.boundary == "device x 1.40 measured node/device ratio" and not p.estimate
    assert any("measured, the node's BMC over the devices' own counters" in n for n in p.notes)
    (given,) = project(load([_file(tmp_path, node_watts=700.0)]), Site(**{**SITE.__dict__, "node_overhead": 1.5}))
    assert given.boundary == "device x 1.50 node overhead (given)"  # a given overhead still wins


def test_a_ratio_measured_beside_idle_gpus_is_left_out_and_said(tmp_path, capsys):
    (whole,) = project(load([_file(tmp_path, node_watts=700.0, gpus_on_node=1)]), SITE)
    assert whole.boundary == "device x 1.40 measured node/device ratio"  # the node's only GPU: used
    (p,) = project(load([_file(tmp_path, node_watts=700.0, gpus_on_node=8)]), SITE)
    assert round(p.it_mw * 1e6) == 13_114 and round(p.cost_per_year) == 25_186_542  # the default's figures
    assert p.estimate and p.boundary.startswith("device x 1.82 node overhead (default")
    assert any("its node(s) had 7 GPU(s) idle beside the case's" in n for n in p.notes)
    assert main(["report", str(_file(tmp_path, node_watts=700.0, gpus_on_node=8))]) == 0
    assert "(xN) is node over device watts (it includes 7 GPU(s) idle beside the case's)" in capsys.readouterr().out


def test_the_command_prints_the_table_and_its_assumptions(tmp_path, capsys):
    path = _file(tmp_path)
    argv = ["report", str(path), "--site", "--tokens-per-day", "1e9", "--load-factor", "0.5", "--pue", "1.2"]
    assert main([*argv, "--grid-intensity", "south korea"]) == 0
    out = capsys.readouterr().out
    assert "~0.016" in out and "~25,186,542" in out and "KRW" in out and "24" in out
    assert "417 gCO2e/kWh, consumption side, 2023" in out and "KEPCO industrial rate" in out and "electricity only" in out
    assert main([*argv, "--price", "0.1USD"]) == 0  # no grid given: no carbon, the price given
    assert "0.1 USD/kWh" in capsys.readouterr().out
    assert main(["report", str(path), "--site"]) == 2
    assert "--site needs a demand" in capsys.readouterr().err
    assert main([*argv, "--format", "pytest-benchmark"]) == 2
    assert "--format pytest-benchmark is not valid with it (valid: table, markdown, csv, json)" in capsys.readouterr().err
    assert main([*argv, "--price", "cheap"]) == 2
    assert "valid: AMOUNT[CURRENCY]" in capsys.readouterr().err


def test_the_projection_as_markdown_csv_and_json_carries_the_same_figures(tmp_path, capsys):
    import io

    import pandas as pd

    argv = ["report", str(_file(tmp_path)), "--site", "--tokens-per-day", "1e9", "--load-factor", "0.5", "--pue", "1.2"]
    argv += ["--grid-intensity", "south korea"]
    assert main([*argv, "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| Hardware | Case |") and "| KRW/M tokens | g CO2/M tokens |" in lines[0]
    assert "| 24 | ~0.013 | ~0.016 | ~138 | ~57.5 | ~25,186,542 | ~69 | ~157.5 |" in lines[2]
    assert "- node overhead x1.82: NVIDIA DGX H100 datasheet" in "\n".join(lines)
    assert main([*argv, "--format", "csv"]) == 0
    (row,) = pd.read_csv(io.StringIO(capsys.readouterr().out)).to_dict("records")
    assert row["devices"] == 24 and row["cost_per_year"] == pytest.approx(25_186_541.76, abs=0.01)
    assert row["t_co2_per_year"] == pytest.approx(57.48652389, rel=1e-9) and row["currency"] == "KRW"
    assert row["grid_g_co2_per_kwh"] == 417 and row["pue"] == 1.2 and bool(row["estimate"])
    assert main([*argv, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["site"]["price_per_kwh"] == 182.7 and doc["projections"][0]["it_mw"] == pytest.approx(0.01311428571, rel=1e-9)
