"""Turn loaded results (a DataFrame from `bench.results.load`) into tables and exports.

Only formats: it never measures and never reads anything but the DataFrame it is given.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any, Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.units import format_efficiency, format_rate, format_seconds

FORMATS = ("table", "csv", "markdown", "json")
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


def _source(row: Any) -> str:
    source = _value(row.energy_source)
    if source is None:
        return "-"
    return f"{source} (estimate)" if _value(row.energy_estimate) else source


def run_table(run: pd.DataFrame) -> Table:
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
            _source(row),
            status,
        )
    return table


def render(df: pd.DataFrame, console: Console) -> None:
    """Print a table per run file, in the order the files were given."""
    if df.empty:
        console.print("no cases in these result files")
        return
    for _, run in df.groupby("file", sort=False):
        console.print(run_table(run))


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


def render_to_text(df: pd.DataFrame, width: int = 160) -> str:
    """The table report as plain text (no colour); used by tests and by non-terminal output."""
    buffer = io.StringIO()
    render(df, Console(file=buffer, width=width, color_system=None))
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
