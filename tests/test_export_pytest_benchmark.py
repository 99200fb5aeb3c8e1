"""The pytest-benchmark export: a real CPU run, exported, then read by `pytest-benchmark compare`."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench import results
from bench.errors import UsageError
from bench.measure import runner
from bench.measure.hardware import cpu_device, host_info
from bench.measure.plan import expand
from bench.monitor.discover import DeviceRef, discover
from bench.monitor.sampler import Monitor
from bench.report.load import load
from bench.report.pytest_benchmark import export_text, to_pytest_benchmark

pytest.importorskip("pytest_benchmark")

NAME = "matmul[m=32,n=32,k=32,dtype=float32]@cpu"


def _run(path: Path, fast_timing) -> Path:
    """A real run on the CPU: one ok case and one skipped (float8 needs a GPU), energy from the
    machine's RAPL or, where there is none, an assumed 100 W."""
    cpu = cpu_device()
    cases = expand("matmul", {"size": [32], "dtype": ["float32", "float8"]}, [cpu])
    doc = runner.new_run_document("test", host_info(), [cpu], fast_timing, len(cases))
    run_file = results.RunFile(path, doc)
    found = discover([DeviceRef(cpu.id, cpu.kind, cpu.uuid)], nominal_watts=100.0)
    with Monitor(list(found.sources), 0.005) as monitor:
        runner.run(cases, [cpu], fast_timing, run_file, context=runner.RunContext(monitor=monitor))
    return path


def _compare(*files: Path, cwd: Path, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "pytest-benchmark"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pytest_benchmark"]
    return subprocess.run([*command, "compare", *args, *map(str, files)], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_export_is_read_by_pytest_benchmark_compare(tmp_path, fast_timing):
    df = load([_run(tmp_path / "run.json", fast_timing)])
    assert list(df["status"]) == ["ok", "skipped"]
    out = tmp_path / "export.json"
    out.write_text(export_text(df))

    doc = json.loads(out.read_text())
    assert set(doc) == {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    (bench,) = doc["benchmarks"]  # the skipped case is left out
    row = df.iloc[0]
    assert bench["name"] == NAME and bench["group"] == "matmul"
    assert bench["params"] == {"m": "32", "n": "32", "k": "32", "dtype": "float32", "device": "cpu"}
    stats = bench["stats"]
    assert stats["data"] == row["raw_seconds"]
    assert stats["rounds"] == row["repeats"] == len(row["raw_seconds"])
    assert stats["iterations"] == row["iterations"]
    assert stats["median"] == pytest.approx(statistics.median(row["raw_seconds"]))
    assert stats["ops"] == pytest.approx(1 / statistics.fmean(row["raw_seconds"]))
    assert stats["min"] <= stats["q1"] <= stats["median"] <= stats["q3"] <= stats["max"]
    info = bench["extra_info"]
    assert info["throughput"] == pytest.approx(row["throughput"])
    assert info["work_unit"] == "FLOP" and info["device_name"] == cpu_device().name
    assert info["energy_j"] > 0 and info["avg_watts"] > 0 and info["energy_source"]
    assert info["efficiency"] == pytest.approx(row["throughput"] / row["avg_watts"])

    done = _compare(out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert NAME in done.stdout, done.stdout + done.stderr
    assert "Failed to load" not in done.stdout + done.stderr


def test_two_exports_compare_between_and_one_frame_keeps_names_unique(tmp_path, fast_timing):
    a = _run(tmp_path / "a.json", fast_timing)
    b = _run(tmp_path / "b.json", fast_timing)
    for path in (a, b):
        (tmp_path / f"export-{path.stem}.json").write_text(export_text(load([path])))
    done = _compare(tmp_path / "export-a.json", tmp_path / "export-b.json", cwd=tmp_path, args=("--between", "min,mean"))
    assert done.returncode == 0, done.stderr
    assert NAME in done.stdout, done.stdout + done.stderr

    names = [b["name"] for b in to_pytest_benchmark(load([a, b]))["benchmarks"]]
    assert names[0] == NAME and names[1].startswith(NAME + "#") and len(set(names)) == 2


def test_no_ok_case_gives_an_empty_list(tmp_path, fast_timing):
    df = load([_run(tmp_path / "run.json", fast_timing)])
    doc = to_pytest_benchmark(df[df["status"] != "ok"])
    assert doc["benchmarks"] == []
    json.dumps(doc, allow_nan=False)


def test_without_pytest_benchmark_says_how_to_install(tmp_path, fast_timing, monkeypatch):
    df = load([_run(tmp_path / "run.json", fast_timing)])
    monkeypatch.setitem(sys.modules, "pytest_benchmark", None)
    monkeypatch.setitem(sys.modules, "pytest_benchmark.stats", None)
    with pytest.raises(UsageError, match="pip install pytest-benchmark"):
        to_pytest_benchmark(df)
