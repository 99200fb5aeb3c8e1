"""A run's rows in the fleet store: one per case and device (a job's rank), as columns.

What a fleet compares is one GPU against its siblings, so a merged job's file gives a row per
case per rank, from the rank's own figures of the case (the file's `ranks` section) and the
rank's device (its serial, module id, firmware and health); a single-process run gives one row
per case, its device the case's. Raw repeat times and power traces are left out: they stay in
the result files, which the store names (`file`) for anyone who wants them.

The columns and their types are `COLUMNS`. Figures are read through the typed record
(bench/record.py: a file is checked as `report` checks it); the few a rank's figures hold as
plain JSON are checked here (a number, or nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from bench.merge import rank_case
from bench.params import ParamSchema, canonical_key, format_compact, shown_params
from bench.record import CaseRecord, DeviceRecord, JsonObject, RankRecord, RunRecord
from bench.report.load import hardware_label, op_label, operating_suffix
from bench.units import finite_number

__all__ = ["COLUMNS", "HEALTH_KEYS", "KEY", "Rows", "rows_of"]

# name -> type ("str", "int", "float", "bool", "ts": a UTC timestamp), in the store's order.
COLUMNS: dict[str, str] = {
    # where it comes from
    "run_id": "str",
    "file": "str",
    "run_status": "str",
    "started_at": "ts",
    # where it ran: the node, the slot, the GPU
    "host": "str",
    "node_rank": "int",
    "rank": "int",
    "slot": "int",  # the rank's local rank: the GPU's place on its node
    "device_id": "str",
    "device_name": "str",
    "hardware": "str",  # one device, as reports name it ("NVIDIA H100 80GB HBM3 (driver 560.35.03)")
    "uuid": "str",
    "serial": "str",
    "module_id": "int",
    "pci_bus_id": "str",
    "vbios": "str",
    "driver": "str",
    "torch": "str",
    "power_limit_w": "float",
    # the case
    "case_index": "int",
    "case_id": "str",
    "case_key": "str",
    "workload": "str",
    "params": "str",
    "dtype": "str",
    "op_label": "str",
    "work_unit": "str",
    "status": "str",
    "error": "str",
    # its figures on this device
    "throughput": "float",  # work units per second (median)
    "seconds_per_iter": "float",
    "energy_j": "float",
    "avg_watts": "float",
    "efficiency": "float",  # work units per joule
    "energy_per_unit": "float",  # joules per work unit
    "energy_source": "str",
    "energy_boundary": "str",
    "sm_clock_mhz": "float",
    "mean_temperature_c": "float",
    "max_temperature_c": "float",
    "throttle_reasons": "str",  # comma-separated ("hw_thermal,sw_power_cap"); "" when none
    "flags": "str",
    "peak_memory_bytes": "float",
    # the GPU's health at the end of the run (bench.device.base.GpuHealth)
    "pcie_gen": "int",
    "pcie_gen_max": "int",
    "pcie_width": "int",
    "pcie_width_max": "int",
    "ecc_uncorrected": "int",
    "remapped_rows_pending": "bool",
    "remapped_rows_failure": "bool",
    "xid_events": "str",  # the Xid events seen during the run, comma-separated ("" none seen; null not watched)
}
HEALTH_KEYS = (
    "pcie_gen",
    "pcie_gen_max",
    "pcie_width",
    "pcie_width_max",
    "ecc_uncorrected",
    "remapped_rows_pending",
    "remapped_rows_failure",
)
KEY = ("run_id", "case_index", "rank")  # what identifies a row
THROTTLED = "throttled:"

Rows = dict[str, list[Any]]


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _flags(flags: Iterable[object]) -> tuple[str, str]:
    """(throttle reasons, other flags), each comma-separated."""
    words = [str(f) for f in flags]
    throttled = [w.removeprefix(THROTTLED) for w in words if w.startswith(THROTTLED)]
    return ",".join(throttled), ",".join(w for w in words if not w.startswith(THROTTLED))


def _device_columns(device: Mapping[str, object], driver: str | None, torch: str | None) -> dict[str, Any]:
    name = _text(device.get("name")) or _text(device.get("id")) or "?"
    gpu = device.get("kind") != "cpu"
    health = device.get("health")
    health = health if isinstance(health, dict) else {}
    return {
        "device_id": _text(device.get("id")),
        "device_name": name,
        "hardware": hardware_label(name, driver if gpu else None),
        "uuid": _text(device.get("uuid")),
        "serial": _text(device.get("serial")),
        "module_id": _whole(device.get("module_id")),
        "pci_bus_id": _text(device.get("pci_bus_id")),
        "vbios": _text(device.get("vbios")),
        "driver": driver if gpu else None,
        "torch": torch,
        "power_limit_w": finite_number(device.get("power_limit_w")),
        **{k: (_flag(health.get(k)) if k.startswith("remapped") else _whole(health.get(k))) for k in HEALTH_KEYS},
        "xid_events": ",".join(str(x) for x in health["xid_events"]) if isinstance(health.get("xid_events"), list) else None,
    }


def _case_columns(run: RunRecord, case: CaseRecord, position: int) -> dict[str, Any]:
    """What every row of a case shares, whichever device it ran on."""
    schema_doc = (run.workloads or {}).get(case.workload or "")
    params, details = case.params or {}, case.details or {}
    point = case.operating_point
    return {
        "case_index": _whole(case.index) if _whole(case.index) is not None else position,
        "case_id": case.id,
        "case_key": canonical_key(str(case.workload), params) + operating_suffix(str(case.id), str(case.device)),
        "workload": case.workload,
        "params": format_compact(shown_params(params, details), ParamSchema.from_dict(schema_doc)),
        "dtype": _text(params.get("dtype")),
        "op_label": op_label(point.to_json() if point is not None and point.layout else None),
        "work_unit": case.work_unit,
    }


def _rank_figures(entry: JsonObject) -> dict[str, Any]:
    """One rank's figures of a case (a merged file's `ranks[].cases[]` entry)."""
    raw_flags = entry.get("flags")
    throttled, flags = _flags(raw_flags if isinstance(raw_flags, list) else ())
    efficiency = finite_number(entry.get("efficiency"))
    return {
        "status": _text(entry.get("status")),
        "error": _text(entry.get("error")),
        "throughput": finite_number(entry.get("throughput")),
        "seconds_per_iter": finite_number(entry.get("seconds_per_iter")),
        "energy_j": finite_number(entry.get("energy_j")),
        "avg_watts": finite_number(entry.get("avg_watts")),
        "efficiency": efficiency,
        "energy_per_unit": 1.0 / efficiency if efficiency else None,
        "energy_source": _text(entry.get("energy_source")),
        "energy_boundary": _text(entry.get("energy_boundary")),
        "sm_clock_mhz": finite_number(entry.get("sm_clock_mhz")),
        "mean_temperature_c": finite_number(entry.get("mean_temperature_c")),
        "max_temperature_c": finite_number(entry.get("max_temperature_c")),
        "throttle_reasons": throttled,
        "flags": flags,
        "peak_memory_bytes": finite_number(entry.get("peak_memory_bytes")),
    }


def _ranks(run: RunRecord) -> list[tuple[RankRecord, dict[int, JsonObject]]]:
    """Each rank with its case figures by plan index."""
    found = []
    for entry in run.ranks or ():
        by_index: dict[int, JsonObject] = {}
        for case in entry.cases if isinstance(entry.cases, list) else []:
            index = _whole(case.get("index")) if isinstance(case, dict) else None
            if isinstance(case, dict) and index is not None:
                by_index[index] = case
        found.append((entry, by_index))
    return found


def rows_of(run: RunRecord, file: str) -> Rows:
    """The store's rows of one run (see the module docstring), as columns (COLUMNS' order)."""
    info, host = run.run, run.host
    assert info is not None and host is not None  # from_json requires both
    rows: Rows = {name: [] for name in COLUMNS}
    common = {"run_id": info.id, "file": file, "run_status": info.status, "started_at": _timestamp(info.started_at)}
    driver, torch = host.driver, host.torch
    ranks = _ranks(run)
    devices = {d.id: d.to_json() for d in run.devices or () if isinstance(d, DeviceRecord)}

    def add(values: Mapping[str, Any]) -> None:
        for name, column in rows.items():
            column.append(values.get(name))

    rank_devices = [(entry, _device_columns(entry.device or {}, driver, torch)) for entry, _ in ranks]
    for position, case in enumerate(run.case_list()):
        shared = _case_columns(run, case, position)
        if ranks:
            for (entry, device), (_, by_index) in zip(rank_devices, ranks, strict=True):
                figures = by_index.get(shared["case_index"])
                if figures is None:
                    continue
                where = {
                    "host": entry.host,
                    "node_rank": _whole(entry.node_rank),
                    "rank": _whole(entry.rank),
                    "slot": _whole(entry.local_rank),
                }
                add({**common, **where, **device, **shared, **_rank_figures(figures)})
        else:
            device = _device_columns(devices.get(str(case.device)) or {"id": case.device}, driver, torch)
            where = {"host": host.hostname, "node_rank": 0, "rank": 0, "slot": 0}
            add({**common, **where, **device, **shared, **_rank_figures(rank_case(case, position))})  # as a job's one rank
    return rows
