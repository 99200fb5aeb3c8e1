"""From chip to site: a measured case's work per joule turned into what a data-center planner asks
(`wattbench report FILES --site`): devices needed for a demand, IT and facility megawatts, MWh and
tonnes of CO2 a year, the electricity bill, and cost and CO2 per million units of work.

It is a reading of measured results, so it lives in `report` beside the frontier: each hardware's
case is taken at the frontier's recommended operating point (bench/report/frontier.py), and the
site's figures come from that point's throughput and average power per device.

The arithmetic, per hardware and case (every input named in `Site`):

    devices   = ceil(demand per day / (throughput x 86,400 s x load factor))
                (or the given device count, whose capacity is then what it can serve)
    device W  = load factor x busy watts + (1 - load factor) x idle watts   (idle: the run's measured
                idle power; where none was measured, the busy watts, an upper bound, marked ~)
    IT MW     = devices x device W x node overhead / 1e6
                node overhead: 1 where the energy is the node's (boundary `node`, used as
                measured); else `node_overhead` where given; else the measured node-to-device
                ratio where the run read the node's BMC over the same windows (`--node-power`:
                the median of node watts over device watts of the point's rows); else a stated
                default, marked ~. The measured ratio counts whatever else the node powered
                against the case's devices, so a row whose node had GPUs idle beside the case
                (`node_idle_gpus`) is left out of it, and said: measure it with every GPU of the
                node busy, a job of one rank per GPU.
    facility  = IT MW x PUE;        MWh a year = facility MW x 8,760 h
    t CO2     = MWh x g/kWh / 1,000;  cost a year = MWh x 1,000 x price per kWh (electricity only)
    per million units: cost a year and grams a year over the units served a year / 1e6

Every figure says the boundary it started from (device or node) and carries `~` where an estimate
entered (a nominal wattage, the default node overhead, idle power assumed busy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from bench.report.carbon import GridIntensity
from bench.report.frontier import Frontier, Point, frontier
from bench.report.load import op_label

__all__ = [
    "DEFAULT_NODE_OVERHEAD",
    "DEFAULT_PUE",
    "NODE_OVERHEAD_SOURCE",
    "PRICES",
    "PUE_SOURCE",
    "Price",
    "Projection",
    "Site",
    "project",
]

SECONDS_PER_DAY = 86_400.0
HOURS_PER_YEAR = 8_760.0
# The whole node's power over its GPUs' when only the GPUs were measured: NVIDIA's DGX H100 draws
# at most 10.2 kW with eight 700 W GPUs (5.6 kW), so 1.82: CPUs, memory, NICs, fans and power
# supplies at their maxima. An upper bound for a busy node, marked as an estimate.
DEFAULT_NODE_OVERHEAD = 10.2 / 5.6
NODE_OVERHEAD_SOURCE = "NVIDIA DGX H100 datasheet: 10.2 kW maximum system power for eight 700 W GPUs"
DEFAULT_PUE = 1.56
PUE_SOURCE = "Uptime Institute Global Data Center Survey, the industry's average PUE (about 1.56)"


@dataclass(frozen=True)
class Price:
    """Electricity price per kWh in a currency, with where it comes from."""

    per_kwh: float
    currency: str
    source: str


# The price a region's preset brings along (electricity only, no demand charges).
PRICES = {
    "south korea": Price(182.7, "KRW", "KEPCO industrial rate (contracts of 300 kW and up), from October 2024: 182.7 KRW/kWh"),
}


@dataclass(frozen=True)
class Site:
    """A site to project onto: the demand (one of units per day of the case's work, or a device
    count), its PUE, the share of hours the devices are busy, the grid and the price."""

    units_per_day: float | None = None
    unit: str | None = None  # the demand's unit of work ("token", "FLOP"); None with a device count
    devices: int | None = None
    pue: float = DEFAULT_PUE
    load_factor: float = 1.0
    grid: GridIntensity | None = None
    price: Price | None = None
    node_overhead: float | None = None  # None: measured where a run has both boundaries, else the default


@dataclass(frozen=True)
class Projection:
    """One hardware's case at its recommended operating point, projected onto a site."""

    hardware: str
    case: str
    point: str
    unit: str
    devices: int
    units_per_day: float
    device_watts: float
    it_mw: float
    facility_mw: float
    mwh_per_year: float
    t_co2_per_year: float | None
    cost_per_year: float | None
    cost_per_million: float | None
    g_co2_per_million: float | None
    boundary: str  # "device x 1.82 (default node overhead)", "node (measured)", ...
    estimate: bool
    notes: tuple[str, ...]


def _rows_of(frame: pd.DataFrame, found: Frontier, point: Point) -> pd.DataFrame:
    """The rows a frontier point stands for: its hardware and workload, its operating point and
    its operating parameters' values (llm's batch), measured."""
    rows = frame[(frame["hardware"] == found.hardware) & (frame["workload"] == found.workload) & (frame["status"] == "ok")]
    if "op_label" in rows:
        rows = rows[rows["op_label"].astype(str) == op_label(point.operating_point)]
    for key, value in point.operating.items():
        rows = rows[rows["params_dict"].map(lambda p, k=key, v=value: isinstance(p, dict) and p.get(k) == v)]
    return rows


def _node_ratio(rows: pd.DataFrame) -> tuple[float | None, str | None]:
    """The median of node watts over device watts of the rows that measured both (the node's BMC
    and the devices' own counters, same windows) with every GPU of the node in the case; None
    where none did or the device figure is an estimate. With it, or None, why rows that measured
    both were left out: a node whose other GPUs idled beside the case (in the node's watts, not
    the device's) overstates the ratio."""
    if "node_avg_watts" not in rows or rows.empty:
        return None, None
    both = rows[rows["node_avg_watts"].notna() & rows["avg_watts"].notna() & ~rows["energy_estimate"].fillna(False).astype(bool)]
    both = both[both["avg_watts"] > 0]
    idle = both["node_idle_gpus"].fillna(0) if "node_idle_gpus" in both else pd.Series(0, index=both.index)
    whole, partial = both[idle <= 0], both[idle > 0]
    why = None
    if len(partial):
        gpus = int(partial["node_idle_gpus"].max())
        why = (
            f"a measured node/device ratio was left out: its node(s) had {gpus} GPU(s) idle beside the case's, "
            "counted in the node's watts only (measure it with one rank on every GPU of the node)"
        )
    ratio = float((whole["node_avg_watts"] / whole["avg_watts"]).median()) if len(whole) else None
    return ratio, why


def _per_device(
    frame: pd.DataFrame, found: Frontier, point: Point
) -> tuple[float, float, float | None, bool, str, tuple[float | None, str | None]]:
    """(throughput per device, busy watts per device, idle watts per device or None, estimate,
    boundary, measured node-to-device ratio or None with why rows were left out) of a frontier
    point, from its own rows (a job's figures are its devices' sums: per device, over its ranks)."""
    rows = _rows_of(frame, found, point)
    ranks = float(rows["ranks"].iloc[0]) if "ranks" in rows and len(rows) else 1.0
    known = rows["energy_boundary"].dropna() if "energy_boundary" in rows else pd.Series([], dtype=object)
    boundary = str(known.iloc[0]) if len(known) else "device"
    busy = float(point.avg_watts) / ranks if point.avg_watts else float(point.throughput * point.energy_per_unit) / ranks
    idle = None
    if "idle_watts" in rows and rows["idle_watts"].notna().any():
        idle = float(rows["idle_watts"].dropna().median()) / ranks
    return point.throughput / ranks, busy, idle, point.estimate, boundary, _node_ratio(rows)


def project(frame: pd.DataFrame, site: Site) -> list[Projection]:
    """The projections of every hardware's case in `frame` (bench.report.load's DataFrame) at its
    recommended operating point; cases whose unit the demand is not in, or without energy, are
    left out."""
    out = []
    for found in frontier(frame):
        if site.unit is not None and found.unit != site.unit:
            continue
        point = found.recommended or (found.points[0] if len(found.points) == 1 else None)
        if point is None:
            continue
        out.append(_one(frame, found, point, site))
    return out


def _one(frame: pd.DataFrame, found: Frontier, point: Point, site: Site) -> Projection:
    rate, busy_w, idle_w, estimate, boundary, measured = _per_device(frame, found, point)
    notes: list[str] = []
    if idle_w is None:
        idle_w = busy_w
        if site.load_factor < 1:
            estimate = True
            notes.append("idle power not measured: the busy watts are assumed for idle hours (an upper bound)")
    serve = rate * SECONDS_PER_DAY * site.load_factor  # units one device serves a day
    if site.devices is not None:
        devices = site.devices
        units = devices * serve
    else:
        assert site.units_per_day is not None
        units = site.units_per_day
        devices = max(1, math.ceil(units / serve))
    device_w = site.load_factor * busy_w + (1 - site.load_factor) * idle_w
    ratio, left_out = measured
    overhead, label, note = _overhead(boundary, site.node_overhead, ratio)
    estimate = estimate or "default" in label
    notes.extend(n for n in (note, left_out if site.node_overhead is None and boundary == "device" else None) if n)
    it_mw = devices * device_w * overhead / 1e6
    facility_mw = it_mw * site.pue
    mwh = facility_mw * HOURS_PER_YEAR
    units_year_m = units * 365.0 / 1e6
    t_co2 = mwh * site.grid.g_per_kwh / 1000.0 if site.grid is not None else None
    cost = mwh * 1000.0 * site.price.per_kwh if site.price is not None else None
    return Projection(
        hardware=found.hardware,
        case=f"{found.workload} {found.case}".strip(),
        point=point.label,
        unit=found.unit,
        devices=devices,
        units_per_day=units,
        device_watts=device_w,
        it_mw=it_mw,
        facility_mw=facility_mw,
        mwh_per_year=mwh,
        t_co2_per_year=t_co2,
        cost_per_year=cost,
        cost_per_million=cost / units_year_m if cost is not None and units_year_m > 0 else None,
        g_co2_per_million=t_co2 * 1e6 / units_year_m if t_co2 is not None and units_year_m > 0 else None,
        boundary=label,
        estimate=estimate,
        notes=tuple(notes),
    )


def _overhead(boundary: str, given: float | None, measured: float | None) -> tuple[float, str, str | None]:
    """(node overhead, the boundary label a projection shows, a note or None): 1 for node energy;
    else the given overhead, the measured node-to-device ratio, or the default, in that order."""
    if boundary != "device":
        return 1.0, f"{boundary} (measured)", None
    if given is not None:
        return given, f"device x {given:.2f} node overhead (given)", None
    if measured is not None:
        return (
            measured,
            f"device x {measured:.2f} measured node/device ratio",
            f"node overhead x{measured:.2f}: measured, the node's BMC over the devices' own counters in the same windows",
        )
    return (
        DEFAULT_NODE_OVERHEAD,
        f"device x {DEFAULT_NODE_OVERHEAD:.2f} node overhead (default: {NODE_OVERHEAD_SOURCE})",
        f"node overhead x{DEFAULT_NODE_OVERHEAD:.2f}: {NODE_OVERHEAD_SOURCE} (an estimate: device energy only was measured)",
    )


def site_lines(site: Site) -> Sequence[str]:
    """What the projection assumed, one line each, for under its table."""
    lines = [f"PUE {site.pue:g}" + (f" ({PUE_SOURCE})" if site.pue == DEFAULT_PUE else ""), f"load factor {site.load_factor:g}"]
    if site.grid is not None:
        lines.append(f"grid {site.grid.name}: {site.grid.describe()}")
    if site.price is not None:
        lines.append(f"price {site.price.per_kwh:g} {site.price.currency}/kWh ({site.price.source}); electricity only")
    return lines
