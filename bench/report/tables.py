"""Tables of loaded results (a DataFrame from bench.report.load): one run in detail, many runs
side by side by hardware, and the gate's verdicts.

Only formats: it never measures and never reads anything but the DataFrame it is given.

Cases are grouped by workload (and device); the parameters a whole group shares are said once,
in the group's title, and each row shows only what differs (bench.params). Widths are decided
by bench.report.layout, so at any width of 100 columns or more no number or unit is cut and no
parameter is broken; columns that would not fit are left out, least useful first, and the
caption names them. Narrower than even that table needs, a table's rows print as stacked
"Column: value" lines wrapped at the width. Without a width (a pipe or a file) every row stays
on one line.

Collective cases read as nccl-tests prints them (Size, Op, time in us, algbw and busbw in GB/s),
so the figures people know from there are found in the same places. A multi-rank job's run table
shows the job's figures and says once how it ran; `per_rank` adds each rank's own.
"""

from __future__ import annotations

import io
import re
import statistics
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from bench.errors import UsageError
from bench.params import ParamSchema, format_compact, shared_params
from bench.report import cells
from bench.report.carbon import GridIntensity
from bench.report.frontier import AS_FOUND, NOMINAL_NOTE, Frontier, left_out_line, percent, sentence
from bench.report.layout import Column, fit, overflows, plain_lines, rich_table, stacked_lines, table_width, wrap_text
from bench.report.load import records
from bench.units import format_efficiency, format_energy_per_work, format_joules, format_rate, format_seconds

METRICS = ("throughput", "efficiency", "energy")
LARGE_TABLE_CELLS = 10_000  # past this, tables print as plain aligned text: rich costs ~30 us a cell
STATUS_STYLE = {"ok": "green", "failed": "bold red", "oom": "red", "skipped": "yellow", "interrupted": "magenta"}
VERDICT_STYLE = {
    "slower": "bold red",
    "failed": "bold red",
    "faster": "green",
    "unchanged": "",
    "inconclusive": "yellow",
    "missing": "magenta",
}
NO_POWER_HINT = "energy not measured: no power source here (`wattbench info` says why; `--nominal-watts W` gives an estimate)"
MIN_FLAG_WORD = 24  # a longer word in an error message may fold; numbers and parameters never do
NOTE_MIN_WORD = 16  # a comparison's note wraps to this; a longer word in it (an error message) may fold
NBSP = "\u00a0"
# A space between a number and its unit ("700 W"): a header never wraps there.
_NUMBER_UNIT_SPACE = re.compile(r"(?<=\d) (?=(?:[kMG]?W|[kMGT]i?B|[MG]Hz|V|%)(?![\w.]))")
HARDWARE_HEADER_WIDTH = 22
COLLECTIVE_COLUMNS = ("size", "op")  # a collective's parameters that have columns of their own in a run table
NOTHING_PER_RANK = "--per-rank: no multi-rank runs in these results, so nothing per rank"


@dataclass(frozen=True)
class ReportOptions:
    """What the table report shows beyond the measured columns."""

    metric: str = "throughput"
    baseline: str | None = None  # hardware label (or a unique part of it) to show ratios against
    grid: GridIntensity | None = None
    per_rank: bool = False  # after the job tables, each multi-rank run's figures per rank


# --- grouping ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """Rows of one workload on one device: the title says what they share."""

    title: str
    rows: list[Any]  # records of the DataFrame (bench.report.load.records)
    params: list[str]  # each row's differing parameters, compact


def _schema(row: Any) -> ParamSchema:
    schema = getattr(row, "param_schema", None)
    return schema if isinstance(schema, ParamSchema) else ParamSchema()


def groups(rows: Sequence[Any], with_device: bool, ran: bool = False, split: bool = False) -> Iterator[Group]:
    """Rows grouped by workload (and device), in order of first appearance. With `ran`, a
    parameter the case's details resolve shows what ran (backend=auto→flash: cells.shown_params).
    With `split`, a collective's size and op are left to their own columns (neither in the title
    nor in Params)."""
    by_key: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        by_key.setdefault((row.workload, row.device if with_device else ""), []).append(row)
    for (workload, device), members in by_key.items():
        schema = _schema(members[0])
        params = [cells.shown_params(r, ran) for r in members]
        if split and any(cells.is_collective(r) for r in members):
            params = [{k: v for k, v in p.items() if k not in COLLECTIVE_COLUMNS} for p in params]
        shared, differing = shared_params(params, schema)
        said = format_compact(params[0], schema, only=shared)
        title = " ".join(x for x in (workload, said, f"on {device}" if device else "") if x)
        yield Group(title, members, [format_compact(p, schema, only=differing) for p in params])


# --- one run ---------------------------------------------------------------------------------


def _status(row: Any) -> str:
    note = cells.value(row.error) if row.status != "ok" else ", ".join(cells.shown_flags(row.flags))
    return f"{row.status}: {note}" if note else row.status


ALWAYS_SHOWN = ("Throughput", "Algbw (GB/s)", "Status")  # kept even when every row is '-' (nothing ran ok)


def _figure_columns(group: Group) -> list[Column]:
    """The columns before the energy ones: parameters, throughput, time, spread, share of peak."""
    rows = group.rows
    ok = [r.status == "ok" for r in rows]
    return [
        Column("Params", group.params, justify="left", wrap=True),
        Column(
            "Throughput",
            [format_rate(cells.value(r.throughput), r.work_unit) if k else "-" for r, k in zip(rows, ok, strict=True)],
        ),
        Column("Time/iter", [format_seconds(cells.value(r.seconds_per_iter)) for r in rows], priority=40),
        Column("CV", [cells.percent(r.cv) for r in rows], priority=50),
        Column("% peak", [cells.peak_share(r) if k else "-" for r, k in zip(rows, ok, strict=True)], priority=45),
        Column("MFU", [cells.utilization(r, "FLOP") for r in rows], priority=46),
        Column("MBU", [cells.utilization(r, "byte") for r in rows], priority=46),
    ]


def _collective_columns(group: Group) -> list[Column]:
    """A collective's figures as nccl-tests prints them: total buffer size, op, time per
    iteration in us, algbw (the job's bytes per second) and busbw (algbw x the op's factor) in
    GB/s. The time is the slowest rank's; the bytes are the whole job's."""
    rows = group.rows
    ok = [r.status == "ok" for r in rows]
    params = [r.params_dict if isinstance(r.params_dict, dict) else {} for r in rows]
    return [
        Column("Size", [cells.collective_size(r) for r in rows]),
        Column("Op", [str(p.get("op", "-")) for p in params], justify="left"),
        Column("Params", group.params, justify="left", wrap=True),
        Column(
            "Time/iter (us)",
            [cells.microseconds(r.seconds_per_iter) if k else "-" for r, k in zip(rows, ok, strict=True)],
            priority=40,
        ),
        Column("Algbw (GB/s)", [cells.gb_per_s(r.throughput) if k else "-" for r, k in zip(rows, ok, strict=True)]),
        Column("Busbw (GB/s)", [cells.gb_per_s(cells.busbw(r)) if k else "-" for r, k in zip(rows, ok, strict=True)]),
        Column("CV", [cells.percent(r.cv) for r in rows], priority=50),
    ]


def _op_labels(rows: Sequence[Any]) -> list[str] | None:
    """Each row's operating point ("450 W", "1410 MHz"; "as found" where none), or None when no
    row has one (the table then shows no "Op point" column)."""
    labels = [str(cells.value(getattr(r, "op_label", None)) or "") for r in rows]
    return [label or AS_FOUND for label in labels] if any(labels) else None


def _with_op_column(columns: list[Column], rows: Sequence[Any]) -> list[Column]:
    """`columns` with an "Op point" column after Params when some row ran at an operating point."""
    labels = _op_labels(rows)
    if labels is None:
        return columns
    at = next((i + 1 for i, c in enumerate(columns) if c.name == "Params"), 0)
    return [*columns[:at], Column("Op point", labels, justify="left"), *columns[at:]]


def _run_columns(group: Group, options: ReportOptions, show_source: bool) -> list[Column]:
    rows = group.rows
    collective = any(cells.is_collective(r) for r in rows)
    columns = _with_op_column(_collective_columns(group) if collective else _figure_columns(group), rows)
    columns += [
        Column("Power", [cells.watts(r) for r in rows], priority=60),
        Column("Node power", [cells.node_watts(r) for r in rows], priority=58),
        Column("Energy", [cells.joules(r) for r in rows], priority=20),
        Column("Per watt", [cells.efficiency(r) for r in rows]),
        Column("Energy/work", [cells.energy_per_work(r) for r in rows], priority=30),
    ]
    if options.grid is not None:
        columns.append(
            Column("Carbon", [cells.carbon_per_work(r.efficiency, r.work_unit, options.grid) for r in rows], priority=55)
        )
    # A nominal wattage is a constant: its "trace" says nothing about the hardware.
    columns.append(
        Column(
            "Power over time",
            [cells.sparkline(r.power_trace_w) if not cells.value(r.energy_estimate) else "" for r in rows],
            justify="left",
            priority=10,
        )
    )
    if show_source:
        columns.append(Column("Energy source", [cells.source(r) for r in rows], justify="left", priority=15))
    columns.append(
        Column(
            "Status",
            [_status(r) for r in rows],
            justify="left",
            wrap=True,
            min_word=MIN_FLAG_WORD,
            styles=[STATUS_STYLE.get(r.status, "") for r in rows],
        )
    )
    return [c for c in columns if c.name in ALWAYS_SHOWN or c.has_data()]


def _energy_line(run: pd.DataFrame) -> str | None:
    """What measured energy in this run, said once: one source, or why there was none."""
    ok = run[run["status"] == "ok"]
    if ok.empty:
        return None
    sources = [s for s in dict.fromkeys(ok["energy_source"]) if cells.value(s) is not None]
    if not sources:
        return NO_POWER_HINT
    if len(sources) == 1:
        if ok["energy_estimate"].fillna(False).astype(bool).any():
            return f"energy: {sources[0]}, an estimate from a nominal wattage (figures marked ~)"
        return f"energy: {sources[0]}"
    return None  # several sources: a column says which row used which


def _fitted(columns: list[Column], width: int | None, title: str, caption: str | None, large: bool) -> RenderableType:
    """The table at `width`: rich's (or plain lines when `large`), optional columns left out
    and named in the caption; when even that is too wide, every row as stacked "Column: value"
    lines (a str, as plain lines are), never a table whose cells rich would cut."""
    kept, dropped = fit(columns, width)
    if width is not None and overflows(kept, width):  # a narrow terminal: rich would cut cells
        return stacked_lines(columns, width, title, caption)
    if dropped:
        note = f"left out at {width} columns: {', '.join(dropped)} (a wider terminal, or a pipe, shows them)"
        caption = f"{caption}\n{note}" if caption else note
    if large:
        return plain_lines(kept, title, caption, width)
    return rich_table(kept, title, caption)


def run_report(run: pd.DataFrame, options: ReportOptions = ReportOptions(), width: int | None = None) -> list[RenderableType]:
    """One run file: a header, then a table per workload (and device) with every case in detail."""
    first = run.iloc[0]
    devices = list(dict.fromkeys(run["device"]))
    names = ", ".join(dict.fromkeys(run["device_name"]))
    kind = devices[0] + " " if len(devices) == 1 else ""
    header = f"{first['hostname']} | {kind}{names} | {first['started_at']} | {first['run_status']}"
    job = _job_line(first)
    out: list[RenderableType] = [Text(f"{header} | {job}" if job else header, style="bold")]
    reason = cells.value(first.get("abort_reason"))
    if reason and first["run_status"] == "aborted":
        out.append(Text(f"aborted: {reason}", style="bold red"))
    energy = _energy_line(run)
    if energy:
        out.append(Text(energy))
    node = _node_line(run)
    if node:
        out.append(Text(node))
    show_source = energy is None and run["energy_source"].notna().any()
    large = len(run) * 10 > LARGE_TABLE_CELLS
    for group in groups(records(run), with_device=len(devices) > 1, ran=True, split=True):
        note = cells.CACHE_NOTE if any(cells.cache_served(r) for r in group.rows) else None
        out.append(_fitted(_run_columns(group, options, show_source), width, group.title, note, large))
    out.append(Text(str(first["file"]), style="dim"))
    return out


def _job_line(first: Any) -> str | None:
    """How a multi-rank job ran, said once: "2 ranks on 1 node (gloo)"; None for one process."""
    n = cells.ranks(first)
    if n <= 1:
        return None
    nodes = cells.count(first.get("nodes"))
    backend = cells.value(first.get("backend"))
    return f"{n} ranks on {nodes} node{'s' if nodes > 1 else ''}" + (f" ({backend})" if backend else "")


# --- many runs, side by side by hardware -------------------------------------------------------


def resolve_hardware(df: pd.DataFrame, wanted: str) -> str:
    """The one hardware label that equals or contains `wanted` (case-insensitive)."""
    labels = list(dict.fromkeys(df["hardware"]))
    exact = [h for h in labels if h.lower() == wanted.lower()]
    found = exact or [h for h in labels if wanted.lower() in h.lower()]
    if len(found) != 1:
        why = "matches several" if found else "matches none"
        raise UsageError(f"--baseline {wanted!r} {why} of the hardware in these results: {'; '.join(labels)}")
    return found[0]


def _summaries(ok: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """case_key -> hardware -> the runs' figures (one pass into plain dicts: a pandas group per
    case is too slow at 10,000 cases)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for row in records(ok):
        by_hw = found.setdefault(row.case_key, {})
        cell = by_hw.get(row.hardware)
        if cell is None:
            params = row.params_dict if isinstance(row.params_dict, dict) else {}
            cell = by_hw[row.hardware] = {
                "row": row,
                "throughput": [],
                "watts": [],
                "efficiency": [],
                "estimate": False,
                "op": params.get("op"),
                "runs": set(),
            }
        cell["throughput"].append(row.throughput)
        for key, figure in (("watts", row.avg_watts), ("efficiency", row.efficiency)):
            if cells.value(figure) is not None:
                cell[key].append(figure)
        cell["estimate"] |= bool(cells.value(row.energy_estimate))
        cell["runs"].add(row.file)
    return found


def _score(cell: dict[str, Any], metric: str) -> float | None:
    eff = statistics.median(cell["efficiency"]) if cell["efficiency"] else None
    if metric == "throughput":
        return float(statistics.median(cell["throughput"]))
    if metric == "efficiency":
        return eff
    return 1.0 / eff if eff else None


def _hardware_cell(cell: dict[str, Any], options: ReportOptions, runs: int) -> str:
    row = cell["row"]
    throughput = statistics.median(cell["throughput"])
    mark = "~" if cell["estimate"] else ""
    peak = cells.peak_percent(row, throughput)
    lines = [format_rate(throughput, row.work_unit) + (f" ({peak:.0f}% of peak)" if peak is not None else "")]
    if cells.is_collective(row):  # nccl-tests' two figures: the job's bytes per second and the bus's
        bus = cells.busbw(row, throughput)
        lines = [f"algbw {lines[0]}"] + ([f"busbw {format_rate(bus, 'byte')}"] if bus is not None else [])
    if cell["watts"]:
        lines.append(f"{mark}{statistics.median(cell['watts']):.0f} W")
    if cell["efficiency"]:
        eff = statistics.median(cell["efficiency"])
        lines.append(f"{mark}{format_efficiency(eff, row.work_unit)}")
        if options.grid is not None:
            lines.append(cells.carbon_per_work(eff, row.work_unit, options.grid))
    if runs > 1:
        lines.append(f"{len(cell['runs'])} run(s)")
    return "\n".join(lines)


def _header(label: str, width: int) -> str:
    """A hardware label as a column header no wider than the column's cells need (at least
    HARDWARE_HEADER_WIDTH): the device name, then its driver and power limit, wrapped at spaces,
    never between a number and its unit ("700 W" stays on one line)."""
    width = max(width, HARDWARE_HEADER_WIDTH)
    if len(label) <= width:
        return label
    name, sep, extras = label.partition(" (")
    parts = [name, sep.strip() + extras] if sep else [label]
    return "\n".join(
        line.replace(NBSP, " ")
        for part in parts
        for line in textwrap.wrap(_NUMBER_UNIT_SPACE.sub(NBSP, part), width, break_long_words=False, break_on_hyphens=False)
    )


def _chunks(lead: list[Column], hardware: list[Column], width: int | None) -> Iterator[list[Column]]:
    """Hardware columns in runs that fit beside the leading columns (Params, Op point; all at
    once without a width)."""
    if width is None:
        yield hardware
        return
    chunk: list[Column] = []
    for column in hardware:
        for c in (*lead, *chunk, column):
            c.width = c.narrowest()
        if chunk and table_width([*lead, *chunk, column]) > width:
            yield chunk
            chunk = []
        chunk.append(column)
    if chunk:
        yield chunk


def hardware_report(df: pd.DataFrame, options: ReportOptions, width: int | None = None) -> list[RenderableType]:
    """Cases as rows, hardware as columns; each cell the median throughput, watts and throughput
    per watt over that hardware's runs (and % of datasheet peak where known), the best per row
    by `options.metric` marked with *. With a baseline, cells are ratios of the metric to the
    baseline hardware's. Too many hardware for the width: several tables, Params repeated."""
    ok = df[df["status"] == "ok"]
    hardware = list(dict.fromkeys(df["hardware"]))
    baseline = resolve_hardware(df, options.baseline) if options.baseline else None
    runs = df["file"].nunique()
    head = (
        f"{options.metric} by hardware, {runs} run(s)"
        + (f", relative to {baseline}" if baseline else "")
        + " (* best; medians over runs)"
    )
    out: list[RenderableType] = [Text(head, style="bold")]
    summaries = _summaries(ok)
    firsts = ok.drop_duplicates("case_key")
    large = len(summaries) * (len(hardware) + 1) > LARGE_TABLE_CELLS
    lower_is_better = options.metric == "energy"
    for group in groups(records(firsts), with_device=False):
        columns = {h: [] for h in hardware}  # type: dict[str, list[str]]
        bold = {h: [] for h in hardware}  # type: dict[str, list[str]]
        for row in group.rows:
            by_hw = summaries[row.case_key]
            scores = {h: s for h in by_hw if (s := _score(by_hw[h], options.metric)) is not None}
            best = (min if lower_is_better else max)(scores, key=lambda h: scores[h]) if len(scores) > 1 else None
            base = scores.get(baseline) if baseline else None
            for h in hardware:
                if h not in by_hw:
                    text = "-"
                elif baseline:
                    text = f"{scores[h] / base:.2f}x" if base and h in scores else "-"
                else:
                    text = _hardware_cell(by_hw[h], options, runs)
                columns[h].append(("* " if h == best else "") + text)
                bold[h].append("bold" if h == best else "")
        params = Column("Params", group.params, justify="left", wrap=True)
        lead = _with_op_column([params] if params.has_data() else [], group.rows)
        hw_columns = [Column(h, columns[h], styles=bold[h]) for h in hardware]
        if width is not None and table_width(fit([*lead, *hw_columns], None)[0]) > width:
            for column in hw_columns:  # long labels wrap to the width their figures need
                column.name = _header(column.name, max(len(line) for text in column.cells for line in text.split("\n")))
        for chunk in _chunks(lead, hw_columns, width):
            out.append(_fitted([*lead, *chunk], width, group.title, None, large))
    sources = _sources_by_hardware(ok)
    if len(set(sources.values())) > 1:  # different counters side by side (vendors, boundaries): named
        out.append(Text("energy from: " + "; ".join(f"{h}: {s}" for h, s in sources.items()), overflow="fold"))
    return out


def _node_line(run: pd.DataFrame) -> str | None:
    """What the "Node power" column is, said once where a run read its node's BMC."""
    if "node_energy_source" not in run:
        return None
    sources = [str(s) for s in dict.fromkeys(run["node_energy_source"].dropna())]
    if not sources:
        return None
    idle = run.loc[run["node_energy_source"].notna(), "node_idle_gpus"].dropna() if "node_idle_gpus" in run else []
    beside = f" (it includes {int(max(idle))} GPU(s) idle beside the case's)" if len(idle) and max(idle) > 0 else ""
    return (
        f"node power: {', '.join(sources)}, the whole node from its BMC (boundary node) over the same windows; "
        f"(xN) is node over device watts{beside}"
    )


def _sources_by_hardware(ok: pd.DataFrame) -> dict[str, str]:
    """Each hardware's energy sources as the tables name them (`cells.source`: the boundary
    where it is not the device); the report names them under its tables when they differ, so
    watts from different vendors' counters are never shown side by side unnamed."""
    found: dict[str, list[str]] = {}
    for row in records(ok):
        text = cells.source(row)
        if text != "-":
            found.setdefault(row.hardware, [])
            if text not in found[row.hardware]:
                found[row.hardware].append(text)
    return {h: ", ".join(s) for h, s in found.items()}


# --- per rank ----------------------------------------------------------------------------------


def _rank_order(entry: dict[str, Any]) -> int:
    rank = entry.get("rank")
    return rank if isinstance(rank, int) else 0


def _rank_status(entry: dict[str, Any]) -> str:
    status = str(entry.get("status") or "-")
    error = cells.value(entry.get("error"))
    return f"{status}: {error}" if error and status != "ok" else status


def _per_rank_columns(group: Group) -> list[Column]:
    """One row per (case, rank): the rank's own figures of the case (its share of the work in
    its own time, its own device's energy), the case's parameters on its first rank's row."""
    names: dict[str, list[str]] = {
        k: [] for k in ("Params", "Rank", "Host", "Device", "Throughput", "Time/iter", "Power", "Energy", "Per watt", "Status")
    }
    styles: list[str] = []
    several_names = len({e.get("device_name") for r in group.rows for e in (r.per_rank or [])}) > 1
    for row, params in zip(group.rows, group.params, strict=True):
        entries = sorted((e for e in row.per_rank or [] if isinstance(e, dict)), key=_rank_order)
        for k, e in enumerate(entries):
            ok = e.get("status") == "ok"
            watts = cells.value(e.get("avg_watts"))
            device = str(e.get("device") or "-") + (f" {e.get('device_name')}" if several_names else "")
            for name, text in (
                ("Params", params if k == 0 else ""),
                ("Rank", str(e.get("rank"))),
                ("Host", str(e.get("host") or "-")),
                ("Device", device),
                ("Throughput", format_rate(cells.value(e.get("throughput")), row.work_unit) if ok else "-"),
                ("Time/iter", format_seconds(cells.value(e.get("seconds_per_iter"))) if ok else "-"),
                ("Power", cells.estimated(row, "-" if watts is None else f"{watts:.1f} W")),
                ("Energy", cells.estimated(row, format_joules(cells.value(e.get("energy_j"))))),
                (
                    "Per watt",
                    cells.estimated(
                        row,
                        "-" if cells.value(e.get("efficiency")) is None else format_efficiency(e["efficiency"], row.work_unit),
                    ),
                ),
                ("Status", _rank_status(e)),
            ):
                names[name].append(text)
            styles.append(STATUS_STYLE.get(str(e.get("status")), ""))
    columns = [
        Column("Params", names["Params"], justify="left", wrap=True),
        Column("Rank", names["Rank"]),
        Column("Host", names["Host"], justify="left", priority=40),
        Column("Device", names["Device"], justify="left", priority=45),
        Column("Throughput", names["Throughput"]),
        Column("Time/iter", names["Time/iter"], priority=50),
        Column("Power", names["Power"], priority=60),
        Column("Energy", names["Energy"], priority=20),
        Column("Per watt", names["Per watt"]),
        Column("Status", names["Status"], justify="left", wrap=True, min_word=MIN_FLAG_WORD, styles=styles),
    ]
    return [c for c in columns if c.name in ("Rank", "Throughput", "Status") or c.has_data()]


def per_rank_report(df: pd.DataFrame, width: int | None = None) -> list[RenderableType]:
    """Each multi-rank run's cases rank by rank (from the file's `ranks` section), after the job
    tables; said once when no run has several ranks."""
    rows = records(df)
    runs = list(dict.fromkeys(r.file for r in rows if cells.ranks(r) > 1 and r.per_rank))
    if not runs:
        return [Text(NOTHING_PER_RANK)]
    out: list[RenderableType] = []
    for file in runs:
        mine = [r for r in rows if r.file == file]
        first = mine[0]
        head = "per rank: " + " | ".join(
            x for x in (str(first.hostname), str(first.started_at), _job_line(df[df["file"] == file].iloc[0])) if x
        )
        out.append(Text(head, style="bold"))
        large = sum(len(r.per_rank or []) for r in mine) * 10 > LARGE_TABLE_CELLS
        for group in groups(mine, with_device=False, ran=True):
            out.append(_fitted(_per_rank_columns(group), width, group.title, None, large))
        out.append(Text(str(file), style="dim"))
    return out


# --- rendering -------------------------------------------------------------------------------


def render(df: pd.DataFrame, console: Console, options: ReportOptions = ReportOptions(), fit_width: bool = True) -> None:
    """One run file: every case in detail. Several runs (or --baseline): the cases matched
    across runs and grouped by hardware, side by side (medians over runs).

    fit_width: fit the console's width (a terminal); else every row on one line (a pipe or
    a file: grep and diff work line by line)."""
    if df.empty:
        console.print("no cases in these result files")
        return
    width = console.width if fit_width else None
    several = df["file"].nunique() > 1 or options.baseline is not None
    parts = hardware_report(df, options, width) if several else run_report(df, options, width)
    if options.per_rank:
        parts += per_rank_report(df, width)
    parts += sustained_report(df)
    for part in parts:
        if isinstance(part, str):  # a large table as plain lines, laid out already: rich would re-wrap it
            console.file.write(part + "\n")
        else:
            console.print(part, crop=False)
    if options.grid is not None:
        console.print(f"carbon at {options.grid.name}: {options.grid.describe()}", markup=False, highlight=False)


def _window_cells(window: Any, unit: str) -> list[str]:
    if not isinstance(window, dict):
        return ["-"] * 4
    throughput, watts, clock, hot = (window.get(k) for k in ("throughput", "avg_watts", "sm_clock_mhz", "max_temperature_c"))
    return [
        format_rate(float(throughput), unit) if isinstance(throughput, int | float) else "-",
        f"{watts:.0f} W" if isinstance(watts, int | float) else "-",
        f"{clock:,.0f} MHz" if isinstance(clock, int | float) else "-",
        f"{hot:.0f} C" if isinstance(hot, int | float) else "-",
    ]


def sustained_report(df: pd.DataFrame) -> list[Table]:
    """The sustained cases (`--sustain`): the burst window against the tail window, and how much
    the tail dropped (throughput, SM clock); [] when no case was sustained."""
    if "sustained" not in df:
        return []
    rows = df[df["sustained"].map(lambda s: isinstance(s, dict))]
    if rows.empty:
        return []
    first = rows.iloc[0]["sustained"]
    table = Table(
        title=f"Sustained: burst (the first {first.get('burst_s'):g} s) against tail (the last {first.get('tail_s'):g} s); "
        f"sustained_drop when the tail is more than {100 * float(first.get('margin') or 0):g}% lower",
        title_justify="left",
    )
    for column in ("Case", "Device", "Burst", "W", "Clock", "Max temp", "Tail", "W", "Clock", "Max temp", "Drop", "Flag"):
        table.add_column(column, overflow="fold")
    for _, row in rows.iterrows():
        sustained, unit = row["sustained"], str(row.get("work_unit") or "")
        drop = sustained.get("drop") or {}
        drops = [
            f"{k.replace('_mhz', '').replace('_', ' ')} {-100 * v:+.1f}%" for k, v in drop.items() if isinstance(v, int | float)
        ]
        flagged = "sustained_drop" in str(row.get("flags") or "")
        table.add_row(
            f"{row['workload']} {row['params']}",
            str(row.get("device") or ""),
            *_window_cells(sustained.get("burst"), unit),
            *_window_cells(sustained.get("tail"), unit),
            ", ".join(drops) or "-",
            "sustained_drop" if flagged else "",
        )
    return [table]


def render_to_text(df: pd.DataFrame, width: int = 160, options: ReportOptions = ReportOptions(), fit_width: bool = True) -> str:
    """The table report as plain text (no colour), as a terminal of `width` columns shows it."""
    buffer = io.StringIO()
    render(df, Console(file=buffer, width=width, color_system=None), options, fit_width)
    return buffer.getvalue()


# --- the energy-optimal frontier -----------------------------------------------------------------

CHECK = "✓"
SINGLE_POINT_NOTE = (
    "ran at one operating point only, so there is nothing to choose between (sweep --power-limit, "
    "--gpu-clocks or an operating parameter such as llm's batch)"
)


# a space between a number and its unit in a sentence ("450 W", "464 fJ/FLOP", "1.2 ms"): never a line break
_SENTENCE_UNIT_SPACE = re.compile(r"(?<=\d) (?=[kMGTPEmunpfµ]?(?:W|J|Hz|B|FLOP|tok|s)\b)")


def _sentence(text: str, width: int | None) -> Text:
    """A sentence wrapped between words at `width`, never between a number and its unit (rich
    would wrap at any space)."""
    lines = wrap_text(_SENTENCE_UNIT_SPACE.sub(NBSP, text), width)
    return Text("\n".join(line.replace(NBSP, " ") for line in lines))


def _frontier_columns(found: Frontier) -> list[Column]:
    """One row per point: its figures and whether it is on the Pareto set, the most efficient,
    the recommended one."""
    points = found.points
    unit = found.unit
    marks = [("~" if p.estimate else "") for p in points]
    columns = [
        Column("Point", [p.label for p in points], justify="left", wrap=True),
        Column("Throughput", [format_rate(p.throughput, unit) for p in points]),
        Column("Energy/work", [m + format_energy_per_work(p.efficiency, unit) for p, m in zip(points, marks, strict=True)]),
        Column("Latency/iter", [format_seconds(p.seconds_per_iter) for p in points], priority=40),
        Column(
            "Power",
            [m + f"{p.avg_watts:.1f} W" if p.avg_watts is not None else "-" for p, m in zip(points, marks, strict=True)],
            priority=30,
        ),
        Column("Pareto", [CHECK if p.pareto else "" for p in points], justify="left"),
        Column("Best", [CHECK if p is found.best else "" for p in points], justify="left"),
        Column(
            "Recommended",
            [CHECK if p is found.recommended else "" for p in points],
            justify="left",
            styles=["bold green" if p is found.recommended else "" for p in points],
        ),
    ]
    return [c for c in columns if c.name not in ("Latency/iter", "Power") or c.has_data()]


def _frontier_caption(found: Frontier) -> str | None:
    lines = [line for line in (left_out_line(found),) if line]
    if any(p.estimate for p in found.points):
        lines.append("~ an estimate from a nominal wattage")
    if found.nominal_only:
        lines.append(NOMINAL_NOTE)
    return "\n".join(lines) or None


def frontier_heading(frontiers: Sequence[Frontier]) -> str:
    """What the frontier tables show and what the recommendation respects, said once."""
    constraints = frontiers[0].constraints if frontiers else None
    rule = "the least energy per unit of work"
    if constraints is not None:
        rule += f" within {percent(constraints.max_slowdown)} of the fastest point's throughput"
        limits = constraints.limits()
        if limits:
            rule += " among those with " + " and ".join(limits)
    return f"energy-optimal frontier by case and hardware (medians over runs); recommended: {rule}"


def frontier_report(frontiers: Sequence[Frontier], width: int | None = None) -> list[RenderableType]:
    """Per case and hardware with two points or more (or a point left out): a table of its
    points (Pareto, best and recommended marked; left-out points and the nominal caveat in the
    caption) and the recommendation as a sentence. Cases that ran at one operating point only
    are counted in one line."""
    out: list[RenderableType] = [Text(frontier_heading(frontiers), style="bold")]
    single = 0
    for found in frontiers:
        if len(found.points) + len(found.left_out) < 2 and found.points:
            single += 1
            continue
        if found.points:
            out.append(_fitted(_frontier_columns(found), width, found.title, _frontier_caption(found), False))
        out.append(_sentence(sentence(found), width))
    if single:
        if len(out) == 1:
            out.append(Text(f"every case {SINGLE_POINT_NOTE}"))
        else:
            out.append(Text(f"{single} case(s) on their hardware {SINGLE_POINT_NOTE}"))
    return out


def render_frontier(frontiers: Sequence[Frontier], console: Console, fit_width: bool = True) -> None:
    """The frontier report on `console` (see frontier_report); fit_width as `render`."""
    if not frontiers:
        console.print("no cases in these result files")
        return
    width = console.width if fit_width else None
    for part in frontier_report(frontiers, width):
        if isinstance(part, str):
            console.file.write(part + "\n")
        else:
            console.print(part, crop=False)


def frontier_to_text(frontiers: Sequence[Frontier], width: int = 160, fit_width: bool = True) -> str:
    """The frontier report as plain text (no colour), as a terminal of `width` columns shows it."""
    buffer = io.StringIO()
    render_frontier(frontiers, Console(file=buffer, width=width, color_system=None), fit_width)
    return buffer.getvalue()


# --- the gate's verdicts ---------------------------------------------------------------------

COMPARISON_HEADER = ["Workload", "Params", "Baseline", "Current", "Ratio", "95% interval", "Verdict", "Note"]


def _metric_value(figure: float | None, unit: str | None, metric: str) -> str:
    if figure is None or unit is None:
        return "-"
    return format_efficiency(figure, unit) if metric == "efficiency" else format_rate(figure, unit)


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


def comparison_table(comparisons: Sequence[Any], metric: str, title: str, width: int | None = None) -> RenderableType:
    """The gate's verdicts: ratio of medians current/baseline with its bootstrap interval.

    The case is one column, the workload then its compact parameter tokens, wrapping between
    tokens only; figures never wrap. When space is short the note wraps and the interval is
    left out (the caption says so); narrower still, each case prints as stacked lines."""
    rows = [_comparison_cells(c, metric) for c in comparisons]
    columns = [
        Column("Case", [" ".join(x for x in r[:2] if x) for r in rows], justify="left", wrap=True),
        Column("Baseline", [r[2] for r in rows]),
        Column("Current", [r[3] for r in rows]),
        Column("Ratio", [r[4] for r in rows]),
        Column("95% interval", [r[5] for r in rows], justify="left", priority=50),
        Column("Verdict", [r[6] for r in rows], justify="left", styles=[VERDICT_STYLE.get(r[6], "") for r in rows]),
        Column("Note", [r[7] for r in rows], justify="left", wrap=True, min_word=NOTE_MIN_WORD),
    ]
    table = _fitted([c for c in columns if c.name != "Note" or c.has_data()], width, title, None, False)
    return Text(table) if isinstance(table, str) else table  # stacked lines: printed as they are, no markup


def comparison_markdown(comparisons: Sequence[Any], metric: str) -> str:
    from bench.report.export import md_cell

    lines = ["| " + " | ".join(COMPARISON_HEADER) + " |", "|" + "---|" * len(COMPARISON_HEADER)]
    for c in comparisons:
        row = _comparison_cells(c, metric)
        if c.verdict in ("slower", "failed"):
            row[6] = f"**{c.verdict}**"
        lines.append("| " + " | ".join(md_cell(x) for x in row) + " |")
    return "\n".join(lines) + "\n"
