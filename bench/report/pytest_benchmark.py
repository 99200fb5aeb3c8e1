"""Export wattbench results in pytest-benchmark's JSON storage format.

Why: pytest-benchmark's JSON (what `pytest --benchmark-json` and `--benchmark-save` write) is
read by `pytest-benchmark compare` and by CI tools that chart benchmark history. Exporting
wattbench runs in that format lets those tools show them beside ordinary pytest benchmarks.

What: one benchmark per case whose status is "ok" (failed, oom, skipped and interrupted cases
have no timings and are left out). Its statistics come from the case's `raw_seconds` through
pytest-benchmark's own `Stats` class, so min, quartiles, outliers and ops are computed exactly
as pytest-benchmark computes them:

* one round per harness repeat; each datum is that repeat's mean seconds per iteration, and
  `iterations` is the harness's iterations per repeat -- the same meaning as pytest-benchmark's
  data (round duration / iterations). `ops` is therefore iterations per second;
* name "matmul[m=64,n=64,k=64,dtype=float32]@cpu", fullname "wattbench::" + name, group = the
  workload, params = the case's parameters (as formatted in the result file) plus the device, so
  `--group-by param:dtype` works;
* extra_info carries what pytest-benchmark has no field for: throughput, work unit, energy,
  average watts, energy source, efficiency (work per joule), device name, host and run.

Names are stable across runs so two exports can be compared (`pytest-benchmark compare A B`,
`--between`). Where the frame holds the same case more than once (several runs), the later
copies get "#<run id prefix>" appended so that no two benchmarks of one document share a name.

pytest-benchmark is a test extra of wattbench; without it this module raises `UsageError`
naming `pip install pytest-benchmark`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd

import bench
from bench.errors import UsageError
from bench.params import ParamSchema, exact_value, format_exact

INSTALL_HINT = (
    "the pytest-benchmark format needs pytest-benchmark: pip install pytest-benchmark (or pip install 'wattbench[test]')"
)
FULLNAME_PREFIX = "wattbench::"


def _pytest_benchmark() -> tuple[type, str]:
    """pytest-benchmark's Stats class and version, or a UsageError saying how to install it."""
    try:
        import pytest_benchmark
        from pytest_benchmark.stats import Stats
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return Stats, str(pytest_benchmark.__version__)


def _plain(value: Any) -> Any:
    """A JSON-ready Python value: numpy scalars unwrapped, NaN / NA / NaT become None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, dict, str, bool)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        return value
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def exact_params(row: Mapping[str, Any]) -> str:
    """'m=64,n=64,k=64,dtype=float32': the case's parameters as its id writes them."""
    params = row.get("params_dict")
    schema = row.get("param_schema")
    if not isinstance(params, dict):
        return ""
    return format_exact(params, schema if isinstance(schema, ParamSchema) else ParamSchema())


def benchmark_name(row: Mapping[str, Any]) -> str:
    """'matmul[m=64,n=64,k=64,dtype=float32]@cpu': workload, parameters and device of a case."""
    return f"{row['workload']}[{exact_params(row)}]@{row['device']}"


def _timer_name(device: str) -> str:
    return "torch.cuda.Event" if str(device).startswith("cuda") else "time.perf_counter_ns"


def _extra_info(row: Mapping[str, Any]) -> dict[str, Any]:
    unit = _plain(row.get("work_unit"))
    energy_source = _plain(row.get("energy_source"))
    return {
        "throughput": _plain(row.get("throughput")),
        "throughput_unit": f"{unit}/s" if unit else None,
        "work_unit": unit,
        "work_per_iter": _plain(row.get("work_per_iter")),
        "energy_j": _plain(row.get("energy_j")),
        "avg_watts": _plain(row.get("avg_watts")),
        "energy_source": energy_source,
        "energy_estimate": energy_source == "nominal" if energy_source else None,
        "efficiency": _plain(row.get("efficiency")),
        "efficiency_unit": f"{unit}/J" if unit else None,
        "device": _plain(row.get("device")),
        "device_name": _plain(row.get("device_name")),
        "hostname": _plain(row.get("hostname")),
        "run_id": _plain(row.get("run_id")),
        "case_id": _plain(row.get("case_id")),
        "flags": _plain(row.get("flags")) or "",
    }


def _stats(stats_cls: type, raw: list[float], iterations: int) -> dict[str, Any]:
    stats = stats_cls()
    for seconds in raw:
        stats.update(float(seconds))
    out = stats.as_dict()
    out["iterations"] = iterations
    out["data"] = [float(s) for s in raw]
    return out


def _benchmark(stats_cls: type, row: Mapping[str, Any], name: str) -> dict[str, Any]:
    raw = row.get("params_dict")
    params = {
        **({k: exact_value(v, None) for k, v in raw.items()} if isinstance(raw, dict) else {}),
        "device": str(row["device"]),
    }
    iterations = _plain(row.get("iterations"))
    return {
        "group": str(row["workload"]),
        "name": name,
        "fullname": FULLNAME_PREFIX + name,
        "params": params,
        "param": f"{_plain(row.get('params')) or ''}@{row['device']}",
        "extra_info": _extra_info(row),
        "options": {"timer": _timer_name(str(row["device"])), "disable_gc": False, "warmup": True, "source": "wattbench"},
        "stats": _stats(stats_cls, list(row["raw_seconds"]), int(iterations) if iterations else 1),
    }


def _joined(values: Any) -> str | None:
    unique = [str(v) for v in dict.fromkeys(values) if _plain(v) is not None]
    return "+".join(unique) if unique else None


def to_pytest_benchmark(df: pd.DataFrame) -> dict[str, Any]:
    """The cases of `df` (from `bench.report.load.load`) as one pytest-benchmark JSON document."""
    stats_cls, version = _pytest_benchmark()
    ok = df[(df["status"] == "ok") & df["raw_seconds"].map(lambda r: isinstance(r, list) and len(r) > 0)]
    benchmarks: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in ok.to_dict(orient="records"):
        name = benchmark_name(row)
        if name in seen:
            name = f"{name}#{str(row.get('run_id') or '')[:8]}"
        seen.add(name)
        benchmarks.append(_benchmark(stats_cls, row, name))

    devices = {str(d): _plain(n) for d, n in zip(ok["device"], ok["device_name"], strict=True)}
    started = sorted(str(s) for s in ok["started_at"] if _plain(s) is not None)
    return {
        "machine_info": {
            "node": _joined(ok["hostname"]),
            "devices": devices,
            "wattbench_version": bench.__version__,
        },
        "commit_info": {
            "id": "unversioned",
            "time": None,
            "author_time": None,
            "dirty": False,
            "project": "wattbench",
            "branch": "(unknown)",
            "wattbench_runs": list(dict.fromkeys(str(r) for r in ok["run_id"])),
        },
        "benchmarks": benchmarks,
        # pytest-benchmark records when the session ran; here: when the latest exported run began.
        "datetime": started[-1] if started else datetime.now(UTC).isoformat(),
        "version": version,
    }


def export_text(df: pd.DataFrame) -> str:
    """`to_pytest_benchmark(df)` as indented JSON text (what `--benchmark-json` would write)."""
    return json.dumps(to_pytest_benchmark(df), indent=4, allow_nan=False) + "\n"
