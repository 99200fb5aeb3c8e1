"""wattbench on a simulated AMD machine, in real subprocesses: two MI300X through the simulated AMD
SMI (tests/fake_site/amdsmi.py, state in a file) and no NVIDIA driver (the simulated NVML answers
DRIVER_NOT_LOADED). `info` lists both GPUs with their cap and range; `monitor -- sleep 4` measures
each GPU's energy against its known power trace, through a counter that wraps and one that is
frozen; a power-cap sweep is refused without rights and put back on every way out with them.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.control.restore import STATE_ENV as RECORDS_ENV
from bench.testing_hooks import TEST_GPU_ENV
from tests.fake_amdsmi import STATE_ENV as AMD_STATE_ENV
from tests.fake_amdsmi import two_mi300x
from tests.fake_nvml import NVML_ERROR_DRIVER_NOT_LOADED, read_state, write_state
from tests.fake_nvml import STATE_ENV as NVML_STATE_ENV

ROOT = Path(__file__).resolve().parents[1]
GPU0, GPU1 = (g.uuid for g in two_mi300x())
TRACES = ({"base_w": 300.0, "amp_w": 100.0, "period_s": 0.4}, {"base_w": 450.0, "amp_w": 150.0, "period_s": 0.5})
AS_FOUND_UW = 750_000_000
FAST = ["--device", "cpu", "--min-time", "0", "--repeats", "2", "--repeat-time", "0.001", "--no-monitor", "--settle", "0"]
CASE = ["membw", "-p", "op=triad", "-p", "size=64KiB"]


def _machine(tmp_path: Path, privileged: bool = False, second: dict | None = None) -> Path:
    """Two simulated MI300X (the second changed by `second`) and no NVIDIA driver; the AMD state path."""
    write_state(tmp_path / "nvml.json", {"init_error": NVML_ERROR_DRIVER_NOT_LOADED})
    gpus = [{"uuid": GPU0, **TRACES[0]}, {"uuid": GPU1, **TRACES[1], **(second or {})}]
    path = tmp_path / "amdsmi.json"
    write_state(path, {"privileged": privileged, "gpus": gpus})
    return path


def _env(tmp_path: Path, test_gpu: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTBENCH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "fake_site"), str(ROOT)])
    env[NVML_STATE_ENV] = str(tmp_path / "nvml.json")
    env[AMD_STATE_ENV] = str(tmp_path / "amdsmi.json")
    env[RECORDS_ENV] = str(tmp_path / "records")
    if test_gpu:
        env[TEST_GPU_ENV] = test_gpu
    return env


def _start(args: list[str], tmp_path: Path, test_gpu: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=tmp_path,
        env=_env(tmp_path, test_gpu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wattbench(args: list[str], tmp_path: Path, test_gpu: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = _start(args, tmp_path, test_gpu)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _cap_uw(state: Path, uuid: str) -> int:
    entry = next(e for e in read_state(state)["gpus"] if e["uuid"] == uuid)
    return int(entry.get("power_cap_uw", AS_FOUND_UW))


def _within_3_percent_of_the_trace(joules: float, duration_s: float, trace: dict) -> bool:
    """Whether `joules` is within 3% of the trace's exact integral over a window of `duration_s`
    wherever the window starts: that integral is base * D plus at most amp * period / pi either way."""
    slack = trace["amp_w"] * trace["period_s"] / math.pi
    nominal = trace["base_w"] * duration_s
    return abs(joules - nominal) <= 0.03 * (nominal - slack) - slack


def test_info_lists_both_gpus_with_their_cap_and_range(tmp_path):
    _machine(tmp_path)
    table = _wattbench(["info"], tmp_path)
    as_json = _wattbench(["info", "--json"], tmp_path)
    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    text = " ".join(table.stdout.split())
    assert text.count("AMD Instinct MI300X") >= 2 and "750 W" in text and "0-750 W" in text
    amd = [a for a in json.loads(as_json.stdout)["accelerators"] if a["vendor"] == "amd"]
    assert [(a["uuid"], a["power_limit_w"], a["power_limit_min_w"], a["power_limit_max_w"]) for a in amd] == [
        (GPU0, 750.0, 0.0, 750.0),
        (GPU1, 750.0, 0.0, 750.0),
    ]
    assert "libamd_smi" not in table.stdout + table.stderr  # the fake imported; nothing said about ROCm


def test_monitor_measures_each_gpu_through_a_wrapping_and_a_frozen_counter(tmp_path):
    """Two machines at once (2 cores, mostly asleep): the second GPU's counter is 24 bits wide
    (256 J: it wraps about twice a second at 450 W) on one and frozen on the other."""
    wrapping, frozen = tmp_path / "wrapping", tmp_path / "frozen"
    for folder, second in ((wrapping, {"counter_bits": 24, "counter_start": 2**24 - 1000}), (frozen, {"frozen": True})):
        folder.mkdir()
        _machine(folder, second=second)
    procs = [_start(["monitor", "--json", "--", "sleep", "4"], folder) for folder in (wrapping, frozen)]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append({d["id"]: d for d in json.loads(out)["devices"]})
    for report in reports:
        assert report["gpu0"]["name"] == report["gpu1"]["name"] == "AMD Instinct MI300X"
    for dev, trace in zip(("gpu0", "gpu1"), TRACES, strict=True):
        energy = reports[0][dev]["energy"]
        assert energy["source"] == "amdsmi_energy" and energy["duration_s"] > 3.9  # the window spans the command
        assert _within_3_percent_of_the_trace(energy["joules"], energy["duration_s"], trace), (dev, energy["joules"])
    energy = reports[1]["gpu1"]["energy"]
    assert "energy_counter_frozen" in reports[1]["gpu1"]["flags"]
    assert energy["source"] == "amdsmi_power" and energy["counter_joules"] is None
    assert _within_3_percent_of_the_trace(energy["joules"], energy["duration_s"], TRACES[1]), energy["joules"]
    assert reports[1]["gpu0"]["energy"]["source"] == "amdsmi_energy"


def test_a_cap_sweep_without_rights_is_one_line_and_changes_nothing(tmp_path):
    state = _machine(tmp_path, privileged=False)
    done = _wattbench(["run", *CASE, *FAST, "--power-limit", "300,450"], tmp_path, test_gpu=GPU1)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "root" in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert _cap_uw(state, GPU1) == AS_FOUND_UW


def test_a_cap_sweep_records_each_cap_and_puts_it_back_after_a_normal_end(tmp_path):
    state = _machine(tmp_path, privileged=True)
    out = tmp_path / "sweep.json"
    done = _wattbench(["run", *CASE, *FAST, "--power-limit", "300,450", "--out", str(out)], tmp_path, test_gpu=GPU1)
    assert done.returncode == 0, done.stderr
    points = [c["operating_point"] for c in json.loads(out.read_text())["cases"]]
    assert [p["enforced_power_limit_w"] for p in points] == [300.0, 450.0]
    assert _cap_uw(state, GPU1) == AS_FOUND_UW and _cap_uw(state, GPU0) == AS_FOUND_UW
    assert not list((tmp_path / "records").glob("restore-*.json"))


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "kill -9"])
def test_the_cap_comes_back_after_an_interrupt_and_after_kill_9(tmp_path, how):
    """Ctrl-C and SIGTERM: the run restores on its way out; kill -9: its watchdog does, within seconds."""
    state = _machine(tmp_path, privileged=True)
    slow = ["--device", "cpu", "--min-time", "5", "--no-monitor", "--settle", "0"]
    proc = _start(["run", *CASE, *slow, "--power-limit", "300,450", "--out", str(tmp_path / "k.json")], tmp_path, GPU1)
    try:
        deadline = time.monotonic() + 60
        while _cap_uw(state, GPU1) == AS_FOUND_UW and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _cap_uw(state, GPU1) != AS_FOUND_UW, "the sweep never changed the cap"
        if how in ("ctrl-c", "sigterm"):
            proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
            proc.communicate(timeout=60)
            assert proc.returncode == 130
        else:
            proc.kill()
            proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _cap_uw(state, GPU1) != AS_FOUND_UW and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _cap_uw(state, GPU1) == AS_FOUND_UW
    finally:
        proc.kill()
        proc.communicate()
