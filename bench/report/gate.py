"""Regression gate: compare a current run with a baseline, case by case, beyond the noise.

For each case present in both (matched by workload and parameters), the per-repeat throughputs
of each side (work per iteration / raw seconds per iteration) are bootstrapped to a confidence
interval of the ratio of medians current / baseline. The bootstrap is hierarchical: it resamples
runs (where a side is a folder of several), then the rounds of each run (a case measured
`--rounds` times, at different moments of the run), then the repeats of each round, so the
interval is as wide as the spread between rounds and runs, not only between back-to-back repeats.

Repeats of one round share the machine's state; rounds spread over a run see its swings (on a
shared 2-vCPU VM the speed jumps by 20-30% between states that last seconds to a minute). Still,
a run lasts a minute and its rounds all sample the same minutes, so the interval understates how
much a whole run moves from one run to the next. The gate therefore also estimates
run-to-run noise from the data: sigma = 1.4826 x the median absolute deviation of the log ratios
of all matched cases around their median (at least `MIN_CASES_FOR_NOISE` cases). A change that
moves every case alike (a slower driver) keeps sigma small; noise that moves cases every which
way makes it large. The band a case must leave to count is

    band = max(threshold, NOISE_Z x sigma)          (in log ratio)

    interval entirely below 1 - band            -> "slower"   (a regression: exit 1)
    interval entirely above 1 + band            -> "faster"
    interval inside [1 - threshold, 1 + threshold] -> "unchanged"
    otherwise                                   -> "inconclusive" (noise, or too few repeats)
    ok in the baseline, failed or oom now       -> "failed" (exit 1)

so honest reruns on a noisy runner come out "inconclusive", not as false alarms, and only a
change that is real and larger than both the threshold and the run-to-run noise fails the gate.
Either side may be several runs (a folder): their repeats are pooled, and the hierarchical
bootstrap carries the run-to-run variation into the interval, which is the best defence against
a noisy runner: keep a few runs on each side. The spread between a side's runs also says how
far one run's level moves, which resampling cannot show for a side of one run (or fully for a
few): `ratio_interval` adds that part, so a single current run against a baseline folder is as
uncertain as the folder says a run is. How often honest reruns fail and how often a real 20%
slowdown is caught on a given machine is measured by benchmarks/gate_noise.py.
`efficiency` compares per-repeat throughput divided by the average watts of the window it ran
in: each round's own window where the file has one per round, so the spread of power between
rounds counts as noise too; within one window there is one energy figure, so the repeats' noise
is the timing noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UsageError

METRICS = ("throughput", "efficiency")
VERDICTS = ("slower", "failed", "faster", "unchanged", "inconclusive", "missing")
BOOTSTRAP_RESAMPLES = 2000
MIN_CASES_FOR_NOISE = 4
NOISE_Z = 3.0
MAD_TO_SIGMA = 1.4826
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
    band: float | None = None  # relative change a case had to exceed (threshold or noise)


def _samples(row: pd.Series, metric: str) -> list[np.ndarray] | None:
    """The case's per-repeat values (throughput, or throughput per watt), one array per round."""
    raw = row.get("raw_seconds")
    if row["status"] != "ok" or not isinstance(raw, list) or not raw or not row["work_per_iter"]:
        return None
    values = float(row["work_per_iter"]) / np.asarray(raw, dtype=float)
    counts = row.get("round_repeats")
    if not isinstance(counts, list) or sum(counts) != values.size:
        counts = [values.size]
    rounds = np.split(values, np.cumsum(counts)[:-1])
    if metric == "efficiency":
        per_round = row.get("round_watts")
        if isinstance(per_round, list) and len(per_round) == len(rounds):
            return [r / w for r, w in zip(rounds, per_round, strict=True)]
        watts = row.get("avg_watts")
        if watts is None or pd.isna(watts) or watts <= 0:
            return None
        rounds = [r / float(watts) for r in rounds]
    return rounds


def _medians(runs: Sequence[Sequence[np.ndarray]], rng: np.random.Generator) -> np.ndarray:
    """Bootstrap medians of one side (`runs` -> rounds -> per-repeat values).

    A hierarchical bootstrap: each resample draws runs, then rounds within each drawn run, then
    values within each drawn round, all with replacement, so the variation between runs and
    between rounds (the machine's slow swings) widens the interval as much as it moved the
    data; resampling repeats alone would see only the few seconds of one stretch. Every drawn
    round contributes as many values as the largest round (each round is one look at the
    machine, weighted alike)."""
    rounds_per_run = np.array([len(rounds) for rounds in runs])
    size = max(r.size for rounds in runs for r in rounds)
    k = int(rounds_per_run.max())
    values = np.zeros((len(runs), k, size))
    counts = np.ones((len(runs), k), dtype=int)
    for i, rounds in enumerate(runs):
        for j, r in enumerate(rounds):
            values[i, j, : r.size] = r
            counts[i, j] = r.size
    b = BOOTSTRAP_RESAMPLES
    run_pick = rng.integers(0, len(runs), size=(b, len(runs)))
    round_pick = (rng.random((b, len(runs), k)) * rounds_per_run[run_pick][..., None]).astype(int)
    run_idx = np.broadcast_to(run_pick[..., None], round_pick.shape)
    value_pick = (rng.random((b, len(runs), k, size)) * counts[run_idx, round_pick][..., None]).astype(int)
    drawn = values[run_idx[..., None], round_pick[..., None], value_pick]
    return np.median(drawn.reshape(b, -1), axis=1)


def between_run_sigma(*sides: Sequence[Sequence[np.ndarray]]) -> float | None:
    """Spread of a case's whole-run level (log of each run's median), pooled over the sides
    that hold two runs or more (None when none does). Bessel-corrected: with a few runs the
    plain spread of their medians understates it."""
    squares, dof = 0.0, 0
    for runs in sides:
        if len(runs) < 2:
            continue
        logs = np.log([np.median(np.concatenate(rounds)) for rounds in runs])
        squares += float(np.sum((logs - logs.mean()) ** 2))
        dof += len(runs) - 1
    return math.sqrt(squares / dof) if dof else None


def ratio_interval(
    base: Sequence[Sequence[np.ndarray]], cur: Sequence[Sequence[np.ndarray]], rng: np.random.Generator
) -> tuple[float, float, float]:
    """Ratio of medians current/baseline (all values of a side pooled) and its bootstrap
    percentile interval. Each side is a list of runs, each run a list of rounds' values.

    Where a side holds several runs, the spread between them (`between_run_sigma`) is what one
    run's level moves by, and a side's median over n runs moves by sigma / sqrt(n) of it.
    Resampling n runs shows only (n - 1) / n of that variance, and nothing for a single run,
    so each side's bootstrap medians get the missing part, sigma / n, as a log-normal term: a
    single current run against a folder of baselines is then as uncertain as the folder says
    one run is, instead of being taken at its word."""
    ratio = float(np.median(_pooled(cur)) / np.median(_pooled(base)))
    ratios = _medians(cur, rng) / _medians(base, rng)
    sigma = between_run_sigma(base, cur)
    if sigma:
        spread = math.hypot(sigma / len(base), sigma / len(cur))
        ratios = ratios * np.exp(rng.normal(0.0, spread, ratios.size))
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return ratio, float(low), float(high)


def _pooled(runs: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    return np.concatenate([r for rounds in runs for r in rounds])


def verdict(low: float, high: float, threshold: float, band_log: float) -> str:
    """Verdict of one case from its ratio interval; `band_log` >= -log(1 - threshold)."""
    if math.log(high) < -band_log:
        return "slower"
    if math.log(low) > band_log:
        return "faster"
    if low >= 1 - threshold and high <= 1 + threshold:
        return "unchanged"
    return "inconclusive"


def run_to_run_sigma(ratios: Sequence[float]) -> float | None:
    """Robust spread of log ratios across cases (None with fewer than MIN_CASES_FOR_NOISE)."""
    if len(ratios) < MIN_CASES_FOR_NOISE:
        return None
    logs = np.log(np.asarray(ratios, dtype=float))
    return float(MAD_TO_SIGMA * np.median(np.abs(logs - np.median(logs))))


def _key(row: pd.Series) -> str:
    return str(row["case_key"])


def _machines(frame: pd.DataFrame) -> list[str]:
    """The device models a run measured, with the job's rank count where it had several (a
    2-rank job and a one-GPU run of the same model are different hardware; a driver update is
    not)."""
    ranks = frame["ranks"] if "ranks" in frame else pd.Series(1, index=frame.index)
    return sorted(
        {name if not n or n == 1 else f"{int(n)} ranks of {name}" for name, n in zip(frame["device_name"], ranks, strict=True)}
    )


def _boundaries(bs_rows: Sequence[pd.Series], cs_rows: Sequence[pd.Series]) -> str:
    """Why work per joule of these runs cannot be compared: their energy figures have
    different boundaries (a GPU's joules against a node's); "" when they agree."""

    def found(rows: Sequence[pd.Series]) -> set[str]:
        return {str(b) for r in rows if isinstance(b := r.get("energy_boundary"), str)}

    base, cur = found(bs_rows), found(cs_rows)
    if not base or not cur or base == cur:
        return ""
    return f"energy boundaries differ ({'/'.join(sorted(base))} vs {'/'.join(sorted(cur))}): not comparable"


def _one(
    key: str, bs_rows: Sequence[pd.Series], cs_rows: Sequence[pd.Series], metric: str, rng: np.random.Generator
) -> Comparison:
    """One case's comparison: a ratio with its interval, or why there is none (the verdict comes
    later, once the run-to-run noise of every case is known)."""
    ref = (bs_rows or cs_rows)[0]
    common: dict[str, Any] = dict(
        key=key,
        workload=ref["workload"],
        params=ref["params"],
        unit=ref["work_unit"],
        baseline_device=bs_rows[0]["device_name"] if bs_rows else None,
        current_device=cs_rows[0]["device_name"] if cs_rows else None,
    )
    empty: dict[str, Any] = dict(baseline=None, current=None, ratio=None, low=None, high=None)
    if not bs_rows or not cs_rows:
        side = "baseline" if not bs_rows else "current run"
        return Comparison(**common, **empty, verdict="missing", note=f"not in the {side}")
    broken = [r for r in cs_rows if r["status"] in ("failed", "oom")]
    if all(r["status"] == "ok" for r in bs_rows) and broken:
        return Comparison(**common, **empty, verdict="failed", note=f"now {broken[0]['status']}: {broken[0]['error']}")
    if metric == "efficiency" and (boundaries := _boundaries(bs_rows, cs_rows)):
        return Comparison(**common, **empty, verdict="missing", note=boundaries)
    bs = [x for x in (_samples(r, metric) for r in bs_rows) if x is not None]
    cs = [x for x in (_samples(r, metric) for r in cs_rows) if x is not None]
    if not bs or not cs:
        statuses = f"status {bs_rows[-1]['status']} -> {cs_rows[-1]['status']}"
        all_ok = all(r["status"] == "ok" for r in [*bs_rows, *cs_rows])
        why = ("no energy measured" if metric == "efficiency" else "no samples") if all_ok else statuses
        return Comparison(**common, **empty, verdict="missing", note=why)
    ratio, low, high = ratio_interval(bs, cs, rng)
    note = "different hardware" if common["baseline_device"] != common["current_device"] else ""
    if len(bs) > 1 or len(cs) > 1:
        note = ", ".join(x for x in (note, f"{len(bs)} vs {len(cs)} runs") if x)
    return Comparison(
        **common,
        baseline=float(np.median(_pooled(bs))),
        current=float(np.median(_pooled(cs))),
        ratio=ratio,
        low=low,
        high=high,
        verdict="",
        note=note,
    )


def compare(
    baseline: pd.DataFrame,
    current: pd.DataFrame,
    threshold: float = 0.05,
    metric: str = "throughput",
    allow_different_hardware: bool = False,
) -> list[Comparison]:
    """Compare two loaded result sets (bench.report.load.load) case by case."""
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r} is not valid; valid: {', '.join(METRICS)}")
    if not 0 < threshold < 1:
        raise UsageError(f"--threshold must be between 0 and 100 percent, got {100 * threshold:g}")
    base_rows: dict[str, list[pd.Series]] = {}
    cur_rows: dict[str, list[pd.Series]] = {}
    for frame, rows in ((baseline, base_rows), (current, cur_rows)):
        for _, row in frame.iterrows():
            rows.setdefault(_key(row), []).append(row)
    base_hw, cur_hw = _machines(baseline), _machines(current)
    if base_hw != cur_hw and not allow_different_hardware:
        raise UsageError(
            f"baseline ran on {', '.join(base_hw)} and current on {', '.join(cur_hw)}: "
            "refusing to compare different hardware (use --allow-different-hardware)"
        )
    rng = np.random.default_rng(SEED)
    out = [
        _one(key, base_rows.get(key, []), cur_rows.get(key, []), metric, rng) for key in dict.fromkeys([*base_rows, *cur_rows])
    ]
    measured = [c.ratio for c in out if c.ratio is not None]
    sigma = run_to_run_sigma(measured)
    band_log = max(-math.log(1 - threshold), NOISE_Z * sigma if sigma is not None else 0.0)
    band = 1 - math.exp(-band_log)
    return [
        replace(c, verdict=verdict(c.low, c.high, threshold, band_log), band=band)
        if c.ratio is not None and c.low is not None and c.high is not None
        else c
        for c in out
    ]


def regressions(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Cases that fail the gate: significantly slower beyond the threshold, or newly failing."""
    return [c for c in comparisons if c.verdict in ("slower", "failed")]
