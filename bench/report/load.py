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

from collections import namedtuple
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import ResultFileError
from bench.params import ParamSchema, canonical_key, format_compact, shown_params
from bench.results import read_run, result_files

COLUMNS = [
    "file", "run_id", "run_status", "started_at", "hostname", "device", "device_name", "driver", "power_limit_w",
    "hardware", "case_id",
    "workload", "case_key", "params", "params_dict", "param_schema", "dtype", "status", "error", "work_unit", "work_per_iter", "iterations",
    "repeats", "seconds_per_iter", "cv", "throughput", "throughput_min", "throughput_max",
    "energy_j", "avg_watts", "peak_watts", "energy_source", "energy_estimate", "dynamic_energy_j", "efficiency", "peak_memory_bytes",
    "max_rel_error", "flags", "raw_seconds", "round_repeats", "round_watts", "power_trace_s", "power_trace_w",
    "details", "cache_bytes", "work_terms",
    "ranks", "nodes", "backend", "abort_reason", "per_rank",
    "operating_point", "op_label", "operating_params",
]
OPERATING_NUMBERS = ("power_limit_w", "enforced_power_limit_w", "gpu_clocks_mhz", "settle_s", "sm_clock_mhz", "avg_watts")


def hardware_label(name: str, driver: str | None, ranks: int = 1, nodes: int = 1,
                   kind: str | None = None, names: dict[str, int] | None = None) -> str:
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


def _id_suffix(case_id: str, device: str) -> str:
    """The operating point's part of a case id ('[pl=450W]' in 'matmul(...)@cuda:0[pl=450W]'),
    '' when it has none: a case's identity across runs (`case_key`) carries it, so `compare`
    matches cases at the same operating point only."""
    at = case_id.rfind(f"@{device}[")
    return case_id[at + len(device) + 1:] if at >= 0 and case_id.endswith("]") else ""


def _operating(case: dict[str, Any], schema_doc: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """(the case's operating point, or None when it ran as found; the workload's operating
    parameters: those whose values are operating points of one case, llm's batch)."""
    point = _object(case, "operating_point")
    _numbers(point, OPERATING_NUMBERS, "operating_point.")
    _texts(point, ("power_limit_request",))
    listed = schema_doc.get("operating") if isinstance(schema_doc, dict) else None
    params = [str(p) for p in listed] if isinstance(listed, list) else []
    return (point or None), params


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


def _round_repeats(case: dict[str, Any], samples: int) -> list[int]:
    """How many of the case's raw samples each round gave, in order ([samples]: one round)."""
    rounds = case.get("rounds")
    if isinstance(rounds, list) and rounds:
        counts = [r.get("repeats") if isinstance(r, dict) else None for r in rounds]
        whole = [c for c in counts if isinstance(c, int) and c > 0]
        if len(whole) == len(counts) and sum(whole) == samples:
            return whole
    return [samples] if samples else []


def _round_watts(case: dict[str, Any], rounds: int) -> list[float] | None:
    """Each round's average watts, when every one of the `rounds` rounds has a figure."""
    listed = case.get("rounds")
    if not isinstance(listed, list) or len(listed) != rounds or rounds < 2:
        return None
    watts = [r.get("avg_watts") if isinstance(r, dict) else None for r in listed]
    known = [float(w) for w in watts if isinstance(w, (int, float)) and w > 0]
    return known if len(known) == len(watts) else None


def _object(case: dict[str, Any], key: str) -> dict[str, Any]:
    """The case's `key` object ({} when absent or null); a ValueError when it is something else."""
    value = case.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} is {_shown(value)}, not an object")
    return value


def _numbers(section: dict[str, Any], keys: Iterable[str], where: str = "") -> None:
    """A ValueError naming the first of `keys` in `section` that is neither a number nor null."""
    for key in keys:
        value = section.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{where}{key} is {_shown(value)}, not a number")


def _texts(section: dict[str, Any], keys: Iterable[str], required: bool = False) -> None:
    """A ValueError naming the first of `keys` in `section` that is not text (nor null, unless
    `required`)."""
    for key in keys:
        value = section.get(key)
        if (value is not None or required) and not isinstance(value, str):
            raise ValueError(f"{key} is {_shown(value)}, not text")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number_list(value: Any, key: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise ValueError(f"{key} is {_shown(value)}, not a list of numbers")
    return value


def _trace(energy: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(seconds since the window start, watts) of the energy trace's [t, w] pairs."""
    trace = energy.get("trace")
    if trace is None:
        return [], []
    if not isinstance(trace, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p)
            for p in trace):
        raise ValueError(f"energy.trace is {_shown(trace)}, not a list of [seconds, watts] pairs")
    return [float(t) for t, _ in trace], [float(w) for _, w in trace]


def _flags(case: dict[str, Any]) -> str:
    flags = case.get("flags")
    if flags is None:
        return ""
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise ValueError(f"flags is {_shown(flags)}, not a list of text")
    return ",".join(flags)


def _count(value: Any) -> int:
    """A whole number of ranks or nodes from a file (1 when absent or not one)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def _rank_index(doc: dict[str, Any]) -> dict[Any, list[dict[str, Any]]]:
    """Plan index -> each rank's figures of that case (rank, host, device, and the `ranks`
    section's case entry), from a run/2 file; {} for any other."""
    found: dict[Any, list[dict[str, Any]]] = {}
    ranks = doc.get("ranks")
    if not isinstance(ranks, list):
        return found
    for entry in ranks:
        if not isinstance(entry, dict):
            continue
        device = _object(entry, "device") if isinstance(entry.get("device"), dict) else {}
        who = {"rank": entry.get("rank"), "host": entry.get("host"), "device": device.get("id"),
               "device_name": device.get("name", device.get("id")), "rank_status": entry.get("status")}
        for case in entry.get("cases") or []:
            if isinstance(case, dict):
                found.setdefault(case.get("index"), []).append({**case, **who})
    return found


def case_row(doc: dict[str, Any], case: dict[str, Any], file: str,
             per_rank: dict[Any, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Flatten one case of a run into a DataFrame row (see COLUMNS). A field of the wrong type
    (params not an object, a throughput that is text, flags not a list, a trace not of [t, w]
    pairs) is a ValueError saying which; `load` names the file and the case. `per_rank`: the
    file's _rank_index (computed once per file)."""
    schemas = doc.get("workloads")
    _texts(case, ("id", "workload", "device"), required=True)
    _texts(case, ("error", "work_unit"))
    schema_doc = schemas.get(case["workload"]) if isinstance(schemas, dict) else None
    schema = ParamSchema.from_dict(schema_doc)
    operating, operating_params = _operating(case, schema_doc)
    devices = {d.get("id"): d for d in doc.get("devices", []) if isinstance(d, dict)}
    seconds = _object(case, "seconds_per_iter")
    throughput = _object(case, "throughput")
    energy = _object(case, "energy")
    memory = _object(case, "memory")
    verify = _object(case, "verify")
    params = _object(case, "params")
    details = _object(case, "details")
    work_terms = _object(case, "work_terms")
    _numbers(work_terms, tuple(work_terms), "work_terms.")
    _numbers(case, ("work_per_iter", "iterations", "repeats", "efficiency"))
    _numbers(seconds, ("median", "cv"), "seconds_per_iter.")
    _numbers(throughput, ("median", "min", "max"), "throughput.")
    _numbers(energy, ("joules", "avg_watts", "peak_watts", "dynamic_joules"), "energy.")
    _texts(energy, ("source",))
    _numbers(memory, ("peak_bytes",), "memory.")
    _numbers(verify, ("max_rel_error",), "verify.")
    trace_s, trace_w = _trace(energy)
    device = devices.get(case["device"], {})
    _numbers(device, ("power_limit_w", "cache_bytes"), f"device {case['device']}: ")
    device_name = device.get("name", case["device"])
    raw = _number_list(case.get("raw_seconds"), "raw_seconds")
    driver = doc["host"].get("driver")
    power_limit = device.get("power_limit_w")
    ranks, nodes = _count(device.get("ranks")), _count(device.get("nodes"))
    names = device.get("names") if isinstance(device.get("names"), dict) else None
    distributed = doc["run"].get("settings", {}).get("distributed") if isinstance(doc["run"].get("settings"), dict) else None
    return {
        "file": file,
        "run_id": doc["run"]["id"],
        "run_status": doc["run"]["status"],
        "started_at": doc["run"]["started_at"],
        "hostname": doc["host"]["hostname"],
        "device": case["device"],
        "device_name": device_name,
        "driver": driver,
        "power_limit_w": power_limit,
        "hardware": hardware_label(device_name, driver if case["device"] != "cpu" else None, ranks, nodes,
                                   device.get("kind"), names),
        "case_id": case["id"],
        "workload": case["workload"],
        "case_key": canonical_key(case["workload"], params) + _id_suffix(case["id"], case["device"]),
        "params": format_compact(shown_params(params, details), schema),  # as people read it
        "params_dict": params,
        "param_schema": schema,
        "dtype": params.get("dtype"),
        "status": case["status"],
        "error": case.get("error"),
        "work_unit": case.get("work_unit"),
        "work_per_iter": case.get("work_per_iter"),
        "iterations": case.get("iterations"),
        "repeats": case.get("repeats"),
        "seconds_per_iter": seconds.get("median"),
        "cv": seconds.get("cv"),
        "throughput": throughput.get("median"),
        "throughput_min": throughput.get("min"),
        "throughput_max": throughput.get("max"),
        "energy_j": energy.get("joules"),
        "avg_watts": energy.get("avg_watts"),
        "peak_watts": energy.get("peak_watts"),
        "energy_source": energy.get("source"),
        "energy_estimate": energy.get("source") == "nominal" if energy else None,
        "dynamic_energy_j": energy.get("dynamic_joules"),
        "efficiency": case.get("efficiency"),
        "peak_memory_bytes": memory.get("peak_bytes"),
        "max_rel_error": verify.get("max_rel_error"),
        "flags": _flags(case),
        "raw_seconds": raw,
        "round_repeats": (counts := _round_repeats(case, len(raw))),
        "round_watts": _round_watts(case, len(counts)),
        "power_trace_s": trace_s,
        "power_trace_w": trace_w,
        "work_terms": work_terms,  # other measures of one iteration's work (llm: FLOP and bytes beside tokens)
        "details": details,  # what the workload said of what ran (attention: `backend`, the SDPA kernel)
        "cache_bytes": device.get("cache_bytes"),  # the device's last cache before memory (GPU L2)
        "ranks": ranks,  # ranks of the job (its world size); 1 for a single process
        "nodes": nodes,
        "backend": distributed.get("backend") if isinstance(distributed, dict) else None,
        "abort_reason": reason if isinstance(reason := doc["run"].get("abort_reason"), str) else None,
        "per_rank": (per_rank or {}).get(case.get("index"), []),
        "operating_point": operating,  # the power limit / locked clocks a sweep set (None: as found)
        "op_label": op_label(operating),  # "450 W", "1410 MHz", "450 W, 1410 MHz"; "" as found
        "operating_params": operating_params,  # parameters that are operating points of one case (llm: batch)
    }


def load(paths: Iterable[str | Path], strict: bool = True, on_skip: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Load result files and folders into one DataFrame, one row per case (columns: COLUMNS).

    strict: a file that cannot be read (damaged, truncated, not JSON, another schema, a case
    with a field of the wrong type) is a ResultFileError naming it; what a gate must do.
    Otherwise such a file is skipped, `on_skip` gets one line naming it and why, and the rest is
    loaded; what a report over a shared folder wants. Either way it is an error when no file
    could be read.
    """
    rows: list[dict[str, Any]] = []
    files = result_files(paths)
    skipped: list[ResultFileError] = []
    for path in files:
        try:
            rows.extend(_file_rows(read_run(path), path))
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


def _file_rows(doc: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The rows of one file's cases; a case that cannot be read (a field of the wrong type) is a
    ResultFileError naming the file and the case, not a traceback."""
    rows = []
    per_rank = _rank_index(doc)
    for i, case in enumerate(doc["cases"]):
        try:
            rows.append(case_row(doc, case, str(path), per_rank))
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            why = str(exc) if type(exc) is ValueError else f"{type(exc).__name__}: {exc}"
            raise ResultFileError(f"{path}: damaged result file: case {i}: {why}") from None
    return rows


Row = namedtuple("Row", COLUMNS)  # type: ignore[misc]


def records(df: pd.DataFrame) -> list[Any]:
    """The rows of a loaded frame as named tuples (fields: COLUMNS), built column by column:
    pandas' itertuples reads string columns element by element, 0.5 s at 10,000 cases."""
    return [Row(*values) for values in zip(*(df[c].tolist() for c in COLUMNS), strict=True)]
