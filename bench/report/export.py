"""Exports of loaded results: csv, markdown (a CI job summary) and json, one row per case."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from bench.report.cells import efficiency, percent, source, value, watts
from bench.report.load import RECORD_COLUMNS
from bench.units import format_rate, format_seconds

FORMATS = ("csv", "markdown", "json")

EXPORT_COLUMNS = [
    "hostname",
    "device",
    "device_name",
    "ranks",
    "workload",
    "params",
    "op_label",
    "status",
    "work_unit",
    "throughput",
    "seconds_per_iter",
    "cv",
    "repeats",
    "iterations",
    "energy_j",
    "avg_watts",
    "peak_watts",
    "energy_source",
    "energy_estimate",
    "energy_boundary",
    "node_energy_j",
    "node_avg_watts",
    "node_energy_source",
    "node_idle_gpus",
    "dynamic_energy_j",
    "efficiency",
    "peak_memory_bytes",
    "max_rel_error",
    "flags",
    "error",
    "run_id",
    "file",
]
# A figure the record declares as a column (bench.record.case_columns) is exported too.
EXPORT_COLUMNS += [c for c in RECORD_COLUMNS if c not in EXPORT_COLUMNS]


def _export_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df[EXPORT_COLUMNS]


def to_csv(df: pd.DataFrame) -> str:
    return _export_frame(df).to_csv(index=False)


def to_json(df: pd.DataFrame) -> str:
    frame = _export_frame(df).astype(object).where(_export_frame(df).notna(), None)
    return json.dumps(frame.to_dict(orient="records"), indent=1) + "\n"


def md_cell(v: Any) -> str:
    v = value(v)
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (fits a CI job summary), throughput in human units."""
    header = [
        "Host",
        "Device",
        "Workload",
        "Params",
        "Throughput",
        "Time/iter",
        "CV",
        "Power",
        "Per watt",
        "Energy source",
        "Status",
        "Flags / error",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in df.itertuples(index=False):
        cells = [
            row.hostname,
            row.device_name,
            row.workload,
            row.params,
            format_rate(value(row.throughput), row.work_unit) if row.status == "ok" else "-",
            format_seconds(value(row.seconds_per_iter)),
            percent(row.cv),
            watts(row),
            efficiency(row),
            source(row),
            row.status,
            (row.error if row.status != "ok" else row.flags) or "",
        ]
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def export(df: pd.DataFrame, fmt: str) -> str:
    """csv, markdown or json text of the cases in `df`."""
    return {"csv": to_csv, "markdown": to_markdown, "json": to_json}[fmt](df)
