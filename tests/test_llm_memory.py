"""The llm memory estimate against what a run really holds: the live storages of real runs on the
CPU (tests/live_memory.py), stage by stage, with the workload on its GPU branch (CPU_AS_GPU) and
attention dispatched as CUDA dispatches it (float32 with grouped-query attention on the math
backend, with its S x S scores; 16-bit dtypes fused).

Each stage checks the resident terms plus that stage's transient term, so a test names what it
validates:
- set-up: weights + the float32 drawing of the largest weight;
- timed iteration: prefill and decode, the KV cache, one layer's temporaries and the logits;
  train, gradients, AdamW's moments, autograd's saved activations and logits, AdamW's foreach
  temporary;
- check: the float64 layer reference, the decode-versus-prefill caches and prefill, the float32
  copy of two layers, and the math attention's scores.
Margin: the estimate is at least 95% of the measured peak and at most 25% above it (it is meant
to skip what cannot fit, so erring high is the safe side). The allocator's rounding, cached
blocks and library workspaces are outside both figures (WORKSPACE_BYTES covers them).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from bench.measure import runtime
from tests.fake_device import CPU_AS_GPU, FakeRuntime
from tests.live_memory import LiveMemory
from workloads.llm import LLM, memory_estimate

MiB = 2**20
LOW, HIGH = 0.95, 1.25
DENSE = {"model": "tiny", "d_model": 512, "heads": 8, "kv_heads": 2, "ffn": 1536, "vocab": 8192, "layers": 4}
MOE = {
    "model": "tiny",
    "d_model": 256,
    "heads": 8,
    "kv_heads": 2,
    "ffn": 512,
    "vocab": 4096,
    "layers": 2,
    "experts": 8,
    "top_k": 2,
}


class CudaAttentionDispatch(TorchFunctionMode):
    """SDPA as CUDA dispatches it: no fused kernel takes float32 with grouped-query attention, so
    the math backend runs (the CPU's flash kernel would take it)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and kwargs.get("enable_gqa") and args[0].dtype == torch.float32:
            with sdpa_kernel(SDPBackend.MATH):
                return func(*args, **kwargs)
        return func(*args, **kwargs)


def measured_stages(params: dict[str, Any]) -> dict[str, int]:
    """Peak live bytes of each stage: set-up, the check (after one iteration, as the harness
    does), and the timed iteration (a steady one: AdamW's state exists)."""
    p = LLM.resolve(params, CPU_AS_GPU)
    peaks: dict[str, int] = {}
    with runtime.use(FakeRuntime(real_data=True, free_bytes=16 * 2**30)), CudaAttentionDispatch():
        workload = LLM(p, CPU_AS_GPU)
        live = LiveMemory()
        with live:
            workload.setup()
            peaks["setup"] = live.peak_bytes
            workload.run()
            live.reset_peak()
            assert workload.verify().passed
            peaks["check"] = live.peak_bytes
            workload.run()
            live.reset_peak()
            workload.run()
            peaks["iteration"] = live.peak_bytes
        workload.teardown()
    return peaks


CASES = [
    {**DENSE, "phase": "prefill", "seq": 1024},
    {**DENSE, "phase": "decode", "seq": 256},
    {**DENSE, "phase": "decode", "seq": 1024},
    {**DENSE, "phase": "train", "seq": 256},
    {**DENSE, "phase": "train", "seq": 1024},
    {**DENSE, "phase": "prefill", "seq": 512, "dtype": "float32"},
    {**MOE, "phase": "prefill", "seq": 256},
    {**MOE, "phase": "decode", "seq": 256},
    {**MOE, "phase": "train", "seq": 256},
]


@pytest.mark.parametrize(
    "params",
    CASES,
    ids=lambda p: f"{'moe' if p.get('experts') else 'dense'}-{p['phase']}-{p['seq']}-{p.get('dtype', 'bfloat16')}",
)
def test_each_stage_is_within_the_margin(params):
    params = {"dtype": "bfloat16", **params}
    measured = measured_stages(params)
    estimate = memory_estimate(LLM.resolve(params, CPU_AS_GPU), gpu=True)
    report = {stage: (round(measured[stage] / MiB, 1), round(estimate.stage_bytes(stage) / MiB, 1)) for stage in measured}
    for stage, peak in measured.items():
        estimated = estimate.stage_bytes(stage)
        assert LOW * peak <= estimated <= HIGH * peak, f"{stage}: measured / estimated MiB {report}"


def test_the_float32_checks_math_attention_scores_are_counted():
    """At context 1024 the float32 check's attention on the math backend holds [heads, S, S]
    scores (about 2 GB each for Llama-3-8B at 4096 tokens): the check stage is dominated by
    them, and the estimate follows them."""
    params = {**DENSE, "phase": "decode", "seq": 1024, "dtype": "bfloat16"}
    measured = measured_stages(params)
    estimate = memory_estimate(LLM.resolve(params, CPU_AS_GPU), gpu=True)
    without = memory_estimate(LLM.resolve(params, CPU_AS_GPU), gpu=False)  # the CPU's fused kernel: no scores
    assert estimate.transient["check"] - without.transient["check"] > 60 * MiB
    assert measured["check"] > without.stage_bytes("check")


def test_llama_3_8b_training_needs_what_its_terms_add_up_to():
    """Weights, gradients, two AdamW moments and AdamW's foreach temporary: five weight-sized
    terms (16 GB each in bf16) plus the saved activations of 1,024 tokens; the estimate before
    this said 70.6 GB and skipped nothing on an 80 GB card that cannot hold it."""
    from tests.fake_device import H200

    estimate = memory_estimate(LLM.resolve({"model": "llama-3-8b", "phase": "train"}, H200), gpu=True)
    assert 80e9 < estimate.peak_bytes < 90e9
    assert estimate.training["gradients"] == estimate.resident["weights"] == estimate.training["adamw_moments"] // 2
