"""The fleet report (bench/report/fleet.py) over a synthetic fleet of 64 nodes x 8 GPUs x 20
cases (benchmarks/fleet_synthetic.py: real example cases, +-2% noise): with faults injected it
names exactly those GPUs and that node, and nothing else; with none it names nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.report.fleet import FLEET_COLUMNS, Rule, analyse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from fleet_synthetic import Fault, FleetSpec, write_fleet  # noqa: E402

FAULTS = [
    Fault(3, 2, throughput=0.90),  # slow
    Fault(9, 6, throughput=0.91),  # slow
    Fault(7, 5, power=1.10),  # power-hungry: 10% more watts for the same work
    Fault(15, 0, power=1.09),
    Fault(11, 1, throughput=0.91, clock_mhz=1620.0, throttled="hw_thermal"),  # throttled: a flag, a lower clock
    Fault(20, 6, pcie=(3, 16)),  # a link trained down to Gen3
    Fault(30, 3, xid=(79,)),  # fell off the bus once during the run
    Fault(42, None, throughput=0.90),  # a whole node slower (shared cooling, power, PCIe switch)
    Fault(50, 4, throttled="sw_power_cap"),  # a flag alone, figures as its siblings': not an outlier
]
NAMED_GPUS = {("node-0003", 2), ("node-0009", 6), ("node-0007", 5), ("node-0015", 0), ("node-0011", 1)}


@pytest.fixture(scope="module")
def fleets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleets")
    faulty, healthy = root / "faulty", root / "healthy"
    write_fleet(faulty, FleetSpec(nodes=64, gpus=8, cases=20, seed=3, faults=FAULTS))
    write_fleet(healthy, FleetSpec(nodes=64, gpus=8, cases=20, seed=4))
    return faulty, healthy


@pytest.fixture(scope="module")
def faulty_store(fleets, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "fleet"
    assert main(["ingest", str(fleets[0]), "--store", str(store)]) == 0
    return store


def test_the_injected_faults_and_nothing_else_are_named(faulty_store, capsys):
    assert main(["fleet", str(faulty_store), "--format", "json", "--fail-on-outliers"]) == 1  # an acceptance gate
    report = json.loads(capsys.readouterr().out)
    findings = report["findings"]
    assert (report["gpus"], report["nodes"], report["cases"]) == (512, 64, 20)
    assert {(f["host"], f["slot"]) for f in findings if f["kind"] == "gpu"} == NAMED_GPUS
    (node,) = [f for f in findings if f["kind"] == "node"]
    assert node["host"] == "node-0042" and node["measure"] == "throughput" and node["gpus"] == 8
    assert not [f for f in findings if f["kind"] == "gpu" and f["host"] == "node-0042"]  # a node is named as a node
    link, xid = [f for f in findings if f["kind"] == "health"]
    assert (link["host"], link["slot"]) == ("node-0020", 6) and "PCIe link Gen3 x16 (max Gen5 x16; its siblings Gen5)" in link[
        "sentence"
    ]
    assert (xid["host"], xid["slot"]) == ("node-0030", 3) and xid["sentence"].endswith(": Xid 79 during the run")
    assert not [f for f in findings if f["host"] == "node-0050"]  # a throttle reason alone names nothing
    by_gpu = {(f["host"], f["slot"]): f for f in findings if f["kind"] == "gpu"}
    throttled = by_gpu[("node-0011", 1)]["sentence"]
    assert (
        "slower" in throttled and "SM clock 1,6" in throttled and "vs 1,98" in throttled and "throttled: hw_thermal" in throttled
    )
    assert "more power" in by_gpu[("node-0007", 5)]["sentence"] and "more J/" in by_gpu[("node-0007", 5)]["sentence"]
    assert "(in 20 of 20 cases)" in by_gpu[("node-0003", 2)]["sentence"]
    assert by_gpu[("node-0003", 2)]["sentence"].startswith("node-0003 GPU 2 (serial 16500000302, GPU-")


def test_a_healthy_fleet_names_nothing_and_passes_the_gate(fleets, capsys):
    assert main(["fleet", str(fleets[1]), "--fail-on-outliers"]) == 0  # result files, read the store's way
    text = capsys.readouterr().out
    assert "512 GPUs on 64 nodes, 20 case(s); no outliers" in text


def test_links_read_at_rest_are_no_finding_and_a_failed_gpu_keeps_its_health(faulty_store):
    """Every GPU read at Gen1 (a link trains down when idle) is no finding; a GPU whose cases all
    failed still has its Xid named."""
    from bench.store.store import Store

    frame = Store.open(faulty_store).read(FLEET_COLUMNS)
    frame["pcie_gen"] = 1
    failed = (frame["host"] == "node-0030") & (frame["slot"] == 3)
    frame["status"] = frame["status"].astype(str)
    frame.loc[failed, "status"] = "failed"
    health = [f for f in analyse(frame).findings if f.kind == "health"]
    assert [(f.host, f.slot) for f in health] == [("node-0030", 3)] and "Xid 79" in health[0].sentence


def test_the_rule_and_its_threshold(faulty_store):
    from bench.store.store import Store

    frame = Store.open(faulty_store).read(FLEET_COLUMNS)
    strict = analyse(frame, Rule(threshold=0.15))  # above every injected fault but the 1,620 MHz clock (-18%)
    named = {(f.host, f.slot) for f in strict.findings if f.kind in ("gpu", "node")}
    assert named == {("node-0011", 1)}  # the throttled GPU's clock is 18% low
    assert analyse(frame.iloc[:0]).findings == []


def test_a_node_on_other_versions_is_named_and_left_out(faulty_store):
    from bench.store.store import Store

    frame = Store.open(faulty_store).read(FLEET_COLUMNS)
    frame["driver"] = frame["driver"].astype(str)
    frame.loc[frame["host"] == "node-0003", "driver"] = "550.54.15"
    report = analyse(frame)
    (versions,) = [f for f in report.findings if f.kind == "versions"]
    assert versions.sentence == "node-0003: driver 550.54.15 (fleet: 560.35.03); its GPUs are not compared with the others"
    assert not [f for f in report.findings if f.kind == "gpu" and f.host == "node-0003"]


def test_outputs_markdown_csv_and_a_plot(faulty_store, tmp_path, capsys):
    assert main(["fleet", str(faulty_store), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert "### GPUs" in markdown and "| Model | Case |" in markdown
    header, _, first = markdown[markdown.index("| Model |") :].splitlines()[:3]
    assert header.endswith("| Outlier GPUs | Energy from |") and first.endswith("| nvml_energy |")  # each figure's source
    assert main(["fleet", str(faulty_store), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("kind,host,slot,uuid,serial,throughput") and len(lines) == 1 + 8
    assert main(["fleet", str(faulty_store), "--format", "json", "--plot", str(tmp_path / "fleet.png")]) == 0
    assert (tmp_path / "fleet.png").stat().st_size > 10_000
    assert main(["fleet", str(faulty_store), "--format", "yaml"]) == 2
    assert "valid: table, markdown, csv, json" in capsys.readouterr().err


def test_report_of_a_store_is_aggregated_and_filtered(faulty_store, capsys):
    assert main(["report", str(faulty_store), "--host", "node-0003", "--host", "node-0004"]) == 0
    text = capsys.readouterr().out
    assert "320 rows of 2 run(s)" in text and "NVIDIA H100 80GB HBM3 (driver 560.35.03)" in text and "nvml_energy" in text
    assert main(["report", str(faulty_store), "--since", "yesterday"]) == 2
    assert "--since 'yesterday' is not a date" in capsys.readouterr().err


def test_each_case_names_its_energy_sources_and_any_boundary_beyond_the_device():
    import pandas as pd

    from bench.report.fleet import _energy_pairs

    frame = pd.DataFrame(
        {
            "energy_source": ["nvml_energy", "redfish_energy", None, "nvml_energy"],
            "energy_boundary": ["device", "node", None, None],
        }
    ).astype("category")
    pair, names = _energy_pairs(frame)
    assert [names[c] for c in pair.tolist()] == ["nvml_energy", "redfish_energy [node]", None, "nvml_energy"]
