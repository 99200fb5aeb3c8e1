"""The CLI end to end on the CPU: run, report, list, info."""

import json
import subprocess
import sys

from bench import results
from bench.cli import main
from workloads.matmul import MatMul

FAST = ["--min-time", "0.01", "--repeats", "2", "--repeat-time", "0.002"]


def test_run_writes_file_and_prints_report(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        ["run", "matmul", "-p", "size=32,48", "-p", "dtype=float32,bfloat16", "--device", "cpu", "--out", str(out), *FAST]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (path,) = list(out.glob("*.json"))
    doc = results.read_run(path)
    assert doc["run"]["status"] == "complete"
    assert doc["run"]["cases_planned"] == 4
    assert [c["status"] for c in doc["cases"]] == ["ok"] * 4  # sweep = cartesian product
    assert doc["run"]["command"].startswith("wattbench run matmul -p size=32,48")
    assert doc["run"]["settings"]["repeats"] == 2
    assert "matmul" in captured.out and "GFLOP/s" in captured.out
    assert "[4/4]" in captured.err


def test_run_json_prints_the_document(tmp_path, capsys):
    code = main(["run", "membw", "-p", "op=copy", "-p", "size=1MiB", "--out", str(tmp_path / "r.json"), "--json", *FAST])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "wattbench.run/1"
    assert doc["cases"][0]["params"] == {"op": "copy", "size": 1048576, "dtype": "float32"}


def test_failed_verification_exits_1_and_run_goes_on(tmp_path, capsys, registry):
    class Wrong(MatMul):
        name = "wrongmatmul"

        def run(self) -> None:
            super().run()
            self.c.mul_(1.5)

    registry["wrongmatmul"] = Wrong
    out = tmp_path / "r.json"
    code = main(["run", "wrongmatmul", "matmul", "-p", "size=16", "--out", str(out), *FAST])
    assert code == 1
    statuses = [c["status"] for c in json.loads(out.read_text())["cases"]]
    assert statuses == ["failed", "ok"]
    assert "verification failed" in capsys.readouterr().out


def test_suite_file_target(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text('[[case]]\nworkload = "matmul"\nparams = { size = 24 }\n')
    assert main(["run", str(suite), "--out", str(tmp_path / "r.json"), *FAST]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["cases"][0]["id"] == "matmul(m=24,n=24,k=24,dtype=float32)@cpu"


def test_report_formats(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "matmul", "-p", "size=16", "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 0
    assert "16³ fp32" in capsys.readouterr().out
    assert main(["report", str(out), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("hostname,device,device_name,ranks,workload,params,op_label,status")
    assert main(["report", str(out), "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("| Host |")


def test_list_shows_workloads_params_and_suites(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("matmul", "attention", "membw", "float8", "forward+backward", "triad", "quick", "standard", "full"):
        assert text in out


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["host"]["cpu_count"] >= 1 and info["host"]["torch"]
    cpu = [d for d in info["devices"] if d["id"] == "cpu"][0]
    assert cpu["memory_bytes"] > 0 and cpu["cores"] >= 1
    assert "nvml" in info["host"]


def test_python_dash_m_bench_works():
    proc = subprocess.run([sys.executable, "-m", "bench", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("wattbench ")
