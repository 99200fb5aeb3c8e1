"""bench.report.peaks: device names resolve to the right datasheet entry, unknowns to None, percent of peak."""

from __future__ import annotations

import math

import pytest

from bench.report.peaks import DTYPES, PEAKS, Peak, find_peak, percent_of_peak

# Names as torch.cuda.get_device_name / NVML report them, and the entry each must resolve to.
KNOWN = {
    "NVIDIA A100-SXM4-80GB": "A100 SXM4 80GB",
    "NVIDIA A100 80GB PCIe": "A100 PCIe 80GB",
    "NVIDIA A100-SXM4-40GB": "A100 SXM4 40GB",
    "NVIDIA A100-PCIE-40GB": "A100 PCIe 40GB",
    "A100-SXM4-40GB": "A100 SXM4 40GB",  # drivers before R510 had no "NVIDIA " prefix
    "NVIDIA H100 80GB HBM3": "H100 SXM",
    "NVIDIA H100 PCIe": "H100 PCIe",
    "NVIDIA H200": "H200 SXM",
    "NVIDIA B200": "B200 (HGX)",
    "NVIDIA L4": "L4",
    "NVIDIA L40S": "L40S",
    "NVIDIA L40": "L40",
    "AMD Instinct MI300X": "MI300X",
}

UNKNOWN = [
    "",
    "cpu",
    "AMD EPYC 9654 96-Core Processor",
    "Intel(R) Xeon(R) Platinum 8480C",
    "NVIDIA GeForce RTX 4090",
    "Tesla T4",
    "NVIDIA H100",  # form factor not named: SXM or PCIe peaks differ
    "NVIDIA H100 NVL",
    "NVIDIA H200 NVL",
    "NVIDIA H800",
    "NVIDIA GH200 480GB",
    "NVIDIA GB200",
    "NVIDIA A100-SXM4-80GB MIG 1g.10gb",  # a slice of the board, not the board
    "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
    "NVIDIA A10G",
    "NVIDIA L4T",
    "AMD Instinct MI300A",
    "AMD Instinct MI325X",
]


@pytest.mark.parametrize("name,model", KNOWN.items())
def test_known_names_resolve(name: str, model: str) -> None:
    peak = find_peak(name)
    assert peak is not None and peak.model == model


@pytest.mark.parametrize("name,model", KNOWN.items())
def test_exactly_one_entry_matches(name: str, model: str) -> None:
    hits = [p.model for p in PEAKS if p.matches(name)]
    assert hits == [model]


@pytest.mark.parametrize("name", ["nvidia h100 pcie", "  NVIDIA   H100 PCIe ", "NVIDIA H100 PCIE"])
def test_case_and_whitespace_do_not_matter(name: str) -> None:
    assert find_peak(name).model == "H100 PCIe"


@pytest.mark.parametrize("name", UNKNOWN)
def test_unknown_names_give_none(name: str) -> None:
    assert find_peak(name) is None


def test_models_are_unique() -> None:
    models = [p.model for p in PEAKS]
    assert len(models) == len(set(models))


@pytest.mark.parametrize("peak", PEAKS, ids=lambda p: p.model)
def test_every_entry_is_sourced_and_positive(peak: Peak) -> None:
    assert peak.source.strip()
    assert peak.match and all(m == m.lower() for m in peak.match)
    assert peak.dense_flops and set(peak.dense_flops) <= set(DTYPES)
    for value in (*peak.dense_flops.values(), peak.memory_bandwidth_bytes_per_s, peak.tdp_w):
        assert value > 0 and math.isfinite(value)


@pytest.mark.parametrize("peak", PEAKS, ids=lambda p: p.model)
def test_figures_are_in_plausible_units(peak: Peak) -> None:
    # guards against a figure entered in TFLOP/s or GB/s instead of FLOP/s and B/s
    assert all(1e12 <= v <= 1e16 for v in peak.dense_flops.values())
    assert 1e11 <= peak.memory_bandwidth_bytes_per_s <= 1e14
    assert 10 <= peak.tdp_w <= 2000
    flops = peak.dense_flops
    if "bfloat16" in flops and "float32" in flops:
        assert flops["bfloat16"] > flops["float32"]  # tensor rate above plain FP32
    if "float8" in flops:
        assert flops["float8"] == pytest.approx(2 * flops["bfloat16"], rel=0.02)


def test_dense_flops_is_read_only() -> None:
    with pytest.raises(TypeError):
        find_peak("NVIDIA L4").dense_flops["bfloat16"] = 1.0  # type: ignore[index]


def test_a100_has_no_float8() -> None:
    assert "float8" not in find_peak("NVIDIA A100-SXM4-80GB").dense_flops
    assert percent_of_peak("NVIDIA A100-SXM4-80GB", "matmul", "float8", 1e14, "FLOP") is None


def test_percent_of_peak_h100_bf16() -> None:
    assert find_peak("NVIDIA H100 80GB HBM3").dense_flops["bfloat16"] == 989.4e12
    assert percent_of_peak("NVIDIA H100 80GB HBM3", "matmul", "bfloat16", 494.7e12, "FLOP") == pytest.approx(50.0)


def test_percent_of_peak_attention_uses_the_same_table() -> None:
    assert percent_of_peak("NVIDIA A100-SXM4-80GB", "attention", "float16", 156e12, "FLOP") == pytest.approx(50.0)


def test_percent_of_peak_float32_is_plain_fp32_not_tf32() -> None:
    assert percent_of_peak("NVIDIA A100 80GB PCIe", "matmul", "float32", 19.5e12, "FLOP") == pytest.approx(100.0)
    assert percent_of_peak("NVIDIA A100 80GB PCIe", "matmul", "tf32", 78e12, "FLOP") == pytest.approx(50.0)


def test_percent_of_peak_memory_bandwidth() -> None:
    assert percent_of_peak("NVIDIA H100 80GB HBM3", "membw", "float32", 3.015e12, "byte", op="triad") == pytest.approx(90.0)
    assert percent_of_peak("AMD Instinct MI300X", "membw", "float64", 2.65e12, "byte", op="copy") == pytest.approx(50.0)


@pytest.mark.parametrize("op", ["h2d", "d2h", "d2d", None, "bogus"])
def test_percent_of_peak_none_for_copies_off_the_device_memory_path(op: str | None) -> None:
    assert percent_of_peak("NVIDIA H100 80GB HBM3", "membw", "float32", 50e9, "byte", op=op) is None


@pytest.mark.parametrize(
    "device,workload,dtype,throughput,unit",
    [
        ("AMD EPYC 9654 96-Core Processor", "matmul", "float32", 1e12, "FLOP"),  # unknown hardware
        ("NVIDIA GeForce RTX 4090", "matmul", "bfloat16", 1e14, "FLOP"),
        ("NVIDIA H100 80GB HBM3", "matmul", "int8", 1e14, "FLOP"),  # unknown dtype
        ("NVIDIA H100 80GB HBM3", "matmul", "float64", 1e13, "FLOP"),
        ("NVIDIA H100 80GB HBM3", "matmul", None, 1e14, "FLOP"),  # no dtype
        ("AMD Instinct MI300X", "matmul", "tf32", 1e14, "FLOP"),  # figure left out of the table
        ("NVIDIA H100 80GB HBM3", "membw", "float32", 1e12, "FLOP"),  # FLOP from a non-FLOP workload
        ("NVIDIA H100 80GB HBM3", "matmul", "bfloat16", 1e12, "byte"),  # bytes from a non-membw workload
        ("NVIDIA H100 80GB HBM3", "matmul", "bfloat16", 1e12, "token"),  # unknown unit
        ("NVIDIA H100 80GB HBM3", "matmul", "bfloat16", float("nan"), "FLOP"),
        ("NVIDIA H100 80GB HBM3", "matmul", "bfloat16", -1.0, "FLOP"),
    ],
)
def test_percent_of_peak_none_when_anything_is_unknown(
    device: str, workload: str, dtype: str | None, throughput: float, unit: str
) -> None:
    assert percent_of_peak(device, workload, dtype, throughput, unit, op="triad") is None
