"""Vendor datasheet peaks of common data-center GPUs, to put a measured rate next to its ceiling.

A throughput on its own says little across hardware: 400 TFLOP/s of bfloat16 is most of an A100
but well under half of an H100. This table holds what each vendor prints for one board, so a result
can be read as a percent of peak: FLOP/s against the dense tensor (or plain FP32) rate of the dtype
the case ran in, bytes/s against the memory bandwidth.

What the figures are:

- vendor peaks at boost clock, as printed in the datasheet or spec page named in `source`; they are
  not measured, and sustained clocks under a power cap are lower, so 100% is not reachable;
- dense: NVIDIA prints tensor-core figures with 2:4 structured sparsity (marked *); they are
  halved here. AMD prints dense figures with sparsity listed separately;
- `float32` is plain FP32 (CUDA cores / vector ALUs, TF32 off), `tf32` the TF32 tensor rate;
- decimal units throughout: 1 TFLOP/s = 1e12 FLOP/s, 1 TB/s = 1e12 B/s;
- a figure that could not be checked against a vendor document is left out rather than guessed,
  and so is a board (or a variant of one) whose device name cannot be told apart.

Boards are recognised from the name torch or NVML reports ("NVIDIA H100 80GB HBM3", "NVIDIA A100
80GB PCIe", "AMD Instinct MI300X"). Each `Peak.match` holds regular expressions that must match the
whole lowercased, whitespace-collapsed name, so "NVIDIA H100 PCIe" never reads as the SXM part,
"NVIDIA H100 NVL" or "NVIDIA H200 NVL" (not listed) match nothing, and a MIG slice ("... MIG
1g.10gb") matches nothing either, since its peak is a fraction of the board's. Anything else gives
None. A partitioned AMD GPU (CPX mode) reports the board's name and cannot be told apart from it.

AMD Instinct MI250X is not listed, by the rule above: torch sees each of its two dies (GCDs) as
a device, so the right peak is half the board's, and the name the driver reports, "AMD Instinct
MI250X / MI250", is the MI250's too (208 vs 220 CUs): the board cannot be told from the name.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

T = 1e12  # FLOP/s per TFLOP/s, B/s per TB/s

# The dtypes wattbench's FLOP workloads name (matmul: all five; attention: float32, bfloat16, float16).
DTYPES = ("float32", "tf32", "bfloat16", "float16", "float8")
# Workloads whose work unit is FLOP and whose rate the dense tensor / FP32 peak bounds.
FLOP_WORKLOADS = frozenset({"matmul", "attention"})
# membw kernels that stay in device memory; h2d, d2h and p2p copies are bound by PCIe, NVLink or
# the copy engines, not by HBM/GDDR, and d2d counts its bytes once (nvbandwidth) though the memory
# moves them twice, so no peak here applies to them.
DEVICE_MEMORY_OPS = frozenset({"copy", "scale", "add", "triad", "dot"})
# A memory rate is compared with the memory's peak only when the bytes one iteration touches are
# at least this many times the device's last cache (the GPU's L2: 50 MiB on H100 and H200), as
# STREAM's rules ask: a smaller working set is served (partly) by the cache, which is faster than
# HBM, so copy at 16 MiB can read over 100% of it.
CACHE_FACTOR = 4


@dataclass(frozen=True)
class Peak:
    """One board's vendor peaks. `dense_flops` maps a wattbench dtype to dense FLOP/s."""

    model: str
    match: tuple[str, ...]
    dense_flops: Mapping[str, float] = field(hash=False)
    memory_bandwidth_bytes_per_s: float
    tdp_w: float
    source: str
    _patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.dense_flops) - set(DTYPES)
        if unknown:
            raise ValueError(f"{self.model}: unknown dtypes {sorted(unknown)}")
        object.__setattr__(self, "dense_flops", MappingProxyType(dict(self.dense_flops)))
        object.__setattr__(self, "_patterns", tuple(re.compile(p) for p in self.match))

    def matches(self, device_name: str) -> bool:
        name = _normalise(device_name)
        return any(p.fullmatch(name) for p in self._patterns)


def _normalise(device_name: str) -> str:
    return " ".join(device_name.lower().split())


_NV = r"(?:nvidia )?"  # drivers before R510 left the "NVIDIA " prefix off
_AMD = r"(?:amd )?(?:instinct )?"

# Most specific first. The patterns are anchored (fullmatch), so no two entries overlap; the
# order is a second guard and is what find_peak walks.
PEAKS: tuple[Peak, ...] = (
    Peak(
        model="A100 SXM4 80GB",
        match=(_NV + r"a100-sxm4?-80gb",),
        dense_flops={"float32": 19.5 * T, "tf32": 156 * T, "bfloat16": 312 * T, "float16": 312 * T},
        memory_bandwidth_bytes_per_s=2.039 * T,
        tdp_w=400,
        source="NVIDIA A100 Tensor Core GPU datasheet (2021)",
    ),
    Peak(
        model="A100 PCIe 80GB",
        match=(_NV + r"a100 80gb pcie", _NV + r"a100-pcie-80gb"),
        dense_flops={"float32": 19.5 * T, "tf32": 156 * T, "bfloat16": 312 * T, "float16": 312 * T},
        memory_bandwidth_bytes_per_s=1.935 * T,
        tdp_w=300,
        source="NVIDIA A100 Tensor Core GPU datasheet (2021)",
    ),
    Peak(
        model="A100 SXM4 40GB",
        match=(_NV + r"a100-sxm4?-40gb",),
        dense_flops={"float32": 19.5 * T, "tf32": 156 * T, "bfloat16": 312 * T, "float16": 312 * T},
        memory_bandwidth_bytes_per_s=1.555 * T,
        tdp_w=400,
        source="NVIDIA A100 Tensor Core GPU datasheet (2021)",
    ),
    Peak(
        model="A100 PCIe 40GB",
        match=(_NV + r"a100-pcie-40gb", _NV + r"a100 40gb pcie"),
        dense_flops={"float32": 19.5 * T, "tf32": 156 * T, "bfloat16": 312 * T, "float16": 312 * T},
        memory_bandwidth_bytes_per_s=1.555 * T,
        tdp_w=250,
        source="NVIDIA A100 Tensor Core GPU datasheet (2021)",
    ),
    Peak(
        model="H100 PCIe",
        match=(_NV + r"h100 pcie",),
        # datasheet: TF32 756*, BF16/FP16 1,513*, FP8 3,026* (sparse); FP32 51.2 per the whitepaper
        dense_flops={
            "float32": 51.2 * T,
            "tf32": 378 * T,
            "bfloat16": 756.5 * T,
            "float16": 756.5 * T,
            "float8": 1513 * T,
        },
        memory_bandwidth_bytes_per_s=2.0 * T,
        tdp_w=350,
        source="NVIDIA H100 Tensor Core GPU datasheet (2023); H100 PCIe product brief (2022)",
    ),
    Peak(
        model="H100 SXM",
        match=(_NV + r"h100 80gb hbm3", _NV + r"h100[ -]sxm5?[ -]80gb(?: hbm3)?"),
        # datasheet: TF32 989*, BF16/FP16 1,979*, FP8 3,958* (sparse); whitepaper's exact halves
        dense_flops={
            "float32": 66.9 * T,
            "tf32": 494.7 * T,
            "bfloat16": 989.4 * T,
            "float16": 989.4 * T,
            "float8": 1978.9 * T,
        },
        memory_bandwidth_bytes_per_s=3.35 * T,
        tdp_w=700,
        source="NVIDIA H100 Tensor Core GPU datasheet (2023); NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022)",
    ),
    Peak(
        model="H200 SXM",
        match=(_NV + r"h200", _NV + r"h200[ -]sxm5?(?:[ -]141gb)?"),
        # same GH100 compute as H100 SXM (datasheet: TF32 989*, BF16 1,979*, FP8 3,958*)
        dense_flops={
            "float32": 66.9 * T,
            "tf32": 494.7 * T,
            "bfloat16": 989.4 * T,
            "float16": 989.4 * T,
            "float8": 1978.9 * T,
        },
        memory_bandwidth_bytes_per_s=4.8 * T,
        tdp_w=700,
        source="NVIDIA H200 Tensor Core GPU datasheet (2024)",
    ),
    Peak(
        model="B200 (HGX)",
        match=(_NV + r"b200",),
        # per-GPU HGX B200 figures: TF32 2.2 PF*, FP16/BF16 4.5 PF*, FP8 9 PF* (sparse); FP32 75 TF
        dense_flops={
            "float32": 75 * T,
            "tf32": 1100 * T,
            "bfloat16": 2250 * T,
            "float16": 2250 * T,
            "float8": 4500 * T,
        },
        memory_bandwidth_bytes_per_s=7.7 * T,
        tdp_w=1000,
        source="NVIDIA HGX B200 specifications, nvidia.com (2025)",
    ),
    Peak(
        model="L4",
        match=(_NV + r"l4",),
        # datasheet: TF32 120*, BF16/FP16 242*, FP8 485* (sparse)
        dense_flops={
            "float32": 30.3 * T,
            "tf32": 60 * T,
            "bfloat16": 121 * T,
            "float16": 121 * T,
            "float8": 242.5 * T,
        },
        memory_bandwidth_bytes_per_s=0.3 * T,
        tdp_w=72,
        source="NVIDIA L4 Tensor Core GPU datasheet (2023)",
    ),
    Peak(
        model="L40S",
        match=(_NV + r"l40s",),
        # datasheet: TF32 183 | 366*, BF16/FP16 362.05 | 733*, FP8 733 | 1,466*. Its printed dense
        # BF16/FP16 figure (362.05) is L40's clock; half of the sparse figure, 366.5, agrees with
        # FP32 x 4 and FP8 / 2 and is the one used.
        dense_flops={
            "float32": 91.6 * T,
            "tf32": 183 * T,
            "bfloat16": 366.5 * T,
            "float16": 366.5 * T,
            "float8": 733 * T,
        },
        memory_bandwidth_bytes_per_s=0.864 * T,
        tdp_w=350,
        source="NVIDIA L40S GPU datasheet (2023)",
    ),
    Peak(
        model="L40",
        match=(_NV + r"l40",),
        # datasheet: TF32 90.5 | 181*, BF16/FP16 181.05 | 362.1*, FP8 362 | 724*
        dense_flops={
            "float32": 90.5 * T,
            "tf32": 90.5 * T,
            "bfloat16": 181.05 * T,
            "float16": 181.05 * T,
            "float8": 362 * T,
        },
        memory_bandwidth_bytes_per_s=0.864 * T,
        tdp_w=300,
        source="NVIDIA L40 GPU datasheet (2022)",
    ),
    Peak(
        model="MI355X",
        match=(_AMD + r"mi355x", _AMD + r"mi355x vf"),
        # AMD prints dense figures (sparsity, 2x, separately): FP16/BF16 2.5 PFLOP/s and OCP FP8
        # 5 PFLOP/s as AMD rounds them (2,400 MHz x 256 CUs gives 2,516.6 and 5,033.2). CDNA 4 has
        # no TF32 figure. FP8 here is OCP e4m3fn (gfx950).
        dense_flops={"float32": 157.3 * T, "bfloat16": 2500 * T, "float16": 2500 * T, "float8": 5000 * T},
        memory_bandwidth_bytes_per_s=8.0 * T,
        tdp_w=1400,
        source="AMD Instinct MI355X GPU specifications, amd.com (2025); 288 GB HBM3E per ROCm's GPU hardware specifications",
    ),
    Peak(
        model="MI325X",
        match=(_AMD + r"mi325x", _AMD + r"mi325x vf"),
        # The MI300X's CDNA 3 compute (304 CUs at 2,100 MHz) with 256 GB of HBM3E at 6 TB/s and a
        # 1,000 W board. FP8 is e4m3fnuz (gfx942). TF32 left out as for MI300X.
        dense_flops={"float32": 163.4 * T, "bfloat16": 1307.4 * T, "float16": 1307.4 * T, "float8": 2614.9 * T},
        memory_bandwidth_bytes_per_s=6.0 * T,
        tdp_w=1000,
        source="AMD Instinct MI325X accelerator specifications, amd.com (2024)",
    ),
    Peak(
        model="MI300X",
        match=(_AMD + r"mi300x", _AMD + r"mi300x vf"),
        # AMD prints dense figures (sparsity separately); the same figures are in ROCm's MI300
        # microarchitecture page. FP8 is e4m3fnuz (gfx942). TF32 (653.7, a matrix rate) is left
        # out: torch on ROCm runs a "tf32" matmul as XF32 only where hipBLASLt is told to, else as
        # FP32, so the figure would not bound what the case ran.
        dense_flops={"float32": 163.4 * T, "bfloat16": 1307.4 * T, "float16": 1307.4 * T, "float8": 2614.9 * T},
        memory_bandwidth_bytes_per_s=5.3 * T,
        tdp_w=750,
        source="AMD Instinct MI300X accelerator data sheet (2023); ROCm MI300 series microarchitecture",
    ),
)


@functools.lru_cache(maxsize=256)
def find_peak(device_name: str) -> Peak | None:
    """The table entry for a torch/NVML device name, or None when the board is not listed.
    Cached: a report asks once per case, for a handful of distinct names."""
    if not device_name:
        return None
    for peak in PEAKS:
        if peak.matches(device_name):
            return peak
    return None


def past_cache(bytes_per_iter: float | None, cache_bytes: float | None) -> bool:
    """True when one iteration touches at least CACHE_FACTOR x the last cache: the rate is the
    memory's, not the cache's. False when either size is unknown (never a guess)."""
    if not bytes_per_iter or not cache_bytes or not math.isfinite(bytes_per_iter) or not math.isfinite(cache_bytes):
        return False
    return bytes_per_iter >= CACHE_FACTOR * cache_bytes


def percent_of_peak(
    device_name: str,
    workload: str,
    dtype: str | None,
    throughput: float,
    work_unit: str,
    op: str | None = None,
    bytes_per_iter: float | None = None,
    cache_bytes: float | None = None,
) -> float | None:
    """throughput / vendor peak * 100, or None when the peak that bounds it is unknown.

    work_unit "FLOP" (matmul, attention) compares FLOP/s with the dense peak of `dtype`;
    work_unit "byte" (membw) compares bytes/s with the memory bandwidth, and only for the kernels
    that stay in device memory (`op` copy/scale/add/triad/dot; None or h2d/d2h/d2d/p2p gives
    None) whose `bytes_per_iter` (the case's work per iteration: the bytes it touches) is at
    least CACHE_FACTOR x the device's `cache_bytes` (its L2); a smaller or unknown size gives None.
    """
    if throughput is None or not math.isfinite(throughput) or throughput < 0:
        return None
    peak = find_peak(device_name)
    if peak is None:
        return None
    if work_unit == "FLOP":
        if workload not in FLOP_WORKLOADS or dtype is None:
            return None
        ceiling = peak.dense_flops.get(dtype)
    elif work_unit == "byte":
        if workload != "membw" or op not in DEVICE_MEMORY_OPS or not past_cache(bytes_per_iter, cache_bytes):
            return None
        ceiling = peak.memory_bandwidth_bytes_per_s
    else:
        return None
    if not ceiling:
        return None
    return throughput / ceiling * 100
