"""attention records the SDPA kernel that ran in the case's `details.backend`, and the run report
shows it beside the parameter (backend=auto→flash), read from the file alone."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

import workloads.attention as attention
from bench import results
from bench.errors import ResultFileError
from bench.measure.lifecycle import RoundOutcome, measure_round
from bench.measure.plan import expand
from bench.measure.runner import run_case
from bench.report.load import load
from bench.report.tables import ReportOptions, render_to_text
from workloads import get

# The aten op each fused kernel dispatches to; the math kernel decomposes into matmuls.
FUSED_OPS = {
    "flash": "aten._scaled_dot_product_flash_attention",  # also ..._for_cpu
    "efficient": "aten._scaled_dot_product_efficient_attention",
    "cudnn": "aten._scaled_dot_product_cudnn_attention",
}


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def dispatched_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> str:
    """The kernel SDPA really runs for these inputs under the current backend setting, seen from
    the aten ops it dispatches (the oracle for `details.backend`). Grad mode as the workload
    runs them: on when the inputs require grad (a backward pass), else off."""
    with torch.set_grad_enabled(q.requires_grad), _Ops() as ops:
        F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    found = [name for name, op in FUSED_OPS.items() if any(n.startswith(op) for n in ops.names)]
    return found[0] if found else ("math" if any("bmm" in n for n in ops.names) else "unknown")


def _run(cpu: Any, timing: Any, **params: Any) -> dict[str, Any]:
    (case,) = expand("attention", {k: [v] for k, v in params.items()}, [cpu])
    return run_case(case, cpu, timing, get("attention"))


SMALL = {"batch": 1, "heads": 2, "seq": 64, "head_dim": 16}


# --- measuring side --------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
def test_auto_records_the_kernel_torch_ran(cpu: Any, fast_timing: Any, causal: bool, pass_: str) -> None:
    result = _run(cpu, fast_timing, **SMALL, causal=causal, **{"pass": pass_})
    assert result["status"] == "ok", result["error"]
    q = torch.randn(1, 2, 64, 16)
    ran = dispatched_backend(q, q, q, causal)
    assert ran in ("flash", "math")  # what torch 2.13's CPU build has
    assert result["details"]["backend"] == ran


@pytest.mark.parametrize("backend", ["flash", "math"])
def test_a_pinned_backend_records_itself(cpu: Any, fast_timing: Any, backend: str) -> None:
    result = _run(cpu, fast_timing, **SMALL, backend=backend)
    assert result["status"] == "ok", result["error"]
    assert result["details"] == {"backend": backend}


@pytest.mark.parametrize("backend", [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION])
def test_chosen_backend_agrees_with_the_dispatched_kernel(backend: SDPBackend) -> None:
    q = torch.randn(2, 4, 128, 32)
    with sdpa_kernel(backend):
        assert attention.chosen_backend(q, q, q, False) == dispatched_backend(q, q, q, False)


def test_a_torch_that_does_not_say_gives_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    q = torch.randn(1, 1, 8, 8)

    def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("no")

    monkeypatch.setattr(torch, "_fused_sdp_choice", broken)
    assert attention.chosen_backend(q, q, q, False) == "unknown: RuntimeError"
    monkeypatch.setattr(torch, "_fused_sdp_choice", lambda *a, **k: 42)
    assert attention.chosen_backend(q, q, q, False) == "unknown: SDPBackend 42"
    monkeypatch.delattr(torch, "_fused_sdp_choice")
    assert attention.chosen_backend(q, q, q, False).startswith("unknown: ")


def test_skipped_cases_and_other_workloads_have_empty_details(cpu: Any, fast_timing: Any) -> None:
    assert _run(cpu, fast_timing, **SMALL, backend="cudnn")["details"] == {}  # skipped on the CPU
    (case,) = expand("matmul", {"size": [64]}, [cpu])
    assert run_case(case, cpu, fast_timing, get("matmul"))["details"] == {}


def test_details_cross_the_worker_boundary(cpu: Any, fast_timing: Any) -> None:
    (case,) = expand("attention", {k: [v] for k, v in SMALL.items()}, [cpu])
    outcome = measure_round(get("attention"), case.param_dict, cpu, fast_timing)
    assert outcome.status == "ok" and outcome.details["backend"] in ("flash", "math")
    again = RoundOutcome.from_json(json.loads(json.dumps(outcome.to_json())))
    assert again.details == outcome.details


def test_the_run_file_carries_details(cpu: Any, tmp_path: Any) -> None:
    from bench.cli import main

    out = tmp_path / "run.json"
    code = main(
        [
            "run",
            "attention",
            "-p",
            "batch=1",
            "-p",
            "heads=2",
            "-p",
            "seq=64",
            "-p",
            "head_dim=16",
            "--min-time",
            "0.01",
            "--repeats",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    (case,) = json.loads(out.read_text())["cases"]
    assert case["details"]["backend"] in ("flash", "math")


# --- reading side ----------------------------------------------------------------------------

SCHEMA = {
    "params": {k: {"kind": "int"} for k in ("batch", "heads", "seq", "head_dim")}
    | {"causal": {"kind": "bool"}, "dtype": {"kind": "choice"}, "pass": {"kind": "choice"}, "backend": {"kind": "choice"}}
}


def _case(backend: str, details: Any, seq: int = 2048, device: str = "cuda:0") -> dict[str, Any]:
    params = {
        "batch": 4,
        "heads": 16,
        "seq": seq,
        "head_dim": 128,
        "causal": False,
        "dtype": "bfloat16",
        "pass": "forward",
        "backend": backend,
    }
    case = {
        "id": f"attention(seq={seq},backend={backend})@{device}",
        "workload": "attention",
        "params": params,
        "device": device,
        "status": "ok",
        "error": None,
        "work_unit": "FLOP",
        "work_per_iter": 1e12,
        "iterations": 10,
        "repeats": 3,
        "seconds_per_iter": {"median": 0.002, "cv": 0.01},
        "raw_seconds": [0.002] * 3,
        "throughput": {"median": 5e14},
        "energy": None,
        "efficiency": None,
        "memory": None,
        "verify": None,
        "flags": [],
    }
    if details is not ...:
        case["details"] = details
    return case


def _doc(cases: list[dict[str, Any]], name: str = "NVIDIA H100 80GB HBM3", run_id: str = "a" * 32) -> dict[str, Any]:
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
        "devices": [{"id": "cuda:0", "kind": "cuda", "name": name, "memory_bytes": 1, "cache_bytes": 50 * 2**20}],
        "workloads": {"attention": SCHEMA},
        "cases": cases,
    }


@contextlib.contextmanager
def _file(tmp_path: Any, doc: dict[str, Any], name: str = "run.json") -> Iterator[Any]:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    yield path


def test_the_loader_has_a_details_column(tmp_path: Any) -> None:
    doc = _doc([_case("auto", {"backend": "flash"}), _case("math", {"backend": "math"}, seq=4096), _case("auto", ..., seq=8192)])
    with _file(tmp_path, doc) as path:
        df = load([path])
    assert df["details"].tolist() == [{"backend": "flash"}, {"backend": "math"}, {}]  # an older file: {}


def test_details_that_are_not_an_object_are_a_damaged_file(tmp_path: Any) -> None:
    with (
        _file(tmp_path, _doc([_case("auto", "flash")])) as path,
        pytest.raises(ResultFileError, match="details is 'flash', not an object"),
    ):
        load([path])


def test_the_run_report_shows_the_kernel_that_ran(tmp_path: Any) -> None:
    doc = _doc(
        [
            _case("auto", {"backend": "flash"}),
            _case("auto", {"backend": "efficient"}, seq=4096),
            _case("math", {"backend": "math"}, seq=8192),
            _case("auto", {"backend": "unknown: RuntimeError"}, seq=16384),
        ]
    )
    with _file(tmp_path, doc) as path:
        text = render_to_text(load([path]), width=120)
    assert "backend=auto→flash" in text and "backend=auto→efficient" in text and "backend=auto→?" in text
    assert "backend=math" in text and "math→" not in text  # a pinned backend that ran says it once


def test_a_shared_kernel_is_said_once_in_the_title(tmp_path: Any) -> None:
    doc = _doc([_case("auto", {"backend": "flash"}), _case("auto", {"backend": "flash"}, seq=4096)])
    with _file(tmp_path, doc) as path:
        text = render_to_text(load([path]), width=120)
    assert text.count("backend=auto→flash") == 1
    assert "attention batch=4 heads=16 head_dim=128" in text and "seq=4096" in text


def test_without_details_the_report_is_as_before(tmp_path: Any) -> None:
    with _file(tmp_path, _doc([_case("auto", ...), _case("auto", ..., seq=4096)])) as path:
        text = render_to_text(load([path]), width=120)
    assert "backend=auto" in text and "→" not in text


def test_the_hardware_report_matches_cases_by_their_parameters(tmp_path: Any) -> None:
    # auto picks per hardware: the side-by-side rows stay one case, whatever each one ran
    (tmp_path / "a.json").write_text(json.dumps(_doc([_case("auto", {"backend": "flash"})])))
    (tmp_path / "b.json").write_text(json.dumps(_doc([_case("auto", {"backend": "cudnn"})], "NVIDIA H200", "b" * 32)))
    df = load([tmp_path])
    assert df["case_key"].nunique() == 1
    text = render_to_text(df, width=160, options=ReportOptions())
    assert "H100" in text and "H200" in text
