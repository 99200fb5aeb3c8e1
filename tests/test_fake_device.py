"""The fake-device tier: every workload's GPU branches traced on the CPU (tests/fake_device.py).

Each case runs set-up, one iteration and the check on an H200 stand-in with fake tensors and must
reach the end of each phase: a device mismatch, a dtype or shape error fails with the phase and
the aten op that raised. Host reads (the only data-dependent steps) are stepped over with
stand-ins, so no branch passes by stopping early. Cases are the branches the code has (dtypes,
graph capture, attention backends, llm phases dense and MoE, every collective), at the sizes a GPU
run uses; the whole tier takes well under a minute.
"""

from __future__ import annotations

import pytest
import torch

from tests.fake_device import A100, H200, MI250X, MI300X, MI355X, FakeRuntime, fake_process_group, trace

MATMUL = [{"dtype": d} for d in ("float32", "tf32", "bfloat16", "float16", "float8")] + [
    {"size": 256, "dtype": "bfloat16", "graph": True},
    {"size": 128, "dtype": "float8", "graph": True},
    {"m": 4096, "n": 1024, "k": 8192, "dtype": "tf32"},
]
ATTENTION = [
    {"backend": b, "pass": p, "causal": True}
    for b in ("auto", "flash", "efficient", "cudnn", "math")
    for p in ("forward", "forward+backward")
] + [
    {"dtype": "float16"},
    {"dtype": "float32", "pass": "forward+backward"},
]
MEMBW = [{"op": op} for op in ("copy", "scale", "add", "triad", "dot", "h2d", "d2h", "d2d")] + [
    {"op": "p2p", "peer": "cuda:1"},
    {"op": "triad", "dtype": "float64"},
    {"op": "copy", "size": "4MiB"},
]
LLM = [
    {"model": "llama-3-8b", "phase": "prefill"},
    {"model": "llama-3-8b", "phase": "decode"},
    {"model": "llama-3-8b", "phase": "train"},
    {"model": "llama-3-8b", "phase": "prefill", "graph": True, "run_layers": 2},
    {"model": "llama-3-8b", "phase": "decode", "graph": True, "run_layers": 2, "batch": 8},
    {"model": "llama-3-8b", "phase": "decode", "dtype": "float16", "run_layers": 2},
    {"model": "llama-3-8b", "phase": "prefill", "dtype": "float32", "run_layers": 2, "seq": 512},
    {"model": "llama-3-70b", "phase": "decode", "run_layers": 2, "batch": 4},
    {"model": "mixtral-8x7b", "phase": "prefill", "run_layers": 2},
    {"model": "mixtral-8x7b", "phase": "decode", "run_layers": 2, "seq": 256},
    {"model": "mixtral-8x7b", "phase": "train", "run_layers": 2, "seq": 256},
    {"model": "qwen3-30b-a3b", "phase": "decode", "run_layers": 1, "seq": 128, "batch": 2},
    {"model": "qwen3-30b-a3b", "phase": "prefill", "run_layers": 1, "seq": 256},
    {"model": "tiny", "phase": "train", "dtype": "float16"},
]
COLLECTIVE = [{"op": op} for op in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send_recv")] + [
    {"op": "all_gather", "inplace": True},
    {"op": "reduce_scatter", "inplace": True},
    {"op": "all_reduce", "dtype": "bfloat16"},
    {"op": "reduce_scatter", "dtype": "float16"},
    {"op": "all_to_all", "dtype": "int32"},
]


def _label(params: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def _assert_reached_the_end(result) -> None:
    assert result.skipped is None, str(result)
    assert result.complete, str(result)
    assert result.ops("run") > 0, str(result)


@pytest.mark.parametrize("params", MATMUL, ids=_label)
def test_matmul(params):
    _assert_reached_the_end(trace("matmul", params))


@pytest.mark.parametrize("params", ATTENTION, ids=_label)
def test_attention(params):
    _assert_reached_the_end(trace("attention", params))


@pytest.mark.parametrize("params", MEMBW, ids=_label)
def test_membw(params):
    _assert_reached_the_end(trace("membw", params))


@pytest.mark.parametrize("params", LLM, ids=_label)
def test_llm(params):
    result = trace("llm", params)
    _assert_reached_the_end(result)
    if params.get("graph"):  # captured in set-up, replayed once, checked against an eager forward
        assert result.workload is not None and result.workload.launches_per_iter == 1
    moe_reads = [what for phase, what in result.reads if "experts" in what]
    assert bool(moe_reads) == (params["model"] in ("mixtral-8x7b", "qwen3-30b-a3b")), str(result)


@pytest.mark.parametrize("params", COLLECTIVE, ids=_label)
def test_collective_on_eight_ranks(params):
    with fake_process_group(world_size=8, rank=3):
        result = trace("collective", params)
    _assert_reached_the_end(result)


def test_float8_off_hopper_is_skipped_with_the_reason():
    result = trace("matmul", {"dtype": "float8"}, device=A100)
    assert result.skipped == "float8 matmul needs compute capability 8.9 or newer, this GPU has 8.0"


def test_a_device_mismatch_fails_with_the_phase_and_the_op(monkeypatch):
    """What the tier exists for: the first llm check's defect (the float64 reference's input moved
    to the CPU, the weights left on the GPU) stops in verify at the matmul, naming both devices."""
    import workloads.llm as llm

    def reference_on_two_devices(w, x, p, route):
        return x.cpu().double() @ w["wqkv"].detach().double()

    monkeypatch.setattr(llm, "reference_layer", reference_on_two_devices)
    result = trace("llm", {"model": "tiny", "phase": "prefill"})
    verify = result.phases["verify"]
    assert not verify.finished and verify.failed_op == "mm"
    assert "FakeTensorDeviceMismatchError" in verify.error and "meta" in verify.error and "cpu" in verify.error
    assert "verify: stopped at mm" in str(result)


def test_a_generator_of_another_device_fails_as_on_cuda(monkeypatch):
    import torch

    import workloads.matmul as matmul

    fake = FakeRuntime()
    monkeypatch.setattr(matmul, "seeded_generator", lambda device, seed=1234: fake.generator(torch.device("cpu"), seed))
    result = trace("matmul", {"size": 512}, fake=fake)
    assert not result.phases["setup"].finished
    assert "a generator made for cpu draws tensors on meta" in result.phases["setup"].error


def test_a_data_dependent_step_outside_the_seam_stops_the_trace(monkeypatch):
    """A read to the host that bypasses runtime.to_host is named, not passed over."""
    import torch

    import workloads.membw as membw

    monkeypatch.setattr(membw.MemoryBandwidth, "run", lambda self: float(torch.dot(self.a, self.b).item()))
    result = trace("membw", {"op": "dot"})
    assert not result.phases["run"].finished
    assert "DataDependentOutputException" in result.phases["run"].error


def test_the_fake_h200_gives_the_gpu_defaults():
    result = trace("llm", {"model": "tiny", "phase": "decode"})
    p = result.workload.p
    assert (p["dtype"], p["seq"]) == ("bfloat16", 1024)
    assert result.workload.torch_device.type == "meta" and H200.kind == "cuda"


@pytest.mark.parametrize(
    "params",
    [
        {"model": "llama-3-8b", "phase": "decode", "run_layers": 2},
        {"model": "llama-3-8b", "phase": "prefill", "run_layers": 2, "batch": 2, "seq": 512},
        {"model": "llama-3-8b", "phase": "train", "run_layers": 2, "seq": 256},
        {"model": "mixtral-8x7b", "phase": "decode", "run_layers": 2, "batch": 2},
        {"model": "mixtral-8x7b", "phase": "prefill", "run_layers": 2, "seq": 256},
        {"model": "qwen3-30b-a3b", "phase": "decode", "run_layers": 2, "seq": 64},
    ],
    ids=_label,
)
def test_llm_kernels_per_iteration_match_the_ops_dispatched(params):
    """`launches_per_iter` (which sizes the launch-bound probe) against the aten ops of one
    iteration that launch a kernel, SDPA counted as the one fused kernel a GPU runs: within 10%.
    (gpu-check counts the real kernels with the profiler.)"""
    from workloads.llm import adamw_foreach_launches

    result = trace("llm", params)
    _assert_reached_the_end(result)
    counted, claimed = result.phases["run"].kernels, result.workload.launches_per_iter
    if params["phase"] == "train":  # a foreach op is one aten op, several launches on CUDA
        claimed -= adamw_foreach_launches(result.workload.p)
    assert claimed == pytest.approx(counted, rel=0.10), (claimed, counted)


def test_the_runner_measures_a_fake_gpu_round_with_its_graph_pool():
    """The harness's own GPU branch end to end on fake tensors: CUDA-event timers, the peak
    reset before the window, and the memory record of a graphed case, whose activations sit in
    the graph's private pool: reserved there, never counted as allocated (item 1.5)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from bench.measure import runtime
    from bench.measure.lifecycle import measure_round
    from bench.measure.runtime import PoolMemory
    from tests.conftest import FAST
    from workloads.matmul import MatMul

    MiB = 2**20
    fake = FakeRuntime(peak_bytes=100 * MiB, graph_pool=PoolMemory(reserved_bytes=96 * MiB, allocated_bytes=32 * MiB))
    params = MatMul.resolve({"size": "256", "graph": "true"}, H200)
    with runtime.use(fake), FakeTensorMode():
        outcome = measure_round(MatMul, params, H200, FAST)
    assert outcome.status == "ok", outcome.error
    assert outcome.raw and all(t > 0 for t in outcome.raw)
    assert outcome.memory is not None
    memory = outcome.memory.to_json()
    assert memory["peak_bytes"] == (100 + 96 - 32) * MiB
    assert memory["allocated_peak_bytes"] == 100 * MiB
    assert memory["graph_pool"] == {"reserved_bytes": 96 * MiB, "allocated_bytes": 32 * MiB}
    assert "graph pool" in memory["source"]
    assert fake.released == 1 and fake.synchronized > 0 and fake.graphs[0].replays > 0
    eager = MatMul.resolve({"size": "256"}, H200)
    with runtime.use(fake), FakeTensorMode():
        plain_memory = measure_round(MatMul, eager, H200, FAST).memory
    assert plain_memory is not None
    plain = plain_memory.to_json()
    assert plain["peak_bytes"] == 100 * MiB and "graph_pool" not in plain and plain["source"] == "torch.cuda.max_memory_allocated"
    assert torch.device("meta") == H200.torch_device


# --- the ROCm branches: AMD GPUs as a ROCm build of torch presents them ----------------------------


@pytest.fixture
def rocm(monkeypatch):
    """A ROCm build of torch: torch.version.hip set (and no CUDA version), as on an MI300X."""
    monkeypatch.setattr(torch.version, "hip", "6.4.43482")
    monkeypatch.setattr(torch.version, "cuda", None)


@pytest.mark.parametrize(
    "device, fmt", [(MI300X, torch.float8_e4m3fnuz), (MI355X, torch.float8_e4m3fn)], ids=["gfx942", "gfx950"]
)
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_float8_on_rocm_uses_the_format_the_gpu_takes(rocm, device, fmt, graph):
    result = trace("matmul", {"size": 256, "dtype": "float8", "graph": graph}, device=device)
    _assert_reached_the_end(result)
    assert {t.dtype for t in (*result.workload.a, *result.workload.b)} == {fmt}
    assert result.workload.details() == {"float8_format": str(fmt).removeprefix("torch.float8_")}


def test_float8_and_tf32_a_rocm_gpu_lacks_are_skipped_with_the_reason(rocm):
    assert trace("matmul", {"dtype": "float8"}, device=MI250X).skipped == (
        "float8 matmul needs an AMD GPU with FP8 (MI300 series gfx942, MI350 series gfx950); this GPU is gfx90a"
    )
    assert trace("matmul", {"dtype": "tf32"}, device=MI300X).skipped.startswith("tf32 is not measured on ROCm")
    assert trace("matmul", {"dtype": "float8"}, device=H200).workload.details() == {"float8_format": "e4m3fn"}


@pytest.mark.parametrize("backend", ["auto", "flash", "efficient", "math"])
def test_attention_on_rocm_records_the_library(rocm, backend):
    result = trace("attention", {"seq": 256, "backend": backend}, device=MI300X)
    _assert_reached_the_end(result)
    details = result.workload.details()
    assert details["backend"] in ("flash", "efficient", "math", "overrideable") or details["backend"].startswith("unknown")
    if details["backend"] in ("flash", "efficient"):
        assert details["rocm_fa_library"]  # aotriton, ck or default (or why torch does not say)
    assert trace("attention", {"backend": "cudnn"}, device=MI300X).skipped.startswith("SDPA backend cudnn is NVIDIA's")


@pytest.mark.parametrize(
    "workload, params",
    [
        ("matmul", {"dtype": "bfloat16"}),
        ("membw", {"op": "triad"}),
        ("llm", {"model": "tiny", "phase": "decode"}),
        ("llm", {"model": "tiny", "phase": "train"}),
    ],
    ids=["matmul", "membw", "llm-decode", "llm-train"],
)
def test_the_other_workloads_reach_their_end_on_an_mi300x(rocm, workload, params):
    _assert_reached_the_end(trace(workload, params, device=MI300X))


def test_collective_on_rocm_is_rccl(rocm):
    with fake_process_group(world_size=8, rank=3):
        result = trace("collective", {"op": "all_reduce", "dtype": "float32"}, device=MI300X)
    _assert_reached_the_end(result)
    details = result.workload.details()
    assert details["library"] == "rccl" and "timed_reduction_note" not in details  # the NVLS note is NVIDIA's
