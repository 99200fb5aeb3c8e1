"""Operating-point sweeps against the simulated NVML, in real subprocesses: the power limit as
found comes back after a normal end, a case that raises, Ctrl-C, SIGTERM and kill -9 (the
watchdog), and with the watchdog killed too the next run restores it and says so; no
permission and out-of-range values stop before anything changes.

The subprocesses load the simulated NVML from tests/fake_site (PYTHONPATH) and keep the GPU's
settings in a state file, so the sweep, its watchdog and a later command see one GPU. The cases
run on the CPU; the test-only WATTBENCH_TEST_OPERATING_GPU points the sweep at the simulated GPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.control.points import OperatingPoint, operating_points, parse_clocks, parse_power_limits
from bench.control.restore import STATE_ENV
from bench.errors import UsageError
from bench.testing_hooks import TEST_GPU_ENV
from tests.fake_nvml import STATE_ENV as FAKE_STATE_ENV
from tests.fake_nvml import FakeGpu, read_state, write_state

ROOT = Path(__file__).resolve().parents[1]
UUID = FakeGpu().uuid
AS_FOUND_MW = 700_000
FAST = ["--device", "cpu", "--min-time", "0", "--repeats", "2", "--repeat-time", "0.001", "--no-monitor", "--settle", "0"]
CASE = ["membw", "-p", "op=triad", "-p", "size=64KiB"]


@pytest.fixture
def gpu(tmp_path):
    """A simulated H100 at its default 700 W limit, privileged to change it; returns the state path."""
    path = tmp_path / "nvml.json"
    write_state(path, {"privileged": True, "gpus": [{"uuid": UUID, "power_limit_mw": AS_FOUND_MW, "locked_clock_mhz": None}]})
    return path


def _env(state: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTBENCH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "fake_site"), str(ROOT)])
    env[FAKE_STATE_ENV] = str(state)
    env[TEST_GPU_ENV] = UUID
    env[STATE_ENV] = str(tmp_path / "records")
    return env


def _limit_mw(state: Path) -> int:
    return read_state(state)["gpus"][0]["power_limit_mw"]


def _records(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "records"
    return sorted(folder.glob("restore-*.json")) if folder.exists() else []


def _wattbench(args: list[str], state: Path, tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=tmp_path,
        env=_env(state, tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _start(args: list[str], state: Path, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=tmp_path,
        env=_env(state, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# --- parsing ------------------------------------------------------------------------------------


def test_power_limits_and_clocks_parse_and_cross():
    assert parse_power_limits("300, 450W,70%") == ["300", "450", "70%"]
    assert parse_clocks("1410,1980MHz") == [1410, 1980]
    points = operating_points(["300", "70%"], [1410])
    assert [p.suffix for p in points] == ["[pl=300W,clk=1410MHz]", "[pl=70%,clk=1410MHz]"]
    assert OperatingPoint("70%").watts(700.0) == pytest.approx(490.0)
    for bad in ("0", "-5", "150%", "fast"):
        with pytest.raises(UsageError, match="valid: watts"):
            parse_power_limits(bad)
    with pytest.raises(UsageError, match="valid: SM clocks in MHz"):
        parse_clocks("1.4GHz")


# --- the sweep and its way out -----------------------------------------------------------------


def test_a_three_point_sweep_records_each_limit_and_restores_after_a_normal_end(gpu, tmp_path):
    out = tmp_path / "sweep.json"
    done = _wattbench(["run", *CASE, *FAST, "--power-limit", "300,450,70%", "--out", str(out)], gpu, tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    points = [c["operating_point"] for c in doc["cases"]]
    assert [p["power_limit_request"] for p in points] == ["300", "450", "70%"]
    assert [p["enforced_power_limit_w"] for p in points] == [300.0, 450.0, 490.0]
    assert [c["id"].rsplit("@", 1)[1] for c in doc["cases"]] == ["cpu[pl=300W]", "cpu[pl=450W]", "cpu[pl=70%]"]
    assert _limit_mw(gpu) == AS_FOUND_MW
    assert _records(tmp_path) == []
    # The report: one hardware, three operating points of one case.
    from bench.report.load import load

    df = load([out])
    assert df["hardware"].nunique() == 1
    assert df["op_label"].nunique() == 3
    assert df["case_key"].nunique() == 3


def test_the_limit_comes_back_after_a_case_that_raises(gpu, tmp_path):
    driver = (
        "import sys, workloads; from tests.isolation_workloads import Good, Raises; "
        "workloads.registry().update({c.name: c for c in (Good, Raises)}); "
        "from bench.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["run", "iso_raise", "iso_good", *FAST, "--power-limit", "300,450", "--out", str(tmp_path / "r.json")]
    done = subprocess.run(
        [sys.executable, "-c", driver, *args], cwd=ROOT, env=_env(gpu, tmp_path), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr  # a case failed; the run went on
    statuses = [c["status"] for c in json.loads((tmp_path / "r.json").read_text())["cases"]]
    assert statuses.count("failed") == 2 and statuses.count("ok") == 2
    assert _limit_mw(gpu) == AS_FOUND_MW and _records(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_limit_comes_back_after_an_interrupt(gpu, tmp_path, sig):
    slow = ["--device", "cpu", "--min-time", "2", "--no-monitor", "--settle", "0"]
    proc = _start(["run", *CASE, *slow, "--power-limit", "300,450,500", "--out", str(tmp_path / "i.json")], gpu, tmp_path)
    try:
        assert _wait_for(lambda: _limit_mw(gpu) != AS_FOUND_MW), "the sweep never changed the limit"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert _limit_mw(gpu) == AS_FOUND_MW and _records(tmp_path) == []


def test_after_kill_9_the_watchdog_restores_within_seconds(gpu, tmp_path):
    slow = ["--device", "cpu", "--min-time", "5", "--no-monitor", "--settle", "0"]
    proc = _start(["run", *CASE, *slow, "--power-limit", "300,450", "--out", str(tmp_path / "k.json")], gpu, tmp_path)
    try:
        assert _wait_for(lambda: _limit_mw(gpu) != AS_FOUND_MW)
        proc.kill()
        proc.wait(timeout=10)
        killed = time.monotonic()
        assert _wait_for(lambda: _limit_mw(gpu) == AS_FOUND_MW, timeout=10), "the watchdog did not restore"
        assert time.monotonic() - killed < 5
        assert _wait_for(lambda: _records(tmp_path) == [], timeout=5)
    finally:
        proc.kill()


def test_with_the_watchdog_killed_too_the_next_run_restores_and_says_so(gpu, tmp_path):
    slow = ["--device", "cpu", "--min-time", "5", "--no-monitor", "--settle", "0"]
    proc = _start(["run", *CASE, *slow, "--power-limit", "300,450", "--out", str(tmp_path / "w.json")], gpu, tmp_path)
    try:
        assert _wait_for(lambda: _limit_mw(gpu) != AS_FOUND_MW)
        for child in psutil.Process(proc.pid).children(recursive=True):  # the watchdog first
            child.kill()
        proc.kill()
        proc.wait(timeout=10)
    finally:
        proc.kill()
    time.sleep(0.5)
    assert _limit_mw(gpu) != AS_FOUND_MW and len(_records(tmp_path)) == 1  # left capped, on record
    done = _wattbench(["run", *CASE, *FAST, "--out", str(tmp_path / "next.json")], gpu, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stderr and UUID in done.stderr and "700 W" in done.stderr
    assert _limit_mw(gpu) == AS_FOUND_MW and _records(tmp_path) == []


def test_without_permission_nothing_changes_and_one_line_says_what_is_needed(gpu, tmp_path):
    write_state(gpu, dict(read_state(gpu), privileged=False))
    done = _wattbench(["run", *CASE, *FAST, "--power-limit", "300,450,70%"], gpu, tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs administrator rights" in lines[0] and "CAP_SYS_ADMIN" in lines[0]
    assert _limit_mw(gpu) == AS_FOUND_MW and _records(tmp_path) == []
    assert not list(tmp_path.glob("results/*.json"))  # no partial run


def test_an_out_of_range_limit_exits_2_naming_the_range(gpu, tmp_path):
    done = _wattbench(["run", *CASE, *FAST, "--power-limit", "300,800"], gpu, tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "800 W is outside the range" in lines[0] and "valid: 200-700 W" in lines[0]
    assert _limit_mw(gpu) == AS_FOUND_MW


def _left_behind(gpu: Path, tmp_path: Path) -> None:
    """The GPU capped at 300 W with clocks locked, and the record of a run that died."""
    write_state(gpu, dict(read_state(gpu), gpus=[{"uuid": UUID, "power_limit_mw": 300_000, "locked_clock_mhz": 1410}]))
    folder = tmp_path / "records"
    folder.mkdir(exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    record = {
        "schema": "wattbench.restore/1",
        "uuid": UUID,
        "device": "cuda:0",
        "power_limit_w": 700.0,
        "reset_clocks": True,
        "host": os.uname().nodename,
        "pid": int(dead),
        "created_at": "2026-11-30T00:00:00+00:00",
        "command": "wattbench run matmul --power-limit 300",
    }
    (folder / f"restore-{UUID}.json").write_text(json.dumps(record))


def test_monitor_honours_a_record_left_behind(gpu, tmp_path):
    _left_behind(gpu, tmp_path)
    done = _wattbench(["monitor", "--", sys.executable, "-c", "pass"], gpu, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "restored cuda:0" in done.stderr
    assert _limit_mw(gpu) == AS_FOUND_MW and _records(tmp_path) == []


def test_without_rights_a_record_left_behind_is_said_not_dropped(gpu, tmp_path):
    _left_behind(gpu, tmp_path)
    write_state(gpu, dict(read_state(gpu), privileged=False))
    done = _wattbench(["run", *CASE, *FAST, "--out", str(tmp_path / "x.json")], gpu, tmp_path)
    assert done.returncode == 0
    assert "still to restore" in done.stderr and "sudo wattbench restore" in done.stderr
    assert _limit_mw(gpu) == 300_000 and len(_records(tmp_path)) == 1


def test_restore_command_lists_and_restores_a_record_left_behind(gpu, tmp_path):
    _left_behind(gpu, tmp_path)
    listed = _wattbench(["restore", "--list"], gpu, tmp_path)
    assert listed.returncode == 0 and "power limit 700 W and SM clocks reset" in listed.stdout
    done = _wattbench(["restore"], gpu, tmp_path)
    assert done.returncode == 0, done.stderr
    assert _limit_mw(gpu) == AS_FOUND_MW and read_state(gpu)["gpus"][0]["locked_clock_mhz"] is None
    assert _records(tmp_path) == []


def test_a_point_nvml_refuses_fails_its_case_and_the_rest_runs(tmp_path):
    """Locking clocks is not supported on this GPU: each clock point's case fails with NVML's
    reason, the run goes on and exits 1, and the GPU is left as found."""
    state = tmp_path / "nvml.json"
    write_state(
        state,
        {
            "privileged": True,
            "gpus": [
                {
                    "uuid": UUID,
                    "power_limit_mw": AS_FOUND_MW,
                    "locked_clock_mhz": None,
                    "unsupported": ["nvmlDeviceSetGpuLockedClocks"],
                }
            ],
        },
    )
    out = tmp_path / "clk.json"
    done = _wattbench(["run", *CASE, *FAST, "--power-limit", "450", "--gpu-clocks", "1410", "--out", str(out)], state, tmp_path)
    assert done.returncode == 1, done.stderr
    (case,) = json.loads(out.read_text())["cases"]
    assert case["status"] == "failed" and case["error"].startswith("could not set the operating point [pl=450W,clk=1410MHz]")
    assert "not supported" in case["error"]
    assert _limit_mw(state) == AS_FOUND_MW and _records(tmp_path) == []


def test_a_late_watchdog_leaves_another_sweeps_record_alone(tmp_path, monkeypatch):
    """Sweep A died; sweep B honoured A's record and wrote its own for the same GPU. A's watchdog,
    waking late, must not restore (and delete) B's record under B's feet."""
    import io

    from bench.control import restore

    monkeypatch.setenv(STATE_ENV, str(tmp_path / "records"))
    record = restore.write_record(UUID, "cuda:0", 700.0, False, "sweep B")  # written by this process: "B"
    assert restore.watch(owner=record.pid + 1, paths=[str(record.path)], stdin=io.BytesIO(b"")) == 0
    assert record.path.exists()


def test_records_are_looked_for_machine_wide_and_per_user(tmp_path, monkeypatch):
    """A sweep run with sudo writes the machine-wide folder; a later run as another user still
    finds the record there (and says the GPU is left changed)."""
    from bench.control import restore

    monkeypatch.delenv(STATE_ENV, raising=False)
    monkeypatch.setattr(restore, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "user"))
    assert restore.state_dirs() == [tmp_path / "system", tmp_path / "user" / "wattbench"]
    record = restore.write_record(UUID, "cuda:0", 700.0, False, "sudo wattbench run ...")
    assert record.path.parent == tmp_path / "system"
    assert [r.path for r in restore.read_records()] == [record.path]
    (tmp_path / "system").chmod(0o555)  # as a user who may not write there
    try:
        if os.access(tmp_path / "system", os.W_OK):
            pytest.skip("this user can write any folder (root)")
        assert restore.state_dir() == tmp_path / "user" / "wattbench"
        assert [r.path for r in restore.read_records()] == [record.path]  # still seen
    finally:
        (tmp_path / "system").chmod(0o755)
