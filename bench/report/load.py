"""Result files into a pandas DataFrame, one row per case: what every report reads.

Only the file is read: how to print a case's parameters comes from the file's `workloads`
section (written by the run), never from the workload registry, so the reading side starts
without torch.

A multi-rank job's file ("wattbench.run/2") loads as any run: one row per case with the job's
figures. Its hardware is the whole job's ("2x NVIDIA H100", "2 nodes x 8x NVIDIA H100"), so the
cross-hardware report shows a node of eight as hardware of its own, beside one GPU of the same
kind; a job of one rank keeps the plain label, so it compares with a plain run of the same
cases. `ranks`, `nodes` and `backend` say how the job ran (1, 1, None for a single process),
`per_rank` holds each rank's figures of the case (from the file's `ranks` section).
"""

from __future__ import annotations

import contextlib
import gc
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from bench.errors import ResultFileError
from bench.params import ParamSchema, canonical_key, format_compact, shown_params
from bench.record import NOMINAL, CaseRecord, DeviceRecord, JsonObject, RunRecord, Section, case_columns
from bench.results import read_record, result_files

COLUMNS = [
    "file",
    "run_id",
    "run_status",
    "started_at",
    "hostname",
    "device",
    "device_name",
    "driver",
    "power_limit_w",
    "hardware",
    "case_id",
    "workload",
    "case_key",
    "params",
    "params_dict",
    "param_schema",
    "dtype",
    "status",
    "error",
    "work_unit",
    "work_per_iter",
    "iterations",
    "repeats",
    "seconds_per_iter",
    "cv",
    "throughput",
    "throughput_min",
    "throughput_max",
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
    "raw_seconds",
    "round_repeats",
    "round_watts",
    "power_trace_s",
    "power_trace_w",
    "details",
    "cache_bytes",
    "work_terms",
    "ranks",
    "nodes",
    "backend",
    "abort_reason",
    "per_rank",
    "operating_point",
    "op_label",
    "operating_params",
    "sustained",
]
# Columns read straight from a field of the case record: a field declared with a column there is
# a column of the frame, the exports and the json report without an edit here.
RECORD_COLUMNS = case_columns()
COLUMNS += [c for c in RECORD_COLUMNS if c not in COLUMNS]


def hardware_label(
    name: str, driver: str | None, ranks: int = 1, nodes: int = 1, kind: str | None = None, names: dict[str, int] | None = None
) -> str:
    """How reports name a machine: device name, with the driver where known.

    The power limit is not part of it: a capped GPU is the same hardware at another operating
    point (the row's `operating_point` / `op_label`); the limit as found stays in `power_limit_w`.
    A job of several ranks is hardware of its own: "2x NAME" on one node, "2 nodes x 8x NAME"
    on several (devices per node); ranks that share a CPU are "2 ranks on NAME" (one package,
    not two CPUs); ranks on different kinds of GPU list each ("4x A + 4x B"). One rank keeps
    the plain label."""
    label = job_devices(name, ranks, nodes, kind, names)
    return f"{label} (driver {driver})" if driver else label


def op_label(point: dict[str, Any] | None) -> str:
    """An operating point as reports name it: "450 W", "1410 MHz", "450 W, 1410 MHz"; "" when
    the device ran as found (no point, or one that set nothing)."""
    if not point:
        return ""
    parts = []
    watts, request = point.get("power_limit_w"), point.get("power_limit_request")
    if watts is not None:
        parts.append(f"{watts:g} W")
    elif isinstance(request, str) and request:
        parts.append(request if request.endswith("%") else f"{request} W")
    if point.get("gpu_clocks_mhz") is not None:
        parts.append(f"{point['gpu_clocks_mhz']:g} MHz")
    return ", ".join(parts)


def operating_suffix(case_id: str, device: str) -> str:
    """The operating point's part of a case id ('[pl=450W]' in 'matmul(...)@cuda:0[pl=450W]'),
    '' when it has none: a case's identity across runs (`case_key`) carries it, so `compare`
    matches cases at the same operating point only."""
    at = case_id.rfind(f"@{device}[")
    return case_id[at + len(device) + 1 :] if at >= 0 and case_id.endswith("]") else ""


def job_devices(name: str, ranks: int, nodes: int, kind: str | None = None, names: dict[str, int] | None = None) -> str:
    """The devices of a job of `ranks` ranks on `nodes` nodes, as hardware_label says them."""
    if ranks <= 1:
        return name
    nodes = max(nodes, 1)
    many = f"{nodes} nodes x " if nodes > 1 else ""
    if names and len(names) > 1:
        mixed = " + ".join(f"{n}x {device}" for device, n in names.items())
        return f"{nodes} nodes: {mixed}" if nodes > 1 else mixed
    per_node = ranks // nodes if ranks % nodes == 0 else None
    if per_node is None:
        return f"{nodes} nodes, {ranks}x {name}" if kind != "cpu" else f"{nodes} nodes, {ranks} ranks on {name}"
    return f"{many}{per_node} ranks on {name}" if kind == "cpu" else f"{many}{per_node}x {name}"


def _round_repeats(case: CaseRecord, samples: int) -> list[int]:
    """How many of the case's raw samples each round gave, in order ([samples]: one round)."""
    if case.rounds:
        counts = [r.repeats for r in case.rounds]
        whole = [c for c in counts if isinstance(c, int) and c > 0]
        if len(whole) == len(counts) and sum(whole) == samples:
            return whole
    return [samples] if samples else []


def _round_watts(case: CaseRecord, rounds: int) -> list[float] | None:
    """Each round's average watts, when every one of the `rounds` rounds has a figure."""
    listed = case.rounds
    if not listed or len(listed) != rounds or rounds < 2:
        return None
    known = [float(r.avg_watts) for r in listed if r.avg_watts is not None and r.avg_watts > 0]
    return known if len(known) == len(listed) else None


def _count(value: object) -> int:
    """A whole number of ranks or nodes from a file (1 when absent or not one)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def _rank_index(run: RunRecord) -> dict[object, list[JsonObject]]:
    """Plan index -> each rank's figures of that case (rank, host, device, and the `ranks`
    section's case entry), from a run/2 file; {} for any other."""
    found: dict[object, list[JsonObject]] = {}
    for entry in run.ranks or ():
        device = entry.device or {}
        who: JsonObject = {
            "rank": entry.rank,
            "host": entry.host,
            "device": device.get("id"),
            "device_name": device.get("name", device.get("id")),
            "rank_status": entry.status,
        }
        for case in entry.cases if isinstance(entry.cases, list) else []:
            if isinstance(case, dict):
                found.setdefault(case.get("index"), []).append({**case, **who})
    return found


S = TypeVar("S", bound=Section)


def _given(section: S | None) -> S | None:
    """A section the file gives: None for an absent, null or empty object ({} says nothing)."""
    return None if section is None or section.layout == () else section


def _record_columns(case: CaseRecord) -> dict[str, object]:
    """The columns read straight from a field of the record (`bench.record.case_columns`)."""
    row: dict[str, object] = {}
    for column, (section, key) in RECORD_COLUMNS.items():
        part = getattr(case, section) if section else case
        row[column] = getattr(part, key) if part is not None else None
    return row


def _machine_columns(run: RunRecord, device_id: str) -> dict[str, object]:
    """The columns that say where a case ran: the run, the host, the device and the job."""
    info, host = run.run, run.host
    assert info is not None and host is not None  # from_json requires both sections
    device = next((d for d in run.devices or () if isinstance(d, DeviceRecord) and d.id == device_id), None)
    device_name = device.name if device is not None and device.has("name") else device_id
    ranks, nodes = _count(device.ranks if device else None), _count(device.nodes if device else None)
    names = device.names if device else None
    settings = info.settings if isinstance(info.settings, dict) else {}
    distributed = settings.get("distributed")
    return {
        "run_id": info.id,
        "run_status": info.status,
        "started_at": info.started_at,
        "abort_reason": info.abort_reason,
        "hostname": host.hostname,
        "device": device_id,
        "device_name": device_name,
        "driver": host.driver,
        "power_limit_w": device.power_limit_w if device else None,
        "hardware": hardware_label(
            str(device_name),
            host.driver if device_id != "cpu" else None,
            ranks,
            nodes,
            device.kind if device else None,
            {str(k): int(v) for k, v in names.items() if isinstance(v, int)} if names else None,
        ),
        "cache_bytes": device.cache_bytes if device else None,  # the device's last cache before memory (GPU L2)
        "ranks": ranks,  # ranks of the job (its world size); 1 for a single process
        "nodes": nodes,
        "node_idle_gpus": _idle_gpus(info.node_power, device),
        "backend": distributed.get("backend") if isinstance(distributed, dict) else None,
    }


def _idle_gpus(node_power: object, device: DeviceRecord | None) -> int | None:
    """GPUs on the run's nodes beside those its case ran on there: in the node figure (a BMC
    sees them all), not in the device's. A job that read several nodes' BMCs sums each node's
    (`node_power.nodes`). None where the run read no BMC or did not know a node's GPUs."""
    if not isinstance(node_power, dict):
        return None
    nodes = node_power.get("nodes")
    readers = list(nodes.values()) if isinstance(nodes, dict) and nodes else [node_power]
    idle = 0
    for reader in readers:
        on_node = reader.get("gpus_on_node") if isinstance(reader, dict) else None
        if not isinstance(on_node, int):
            return None
        per_case = reader.get("gpus_per_case")
        used = per_case if isinstance(per_case, int) and device is not None and device.kind != "cpu" else 0
        idle += max(0, on_node - used)
    return idle


def case_row(
    run: RunRecord,
    case: CaseRecord,
    file: str,
    per_rank: dict[object, list[JsonObject]] | None = None,
    machine: dict[str, object] | None = None,
) -> dict[str, object]:
    """Flatten one case of a run into a DataFrame row (see COLUMNS). The record has checked
    every field's type when it was read (`RunRecord.from_json`); what is left to check here is
    how fields relate: the device the case names, the workload's parameter schema.
    `per_rank`: the file's _rank_index, `machine` the case's `_machine_columns` (both computed
    once per file)."""
    schema_doc = (run.workloads or {}).get(case.workload or "")
    schema = ParamSchema.from_dict(schema_doc)
    point = _given(case.operating_point)
    operating = point.to_json() if point is not None else None
    listed = schema_doc.get("operating") if isinstance(schema_doc, dict) else None
    device_id = str(case.device)
    seconds, throughput, energy = _given(case.seconds_per_iter), _given(case.throughput), _given(case.energy)
    node = _given(case.node_energy)
    params, details = case.params or {}, case.details or {}
    trace_s, trace_w = energy.trace_points() if energy is not None else ([], [])
    raw = list(case.raw_seconds or ())
    counts = _round_repeats(case, len(raw))
    row: dict[str, object] = {
        "file": file,
        "case_id": case.id,
        "workload": case.workload,
        "case_key": canonical_key(str(case.workload), params) + operating_suffix(str(case.id), device_id),
        "params": format_compact(shown_params(params, details), schema),  # as people read it
        "params_dict": params,
        "param_schema": schema,
        "dtype": params.get("dtype"),
        "status": case.status,
        "error": case.error,
        "work_unit": case.work_unit,
        "work_per_iter": case.work_per_iter,
        "iterations": case.iterations,
        "repeats": case.repeats,
        "seconds_per_iter": seconds.median if seconds else None,
        "cv": seconds.cv if seconds else None,
        "throughput": throughput.median if throughput else None,
        "throughput_min": throughput.min if throughput else None,
        "throughput_max": throughput.max if throughput else None,
        "energy_source": energy.source if energy else None,
        "energy_estimate": energy.source == NOMINAL if energy else None,
        "energy_boundary": energy.energy_boundary if energy else None,
        # the whole node over the same windows, from its BMC (boundary "node"), beside the device's
        "node_energy_j": node.joules if node else None,
        "node_avg_watts": node.avg_watts if node else None,
        "node_energy_source": node.source if node else None,
        "flags": ",".join(case.flags or ()),
        "raw_seconds": raw,
        "round_repeats": counts,
        "round_watts": _round_watts(case, len(counts)),
        "power_trace_s": trace_s,
        "power_trace_w": trace_w,
        "work_terms": case.work_terms or {},  # other measures of one iteration's work (llm: FLOP and bytes beside tokens)
        "details": details,  # what the workload said of what ran (attention: `backend`, the SDPA kernel)
        "per_rank": (per_rank or {}).get(case.index, []),
        "operating_point": operating,  # the power limit / locked clocks a sweep set (None: as found)
        "op_label": op_label(operating),  # "450 W", "1410 MHz", "450 W, 1410 MHz"; "" as found
        # parameters that are operating points of one case (llm: batch)
        "operating_params": [str(p) for p in listed] if isinstance(listed, list) else [],
        "sustained": case.sustained,  # a sustained case's burst and tail windows (bench.measure.sustain)
    }
    row.update(machine if machine is not None else _machine_columns(run, device_id))
    row.update(_record_columns(case))
    return row


def _file_rows(run: RunRecord, path: Path) -> list[dict[str, object]]:
    """The rows of one file's cases (where a case ran is worked out once per device)."""
    per_rank = _rank_index(run)
    machines: dict[str, dict[str, object]] = {}
    rows = []
    for case in run.case_list():
        device_id = str(case.device)
        if device_id not in machines:
            machines[device_id] = _machine_columns(run, device_id)
        row = case_row(run, case, str(path), per_rank, machines[device_id])
        rows.append(row)
    return rows


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: reading 10,000 cases allocates some 100,000 records
    and rows that all stay alive and hold no cycles, and each collection would walk them all
    again (half the reading time). `report` and `compare` run under it from start to end: a
    short-lived command that keeps what it builds."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load(paths: Iterable[str | Path], strict: bool = True, on_skip: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Load result files and folders into one DataFrame, one row per case (columns: COLUMNS).

    strict: a file that cannot be read (damaged, truncated, not JSON, another schema, a case
    with a field of the wrong type) is a ResultFileError naming it; what a gate must do.
    Otherwise such a file is skipped, `on_skip` gets one line naming it and why, and the rest is
    loaded; what a report over a shared folder wants. Either way it is an error when no file
    could be read.
    """
    rows: list[dict[str, object]] = []
    files = result_files(paths)
    skipped: list[ResultFileError] = []
    with paused_gc():
        for path in files:
            try:
                rows.extend(_file_rows(read_record(path), path))
            except ResultFileError as exc:
                if strict:
                    raise
                skipped.append(exc)
    if len(skipped) == len(files) == 1:
        raise skipped[0]  # one file asked for and unreadable: its own error is the one line to say
    for error in skipped:
        if on_skip is not None:
            on_skip(str(error))
    if len(skipped) == len(files):
        raise ResultFileError(f"none of the {len(files)} result files could be read")
    return pd.DataFrame(rows, columns=COLUMNS)


Row = namedtuple("Row", COLUMNS)  # type: ignore[misc]


def records(df: pd.DataFrame) -> list[Any]:
    """The rows of a loaded frame as named tuples (fields: COLUMNS), built column by column:
    pandas' itertuples reads string columns element by element, 0.5 s at 10,000 cases."""
    with paused_gc():
        return [Row(*values) for values in zip(*(df[c].tolist() for c in COLUMNS), strict=True)]
