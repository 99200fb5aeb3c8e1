"""Turn loaded results (a DataFrame from `bench.results.load`) into tables and exports.

Only formats: it never measures and never reads anything but the DataFrame it is given.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.report.carbon import GridIntensity, grams_co2e
from bench.report.peaks import percent_of_peak
from bench.units import format_efficiency, format_energy_per_work, format_joules, format_rate, format_seconds

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


def _estimated(row: Any, text: str) -> str:
    """'~' in front of a figure that rests on a nominal wattage (an estimate)."""
    return f"~{text}" if text != "-" and _value(row.energy_estimate) else text


def _watts(row: Any) -> str:
    """Average watts of the case's window."""
    watts = _value(row.avg_watts)
    return _estimated(row, "-" if watts is None else f"{watts:.1f} W")


def _joules(row: Any) -> str:
    """Energy of the case's timed window."""
    return _estimated(row, format_joules(_value(row.energy_j)))


def _efficiency(row: Any) -> str:
    value = _value(row.efficiency)
    return _estimated(row, "-" if value is None else format_efficiency(value, row.work_unit))


def _percent_of_peak(row: Any) -> str:
    """Share of the vendor's datasheet peak for known hardware; '-' where unknown (never a guess)."""
    params = row.params_dict if isinstance(getattr(row, "params_dict", None), dict) else {}
    value = percent_of_peak(row.device_name, row.workload, _value(row.dtype), _value(row.throughput) or 0.0,
                            row.work_unit, op=params.get("op"))
    return "-" if value is None else f"{value:.1f}%"


def _energy_per_work(row: Any) -> str:
    return _estimated(row, format_energy_per_work(_value(row.efficiency), row.work_unit))


def _source(row: Any) -> str:
    source = _value(row.energy_source)
    if source is None:
        return "-"
    return f"{source} (estimate)" if _value(row.energy_estimate) else source


FOLD_AT = {"Params": 48, "Status / flags": 60}
OPTIONAL_COLUMNS = {"% peak", "Power", "Energy", "Per watt", "Energy/work", "Carbon", "Power over time", "Energy source"}
LARGE_TABLE_CELLS = 20_000  # past this, tables print as plain aligned text: rich costs ~30 us a cell


def plain_table(title: str, headers: list[str], rows: list[list[str]], caption: str | None = None) -> Text:
    """The same table as aligned plain text (multi-line cells joined with ' / '), for
    results too large for rich's per-cell layout to stay fast."""
    flat = [[cell.replace("\n", " / ") for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in flat)) if flat else len(h) for i, h in enumerate(headers)]
    rule = "-+-".join("-" * w for w in widths)
    lines = [title, " | ".join(h.ljust(w) for h, w in zip(headers, widths)), rule]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in flat]
    if caption:
        lines.append(caption)
    return Text("\n".join(lines), no_wrap=True, overflow="ignore")


def run_table(run: pd.DataFrame, options: ReportOptions = ReportOptions()) -> Table | Text:
    """One rich table for the cases of one run file.

    Column widths are computed here from the cell strings (long params and flags fold at
    FOLD_AT), which spares rich measuring every cell: 10,000 rows render in about a second.
    """
    first = run.iloc[0]
    devices = ", ".join(dict.fromkeys(run["device_name"]))
    one_device = run["device"].nunique() == 1
    if one_device:
        devices = f"{first['device']} {devices}"
    columns = ["Workload", "Params", *([] if one_device else ["Device"]), "Throughput", "Time/iter", "CV", "% peak",
               "Power", "Energy", "Per watt", "Energy/work", *(["Carbon"] if options.grid is not None else []),
               "Power over time", "Energy source", "Status / flags"]
    rows: list[list[str]] = []
    statuses: list[str] = []
    for row in run.itertuples(index=False):
        note = _value(row.error) if row.status != "ok" else _value(row.flags)
        ok = row.status == "ok"
        rows.append([
            row.workload,
            row.params,
            *([] if one_device else [row.device]),
            format_rate(_value(row.throughput), row.work_unit) if ok else "-",
            format_seconds(_value(row.seconds_per_iter)),
            _percent(row.cv),
            _percent_of_peak(row) if ok else "-",
            _watts(row),
            _joules(row),
            _efficiency(row),
            _energy_per_work(row),
            *([carbon_per_work(row.efficiency, row.work_unit, options.grid)] if options.grid is not None else []),
            sparkline(row.power_trace_w),
            _source(row),
            f"{row.status}: {note}" if note else row.status,
        ])
        statuses.append(row.status)
    # Columns with nothing to say in this run (no energy, no known peak) are left out.
    keep = [i for i, name in enumerate(columns) if name not in OPTIONAL_COLUMNS or any(r[i] not in ("-", "") for r in rows)]
    columns = [columns[i] for i in keep]
    rows = [[r[i] for i in keep] for r in rows]
    title = f"{first['hostname']} | {devices} | {first['started_at']} | {first['run_status']}"
    if len(rows) * len(columns) > LARGE_TABLE_CELLS:
        return plain_table(title, columns, rows, caption=str(first["file"]))
    table = Table(
        title=title,
        caption=str(first["file"]),
        title_justify="left",
        caption_justify="left",
    )
    for i, name in enumerate(columns):
        width = max(len(name), *(len(r[i]) for r in rows))
        fold = FOLD_AT.get(name)
        table.add_column(name, width=min(width, fold) if fold else width, overflow="fold" if fold else "ellipsis",
                         no_wrap=fold is None, justify="left" if i < 2 or fold or name == "Energy source" else "right")
    for cells, status in zip(rows, statuses):
        table.add_row(*cells[:-1], Text(cells[-1], style=_STATUS_STYLE.get(status, "")))
    return table


def render(df: pd.DataFrame, console: Console, options: ReportOptions = ReportOptions()) -> None:
    """One run file: its table, every case in detail. Several runs (or --baseline): the cases
    matched across runs and grouped by hardware, side by side (medians over runs)."""
    if df.empty:
        console.print("no cases in these result files")
        return
    table = hardware_table(df, options) if df["file"].nunique() > 1 or options.baseline is not None else run_table(df, options)
    # A plain-text table prints unwrapped and uncropped: every column stays (pipe it to a
    # file or `less -S`), and rich skips its per-line wrapping, 8x faster at 10,000 rows.
    console.print(table, soft_wrap=isinstance(table, Text))
    if options.grid is not None:
        console.print(f"carbon at {options.grid.name}: {options.grid.g_per_kwh:g} gCO2e/kWh ({options.grid.source})")


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


def hardware_table(df: pd.DataFrame, options: ReportOptions) -> Table | Text:
    """Cases as rows, hardware as columns; each cell the median throughput, watts and
    throughput per watt over that hardware's runs (and % of datasheet peak where known), the
    best per row by `options.metric` marked with *. With a baseline, cells are ratios of the
    metric to the baseline hardware's."""
    ok = df[df["status"] == "ok"]
    hardware = list(dict.fromkeys(df["hardware"]))
    baseline = resolve_hardware(df, options.baseline) if options.baseline else None
    runs = df["file"].nunique()
    title = (f"{options.metric} by hardware, {runs} run(s)" + (f", relative to {baseline}" if baseline else "")
             + " (* best; medians over runs)")
    table = Table(title=title, title_justify="left")
    table.add_column("Workload", no_wrap=True)
    table.add_column("Params", overflow="fold", max_width=60)
    for h in hardware:
        table.add_column(h, justify="right", overflow="fold")
    # One pass over the rows into plain dicts: a pandas group per case is too slow at 10,000 cases.
    cells: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in ok.itertuples(index=False):
        by_hw = cells.setdefault((row.workload, row.params), {})
        cell = by_hw.get(row.hardware)
        if cell is None:
            params = row.params_dict if isinstance(row.params_dict, dict) else {}
            cell = by_hw[row.hardware] = {"throughput": [], "watts": [], "efficiency": [], "estimate": False,
                                          "unit": row.work_unit, "device_name": row.device_name,
                                          "dtype": _value(row.dtype), "op": params.get("op"), "runs": set()}
        cell["throughput"].append(row.throughput)
        for key, value in (("watts", row.avg_watts), ("efficiency", row.efficiency)):
            if _value(value) is not None:
                cell[key].append(value)
        cell["estimate"] |= bool(_value(row.energy_estimate))
        cell["runs"].add(row.file)
    lower_is_better = options.metric == "energy"
    body: list[tuple[list[str], str | None]] = []
    for (workload, params), by_hw in cells.items():
        summary = {}
        for h, cell in by_hw.items():
            eff = statistics.median(cell["efficiency"]) if cell["efficiency"] else None
            summary[h] = {
                "throughput": statistics.median(cell["throughput"]),
                "watts": statistics.median(cell["watts"]) if cell["watts"] else None,
                "efficiency": eff,
            }
            summary[h]["score"] = {"throughput": summary[h]["throughput"], "efficiency": eff,
                                   "energy": 1.0 / eff if eff else None}[options.metric]
        scores = {h: v["score"] for h, v in summary.items() if v["score"] is not None}
        best = ((min if lower_is_better else max)(scores, key=scores.get)) if len(scores) > 1 else None
        base = scores.get(baseline) if baseline else None
        row_cells: list[str] = [workload, params]
        for h in hardware:
            if h not in by_hw:
                row_cells.append("-")
                continue
            cell, value = by_hw[h], summary[h]
            if baseline:
                text = f"{value['score'] / base:.2f}x" if base and value["score"] is not None else "-"
            else:
                mark = "~" if cell["estimate"] else ""
                first = format_rate(value["throughput"], cell["unit"])
                peak = percent_of_peak(cell["device_name"], workload, cell["dtype"], value["throughput"], cell["unit"],
                                       op=cell["op"])
                lines = [first + (f" ({peak:.0f}% of peak)" if peak is not None else "")]
                if value["watts"] is not None:
                    lines.append(f"{mark}{value['watts']:.0f} W")
                if value["efficiency"] is not None:
                    lines.append(f"{mark}{format_efficiency(value['efficiency'], cell['unit'])}")
                    if options.grid is not None:
                        lines.append(carbon_per_work(value["efficiency"], cell["unit"], options.grid))
                if runs > 1:
                    lines.append(f"{len(cell['runs'])} run(s)")
                text = "\n".join(lines)
            row_cells.append(("* " if h == best else "") + text)
        body.append((row_cells, best))
    headers = ["Workload", "Params", *hardware]
    if len(body) * len(headers) > LARGE_TABLE_CELLS:
        return plain_table(title, headers, [cells for cells, _ in body])
    for row_cells, best in body:
        styled = [Text(c, style="bold" if h == best else "") for c, h in zip(row_cells[2:], hardware)]
        table.add_row(*row_cells[:2], *styled)
    return table
    agg = ok.groupby(["workload", "params", "hardware"], sort=False).agg(
        throughput=("throughput", "median"),
        watts=("avg_watts", "median"),
        efficiency=("efficiency", "median"),
        estimate=("energy_estimate", lambda x: bool(x.fillna(False).any())),
        unit=("work_unit", "first"),
        device_name=("device_name", "first"),
        dtype=("dtype", "first"),
        op=("params_dict", lambda x: x.iloc[0].get("op") if isinstance(x.iloc[0], dict) else None),
        runs=("file", "nunique"),
    )
    if options.metric == "throughput":
        agg["score"] = agg["throughput"]
    elif options.metric == "efficiency":
        agg["score"] = agg["efficiency"]
    else:  # energy per unit of work: lower is better
        agg["score"] = 1.0 / agg["efficiency"]
    lower_is_better = options.metric == "energy"
    for (workload, params), group in agg.groupby(level=[0, 1], sort=False):
        cells_by_hw = group.droplevel([0, 1])
        scores = cells_by_hw["score"].dropna()
        best = (scores.idxmin() if lower_is_better else scores.idxmax()) if len(scores) > 1 else None
        base = scores.get(baseline) if baseline else None
        cells = []
        for h in hardware:
            if h not in cells_by_hw.index:
                cells.append("-")
                continue
            c = cells_by_hw.loc[h]
            if baseline:
                text = f"{c.score / base:.2f}x" if base and not pd.isna(c.score) else "-"
            else:
                mark = "~" if c.estimate else ""
                lines = [format_rate(c.throughput, c.unit)]
                peak = percent_of_peak(c.device_name, workload, _value(c.dtype), c.throughput, c.unit, op=c.op)
                if peak is not None:
                    lines[0] += f" ({peak:.0f}% of peak)"
                if not pd.isna(c.watts):
                    lines.append(f"{mark}{c.watts:.0f} W")
                if not pd.isna(c.efficiency):
                    lines.append(f"{mark}{format_efficiency(c.efficiency, c.unit)}")
                    if options.grid is not None:
                        lines.append(carbon_per_work(c.efficiency, c.unit, options.grid))
                if runs > 1:
                    lines.append(f"{c.runs} run(s)")
                text = "\n".join(lines)
            cells.append(Text(("* " if h == best else "") + text, style="bold" if h == best else ""))
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
