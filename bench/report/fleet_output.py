"""The fleet report (bench/report/fleet.py) as text: a table for the terminal, markdown, CSV (one
row per finding) and JSON, and `--plot`'s figure of each case's spread with the outliers marked.
Formatting only: what is an outlier is fleet.py's."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.report.fleet import MEASURES, FleetReport
from bench.units import format_energy_per_work, format_rate

__all__ = ["energy_per_work_text", "fleet_csv", "fleet_json", "fleet_markdown", "plot_fleet", "rate_text", "render_fleet"]

TITLES = {"versions": "Nodes left out: other versions", "node": "Nodes", "gpu": "GPUs", "health": "Health"}


def headline(report: FleetReport) -> str:
    outliers = report.outliers
    verdict = f"{len(outliers)} finding(s)" if outliers else "no outliers"
    return (
        f"fleet: {report.gpus:,} GPUs on {report.nodes:,} nodes, {report.cases:,} case(s); {verdict}. "
        f"An outlier is {report.rule.describe()}."
    )


def rate_text(value: Any, unit: Any) -> str:
    """A median rate with its unit ("2.1 TFLOP/s"); "-" where unknown."""
    return format_rate(float(value), str(unit)) if isinstance(value, int | float) and math.isfinite(value) else "-"


def energy_per_work_text(joules_per_unit: Any, unit: Any) -> str:
    """Joules per unit of work ("3.1 pJ/FLOP"); "-" where unknown."""
    if not isinstance(joules_per_unit, int | float) or not math.isfinite(joules_per_unit) or joules_per_unit <= 0:
        return "-"
    return format_energy_per_work(1.0 / joules_per_unit, str(unit))


def summary_rows(report: FleetReport) -> list[list[str]]:
    rows = []
    for _, row in report.summary.iterrows():
        rows.append(
            [
                str(row["device_name"]),
                f"{row['workload']} {row['params']}",
                str(row["op_label"] or ""),
                f"{int(row['gpus']):,}",
                rate_text(row["throughput"], row["work_unit"]),
                f"{rate_text(row['p05'], row['work_unit'])} - {rate_text(row['p95'], row['work_unit'])}",
                energy_per_work_text(row["energy_per_unit"], row["work_unit"]),
                f"{row['avg_watts']:.0f} W" if isinstance(row["avg_watts"], float) and math.isfinite(row["avg_watts"]) else "-",
                f"{int(row['outliers'])}",
                str(row.get("energy_from") or "-"),
            ]
        )
    return rows


SUMMARY_HEADER = [
    "Model",
    "Case",
    "Operating point",
    "GPUs",
    "Median",
    "5th - 95th percentile",
    "Energy/work",
    "Power",
    "Outlier GPUs",
    "Energy from",
]


def render_fleet(report: FleetReport, out: Console) -> None:
    """The findings, a section per kind, then a table per case of the fleet's spread."""
    out.print(headline(report), markup=False, highlight=False, soft_wrap=True)
    for kind, title in TITLES.items():
        found = [f for f in report.findings if f.kind == kind]
        if found:
            out.print(f"\n{title}", style="bold", markup=False, highlight=False)
            for finding in found:
                out.print(f"  {finding.sentence}", markup=False, highlight=False, soft_wrap=True)
    if report.summary.empty:
        return
    table = Table(title="Each case across the fleet (siblings: the same model, case and operating point)", title_justify="left")
    for column in SUMMARY_HEADER:
        table.add_column(column, overflow="fold")
    for row in summary_rows(report):
        table.add_row(*row)
    out.print()
    out.print(table)


def fleet_markdown(report: FleetReport) -> str:
    lines = [headline(report), ""]
    for kind, title in TITLES.items():
        found = [f for f in report.findings if f.kind == kind]
        if found:
            lines += [f"### {title}", "", *(f"- {f.sentence}" for f in found), ""]
    if not report.summary.empty:
        lines += ["| " + " | ".join(SUMMARY_HEADER) + " |", "|" + "---|" * len(SUMMARY_HEADER)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in summary_rows(report)]
    return "\n".join(lines) + "\n"


def fleet_csv(report: FleetReport) -> str:
    """One row per finding: kind, host, slot, UUID, serial, the sentence and its figures."""
    buffer = io.StringIO()
    measures = [m.column for m in MEASURES]
    writer = csv.writer(buffer)
    writer.writerow(["kind", "host", "slot", "uuid", "serial", *measures, "sentence"])
    for f in report.findings:
        writer.writerow(
            [
                f.kind,
                f.host,
                "" if f.slot is None else f.slot,
                f.uuid or "",
                f.serial or "",
                *(f.details.get(m, "") for m in measures),
                f.sentence,
            ]
        )
    return buffer.getvalue()


def fleet_json(report: FleetReport) -> dict[str, Any]:
    summary = report.summary.to_dict(orient="records") if not report.summary.empty else []
    return {
        "rule": {"threshold": report.rule.threshold, "min_z": report.rule.min_z, "text": report.rule.describe()},
        "gpus": report.gpus,
        "nodes": report.nodes,
        "cases": report.cases,
        "findings": [f.to_dict() for f in report.findings],
        "summary": [
            {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()} for row in summary
        ],
    }


MAX_PANELS = 12


def plot_fleet(report: FleetReport, frame: pd.DataFrame, path: Path) -> int:
    """Each case's throughput across the fleet (one dot per GPU, relative to the median), the
    GPUs named in the report marked; the cases with findings first, MAX_PANELS at most.
    Returns the number of panels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = {f"{f.host}/{f.slot}" for f in report.findings if f.kind in ("gpu", "health")}
    nodes = {f.host for f in report.findings if f.kind == "node"}
    ok = frame[(frame["status"] == "ok") & frame["throughput"].notna()]
    where = ok["host"].astype(str) + "/" + ok["slot"].astype("Int64").astype(str)
    hit_all = where.isin(named) | ok["host"].astype(str).isin(nodes)  # once, vectorised: a million rows
    groups = [
        (key, rows, hit_all.loc[rows.index])
        for key, rows in ok.groupby(["device_name", "case_key", "op_label"], observed=True, sort=True)
    ]
    groups.sort(key=lambda g: -int(g[2].sum()))
    groups = groups[:MAX_PANELS]
    if not groups:
        return 0
    columns = min(3, len(groups))
    rows = math.ceil(len(groups) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows), squeeze=False)
    for axis, (_, rows_of_case, hits) in zip(axes.flat, groups, strict=False):
        relative = rows_of_case["throughput"] / rows_of_case["throughput"].median()
        hit = hits.to_numpy(dtype=bool)
        axis.scatter(range(int((~hit).sum())), relative[~hit], s=4, color="tab:blue", label="GPU")
        axis.scatter(range(int(hit.sum())), relative[hit], s=14, color="tab:red", label="named")
        first = rows_of_case.iloc[0]
        axis.set_title(f"{first['workload']} {first['params']}"[:60], fontsize=8)
        axis.set_ylabel("throughput / median", fontsize=8)
        axis.axhline(1 - report.rule.threshold, color="grey", linestyle="--", linewidth=0.8)
    for axis in list(axes.flat)[len(groups) :]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(headline(report), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return len(groups)
