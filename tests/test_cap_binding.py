"""Power-limit points that change nothing are flagged `cap_not_binding` (bench/measure/runner.py)
and the frontier says a cap does not bind rather than offering them as choices. A sweep, in this
process, of a case whose telemetry is a simulated GPU drawing a flat 250 W: caps of 300, 450 and
600 W never bind; a cap of 240 W clips it and NVML raises SW_POWER_CAP, so that point is no flag."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bench import results
from bench.control import restore
from bench.control.controller import Controller, targets_for
from bench.control.points import operating_points
from bench.measure import runner
from bench.measure.hardware import HostInfo, cpu_device
from bench.measure.plan import expand
from bench.measure.timing import TimingConfig
from bench.monitor.sampler import Monitor
from bench.report.frontier import frontier, sentence
from bench.report.load import load
from bench.testing_hooks import TEST_GPU_ENV
from tests.fake_nvml import PowerTrace

HOST = HostInfo("test", "Linux", "3.11", "2.13.0+cpu", None, None, "cpu", 2, 2**34, 2)
FAST = TimingConfig(min_time_s=0.2, repeats=3, repeat_time_s=0.02, warmup_max_s=0.2)


def _sweep(fake_nvml, monkeypatch, tmp_path, limits: list[str]) -> dict:
    from bench.device import nvidia

    gpu = fake_nvml.gpus[0]
    gpu.trace = PowerTrace(base_w=250.0, amp_w=0.0)  # a flat 250 W, whatever the cap
    fake_nvml.privileged = True
    monkeypatch.setenv(TEST_GPU_ENV, gpu.uuid)
    monkeypatch.setenv(restore.STATE_ENV, str(tmp_path / "records"))
    monkeypatch.setattr("bench.device.nvidia.permissions.effective_uid", lambda: 0)
    monkeypatch.setattr("bench.device.nvidia.permissions.effective_capabilities", lambda: None)
    device = cpu_device()
    points = operating_points(limits, [])
    controller = Controller(targets_for([device]), points, 0.0, "test", lambda line: None)
    controller.check()
    (case,) = expand("membw", {"op": ["triad"], "size": [2**16]}, [device])
    cases = [replace(case, operating=p) for p in points]
    path = tmp_path / "sweep.json"
    run_file = results.RunFile(path, runner.new_run_document("test", HOST, [device], FAST, len(cases)))
    source = nvidia.NvidiaGpus().power_source(gpu.uuid, device.id, probe=False)  # the GPU's power, the CPU's work
    with controller, Monitor([source], 0.01) as monitor:
        runner.run(cases, [device], FAST, run_file, context=runner.RunContext(monitor=monitor, controller=controller))
    assert gpu.power_limit_mw == 700_000  # restored
    return json.loads(path.read_text())


def test_caps_above_what_the_case_draws_are_flagged_and_the_frontier_says_so(fake_nvml, monkeypatch, tmp_path):
    doc = _sweep(fake_nvml, monkeypatch, tmp_path, ["300", "450", "600"])
    cases = doc["cases"]
    assert [c["operating_point"]["enforced_power_limit_w"] for c in cases] == [300.0, 450.0, 600.0]
    assert all("cap_not_binding" in c["flags"] for c in cases), [c["flags"] for c in cases]
    assert all(c["energy"]["peak_watts"] == pytest.approx(250.0, abs=1) for c in cases)
    (found,) = frontier(load([tmp_path / "sweep.json"]))
    text = sentence(found)
    assert "a power cap does not bind for this case (300 W, 450 W, 600 W" in text and "lock clocks instead" in text
    assert found.points == []  # none is offered as a choice


def test_a_cap_that_clips_the_power_is_no_flag(fake_nvml, monkeypatch, tmp_path):
    (case,) = _sweep(fake_nvml, monkeypatch, tmp_path, ["240"])["cases"]
    assert case["operating_point"]["enforced_power_limit_w"] == 240.0
    assert "throttled:sw_power_cap" in case["flags"] and "cap_not_binding" not in case["flags"]


def test_the_rule_on_its_own():
    from bench.record import Energy, OperatingState

    point = OperatingState.parse({"power_limit_request": "300", "enforced_power_limit_w": 300.0})
    assert runner.cap_not_binding(point, Energy.parse({"peak_watts": 250.0}), [])
    assert not runner.cap_not_binding(point, Energy.parse({"peak_watts": 290.0}), [])  # within 5% of the cap
    assert not runner.cap_not_binding(point, Energy.parse({"peak_watts": 250.0}), ["throttled:sw_power_cap"])
    assert not runner.cap_not_binding(OperatingState.parse({"gpu_clocks_mhz": 1410}), Energy.parse({"peak_watts": 250.0}), [])
