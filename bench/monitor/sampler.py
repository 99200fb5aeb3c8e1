"""The background sampler and measurement windows.

One thread reads every source every `interval_s` (a source with a longer `sample_period_s`,
less often) and feeds the windows that are open; while no window is open it sleeps until one
opens, so a started monitor costs nothing between windows. A window
keeps running sums (trapezoid integral, peak, counts, throttle reasons, peak memory) and a trace
decimated to at most `MAX_TRACE_POINTS` points, so its memory stays bounded however long it runs.

Energy of a window, per device: the difference of the energy counter read at both edges where
there is a counter (NVML total energy, RAPL), else the trapezoid integral of sampled power.
Where both exist their disagreement is recorded; past 5% the window is flagged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.monitor.base import SOURCE_NOMINAL, PowerSource, Reading

DEFAULT_INTERVAL_S = 0.05
MAX_TRACE_POINTS = 512
MIN_COUNTER_UPDATES = 10
MISMATCH_LIMIT = 0.05
GAP_FACTOR = 3.0


@dataclass
class _Track:
    """Running state of one device inside one window."""

    source: PowerSource
    first: Reading
    last: Reading | None = None
    samples: int = 0
    errors: int = 0
    integral_j: float = 0.0
    power_samples: int = 0
    peak_w: float | None = None
    prev_power: tuple[float, float] | None = None
    prev_counter: tuple[float, float] | None = None
    counter_changes: int = 0
    max_gap_s: float = 0.0
    throttle: set[str] = field(default_factory=set)
    source_flags: set[str] = field(default_factory=set)  # Reading.flags seen in the window
    peak_memory_bytes: int | None = None
    trace: list[tuple[float, float]] = field(default_factory=list)
    trace_stride: int = 1
    trace_seen: int = 0
    sm_clock_sum_mhz: float = 0.0
    sm_clock_samples: int = 0
    temperature_sum_c: float = 0.0
    temperature_samples: int = 0
    max_temperature_c: float | None = None

    def __post_init__(self) -> None:
        self.add(self.first)

    def _trace(self, t: float, watts: float) -> None:
        self.trace_seen += 1
        if self.trace_seen % self.trace_stride:
            return
        self.trace.append((t, watts))
        if len(self.trace) >= MAX_TRACE_POINTS:
            self.trace = self.trace[::2]
            self.trace_stride *= 2

    def _peak(self, watts: float) -> None:
        self.peak_w = watts if self.peak_w is None else max(self.peak_w, watts)

    def add(self, r: Reading) -> None:
        if self.last is not None:
            if r.t_s < self.last.t_s:
                return  # read by the sampler just before the window opened
            self.max_gap_s = max(self.max_gap_s, r.t_s - self.last.t_s)
        self.last = r
        self.samples += 1
        if r.error:
            self.errors += 1
        if r.power_w is not None:
            self.power_samples += 1
            if self.prev_power is not None:
                t0, p0 = self.prev_power
                self.integral_j += 0.5 * (p0 + r.power_w) * (r.t_s - t0)
            self.prev_power = (r.t_s, r.power_w)
            self._peak(r.power_w)
            self._trace(r.t_s, r.power_w)
        if r.energy_j is not None:
            if self.prev_counter is not None and r.energy_j != self.prev_counter[1]:
                self.counter_changes += 1
                t0, e0 = self.prev_counter
                if r.power_w is None and r.t_s > t0:  # counter-only source: power from the counter
                    watts = (r.energy_j - e0) / (r.t_s - t0)
                    self._peak(watts)
                    self._trace(r.t_s, watts)
                self.prev_counter = (r.t_s, r.energy_j)
            elif self.prev_counter is None:
                self.prev_counter = (r.t_s, r.energy_j)
        self.throttle.update(r.throttle_reasons)
        self.source_flags.update(r.flags)
        if r.temperature_c is not None:
            self.temperature_sum_c += r.temperature_c
            self.temperature_samples += 1
            self.max_temperature_c = max(self.max_temperature_c or r.temperature_c, r.temperature_c)
        if r.sm_clock_mhz is not None:
            self.sm_clock_sum_mhz += r.sm_clock_mhz
            self.sm_clock_samples += 1
        if r.memory_used_bytes is not None:
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, r.memory_used_bytes)


@dataclass(frozen=True)
class EnergyResult:
    """Energy and power of one device over one window. Joules, watts, seconds."""

    device: str
    source: str | None
    joules: float | None
    avg_watts: float | None
    peak_watts: float | None
    duration_s: float
    samples: int
    counter_joules: float | None
    integral_joules: float | None
    mismatch: float | None
    flags: tuple[str, ...]
    peak_memory_bytes: int | None
    trace: tuple[tuple[float, float], ...]
    sm_clock_mhz: float | None = None  # mean SM clock over the window's samples (NVML), MHz
    boundary: str = "device"  # what the joules include: the source's (PowerSource.boundary)
    mean_temperature_c: float | None = None  # over the window's samples (NVML: the GPU die), degrees C
    max_temperature_c: float | None = None

    @property
    def estimate(self) -> bool:
        return self.source == SOURCE_NOMINAL

    def to_dict(self) -> dict[str, Any]:
        """The result file's `energy` object (trace as [seconds since start, watts] pairs)."""
        start = self.trace[0][0] if self.trace else 0.0
        return {
            "joules": self.joules,
            "avg_watts": self.avg_watts,
            "peak_watts": self.peak_watts,
            "source": self.source,
            "estimate": self.estimate,
            "boundary": self.boundary,
            "samples": self.samples,
            "duration_s": self.duration_s,
            "counter_joules": self.counter_joules,
            "integral_joules": self.integral_joules,
            "mismatch": self.mismatch,
            "sm_clock_mhz": self.sm_clock_mhz,
            "mean_temperature_c": self.mean_temperature_c,
            "max_temperature_c": self.max_temperature_c,
            "trace": [[round(t - start, 4), round(w, 2)] for t, w in self.trace],
        }


def _finish(track: _Track, interval_s: float) -> EnergyResult:
    interval_s = max(interval_s, track.source.sample_period_s or 0.0)
    src, first, last = track.source, track.first, track.last or track.first
    duration = max(last.t_s - first.t_s, 0.0)
    counter_j = last.energy_j - first.energy_j if first.energy_j is not None and last.energy_j is not None else None
    integral_j = track.integral_j if track.power_samples >= 2 else None
    flags: list[str] = []
    if counter_j is not None and src.counter_source:
        joules, source = counter_j, src.counter_source
        updates = duration / src.counter_update_s if src.counter_update_s else track.counter_changes
        if updates < MIN_COUNTER_UPDATES:
            flags.append("window_too_short")
    elif integral_j is not None and src.power_source:
        joules, source = integral_j, src.power_source
        if src.power_source != SOURCE_NOMINAL and src.power_update_s and duration / src.power_update_s < MIN_COUNTER_UPDATES:
            flags.append("window_too_short")
    else:
        joules, source = None, None
    mismatch = None
    if counter_j and integral_j is not None and src.power_source not in (None, SOURCE_NOMINAL):
        mismatch = abs(counter_j - integral_j) / abs(counter_j)
        if mismatch > MISMATCH_LIMIT:
            flags.append("energy_mismatch")
    if track.errors or (track.samples > 2 and track.max_gap_s > GAP_FACTOR * interval_s):
        flags.append("sampling_gaps")
    flags.extend(sorted(track.source_flags))
    flags.extend(f"throttled:{reason}" for reason in sorted(track.throttle))
    if joules is None:
        flags.append("power_unmeasured")
    return EnergyResult(
        device=src.device_id,
        source=source,
        joules=joules,
        avg_watts=joules / duration if joules is not None and duration > 0 else None,
        peak_watts=track.peak_w,
        duration_s=duration,
        samples=track.samples,
        counter_joules=counter_j,
        integral_joules=integral_j,
        mismatch=mismatch,
        flags=tuple(flags),
        peak_memory_bytes=track.peak_memory_bytes,
        trace=tuple(track.trace),
        sm_clock_mhz=track.sm_clock_sum_mhz / track.sm_clock_samples if track.sm_clock_samples else None,
        boundary=src.boundary,
        mean_temperature_c=track.temperature_sum_c / track.temperature_samples if track.temperature_samples else None,
        max_temperature_c=track.max_temperature_c,
    )


class Window:
    """A measurement window: `with monitor.window() as w: ...` then `w.results[device]`.

    `synchronize` (e.g. torch.cuda.synchronize) runs before each edge is read, so queued GPU
    work belongs to the window it was issued in.
    """

    def __init__(self, monitor: Monitor, synchronize: Callable[[], None] | None) -> None:
        self.monitor = monitor
        self.synchronize = synchronize
        self.tracks: list[_Track] = []
        self.results: dict[str, EnergyResult] = {}

    def __enter__(self) -> Window:
        if self.synchronize:
            self.synchronize()  # where this raises, nothing is registered yet: nothing to undo
        self.tracks = [_Track(src, _safe_read(src)) for src in self.monitor.sources]
        self.monitor._open(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        # Where synchronize raises (a sticky CUDA error), the window is still closed -- else the
        # sampler would feed it for the rest of the process -- and its results computed from
        # what was read, before the error goes on to the caller.
        try:
            if self.synchronize:
                self.synchronize()
        finally:
            self.monitor._close(self)
            end = [_safe_read(src) for src in self.monitor.sources]
            for track, reading in zip(self.tracks, end, strict=True):
                track.add(reading)
                self.results[track.source.device_id] = _finish(track, self.monitor.interval_s)

    def _feed(self, readings: Sequence[tuple[int, Reading]]) -> None:
        """Readings of the sources read this tick, by their index in the monitor's sources."""
        for index, reading in readings:
            self.tracks[index].add(reading)


class Monitor:
    """Samples `sources` every `interval_s` seconds on a daemon thread while started."""

    def __init__(self, sources: Sequence[PowerSource], interval_s: float = DEFAULT_INTERVAL_S) -> None:
        if not interval_s > 0:
            raise ValueError(f"sampling interval must be > 0 seconds, got {interval_s}")
        self.sources = list(sources)
        self.interval_s = interval_s
        self._windows: list[Window] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # notified when a window opens and on stop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Monitor:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is None and self.sources:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="wattbench-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            with self._wake:
                self._wake.notify_all()  # the thread may be waiting for a window
            self._thread.join()
            self._thread = None
        for src in self.sources:
            src.close()

    def window(self, synchronize: Callable[[], None] | None = None) -> Window:
        return Window(self, synchronize)

    def _open(self, window: Window) -> None:
        with self._wake:
            self._windows.append(window)
            self._wake.notify_all()

    def _close(self, window: Window) -> None:
        with self._lock:
            self._windows.remove(window)

    def _loop(self) -> None:
        # A source with a sample period longer than the interval is read every k-th tick; the
        # thread wakes at the interval only when some source wants it (each wake-up costs CPU
        # time of its own, 0.3-4 ms a wake as a VM accounts it, whatever the reads cost).
        # While no window is open the thread does not wake at all: it waits for _open (or stop),
        # then ticks from there, a slow source's k-th tick counted from the window's opening.
        every = [max(1, round((src.sample_period_s or 0.0) / self.interval_s)) for src in self.sources]
        step = min(every)
        while True:
            with self._wake:
                while not self._windows and not self._stop.is_set():
                    self._wake.wait()
            tick = 0
            while not self._stop.wait(self.interval_s * step):
                tick += step
                with self._lock:
                    if not self._windows:
                        break  # the last window closed: back to waiting for one
                readings = [(i, _safe_read(src)) for i, src in enumerate(self.sources) if tick % every[i] < step]
                with self._lock:
                    for window in self._windows:
                        window._feed(readings)
            if self._stop.is_set():
                return


def _safe_read(source: PowerSource) -> Reading:
    """A source's reading; a source that raises yields an error reading, never a dead sampler."""
    try:
        return source.read()
    except Exception as exc:  # noqa: BLE001 - the sampler thread must outlive any source bug
        return Reading(time.monotonic(), error=f"{type(exc).__name__}: {exc}")
