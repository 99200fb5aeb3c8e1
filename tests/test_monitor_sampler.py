"""The sampler's bookkeeping: bounded memory, gaps, edges, and the runner and CLI on top of it."""

import json
import subprocess
import sys
import time

import pytest

from bench.cli import main
from bench.monitor.base import PowerSource, Reading
from bench.monitor.sampler import MAX_TRACE_POINTS, Monitor, _finish, _Track

FAST = ["--min-time", "0.05", "--repeats", "2", "--repeat-time", "0.01"]


class Scripted(PowerSource):
    """Readings handed in by the test."""

    device_id = "dev"
    power_source = "nvml_power_instant"

    def __init__(self):
        self.next = Reading(0.0, power_w=100.0)

    def read(self):
        return self.next


def test_trace_stays_bounded_and_integral_exact():
    src = Scripted()
    track = _Track(src, Reading(0.0, power_w=100.0))
    for i in range(1, 100_001):
        track.add(Reading(i * 0.001, power_w=100.0 + (i % 2)))
    result = _finish(track, 0.001)
    assert len(result.trace) < MAX_TRACE_POINTS
    assert result.samples == 100_001
    assert result.joules == pytest.approx(100.5 * 100.0, rel=1e-4)
    assert result.peak_watts == 101.0
    assert result.flags == ()


def test_gap_between_samples_is_flagged():
    src = Scripted()
    track = _Track(src, Reading(0.0, power_w=100.0))
    for t in (0.01, 0.02, 0.5, 0.51):
        track.add(Reading(t, power_w=100.0))
    assert "sampling_gaps" in _finish(track, 0.01).flags


def test_reading_before_window_opened_is_ignored():
    src = Scripted()
    track = _Track(src, Reading(1.0, power_w=100.0))
    track.add(Reading(0.5, power_w=900.0))
    track.add(Reading(2.0, power_w=100.0))
    result = _finish(track, 1.0)
    assert result.joules == pytest.approx(100.0)
    assert result.peak_watts == 100.0


def test_sampler_thread_idles_between_windows():
    src = Scripted()
    calls = []
    src.read = lambda: calls.append(1) or Reading(time.monotonic(), power_w=1.0)
    with Monitor([src], 0.005):
        time.sleep(0.1)
    assert calls == []


def test_a_source_that_raises_does_not_stop_the_sampler():
    class Broken(Scripted):
        def read(self):
            raise RuntimeError("sensor gone")

    with Monitor([Broken()], 0.005) as monitor:
        with monitor.window() as window:
            time.sleep(0.05)
    result = window.results["dev"]
    assert "sampling_gaps" in result.flags and result.joules is None
    assert monitor._thread is None


def test_process_memory_of_an_exited_process(tmp_path):
    from bench.monitor.process import ProcessMemory

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    memory = ProcessMemory(proc.pid, children=True)
    proc.wait()
    assert memory.read().memory_used_bytes is None or memory.read().memory_used_bytes >= 0


def test_bad_interval():
    with pytest.raises(ValueError):
        Monitor([], 0)


def test_nominal_watts_on_cpu_without_rapl(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["run", "matmul", "-p", "size=64,96", "--nominal-watts", "100", "--out", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["run"]["monitor"]["status"]["cpu"] in ("nominal (estimate)", "rapl")
    if doc["run"]["monitor"]["status"]["cpu"] == "nominal (estimate)":
        assert doc["run"]["idle_power"] == {}  # nothing to measure when the wattage is given
    ok = [c for c in doc["cases"] if c["status"] == "ok"]
    assert ok
    for case in ok:
        if doc["run"]["monitor"]["status"]["cpu"] != "nominal (estimate)":
            pytest.skip("this machine can read RAPL, so nothing is nominal")
        assert case["energy"]["source"] == "nominal" and case["energy"]["estimate"] is True
        assert case["energy"]["avg_watts"] == pytest.approx(100.0, rel=1e-9)
        assert case["efficiency"] == pytest.approx(case["throughput"]["median"] / 100.0, rel=1e-9)
        assert case["energy"]["joules"] == pytest.approx(100.0 * case["energy"]["duration_s"], rel=1e-9)
        assert case["energy"]["idle_watts"] is None and case["energy"]["dynamic_joules"] is None
        assert "power_unmeasured" not in case["flags"]
        assert case["memory"]["source"] == "process_rss_sampled" and case["memory"]["process_peak_bytes"] > 0
    assert "~100.0 W" in capsys.readouterr().out


def test_without_a_source_energy_is_null(tmp_path, monkeypatch):
    import bench.monitor.discover as discover_mod

    monkeypatch.setattr(discover_mod, "POWERCAP_ROOT", tmp_path)  # no RAPL here, whatever the machine
    monkeypatch.setattr(discover_mod.discover, "__defaults__", (None, tmp_path, True))
    out = tmp_path / "r.json"
    assert main(["run", "matmul", "-p", "size=64", "--out", str(out), *FAST]) == 0
    doc = json.loads(out.read_text())
    case = doc["cases"][0]
    assert case["status"] == "ok"
    assert case["energy"] is None and case["efficiency"] is None
    assert "power_unmeasured" in case["flags"]
    assert doc["run"]["monitor"]["status"]["cpu"].startswith("unavailable: not present")


def test_no_monitor_flag(tmp_path):
    out = tmp_path / "r.json"
    assert main(["run", "matmul", "-p", "size=64", "--no-monitor", "--nominal-watts", "100", "--out", str(out), *FAST]) == 0
    doc = json.loads(out.read_text())
    assert "monitor" not in doc["run"]
    assert doc["cases"][0]["energy"] is None and "power_unmeasured" in doc["cases"][0]["flags"]


ALLOC_500MB = (
    "import time, sys\nb = bytearray(500 * 1000 * 1000)\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(1)\nsys.exit(3)\n"
)


def _monitor_json(*command):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "monitor", "--json", "--", *command], capture_output=True, text=True, timeout=120
    )
    return proc, json.loads(proc.stdout)


def test_monitor_command_peak_memory_and_exit_code():
    proc, report = _monitor_json(sys.executable, "-c", ALLOC_500MB)
    assert proc.returncode == 3, proc.stderr  # the command's exit code is passed through
    assert report["exit_code"] == 3 and report["interrupted"] is False
    assert report["peak_memory_bytes"] == pytest.approx(500e6, rel=0.10)
    cpu = [d for d in report["devices"] if d["id"] == "cpu"][0]
    assert cpu["status"]


def test_monitor_command_wall_time():
    # `sleep` starts in about a millisecond, so its true wall time is 1.0 s.
    proc, report = _monitor_json("sleep", "1")
    assert proc.returncode == 0
    assert report["wall_s"] == pytest.approx(1.0, rel=0.05)


def test_monitor_command_errors(capsys):
    assert main(["monitor"]) == 2
    assert "monitor needs a command" in capsys.readouterr().err
    assert main(["monitor", "--", "/no/such/program"]) == 2
    assert "cannot run '/no/such/program'" in capsys.readouterr().err


def test_monitor_command_ctrl_c_still_prints_totals(tmp_path):
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "monitor", "--json", "--", sys.executable, "-c", "import time; time.sleep(30)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(2.0)
    import os

    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C reaches the whole group
    stdout, stderr = proc.communicate(timeout=60)
    report = json.loads(stdout)
    assert report["interrupted"] is True
    assert proc.returncode == report["exit_code"] != 0
    assert report["wall_s"] < 20


class Counting(PowerSource):
    """Counts its reads; `sample_period_s` as given."""

    power_source = "nvml_power_instant"

    def __init__(self, device_id, period=None):
        self.device_id, self.sample_period_s, self.reads = device_id, period, 0

    def read(self):
        self.reads += 1
        return Reading(time.monotonic(), power_w=50.0)


def test_a_slow_source_is_read_less_often_and_not_flagged_for_gaps():
    fast, slow = Counting("fast"), Counting("slow", period=0.1)
    with Monitor([fast, slow], 0.01) as monitor:
        with monitor.window() as window:
            time.sleep(0.6)
    assert fast.reads > 2.5 * slow.reads > 0  # ~60 against ~6 reads, whatever the machine's jitter
    assert "sampling_gaps" not in window.results["slow"].flags


def test_only_slow_sources_wake_the_sampler_at_their_period():
    slow = Counting("slow", period=0.2)
    with Monitor([slow], 0.01) as monitor:
        with monitor.window():
            time.sleep(0.7)
    assert 2 <= slow.reads <= 6  # 2 edges + about 3 ticks, not 70


class _CountingEvent:
    """A stand-in for the monitor's stop event that counts the sampler's timed waits (its ticks)."""

    def __init__(self):
        import threading

        self.event, self.waits = threading.Event(), 0

    def wait(self, timeout=None):
        self.waits += 1
        return self.event.wait(timeout)

    def set(self):
        self.event.set()

    def clear(self):
        self.event.clear()

    def is_set(self):
        return self.event.is_set()


def test_sampler_sleeps_until_a_window_opens_then_ticks():
    src = Counting("dev")
    monitor = Monitor([src], 0.005)
    monitor._stop = stop = _CountingEvent()
    with monitor:
        time.sleep(0.5)
        assert src.reads == 0 and stop.waits == 0  # not one wake-up, where 100 ticks were due
        with monitor.window() as window:
            time.sleep(0.2)
        assert src.reads > 2 + 5  # two edges and the sampler's ticks
        assert window.results["dev"].samples > 2 + 5
        time.sleep(0.05)  # the sampler notices the last window closed at its next tick
        reads, waits = src.reads, stop.waits
        time.sleep(0.3)
        assert (src.reads, stop.waits) == (reads, waits)  # asleep again
        with monitor.window():
            time.sleep(0.1)
        assert src.reads > reads + 2  # and woken by the next window
    assert monitor._thread is None


@pytest.mark.parametrize("with_window", [False, True])
def test_stop_is_prompt_with_or_without_a_window(with_window):
    monitor = Monitor([Counting("dev")], 30.0)
    monitor.start()
    time.sleep(0.05)
    if with_window:
        window = monitor.window()
        window.__enter__()
        time.sleep(0.05)
    started = time.monotonic()
    monitor.stop()
    assert time.monotonic() - started < 1.0 and monitor._thread is None


def test_a_window_whose_synchronize_raises_is_still_closed():
    src = Counting("dev")
    calls = []

    def synchronize():
        calls.append(1)
        if len(calls) > 1:  # fine at the start, a sticky CUDA error at the end
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with Monitor([src], 0.005) as monitor:
        window = monitor.window(synchronize)
        with pytest.raises(RuntimeError, match="illegal memory access"):
            with window:
                time.sleep(0.05)
        assert monitor._windows == []  # not fed for the rest of the process
        assert window.results["dev"].samples >= 2  # what was read up to the error is kept

        def broken():
            raise RuntimeError("CUDA error: sticky")

        with pytest.raises(RuntimeError, match="sticky"):
            with monitor.window(broken):
                pass  # never runs: the start edge failed
        assert monitor._windows == []
