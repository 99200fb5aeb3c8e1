"""The llm workload on the CPU with the tiny preset: every phase verifies, the work it claims
matches what torch counts, the KV cache is checked, oversized models are skipped, bad input exits 2."""

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.cli import main
from bench.measure.plan import expand
from bench.measure.runner import run_case
from workloads import get
from workloads.llm import (
    CONSISTENCY_TOLERANCE,
    LLM,
    attention_flop,
    bytes_moved,
    matmul_flop,
    tokens_per_iter,
)

FAST = ["--min-time", "0", "--repeats", "1", "--repeat-time", "0.001"]
SMALL = {"model": "tiny", "seq": 32, "batch": 2}


def _run(cpu, timing, **params):
    (case,) = expand("llm", {k: [v] for k, v in params.items()}, [cpu])
    return run_case(case, cpu, timing, get("llm"))


def _workload(cpu, **params):
    workload = LLM(LLM.resolve(params, cpu), cpu)
    workload.setup()
    return workload


@pytest.mark.parametrize("phase", ["prefill", "decode", "train"])
def test_each_phase_runs_and_verifies(cpu, fast_timing, phase):
    result = _run(cpu, fast_timing, model="tiny", phase=phase)
    assert result["status"] == "ok", result["error"]
    assert result["verify"]["passed"]
    assert result["work_unit"] == "token"
    assert result["details"]["layers_run"] == "2 of 2 layers"


@pytest.mark.parametrize("phase", ["prefill", "decode", "train"])
def test_moe_and_bfloat16_verify(cpu, fast_timing, phase):
    result = _run(cpu, fast_timing, **SMALL, phase=phase, experts=4, top_k=2, dtype="bfloat16")
    assert result["status"] == "ok", result["error"]
    assert result["verify"]["passed"]


@pytest.mark.parametrize("moe", [False, True])
@pytest.mark.parametrize("phase", ["prefill", "decode", "train"])
def test_matmul_flop_matches_flop_counter(cpu, phase, moe):
    """Torch's counter sees the matmuls (not SDPA on the CPU): within 2% of the formula."""
    extra = {"experts": 4, "top_k": 2} if moe else {}
    workload = _workload(cpu, **SMALL, phase=phase, **extra)
    workload.run()  # AdamW's first step allocates its state; count a steady iteration
    with FlopCounterMode(display=False) as counter:
        workload.run()
    assert counter.get_total_flops() == pytest.approx(matmul_flop(workload.p), rel=0.02)
    assert workload.work().terms["FLOP"] == pytest.approx(matmul_flop(workload.p) + attention_flop(workload.p))


@pytest.mark.parametrize("phase", ["prefill", "train"])
def test_attention_flop_is_the_causal_half_of_the_two_matmuls(cpu, phase):
    """QK^T and PV over the whole S x S square, per layer, counted by torch; the formula takes half
    (FlashAttention's convention), x3 for train."""
    p = LLM.resolve({**SMALL, "phase": phase}, cpu)
    b, h, s, d = p["batch"], p["heads"], p["seq"], p["head_dim"]
    q = k = v = torch.randn(b, h, s, d)
    with FlopCounterMode(display=False) as counter:
        torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
    forward = counter.get_total_flops() / 2 * p["run_layers"]
    assert attention_flop(p) == pytest.approx(forward * (3 if phase == "train" else 1))


def test_decode_attention_flop_counts_the_whole_context(cpu):
    p = LLM.resolve({**SMALL, "phase": "decode"}, cpu)
    expected = 4 * p["heads"] * p["head_dim"] * (p["seq"] + 1) * p["batch"] * p["run_layers"]
    assert attention_flop(p) == expected


def test_work_terms(cpu):
    p = LLM.resolve({**SMALL, "phase": "decode", "run_layers": 1}, cpu)
    assert tokens_per_iter(p) == 2
    d, v, f, hd = p["d_model"], p["vocab"], p["ffn"], p["head_dim"]
    weights = 1 * (d * (4 + 2 * 2) * hd + 4 * hd * d + 3 * d * f + 2 * d) + 2 * d + d + d * v
    kv = 2 * 1 * 2 * 2 * hd * (p["seq"] + 1 + 1)
    assert bytes_moved(p) == (weights + kv) * 4
    moe = LLM.resolve({**SMALL, "phase": "decode", "experts": 64, "top_k": 2}, cpu)
    dense_part = LLM.resolve({**SMALL, "phase": "decode", "experts": 4, "top_k": 2}, cpu)
    # Two tokens, two experts each: at most four of the 64 experts are read, as with 4 experts;
    # only the router (d x experts, two layers, 4 bytes) differs.
    assert bytes_moved(moe) - bytes_moved(dense_part) == 2 * (64 - 4) * d * 4


def test_run_layers_is_said_and_counted(cpu, fast_timing):
    result = _run(cpu, fast_timing, **SMALL, phase="prefill", layers=8, run_layers=2)
    assert result["status"] == "ok", result["error"]
    assert result["details"]["layers_run"] == "2 of 8 layers"
    assert result["details"]["scope"] == "2 of 8 layers"
    assert "scope" not in _run(cpu, fast_timing, **SMALL, phase="prefill", layers=2)["details"]
    whole = LLM.resolve({**SMALL, "layers": 8}, cpu)
    part = LLM.resolve({**SMALL, "layers": 8, "run_layers": 2}, cpu)
    assert attention_flop(part) == attention_flop(whole) / 4


def test_decode_matches_prefill(cpu):
    workload = _workload(cpu, **SMALL, phase="decode")
    with torch.no_grad():
        assert workload.consistency_error() < CONSISTENCY_TOLERANCE["float32"]
        assert workload.consistency_error_float32() < CONSISTENCY_TOLERANCE["float32"]


def test_bf16_decode_at_long_context_with_a_shifted_cache_fails(cpu, fast_timing, monkeypatch):
    """In bf16 at context 1024 the shift hides under the logits' tolerance; the float32 copy of the
    first layers still catches it, so the case fails."""
    params = {"model": "tiny", "batch": 1, "seq": 1024, "dtype": "bfloat16", "phase": "decode"}
    workload = _workload(cpu, **params)
    with torch.no_grad():
        assert workload.consistency_error_float32() < CONSISTENCY_TOLERANCE["float32"]
    assert _run(cpu, fast_timing, **params)["status"] == "ok"
    monkeypatch.setattr(LLM, "verify_cache_shift", 1)
    workload = _workload(cpu, **params)
    with torch.no_grad():
        assert workload.consistency_error() < CONSISTENCY_TOLERANCE["bfloat16"]  # the blind spot
        assert workload.consistency_error_float32() > 10 * CONSISTENCY_TOLERANCE["float32"]
    result = _run(cpu, fast_timing, **params)
    assert result["status"] == "failed"
    assert not result["verify"]["passed"]


def test_shifted_cache_fails_the_consistency_check(cpu, fast_timing, monkeypatch):
    monkeypatch.setattr(LLM, "verify_cache_shift", 1)
    workload = _workload(cpu, **SMALL, phase="decode")
    with torch.no_grad():
        assert workload.consistency_error() > 10 * CONSISTENCY_TOLERANCE["float32"]
    result = _run(cpu, fast_timing, **SMALL, phase="decode")
    assert result["status"] == "failed"
    assert not result["verify"]["passed"]


def test_model_too_big_is_skipped_with_the_memory_message(cpu, fast_timing):
    result = _run(cpu, fast_timing, model="llama-3-70b", phase="decode")
    assert result["status"] == "skipped"
    assert re.fullmatch(r"needs \d+\.\d GiB, device has \d+\.\d GiB", result["error"]), result["error"]


def test_a_real_out_of_memory_past_the_estimate_is_recorded_as_oom(cpu, fast_timing, monkeypatch):
    """The estimate lets the case through (a device claiming 1 TiB free), then allocating the KV
    cache runs out as a GPU would: the case is "oom" with torch's message, and the run goes on."""
    import workloads.llm as llm

    def exhausted(self, batch, positions):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(llm, "free_memory", lambda device, torch_device: 1 << 40)
    monkeypatch.setattr(llm.Transformer, "new_cache", exhausted)
    result = _run(cpu, fast_timing, **SMALL, phase="decode")
    assert result["status"] == "oom"
    assert result["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"


def test_graph_is_skipped_off_cuda(cpu, fast_timing):
    result = _run(cpu, fast_timing, **SMALL, phase="decode", graph=True)
    assert result["status"] == "skipped"
    assert "CUDA" in result["error"]
    assert "graph" not in LLM.resolve({"graph": "false"}, cpu)


def test_presets_fill_the_dimensions(cpu):
    p = LLM.resolve({"model": "qwen3-30b-a3b", "kv_heads": "8"}, cpu)
    assert (p["d_model"], p["layers"], p["heads"], p["kv_heads"], p["experts"], p["top_k"]) == (2048, 48, 32, 8, 128, 8)
    assert p["run_layers"] == 48 and p["dtype"] == "float32"


BAD = {
    "heads not a multiple": (["kv_heads=4", "heads=6"], "parameter heads: 6 is not a multiple of kv_heads 4"),
    "top_k above experts": (["model=mixtral-8x7b", "top_k=9"], "parameter top_k: 9 is larger than experts 8; valid: 1 to 8"),
    "top_k on a dense model": (["top_k=2"], "parameter top_k: 2 is larger than experts 1"),
    "run_layers above layers": (["run_layers=3"], "parameter run_layers: 3 is more than the model's 2 layers; valid: 1 to 2"),
    "unknown preset": (["model=gpt-9"], "parameter model: 'gpt-9' is not valid; valid: llama-3-8b"),
    "unknown phase": (["phase=serve"], "parameter phase: 'serve' is not valid; valid: prefill, decode, train"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_exits_2_with_one_line(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    given, expected = BAD[name]
    argv = ["run", "llm"]
    for item in given:
        argv += ["-p", item]
    code = main(argv + FAST)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert expected in lines[0]
    assert not (tmp_path / "results").exists()


def test_list_shows_llm(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("llm", "llama-3-70b", "qwen3-30b-a3b", "run_layers"):
        assert text in out


def test_a_slice_says_so_in_the_report(tmp_path, capsys):
    out = tmp_path / "slice.json"
    argv = ["run", "llm", "-p", "model=tiny", "-p", "layers=8", "-p", "run_layers=2", "-p", "seq=16", "--out", str(out)]
    assert main(argv + FAST + ["--no-monitor"]) == 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2_of_8_layers" in text
    # The preset says its own dimensions and the scope says run_layers: neither is repeated.
    assert "model=tiny" in text and "layers=8" in text
    assert "d_model=" not in text and "run_layers=" not in text


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_moe_decode_check_takes_the_decode_steps_experts(cpu, dtype, monkeypatch):
    """A near-tie of router logits that rounding settles one way in the decode step and the other
    in the prefill over all L + 1 tokens (forced here: every one-token call swaps its last expert
    for the next best) is not a cache bug: the prefill takes the experts the decode step chose,
    and the check passes. Without that, one changed expert fails it by far."""
    from workloads.llm import Transformer

    choose = Transformer.choose_experts
    flips = []

    def flipped(self, i, logits):
        if self.forced_routes is not None or logits.shape[0] != 1:
            return choose(self, i, logits)
        ranked = logits.topk(self.p["top_k"] + 1, dim=-1).indices
        chosen = torch.cat([ranked[:, :-2], ranked[:, -1:]], dim=-1)  # the k-th best swapped for the (k+1)-th
        flips.append(i)
        if self.route_log is not None:
            self.route_log[i].append(chosen)
        self.last_route = chosen
        return chosen

    monkeypatch.setattr(Transformer, "choose_experts", flipped)
    workload = _workload(cpu, model="tiny", seq=24, phase="decode", experts=4, top_k=2, dtype=dtype)
    workload.run()
    check = workload.verify()
    assert flips, "no decode step went through the experts"
    assert check.passed, check


def test_a_graph_replay_is_checked_against_an_eager_forward():
    """graph=true's output is compared with one eager forward on the same inputs, not only checked
    for being finite: a replay that ran other kernels (its logits off by 1%) fails the case. Run on
    the CPU standing in for a GPU, with a stand-in graph that replays the captured function."""
    from bench.measure import runtime
    from tests.fake_device import CPU_AS_GPU, FakeRuntime, ReplayGraph

    class OffGraph(ReplayGraph):
        def replay(self) -> None:
            super().replay()
            self.static.mul_(1.01)

    params = LLM.resolve({"model": "tiny", "phase": "decode", "seq": 32, "graph": "true", "dtype": "float32"}, CPU_AS_GPU)
    checks = []
    for graph_class in (ReplayGraph, OffGraph):
        with runtime.use(FakeRuntime(real_data=True, graph_class=graph_class)) as fake:
            workload = LLM(params, CPU_AS_GPU)
            workload.setup()
            workload.run()
            checks.append(workload.verify())
            assert fake.graphs[0].replays == 1
    faithful, off = checks
    assert faithful.passed, faithful
    assert not off.passed and off.max_rel_error == pytest.approx(0.01, rel=0.05), off
