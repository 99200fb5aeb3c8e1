"""Sustained cases (`--sustain S`): the timed window cut into consecutive segments, and the burst
window set against the tail window.

What a short benchmark hides: a GPU that holds its clocks for the first seconds and throttles after
two minutes (heat soak, a power cap that integrates over time). A sustained case times `S` seconds
as consecutive measurement windows of `segment_s` (default 1 s), each with its seconds per
iteration (median of its repeats), average power, mean SM clock and temperatures (the monitor's
window: whatever source measures the device). Alone, each segment is re-sized from the last one's
length, so the window lasts S seconds however the machine's speed moves; in a job the number of
segments is fixed up front from the warm-up's estimate, so every rank runs the same ones.

The record keeps the segments and two windows: the burst (the segments that start in the first
`burst_s`) and the tail (those that start in the last `tail_s`, at least the last one), each with
its throughput (work per iteration over the median seconds per iteration), power, clock and
temperatures. The case is
flagged `sustained_drop` when the tail's throughput or SM clock is lower than the burst's by more
than `margin` (5%): a clock drop alone is enough, since a GPU whose clock falls is throttling even
where the work hides it (a memory-bound case).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from bench.measure.timing import Sustain
from bench.record import JsonObject
from bench.units import finite_number

__all__ = ["FLAG", "SEGMENT_KEYS", "segment", "sustained_record"]

FLAG = "sustained_drop"
SEGMENT_KEYS = ("t_s", "duration_s", "seconds_per_iter", "avg_watts", "sm_clock_mhz", "mean_temperature_c", "max_temperature_c")


def segment(t_s: float, duration_s: float, raw: Sequence[float], reading: Any) -> JsonObject:
    """One segment: its start (seconds since the timed window opened), length, median seconds
    per iteration, and what the monitor's window read of the device (None where nothing did)."""
    return {
        "t_s": round(t_s, 4),
        "duration_s": round(duration_s, 4),
        "seconds_per_iter": statistics.median(raw) if raw else None,
        "avg_watts": finite_number(getattr(reading, "avg_watts", None)),
        "sm_clock_mhz": finite_number(getattr(reading, "sm_clock_mhz", None)),
        "mean_temperature_c": finite_number(getattr(reading, "mean_temperature_c", None)),
        "max_temperature_c": finite_number(getattr(reading, "max_temperature_c", None)),
    }


def _start(segment: JsonObject) -> float:
    return finite_number(segment.get("t_s")) or 0.0


def _end(segment: JsonObject) -> float:
    return _start(segment) + (finite_number(segment.get("duration_s")) or 0.0)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _window(segments: Sequence[JsonObject], work_per_iter: float | None) -> JsonObject | None:
    if not segments:
        return None
    seconds = [s for s in (finite_number(x.get("seconds_per_iter")) for x in segments) if s]
    median = statistics.median(seconds) if seconds else None
    temperatures = [t for t in (finite_number(x.get("max_temperature_c")) for x in segments) if t is not None]
    return {
        "from_s": _start(segments[0]),
        "to_s": round(_end(segments[-1]), 4),
        "segments": len(segments),
        "throughput": work_per_iter / median if work_per_iter and median else None,
        "seconds_per_iter": median,
        "avg_watts": _mean([finite_number(x.get("avg_watts")) for x in segments]),
        "sm_clock_mhz": _mean([finite_number(x.get("sm_clock_mhz")) for x in segments]),
        "mean_temperature_c": _mean([finite_number(x.get("mean_temperature_c")) for x in segments]),
        "max_temperature_c": max(temperatures) if temperatures else None,
    }


def _drop(burst: JsonObject | None, tail: JsonObject | None, key: str) -> float | None:
    """How much lower the tail is than the burst (0.08: 8% lower); None where either is unknown."""
    first, last = finite_number((burst or {}).get(key)), finite_number((tail or {}).get(key))
    return (first - last) / first if first and last is not None else None


def sustained_record(segments: Sequence[JsonObject], work_per_iter: float | None, sustain: Sustain) -> tuple[JsonObject, bool]:
    """The record's `sustained` section and whether the case dropped (see the module docstring)."""
    end = max((_end(s) for s in segments), default=0.0)
    burst = _window([s for s in segments if _start(s) < sustain.burst_s], work_per_iter)
    # at least the last segment: one segment can outlast the tail window on a busy machine
    tail = _window([s for s in segments if _start(s) >= end - sustain.tail_s] or list(segments[-1:]), work_per_iter)
    drops = {key: _drop(burst, tail, key) for key in ("throughput", "sm_clock_mhz")}
    dropped = any(d is not None and d > sustain.margin for d in drops.values())
    record: JsonObject = {
        "seconds": sustain.seconds,
        "segment_s": sustain.segment_s,
        "burst_s": sustain.burst_s,
        "tail_s": sustain.tail_s,
        "margin": sustain.margin,
        "burst": burst,
        "tail": tail,
        "drop": dict(drops),
        "segments": [[s.get(k) for k in SEGMENT_KEYS] for s in segments],
        "segment_keys": list(SEGMENT_KEYS),
    }
    return record, dropped
