"""Process isolation: a case that kills, breaks or hangs its worker process fails alone.

Every worker start imports torch (about 1.5 s on the 2-core CI VM), so these tests run few
workers: one run holds all the ways to die.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import psutil
import pytest
import torch

from bench import results
from bench.cli import main
from bench.measure import isolate, lifecycle, modes, runner
from bench.measure.hardware import DeviceInfo, cpu_device, host_info
from bench.measure.plan import expand
from bench.monitor.discover import DeviceRef, discover
from bench.monitor.sampler import Monitor
from bench.report.load import load
from tests import isolation_workloads as iw
from tests.test_interrupt import _wait_for_cases

FAST_ARGS = ["--min-time", "0.01", "--repeats", "2", "--repeat-time", "0.002"]


@pytest.fixture
def iso_registry(registry, tmp_path, monkeypatch):
    for cls in iw.ALL:
        registry[cls.name] = cls
    monkeypatch.setenv(iw.MARKER_DIR_ENV, str(tmp_path))  # the workers inherit it
    return registry


def _run(path, cases, timing, isolation, monitor=None):
    cpu = cpu_device()
    run_file = results.RunFile(path, runner.new_run_document("test", host_info(), [cpu], timing, len(cases)))
    execution = modes.Isolated(isolation) if isolation is not None else modes.InProcess()
    runner.run(cases, [cpu], timing, run_file, context=runner.RunContext(execution, monitor or Monitor([])))
    return json.loads(path.read_text())


def _gone(process: psutil.Process) -> bool:
    """Exited (a zombie waiting for a reaper counts: it runs nothing and holds no memory)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _cases(*specs):
    cpu = cpu_device()
    return [case for name, n in specs for case in expand(name, {"n": [n]}, [cpu])]


def test_bad_cases_fail_with_their_reason_and_good_ones_run(tmp_path, fast_timing, iso_registry):
    cases = _cases(("iso_good", 64), ("iso_kill", 64), ("iso_raise", 64), ("iso_hang", 64), ("iso_good", 128))
    cpu = cpu_device()
    found = discover([DeviceRef(cpu.id, cpu.kind, cpu.uuid)], nominal_watts=50.0)
    started = time.monotonic()
    with Monitor(list(found.sources), 0.005) as monitor:
        doc = _run(tmp_path / "r.json", cases, fast_timing, isolate.Isolation(case_timeout_s=2.0), monitor)
    elapsed = time.monotonic() - started
    good, killed, raised, hung, good2 = doc["cases"]
    assert doc["run"]["status"] == "complete"
    assert doc["run"]["settings"]["isolate"] is True and doc["run"]["settings"]["case_timeout_s"] == 2.0
    for case in (good, good2):
        assert case["status"] == "ok", case["error"]
        assert case["repeats"] == len(case["raw_seconds"]) > 0
        assert case["energy"]["source"] == "nominal" and case["energy"]["avg_watts"] == pytest.approx(50.0)
        assert case["memory"]["source"] == "process_rss_sampled"  # the worker's own resident memory
        assert case["rounds"][0]["worker_start_s"] > 0
    assert killed["status"] == "failed" and killed["error"] == "worker killed by signal SIGKILL (9)"
    assert killed["work_unit"] is None and killed["raw_seconds"] == []
    assert raised["status"] == "failed"
    assert raised["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert raised["verify"]["passed"]  # what the worker measured before failing comes back
    assert hung["status"] == "failed" and hung["error"] == "timed out after 2 s"
    assert elapsed < 60
    assert len(load([tmp_path / "r.json"])) == 5


def test_a_worker_that_dies_in_round_2_keeps_round_1(tmp_path, fast_timing, iso_registry):
    cases = _cases(("iso_good", 64), ("iso_die_later", 64), ("iso_raise", 32))
    doc = _run(tmp_path / "r.json", cases, replace(fast_timing, rounds=2), isolate.Isolation(case_timeout_s=2.0))
    good, dies, raised = doc["cases"]
    assert good["status"] == "ok" and [r["round"] for r in good["rounds"]] == [1, 2]
    assert len({r["repeats"] for r in good["rounds"]}) == 1  # round 2 timed round 1's loop, sent to its worker
    assert dies["status"] == "failed" and dies["error"] == "round 2 of 2: worker killed by signal SIGKILL (9)"
    assert len(dies["rounds"]) == 1 and len(dies["raw_seconds"]) == dies["rounds"][0]["repeats"]
    assert raised["status"] == "failed" and "rounds" not in raised  # failed in round 1: no round 2


def test_a_worker_that_exits_reports_its_last_stderr_line(fast_timing):
    job = isolate.make_request(iw.Good, {"n": 8}, cpu_device(), fast_timing, None, None)
    job["sys_path"] = ["/nonexistent"]  # nothing importable: the worker dies on `import torch`
    worker = isolate._Worker(json.dumps(job) + "\n")
    try:
        reason = worker.outcome(60.0, 30.0)
    finally:
        worker.close()
    assert reason == "worker exited with code 1: ModuleNotFoundError: No module named 'torch'"


def test_a_class_a_worker_cannot_import_fails_at_once(fast_timing):
    class Local(iw.Good):
        name = "iso_local"

    outcome = isolate.Isolation(2.0).measure(Local, {"n": 8}, cpu_device(), fast_timing)
    assert outcome.status == "failed" and "defined inside a function" in outcome.error and "--no-isolate" in outcome.error


def test_defaults_and_option_rules():
    cpu, gpu = cpu_device(), DeviceInfo("cuda:0", "cuda", "GPU", None)
    assert isolate.from_options(None, None, [cpu]) is None  # the CPU: in process
    assert isolate.from_options(None, None, [gpu, cpu]) == isolate.Isolation(600.0)
    assert isolate.from_options(None, 5.0, [cpu]) == isolate.Isolation(5.0)  # a timeout implies isolation
    assert isolate.from_options(False, None, [gpu]) is None
    assert isolate.from_options(True, None, [cpu]) == isolate.Isolation(600.0)
    assert isolate.Isolation(2.0).startup_limit_s == 120.0
    assert isolate.Isolation(900.0).startup_limit_s == 900.0
    with pytest.raises(Exception, match="--case-timeout needs process isolation"):
        isolate.from_options(False, 5.0, [cpu])


def test_empty_cache_after_a_sticky_cuda_error_does_not_escape(monkeypatch, fast_timing):
    """After an illegal memory access every CUDA call raises, torch.cuda.empty_cache too: the
    round reports the first error and measure_round still returns."""

    def sticky() -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "empty_cache", sticky)
    monkeypatch.setattr(iw.Good, "setup", lambda self: sticky())  # the case's first CUDA call
    outcome = lifecycle.measure_round(iw.Good, {"n": 8}, DeviceInfo("cuda:0", "cuda", "GPU", None), fast_timing)
    assert outcome.status == "failed" and "illegal memory access" in outcome.error


def test_cli_isolate_runs_and_says_so(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["run", "matmul", "-p", "size=16,32", "--device", "cpu", "--isolate", "--out", str(out), *FAST_ARGS])
    assert code == 0, capsys.readouterr().err
    doc = results.read_run(out)
    assert doc["run"]["settings"]["isolate"] is True and doc["run"]["settings"]["case_timeout_s"] == 600.0
    assert [c["status"] for c in doc["cases"]] == ["ok", "ok"]
    assert all(c["rounds"][0]["worker_start_s"] > 0 for c in doc["cases"])


def test_cli_isolation_option_errors(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "matmul", "-p", "size=16", "--no-isolate", "--case-timeout", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--case-timeout needs process isolation" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before anything was written
    assert main(["run", "matmul", "--case-timeout", "0", "--out", str(out)]) == 2
    assert "--case-timeout" in capsys.readouterr().err


def test_cli_no_isolate_records_it(tmp_path):
    out = tmp_path / "r.json"
    assert main(["run", "matmul", "-p", "size=16", "--no-isolate", "--out", str(out), *FAST_ARGS]) == 0
    settings = results.read_run(out)["run"]["settings"]
    assert settings["isolate"] is False and settings["case_timeout_s"] is None


def test_ctrl_c_during_an_isolated_run_kills_the_worker_and_saves(tmp_path):
    out = tmp_path / "run.json"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "matmul",
        "-p",
        "size=64,65,66,67",
        "-p",
        "dtype=float32",
        "--device",
        "cpu",
        "--min-time",
        "0.5",
        "--repeat-time",
        "0.02",
        "--repeats",
        "2",
        "--isolate",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_cases(out, 1, proc)
        workers: list[psutil.Process] = []
        deadline = time.monotonic() + 30
        while not workers and time.monotonic() < deadline:  # the second case's worker
            workers = [p for p in psutil.Process(proc.pid).children() if "bench.measure.worker" in " ".join(p.cmdline())]
            time.sleep(0.05)
        assert workers, "no worker process for the second case"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    (worker,) = workers
    assert _gone(worker)
    doc = results.read_run(out)
    assert doc["run"]["status"] == "interrupted" and doc["run"]["settings"]["isolate"] is True
    statuses = [c["status"] for c in doc["cases"]]
    assert statuses[0] == "ok" and statuses[-1] == "interrupted" and len(statuses) < 4
    assert len(load([out])) == len(statuses)


PARENT = """
import json, sys, time
from bench.measure import isolate
from bench.measure.hardware import cpu_device
from bench.measure.timing import TimingConfig
from tests import isolation_workloads as iw

timing = TimingConfig(min_time_s=0.01, repeats=2, repeat_time_s=0.002)
job = isolate.make_request(iw.Hangs, {"n": 8}, cpu_device(), timing, None, None)
worker = isolate._Worker(json.dumps(job) + "\\n")
assert worker._message(time.monotonic() + 120)["type"] == "ready"
print(worker.proc.pid, flush=True)
worker._message(time.monotonic() + 600)  # the workload hangs: this waits until the parent is killed
"""


def test_a_worker_exits_when_its_parent_dies():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        worker = psutil.Process(int(parent.stdout.readline()))  # ready, and hanging in run()
        parent.kill()  # no chance to clean up: only the worker's own watch on its stdin is left
        parent.wait(30)
        deadline = time.monotonic() + 30
        while not _gone(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(worker)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_the_default_timeout_outlasts_what_the_timing_allows():
    from bench.measure.timing import TimingConfig

    assert isolate.default_timeout_s(TimingConfig()) == isolate.DEFAULT_CASE_TIMEOUT_S
    long = TimingConfig(min_time_s=900.0, warmup_max_s=3.0)
    assert isolate.default_timeout_s(long) >= 3 * 903
    assert isolate.from_options(True, None, [cpu_device()], long).case_timeout_s == isolate.default_timeout_s(long)
    assert isolate.from_options(True, 5.0, [cpu_device()], long).case_timeout_s == 5.0  # a given timeout wins


def test_a_held_context_lives_for_the_block_and_no_longer():
    iso = isolate.Isolation(case_timeout_s=30)
    with iso.holding_context(cpu_device()) as why:
        assert why is None
        held = [p for p in psutil.Process().children() if "bench.measure.worker" in " ".join(p.cmdline())]
        assert len(held) == 1 and held[0].is_running()
    assert not held[0].is_running() or held[0].status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("isolated", [False, True])
def test_idle_power_says_why_a_gpu_had_no_context(isolated):
    """No CUDA here: the context for the idle measurement fails, in this process or in the
    holding worker, and the run records why instead of crashing."""
    gpu = DeviceInfo(id="cuda:0", kind="cuda", name="a GPU this torch cannot use", memory_bytes=None)
    with Monitor([], 0.05) as monitor:
        execution = modes.Isolated(isolate.Isolation(case_timeout_s=30)) if isolated else modes.InProcess()
        idle = runner.idle_power(monitor, [gpu], execution)
    assert "context_error" in idle["cuda:0"] and idle["cuda:0"]["context_error"]


def test_a_worker_that_survives_sigkill_is_reported_not_waited_for(monkeypatch):
    """A worker stuck in the driver (uninterruptible) cannot be reaped: stop() gives up after
    KILL_WAIT_S and says so, rather than hang the run."""
    monkeypatch.setattr(isolate, "KILL_WAIT_S", 0.01)

    class Stuck:
        pid = 999_999_999

        def poll(self):
            return None

        def wait(self, timeout=None):
            raise subprocess.TimeoutExpired("worker", timeout)

    worker = isolate._Worker.__new__(isolate._Worker)
    worker.proc, worker.unkillable = Stuck(), False
    monkeypatch.setattr(worker, "_signal", lambda sig: None)
    worker.stop(grace_s=0.01)
    assert worker.unkillable


def test_the_worker_copies_probed_periods_only_for_the_same_reader():
    from bench.measure import worker

    cpu = cpu_device()
    settings = {
        "interval_s": 0.05,
        "measured": True,
        "nominal_watts": 10.0,
        "counter_source": None,
        "power_source": "nominal",
        "counter_update_s": None,
        "power_update_s": 0.123,
    }
    (source, _memory) = worker._build_monitor(settings, cpu).sources
    assert source.power_update_s == 0.123
    other = worker._build_monitor({**settings, "power_source": "nvml_power_instant"}, cpu).sources[0]
    assert other.power_update_s is None  # another reader here: the parent's period does not apply
