"""Statistics and the calibrate / warm-up / repeat procedure, with a fake deterministic timer."""

import math
import statistics

import pytest

from bench.measure.timing import CpuTimer, TimingConfig, prepare, rewarm, run_repeats
from bench.record import Summary as Stats


def test_stats_exact_values():
    s = Stats.of([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s.n == 5
    assert s.median == 3.0
    assert s.mean == 4.0
    assert s.min == 1.0 and s.max == 10.0
    assert s.stdev == pytest.approx(math.sqrt(12.5))
    assert s.cv == pytest.approx(math.sqrt(12.5) / 4.0)
    assert (s.q1, s.q3) == (2.0, 4.0)
    assert s.iqr == 2.0
    assert s.to_json()["iqr"] == 2.0


def test_stats_single_sample_and_empty():
    s = Stats.of([0.5])
    assert (s.median, s.stdev, s.cv, s.q1, s.q3) == (0.5, 0.0, 0.0, 0.5, 0.5)
    with pytest.raises(ValueError):
        Stats.of([])


class FakeTimer:
    """A timer whose per-iteration time follows a script: `per_iter(call_index)` seconds."""

    def __init__(self, per_iter):
        self.per_iter = per_iter
        self.calls: list[int] = []

    def time(self, fn, iterations):
        self.calls.append(iterations)
        return self.per_iter(len(self.calls) - 1) * iterations


def test_calibration_reaches_repeat_time_and_min_time():
    timer = FakeTimer(lambda i: 1e-3)  # 1 ms per iteration, steady
    config = TimingConfig(min_time_s=2.0, repeats=5, repeat_time_s=0.1, warmup_max_s=1.0)
    plan = prepare(lambda: None, timer, config)
    assert plan.iterations == 100  # 100 x 1 ms = the 0.1 s repeat target
    assert plan.repeats == 20  # 20 x 0.1 s = the 2 s window (more than the 5 asked)
    assert plan.warmup_converged
    assert timer.calls[0] == 1  # calibration starts from a single iteration


def test_repeats_floor_when_window_is_already_long():
    timer = FakeTimer(lambda i: 0.5)  # a slow kernel: one iteration is 0.5 s
    plan = prepare(lambda: None, timer, TimingConfig(min_time_s=1.0, repeats=3, repeat_time_s=0.1, warmup_max_s=0))
    assert plan.iterations == 1
    assert plan.repeats == 3


def test_warmup_runs_until_throughput_settles():
    # Clocks ramping: each window faster than the last until a steady 1 ms per iteration.
    timer = FakeTimer(lambda i: max(1e-3, 4e-3 - 0.5e-3 * i))
    plan = prepare(lambda: None, timer, TimingConfig(min_time_s=0, repeats=1, repeat_time_s=0.05, warmup_max_s=10))
    assert plan.warmup_converged
    assert plan.calibrated_seconds_per_iter == pytest.approx(1e-3)
    assert plan.iterations == 50


def test_warmup_gives_up_when_noise_never_settles():
    timer = FakeTimer(lambda i: 1e-3 if i % 2 else 2e-3)
    plan = prepare(lambda: None, timer, TimingConfig(min_time_s=0, repeats=1, repeat_time_s=0.01, warmup_max_s=0.2))
    assert not plan.warmup_converged
    assert plan.warmup_s >= 0.2


def test_run_repeats_returns_seconds_per_iteration():
    timer = FakeTimer(lambda i: 2e-3)
    plan = prepare(lambda: None, timer, TimingConfig(min_time_s=0, repeats=4, repeat_time_s=0.01, warmup_max_s=0))
    raw = run_repeats(lambda: None, timer, plan)
    assert len(raw) == plan.repeats == 4
    assert raw == pytest.approx([2e-3] * 4)


def test_rewarm_keeps_the_first_rounds_loop_and_warms_up_again():
    config = TimingConfig(min_time_s=0.5, repeats=3, repeat_time_s=0.05, warmup_max_s=10)
    plan = prepare(lambda: None, FakeTimer(lambda i: 1e-3), config)
    # A later round on fresh buffers: slow at first, then 1.2 ms per iteration (the machine moved).
    timer = FakeTimer(lambda i: max(1.2e-3, 3e-3 - 0.6e-3 * i))
    again = rewarm(lambda: None, timer, plan, config)
    assert (again.iterations, again.repeats) == (plan.iterations, plan.repeats) == (50, 10)
    assert set(timer.calls) == {50}  # no calibration: every window is the first round's loop
    assert again.warmup_converged and again.calibrated_seconds_per_iter == pytest.approx(1.2e-3)
    assert again.warmup_windows == len(timer.calls) >= 3


def test_rewarm_without_warm_up_time_still_times_one_window():
    config = TimingConfig(min_time_s=0, repeats=2, repeat_time_s=0.01, warmup_max_s=0)
    plan = prepare(lambda: None, FakeTimer(lambda i: 1e-3), config)
    timer = FakeTimer(lambda i: 1e-3)
    again = rewarm(lambda: None, timer, plan, config)
    assert timer.calls == [plan.iterations] and not again.warmup_converged


def test_cpu_timer_measures_the_loop():
    calls = []
    seconds = CpuTimer().time(lambda: calls.append(1), 1000)
    assert len(calls) == 1000
    assert 0 < seconds < 1.0


@pytest.mark.parametrize(
    "kwargs", [dict(min_time_s=-1), dict(repeats=0), dict(repeat_time_s=0), dict(min_time_s=math.inf), dict(rounds=0)]
)
def test_timing_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        TimingConfig(**kwargs)


def test_median_matches_statistics_module():
    data = [0.3, 0.1, 0.2, 0.5]
    assert Stats.of(data).median == statistics.median(data)
