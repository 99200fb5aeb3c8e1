"""Result files: schema "wattbench.run/1", atomic writes, and loading into pandas.

The runner writes the file after every case (temp file + rename), so a crash or Ctrl-C loses at
most the case in flight. The reporter only reads files: `load()` returns one DataFrame row per
case. Loading never uses pickle or eval; a damaged file or an unknown schema is a
`ResultFileError` that names the file.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from bench.errors import ResultFileError, UsageError

SCHEMA = "wattbench.run/1"
CASE_STATUSES = ("ok", "failed", "oom", "skipped", "interrupted")
REQUIRED = {
    "run": ("id", "started_at", "wattbench_version", "command", "status"),
    "host": ("hostname", "os", "python", "torch"),
}
REQUIRED_CASE = ("id", "workload", "params", "device", "status")

COLUMNS = [
    "file", "run_id", "run_status", "started_at", "hostname", "device", "device_name", "driver", "power_limit_w",
    "hardware", "case_id",
    "workload", "params", "params_dict", "dtype", "status", "error", "work_unit", "work_per_iter", "iterations",
    "repeats", "seconds_per_iter", "cv", "throughput", "throughput_min", "throughput_max",
    "energy_j", "avg_watts", "peak_watts", "energy_source", "energy_estimate", "dynamic_energy_j", "efficiency", "peak_memory_bytes",
    "max_rel_error", "flags", "raw_seconds", "round_repeats", "round_watts", "power_trace_w",
]


def atomic_write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def default_file_name(run_id: str, started_at: str, hostname: str, device_names: Sequence[str]) -> str:
    """e.g. 20261124T131905Z_myhost_nvidia-h100-80gb-hbm3_1a2b3c4d.json"""
    stamp = re.sub(r"[-:]", "", started_at.split(".")[0]) + "Z"
    devices = "+".join(_slug(n) for n in dict.fromkeys(device_names))
    return f"{stamp}_{_slug(hostname)}_{devices}_{run_id[:8]}.json"


def output_path(out: str | None, default_name: str) -> Path:
    """--out names a .json file, or a folder to put a file of the default name in (results/ if none)."""
    if out is None:
        return Path("results") / default_name
    path = Path(out)
    if path.suffix == ".json":
        if path.is_dir():
            raise UsageError(f"--out {out}: is a folder, not a .json file")
        return path
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder; give a folder or a .json file name")
    return path / default_name


class RunFile:
    """A run's result document on disk, rewritten atomically after each change."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc
        self._slots: list[int] = []  # plan index of each entry of doc["cases"] written by put_case
        self.save()

    @property
    def cases(self) -> list[dict[str, Any]]:
        return self.doc["cases"]

    def put_case(self, slot: int, case: dict[str, Any], save: bool = True) -> None:
        """Write the record of the case at plan index `slot`: replace the one written before
        (a later round), or insert it so that the cases stay in plan order."""
        at = bisect.bisect_left(self._slots, slot)
        if at < len(self._slots) and self._slots[at] == slot:
            self.doc["cases"][at] = case
        else:
            self._slots.insert(at, slot)
            self.doc["cases"].insert(at, case)
        if save:
            self.save()

    def finish(self, status: str, finished_at: str) -> None:
        self.doc["run"]["status"] = status
        self.doc["run"]["finished_at"] = finished_at
        self.save()

    def save(self) -> None:
        try:
            atomic_write_json(self.path, self.doc)
        except OSError as exc:
            raise UsageError(f"cannot write result file {self.path}: {exc.strerror or exc}") from None


def _check(doc: Any, path: Path) -> dict[str, Any]:
    def fail(msg: str) -> ResultFileError:
        return ResultFileError(f"{path}: {msg}")

    if not isinstance(doc, dict):
        raise fail("not a wattbench result file (top level is not an object)")
    schema = doc.get("schema")
    if schema != SCHEMA:
        raise fail(f"unknown schema {schema!r}; this wattbench reads {SCHEMA!r}")
    for section, keys in REQUIRED.items():
        if not isinstance(doc.get(section), dict):
            raise fail(f"damaged result file: missing section {section!r}")
        missing = [k for k in keys if k not in doc[section]]
        if missing:
            raise fail(f"damaged result file: {section} lacks {', '.join(missing)}")
    if not isinstance(doc.get("devices"), list) or not isinstance(doc.get("cases"), list):
        raise fail("damaged result file: devices and cases must be lists")
    for i, case in enumerate(doc["cases"]):
        if not isinstance(case, dict):
            raise fail(f"damaged result file: case {i} is not an object")
        missing = [k for k in REQUIRED_CASE if k not in case]
        if missing:
            raise fail(f"damaged result file: case {i} lacks {', '.join(missing)}")
        if case["status"] not in CASE_STATUSES:
            raise fail(f"damaged result file: case {i} has unknown status {case['status']!r}")
    return doc


def read_run(path: Path) -> dict[str, Any]:
    """Read and validate one result file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ResultFileError(f"{path}: damaged result file: not UTF-8 text") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: damaged result file: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return _check(doc, path)


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively for *.json) into result files, in order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.json") if not p.name.startswith("."))
            if not found:
                raise UsageError(f"{path}: no result files (*.json) in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return list(dict.fromkeys(files))


def hardware_label(name: str, driver: str | None, power_limit_w: float | None) -> str:
    """How reports name a machine: device name, with driver and power limit where known."""
    extras = [f"driver {driver}" if driver else "", f"{power_limit_w:.0f} W" if power_limit_w else ""]
    extras = [e for e in extras if e]
    return f"{name} ({', '.join(extras)})" if extras else name


def _round_repeats(case: dict[str, Any], samples: int) -> list[int]:
    """How many of the case's raw samples each round gave, in order ([samples]: one round)."""
    rounds = case.get("rounds")
    if isinstance(rounds, list) and rounds:
        counts = [r.get("repeats") if isinstance(r, dict) else None for r in rounds]
        if all(isinstance(c, int) and c > 0 for c in counts) and sum(counts) == samples:
            return counts
    return [samples] if samples else []


def _round_watts(case: dict[str, Any], rounds: int) -> list[float] | None:
    """Each round's average watts, when every one of the `rounds` rounds has a figure."""
    listed = case.get("rounds")
    if not isinstance(listed, list) or len(listed) != rounds or rounds < 2:
        return None
    watts = [r.get("avg_watts") if isinstance(r, dict) else None for r in listed]
    return [float(w) for w in watts] if all(isinstance(w, (int, float)) and w > 0 for w in watts) else None


def case_row(doc: dict[str, Any], case: dict[str, Any], file: str) -> dict[str, Any]:
    """Flatten one case of a run into a DataFrame row (see COLUMNS)."""
    from bench.plan import format_params

    devices = {d.get("id"): d for d in doc.get("devices", []) if isinstance(d, dict)}
    seconds = case.get("seconds_per_iter") or {}
    throughput = case.get("throughput") or {}
    energy = case.get("energy") or {}
    memory = case.get("memory") or {}
    verify = case.get("verify") or {}
    params = case.get("params") or {}
    device = devices.get(case["device"], {})
    device_name = device.get("name", case["device"])
    raw = case.get("raw_seconds") or []
    driver = doc["host"].get("driver")
    power_limit = device.get("power_limit_w")
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
        "hardware": hardware_label(device_name, driver if case["device"] != "cpu" else None, power_limit),
        "case_id": case["id"],
        "workload": case["workload"],
        "params": format_params(params, case["workload"]),
        "params_dict": params,
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
        "flags": ",".join(case.get("flags") or []),
        "raw_seconds": raw,
        "round_repeats": (counts := _round_repeats(case, len(raw))),
        "round_watts": _round_watts(case, len(counts)),
        "power_trace_w": [w for _, w in energy.get("trace") or []],
    }


def load(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Load result files and folders into one DataFrame, one row per case (columns: COLUMNS)."""
    rows = []
    for path in result_files(paths):
        doc = read_run(path)
        rows.extend(case_row(doc, case, str(path)) for case in doc["cases"])
    return pd.DataFrame(rows, columns=COLUMNS)
