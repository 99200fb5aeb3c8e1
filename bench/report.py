"""Turn loaded results (a DataFrame from `bench.results.load`) into tables and exports.

Only formats: it never measures and never reads anything but the DataFrame it is given.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.carbon import GridIntensity, grams_co2e
from bench.units import format_efficiency, format_energy_per_work, format_rate, format_seconds

FORMATS = ("table", "csv", "markdown", "json")
METRICS = ("throughput", "efficiency", "energy")
SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 12
CARBON_SCALE = {"FLOP": (1e15, "PFLOP"), "byte": (1e12, "TB")}


@dataclass(frozen=True)
class ReportOptions:
    """What the table report shows beyond the measured columns."""

    metric: str = "throughput"
    baseline: str | None = None  # hardware label (or a unique part of it) to show ratios against
    grid: GridIntensity | None = None


def sparkline(watts: Any, width: int = SPARK_WIDTH) -> str:
    """Power over time in `width` block characters, scaled from the trace's min to its max."""
    if not isinstance(watts, list) or len(watts) < 2:
        return ""
    step = len(watts) / width
    points = [watts[int(i * step)] for i in range(width)] if len(watts) > width else watts
    low, high = min(points), max(points)
    if high - low < 1e-9:
        return SPARK[len(SPARK) // 2] * len(points)
    return "".join(SPARK[min(len(SPARK) - 1, int((w - low) / (high - low) * len(SPARK)))] for w in points)


def carbon_per_work(efficiency: Any, unit: str, grid: GridIntensity) -> str:
    """gCO2e per PFLOP or per TB moved, from work per joule and the grid's intensity."""
    value = _value(efficiency)
    if value is None or value <= 0 or unit not in CARBON_SCALE:
        return "-"
    scale, label = CARBON_SCALE[unit]
    return f"{grams_co2e(scale / value, grid):.3g} g/{label}"
EXPORT_COLUMNS = [
    "hostname", "device", "device_name", "workload", "params", "status", "work_unit", "throughput",
    "seconds_per_iter", "cv", "repeats", "iterations", "energy_j", "avg_watts", "peak_watts", "energy_source",
    "energy_estimate", "dynamic_energy_j", "efficiency", "peak_memory_bytes", "max_rel_error", "flags", "error", "run_id", "file",
]
_STATUS_STYLE = {"ok": "green", "failed": "bold red", "oom": "red", "skipped": "yellow", "interrupted": "magenta"}


def _value(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _percent(v: Any) -> str:
    v = _value(v)
    return "-" if v is None else f"{100 * v:.1f}%"


def _watts(row: Any) -> str:
    """Average watts; '~' marks an estimate from a nominal wattage."""
    watts = _value(row.avg_watts)
    if watts is None:
        return "-"
    return f"{'~' if _value(row.energy_estimate) else ''}{watts:.1f} W"


def _efficiency(row: Any) -> str:
    value = _value(row.efficiency)
    if value is None:
        return "-"
    return f"{'~' if _value(row.energy_estimate) else ''}{format_efficiency(value, row.work_unit)}"


def _energy_per_work(row: Any) -> str:
    text = format_energy_per_work(_value(row.efficiency), row.work_unit)
    return f"~{text}" if text != "-" and _value(row.energy_estimate) else text


def _source(row: Any) -> str:
    source = _value(row.energy_source)
    if source is None:
        return "-"
    return f"{source} (estimate)" if _value(row.energy_estimate) else source


def run_table(run: pd.DataFrame, options: ReportOptions = ReportOptions()) -> Table:
    """One rich table for the cases of one run file."""
    first = run.iloc[0]
    devices = ", ".join(dict.fromkeys(run["device_name"]))
    one_device = run["device"].nunique() == 1
    if one_device:
        devices = f"{first['device']} {devices}"
    table = Table(
        title=f"{first['hostname']} | {devices} | {first['started_at']} | {first['run_status']}",
        caption=str(first["file"]),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("Workload", no_wrap=True)
    table.add_column("Params", overflow="fold")
    if not one_device:
        table.add_column("Device")
    table.add_column("Throughput", justify="right")
    table.add_column("Time/iter", justify="right")
    table.add_column("CV", justify="right")
    table.add_column("Power", justify="right")
    table.add_column("Per watt", justify="right")
    table.add_column("Energy/work", justify="right")
    if options.grid is not None:
        table.add_column("Carbon", justify="right")
    table.add_column("Power over time")
    table.add_column("Energy source")
    table.add_column("Status / flags", overflow="fold")
    for row in run.itertuples(index=False):
        note = _value(row.error) if row.status != "ok" else _value(row.flags)
        status = Text(row.status, style=_STATUS_STYLE.get(row.status, ""))
        if note:
            status.append(f": {note}")
        device = [] if one_device else [row.device]
        table.add_row(
            row.workload,
            row.params,
            *device,
            format_rate(_value(row.throughput), row.work_unit) if row.status == "ok" else "-",
            format_seconds(_value(row.seconds_per_iter)),
            _percent(row.cv),
            _watts(row),
            _efficiency(row),
            _energy_per_work(row),
            *([carbon_per_work(row.efficiency, row.work_unit, options.grid)] if options.grid is not None else []),
            sparkline(row.power_trace_w),
            _source(row),
            status,
        )
    return table


def render(df: pd.DataFrame, console: Console, options: ReportOptions = ReportOptions()) -> None:
    """Print a table per run file, in the order the files were given; with results from more
    than one hardware, a comparison table with the hardware side by side instead."""
    if df.empty:
        console.print("no cases in these result files")
        return
    if df["hardware"].nunique() > 1 or options.baseline is not None:
        console.print(hardware_table(df, options))
        if options.grid is not None:
            console.print(f"carbon at {options.grid.name}: {options.grid.g_per_kwh:g} gCO2e/kWh ({options.grid.source})")
        return
    for _, run in df.groupby("file", sort=False):
        console.print(run_table(run, options))
    if options.grid is not None:
        console.print(f"carbon at {options.grid.name}: {options.grid.g_per_kwh:g} gCO2e/kWh ({options.grid.source})")


def _metric_values(group: pd.DataFrame, metric: str) -> float | None:
    column = {"throughput": "throughput", "efficiency": "efficiency", "energy": "efficiency"}[metric]
    values = group[column].dropna()
    if values.empty:
        return None
    median = float(values.median())
    return 1.0 / median if metric == "energy" else median  # energy: joules per unit of work


def resolve_hardware(df: pd.DataFrame, wanted: str) -> str:
    """The one hardware label that equals or contains `wanted` (case-insensitive)."""
    labels = list(dict.fromkeys(df["hardware"]))
    exact = [h for h in labels if h.lower() == wanted.lower()]
    found = exact or [h for h in labels if wanted.lower() in h.lower()]
    if len(found) != 1:
        from bench.errors import UsageError

        why = "matches several" if found else "matches none"
        raise UsageError(f"--baseline {wanted!r} {why} of the hardware in these results: {'; '.join(labels)}")
    return found[0]


def hardware_table(df: pd.DataFrame, options: ReportOptions) -> Table:
    """Cases as rows, hardware as columns; each cell throughput, watts and throughput per watt
    (medians over runs), the best per row by `options.metric` marked with *. With a baseline,
    cells are ratios of the metric to the baseline hardware's."""
    ok = df[df["status"] == "ok"]
    hardware = list(dict.fromkeys(df["hardware"]))
    baseline = resolve_hardware(df, options.baseline) if options.baseline else None
    title = f"{options.metric} by hardware" + (f", relative to {baseline}" if baseline else "") + " (* best)"
    table = Table(title=title, title_justify="left", show_lines=True)
    table.add_column("Workload", no_wrap=True)
    table.add_column("Params", overflow="fold")
    for h in hardware:
        table.add_column(h, justify="right", overflow="fold")
    lower_is_better = options.metric == "energy"
    for (workload, params), group in ok.groupby(["workload", "params"], sort=False):
        unit = group["work_unit"].iloc[0]
        per_hw = {h: g for h, g in group.groupby("hardware", sort=False)}
        scores = {h: _metric_values(g, options.metric) for h, g in per_hw.items()}
        valid = {h: v for h, v in scores.items() if v is not None}
        best = (min if lower_is_better else max)(valid, key=valid.get) if valid else None
        base_value = scores.get(baseline) if baseline else None
        cells = []
        for h in hardware:
            g = per_hw.get(h)
            if g is None:
                cells.append("-")
                continue
            if baseline:
                score = scores.get(h)
                text = f"{score / base_value:.2f}x" if score is not None and base_value else "-"
            else:
                thr = float(g["throughput"].median())
                watts = g["avg_watts"].dropna()
                eff = g["efficiency"].dropna()
                estimate = bool(g["energy_estimate"].fillna(False).any())
                mark = "~" if estimate else ""
                lines = [format_rate(thr, unit)]
                if not watts.empty:
                    lines.append(f"{mark}{float(watts.median()):.0f} W")
                if not eff.empty:
                    lines.append(f"{mark}{format_efficiency(float(eff.median()), unit)}")
                    if options.grid is not None:
                        lines.append(carbon_per_work(float(eff.median()), unit, options.grid))
                text = "\n".join(lines)
            cells.append(Text(("* " if h == best and len(valid) > 1 else "") + text, style="bold" if h == best else ""))
        table.add_row(workload, params, *cells)
    return table


def _export_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df[EXPORT_COLUMNS]


def to_csv(df: pd.DataFrame) -> str:
    return _export_frame(df).to_csv(index=False)


def to_json(df: pd.DataFrame) -> str:
    frame = _export_frame(df).astype(object).where(_export_frame(df).notna(), None)
    return json.dumps(frame.to_dict(orient="records"), indent=1) + "\n"


def _md_cell(v: Any) -> str:
    v = _value(v)
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (fits a CI job summary), throughput in human units."""
    header = ["Host", "Device", "Workload", "Params", "Throughput", "Time/iter", "CV", "Power", "Per watt",
              "Energy source", "Status", "Flags / error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in df.itertuples(index=False):
        cells = [
            row.hostname,
            row.device_name,
            row.workload,
            row.params,
            format_rate(_value(row.throughput), row.work_unit) if row.status == "ok" else "-",
            format_seconds(_value(row.seconds_per_iter)),
            _percent(row.cv),
            _watts(row),
            _efficiency(row),
            _source(row),
            row.status,
            (row.error if row.status != "ok" else row.flags) or "",
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def export(df: pd.DataFrame, fmt: str) -> str:
    """csv, markdown or json text of the cases in `df`."""
    return {"csv": to_csv, "markdown": to_markdown, "json": to_json}[fmt](df)


def render_to_text(df: pd.DataFrame, width: int = 160, options: ReportOptions = ReportOptions()) -> str:
    """The table report as plain text (no colour); used by tests and by non-terminal output."""
    buffer = io.StringIO()
    render(df, Console(file=buffer, width=width, color_system=None), options)
    return buffer.getvalue()


_VERDICT_STYLE = {"slower": "bold red", "failed": "bold red", "faster": "green", "unchanged": "", "inconclusive": "yellow", "missing": "magenta"}


def _metric_value(value: float | None, unit: str | None, metric: str) -> str:
    if value is None or unit is None:
        return "-"
    return format_efficiency(value, unit) if metric == "efficiency" else format_rate(value, unit)


def _comparison_cells(c: Any, metric: str) -> list[str]:
    return [
        c.workload,
        c.params,
        _metric_value(c.baseline, c.unit, metric),
        _metric_value(c.current, c.unit, metric),
        f"{c.ratio:.3f}" if c.ratio is not None else "-",
        f"{c.low:.3f} - {c.high:.3f}" if c.low is not None else "-",
        c.verdict,
        c.note,
    ]


COMPARISON_HEADER = ["Workload", "Params", "Baseline", "Current", "Ratio", "95% interval", "Verdict", "Note"]


def comparison_table(comparisons: Sequence[Any], metric: str, title: str) -> Table:
    """The gate's verdicts: ratio of medians current/baseline with its bootstrap interval."""
    table = Table(title=title, title_justify="left")
    for name in COMPARISON_HEADER:
        table.add_column(name, no_wrap=name == "Workload", overflow="fold",
                         justify="right" if name in ("Baseline", "Current", "Ratio") else "left")
    for c in comparisons:
        cells = _comparison_cells(c, metric)
        cells[6] = Text(c.verdict, style=_VERDICT_STYLE.get(c.verdict, ""))
        table.add_row(*cells)
    return table


def comparison_markdown(comparisons: Sequence[Any], metric: str) -> str:
    lines = ["| " + " | ".join(COMPARISON_HEADER) + " |", "|" + "---|" * len(COMPARISON_HEADER)]
    for c in comparisons:
        cells = _comparison_cells(c, metric)
        if c.verdict in ("slower", "failed"):
            cells[6] = f"**{c.verdict}**"
        lines.append("| " + " | ".join(_md_cell(x) for x in cells) + " |")
    return "\n".join(lines) + "\n"
