"""bench.report.peaks: device names resolve to the right datasheet entry, unknowns to None, percent of peak."""

from __future__ import annotations

import math

import pytest

from bench.report.peaks import DTYPES, PEAKS, Peak, find_peak, past_cache, percent_of_peak

MiB, GiB = 2**20, 2**30

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
    "AMD Instinct MI300X VF": "MI300X",  # the SR-IOV function clouds hand out
    "AMD Instinct MI325X": "MI325X",
    "AMD Instinct MI355X": "MI355X",
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
    "AMD Instinct MI300X HF",  # another SKU
    "AMD Instinct MI350X",  # 1,000 W, lower clocks than MI355X
    "AMD Instinct MI250X / MI250",  # one name for two boards, per die (see peaks.py)
    "AMD Radeon Graphics",  # what torch says with an outdated amdgpu.ids
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


L2 = 50 * MiB  # H100 and H200
PAST_L2 = {"bytes_per_iter": 3 * GiB, "cache_bytes": L2}  # triad at 1 GiB per array


def test_percent_of_peak_memory_bandwidth() -> None:
    assert percent_of_peak("NVIDIA H100 80GB HBM3", "membw", "float32", 3.015e12, "byte", op="triad", **PAST_L2) == pytest.approx(
        90.0
    )
    assert percent_of_peak(
        "AMD Instinct MI300X", "membw", "float64", 2.65e12, "byte", op="copy", bytes_per_iter=2 * GiB, cache_bytes=256 * MiB
    ) == pytest.approx(50.0)


@pytest.mark.parametrize("op", ["h2d", "d2h", "d2d", "p2p", None, "bogus"])
def test_percent_of_peak_none_for_copies_off_the_device_memory_path(op: str | None) -> None:
    assert percent_of_peak("NVIDIA H100 80GB HBM3", "membw", "float32", 50e9, "byte", op=op, **PAST_L2) is None


def test_copy_that_fits_in_l2_has_no_hbm_peak() -> None:
    # copy at 16 MiB per array touches 32 MiB, inside H200's 50 MiB L2: it can read over 100% of HBM
    assert (
        percent_of_peak("NVIDIA H200", "membw", "float32", 5.5e12, "byte", op="copy", bytes_per_iter=32 * MiB, cache_bytes=L2)
        is None
    )
    # the same rate past 4x the L2 is a figure (over 100%: the check is the size, not the rate)
    assert percent_of_peak(
        "NVIDIA H200", "membw", "float32", 4.32e12, "byte", op="copy", bytes_per_iter=512 * MiB, cache_bytes=L2
    ) == pytest.approx(90.0)


@pytest.mark.parametrize("touched,shown", [(4 * L2, True), (4 * L2 - 1, False), (200 * MiB - 4, False), (2 * L2, False)])
def test_the_hbm_peak_needs_four_times_the_l2(touched: int, shown: bool) -> None:
    assert past_cache(touched, L2) is shown
    share = percent_of_peak(
        "NVIDIA H100 80GB HBM3", "membw", "float32", 3e12, "byte", op="triad", bytes_per_iter=touched, cache_bytes=L2
    )
    assert (share is not None) is shown


@pytest.mark.parametrize("touched,cache", [(None, L2), (3 * GiB, None), (3 * GiB, 0), (0, L2), (float("nan"), L2)])
def test_unknown_sizes_give_no_memory_peak(touched: float | None, cache: int | None) -> None:
    assert past_cache(touched, cache) is False
    assert (
        percent_of_peak(
            "NVIDIA H100 80GB HBM3", "membw", "float32", 3e12, "byte", op="triad", bytes_per_iter=touched, cache_bytes=cache
        )
        is None
    )


def test_flop_peaks_do_not_depend_on_the_cache() -> None:
    # matmul at 1024 fits in L2 too, but the tensor-core peak bounds it wherever its operands live
    assert percent_of_peak(
        "NVIDIA H100 80GB HBM3", "matmul", "bfloat16", 494.7e12, "FLOP", bytes_per_iter=1.0, cache_bytes=L2
    ) == pytest.approx(50.0)


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


# --- the reading side: the L2 rule from the result file alone ------------------------------------


def _membw_doc(cache_bytes: int | None, run_id: str = "a" * 32) -> dict:
    from bench import results

    def case(size: int, throughput: float) -> dict:
        return {
            "id": f"membw(op=copy,size={size})@cuda:0",
            "workload": "membw",
            "params": {"op": "copy", "size": size, "dtype": "float32"},
            "device": "cuda:0",
            "status": "ok",
            "error": None,
            "work_unit": "byte",
            "work_per_iter": 2 * size,
            "iterations": 100,
            "repeats": 3,
            "seconds_per_iter": {"median": 2 * size / throughput, "cv": 0.01},
            "raw_seconds": [2 * size / throughput] * 3,
            "throughput": {"median": throughput},
            "energy": None,
            "efficiency": None,
            "memory": None,
            "verify": None,
            "flags": [],
        }

    device = {"id": "cuda:0", "kind": "cuda", "name": "NVIDIA H200", "memory_bytes": 141 * GiB}
    if cache_bytes is not None:
        device["cache_bytes"] = cache_bytes
    return {
        "schema": results.SCHEMA,
        "run": {
            "id": run_id,
            "started_at": "2026-11-30T10:00:00.000Z",
            "finished_at": None,
            "wattbench_version": "0",
            "command": "wattbench run",
            "status": "complete",
        },
        "host": {"hostname": "node", "os": "Linux", "python": "3.11", "torch": "2.13", "driver": "570.86.15"},
        "devices": [device],
        "workloads": {"membw": {"params": {"op": {"kind": "choice"}, "size": {"kind": "bytes"}, "dtype": {"kind": "choice"}}}},
        # copy at 16 MiB reads from L2 (5.5 TB/s, over H200's 4.8 TB/s HBM); at 1 GiB from HBM
        "cases": [case(16 * MiB, 5.5e12), case(GiB, 4.32e12)],
    }


def _report(tmp_path, doc: dict, width: int = 160) -> tuple[object, str]:
    import json

    from bench.report.load import load
    from bench.report.tables import render_to_text

    path = tmp_path / f"{doc['run']['id']}.json"
    path.write_text(json.dumps(doc))
    df = load([path])
    return df, render_to_text(df, width=width)


def _peak_cells(text: str) -> list[str]:
    """The % peak cell of each membw row of a run report, in row order."""
    rows = [line for line in text.splitlines() if "size=" in line and "TB/s" in line]
    return [cells[5].strip() for cells in (row.split("│") for row in rows)]


def test_loader_exposes_the_devices_cache_size(tmp_path) -> None:
    df, _ = _report(tmp_path, _membw_doc(50 * MiB))
    assert df["cache_bytes"].tolist() == [50 * MiB, 50 * MiB]


def test_run_report_shows_no_hbm_peak_for_a_size_inside_the_l2(tmp_path) -> None:
    _, text = _report(tmp_path, _membw_doc(50 * MiB))
    assert "% peak" in text
    assert _peak_cells(text) == ["-", "90.0%"]  # never 114.6% for the 16 MiB copy
    assert "114.6%" not in text


def test_run_report_shows_no_hbm_peak_when_the_cache_size_is_unknown(tmp_path) -> None:
    _, text = _report(tmp_path, _membw_doc(None))
    assert "TB/s" in text and "% peak" not in text  # no row has a peak, so the column is left out


def test_hardware_report_gives_the_peak_only_past_the_l2(tmp_path) -> None:
    import json

    from bench.report.load import load
    from bench.report.tables import render_to_text

    for i in range(2):
        (tmp_path / f"{i}.json").write_text(json.dumps(_membw_doc(50 * MiB, f"{i:032x}")))
    text = render_to_text(load([tmp_path]), width=160)
    assert text.count("of peak") == 1 and "(90% of peak)" in text


def test_a_run_table_says_why_a_cache_sized_memory_rate_has_no_peak(tmp_path):
    from bench.report.cells import CACHE_NOTE
    from bench.report.load import load
    from bench.report.tables import render_to_text
    from tests.test_report_width import _doc

    doc = _doc("NVIDIA H200")
    doc["devices"][0]["cache_bytes"] = 50 * 2**20
    for case in doc["cases"]:
        if case["workload"] == "membw" and case["params"]["op"] == "copy":
            case["params"]["size"], case["work_per_iter"] = 16 * 2**20, 2 * 16 * 2**20
    (tmp_path / "r.json").write_text(__import__("json").dumps(doc))
    text = " ".join(render_to_text(load([tmp_path / "r.json"]), width=200).split())
    assert CACHE_NOTE in text
    large = _doc("NVIDIA H200")
    large["devices"][0]["cache_bytes"] = 50 * 2**20
    (tmp_path / "r.json").write_text(__import__("json").dumps(large))
    assert CACHE_NOTE.split(":")[0] not in " ".join(render_to_text(load([tmp_path / "r.json"]), width=200).split())


def test_llm_cases_show_mfu_and_mbu_from_their_work_terms(tmp_path):
    """A token-throughput case gets MFU (FLOP/s over the dtype's dense peak) and MBU (bytes/s over
    the memory bandwidth) from its FLOP and byte terms; unknown hardware shows neither."""
    import json

    from bench.report.load import load
    from bench.report.peaks import find_peak
    from bench.report.tables import render_to_text
    from tests.test_compare import _doc as run_doc

    peak = find_peak("NVIDIA H100 80GB HBM3")
    seconds = 0.01
    flop, byte = 0.5 * peak.dense_flops["bfloat16"] * seconds, 0.8 * peak.memory_bandwidth_bytes_per_s * seconds

    def doc(device):
        return run_doc(
            device_name=device,
            device_id="cuda:0",
            cases=[
                {
                    "id": "llm(...)@cuda:0",
                    "workload": "llm",
                    "device": "cuda:0",
                    "status": "ok",
                    "params": {"model": "llama-3-8b", "dtype": "bfloat16", "phase": "decode", "batch": 64},
                    "work_unit": "token",
                    "work_per_iter": 64.0,
                    "work_terms": {"token": 64.0, "FLOP": flop, "byte": byte},
                    "seconds_per_iter": {"median": seconds, "cv": 0.01},
                    "throughput": {"median": 6400.0},
                    "raw_seconds": [seconds] * 3,
                    "flags": [],
                }
            ],
        )

    (tmp_path / "r.json").write_text(json.dumps(doc("NVIDIA H100 80GB HBM3")))
    text = render_to_text(load([tmp_path / "r.json"]), width=200)
    assert "MFU" in text and "50.0%" in text and "MBU" in text and "80.0%" in text
    (tmp_path / "r.json").write_text(json.dumps(doc("Some Unknown Accelerator")))
    assert "MFU" not in render_to_text(load([tmp_path / "r.json"]), width=200)
