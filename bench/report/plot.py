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
- a power-over-time panel (watts against the seconds each sample was taken, into the case's
  timed window) only when some case recorded a measured power trace; a trace from a nominal
  wattage (`--nominal-watts`) is a constant, not a measurement, and is left out.

The figure is sized from its content and uses constrained layout, so no label is cut. Only
matplotlib's object API is used (Figure + the Agg canvas): no pyplot, no global state, no GUI.
matplotlib is an optional extra (`pip install 'wattbench[plot]'`). Reading side: this module never
imports torch, bench.measure or the workloads.

To add a panel kind (tokens/J against batch, a Pareto frontier), write a `Panel` (a height in
inches and a function that draws on one Axes) and add it to the list `panels(df)` returns.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench.errors import UsageError

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

    @property
    def per(self) -> str:
        return "J" if self.energy else "s"


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
            ["workload", "_params", "hardware", "_estimate"], sort=False):
        values[cases.index((workload, params))][index[(str(hardware), estimate)]] = float(group[metric].astype(float).median())
    unmeasured: set[tuple[int, int]] = set()
    for workload, params, hardware in dict.fromkeys(zip(rows["workload"], rows["_params"], rows["hardware"], strict=True)):
        c = cases.index((workload, params))
        mine = [i for i, s in enumerate(series) if s.hardware == str(hardware)]
        if energy and all(math.isnan(values[c][i]) for i in mine):
            unmeasured.add((c, mine[0]))  # in an energy panel: this case ran here, energy not measured
    for s, one in enumerate(series):
        one.unmeasured = energy and all(math.isnan(row[s]) for row in values)
    return BarData(unit, energy, workloads, cases, series, values, unmeasured)


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
        bars = ax.barh(ys, widths, height * 0.92, label=series.label, color=hardware_color[series.hardware],
                       hatch=ESTIMATE_HATCH if series.estimate else None,
                       edgecolor="0.15" if series.estimate else "none", linewidth=0.6,
                       alpha=0.75 if series.estimate else 1.0)
        ax.bar_label(bars, labels=[f"{w:.3g}" for w in widths], padding=2, fontsize=7)
        for c, s2 in sorted(data.unmeasured):
            if s2 == s:
                ax.text(0, c + offset, " energy not measured", va="center", ha="left", fontsize=7,
                        color="0.35", style="italic")
    ax.set_yticks(range(len(data.cases)), [case_label(*case) for case in data.cases], fontsize=8)
    ax.set_ylim(len(data.cases) - 0.5, -0.5)  # first case on top
    ax.margins(x=0.12)
    ax.set_xlim(left=0)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.set_xlabel(f"{'work per joule' if data.energy else 'throughput'}, median over runs ({symbol})")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    names = ", ".join(data.workloads)
    noun = _UNIT_NOUN.get(data.unit, data.unit)
    title = (f"{names}: throughput per watt ({noun})" if data.energy
             else f"{names}: throughput ({noun}; energy not measured)")
    ax.set_title(_wrap(title, 90), fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=7, frameon=False,
              title="hardware", title_fontsize=8)


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
        found.append(Trace(case, str(row.hardware), [float(t) for t in seconds], [float(w) for w in watts]))
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
        ax.plot(trace.seconds, trace.watts, linewidth=1.1, label=label,
                color=f"C{cases.index(trace.case) % 10}",
                linestyle=_LINESTYLES[machines.index(trace.hardware) % len(_LINESTYLES)])
    ax.set_xlabel("seconds into the timed window (s)")
    ax.set_ylabel("power (W)")
    ax.set_title("power over time", fontsize=10)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.grid(alpha=0.3)
    more = len(found) - MAX_TRACE_LEGEND
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=7, frameon=False,
              title=f"case · hardware ({MAX_TRACE_LEGEND} of {len(found)} named)" if more > 0 else "case · hardware",
              title_fontsize=8)


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
    with a throughput, then power over time when some case has a measured trace. Empty when nothing is."""
    ok = df[(df["status"] == "ok") & df["throughput"].map(_positive)]
    ok = ok.assign(work_unit=ok["work_unit"].fillna("work"))
    colors = hardware_colors(ok["hardware"])
    found: list[Panel] = []
    for unit in _units(ok):
        data = bar_data(ok[ok["work_unit"] == unit], unit)
        found.append(Panel(bar_height_in(data), partial(draw_bars, data=data, colors=colors)))
    lines = traces(ok)
    if lines:
        found.append(Panel(power_height_in(lines), partial(draw_power, found=lines)))
    return found


def plot(df: pd.DataFrame) -> Figure:
    """The figure for the results in `df` (see module docstring), sized from its content:
    WIDTH_IN wide, as tall as its panels need. Raises UsageError when matplotlib is missing or no
    case succeeded with a throughput (a figure is never a set of empty axes)."""
    Figure, FigureCanvasAgg = _matplotlib()
    wanted = panels(df)
    if not wanted:
        raise UsageError("--plot: no case succeeded with a throughput in these results; nothing to draw")
    heights = [p.height_in for p in wanted]
    fig = Figure(figsize=(WIDTH_IN, sum(heights)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(wanted), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, panel in zip(axes, wanted, strict=True):
        panel.draw(ax)
    return fig


def check_path(path: str | Path) -> Path:
    """`path` as a Path when its suffix is one we write (.png, .svg, .pdf), else a UsageError."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--plot {str(path)!r}: the file name must end in {', '.join(SUFFIXES)} "
                         f"(got {path.suffix or 'no suffix'!r})")
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
