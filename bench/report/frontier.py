"""The energy-optimal frontier: per workload case and hardware, which operating point to run at.

A case's operating points are the settings that change how it runs, not what it computes: the
GPU's power limit and locked clocks (the row's `operating_point`, set by `run --power-limit /
--gpu-clocks`) and the workload's operating parameters (the file's `workloads.<name>.operating`,
llm's `batch`: the same model served at another batch). Rows that differ only in those are one
group, per hardware; each distinct setting is a point with the medians over its runs of
throughput (work/s), energy per unit of work (J per unit = 1 / the median of work per joule, as
the tables' energy per work) and latency (seconds per iteration).

- The Pareto set: the points no other point beats on both axes (at least as fast and at most as
  much energy per unit, strictly better on one). Identical figures both stay; one point is its
  own frontier.
- The most efficient point: the least energy per unit (ties: the faster).
- The recommendation under constraints: among the points that meet `min_throughput` (work/s)
  and `max_latency` (seconds per iteration), take the fastest as the reference, and pick the
  point of least energy per unit whose throughput is at least (1 - max_slowdown) x the
  reference's (ties: the faster). It is always on the Pareto set. When no point meets the
  constraints, none is recommended and the frontier says why.

A point whose successful runs have no energy (nothing measured power, no nominal wattage) never
enters a frontier, nor does one whose runs all failed: the Frontier names it in `left_out`, with
why. Energy from a nominal wattage (`--nominal-watts`) is an estimate; a frontier made of
estimates only is `nominal_only`: with a constant wattage energy per unit is proportional to
time, so the fastest point always wins and the frontier shows throughput, not efficiency.

Pure logic on the DataFrame of bench.report.load.load: no rich, no matplotlib.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.params import ParamSchema, canonical_key, compact_tokens, format_compact
from bench.report import cells
from bench.report.load import records
from bench.units import format_energy_per_work, format_rate, format_seconds

DEFAULT_MAX_SLOWDOWN = 0.05
AS_FOUND = "as found"
NOMINAL_NOTE = (
    "energy here is only nominal (a constant wattage): energy per unit is then proportional to time, "
    "so the fastest point always wins; this shows throughput, not efficiency"
)
NOT_MEASURED = "energy not measured"


@dataclass(frozen=True)
class Constraints:
    """What a recommendation must respect: at most `max_slowdown` (a fraction) slower than the
    fastest point allowed, at least `min_throughput` work/s, at most `max_latency` seconds per
    iteration (None: no such limit)."""

    max_slowdown: float = DEFAULT_MAX_SLOWDOWN
    min_throughput: float | None = None
    max_latency: float | None = None

    def limits(self, unit: str | None = None) -> list[str]:
        """The hard limits as words: ["throughput >= 5 ktok/s", "latency <= 20 ms"]."""
        said = []
        if self.min_throughput is not None:
            said.append(f"throughput >= {format_rate(self.min_throughput, unit or 'work')}")
        if self.max_latency is not None:
            said.append(f"latency <= {format_seconds(self.max_latency)}")
        return said


@dataclass
class Point:
    """One operating point of a group: medians over its successful runs, in base units."""

    label: str  # "450 W", "batch=16", "450 W batch=16", "as found"
    throughput: float  # work per second
    energy_per_unit: float  # joules per unit of work (1 / the median work per joule)
    seconds_per_iter: float | None  # latency of one iteration
    estimate: bool  # its energy rests on a nominal wattage
    avg_watts: float | None = None
    runs: int = 1
    operating_point: dict[str, Any] | None = None  # as the file says it (None: as found)
    operating: dict[str, Any] = field(default_factory=dict)  # the operating parameters' values (batch=16)
    pareto: bool = False

    @property
    def efficiency(self) -> float:
        """Work per joule."""
        return 1.0 / self.energy_per_unit


@dataclass(frozen=True)
class LeftOut:
    """A point that did not enter the frontier, and why ("energy not measured", "failed: ...")."""

    label: str
    why: str


@dataclass
class Frontier:
    """One workload case on one hardware across its operating points (see the module docstring).
    `points` in operating order (power limit, clocks, then the operating parameters; as found
    last); the derived figures are set by `frontier`."""

    hardware: str
    workload: str
    case: str  # the case's parameters but the operating ones, compact ("model=tiny phase=decode")
    unit: str  # the unit of work (FLOP, byte, token)
    points: list[Point]
    left_out: list[LeftOut] = field(default_factory=list)
    constraints: Constraints = Constraints()
    pareto: list[Point] = field(default_factory=list)  # by throughput, slowest first
    best: Point | None = None  # least energy per unit
    fastest: Point | None = None  # most work per second of all points
    reference: Point | None = None  # the fastest point that meets the hard limits
    recommended: Point | None = None
    why_none: str | None = None  # why nothing is recommended (with points to choose from)
    nominal_only: bool = False  # every point's energy is an estimate from a constant wattage
    boundary: str = "device"  # what its joules include (the rows' energy boundary: device, node, wall)

    @property
    def title(self) -> str:
        return " ".join(x for x in (self.workload, self.case, f"on {self.hardware}") if x)

    @property
    def slowdown(self) -> float | None:
        """How much slower the recommended point is than the reference (a fraction)."""
        if self.recommended is None or self.reference is None:
            return None
        return 1.0 - self.recommended.throughput / self.reference.throughput

    @property
    def saving(self) -> float | None:
        """How much less energy per unit the recommended point uses than the reference (a fraction)."""
        if self.recommended is None or self.reference is None:
            return None
        return 1.0 - self.recommended.energy_per_unit / self.reference.energy_per_unit


# --- the sets ------------------------------------------------------------------------------------


def dominates(a: Point, b: Point) -> bool:
    """True when `a` is at least as fast and uses at most as much energy per unit as `b`, and is
    strictly better on one of the two."""
    return (
        a.throughput >= b.throughput
        and a.energy_per_unit <= b.energy_per_unit
        and (a.throughput > b.throughput or a.energy_per_unit < b.energy_per_unit)
    )


def pareto_set(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates, slowest first; points with identical figures both
    stay; one point is its own set."""
    kept = [p for p in points if not any(dominates(q, p) for q in points if q is not p)]
    return sorted(kept, key=lambda p: (p.throughput, -p.energy_per_unit))


def most_efficient(points: Sequence[Point]) -> Point | None:
    """The point of least energy per unit (ties: the faster); None without points."""
    return min(points, key=lambda p: (p.energy_per_unit, -p.throughput), default=None)


def _fastest(points: Sequence[Point]) -> Point | None:
    return max(points, key=lambda p: (p.throughput, -p.energy_per_unit), default=None)


def recommend(
    points: Sequence[Point], constraints: Constraints = Constraints(), unit: str | None = None
) -> tuple[Point | None, Point | None, str | None]:
    """(the recommended point, the reference it is measured against, why none) under
    `constraints` (see the module docstring)."""
    if not points:
        return None, None, None
    allowed = [
        p
        for p in points
        if (constraints.min_throughput is None or p.throughput >= constraints.min_throughput)
        and (
            constraints.max_latency is None or (p.seconds_per_iter is not None and p.seconds_per_iter <= constraints.max_latency)
        )
    ]
    if not allowed:
        return None, None, _why_none(points, constraints, unit)
    reference = _fastest(allowed)
    assert reference is not None
    floor = (1.0 - constraints.max_slowdown) * reference.throughput * (1.0 - 1e-12)
    within = [p for p in allowed if p.throughput >= floor]
    return most_efficient(within), reference, None


def _why_none(points: Sequence[Point], constraints: Constraints, unit: str | None) -> str:
    """ "no point meets throughput >= 5 ktok/s (the fastest: 3.2 ktok/s)"."""
    seen = []
    if constraints.min_throughput is not None:
        top = max(p.throughput for p in points)
        seen.append(f"the fastest: {format_rate(top, unit or 'work')}")
    if constraints.max_latency is not None:
        latencies = [p.seconds_per_iter for p in points if p.seconds_per_iter is not None]
        seen.append(f"the lowest latency: {format_seconds(min(latencies))}" if latencies else "no latency recorded")
    return f"no point meets {' and '.join(constraints.limits(unit))} ({'; '.join(seen)})"


# --- from the results ----------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v: Any) -> bool:
    return _is_number(cells.value(v)) and v > 0


def _order(v: Any) -> tuple[int, float, str]:
    """A sort key: numbers by value, then text, then None (as found last)."""
    if _is_number(v):
        return 0, float(v), ""
    return (2, 0.0, "") if v is None else (1, 0.0, str(v))


def _operating_names(row: Any) -> list[str]:
    names = cells.value(getattr(row, "operating_params", None))
    return [str(n) for n in names] if isinstance(names, (list, tuple)) else []


def _op_point(row: Any) -> dict[str, Any] | None:
    point = cells.value(getattr(row, "operating_point", None))
    return point if isinstance(point, dict) and point else None


def _op_text(row: Any) -> str:
    text = cells.value(getattr(row, "op_label", None))
    return str(text) if text else ""


def _schema(row: Any) -> ParamSchema:
    schema = getattr(row, "param_schema", None)
    return schema if isinstance(schema, ParamSchema) else ParamSchema()


@dataclass
class _Collect:
    """The rows of one point while grouping."""

    op: str
    operating: dict[str, Any]
    point: dict[str, Any] | None
    rows: list[Any] = field(default_factory=list)


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _status_why(rows: list[Any]) -> str:
    """Why a point with no successful run is left out: its first run's status and error."""
    row = rows[0]
    error = cells.value(row.error)
    return f"{row.status}: {error}" if error else str(row.status)


CAP_NOT_BINDING = "cap_not_binding"
CAP_WHY = "the cap does not bind: the case never drew that much power"


def _point(collected: _Collect, label: str) -> Point | LeftOut:
    ran = [r for r in collected.rows if r.status == "ok"]
    if not ran:
        return LeftOut(label, _status_why(collected.rows))
    if all(CAP_NOT_BINDING in str(cells.value(r.flags) or "").split(",") for r in ran):
        return LeftOut(label, CAP_WHY)  # the GPU as found, not a choice (bench.measure.runner.cap_not_binding)
    ok = [r for r in ran if _positive(r.throughput)]
    if not ok:
        return LeftOut(label, "no throughput")
    measured = [r for r in ok if _positive(r.efficiency)]
    if not measured:
        return LeftOut(label, NOT_MEASURED)
    efficiency = _median([float(r.efficiency) for r in measured])
    assert efficiency is not None
    throughput = _median([float(r.throughput) for r in ok])
    assert throughput is not None
    return Point(
        label=label,
        throughput=throughput,
        energy_per_unit=1.0 / efficiency,
        seconds_per_iter=_median([float(r.seconds_per_iter) for r in ok if _positive(r.seconds_per_iter)]),
        estimate=any(bool(cells.value(r.energy_estimate)) for r in measured),
        avg_watts=_median([float(r.avg_watts) for r in measured if _positive(r.avg_watts)]),
        runs=len({r.file for r in ok}),
        operating_point=collected.point,
        operating=collected.operating,
    )


def _point_order(collected: _Collect, names: list[str]) -> tuple[Any, ...]:
    point = collected.point or {}
    return (
        _order(point.get("power_limit_w") if point else None),
        _order(point.get("gpu_clocks_mhz") if point else None),
        collected.op,
        *(_order(collected.operating.get(n)) for n in names),
    )


def _label(collected: _Collect, schema: ParamSchema, names: list[str], any_op: bool) -> str:
    """ "450 W batch=16": the operating point (as found, when others in the group have one) and
    the operating parameters' values; "as found" when neither."""
    op = collected.op or (AS_FOUND if any_op else "")
    params = format_compact(collected.operating, schema, only=names) if names else ""
    return " ".join(x for x in (op, params) if x) or AS_FOUND


def frontier(
    df: pd.DataFrame,
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
    min_throughput: float | None = None,
    max_latency: float | None = None,
) -> list[Frontier]:
    """The frontiers of every workload case on every hardware in `df` (the DataFrame of
    bench.report.load.load), in order of first appearance (see the module docstring)."""
    constraints = Constraints(max_slowdown, min_throughput, max_latency)
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in records(df) if not df.empty else []:
        names = _operating_names(row)
        params = row.params_dict if isinstance(row.params_dict, dict) else {}
        fixed = {k: v for k, v in params.items() if k not in names}
        key = (str(row.hardware), canonical_key(str(row.workload), fixed), str(cells.value(row.work_unit) or "work"))
        group = groups.setdefault(key, {"first": row, "names": names, "points": {}})
        operating = {k: params[k] for k in names if k in params}
        op = _op_text(row)
        point_key = (op, canonical_key("", operating))
        collected = group["points"].setdefault(point_key, _Collect(op, operating, _op_point(row)))
        collected.rows.append(row)
    return [_frontier(key, group, constraints) for key, group in groups.items()]


def _frontier(key: tuple[str, str, str], group: dict[str, Any], constraints: Constraints) -> Frontier:
    hardware, _, unit = key
    first, names = group["first"], group["names"]
    schema = _schema(first)
    shown = {k: v for k, v in cells.shown_params(first, ran=False).items() if k not in names}
    collected = sorted(group["points"].values(), key=lambda c: _point_order(c, names))
    any_op = any(c.op for c in collected)
    made = [_point(c, _label(c, schema, names, any_op)) for c in collected]
    points = [p for p in made if isinstance(p, Point)]
    found = Frontier(
        hardware=hardware,
        workload=str(first.workload),
        case=" ".join(compact_tokens(shown, schema)),
        unit=unit,
        points=points,
        left_out=[p for p in made if isinstance(p, LeftOut)],
        constraints=constraints,
    )
    found.pareto = pareto_set(points)
    for p in found.pareto:
        p.pareto = True
    found.best = most_efficient(points)
    found.fastest = _fastest(points)
    found.recommended, found.reference, found.why_none = recommend(points, constraints, unit)
    found.nominal_only = bool(points) and all(p.estimate for p in points)
    boundaries = {str(cells.value(getattr(r, "energy_boundary", None)) or "device") for c in collected for r in c.rows}
    found.boundary = ", ".join(sorted(boundaries))
    return found


# --- in words ------------------------------------------------------------------------------------


def percent(fraction: float) -> str:
    """A fraction as a short percent: 0.031 -> "3.1%", 0.224 -> "22%"."""
    v = 100 * fraction
    return f"{v:.0f}%" if abs(v) >= 10 else f"{v:.2g}%"


def energy_text(point: Point, unit: str) -> str:
    """The point's energy per unit of work, '~' in front of an estimate: "~210 uJ/tok"."""
    return ("~" if point.estimate else "") + format_energy_per_work(point.efficiency, unit)


def sentence(found: Frontier) -> str:
    """The recommendation as one sentence with its figures, e.g. "llm model=tiny phase=decode on
    X: run at batch=16: 3.1% slower than the fastest point (batch=32), 22% less energy per token
    (210 uJ/tok vs 270 uJ/tok)"."""
    head = found.title
    unit = found.unit
    unbound = [p.label for p in found.left_out if p.why == CAP_WHY]
    caps = (
        f"; a power cap does not bind for this case ({', '.join(unbound)}: it never drew that much power, so they are "
        "the GPU as found; lock clocks instead)"
        if unbound
        else ""
    )
    if not found.points:
        if unbound and len(unbound) == len(found.left_out):
            return f"{head}: no choice of operating point{caps}"
        return f"{head}: no frontier: no point has energy ({_left_out_text(found)})" + caps
    rec, ref = found.recommended, found.reference
    if rec is None or ref is None:
        return f"{head}: nothing to recommend: {found.why_none}" + caps
    if len(found.points) == 1:
        return (
            f"{head}: one operating point only ({rec.label}: {format_rate(rec.throughput, unit)}, "
            f"{energy_text(rec, unit)}): nothing to choose between"
        ) + caps
    limits = found.constraints.limits(unit)
    which = "the fastest point" + (f" with {' and '.join(limits)}" if ref is not found.fastest else "")
    slack = percent(found.constraints.max_slowdown)
    if rec is ref:
        text = (
            f"{head}: run at {rec.label}, {which}: no point within {slack} of its throughput uses less "
            f"energy per {unit} ({energy_text(rec, unit)})"
        )
    else:
        text = (
            f"{head}: run at {rec.label}: {percent(found.slowdown or 0.0)} slower than {which} ({ref.label}), "
            f"{percent(found.saving or 0.0)} less energy per {unit} ({energy_text(rec, unit)} vs {energy_text(ref, unit)})"
        )
    best = found.best
    if best is not None and best is not rec and best.energy_per_unit < rec.energy_per_unit:
        text += (
            f"; the most efficient point ({best.label}, {energy_text(best, unit)}) is "
            f"{percent(1.0 - best.throughput / ref.throughput)} slower"
        )
    return text + caps


def _left_out_text(found: Frontier) -> str:
    return "; ".join(f"{p.label}: {p.why}" for p in found.left_out)


def left_out_line(found: Frontier) -> str | None:
    """ "left out: batch=64 (oom), 300 W (energy not measured)"; None when nothing was."""
    if not found.left_out:
        return None
    return "left out: " + ", ".join(f"{p.label} ({p.why})" for p in found.left_out)
