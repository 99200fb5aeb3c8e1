"""Timers and statistics: how long one iteration of a workload takes, measured honestly.

The harness owns the clock. On a GPU the timed region is bracketed by CUDA events recorded on
the device's stream after a synchronize: they time the GPU's timeline, from the first queued
kernel to the last. That excludes the host only while the host keeps ahead of the GPU (the
launch queue never runs dry). When an iteration takes the GPU less time than the host needs to
launch it (about 5-10 us per torch call), the GPU idles between kernels and that idle time, host
jitter included, is measured: the figure is the launch rate, not the GPU's speed. `prepare`
detects this case (see `probe_launch`): the plan says `launch_bound`, and the runner flags the
case. CUDA graphs (a workload's `graph=true`) remove the per-kernel launch cost. On the CPU the
region is timed with `time.perf_counter_ns`. Each repeat times a loop of calibrated length, so
the timer's own cost is amortised over many iterations.

Procedure for one case (the shape of mamf-finder's and pyperf's runs):
1. calibrate: grow the iterations per repeat until a repeat lasts `repeat_time_s`;
2. warm up: time windows of that size until the last `WARMUP_WINDOW` windows agree within
   `warmup_cv` (clocks, caches and allocators have settled) or `warmup_max_s` runs out;
3. recalibrate from the settled per-iteration time;
4. (GPU) time on the host how long a short burst of iterations takes to enqueue and compare it
   with the device time per iteration (`probe_launch`): at `LAUNCH_BOUND_RATIO` or more the
   case is launch-bound;
5. time `repeats` repeats, more if needed so the whole window lasts `min_time_s` (energy
   counters need long windows), keeping every raw time.

With `rounds` > 1 the runner measures every case that many times, in a new random order of the
cases each round (Google Benchmark's random interleaving), so one case's samples are spread over
the whole run instead of one stretch of it. A shared machine moves between speed states that
last seconds to a minute (on the 2-vCPU CI VM, fp32 matmul at 115-130 or 160-175 GFLOP/s), so
one stretch of samples says little about the next run; spread samples do, and the spread
between rounds is the run-to-run noise the gate must see. Rounds after the first keep the first
round's iterations and repeats (`rewarm`): only the warm-up is done again, on freshly set-up
buffers. The launch probe runs once per case, in round 1, outside the timed window; later
rounds keep its figures.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import torch

from bench.measure import runtime
from bench.measure.hardware import DeviceInfo
from bench.record import Summary

WARMUP_WINDOW = 3
UNSTABLE_CV = 0.05
MAX_ITERATIONS = 1 << 24
# Launch-bound detection. The burst must stay well under the launch queue (about 1000 pending
# launches), after which enqueue blocks until the GPU catches up and host time equals device
# time for any loop. 32 iterations of up to ~30 kernels each stay under it, and as the median of
# the per-iteration times is taken, a blocked tail shorter than half the burst does not count.
ENQUEUE_BURST = 32
QUEUE_BUDGET = 512  # launches a burst may queue at most: half the ~1000 after which enqueue blocks
LAUNCH_BOUND_RATIO = 0.9


class Timer(Protocol):
    def time(self, fn: Callable[[], object], iterations: int) -> float:
        """Seconds taken by `iterations` back-to-back calls of `fn`."""
        ...


class CpuTimer:
    """Wall time on the host with perf_counter_ns (monotonic, nanosecond resolution)."""

    def time(self, fn: Callable[[], object], iterations: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(iterations):
            fn()
        return (time.perf_counter_ns() - start) * 1e-9


def enqueue_times(fn: Callable[[], object], iterations: int, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Host seconds each of `iterations` back-to-back calls of `fn` takes to return. For CUDA
    work that is the time to enqueue it, as long as the launch queue has room."""
    stamps = [clock()]
    for _ in range(iterations):
        fn()
        stamps.append(clock())
    return [after - before for before, after in itertools.pairwise(stamps)]


class CudaTimer:
    """Device time between two CUDA events on the current stream of one GPU; `enqueue` gives
    the host's side of the same loop, for `probe_launch`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def time(self, fn: Callable[[], object], iterations: int) -> float:
        rt = runtime.current()
        with rt.device_scope(self.device):
            start, end = rt.event(), rt.event()
            rt.synchronize(self.device)
            start.record()
            for _ in range(iterations):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) * 1e-3

    def enqueue(self, fn: Callable[[], object], iterations: int) -> list[float]:
        """Host seconds each call of a burst takes to enqueue, started right after a synchronize
        (an empty launch queue); waits for the burst's work before returning."""
        rt = runtime.current()
        with rt.device_scope(self.device):
            rt.synchronize(self.device)
            times = enqueue_times(fn, iterations)
            rt.synchronize(self.device)
            return times


def timer_for(device: DeviceInfo) -> Timer:
    return CudaTimer(device.torch_device) if device.kind == "cuda" else CpuTimer()


def synchronize(device: DeviceInfo) -> None:
    """Wait for all work queued on `device`; a no-op on the CPU."""
    if device.kind == "cuda":
        runtime.current().synchronize(device.torch_device)


@dataclass(frozen=True)
class Sustain:
    """A sustained case: the timed window lasts `seconds`, cut into consecutive measurement
    windows of `segment_s`, each with its own throughput, power, SM clock and temperature, so a
    burst window (the first `burst_s`) can be set against a tail window (the last `tail_s`). A
    GPU that holds its clocks for 10 s and throttles after 2 minutes shows there; a case whose
    tail is slower than its burst by more than `margin` (throughput or SM clock) is flagged
    `sustained_drop`. Seconds; margin a fraction."""

    seconds: float
    burst_s: float = 10.0
    tail_s: float = 60.0
    segment_s: float = 1.0
    margin: float = 0.05

    def __post_init__(self) -> None:
        for name in ("seconds", "burst_s", "tail_s", "segment_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name.removesuffix('_s')} must be a number of seconds > 0, got {value}")
        if not 0 < self.margin < 1:
            raise ValueError(f"the sustained-drop margin must be between 0 and 1, got {self.margin}")
        if self.burst_s + self.tail_s > self.seconds:
            raise ValueError(
                f"the burst ({self.burst_s:g} s) and the tail ({self.tail_s:g} s) must fit in the sustained "
                f"{self.seconds:g} s without overlapping; valid: --burst + --tail <= --sustain"
            )

    @classmethod
    def of(cls, seconds: float, burst_s: float | None = None, tail_s: float | None = None) -> Sustain:
        """A sustained window of `seconds`, the burst and tail given or their defaults (10 s and
        60 s), shortened to a quarter and a half of a shorter window so that they never overlap."""
        return cls(
            seconds,
            burst_s=burst_s if burst_s is not None else min(10.0, seconds / 4),
            tail_s=tail_s if tail_s is not None else min(60.0, seconds / 2),
        )


@dataclass(frozen=True)
class TimingConfig:
    """How long and how often to time one case. Times in seconds."""

    min_time_s: float = 1.0
    repeats: int = 10
    repeat_time_s: float = 0.1
    warmup_cv: float = 0.02
    warmup_max_s: float = 3.0
    rounds: int = 1
    sustain: Sustain | None = None  # a sustained timed window (Sustain); None: the usual one

    def settings(self) -> dict[str, Any]:
        """What a run file's `run.settings` records (and a worker is sent): the fields, with
        `sustain` only where the run sustains its cases."""
        found = asdict(self)
        if self.sustain is None:
            del found["sustain"]
        return found

    def __post_init__(self) -> None:
        if not (self.min_time_s >= 0 and math.isfinite(self.min_time_s)):
            raise ValueError(f"min_time must be a finite number of seconds >= 0, got {self.min_time_s}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {self.repeats}")
        if not (self.repeat_time_s > 0 and math.isfinite(self.repeat_time_s)):
            raise ValueError(f"repeat_time must be > 0 seconds, got {self.repeat_time_s}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.warmup_max_s < 0:
            raise ValueError(f"warmup_max must be >= 0 seconds, got {self.warmup_max_s}")
        if isinstance(self.sustain, dict):  # from a worker request or a file's settings
            object.__setattr__(self, "sustain", Sustain(**self.sustain))
        if self.sustain is not None and self.rounds > 1:
            raise ValueError(f"a sustained case runs one round (its burst and tail are one window apart), not {self.rounds}")


@dataclass(frozen=True)
class TimedLoop:
    """The outcome of calibration and warm-up: what the timed window will do."""

    iterations: int
    repeats: int
    warmup_s: float
    warmup_windows: int
    warmup_converged: bool
    calibrated_seconds_per_iter: float
    enqueue_s_per_iter: float | None = None  # host time to enqueue one iteration (GPU only)
    enqueue_ratio: float | None = None  # enqueue_s_per_iter / round 1's calibrated_seconds_per_iter

    @property
    def launch_bound(self) -> bool:
        """The host's launches, not the device, set the pace (see `probe_launch`)."""
        return is_launch_bound(self.enqueue_ratio)


def enqueue_ratio(enqueue_s_per_iter: float, device_s_per_iter: float) -> float | None:
    """Host enqueue time over device time per iteration; None when the device time is unknown."""
    if not (device_s_per_iter > 0 and math.isfinite(device_s_per_iter)):
        return None
    return enqueue_s_per_iter / device_s_per_iter


def is_launch_bound(ratio: float | None) -> bool:
    """An iteration whose launches take the host at least `LAUNCH_BOUND_RATIO` of the device's
    time for it leaves the GPU waiting for work: CUDA events then time the host's launch rate."""
    return ratio is not None and ratio >= LAUNCH_BOUND_RATIO


def probe_launch(fn: Callable[[], object], timer: Timer, plan: TimedLoop, launches_per_iter: int = 1) -> TimedLoop:
    """`plan` with the enqueue figures filled in, for a timer that can time the host's enqueue
    (`CudaTimer`); unchanged for one that cannot (the CPU timer is host time already).

    Times on the host, one by one, a burst of min(`plan.iterations`, `ENQUEUE_BURST`,
    QUEUE_BUDGET / `launches_per_iter`, at least 2) calls
    started on an empty launch queue, and divides their median by the device's settled time per
    iteration. With room in the queue a call returns once its kernels are queued, so a ratio
    near 1 means the GPU finishes each iteration about as fast as the host can queue the next:
    it idles between kernels. A GPU-bound case has a small ratio (queueing a long kernel is
    quick). An iteration of more than QUEUE_BUDGET launches (an eager LLM step) is not probed and
    never flagged: two of them overflow the launch queue, the host then waits on the GPU, and its
    time says nothing of the launch cost (`graph=true` replays such an iteration in one launch).
    """
    enqueue = getattr(timer, "enqueue", None)
    if enqueue is None or launches_per_iter > QUEUE_BUDGET:
        return plan
    burst = min(plan.iterations, ENQUEUE_BURST, QUEUE_BUDGET // max(1, launches_per_iter))
    per_call = enqueue(fn, max(2, burst))
    host = statistics.median(per_call)
    return replace(plan, enqueue_s_per_iter=host, enqueue_ratio=enqueue_ratio(host, plan.calibrated_seconds_per_iter))


def _iterations_for(target_s: float, seconds_per_iter: float) -> int:
    if seconds_per_iter <= 0:
        return MAX_ITERATIONS
    return max(1, min(MAX_ITERATIONS, math.ceil(target_s / seconds_per_iter)))


def prepare(fn: Callable[[], object], timer: Timer, config: TimingConfig, launches_per_iter: int = 1) -> TimedLoop:
    """Calibrate iterations per repeat, warm up until throughput stops moving, then (GPU) probe
    whether the host's launches set the pace (`probe_launch`; `launches_per_iter`, about how many
    kernels one iteration queues, keeps the probe's burst inside the launch queue)."""
    # Calibrate: grow geometrically (at most 10x a step) until one repeat reaches its target.
    iterations, elapsed = 1, timer.time(fn, 1)
    spent = elapsed
    while elapsed < config.repeat_time_s and iterations < MAX_ITERATIONS:
        grow = config.repeat_time_s / elapsed if elapsed > 0 else 10.0
        iterations = min(MAX_ITERATIONS, max(iterations + 1, math.ceil(iterations * min(10.0, grow * 1.05))))
        elapsed = timer.time(fn, iterations)
        spent += elapsed

    settled, windows, converged, warm_s = _warm_up(fn, timer, iterations, config, elapsed / iterations)
    iterations = _iterations_for(config.repeat_time_s, settled)
    repeat_s = iterations * settled
    repeats = max(config.repeats, math.ceil(config.min_time_s / repeat_s) if repeat_s > 0 else 1)
    plan = TimedLoop(
        iterations=iterations,
        repeats=repeats,
        warmup_s=spent + warm_s,
        warmup_windows=windows,
        warmup_converged=converged,
        calibrated_seconds_per_iter=settled,
    )
    return probe_launch(fn, timer, plan, launches_per_iter)


def _warm_up(
    fn: Callable[[], object], timer: Timer, iterations: int, config: TimingConfig, first: float | None = None
) -> tuple[float, int, bool, float]:
    """Time windows of `iterations` until the last few agree within `warmup_cv` or
    `warmup_max_s` runs out. Returns (settled seconds per iteration, windows, converged, seconds
    spent); `first` is a window already timed (the calibration's last)."""
    per_iter: list[float] = [] if first is None else [first]
    spent = 0.0
    converged = False
    while True:
        recent = per_iter[-WARMUP_WINDOW:]
        if len(recent) == WARMUP_WINDOW and (Summary.of(recent).cv or 0.0) <= config.warmup_cv:
            converged = True
            break
        if per_iter and spent >= config.warmup_max_s:
            break
        elapsed = timer.time(fn, iterations)
        spent += elapsed
        per_iter.append(elapsed / iterations)
    return statistics.median(per_iter[-WARMUP_WINDOW:]), len(per_iter), converged, spent


def rewarm(fn: Callable[[], object], timer: Timer, plan: TimedLoop, config: TimingConfig) -> TimedLoop:
    """A later round's plan: warm up again with the first round's iterations, keep its repeats
    (and its launch probe), so every round times the same loop and the rounds' samples can be
    pooled."""
    settled, windows, converged, spent = _warm_up(fn, timer, plan.iterations, config)
    return replace(plan, warmup_s=spent, warmup_windows=windows, warmup_converged=converged, calibrated_seconds_per_iter=settled)


def run_repeats(fn: Callable[[], object], timer: Timer, plan: TimedLoop) -> list[float]:
    """The timed window: `plan.repeats` repeats; returns seconds per iteration for each repeat."""
    return [timer.time(fn, plan.iterations) / plan.iterations for _ in range(plan.repeats)]


def segment_repeats(plan: TimedLoop, segment_s: float) -> int:
    """Repeats of `plan`'s loop that last about `segment_s` (at least one), from its warm-up's
    estimate of a repeat's length."""
    per_repeat = plan.iterations * plan.calibrated_seconds_per_iter
    return max(1, round(segment_s / per_repeat)) if per_repeat > 0 and math.isfinite(per_repeat) else 1
