"""Result files: schema, atomic writes, round trip through the loader, damaged files."""

import json

import pytest

from bench import results
from bench.errors import ResultFileError, UsageError
from bench.measure.hardware import host_info
from bench.measure.plan import expand
from bench.measure.runner import new_run_document, run
from bench.report.load import COLUMNS, load


@pytest.fixture
def run_path(tmp_path, cpu, fast_timing):
    cases = expand("matmul", {"size": [32, 48], "dtype": ["float32"]}, [cpu]) + expand(
        "matmul", {"size": [16], "dtype": ["tf32"]}, [cpu]
    )
    doc = new_run_document("wattbench run test", host_info(), [cpu], fast_timing, len(cases))
    run_file = results.RunFile(tmp_path / "run.json", doc)
    assert run(cases, [cpu], fast_timing, run_file) == "complete"
    return run_file.path


def test_file_has_schema_and_required_keys(run_path):
    doc = json.loads(run_path.read_text())
    assert doc["schema"] == "wattbench.run/1"
    for key in ("id", "started_at", "finished_at", "wattbench_version", "command", "status"):
        assert key in doc["run"]
    assert doc["run"]["status"] == "complete"
    assert doc["run"]["started_at"].endswith("Z") and doc["run"]["finished_at"].endswith("Z")
    for key in ("hostname", "os", "python", "torch", "cuda", "driver", "cpu_model", "cpu_count"):
        assert key in doc["host"]
    assert doc["devices"][0]["id"] == "cpu" and doc["devices"][0]["kind"] == "cpu"
    ok = doc["cases"][0]
    for key in (
        "id",
        "workload",
        "params",
        "device",
        "status",
        "error",
        "work_unit",
        "work_per_iter",
        "iterations",
        "repeats",
        "seconds_per_iter",
        "raw_seconds",
        "throughput",
        "energy",
        "efficiency",
        "memory",
        "verify",
        "flags",
    ):
        assert key in ok
    assert set(ok["seconds_per_iter"]) >= {"median", "mean", "stdev", "min", "max", "cv"}
    assert ok["energy"] is None and ok["efficiency"] is None and "power_unmeasured" in ok["flags"]
    assert ok["memory"]["peak_bytes"] >= 0 and ok["memory"]["process_peak_bytes"] > 0 and ok["memory"]["source"]
    assert len(ok["raw_seconds"]) == ok["repeats"]


def test_round_trip_through_loader(run_path):
    doc = json.loads(run_path.read_text())
    df = load([run_path])
    assert list(df.columns) == COLUMNS
    assert len(df) == 3
    first = df.iloc[0]
    case = doc["cases"][0]
    assert first["case_id"] == case["id"] == "matmul(m=32,n=32,k=32,dtype=float32)@cpu"
    assert first["throughput"] == case["throughput"]["median"]
    assert first["seconds_per_iter"] == case["seconds_per_iter"]["median"]
    assert first["cv"] == case["seconds_per_iter"]["cv"]
    assert first["work_per_iter"] == 2 * 32**3
    assert first["dtype"] == "float32" and first["status"] == "ok"
    assert df.iloc[2]["status"] == "skipped" and "GPU" in df.iloc[2]["error"]


def test_loader_takes_folders_recursively(run_path, tmp_path):
    nested = tmp_path / "more" / "deeper"
    nested.mkdir(parents=True)
    (nested / "copy.json").write_text(run_path.read_text())
    assert len(load([tmp_path])) == 6


def test_no_temporary_files_left_behind(run_path):
    assert [p.name for p in run_path.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"schema": "wattbench.run/1", "run": {', "damaged result file: not valid JSON"),
        ("", "damaged result file: not valid JSON"),
        ("[1, 2]", "not a wattbench result file"),
        ('{"schema": "wattbench.run/3"}', "unknown schema 'wattbench.run/3'"),
        ('{"schema": "wattbench.run/2"}', "damaged result file: missing section 'run'"),
        ('{"schema": "wattbench.shard/1"}', "a rank's shard of a multi-rank run, not a run"),
        ('{"cases": []}', "unknown schema None"),
        ('{"schema": "wattbench.run/1", "run": {}, "host": {}, "devices": [], "cases": []}', "run lacks id"),
    ],
)
def test_damaged_or_foreign_file_is_named(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ResultFileError) as err:
        load([path])
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_damaged_case_is_named(run_path):
    doc = json.loads(run_path.read_text())
    del doc["cases"][1]["status"]
    run_path.write_text(json.dumps(doc))
    with pytest.raises(ResultFileError, match="case 1 lacks status"):
        load([run_path])


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(UsageError, match="no result files"):
        load([tmp_path])


def test_output_path_rules(tmp_path):
    assert results.output_path(None, "x.json") == results.Path("results") / "x.json"
    assert results.output_path(str(tmp_path / "a.json"), "x.json") == tmp_path / "a.json"
    assert results.output_path(str(tmp_path / "dir"), "x.json") == tmp_path / "dir" / "x.json"
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="not a folder"):
        results.output_path(str(tmp_path / "file"), "x.json")


def test_default_file_name_names_host_and_device():
    name = results.default_file_name("0123456789abcdef", "2026-11-24T13:19:05.123Z", "Node 7", ["NVIDIA H100 80GB HBM3"])
    assert name == "20261124T131905Z_node-7_nvidia-h100-80gb-hbm3_01234567.json"


def _bad_files(folder):
    """One truncated, one non-JSON and one foreign-schema file."""
    good = next(folder.glob("*.json")).read_text()
    (folder / "truncated.json").write_text(good[: len(good) // 2])
    (folder / "notes.json").write_text("these are not results\n")
    (folder / "other-tool.json").write_text('{"schema": "someone-else/3", "data": []}')


def test_report_skips_bad_files_with_one_warning_each(run_path, capsys):
    from bench.cli import main

    _bad_files(run_path.parent)
    assert main(["report", str(run_path.parent)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning: skipped" in line]
    assert len(warnings) == 3
    assert any("truncated.json" in w and "not valid JSON" in w for w in warnings)
    assert any("notes.json" in w and "not valid JSON" in w for w in warnings)
    assert any("other-tool.json" in w and "unknown schema" in w for w in warnings)
    assert "32³ fp32" in captured.out  # the good file is reported


def test_report_strict_and_compare_refuse_bad_files(run_path, capsys):
    from bench.cli import main

    _bad_files(run_path.parent)
    assert main(["report", "--strict", str(run_path.parent)]) == 2
    assert main(["compare", str(run_path), str(run_path.parent / "truncated.json")]) == 2
    assert main(["compare", str(run_path.parent), str(run_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "truncated.json" in err


def test_report_of_only_bad_files_is_exit_2(tmp_path, capsys):
    from bench.cli import main

    (tmp_path / "a.json").write_text("{")
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # the file's own error, one line
    (tmp_path / "b.json").write_text("[]")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("warning: skipped") == 2 and "none of the 2 result files could be read" in err


def test_result_file_is_0644_under_umask_022(tmp_path):
    import os
    import stat

    results.file_mode.cache_clear()
    old = os.umask(0o022)
    try:
        results.atomic_write_json(tmp_path / "r.json", {"x": 1})
        assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    finally:
        os.umask(old)
        results.file_mode.cache_clear()


def _small_doc():
    """A valid file of four successful cases, each with energy and a power trace."""

    def case(m):
        return {
            "id": f"matmul(m={m})@cpu",
            "workload": "matmul",
            "params": {"m": m, "dtype": "float32"},
            "device": "cpu",
            "status": "ok",
            "error": None,
            "work_unit": "FLOP",
            "work_per_iter": 2.0 * m**3,
            "iterations": 10,
            "repeats": 3,
            "seconds_per_iter": {"median": 1e-3, "cv": 0.01},
            "raw_seconds": [1e-3, 1.1e-3, 0.9e-3],
            "throughput": {"median": 2e6 * m**3},
            "efficiency": 2e4 * m**3,
            "energy": {
                "joules": 0.3,
                "avg_watts": 100.0,
                "peak_watts": 110.0,
                "source": "rapl",
                "trace": [[0.0, 99.0], [0.1, 101.0]],
            },
            "memory": None,
            "verify": None,
            "flags": [],
        }

    from tests.test_compare import _doc

    return _doc([case(m) for m in (32, 48, 64, 96)])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: c.update(params=[1]), "params is [1], not an object"),
        (lambda c: c.update(energy=5), "energy is 5, not an object"),
        (lambda c: c["energy"].update(trace=[[0.0, 99.0], [0.1]]), "energy.trace is"),
        (lambda c: c["energy"].update(trace="flat"), "not a list of [seconds, watts] pairs"),
        (lambda c: c["throughput"].update(median="fast"), "throughput.median is 'fast', not a number"),
        (lambda c: c.update(flags="unstable"), "flags is 'unstable', not a list of text"),
        (lambda c: c.update(raw_seconds=[1e-3, "slow"]), "raw_seconds is"),
        (lambda c: c.update(seconds_per_iter=[1e-3]), "seconds_per_iter is [0.001], not an object"),
        (lambda c: c.update(workload=7), "workload is 7, not text"),
        (lambda c: c.update(device="cuda:0"), "device cuda:0: power_limit_w is '700', not a number"),
    ],
)
def test_a_mistyped_field_is_a_damaged_file_not_a_traceback(tmp_path, capsys, damage, message):
    """A file that passes the schema check with a field of the wrong type in case 3: report
    skips it with one warning naming the file and the case (refuses it under --strict), compare
    refuses it with exit 2; never a traceback."""
    from bench.cli import main

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_small_doc()))
    doc = _small_doc()
    doc["devices"].append({"id": "cuda:0", "kind": "cuda", "name": "GPU", "memory_bytes": 1, "power_limit_w": "700"})
    damage(doc["cases"][3])
    bad.write_text(json.dumps(doc))

    assert main(["report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    (warning,) = [line for line in captured.err.splitlines() if "warning: skipped" in line]
    assert "bad.json" in warning and "damaged result file: case 3: " in warning and message in warning
    assert "m=32" in captured.out and "Traceback" not in captured.err  # the good file is reported

    assert main(["report", "--strict", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "case 3" in err and message in err and "Traceback" not in err
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "case 3" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ResultFileError, match="case 3"):
        load([bad])


def test_the_trace_keeps_its_times(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_small_doc()))
    row = load([path]).iloc[0]
    assert row["power_trace_s"] == [0.0, 0.1] and row["power_trace_w"] == [99.0, 101.0]
    assert COLUMNS.index("power_trace_s") == COLUMNS.index("power_trace_w") - 1
