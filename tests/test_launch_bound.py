"""Launch-bound detection (issue 10, item 3) with a fake timer pair, and matmul's `graph` parameter
on the CPU.

CUDA events time the GPU's timeline; when the host cannot queue kernels as fast as the GPU runs
them, the GPU idles between kernels and the events time the launch rate. The probe compares the
host's enqueue time per iteration with the device's time per iteration.
"""

import json

import pytest

from bench.cli import main
from bench.measure.lifecycle import RoundOutcome
from bench.measure.plan import expand
from bench.measure.runner import CaseRun, run_case
from bench.measure.timing import (
    ENQUEUE_BURST,
    LAUNCH_BOUND_RATIO,
    QUEUE_BUDGET,
    CpuTimer,
    TimedLoop,
    TimingConfig,
    enqueue_ratio,
    enqueue_times,
    is_launch_bound,
    prepare,
    probe_launch,
    rewarm,
    run_repeats,
)
from bench.measure.workload import Work
from bench.report.load import load
from bench.report.tables import render_to_text
from workloads import get
from workloads.matmul import MatMul

CONFIG = TimingConfig(min_time_s=0.05, repeats=3, repeat_time_s=0.01, warmup_max_s=0.1)


class FakeTimerPair:
    """A CUDA-like timer: `time` answers with the device's time (`device_s` per iteration),
    `enqueue` with the host's time to queue each call (`host_s(i)` for the i-th call of a burst)."""

    def __init__(self, device_s, host_s):
        self.device_s = device_s
        self.host_s = host_s if callable(host_s) else (lambda i: host_s)
        self.timed: list[int] = []
        self.bursts: list[int] = []
        self.calls = 0

    def time(self, fn, iterations):
        self.timed.append(iterations)
        return self.device_s * iterations

    def enqueue(self, fn, iterations):
        self.bursts.append(iterations)
        times = []
        for i in range(iterations):
            fn()
            times.append(self.host_s(i))
        return times


def _count():
    calls = []
    return calls, lambda: calls.append(1)


def test_ratio_and_threshold():
    assert enqueue_ratio(9e-6, 10e-6) == pytest.approx(0.9)
    assert enqueue_ratio(1e-6, 0.0) is None  # no device time: no verdict
    assert is_launch_bound(LAUNCH_BOUND_RATIO) and is_launch_bound(1.2)
    assert not is_launch_bound(0.89) and not is_launch_bound(None)


def test_launch_bound_when_host_enqueue_matches_device_time():
    # A 256³ matmul: the GPU needs 8 us an iteration because the host needs 8 us to queue one.
    timer = FakeTimerPair(device_s=8e-6, host_s=7.8e-6)
    calls, fn = _count()
    plan = prepare(fn, timer, CONFIG)
    assert plan.launch_bound
    assert plan.enqueue_s_per_iter == pytest.approx(7.8e-6)
    assert plan.enqueue_ratio == pytest.approx(7.8 / 8)
    assert timer.bursts == [ENQUEUE_BURST]  # once, a burst shorter than the launch queue
    assert len(calls) == ENQUEUE_BURST  # only the burst calls fn here; the fake's `time` does not


def test_not_launch_bound_when_device_time_dwarfs_enqueue():
    # An 8192³ matmul: 1.5 ms on the GPU, 8 us to queue.
    timer = FakeTimerPair(device_s=1.5e-3, host_s=8e-6)
    plan = prepare(lambda: None, timer, CONFIG)
    assert not plan.launch_bound
    assert plan.enqueue_ratio == pytest.approx(8e-6 / 1.5e-3)
    assert timer.bursts == [min(plan.iterations, ENQUEUE_BURST)] == [7]  # 7 iterations fill a 10 ms repeat


def test_a_blocked_tail_of_the_burst_does_not_make_a_case_launch_bound():
    # The launch queue filled after 20 of 32 calls: those after it wait for the GPU (device time).
    timer = FakeTimerPair(device_s=1e-3, host_s=lambda i: 8e-6 if i < 20 else 1e-3)
    assert not prepare(lambda: None, timer, CONFIG).launch_bound


def test_cpu_timer_has_no_probe():
    plan = prepare(lambda: None, CpuTimer(), TimingConfig(min_time_s=0, repeats=1, repeat_time_s=0.001, warmup_max_s=0))
    assert plan.enqueue_s_per_iter is None and plan.enqueue_ratio is None
    assert not plan.launch_bound


def test_probe_runs_once_per_case_outside_the_timed_window():
    timer = FakeTimerPair(device_s=8e-6, host_s=8e-6)
    plan = prepare(lambda: None, timer, CONFIG)
    run_repeats(lambda: None, timer, plan)
    again = rewarm(lambda: None, timer, plan, CONFIG)
    run_repeats(lambda: None, timer, again)
    assert timer.bursts == [ENQUEUE_BURST]  # round 2 keeps round 1's probe
    assert (again.enqueue_ratio, again.launch_bound) == (plan.enqueue_ratio, True)


def test_probe_burst_is_never_longer_than_the_plan():
    plan = TimedLoop(
        iterations=3, repeats=1, warmup_s=0, warmup_windows=1, warmup_converged=True, calibrated_seconds_per_iter=1e-3
    )
    timer = FakeTimerPair(device_s=1e-3, host_s=1e-3)
    assert probe_launch(lambda: None, timer, plan).launch_bound
    assert timer.bursts == [3]


def test_an_iteration_that_overflows_the_launch_queue_is_not_probed():
    """An eager LLM training step queues thousands of kernels: two of them fill the launch queue
    and the host waits on the GPU, so the probe would read host = device and flag it falsely."""
    plan = TimedLoop(
        iterations=3, repeats=1, warmup_s=0, warmup_windows=1, warmup_converged=True, calibrated_seconds_per_iter=1.0
    )
    timer = FakeTimerPair(device_s=1.0, host_s=1.0)  # what a blocked enqueue would read
    probed = probe_launch(lambda: None, timer, plan, launches_per_iter=QUEUE_BUDGET + 1)
    assert timer.bursts == [] and probed.enqueue_ratio is None and not probed.launch_bound
    assert probe_launch(lambda: None, timer, plan, launches_per_iter=QUEUE_BUDGET).launch_bound  # at the budget: probed


def test_enqueue_times_are_per_call_host_intervals():
    ticks = iter([0.0, 1.0, 3.0, 6.0])
    calls, fn = _count()
    assert enqueue_times(fn, 3, clock=lambda: next(ticks)) == [1.0, 2.0, 3.0]
    assert len(calls) == 3


def _outcome(ratio):
    plan = TimedLoop(
        iterations=100,
        repeats=3,
        warmup_s=0.1,
        warmup_windows=3,
        warmup_converged=True,
        calibrated_seconds_per_iter=1e-5,
        enqueue_s_per_iter=None if ratio is None else ratio * 1e-5,
        enqueue_ratio=ratio,
    )
    return RoundOutcome(status="ok", work=Work("FLOP", 1e6, {"FLOP": 1e6}), plan=plan, raw=[1e-5, 1e-5, 1e-5])


@pytest.mark.parametrize("ratio, flagged", [(0.97, True), (0.05, False), (None, False)])
def test_runner_records_the_ratio_and_flags_the_case(cpu, ratio, flagged):
    (case,) = expand("matmul", {"size": [16]}, [cpu])
    measured = CaseRun(case, cpu, CONFIG, get("matmul"))
    measured.merge(RoundOutcome.from_json(json.loads(json.dumps(_outcome(ratio).to_json()))))  # as from a worker
    record = measured.record().to_json()
    assert ("launch_bound" in record["flags"]) is flagged
    assert record["timing"]["enqueue_ratio"] == ratio
    assert record["timing"]["enqueue_s_per_iter"] == (None if ratio is None else pytest.approx(ratio * 1e-5))


def test_cpu_case_records_no_probe(cpu, fast_timing):
    result = run_case(expand("matmul", {"size": [16]}, [cpu])[0], cpu, fast_timing, get("matmul"))
    assert result["status"] == "ok"
    assert result["timing"]["enqueue_ratio"] is None and "launch_bound" not in result["flags"]


def test_report_shows_the_flag(tmp_path, cpu, fast_timing):
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "run",
                "matmul",
                "-p",
                "size=16",
                "--device",
                "cpu",
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
        == 0
    )
    doc = json.loads(out.read_text())
    doc["cases"][0]["flags"].append("launch_bound")
    out.write_text(json.dumps(doc))
    assert "launch_bound" in render_to_text(load([out]), width=200)


# --- matmul graph=true ---------------------------------------------------------------------------


def test_graph_is_part_of_the_case_id_only_when_true(cpu):
    graphed, eager = expand("matmul", {"size": [64], "dtype": ["float32"], "graph": ["true", "false"]}, [cpu])
    assert graphed.id == "matmul(m=64,n=64,k=64,dtype=float32,graph=true)@cpu"
    assert eager.id == "matmul(m=64,n=64,k=64,dtype=float32)@cpu"  # as before the parameter existed


def test_graph_is_skipped_on_cpu_with_the_reason(cpu, fast_timing):
    (case,) = expand("matmul", {"size": [64], "graph": [True]}, [cpu])
    result = run_case(case, cpu, fast_timing, MatMul)
    assert result["status"] == "skipped"
    assert "graph=true needs a CUDA GPU" in result["error"]
    assert result["id"].endswith(",graph=true)@cpu") and result["params"]["graph"] is True


def test_list_shows_the_graph_parameter(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "graph" in out and "CUDA graph" in out


def test_graph_work_counts_every_rotating_input_set():
    from bench.measure.hardware import DeviceInfo
    from workloads.matmul import rotation_count

    h200 = DeviceInfo("cuda:0", "cuda", "NVIDIA H200", 141 * 10**9, cache_bytes=60 * 2**20, compute_capability="9.0")
    (graphed,) = expand("matmul", {"size": [256], "dtype": ["bfloat16"], "graph": [True]}, [h200])
    (eager,) = expand("matmul", {"size": [256], "dtype": ["bfloat16"]}, [h200])
    sets = rotation_count(h200, 3 * 256 * 256 * 2)
    assert sets == 64  # capped: a replay is 64 multiplies
    assert MatMul(graphed.param_dict, h200).work().per_iter == 64 * MatMul(eager.param_dict, h200).work().per_iter
