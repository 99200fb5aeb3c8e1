"""A sticky CUDA error in an in-process run: the case is recorded, the run is aborted, exit 1."""

from __future__ import annotations

import json

import pytest
import torch

from bench import results
from bench.cli import main
from bench.errors import ResultFileError
from bench.measure import hardware, isolate, modes, runner
from bench.measure.hardware import DeviceInfo, host_info
from bench.measure.plan import Case, expand
from bench.measure.timing import TimingConfig
from bench.measure.workload import Param, Verification, Work, Workload
from bench.report.load import load

ILLEGAL = "CUDA error: an illegal memory access was encountered"
GPU = DeviceInfo("cuda:0", "cuda", "Fake GPU", 80 << 30)


class Crashes(Workload):
    """Its first kernel hits an illegal address."""

    name = "cuda_crash"
    summary = "raises a sticky CUDA error"
    params = (Param("n", "int", 1, "unused"),)
    setups = 0

    def setup(self) -> None:
        type(self).setups += 1
        raise RuntimeError(ILLEGAL)

    def run(self) -> None:
        pass

    def work(self) -> Work:
        return Work("FLOP", 1.0)

    def verify(self) -> Verification:
        return Verification(0.0, 1e-6)


class Breaks(Crashes):
    """Fails with an ordinary error, which leaves the CUDA context working."""

    name = "cuda_breaks"
    setups = 0

    def setup(self) -> None:
        type(self).setups += 1
        raise ValueError("bad shape")


@pytest.fixture
def gpu_registry(registry, monkeypatch):
    Crashes.setups = Breaks.setups = 0
    registry[Crashes.name] = Crashes
    registry[Breaks.name] = Breaks
    return registry


def _sticky(monkeypatch, broken: bool) -> None:
    """torch.cuda.synchronize: raises the sticky error when `broken`, else works."""

    def synchronize(device: object = None) -> None:
        if broken:
            raise RuntimeError(ILLEGAL + "\nCUDA kernel errors might be asynchronously reported")

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)


def _run(path, cases, timing):
    run_file = results.RunFile(path, runner.new_run_document("test", host_info(), [GPU], timing, len(cases)))
    status = runner.run(cases, [GPU], timing, run_file)
    return status, json.loads(path.read_text())


def test_a_sticky_cuda_error_records_the_case_and_aborts_the_run(tmp_path, fast_timing, gpu_registry, monkeypatch):
    _sticky(monkeypatch, broken=True)
    cases = [*expand("cuda_breaks", {"n": [1]}, [GPU]), *expand("cuda_crash", {"n": [1, 2]}, [GPU])]
    status, doc = _run(tmp_path / "r.json", [cases[1], cases[0], cases[2]], fast_timing)
    assert status == "aborted"
    assert doc["run"]["status"] == "aborted" and doc["run"]["finished_at"]
    reason = doc["run"]["abort_reason"]
    assert f"cuda:0 in case {cases[1].id}" in reason and ILLEGAL in reason and "\n" not in reason
    (case,) = doc["cases"]  # nothing after it ran: it would fail the same way
    assert case["id"] == cases[1].id and case["status"] == "failed"
    assert case["error"] == f"RuntimeError: {ILLEGAL}"
    assert Crashes.setups == 1 and Breaks.setups == 0
    frame = load([tmp_path / "r.json"])  # the reading side accepts the status
    assert list(frame["run_status"]) == ["aborted"]


def test_a_failure_that_leaves_the_context_working_does_not_abort(tmp_path, fast_timing, gpu_registry, monkeypatch):
    _sticky(monkeypatch, broken=False)
    cases = [*expand("cuda_crash", {"n": [1]}, [GPU]), *expand("cuda_breaks", {"n": [1]}, [GPU])]
    status, doc = _run(tmp_path / "r.json", cases, fast_timing)
    assert status == "complete" and doc["run"]["status"] == "complete" and "abort_reason" not in doc["run"]
    assert [c["status"] for c in doc["cases"]] == ["failed", "failed"]
    assert doc["cases"][1]["error"] == "ValueError: bad shape"


def test_a_context_lost_after_another_error_says_both(tmp_path, fast_timing, gpu_registry, monkeypatch):
    _sticky(monkeypatch, broken=True)
    status, doc = _run(tmp_path / "r.json", expand("cuda_breaks", {"n": [1, 2]}, [GPU]), fast_timing)
    assert status == "aborted"
    (case,) = doc["cases"]
    assert case["error"] == f"ValueError: bad shape; then the CUDA context failed: RuntimeError: {ILLEGAL}"


def test_isolated_rounds_never_probe_this_process(fast_timing, monkeypatch):
    def probe(device: object) -> str:
        raise AssertionError("probed")

    monkeypatch.setattr(modes, "cuda_context_error", probe)
    case_run = runner.CaseRun(Case(Crashes.name, (("n", 1),), GPU.id), GPU, fast_timing, Crashes)
    case_run.status = "failed"
    assert (
        modes.Isolated(isolate.Isolation()).lost_context(case_run.device, case_run.status) is None
    )  # the worker's context died, not ours
    with pytest.raises(AssertionError):
        modes.InProcess().lost_context(case_run.device, case_run.status)


def test_run_exits_1_with_one_line_when_aborted(tmp_path, capsys, gpu_registry, monkeypatch):
    _sticky(monkeypatch, broken=True)
    monkeypatch.setattr(hardware, "resolve_devices", lambda wanted: [GPU])
    out = tmp_path / "r.json"
    code = main(
        [
            "run",
            "cuda_crash",
            "cuda_breaks",
            "--no-isolate",
            "--no-monitor",
            "--out",
            str(out),
            "--min-time",
            "0.01",
            "--repeats",
            "2",
            "--repeat-time",
            "0.002",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1, captured.err
    (line,) = [ln for ln in captured.err.splitlines() if "aborted" in ln]
    assert line.startswith("wattbench: run aborted: CUDA error on cuda:0 in case cuda_crash")
    assert ILLEGAL in line and f"1 case(s) saved in {out}" in line
    doc = results.read_run(out)
    assert doc["run"]["status"] == "aborted" and [c["workload"] for c in doc["cases"]] == ["cuda_crash"]
    assert "aborted" in captured.out  # the report's run header


def test_loader_rejects_an_unknown_run_status(tmp_path):
    path = tmp_path / "r.json"
    doc = runner.new_run_document("test", host_info(), [GPU], TimingConfig(), 0)
    doc["run"]["status"] = "exploded"
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultFileError, match="unknown run status 'exploded'"):
        results.read_run(path)
