"""One case's figures as table text: rates, watts, joules, energy per work, peaks, sparklines.

Shared by the tables and the exports, so a figure reads the same everywhere. A figure that
rests on a nominal wattage carries a '~' (an estimate).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from bench.params import exact_value
from bench.params import shown_params as shown
from bench.report.carbon import GridIntensity, grams_co2e
from bench.report.peaks import CACHE_FACTOR, DEVICE_MEMORY_OPS, find_peak, past_cache, percent_of_peak
from bench.units import format_efficiency, format_energy_per_work, format_joules

SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 12
CARBON_SCALE = {"FLOP": (1e15, "PFLOP"), "byte": (1e12, "TB"), "token": (1e6, "Mtok")}
QUIET_FLAGS = frozenset({"power_unmeasured"})  # said once per report, not on every row
COLLECTIVE = "collective"
BUS_TERM = "bus_byte"  # a collective's work term: the bytes its bus bandwidth counts (nccl-tests' busbw)


def value(v: Any) -> Any:
    """None for a missing figure (None or NaN), else the figure."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def percent(v: Any) -> str:
    v = value(v)
    return "-" if v is None else f"{100 * v:.1f}%"


def estimated(row: Any, text: str) -> str:
    """'~' in front of a figure that rests on a nominal wattage (an estimate)."""
    return f"~{text}" if text != "-" and value(row.energy_estimate) else text


def watts(row: Any) -> str:
    """Average watts of the case's timed window."""
    w = value(row.avg_watts)
    return estimated(row, "-" if w is None else f"{w:.1f} W")


def node_watts(row: Any) -> str:
    """Average watts of the whole node over the case's windows (its BMC, boundary node), with
    the node's watts over the device's where both were measured: "812.3 W (x1.62)"."""
    node, device = value(getattr(row, "node_avg_watts", None)), value(row.avg_watts)
    if node is None:
        return "-"
    ratio = f" (x{node / device:.2f})" if device and not value(row.energy_estimate) else ""
    return f"{node:.1f} W{ratio}"


def joules(row: Any) -> str:
    """Energy of the case's timed window."""
    return estimated(row, format_joules(value(row.energy_j)))


def efficiency(row: Any) -> str:
    """Work per joule (= throughput per watt)."""
    v = value(row.efficiency)
    return estimated(row, "-" if v is None else format_efficiency(v, row.work_unit))


def energy_per_work(row: Any) -> str:
    return estimated(row, format_energy_per_work(value(row.efficiency), row.work_unit))


def count(n: Any) -> int:
    """A count of ranks or nodes from a frame (numpy or Python number); 1 where absent."""
    n = value(n)
    return int(float(n)) if isinstance(n, numbers.Real) and not isinstance(n, bool) and float(n) >= 1 else 1


def ranks(row: Any) -> int:
    """The ranks of the row's job (1 for a single process, and for frames without the column)."""
    return count(getattr(row, "ranks", None))


def _per_device(figure: Any, row: Any) -> Any:
    """A job's figure (work or a rate, summed over its ranks) as one device's share: what a
    single device's datasheet peak or cache bounds. Each rank runs on its own device."""
    figure = value(figure)
    return figure / ranks(row) if isinstance(figure, (int, float)) else figure


def peak_percent(row: Any, throughput: Any = None) -> float | None:
    """Percent of the vendor's datasheet peak of `throughput` (default: the row's) on the row's
    device (per device for a multi-rank job); None where unknown, and for a memory rate whose
    bytes per iteration are under 4x the device's L2 (the cache, not the memory, served it:
    bench.report.peaks.past_cache)."""
    params = row.params_dict if isinstance(getattr(row, "params_dict", None), dict) else {}
    figure = _per_device(throughput if throughput is not None else row.throughput, row)
    return percent_of_peak(
        row.device_name,
        row.workload,
        value(row.dtype),
        figure or 0.0,
        row.work_unit,
        op=params.get("op"),
        bytes_per_iter=_per_device(getattr(row, "work_per_iter", None), row),
        cache_bytes=value(getattr(row, "cache_bytes", None)),
    )


def cache_served(row: Any) -> bool:
    """True for a memory rate of known hardware that gets no % of peak only because its bytes per
    iteration fit in CACHE_FACTOR x the L2: the cache served them, so no HBM figure bounds it."""
    params = row.params_dict if isinstance(getattr(row, "params_dict", None), dict) else {}
    return (
        row.status == "ok"
        and row.work_unit == "byte"
        and row.workload == "membw"
        and params.get("op") in DEVICE_MEMORY_OPS
        and find_peak(row.device_name) is not None
        and not past_cache(_per_device(getattr(row, "work_per_iter", None), row), value(getattr(row, "cache_bytes", None)))
    )


CACHE_NOTE = (
    f"no % of peak where the working set is under {CACHE_FACTOR}x the L2: the cache serves it, "
    "so no memory-bandwidth peak bounds it"
)


def utilization(row: Any, term: str) -> str:
    """MFU (term "FLOP": achieved FLOP/s over the dense peak of the case's dtype) or MBU ("byte":
    achieved bytes/s over the memory bandwidth) of a case whose throughput unit is another (llm:
    tokens), from its work terms; '-' where the hardware's peak is unknown."""
    terms = getattr(row, "work_terms", None)
    seconds = value(row.seconds_per_iter)
    if row.status != "ok" or row.work_unit == term or not isinstance(terms, dict) or not terms.get(term) or not seconds:
        return "-"
    peak = find_peak(row.device_name)
    if peak is None:
        return "-"
    ceiling = peak.dense_flops.get(value(row.dtype) or "") if term == "FLOP" else peak.memory_bandwidth_bytes_per_s
    return f"{100 * terms[term] / ranks(row) / seconds / ceiling:.1f}%" if ceiling else "-"


def is_collective(row: Any) -> bool:
    """A collective case (nccl-tests' figures apply): the collective workload, or any case
    whose work terms count bus bytes."""
    terms = getattr(row, "work_terms", None)
    return row.workload == COLLECTIVE or (isinstance(terms, dict) and BUS_TERM in terms)


def busbw(row: Any, throughput: Any = None) -> float | None:
    """Bus bandwidth in bytes/s: the algorithm bandwidth (the job's bytes per second, the row's
    throughput or `throughput`) times the op's factor, bus bytes over bytes (nccl-tests:
    2(n-1)/n for all_reduce, (n-1)/n for all_gather, reduce_scatter, all_to_all, 1 for
    broadcast). None without both terms or a rate."""
    terms = getattr(row, "work_terms", None)
    rate = value(throughput if throughput is not None else row.throughput)
    if not isinstance(terms, dict) or rate is None or row.work_unit != "byte":
        return None
    bus, moved = value(terms.get(BUS_TERM)), value(terms.get("byte"))
    return rate * bus / moved if isinstance(bus, (int, float)) and isinstance(moved, (int, float)) and moved > 0 else None


def gb_per_s(rate: Any) -> str:
    """A bandwidth as nccl-tests prints it: GB/s (1e9 bytes), two decimals."""
    rate = value(rate)
    return "-" if rate is None else f"{rate / 1e9:.2f}"


def microseconds(seconds: Any) -> str:
    """A time as nccl-tests prints it: microseconds, one decimal."""
    seconds = value(seconds)
    return "-" if seconds is None else f"{seconds * 1e6:.1f}"


def collective_size(row: Any) -> str:
    """A collective's total buffer (its `size` parameter), compact: 256MiB."""
    params = row.params_dict if isinstance(getattr(row, "params_dict", None), dict) else {}
    size = params.get("size")
    return "-" if size is None else exact_value(size, "bytes")


def peak_share(row: Any) -> str:
    """Share of the vendor's datasheet peak for known hardware; '-' where unknown (never a guess)
    and for memory rates of sizes that fit in 4x the L2 (peak_percent)."""
    share = peak_percent(row)
    return "-" if share is None else f"{share:.1f}%"


def shown_params(row: Any, ran: bool = True) -> dict[str, Any]:
    """The case's parameters as a table shows them (bench.params.shown_params)."""
    params = row.params_dict if isinstance(getattr(row, "params_dict", None), dict) else {}
    details = getattr(row, "details", None)
    return shown(params, details if isinstance(details, dict) else {}, ran)


def source(row: Any) -> str:
    """The energy source as a table shows it, with its boundary where the joules include more
    than the device (a node's BMC, a wall meter): "ipmi_dcmi [node]"."""
    src = value(row.energy_source)
    if src is None:
        return "-"
    text = f"{src} (estimate)" if value(row.energy_estimate) else src
    boundary = value(getattr(row, "energy_boundary", None))
    return f"{text} [{boundary}]" if boundary and boundary != "device" else text


def shown_flags(flags: Any) -> list[str]:
    """The flags a table shows on the row (the rest are said once for the whole report)."""
    text = value(flags)
    return [f for f in str(text).split(",") if f and f not in QUIET_FLAGS] if text else []


def sparkline(trace: Any, width: int = SPARK_WIDTH) -> str:
    """Power over time in `width` block characters, scaled from the trace's min to its max."""
    if not isinstance(trace, list) or len(trace) < 2:
        return ""
    step = len(trace) / width
    points = [trace[int(i * step)] for i in range(width)] if len(trace) > width else trace
    low, high = min(points), max(points)
    if high - low < 1e-9:
        return SPARK[len(SPARK) // 2] * len(points)
    return "".join(SPARK[min(len(SPARK) - 1, int((w - low) / (high - low) * len(SPARK)))] for w in points)


def carbon_per_work(work_per_joule: Any, unit: str, grid: GridIntensity) -> str:
    """gCO2e per PFLOP, per TB moved or per million tokens, from work per joule and the grid."""
    v = value(work_per_joule)
    if v is None or v <= 0 or unit not in CARBON_SCALE:
        return "-"
    scale, label = CARBON_SCALE[unit]
    return f"{grams_co2e(scale / v, grid):.3g} g/{label}"
