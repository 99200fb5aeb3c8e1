"""Bad input: one line on stderr naming what was wrong and what is valid, exit 2, no traceback."""

import json

import pytest

from bench.cli import main

FAST = ["--min-time", "0", "--repeats", "1", "--repeat-time", "0.001"]


@pytest.fixture
def damaged_suite(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[[case]]\nworkload = "matmul"\nparams = { size = [64, \n')
    return str(path)


@pytest.fixture
def suite_with_unknown_workload(tmp_path):
    path = tmp_path / "unknown.toml"
    path.write_text('[[case]]\nworkload = "fft"\n')
    return str(path)


@pytest.fixture
def damaged_result(tmp_path):
    path = tmp_path / "damaged.json"
    path.write_text('{"schema": "wattbench.run/1", "run": {')
    return str(path)


@pytest.fixture
def foreign_result(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"schema": "someone-else/3", "cases": []}))
    return str(path)


CASES = {
    "unknown workload": (["run", "fft"], "unknown target 'fft'; valid: suites"),
    "unknown suite file": (["run", "nosuch.toml"], "suite file 'nosuch.toml' does not exist"),
    "unknown parameter": (["run", "matmul", "-p", "rows=4"], "unknown parameter 'rows'; valid: size, m, n, k, dtype"),
    "unknown parameter in suite": (["run", "quick", "-p", "rows=4"], "no workload in suite 'quick' takes that parameter"),
    "negative size": (["run", "matmul", "-p", "m=-4"], "parameter m: -4 must be a positive whole number"),
    "zero size": (["run", "membw", "-p", "size=0"], "parameter size: 0 must be a positive size"),
    "size with a bad unit": (["run", "membw", "-p", "size=12XB"], "is not a byte size"),
    "not a number": (["run", "matmul", "-p", "k=big"], "parameter k: 'big' is not a whole number"),
    "unknown dtype": (["run", "matmul", "-p", "dtype=float13"], "'float13' is not valid; valid: float32, tf32"),
    "bad boolean": (["run", "attention", "-p", "causal=maybe"], "is not a boolean; valid: true, false"),
    "malformed -p without =": (["run", "matmul", "-p", "m"], "expected KEY=VALUE"),
    "malformed -p without key": (["run", "matmul", "-p", "=3"], "expected KEY=VALUE"),
    "malformed -p empty value": (["run", "matmul", "-p", "m=4,"], "expected KEY=VALUE"),
    "-p key twice": (["run", "matmul", "-p", "m=4", "-p", "m=8"], "-p m given twice"),
    "damaged suite file": (["run", "@damaged_suite"], "not valid TOML"),
    "suite naming unknown workload": (["run", "@suite_with_unknown_workload"], "case 1: unknown workload 'fft'"),
    "cuda without a GPU": (["run", "matmul", "--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
    "cuda:N without a GPU": (["run", "matmul", "--device", "cuda:3"], "no CUDA GPU is visible"),
    "unknown device": (["run", "matmul", "--device", "tpu"], "--device 'tpu' is not a device; valid: cpu, cuda, cuda:N, all"),
    "negative min-time": (["run", "matmul", "--min-time", "-1"], "must be a number of seconds >= 0"),
    "zero repeats": (["run", "matmul", "--repeats", "0"], "must be at least 1"),
    "unknown command": (["frobnicate"], "invalid choice: 'frobnicate'"),
    "report missing file": (["report", "nowhere.json"], "nowhere.json: no such file or folder"),
    "report damaged file": (["report", "@damaged_result"], "damaged.json: damaged result file: not valid JSON"),
    "report unknown schema": (["report", "@foreign_result"], "other.json: unknown schema 'someone-else/3'"),
    "report bad format": (["report", "@foreign_result", "--format", "xml"], "--format 'xml' is not valid; valid: table, csv"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(name, request, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written to the checkout's results/
    argv, expected = CASES[name]
    argv = [request.getfixturevalue(a[1:]) if a.startswith("@") else a for a in argv]
    if argv[0] == "run":
        argv += FAST
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("wattbench: error: ")
    assert expected in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "results").exists(), "a rejected command must not start a run file"
