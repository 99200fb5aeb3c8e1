"""Regression gate: compare a current run with a baseline, case by case, beyond the noise.

For each case present in both (matched by workload and parameters), the per-repeat throughputs
of each side (work per iteration / raw seconds per iteration) are bootstrapped to a confidence
interval of the ratio of medians current / baseline. With threshold t:

    interval entirely below 1 - t       -> "slower"   (a regression: exit 1)
    interval entirely above 1 + t       -> "faster"
    interval inside [1 - t, 1 + t]      -> "unchanged"
    otherwise (it crosses 1 +- t)       -> "inconclusive" (more repeats would tell)
    ok in the baseline, failed or oom now -> "failed" (exit 1)

so a noisy runner yields "inconclusive", not a false alarm, and only a change both real and
larger than the threshold fails the gate. `efficiency` compares per-repeat throughput divided by
the window's average watts (the window has one energy figure, so its noise is the timing noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.errors import UsageError

METRICS = ("throughput", "efficiency")
VERDICTS = ("slower", "failed", "faster", "unchanged", "inconclusive", "missing")
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 20261124


@dataclass(frozen=True)
class Comparison:
    key: str
    workload: str
    params: str
    unit: str | None
    baseline_device: str | None
    current_device: str | None
    baseline: float | None
    current: float | None
    ratio: float | None
    low: float | None
    high: float | None
    verdict: str
    note: str = ""


def _samples(row: pd.Series, metric: str) -> np.ndarray | None:
    raw = row.get("raw_seconds")
    if row["status"] != "ok" or not isinstance(raw, list) or not raw or not row["work_per_iter"]:
        return None
    values = float(row["work_per_iter"]) / np.asarray(raw, dtype=float)
    if metric == "efficiency":
        watts = row.get("avg_watts")
        if watts is None or pd.isna(watts) or watts <= 0:
            return None
        values = values / float(watts)
    return values


def ratio_interval(base: np.ndarray, cur: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """Ratio of medians current/baseline and its bootstrap percentile interval."""
    ratio = float(np.median(cur) / np.median(base))
    b = rng.choice(base, size=(BOOTSTRAP_RESAMPLES, base.size), replace=True)
    c = rng.choice(cur, size=(BOOTSTRAP_RESAMPLES, cur.size), replace=True)
    ratios = np.median(c, axis=1) / np.median(b, axis=1)
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return ratio, float(low), float(high)


def verdict(low: float, high: float, threshold: float) -> str:
    if high < 1 - threshold:
        return "slower"
    if low > 1 + threshold:
        return "faster"
    if low >= 1 - threshold and high <= 1 + threshold:
        return "unchanged"
    return "inconclusive"


def _key(row: pd.Series) -> str:
    return f"{row['workload']}({row['params']})"


def compare(
    baseline: pd.DataFrame,
    current: pd.DataFrame,
    threshold: float = 0.05,
    metric: str = "throughput",
    allow_different_hardware: bool = False,
) -> list[Comparison]:
    """Compare two loaded result sets (bench.results.load) case by case."""
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r} is not valid; valid: {', '.join(METRICS)}")
    if not 0 < threshold < 1:
        raise UsageError(f"--threshold must be between 0 and 100 percent, got {100 * threshold:g}")
    base_rows = {_key(r): r for _, r in baseline.iterrows()}
    cur_rows = {_key(r): r for _, r in current.iterrows()}
    base_hw = sorted(set(baseline["device_name"]))
    cur_hw = sorted(set(current["device_name"]))
    if base_hw != cur_hw and not allow_different_hardware:
        raise UsageError(
            f"baseline ran on {', '.join(base_hw)} and current on {', '.join(cur_hw)}: "
            "refusing to compare different hardware (use --allow-different-hardware)"
        )
    rng = np.random.default_rng(SEED)
    out: list[Comparison] = []
    for key in list(dict.fromkeys([*base_rows, *cur_rows])):
        b, c = base_rows.get(key), cur_rows.get(key)
        ref = b if b is not None else c
        common: dict[str, Any] = dict(
            key=key, workload=ref["workload"], params=ref["params"], unit=ref["work_unit"],
            baseline_device=b["device_name"] if b is not None else None,
            current_device=c["device_name"] if c is not None else None,
        )
        if b is None or c is None:
            side = "baseline" if b is None else "current run"
            out.append(Comparison(**common, baseline=None, current=None, ratio=None, low=None, high=None,
                                  verdict="missing", note=f"not in the {side}"))
            continue
        bs, cs = _samples(b, metric), _samples(c, metric)
        if b["status"] == "ok" and c["status"] in ("failed", "oom"):
            out.append(Comparison(**common, baseline=None, current=None, ratio=None, low=None, high=None,
                                  verdict="failed", note=f"now {c['status']}: {c['error']}"))
            continue
        if bs is None or cs is None:
            why = "no samples" if (b["status"] == "ok" and c["status"] == "ok") else f"status {b['status']} -> {c['status']}"
            if metric == "efficiency" and b["status"] == c["status"] == "ok":
                why = "no energy measured"
            out.append(Comparison(**common, baseline=None, current=None, ratio=None, low=None, high=None,
                                  verdict="missing", note=why))
            continue
        ratio, low, high = ratio_interval(bs, cs, rng)
        note = "different hardware" if b["device_name"] != c["device_name"] else ""
        out.append(Comparison(**common, baseline=float(np.median(bs)), current=float(np.median(cs)), ratio=ratio,
                              low=low, high=high, verdict=verdict(low, high, threshold), note=note))
    return out


def regressions(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Cases that fail the gate: significantly slower beyond the threshold, or newly failing."""
    return [c for c in comparisons if c.verdict in ("slower", "failed")]
