"""`wattbench report FILES --plot OUT.png`: pictures of what each machine delivers.

`plot(df)` builds a matplotlib Figure from the DataFrame of `bench.report.load.load`; `save(fig,
path)` writes it as PNG, SVG or PDF. The figure holds:

- one bar panel per unit of work (FLOP, byte, token, ...), never two units on one axis: the cases
  are categories (horizontal bars, so "workload params" labels stay whole), the hardware grouped
  bars. The value is the median over runs of work per joule (= throughput per watt) when energy
  was measured for that unit, else the median throughput in work per second, and the title says
  energy was not measured. Values carry an SI prefix chosen from the data ("GFLOP/J", "GB/s")
  in the axis label; no offset text, no scientific notation.
- bars whose energy comes from a nominal wattage (`run --nominal-watts`) are hatched and their
  legend entry says "(estimate: nominal watts)".
- a panel of energy per token against batch (`sweep_data`) when llm cases of the same model,
  phase, context and other parameters ran at two batch sizes or more: x the batch (log2, ticked at
  the batches that ran), y J/token on a log scale (1 / the median over runs of tokens per joule, as
  the tables' energy per work; SI prefix in the axis label, "mJ/tok"), one line with markers per hardware
  (and per group of parameters, when several: "hardware · model phase seq=L"). Estimates (a
  nominal wattage) are dashed and their label says so; a hardware without energy for a group gets
  a legend entry saying "energy not measured". When no case of the sweep measured energy, the
  panel shows tokens/s against batch instead and its title says energy was not measured, as the
  bar panels do.
- a power-over-time panel (watts against the seconds each sample was taken, into the case's
  timed window) only when some case recorded a measured power trace; a trace from a nominal
  wattage (`--nominal-watts`) is a constant, not a measurement, and is left out.

The figure is sized from its content and uses constrained layout, so no label is cut. Only
matplotlib's object API is used (Figure + the Agg canvas): no pyplot, no global state, no GUI.
matplotlib is an optional extra (`pip install 'wattbench[plot]'`). Reading side: this module never
imports torch, bench.measure or the workloads.

`plot_frontier(frontiers)` (report --frontier --plot) draws the energy-optimal frontier instead
(bench.report.frontier): per unit of work, throughput against energy per unit of work, one colour
per hardware, the Pareto points joined, the recommended point circled; estimates hollow and dashed.

To add a panel kind, write a `Panel` (a height in inches and a function that draws on one Axes)
and add it to the list `panels(df)` returns.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from bench.errors import UsageError
from bench.params import ParamSchema, compact_tokens
from bench.report.frontier import Frontier

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SUFFIXES = (".png", ".svg", ".pdf")
WIDTH_IN = 11.0  # figure width, inches
DPI = 120  # raster resolution of a saved PNG
MAX_TRACE_LEGEND = 12  # legend entries of the power panel at most
CASE_LABEL_CHARS = 30  # case labels wrap at this many characters (never truncated)
LEGEND_LABEL_CHARS = 34  # hardware / trace legend labels wrap at this many characters
ESTIMATE_NOTE = "(estimate: nominal watts)"
ESTIMATE_HATCH = "//"

# Decimal prefixes, as the report tables use (1 GFLOP = 1e9 FLOP, 1 GB = 1e9 bytes).
_PREFIXES = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
_UNIT_SYMBOL = {"FLOP": "FLOP", "byte": "B", "token": "tok"}
_UNIT_NOUN = {"FLOP": "FLOP", "byte": "bytes", "token": "tokens"}
_UNIT_ORDER = ("FLOP", "byte", "token")
_LINESTYLES = ("-", "--", ":", "-.")
# Energy per unit of work is below a joule: prefixes down to pico (as bench.units' energy per work).
_SMALL_PREFIXES = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"))
SWEEP_WORKLOAD = "llm"  # the workload whose token cases make a batch sweep
SWEEP_PARAM = "batch"
_SWEEP_NAMED = ("model", "phase", "seq", "dtype")  # always in a group's description, in this order
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _matplotlib() -> tuple[Any, Any]:
    """(Figure class, FigureCanvasAgg class), or a UsageError saying how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'wattbench[plot]' (or pip install matplotlib)") from None
    return Figure, FigureCanvasAgg


# ---------------------------------------------------------------------------------------------
# Units and labels


def si_prefix(values: Any) -> tuple[float, str]:
    """(scale, prefix) for plotting `values` (any iterable of numbers, NaN ignored) as value/scale:
    the largest decimal prefix not above the largest magnitude, e.g. 3e11 -> (1e9, "G")."""
    finite = [abs(float(v)) for v in values if v is not None and math.isfinite(float(v))]
    top = max(finite, default=0.0)
    for scale, prefix in _PREFIXES:
        if top >= scale:
            return scale, prefix
    return 1.0, ""


def small_prefix(values: Any) -> tuple[float, str]:
    """si_prefix for quantities usually below one (joules per token): the largest of 1, milli,
    micro, nano, pico not above the largest magnitude, e.g. 0.004 -> (1e-3, "m")."""
    finite = [abs(float(v)) for v in values if v is not None and math.isfinite(float(v))]
    top = max(finite, default=0.0)
    if top >= 1.0:
        return 1.0, ""
    for scale, prefix in _SMALL_PREFIXES:
        if top >= scale:
            return scale, prefix
    return _SMALL_PREFIXES[-1]


def unit_symbol(unit: str | None) -> str:
    """How a unit of work prints after a prefix: FLOP -> "FLOP", byte -> "B", token -> "tok"."""
    return _UNIT_SYMBOL.get(unit or "", unit or "work")


def case_label(workload: str, params: str | None) -> str:
    """A case's axis label, "workload params", wrapped over lines when long but never cut."""
    text = f"{workload} {params}".strip() if params else str(workload)
    return "\n".join(textwrap.wrap(text, CASE_LABEL_CHARS, break_long_words=False, break_on_hyphens=False)) or text


def _wrap(text: str, width: int = LEGEND_LABEL_CHARS) -> str:
    """`text` over lines of at most `width` characters where it has spaces; no word is cut."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)) or text


def _is_true(value: Any) -> bool:
    """energy_estimate is True, False, None or NaN: only a real true counts."""
    try:
        return bool(value) and not pd.isna(value)
    except (TypeError, ValueError):
        return False


def _positive(value: Any) -> bool:
    """A finite number above zero (None, NaN and text are not): a value a bar can show."""
    try:
        return value is not None and math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Bars of one unit of work


@dataclass
class Series:
    """One group of bars: a hardware, measured or estimated (nominal watts)."""

    hardware: str
    estimate: bool = False
    unmeasured: bool = False  # in an energy panel: this hardware has no energy for any case

    @property
    def label(self) -> str:
        note = f"\n{ESTIMATE_NOTE}" if self.estimate else "\n(energy not measured)" if self.unmeasured else ""
        return _wrap(self.hardware) + note


@dataclass
class BarData:
    """What one bar panel shows, all in base units (e.g. FLOP/J or B/s, not scaled).

    values[case][series] is the median over runs, or NaN where that hardware has no such case
    (or, in an energy panel, no energy for it: `unmeasured` then holds (case, series))."""

    unit: str
    energy: bool  # True: work per joule; False: work per second
    workloads: list[str]
    cases: list[tuple[str, str]]  # (workload, params)
    series: list[Series]
    values: list[list[float]]
    unmeasured: set[tuple[int, int]] = field(default_factory=set)
    boundary: str = "device"  # what the joules include (boundary_of)

    @property
    def per(self) -> str:
        return "J" if self.energy else "s"


def boundary_of(rows: pd.DataFrame) -> str:
    """What the joules of `rows` include, for an energy axis: "device" (a GPU board or CPU
    package), "node" (the whole server, from its BMC), or both named where a plot mixes them."""
    if "energy_boundary" not in rows or rows.empty:
        return "device"
    found = {str(b) for b in rows["energy_boundary"].dropna()} or {"device"}
    return ", ".join(sorted(found))


def bar_data(rows: pd.DataFrame, unit: str) -> BarData:
    """Medians over runs for the successful cases `rows` (one unit of work): work per joule when
    any row of this unit has an efficiency (energy measured or estimated), else throughput."""
    energy = bool(rows["efficiency"].map(_positive).any())
    metric = "efficiency" if energy else "throughput"
    rows = rows.assign(
        _estimate=rows["energy_estimate"].map(_is_true) if energy else False,
        _params=rows["params"].fillna("").astype(str),
    )
    workloads = list(dict.fromkeys(rows["workload"]))
    cases = sorted(dict.fromkeys(zip(rows["workload"], rows["_params"], strict=True)), key=lambda case: workloads.index(case[0]))
    valued = rows[rows[metric].map(_positive)]
    series: list[Series] = []
    for hardware in dict.fromkeys(rows["hardware"]):
        flags = set(valued[valued["hardware"] == hardware]["_estimate"]) or {False}
        series.extend(Series(str(hardware), estimate) for estimate in (False, True) if estimate in flags)
    index = {(s.hardware, s.estimate): i for i, s in enumerate(series)}
    values = [[math.nan] * len(series) for _ in cases]
    for (workload, params, hardware, estimate), group in valued.groupby(
        ["workload", "_params", "hardware", "_estimate"], sort=False
    ):
        values[cases.index((workload, params))][index[(str(hardware), estimate)]] = float(group[metric].astype(float).median())
    unmeasured: set[tuple[int, int]] = set()
    for workload, params, hardware in dict.fromkeys(zip(rows["workload"], rows["_params"], rows["hardware"], strict=True)):
        c = cases.index((workload, params))
        mine = [i for i, s in enumerate(series) if s.hardware == str(hardware)]
        if energy and all(math.isnan(values[c][i]) for i in mine):
            unmeasured.add((c, mine[0]))  # in an energy panel: this case ran here, energy not measured
    for s, one in enumerate(series):
        one.unmeasured = energy and all(math.isnan(row[s]) for row in values)
    return BarData(unit, energy, workloads, cases, series, values, unmeasured, boundary_of(valued) if energy else "device")


def bar_height_in(data: BarData) -> float:
    """Inches a bar panel needs: per case, room for its bars or its wrapped label, whichever is
    more, plus title and axis; at least as tall as its legend."""
    per_case = [max(0.22 * len(data.series) + 0.16, 0.17 * case_label(*case).count("\n") + 0.3) for case in data.cases]
    legend = sum(0.17 * (s.label.count("\n") + 1) + 0.08 for s in data.series) + 0.3
    return max(sum(per_case) + 1.2, legend, 2.0)


def draw_bars(ax: Axes, data: BarData, colors: Mapping[str, str] | None = None) -> None:
    """Horizontal grouped bars on `ax`: one row per case (top to bottom, grouped by workload in
    the order the files give), one bar per hardware, its value written at its end; x is work per
    joule (e.g. GFLOP/J) or work per second (e.g. GB/s) with an SI prefix chosen from the data.
    `colors` maps hardware to a colour, so a machine keeps its colour across panels."""
    scale, prefix = si_prefix(v for row in data.values for v in row)
    symbol = f"{prefix}{unit_symbol(data.unit)}/{data.per}"
    n = len(data.series)
    height = 0.8 / max(1, n)
    hardware_color = dict(colors or hardware_colors(s.hardware for s in data.series))
    for s, series in enumerate(data.series):
        offset = -0.4 + height * (s + 0.5)
        ys = [c + offset for c, row in enumerate(data.values) if not math.isnan(row[s])]
        widths = [row[s] / scale for row in data.values if not math.isnan(row[s])]
        bars = ax.barh(
            ys,
            widths,
            height * 0.92,
            label=series.label,
            color=hardware_color[series.hardware],
            hatch=ESTIMATE_HATCH if series.estimate else None,
            edgecolor="0.15" if series.estimate else "none",
            linewidth=0.6,
            alpha=0.75 if series.estimate else 1.0,
        )
        ax.bar_label(bars, labels=[f"{w:.3g}" for w in widths], padding=2, fontsize=7)
        for c, s2 in sorted(data.unmeasured):
            if s2 == s:
                ax.text(0, c + offset, " energy not measured", va="center", ha="left", fontsize=7, color="0.35", style="italic")
    ax.set_yticks(range(len(data.cases)), [case_label(*case) for case in data.cases], fontsize=8)
    ax.set_ylim(len(data.cases) - 0.5, -0.5)  # first case on top
    ax.margins(x=0.12)
    ax.set_xlim(left=0)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.set_xlabel(
        f"work per joule ({data.boundary} energy), median over runs ({symbol})"
        if data.energy
        else f"throughput, median over runs ({symbol})"
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    names = ", ".join(data.workloads)
    noun = _UNIT_NOUN.get(data.unit, data.unit)
    title = f"{names}: throughput per watt ({noun})" if data.energy else f"{names}: throughput ({noun}; energy not measured)"
    ax.set_title(_wrap(title, 90), fontsize=10)
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0,
        fontsize=7,
        frameon=False,
        title="hardware",
        title_fontsize=8,
    )


# ---------------------------------------------------------------------------------------------
# Energy per token against batch


@dataclass
class SweepLine:
    """One line of the batch panel: a hardware's medians for one group of parameters (all but
    the batch), measured or estimated; values in base units (J/token, or tokens/s), by batch."""

    hardware: str
    group: str  # the group's description: "llama-3-8b decode seq=1024 bf16"
    estimate: bool = False
    batches: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    unmeasured: bool = False  # in an energy panel: this hardware has no energy for this group
    several: bool = False  # several groups in the panel: the label names the group

    @property
    def label(self) -> str:
        name = f"{self.hardware} · {self.group}" if self.several else self.hardware
        note = f"\n{ESTIMATE_NOTE}" if self.estimate else "\n(energy not measured)" if self.unmeasured else ""
        return _wrap(name) + note


@dataclass
class SweepData:
    """What the batch panel shows: energy per token (True) or, when no case of the sweep measured
    energy, throughput in tokens/s (False)."""

    energy: bool
    groups: list[str]
    lines: list[SweepLine]
    boundary: str = "device"  # what the joules include (boundary_of)

    @property
    def batches(self) -> list[int]:
        return sorted({b for line in self.lines for b in line.batches})


def _sweep_batch(params: Any) -> int | None:
    """The case's batch when its params (a dict) give a whole one above zero, else None."""
    batch = params.get(SWEEP_PARAM) if isinstance(params, dict) else None
    return batch if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0 else None


def _group_key(params: dict[str, Any]) -> str:
    """A case's parameters but the batch, as one text in a fixed order: what a sweep shares."""
    return ",".join(f"{k}={v!r}" for k, v in sorted(params.items(), key=lambda item: str(item[0])) if k != SWEEP_PARAM)


def _describe(params: dict[str, Any], schema: Any, varying: list[str]) -> str:
    """ "model phase seq=L dtype", then the other parameters that differ between the groups."""
    schema = schema if isinstance(schema, ParamSchema) else ParamSchema()
    words = [str(params[k]) for k in ("model", "phase") if k in params]
    words += [t for k in ("seq", "dtype") if k in params for t in compact_tokens(params, schema, only=[k])]
    return " ".join(words + compact_tokens(params, schema, only=varying))


def sweep_data(rows: pd.DataFrame) -> SweepData | None:
    """The batch panel's data from the successful cases `rows`, or None when no group of llm
    token cases (the same parameters but the batch) ran at two batch sizes or more.

    Energy per token where any case of those groups has an efficiency (energy measured or
    estimated): 1 / the median over runs of tokens per joule, per hardware, group and batch,
    estimates (nominal watts) apart from measurements. Else the median throughput (tokens/s)."""
    rows = rows[(rows["workload"] == SWEEP_WORKLOAD) & (rows["work_unit"] == "token")]
    rows = rows.assign(_batch=rows["params_dict"].map(_sweep_batch))
    rows = rows[rows["_batch"].notna()]
    if rows.empty:
        return None
    rows = rows.assign(_group=rows["params_dict"].map(_group_key), _batch=rows["_batch"].astype(int))
    sweeps = [g for g, group in rows.groupby("_group", sort=False) if group["_batch"].nunique() >= 2]
    if not sweeps:
        return None
    rows = rows[rows["_group"].isin(sweeps)]
    energy = bool(rows["efficiency"].map(_positive).any())
    metric = "efficiency" if energy else "throughput"
    rows = rows.assign(_estimate=rows["energy_estimate"].map(_is_true) if energy else False)
    first = {g: rows[rows["_group"] == g].iloc[0] for g in sweeps}
    params = {g: first[g]["params_dict"] for g in sweeps}
    names = list(dict.fromkeys(k for g in sweeps for k in params[g]))
    fixed = {*_SWEEP_NAMED, SWEEP_PARAM}
    varying = [k for k in names if k not in fixed and len({repr(params[g].get(k)) for g in sweeps}) > 1]
    described = {g: _describe(first[g]["params_dict"], first[g]["param_schema"], varying) for g in sweeps}
    valued = rows[rows[metric].map(_positive)]
    lines: list[SweepLine] = []
    for (group, hardware, estimate), cases in valued.groupby(["_group", "hardware", "_estimate"], sort=False):
        medians = cases.groupby("_batch")[metric].agg(lambda v: float(v.astype(float).median()))
        values = [1.0 / float(m) if energy else float(m) for m in medians]
        lines.append(SweepLine(str(hardware), described[group], bool(estimate), [int(b) for b in medians.index], values))
    drawn = set(zip(valued["_group"], valued["hardware"], strict=True))
    for group, hardware in dict.fromkeys(zip(rows["_group"], rows["hardware"], strict=True)):
        if (group, hardware) not in drawn:  # ran here, energy not measured: a legend entry says so
            lines.append(SweepLine(str(hardware), described[group], unmeasured=True))
    order = {g: i for i, g in enumerate(described.values())}
    lines.sort(key=lambda line: order[line.group])  # a group's machines side by side
    for line in lines:
        line.several = len(sweeps) > 1
    return SweepData(energy, list(described.values()), lines, boundary_of(rows) if energy else "device")


def sweep_height_in(data: SweepData) -> float:
    """Inches the batch panel needs: a plot of about 3 inches, or its legend's height."""
    legend = sum(0.17 * (line.label.count("\n") + 1) + 0.08 for line in data.lines) + 0.5
    return max(3.2, legend)


def draw_sweep(ax: Axes, data: SweepData, colors: Mapping[str, str] | None = None) -> None:
    """Energy per token (or tokens/s) against batch: one line with markers per hardware and group,
    dashed for an estimate; x log2, ticked at the batches; y log10 in plain numbers, with an SI
    prefix in its label."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    hardware_color = dict(colors or hardware_colors(line.hardware for line in data.lines))
    scale, prefix = (small_prefix if data.energy else si_prefix)(v for line in data.lines for v in line.values)
    proxies = []
    for line in data.lines:
        color = hardware_color.get(line.hardware, "0.3")
        marker = _MARKERS[data.groups.index(line.group) % len(_MARKERS)]
        if line.unmeasured:  # a legend entry only: nothing to draw
            proxies.append(Line2D([], [], color=color, marker=marker, linestyle="none", alpha=0.4, label=line.label))
            continue
        ax.plot(
            line.batches,
            [v / scale for v in line.values],
            color=color,
            marker=marker,
            markersize=5,
            linewidth=1.4,
            linestyle="--" if line.estimate else "-",
            label=line.label,
        )
    batches = data.batches
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(batches[0] / 1.3, batches[-1] * 1.3)
    # y on a log scale too: energy per token falls about as 1/batch, and a machine 100x off (a CPU
    # beside GPUs) would flatten the others to the axis. Plain numbers at 1, 2, 5 x 10^k.
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.margins(y=0.1)
    ax.set_xlabel("batch (sequences)")
    noun = unit_symbol("token")
    ax.set_ylabel(
        f"energy per token ({data.boundary} energy), median over runs ({prefix}J/{noun})"
        if data.energy
        else f"throughput, median over runs ({prefix}{noun}/s)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    what = f"{SWEEP_WORKLOAD} {data.groups[0]}" if len(data.groups) == 1 else SWEEP_WORKLOAD
    title = (
        f"{what}: energy per token against batch"
        if data.energy
        else f"{what}: throughput against batch (tokens; energy not measured)"
    )
    ax.set_title(_wrap(title, 90), fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles + proxies,
        labels + [p.get_label() for p in proxies],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0,
        fontsize=7,
        frameon=False,
        title="hardware · parameters" if len(data.groups) > 1 else "hardware",
        title_fontsize=8,
    )


# ---------------------------------------------------------------------------------------------
# Power over time


@dataclass
class Trace:
    """One case's measured power during its timed window: `watts` (W) at `seconds` (s since the
    window started), as the result file's energy.trace pairs give them."""

    case: str  # "workload params"
    hardware: str
    seconds: list[float]
    watts: list[float]
    boundary: str = "device"  # what the watts include

    @property
    def label(self) -> str:
        return _wrap(f"{self.case} · {self.hardware}", 40)


def traces(rows: pd.DataFrame) -> list[Trace]:
    """The measured power traces of the successful cases `rows` that have one (two samples or
    more, each with its time). A case whose energy is an estimate (a nominal wattage) has none:
    its "trace" is the constant it was given."""
    found = []
    for row in rows.itertuples(index=False):
        watts, seconds = row.power_trace_w, row.power_trace_s
        if _is_true(row.energy_estimate) or not isinstance(watts, (list, tuple)) or len(watts) < 2:
            continue
        if not isinstance(seconds, (list, tuple)) or len(seconds) != len(watts):
            continue
        case = f"{row.workload} {row.params or ''}".strip()
        known = getattr(row, "energy_boundary", None)
        boundary = known if isinstance(known, str) else "device"
        found.append(Trace(case, str(row.hardware), [float(t) for t in seconds], [float(w) for w in watts], boundary))
    cases = list(dict.fromkeys(t.case for t in found))
    return sorted(found, key=lambda t: cases.index(t.case))  # a case's machines side by side


def power_height_in(found: list[Trace]) -> float:
    """Inches the power panel needs: a plot of about 3 inches, or its legend's height."""
    shown = found[:MAX_TRACE_LEGEND]
    legend = sum(0.17 * (t.label.count("\n") + 1) + 0.08 for t in shown) + 0.5
    return max(3.2, legend)


def draw_power(ax: Axes, found: list[Trace]) -> None:
    """Lines of power (W) against seconds into the timed window, one per traced case; the legend
    names at most MAX_TRACE_LEGEND of them and says how many more are drawn. One colour per
    case, one line style per hardware, so a case's machines read side by side."""
    cases = list(dict.fromkeys(t.case for t in found))
    machines = list(dict.fromkeys(t.hardware for t in found))
    for i, trace in enumerate(found):
        label = trace.label if i < MAX_TRACE_LEGEND else "_nolegend_"
        ax.plot(
            trace.seconds,
            trace.watts,
            linewidth=1.1,
            label=label,
            color=f"C{cases.index(trace.case) % 10}",
            linestyle=_LINESTYLES[machines.index(trace.hardware) % len(_LINESTYLES)],
        )
    ax.set_xlabel("seconds into the timed window (s)")
    ax.set_ylabel(f"power, {', '.join(sorted({t.boundary for t in found}))} boundary (W)")
    ax.set_title("power over time", fontsize=10)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.grid(alpha=0.3)
    more = len(found) - MAX_TRACE_LEGEND
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0,
        fontsize=7,
        frameon=False,
        title=f"case · hardware ({MAX_TRACE_LEGEND} of {len(found)} named)" if more > 0 else "case · hardware",
        title_fontsize=8,
    )


# ---------------------------------------------------------------------------------------------
# The figure


@dataclass
class Panel:
    """One Axes of the figure: its height in inches and the function that draws on it."""

    height_in: float
    draw: Callable[[Axes], None]


def hardware_colors(hardware: Iterable[Any]) -> dict[str, str]:
    """One colour of matplotlib's cycle (C0, C1, ...) per hardware, in order of appearance."""
    return {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(str(h) for h in hardware))}


def _units(ok: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(ok["work_unit"]))
    return [u for u in _UNIT_ORDER if u in present] + [u for u in present if u not in _UNIT_ORDER]


def panels(df: pd.DataFrame) -> list[Panel]:
    """The panels the results call for: one bar panel per unit of work among the successful cases
    with a throughput, then energy per token against batch when llm cases swept the batch, then
    power over time when some case has a measured trace. Empty when nothing is."""
    ok = df[(df["status"] == "ok") & df["throughput"].map(_positive)]
    ok = ok.assign(work_unit=ok["work_unit"].fillna("work"))
    colors = hardware_colors(ok["hardware"])
    found: list[Panel] = []
    for unit in _units(ok):
        data = bar_data(ok[ok["work_unit"] == unit], unit)
        found.append(Panel(bar_height_in(data), partial(draw_bars, data=data, colors=colors)))
    sweep = sweep_data(ok)
    if sweep is not None:
        found.append(Panel(sweep_height_in(sweep), partial(draw_sweep, data=sweep, colors=colors)))
    lines = traces(ok)
    if lines:
        found.append(Panel(power_height_in(lines), partial(draw_power, found=lines)))
    return found


def plot(df: pd.DataFrame) -> Figure:
    """The figure for the results in `df` (see module docstring), sized from its content:
    WIDTH_IN wide, as tall as its panels need. Raises UsageError when matplotlib is missing or no
    case succeeded with a throughput (a figure is never a set of empty axes)."""
    _matplotlib()
    wanted = panels(df)
    if not wanted:
        raise UsageError("--plot: no case succeeded with a throughput in these results; nothing to draw")
    return _figure(wanted)


def _figure(wanted: list[Panel]) -> Figure:
    """A Figure WIDTH_IN wide with the panels one above the other, each as tall as it asks."""
    Figure, FigureCanvasAgg = _matplotlib()
    heights = [p.height_in for p in wanted]
    fig = Figure(figsize=(WIDTH_IN, sum(heights)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(wanted), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, panel in zip(axes, wanted, strict=True):
        panel.draw(ax)
    return fig


# ---------------------------------------------------------------------------------------------
# The energy-optimal frontier (report --frontier --plot)


@dataclass
class FrontierPanelData:
    """One frontier panel: the frontiers (bench.report.frontier) of one unit of work."""

    unit: str
    frontiers: list[Frontier]

    @property
    def cases(self) -> list[str]:
        """The cases drawn, "workload params" (one marker shape each)."""
        return list(dict.fromkeys(f"{f.workload} {f.case}".strip() for f in self.frontiers))

    def label(self, found: Frontier) -> str:
        """A frontier's legend entry: its hardware (and case, when the panel has several), and
        "(estimate: nominal watts)" when its energy rests on a nominal wattage."""
        name = f"{found.hardware} · {found.workload} {found.case}".strip() if len(self.cases) > 1 else found.hardware
        return _wrap(name) + (f"\n{ESTIMATE_NOTE}" if any(p.estimate for p in found.points) else "")


def frontier_panels(frontiers: Sequence[Frontier]) -> list[FrontierPanelData]:
    """One panel per unit of work, of the frontiers with two points or more (when none has two,
    those with one: a point is its own frontier); empty when no frontier has a point."""
    drawn = [f for f in frontiers if len(f.points) >= 2] or [f for f in frontiers if f.points]
    units = list(dict.fromkeys(f.unit for f in drawn))
    ordered = [u for u in _UNIT_ORDER if u in units] + [u for u in units if u not in _UNIT_ORDER]
    return [FrontierPanelData(u, [f for f in drawn if f.unit == u]) for u in ordered]


def frontier_height_in(data: FrontierPanelData) -> float:
    """Inches a frontier panel needs: a plot of about 4 inches, or its legend's height."""
    legend = sum(0.17 * (data.label(f).count("\n") + 1) + 0.08 for f in data.frontiers) + 0.8
    return max(4.0, legend)


def _log_if_wide(ax: Axes, axis: Literal["x", "y"], values: list[float]) -> None:
    """A log scale (plain numbers at 1, 2, 5 x 10^k) when `values` span more than 20x, else a
    linear one with plain numbers: a power-limit sweep spans a few percent, a batch sweep 100x."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    positive = [v for v in values if v > 0]
    which = ax.xaxis if axis == "x" else ax.yaxis
    if positive and max(positive) / min(positive) > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        which.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        which.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        which.set_minor_formatter(NullFormatter())
    else:
        ax.ticklabel_format(axis=axis, style="plain", useOffset=False)


def _draw_points(ax: Axes, found: Frontier, label: str, color: str, marker: str, scale: tuple[float, float], named: bool) -> None:
    """One frontier on the axes: its Pareto points joined, every point a marker (hollow for an
    estimate, filled on top where measured), labels when `named`, the recommendation circled."""
    sx, sy = scale
    estimate = any(p.estimate for p in found.points)
    ax.plot(
        [p.throughput / sx for p in found.pareto],
        [p.energy_per_unit / sy for p in found.pareto],
        color=color,
        marker=marker,
        markersize=6,
        markerfacecolor="none" if estimate else color,
        linewidth=1.4,
        linestyle="--" if estimate else "-",
        label=label,
        gid="pareto",
    )
    ax.plot(
        [p.throughput / sx for p in found.points],
        [p.energy_per_unit / sy for p in found.points],
        linestyle="none",
        marker=marker,
        markersize=6,
        color=color,
        label="_nolegend_",
        gid="points",
        markerfacecolor="none",
        markeredgewidth=1.2,
    )
    solid = [p for p in found.points if not p.estimate]
    if solid:  # measured energy: filled markers on top of the hollow outlines
        ax.plot(
            [p.throughput / sx for p in solid],
            [p.energy_per_unit / sy for p in solid],
            linestyle="none",
            marker=marker,
            markersize=6,
            color=color,
            label="_nolegend_",
            gid="points-measured",
        )
    if named:
        for p in found.points:
            ax.annotate(
                ("~" if p.estimate else "") + p.label,
                (p.throughput / sx, p.energy_per_unit / sy),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=6,
                color="0.3",
            )
    rec = found.recommended
    if rec is not None:
        xy = (rec.throughput / sx, rec.energy_per_unit / sy)
        ax.plot(
            [xy[0]],
            [xy[1]],
            linestyle="none",
            marker="o",
            markersize=16,
            markerfacecolor="none",
            markeredgecolor=color,
            markeredgewidth=1.6,
            label="_nolegend_",
            gid="recommended",
        )
        ax.annotate(
            f"recommended: {rec.label}",
            xy,
            xytext=(8, -14),
            textcoords="offset points",
            fontsize=7,
            fontweight="bold",
            color=color,
            gid="recommended-label",
        )


def draw_frontier(ax: Axes, data: FrontierPanelData, colors: Mapping[str, str] | None = None) -> None:
    """Throughput (x) against energy per unit of work (y): every point as a marker (hollow for an
    estimate) with its label, each frontier's Pareto points joined (dashed for an estimate), the
    recommended point circled and annotated. One colour per hardware, one marker per case;
    SI prefixes from the data in the axis labels. Artists carry gids for tests: "points",
    "pareto", "recommended"."""
    from matplotlib.lines import Line2D

    hardware_color = dict(colors or hardware_colors(f.hardware for f in data.frontiers))
    every = [p for f in data.frontiers for p in f.points]
    sx, px = si_prefix(p.throughput for p in every)
    sy, py = small_prefix(p.energy_per_unit for p in every)
    cases = data.cases
    named = len(every) <= 40
    for found in data.frontiers:
        color = hardware_color.get(found.hardware, "0.3")
        marker = _MARKERS[cases.index(f"{found.workload} {found.case}".strip()) % len(_MARKERS)]
        _draw_points(ax, found, data.label(found), color, marker, (sx, sy), named)
    _log_if_wide(ax, "x", [p.throughput for p in every])
    _log_if_wide(ax, "y", [p.energy_per_unit for p in every])
    ax.margins(x=0.12, y=0.15)
    symbol = unit_symbol(data.unit)
    noun = _UNIT_NOUN.get(data.unit, data.unit)
    ax.set_xlabel(f"throughput, median over runs ({px}{symbol}/s)")
    boundary = ", ".join(sorted({b for f in data.frontiers for b in f.boundary.split(", ")}))
    ax.set_ylabel(f"energy per {data.unit} ({boundary} energy), median over runs ({py}J/{symbol})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    names = ", ".join(dict.fromkeys(f.workload for f in data.frontiers))
    what = f"{names} {data.frontiers[0].case}".strip() if len(cases) == 1 else names
    title = f"{what}: energy-optimal frontier ({noun}; lower right is better)"
    if any(f.nominal_only for f in data.frontiers):
        title += "; energy from a constant nominal wattage is proportional to time, so this shows throughput, not efficiency"
    ax.set_title(_wrap(title, 90), fontsize=10)
    circle = Line2D(
        [], [], linestyle="none", marker="o", markersize=10, markerfacecolor="none", markeredgecolor="0.2", label="recommended"
    )
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        [*handles, circle],
        [*labels, "recommended"],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0,
        fontsize=7,
        frameon=False,
        title="hardware · case (Pareto points joined)" if len(cases) > 1 else "hardware (Pareto points joined)",
        title_fontsize=8,
    )


def plot_frontier(frontiers: Sequence[Frontier]) -> Figure:
    """The frontier figure (report --frontier --plot): one panel per unit of work (see
    draw_frontier), sized as `plot`'s. UsageError when matplotlib is missing or no frontier has
    a point (no case with energy)."""
    _matplotlib()
    wanted = frontier_panels(frontiers)
    if not wanted:
        raise UsageError(
            "--plot with --frontier: no case has energy (measured, or --nominal-watts) in these results; nothing to draw"
        )
    colors = hardware_colors(f.hardware for data in wanted for f in data.frontiers)
    return _figure([Panel(frontier_height_in(data), partial(draw_frontier, data=data, colors=colors)) for data in wanted])


def check_path(path: str | Path) -> Path:
    """`path` as a Path when its suffix is one we write (.png, .svg, .pdf), else a UsageError."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(
            f"--plot {str(path)!r}: the file name must end in {', '.join(SUFFIXES)} (got {path.suffix or 'no suffix'!r})"
        )
    return path


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` to `path` (.png at DPI dots per inch, .svg or .pdf); UsageError on another
    suffix or when the file cannot be written. Returns the path written."""
    path = check_path(path)
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as exc:
        raise UsageError(f"--plot {str(path)!r}: cannot write: {exc.strerror or exc}") from None
    return path
