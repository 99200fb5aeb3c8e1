"""The typed result record: every golden file reads back and writes out the same bytes; the
runner reproduces the golden deterministic run; the combining rules and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import record
from bench.record import CaseRecord, Energy, RecordError, RunRecord
from tests.golden import deterministic

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_FILES = sorted((ROOT / "results").rglob("*.json")) + sorted((ROOT / "tests" / "golden").glob("*.json"))


def _shard(path: Path) -> bool:
    return path.parent.name.endswith(".shards")


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_golden_file_reads_back_and_writes_the_same_bytes(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    run = RunRecord.from_json(json.loads(text), shard=_shard(path))
    assert run.cases, "a golden file with no cases proves nothing"
    assert json.dumps(run.to_json(), indent=1, allow_nan=False) + "\n" == text


def test_the_golden_set_covers_every_format_version() -> None:
    schemas = {json.loads(p.read_text())["schema"] for p in GOLDEN_FILES}
    assert schemas == {record.SCHEMA, record.SCHEMA_V2, record.SHARD_SCHEMA}
    key_counts = {len(c) for p in GOLDEN_FILES for c in json.loads(p.read_text())["cases"]}
    assert min(key_counts) <= 22 and max(key_counts) >= 25  # files of older versions and of jobs


def _as_golden(written: object, golden: object, where: str = "") -> object:
    """`written` with only the keys `golden` has, where both are objects: keys a later version
    added (the energy boundary, the window's temperatures, a GPU's health) are left out, each checked to be a
    field the record knows. Lists are compared item by item."""
    if isinstance(written, dict) and isinstance(golden, dict):
        added = set(written) - set(golden)
        known = set(Energy.specs()) | set(CaseRecord.specs()) | set(record.RunInfo.specs()) | set(record.DeviceRecord.specs())
        assert added <= known, f"{where}: keys no record field declares: {added - known}"
        return {k: _as_golden(written[k], golden[k], f"{where}.{k}") for k in written if k in golden}
    if isinstance(written, list) and isinstance(golden, list) and len(written) == len(golden):
        return [_as_golden(w, g, f"{where}[{i}]") for i, (w, g) in enumerate(zip(written, golden, strict=True))]
    return written


@pytest.fixture(scope="module")
def deterministic_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Today's runner's golden run (tests/golden/deterministic.py), written once for the module."""
    path = tmp_path_factory.mktemp("golden") / "run.json"
    return path, deterministic.write(path)


def test_the_runner_reproduces_the_golden_deterministic_run(deterministic_run: tuple[Path, dict]) -> None:
    _, written = deterministic_run
    golden = json.loads(deterministic.GOLDEN.read_text())
    expected = deterministic.normalised(golden)
    assert _as_golden(deterministic.normalised(written), expected) == expected
    for case, old in zip(written["cases"], golden["cases"], strict=True):  # the golden keys, in their order
        assert [k for k in case if k in old] == list(old)
        assert [k for k in case["energy"] if k in old["energy"]] == list(old["energy"])
    assert all(c["energy"]["boundary"] == "device" for c in written["cases"])  # the simulated NVML's


def test_absent_and_null_stay_apart_and_unknown_keys_keep_their_place() -> None:
    doc = {"joules": None, "future_key": {"a": 1}, "avg_watts": 2}
    energy = Energy.parse(doc)
    assert energy.to_json() == doc and list(energy.to_json()) == ["joules", "future_key", "avg_watts"]
    assert energy.has("joules") and not energy.has("peak_watts")
    changed = energy.but(peak_watts=5.0)
    assert list(changed.to_json()) == ["joules", "future_key", "avg_watts", "peak_watts"]


def test_a_record_built_here_writes_its_fields_in_order_leaving_out_optional_nulls() -> None:
    energy = Energy(joules=10.0, avg_watts=100.0, source="rapl", estimate=False, duration_s=0.1)
    out = energy.to_json()
    assert list(out)[:6] == ["joules", "avg_watts", "peak_watts", "source", "estimate", "samples"]
    assert out["sm_clock_mhz"] is None and "boundary" not in out and "max_temperature_c" not in out
    assert energy.energy_boundary == record.DEVICE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["energy"].update(joules="lots"), "case 0: energy.joules is 'lots', not a number"),
        (lambda c: c.update(raw_seconds=[1, "x"]), "case 0: raw_seconds is [1, 'x'], not a list of numbers"),
        (lambda c: c["energy"].update(trace=[[1, 2, 3]]), "energy.trace is [[1, 2, 3]], not a list of [seconds, watts] pairs"),
        (lambda c: c.update(rounds=[3]), "case 0: rounds[0] is 3, not an object"),
        (lambda c: c.update(status="great"), "case 0 has unknown status 'great'"),
    ],
)
def test_a_mistyped_field_is_one_named_error(change, message) -> None:
    doc = json.loads(deterministic.GOLDEN.read_text())
    change(doc["cases"][0])
    with pytest.raises(RecordError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RunRecord.from_json(doc)


def test_energy_over_rounds_weights_the_clock_and_temperature_by_window_length() -> None:
    """Joules, peaks and traces over rounds: tests/test_rounds.py; here the weighted means."""
    a = Energy(joules=10.0, duration_s=0.1, sm_clock_mhz=1000.0, mean_temperature_c=50.0, max_temperature_c=55)
    b = a.but(joules=30.0, duration_s=0.3, sm_clock_mhz=2000.0, mean_temperature_c=70.0, max_temperature_c=74)
    both = Energy.over_rounds([a, b])
    assert both.sm_clock_mhz == pytest.approx((1000 * 0.1 + 2000 * 0.3) / 0.4)
    assert both.mean_temperature_c == pytest.approx((50 * 0.1 + 70 * 0.3) / 0.4) and both.max_temperature_c == 74


def test_energy_over_devices_sums_and_refuses_different_boundaries() -> None:
    gpu = Energy(
        joules=10.0,
        avg_watts=100.0,
        peak_watts=120.0,
        source="nvml_energy",
        estimate=False,
        samples=3,
        duration_s=0.1,
        boundary="device",
    )
    job = Energy.over_devices([gpu, gpu.but(joules=20.0, avg_watts=200.0)], lambda traces: [])
    assert (job.joules, job.avg_watts, job.peak_watts, job.devices) == (30.0, 300.0, 240.0, 2)
    with pytest.raises(RecordError, match="different boundaries"):
        Energy.over_devices([gpu, gpu.but(boundary="node")], lambda traces: [])


def test_efficiency_and_energy_per_unit_are_inverse() -> None:
    throughput = record.Summary.of([1000.0, 1200.0, 1100.0])
    energy = Energy(joules=5.0, avg_watts=50.0, duration_s=0.1)
    efficiency = CaseRecord.efficiency_of(throughput, energy)
    assert efficiency == pytest.approx(1100.0 / 50.0)
    case = CaseRecord.started("x", "w", {}, "cpu", "ok").but(efficiency=efficiency)
    assert case.energy_per_unit == pytest.approx(50.0 / 1100.0)


def test_merging_the_golden_shards_rebuilds_the_golden_job_file() -> None:
    """Byte for byte, but for what a later version added to each rank's figures of a case (the
    fleet's: energy source and boundary, SM clock, temperatures, flags), each a key merge writes."""
    from bench.merge import RANK_CASE_ADDED, merge_shards, read_shards

    (merged,) = sorted((ROOT / "results").rglob("*.shards"))
    golden = merged.with_name(merged.name.removesuffix(".shards") + ".json")
    doc = merge_shards(read_shards(merged), stem=golden.stem)
    for entry in doc["ranks"]:
        for case in entry["cases"]:
            assert set(RANK_CASE_ADDED) <= set(case)
            for key in RANK_CASE_ADDED:
                del case[key]
    assert json.dumps(doc, indent=1, allow_nan=False) + "\n" == golden.read_text()


def test_compare_refuses_work_per_joule_across_energy_boundaries(tmp_path: Path) -> None:
    from bench.report import gate
    from bench.report.load import load

    doc = json.loads(deterministic.GOLDEN.read_text())
    (tmp_path / "device.json").write_text(json.dumps(doc))
    for case in doc["cases"]:
        case["energy"]["boundary"] = "node"
    doc["run"]["id"] = "another"
    (tmp_path / "node.json").write_text(json.dumps(doc))
    base, cur = load([tmp_path / "device.json"]), load([tmp_path / "node.json"])
    assert set(cur["energy_boundary"]) == {"node"} and set(base["energy_boundary"]) == {"device"}
    (first, *_) = gate.compare(base, cur, metric="efficiency")
    assert first.verdict == "missing" and "energy boundaries differ (device vs node)" in first.note
    assert all(c.ratio is not None for c in gate.compare(base, cur, metric="throughput"))  # time is time


def test_the_window_temperature_reaches_the_frame_and_the_exports(deterministic_run: tuple[Path, dict]) -> None:
    from bench.report.export import export
    from bench.report.load import load

    path, written = deterministic_run
    energy = written["cases"][0]["energy"]
    assert energy["max_temperature_c"] >= energy["mean_temperature_c"] > 0  # the simulated GPU's die
    frame = load([path])
    assert list(frame["max_temperature_c"]) == [c["energy"]["max_temperature_c"] for c in written["cases"]]
    rows = json.loads(export(frame, "json"))
    assert rows[0]["mean_temperature_c"] == energy["mean_temperature_c"]
    assert "max_temperature_c" in export(frame, "csv").splitlines()[0]


@pytest.mark.parametrize(
    "damage",
    [
        lambda doc: doc["cases"][0].update(device=["cuda:0"]),
        lambda doc: doc["devices"][0].update(id=["x"], memory_bytes="lots"),
        lambda doc: doc["cases"][0].update(energy={"joules": {"a": 1}}),
    ],
)
def test_a_file_of_an_unforeseen_shape_is_a_warning_not_a_traceback(tmp_path: Path, damage) -> None:
    from bench.report.load import load

    doc = json.loads(deterministic.GOLDEN.read_text())
    (tmp_path / "good.json").write_text(json.dumps(doc))
    damage(doc)
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    skipped: list[str] = []
    frame = load([tmp_path], strict=False, on_skip=skipped.append)  # never a traceback
    cases = len(doc["cases"])
    if skipped:  # the damage touched what a case reads: the file is named in one line, the rest loads
        (line,) = skipped
        assert "bad.json" in line and "damaged result file" in line and "\n" not in line
        assert len(frame) == cases
    else:  # a damaged device entry no case ran on is read around, as before
        assert len(frame) == 2 * cases


def test_a_merged_energy_keeps_a_null_mismatch_the_shards_lacked() -> None:
    gpu = Energy.parse({"joules": 1.0, "avg_watts": 10.0, "source": "nvml_energy", "duration_s": 0.1})
    job = Energy.over_devices([gpu, gpu], lambda traces: [])
    assert "mismatch" in job.to_json() and job.to_json()["mismatch"] is None


def test_one_report_of_an_nvidia_run_and_an_amd_run_of_the_same_cases(tmp_path: Path) -> None:
    """Across vendors: the golden run (simulated NVML) and the same cases measured through the
    simulated AMD SMI read into one table, a column per hardware, each energy source named."""
    import io

    from rich.console import Console

    from bench.report.load import load
    from bench.report.tables import render

    amd = deterministic.write_amd(tmp_path / "amd.json")
    assert {c["energy"]["source"] for c in amd["cases"]} == {"amdsmi_energy"}
    assert all(c["energy"]["boundary"] == "device" and c["status"] == "ok" for c in amd["cases"])
    (tmp_path / "nvidia.json").write_text(deterministic.GOLDEN.read_text())
    frame = load([tmp_path])
    assert set(frame["energy_source"]) == {"nvml_energy", "amdsmi_energy"}
    out = Console(file=io.StringIO(), width=250)
    render(frame, out)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    headers = [line for line in text.splitlines() if "AMD Instinct MI300X" in line]
    assert headers and all("CPU standing in for a GPU" in line for line in headers)  # one table, both columns
    (sources,) = [line for line in text.splitlines() if line.startswith("energy from:")]
    assert "AMD Instinct MI300X (driver 570.00): amdsmi_energy" in sources and "nvml_energy" in sources


def test_compare_across_vendors_needs_allow_different_hardware(tmp_path: Path, capsys) -> None:
    """An NVIDIA run against an AMD run of the same cases: refused as different hardware (exit 2,
    one line), compared with --allow-different-hardware; the energy is the AMD counter's."""
    from bench.cli import main

    amd = deterministic.write_amd(tmp_path / "amd.json")
    assert all(c["energy"]["joules"] > 0 for c in amd["cases"])
    nvidia = tmp_path / "nvidia.json"
    nvidia.write_text(deterministic.GOLDEN.read_text())
    assert main(["compare", str(nvidia), str(tmp_path / "amd.json")]) == 2
    refused = capsys.readouterr().err.strip().splitlines()
    assert len(refused) == 1 and "--allow-different-hardware" in refused[0]
    assert main(["compare", str(nvidia), str(tmp_path / "amd.json"), "--allow-different-hardware"]) in (0, 1)
    captured = capsys.readouterr()
    (warning,) = captured.err.strip().splitlines()[:1]
    assert "different hardware" in warning and "AMD Instinct MI300X" in warning and "(current)" in warning
    assert "matmul 64³ fp32" in captured.out and "different hardware" in captured.out
