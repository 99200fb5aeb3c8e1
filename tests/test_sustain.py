"""Sustained cases (`--sustain`, bench/measure/sustain.py): the timed window in segments, a burst
window against a tail window, and `sustained_drop` when the tail is lower. A simulated NVML whose
SM clock drops 2.5 s in (heat soak) makes the flag appear in a 6 s run with windows of 1 s and 3 s;
a steady one does not."""

from __future__ import annotations

import time

import pytest

from bench.measure.hardware import cpu_device
from bench.measure.plan import expand
from bench.measure.runner import run_case
from bench.measure.sustain import sustained_record
from bench.measure.timing import Sustain, TimingConfig
from bench.monitor.sampler import Monitor
from workloads import get

SUSTAIN = Sustain(6.0, burst_s=1.0, tail_s=3.0, segment_s=0.5)


def _sustained_case(fake_nvml, monkeypatch, drop_after_s: float | None, sustain: Sustain = SUSTAIN) -> dict:
    """The case on the CPU, the simulated GPU's telemetry as its source; the clock drops
    `drop_after_s` after the sustained window opens (however long set-up took on a busy machine)."""
    from bench.device import nvidia
    from bench.measure import lifecycle

    gpu = fake_nvml.gpus[0]
    if drop_after_s is not None:
        opened = lifecycle._sustained

        def opening(*args, **kwargs):
            gpu.clock_drop_at, gpu.dropped_clock_mhz = time.monotonic() + drop_after_s, 1500
            return opened(*args, **kwargs)

        monkeypatch.setattr(lifecycle, "_sustained", opening)
    device = cpu_device()
    source = nvidia.NvidiaGpus().power_source(gpu.uuid, device.id, probe=False)  # the GPU's telemetry, the CPU's work
    (case,) = expand("membw", {"op": ["triad"], "size": [2**20]}, [device])
    timing = TimingConfig(min_time_s=0.05, repeats=2, repeat_time_s=0.01, warmup_max_s=0.2, sustain=sustain)
    with Monitor([source], 0.02) as monitor:
        return run_case(case, device, timing, get("membw"), monitor)


def test_a_clock_that_drops_after_2_5_s_flags_sustained_drop(fake_nvml, monkeypatch):
    record = _sustained_case(fake_nvml, monkeypatch, drop_after_s=2.5)  # the tail, the last 3 s, starts after it
    assert record["status"] == "ok", record["error"]
    sustained = record["sustained"]
    assert sustained["burst"]["sm_clock_mhz"] == pytest.approx(1980, abs=1)
    assert sustained["tail"]["sm_clock_mhz"] == pytest.approx(1500, abs=1)
    assert sustained["drop"]["sm_clock_mhz"] == pytest.approx(480 / 1980, abs=0.01)
    assert "sustained_drop" in record["flags"]
    # 6 s in segments of about 0.5 s (a busy machine: fewer, longer ones)
    assert len(sustained["segments"]) >= 3 and sustained["tail"]["from_s"] >= 2.9
    assert record["energy"]["source"] == "nvml_energy" and record["energy"]["duration_s"] > 5.5


def test_a_steady_clock_is_no_drop(fake_nvml, monkeypatch):
    record = _sustained_case(
        fake_nvml, monkeypatch, drop_after_s=None, sustain=Sustain(2.0, burst_s=0.5, tail_s=1.0, segment_s=0.5)
    )
    sustained = record["sustained"]
    assert sustained["burst"]["sm_clock_mhz"] == sustained["tail"]["sm_clock_mhz"] == pytest.approx(1980, abs=1)
    assert sustained["drop"]["sm_clock_mhz"] == pytest.approx(0.0, abs=1e-6)
    assert sustained["drop"]["throughput"] is not None  # the CPU's own wobble decides that one


def test_the_burst_and_tail_windows_and_the_margin():
    keys = ("t_s", "duration_s", "seconds_per_iter", "avg_watts", "sm_clock_mhz", "mean_temperature_c", "max_temperature_c")
    segments = [
        dict(zip(keys, (float(t), 1.0, 1e-3 if t < 5 else 1.1e-3, 600.0, 1980.0, 60.0, 65.0), strict=True)) for t in range(10)
    ]
    record, dropped = sustained_record(segments, 1e9, Sustain(10.0, burst_s=2.0, tail_s=3.0))
    assert (record["burst"]["segments"], record["tail"]["segments"]) == (2, 3)
    assert record["burst"]["throughput"] == pytest.approx(1e12) and record["tail"]["throughput"] == pytest.approx(1e12 / 1.1)
    assert dropped and record["drop"]["throughput"] == pytest.approx(1 - 1 / 1.1)
    _, dropped = sustained_record(segments, 1e9, Sustain(10.0, burst_s=2.0, tail_s=3.0, margin=0.1))
    assert not dropped  # 9.1% is within a 10% margin


def test_sustain_flags_are_checked(tmp_path, capsys):
    from bench.cli import main

    assert main(["run", "matmul", "--device", "cpu", "--burst", "5", "--out", str(tmp_path)]) == 2
    assert "--burst and --tail shape a sustained case; valid: with --sustain S" in capsys.readouterr().err
    assert main(["run", "matmul", "--device", "cpu", "--sustain", "0", "--out", str(tmp_path)]) == 2
    assert "'0' must be a number of seconds > 0" in capsys.readouterr().err
    assert main(["run", "matmul", "--device", "cpu", "--sustain", "5", "--rounds", "3", "--out", str(tmp_path)]) == 2
    assert "a sustained case runs one round" in capsys.readouterr().err
    assert (
        main(["run", "matmul", "--device", "cpu", "--sustain", "10", "--burst", "5", "--tail", "8", "--out", str(tmp_path)]) == 2
    )
    assert "valid: --burst + --tail <= --sustain" in capsys.readouterr().err
    shorter = Sustain.of(30.0)  # the defaults (10 s, 60 s) shrink to fit a shorter window
    assert (shorter.burst_s, shorter.tail_s) == (7.5, 15.0) and Sustain.of(600.0).tail_s == 60.0
