"""A decoder-only transformer (Llama / Mixtral / Qwen3-MoE shaped) built from torch operations:
prefill, decode and a training step, in tokens.

No downloads: the weights are drawn N(0, 0.02) from a fixed seed (never zeros: power depends on
the data). A layer is RMSNorm, a fused QKV projection with rotary embeddings, grouped-query
attention through F.scaled_dot_product_attention (enable_gqa), the output projection, RMSNorm and
a SwiGLU feed-forward (fused gate/up, then down); with `experts` > 1 the feed-forward is a
mixture of experts (a router, softmax over the top-k logits, the tokens grouped by expert with one
host synchronisation per layer for the group sizes, one SwiGLU per expert on its tokens). A final
RMSNorm and lm_head over the vocabulary close the model. Qwen3's q/k norms are left out: they
change neither the matmul work nor the bytes moved by much. Weights are stored [in, out] and
applied as x @ W.

The decode-versus-prefill check runs twice: on the logits in the model's dtype, and on a float32
copy of the first two layers (what they add to the residual stream). The second is what catches a
cache one position off in bfloat16: there the shift's error at context 1024 (~1.3e-2 on the CPU)
hides under the bfloat16 tolerance (6e-2), while in float32 a correct cache agrees to ~2e-6 and a
shifted one is off by 6e-3 or more up to context 2048 (tolerance 1e-4).

Phases, each iteration the same fixed work:
- prefill: B prompts of S tokens, causal attention, K and V written into a preallocated cache;
  logits on the last position of each prompt (as serving engines compute them). B*S tokens.
- decode: one new token for each of B sequences at position L, against a KV cache of L + 1
  positions whose first L hold random keys and values; every iteration decodes the same position,
  so repeats are comparable. B tokens.
- train: forward over B x S tokens (logits on every position, cross-entropy against random
  targets), backward, and an AdamW step. B*S tokens.

Work terms per iteration (only the `run_layers` layers that run count; lm_head always does):
- FLOP = 2 x active matmul parameters x tokens (QKV, output, feed-forward or router + top_k
  experts, per layer; lm_head d_model x vocab on each position that gets logits) + attention
  4 x heads x head_dim x context per token and layer: context S/2 (causal half, FlashAttention's
  convention) in prefill and train, L + 1 in decode (the L cached positions and the new one).
  Train counts 3x its forward (backward = 2x forward).
- byte = weights read (embedding rows, attention, norms, router, the experts the batch can touch:
  min(experts, tokens x top_k) of them, an upper bound, lm_head) + the KV cache read and written
  (prefill: written once and read once; decode: L + 1 positions read, one written). Train: the
  weights read in forward and backward, gradients written, and AdamW's read of parameter,
  gradient and two moments and write of parameter and moments (10x the weights); activations are
  not counted, so it is a lower bound.

Verification before timing: layer 0 against an independent float64 implementation on a short
prompt (explicit per-head attention with a causal mask, rotary by formula); in decode also the
consistency check that catches KV-cache bugs: the logits of a decode step at position L, after a
prefill of L tokens, against those of one prefill over the L + 1 tokens at its last position.

Memory: setup estimates weights + KV cache + activations (+ gradients and AdamW state for train)
before allocating and skips the case with "needs X GiB, device has Y GiB" when that exceeds the
device's free memory (CUDA: torch.cuda.mem_get_info; CPU: available RAM).

`graph=true` (CUDA, prefill and decode of a dense model) captures one iteration in a CUDA graph
and replays it, as serving engines do for decode; it is left out of the resolved parameters when
false, as for matmul.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import torch
import torch.nn.functional as F

from bench.errors import Unsupported, UsageError
from bench.measure import runtime
from bench.measure.hardware import DeviceInfo
from bench.measure.workload import Param, Verification, Work, Workload, max_rel_error, seeded_generator

GiB = 1024**3
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PHASES = ("prefill", "decode", "train")
DIMENSIONS = ("d_model", "layers", "heads", "kv_heads", "head_dim", "ffn", "vocab", "experts", "top_k")
INIT_STD = 0.02
ROPE_THETA = 500000.0
NORM_EPS = 1e-5
VERIFY_TOKENS = 16  # prompt length of the layer check
# Layer check: max|out - ref| / max|ref| of one layer's output, ref in float64 from the same weights.
LAYER_TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 5e-3}
# Decode-versus-prefill logits: the same arithmetic in a different order (and, in bf16/fp16, a
# different rounding of the cached K/V path), through every layer that runs.
CONSISTENCY_TOLERANCE = {"float32": 1e-4, "bfloat16": 6e-2, "float16": 1e-2}
CONSISTENCY_LAYERS = 2  # layers in the float32 copy of the check
# A graph replay against an eager forward on the same inputs: the same kernels on the same data
# (cuBLAS may pick another algorithm inside a capture, so not bitwise).
REPLAY_TOLERANCE = 1e-2
WORKSPACE_BYTES = 256 * 1024**2  # allocator slack, library workspaces
# Kernels per iteration (LLM._launches), from aten ops counted on fake tensors.
LAUNCHES_LAYER = 37
LAUNCHES_DENSE_FFN = 5
LAUNCHES_ROUTING = 12
LAUNCHES_PER_EXPERT = 9
LAUNCHES_FIXED = 10
LAUNCHES_TRAIN_FACTOR = 3.25
LAUNCHES_TRAIN_FIXED = 52
# CUDA's multi_tensor_apply (AdamW's foreach ops): 65,536 elements a block, 320 blocks and at most
# 36 tensors (four lists) a launch; AdamW's step makes 8 such ops (decay, two moment updates,
# square root, bias corrections, the update).
FOREACH_CHUNK, FOREACH_BLOCKS, FOREACH_TENSORS, ADAMW_FOREACH_OPS = 65536, 320, 36, 8


@dataclass(frozen=True)
class Preset:
    d_model: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    experts: int = 1
    top_k: int = 1


# Published dimensions (the models' config.json); `ffn` is the per-expert width for MoE models.
PRESETS = {
    "llama-3-8b": Preset(4096, 32, 32, 8, 128, 14336, 128256),
    "llama-3-70b": Preset(8192, 80, 64, 8, 128, 28672, 128256),
    "mixtral-8x7b": Preset(4096, 32, 32, 8, 128, 14336, 32000, experts=8, top_k=2),
    "qwen3-30b-a3b": Preset(2048, 48, 32, 4, 128, 768, 151936, experts=128, top_k=8),
    "tiny": Preset(256, 2, 4, 2, 64, 688, 1024),
}


def _usage(name: str, what: str, valid: str) -> UsageError:
    return UsageError(f"llm: parameter {name}: {what}; valid: {valid}")


# --- accounting (pure functions of the resolved parameters, so tests and reports can use them) ---


def layer_matmul_params(p: dict[str, Any]) -> tuple[int, int]:
    """(active, stored) matmul parameters of one layer; active counts the router and top_k
    experts, stored all experts."""
    d, h, kv, hd, f, e, k = (p[n] for n in ("d_model", "heads", "kv_heads", "head_dim", "ffn", "experts", "top_k"))
    attention = d * (h + 2 * kv) * hd + h * hd * d
    if e > 1:
        return attention + d * e + k * 3 * d * f, attention + d * e + e * 3 * d * f
    return attention + 3 * d * f, attention + 3 * d * f


def tokens_per_iter(p: dict[str, Any]) -> int:
    return p["batch"] * (1 if p["phase"] == "decode" else p["seq"])


def matmul_flop(p: dict[str, Any]) -> float:
    """2 x active matmul parameters x tokens, lm_head on the positions that get logits; train 3x."""
    active, _ = layer_matmul_params(p)
    tokens = tokens_per_iter(p)
    logit_positions = p["batch"] if p["phase"] == "prefill" else tokens
    forward = 2.0 * (tokens * p["run_layers"] * active + logit_positions * p["d_model"] * p["vocab"])
    return 3 * forward if p["phase"] == "train" else forward


def attention_flop(p: dict[str, Any]) -> float:
    """4 x heads x head_dim x context per token and layer (causal half in prefill and train,
    L + 1 in decode); train 3x."""
    context = p["seq"] + 1 if p["phase"] == "decode" else p["seq"] / 2
    forward = 4.0 * p["heads"] * p["head_dim"] * context * tokens_per_iter(p) * p["run_layers"]
    return 3 * forward if p["phase"] == "train" else forward


def element_size(p: dict[str, Any]) -> int:
    return torch.tensor([], dtype=DTYPES[p["dtype"]]).element_size()


def weight_elements(p: dict[str, Any], touched_only: bool) -> int:
    """Elements of the weights of the layers that run plus embedding and lm_head; with
    `touched_only`, the experts one iteration can touch (min(experts, tokens x top_k)) and only the
    embedding rows looked up."""
    d, e = p["d_model"], p["experts"]
    _, stored = layer_matmul_params(p)
    per_layer = stored + 2 * d
    tokens = tokens_per_iter(p)
    if touched_only and e > 1:
        touched = min(e, tokens * p["top_k"])
        per_layer -= (e - touched) * 3 * d * p["ffn"]
    embedding = min(tokens, p["vocab"]) * d if touched_only else p["vocab"] * d
    return p["run_layers"] * per_layer + embedding + d + d * p["vocab"]


def kv_elements(p: dict[str, Any], positions: int) -> int:
    return 2 * p["run_layers"] * p["batch"] * p["kv_heads"] * p["head_dim"] * positions


def bytes_moved(p: dict[str, Any]) -> float:
    size = element_size(p)
    weights = weight_elements(p, touched_only=True) * size
    if p["phase"] == "train":
        return 10.0 * weights
    if p["phase"] == "prefill":
        return float(weights + 2 * kv_elements(p, p["seq"]) * size)
    return float(weights + (kv_elements(p, p["seq"] + 1) + kv_elements(p, 1)) * size)


def adamw_foreach_launches(p: dict[str, Any]) -> int:
    """Kernels AdamW's foreach step launches on CUDA beyond one per op: each op is split into
    launches of FOREACH_BLOCKS blocks of FOREACH_CHUNK elements (and FOREACH_TENSORS tensors),
    about 71 per op for Llama-3-8B's two-layer slice (1.5 G parameters, most in the embedding and
    lm_head)."""
    tensors = 3 + p["run_layers"] * (7 if p["experts"] > 1 else 6)
    chunks = weight_elements(p, touched_only=False) // FOREACH_CHUNK + tensors
    per_op = max(math.ceil(chunks / FOREACH_BLOCKS), math.ceil(tensors / FOREACH_TENSORS))
    return ADAMW_FOREACH_OPS * (per_op - 1)


def largest_weight(p: dict[str, Any]) -> int:
    """Elements of the largest single weight tensor (MoE stores each layer's experts as one)."""
    d, h, kv, hd, f, v, e = (p[n] for n in ("d_model", "heads", "kv_heads", "head_dim", "ffn", "vocab", "experts"))
    return max(v * d, d * (h + 2 * kv) * hd, h * hd * d, e * d * 2 * f)


def layer_matrix_largest(p: dict[str, Any]) -> int:
    """Elements of layer 0's largest matrix as the float64 check takes it (one expert for MoE)."""
    d, h, kv, hd, f = (p[n] for n in ("d_model", "heads", "kv_heads", "head_dim", "ffn"))
    return max(d * (h + 2 * kv) * hd, h * hd * d, d * 2 * f)


def forward_temporaries(p: dict[str, Any], size: int, tokens: int) -> int:
    """Bytes a layer's forward holds at once without autograd, over `tokens` tokens: the larger of
    the attention block (QKV, the rotated q and k with the rotary's temporaries, the attention
    output and its contiguous copy) and the feed-forward (gate/up, SiLU, their product; for MoE,
    each token's top_k experts' worth), beside the residual stream, the norm's output and
    rms_norm's float32 copies."""
    d, h, kv, hd, f = (p[n] for n in ("d_model", "heads", "kv_heads", "head_dim", "ffn"))
    attention = (h + 2 * kv) * hd + 3 * h * hd + 2 * kv * hd + 2 * h * hd
    width = f * (p["top_k"] if p["experts"] > 1 else 1)
    feed_forward = 4 * width + (p["experts"] if p["experts"] > 1 else 0)
    return tokens * (size * (2 * d + max(attention, feed_forward)) + 8 * d)


def saved_for_backward(p: dict[str, Any], size: int) -> int:
    """Bytes autograd keeps per token and layer for the backward pass: each rms_norm's float32
    input and its normalised and weighted outputs, the QKV output (v is a view of it), the rotated
    q and k, the fused attention's output and log-sum-exp, the contiguous copy the output
    projection reads, and the feed-forward's gate/up, SiLU and product (per expert a token
    reaches for MoE, with its gathered input and output)."""
    d, h, kv, hd, f, e, k = (p[n] for n in ("d_model", "heads", "kv_heads", "head_dim", "ffn", "experts", "top_k"))
    norms = 2 * (4 * d + 2 * size * d)
    attention = size * ((h + 2 * kv) * hd + h * hd + kv * hd + 2 * h * hd) + 4 * h
    feed_forward = size * 4 * f if e == 1 else size * (e + k * (4 * f + 2 * d))
    return norms + attention + feed_forward


def attention_scores(heads: int, tokens: int, size: int) -> int:
    """Bytes of the math backend's attention over `tokens` tokens of one sequence: the scores,
    their softmax and the causal mask's bias ([heads, S, S] twice, [S, S] once), and the safe
    softmax's boolean mask ([heads, S, S], a byte each). Fused kernels (flash, efficient, cuDNN)
    never hold them; SDPA falls back to math where none takes the inputs (float32 with
    grouped-query attention on CUDA in torch 2.13)."""
    return (size * (2 * heads + 1) + heads) * tokens * tokens


@dataclass(frozen=True)
class MemoryEstimate:
    """What one case holds, in bytes, term by term: `resident` from set-up to the end (weights,
    the KV cache), `training` from the first iteration on (gradients, AdamW's two moments), and
    `transient`, each stage's temporaries (set-up, the timed iteration, the check). A stage's
    total is what is resident then plus its temporaries; the case's peak is the largest stage
    plus WORKSPACE_BYTES. Every term is named, so a report or a test can say which it checks."""

    resident: dict[str, int]
    training: dict[str, int]
    transient: dict[str, int]

    def stage_bytes(self, stage: str) -> int:
        held = sum(self.resident.values()) + (sum(self.training.values()) if stage != "setup" else 0)
        return held + self.transient[stage]

    @property
    def peak_bytes(self) -> int:
        return max(self.stage_bytes(stage) for stage in self.transient) + WORKSPACE_BYTES


def memory_estimate(p: dict[str, Any], gpu: bool = True, fused_float32: bool = False) -> MemoryEstimate:
    """The bytes a case needs at its peak, term by term (`MemoryEstimate`), on a GPU (fused
    attention in 16-bit dtypes; in float32 with grouped-query heads only where `fused_float32`,
    `Runtime.fused_attention`, says a fused kernel takes it) or, `gpu` False, on the CPU, whose
    flash kernel takes every dtype. Validated against the live storages of real runs on the CPU
    (tests/test_llm_memory.py), term by term where a stage isolates one.

    - set-up draws each weight in float32 before rounding it (the largest weight's float32
      copy), and a decode cache's random keys in float32, a layer at a time;
    - the timed iteration: prefill and decode hold one layer's temporaries over the iteration's
      tokens (`forward_temporaries`) and the logits; train holds what autograd saves
      (`saved_for_backward`) over every layer and token, the logits in the model's dtype and in
      float32 with log-softmax and its gradient, then AdamW's foreach step one weight-sized
      temporary (the square root of the second moment);
    - the check: layer 0 against float64 (its largest matrix in float64), and in decode the
      prefill of L + 1 tokens in the model's dtype with its cache, and a float32 copy of the
      first CONSISTENCY_LAYERS layers with its cache, whose attention over L + 1 tokens runs on
      the math backend unless `fused_float32`.
    """
    size = element_size(p)
    d, h, kv, hd, v = (p[n] for n in ("d_model", "heads", "kv_heads", "head_dim", "vocab"))
    b, s, phase = p["batch"], p["seq"], p["phase"]
    weights = weight_elements(p, touched_only=False) * size
    # Grouped-query attention in float32 on CUDA: no fused kernel of torch 2.13 takes it, SDPA
    # runs the math backend with its S x S scores (the CPU's flash kernel takes it).
    math_float32 = gpu and kv != h and not fused_float32
    math_here = math_float32 and size == 4  # the model's own dtype is float32: its attention too
    resident = {"weights": weights}
    training: dict[str, int] = {}
    # A weight drawn in float32, scaled (a second float32 copy), then rounded: beside the weights.
    transient = {"setup": largest_weight(p) * (8 - size)}
    tokens = tokens_per_iter(p)
    if phase == "train":
        training = {"gradients": weights, "adamw_moments": 2 * weights}
        logits = b * s * v * (size + 3 * 4)
        saved = tokens * p["run_layers"] * saved_for_backward(p, size)
        if math_here:
            saved += b * p["run_layers"] * attention_scores(h, s, size)
        transient["iteration"] = max(saved + logits, weights + b * s * v * size)  # backward, then AdamW's step
        # The check: the last iteration's logits, still held, and isfinite's temporaries over them
        # (abs, and three boolean masks).
        transient["check"] = max(
            b * s * v * (2 * size + 3),
            b * s * v * size + forward_temporaries(p, size, min(VERIFY_TOKENS, s)) + layer_matrix_largest(p) * 8,
        )
        return MemoryEstimate(resident, training, transient)
    positions = s + 2 if phase == "decode" else s
    resident["kv_cache"] = kv_elements(p, s + 1 if phase == "decode" else s) * size
    if phase == "decode":
        transient["setup"] = max(transient["setup"], kv_elements({**p, "run_layers": 1}, s + 1) * 4)
    iteration = forward_temporaries(p, size, tokens) + b * v * (size + 4)
    if math_here and phase == "prefill":
        iteration += b * attention_scores(h, s, size)
    transient["iteration"] = iteration
    check = forward_temporaries(p, size, min(VERIFY_TOKENS, positions)) + layer_matrix_largest(p) * 8
    if phase == "decode":
        length = s + 1
        copied = min(CONSISTENCY_LAYERS, p["run_layers"])
        _, stored = layer_matmul_params(p)
        same_dtype = 2 * kv_elements({**p, "batch": 1}, length) * size + forward_temporaries(p, size, length) + v * (size + 4)
        if math_here:
            same_dtype += attention_scores(h, length, size)
        float32 = (
            copied * (stored + 2 * d) * 4
            + 2 * kv_elements({**p, "batch": 1, "run_layers": copied}, length) * 4
            + forward_temporaries({**p, "dtype": "float32"}, 4, length)
        )
        if math_float32:
            float32 += attention_scores(h, length, 4)
        check = max(check, same_dtype, float32)
    transient["check"] = check
    return MemoryEstimate(resident, training, transient)


def free_memory(device: DeviceInfo, torch_device: torch.device) -> int:
    if device.kind == "cuda":
        free, _ = runtime.current().mem_get_info(torch_device)
        return free
    return int(psutil.virtual_memory().available)


def even_split(pairs: int, experts: int) -> list[int]:
    """`pairs` (token, slot) pairs spread over `experts` as evenly as they go: the expert counts a
    runtime without data stands in for (every expert that can be touched is)."""
    return [pairs // experts + (1 if e < pairs % experts else 0) for e in range(experts)]


# --- the model ------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + NORM_EPS)).to(x.dtype) * weight


def rope_tables(positions: int, head_dim: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(positions, device=device, dtype=torch.float64), inv)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half rotary embedding; x [B, S, heads, head_dim], cos/sin [S, head_dim/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


class Transformer:
    """Weights and the forward pass of the layers that run. The KV cache is [B, kv_heads, positions,
    head_dim] per layer, passed in so verification can use a cache of its own."""

    def __init__(self, p: dict[str, Any], device: torch.device, positions: int, requires_grad: bool) -> None:
        self.p = p
        dtype = DTYPES[p["dtype"]]
        self.dtype = dtype
        self.device = device
        gen = seeded_generator(device)
        d, h, kv, hd, f, v, e = (p[n] for n in ("d_model", "heads", "kv_heads", "head_dim", "ffn", "vocab", "experts"))

        def normal(*shape: int) -> torch.Tensor:
            # Drawn in float32 (the generator's type) then rounded, one tensor at a time.
            return (torch.randn(*shape, device=device, generator=gen) * INIT_STD).to(dtype).requires_grad_(requires_grad)

        def ones(n: int) -> torch.Tensor:
            return torch.ones(n, device=device, dtype=dtype).requires_grad_(requires_grad)

        self.embed = normal(v, d)
        self.layers: list[dict[str, torch.Tensor]] = []
        for _ in range(p["run_layers"]):
            layer = {"attn_norm": ones(d), "wqkv": normal(d, (h + 2 * kv) * hd), "wo": normal(h * hd, d), "ffn_norm": ones(d)}
            if e > 1:
                layer |= {"router": normal(d, e), "w13": normal(e, d, 2 * f), "w2": normal(e, f, d)}
            else:
                layer |= {"w13": normal(d, 2 * f), "w2": normal(f, d)}
            self.layers.append(layer)
        self.final_norm = ones(d)
        self.lm_head = normal(d, v)
        self.cos, self.sin = rope_tables(positions, hd, device, dtype)
        self._no_routes()

    def _no_routes(self) -> None:
        self.last_route: torch.Tensor | None = None  # layer's expert choice of its last call [tokens, top_k]
        self.route_log: list[list[torch.Tensor]] | None = None  # per layer, each call's choice (`recording_routes`)
        self.forced_routes: list[torch.Tensor] | None = None  # per layer, the choice to take (`forcing_routes`)

    @contextlib.contextmanager
    def recording_routes(self) -> Iterator[list[list[torch.Tensor]]]:
        """Within the block, every MoE layer appends its expert choice of each call to the
        yielded list (one list per layer); empty lists for a dense model."""
        self.route_log = [[] for _ in self.layers]
        try:
            yield self.route_log
        finally:
            self.route_log = None

    @contextlib.contextmanager
    def forcing_routes(self, log: list[list[torch.Tensor]]) -> Iterator[None]:
        """Within the block, each MoE layer takes the experts `log` recorded for it (its calls'
        choices joined in token order) instead of choosing: a prefill over the tokens that a
        prefill and a decode step saw between them then routes every token as they did, so a
        comparison of the two paths is not decided by a bf16 rounding that flips a near-tie of
        router logits (one changed expert moves the logits far past any tolerance)."""
        self.forced_routes = [torch.cat(parts) for parts in log] if log and all(log) else None
        try:
            yield
        finally:
            self.forced_routes = None

    def float32_slice(self, layers: int) -> Transformer:
        """A float32 copy of the first `layers` layers (no embedding, final norm or lm_head: run it
        through `hidden`), for checks that must not drown in bf16 rounding."""
        copy = object.__new__(Transformer)
        copy.p = {**self.p, "dtype": "float32", "run_layers": layers}
        copy.dtype, copy.device = torch.float32, self.device
        copy.layers = [{k: t.detach().float() for k, t in layer.items()} for layer in self.layers[:layers]]
        copy.cos, copy.sin = rope_tables(self.cos.shape[0], self.p["head_dim"], self.device, torch.float32)
        copy._no_routes()
        return copy

    def parameters(self) -> list[torch.Tensor]:
        found = [self.embed, self.final_norm, self.lm_head]
        for layer in self.layers:
            found += list(layer.values())
        return found

    def new_cache(self, batch: int, positions: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        p = self.p
        shape = (batch, p["kv_heads"], positions, p["head_dim"])
        dev = self.device
        return [
            (torch.empty(shape, device=dev, dtype=self.dtype), torch.empty(shape, device=dev, dtype=self.dtype))
            for _ in self.layers
        ]

    def attention(self, i: int, x: torch.Tensor, pos: int, cache: list[tuple[torch.Tensor, torch.Tensor]] | None) -> torch.Tensor:
        p, w = self.p, self.layers[i]
        b, s, _ = x.shape
        h, kv, hd = p["heads"], p["kv_heads"], p["head_dim"]
        qkv = (x @ w["wqkv"]).view(b, s, h + 2 * kv, hd)
        cos, sin = self.cos[pos : pos + s], self.sin[pos : pos + s]
        q = apply_rope(qkv[:, :, :h], cos, sin).transpose(1, 2)
        k = apply_rope(qkv[:, :, h : h + kv], cos, sin).transpose(1, 2)
        v = qkv[:, :, h + kv :].transpose(1, 2)
        if cache is not None:
            cache_k, cache_v = cache[i]
            cache_k[:, :, pos : pos + s] = k
            cache_v[:, :, pos : pos + s] = v
            if pos > 0:  # attend to what the cache holds before this chunk, too
                k, v = cache_k[:, :, : pos + s], cache_v[:, :, : pos + s]
        if pos > 0 and s > 1:
            raise AssertionError("a chunk after position 0 must be one token (decode)")
        out = F.scaled_dot_product_attention(q, k, v, is_causal=pos == 0 and s > 1, enable_gqa=kv != h)
        return out.transpose(1, 2).reshape(b, s, h * hd) @ w["wo"]

    def feed_forward(self, i: int, x: torch.Tensor) -> torch.Tensor:
        w = self.layers[i]
        if self.p["experts"] == 1:
            gate, up = (x @ w["w13"]).chunk(2, dim=-1)
            return (F.silu(gate) * up) @ w["w2"]
        return self.experts(i, w, x)

    def choose_experts(self, i: int, logits: torch.Tensor) -> torch.Tensor:
        """Layer i's top_k experts per token [tokens, top_k] from its router logits, or the ones
        `forcing_routes` fixed; recorded for `recording_routes` and `last_route`."""
        chosen = self.forced_routes[i] if self.forced_routes is not None else logits.topk(self.p["top_k"], dim=-1).indices
        if self.route_log is not None:
            self.route_log[i].append(chosen)
        self.last_route = chosen
        return chosen

    def experts(self, i: int, w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits = flat @ w["router"]
        chosen = self.choose_experts(i, logits)
        gates = torch.softmax(logits.gather(-1, chosen).float(), dim=-1).to(x.dtype).reshape(-1)
        # Group the (token, slot) pairs by expert; one host synchronisation per layer (the counts).
        order = chosen.reshape(-1).argsort(stable=True)
        e = self.p["experts"]
        flat_chosen = chosen.reshape(-1)
        tally = torch.zeros(e, dtype=torch.int64, device=flat.device).index_add_(0, flat_chosen, torch.ones_like(flat_chosen))
        counts = runtime.current().to_host(tally, even_split(chosen.numel(), e))
        out = torch.zeros_like(flat)
        start = 0
        for e, count in enumerate(counts):
            if count == 0:
                continue
            pairs = order[start : start + count]
            start += count
            token = pairs // self.p["top_k"]
            gate, up = (flat[token] @ w["w13"][e]).chunk(2, dim=-1)
            y = ((F.silu(gate) * up) @ w["w2"][e]) * gates[pairs, None]
            out = out.index_add(0, token, y)
        return out.view(shape)

    def layer(self, i: int, x: torch.Tensor, pos: int, cache: list[tuple[torch.Tensor, torch.Tensor]] | None) -> torch.Tensor:
        w = self.layers[i]
        x = x + self.attention(i, rms_norm(x, w["attn_norm"]), pos, cache)
        return x + self.feed_forward(i, rms_norm(x, w["ffn_norm"]))

    def hidden(self, x: torch.Tensor, pos: int, cache: list[tuple[torch.Tensor, torch.Tensor]] | None) -> torch.Tensor:
        """The residual stream after every layer, from embeddings x [B, S, d] at positions pos.."""
        for i in range(len(self.layers)):
            x = self.layer(i, x, pos, cache)
        return x

    def forward(
        self, tokens: torch.Tensor, pos: int, cache: list[tuple[torch.Tensor, torch.Tensor]] | None, last_only: bool
    ) -> torch.Tensor:
        x = self.hidden(self.embed[tokens], pos, cache)
        if last_only:
            x = x[:, -1:]
        return rms_norm(x, self.final_norm) @ self.lm_head


def reference_layer(w: dict[str, torch.Tensor], x: torch.Tensor, p: dict[str, Any], route: torch.Tensor | None) -> torch.Tensor:
    """Layer 0 in float64 from first principles, on x [S, d] at positions 0..S-1 (causal), on
    x's device: the weights are converted one at a time where they are used (the largest in
    float64 is what the check adds to the case's memory). For MoE the expert choice (a discrete
    decision rounding can flip) is taken from `route` [S, top_k]."""
    dev = x.device

    def f64(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(dev, torch.float64)

    x = f64(x)
    s = x.shape[0]
    h, kv, hd = p["heads"], p["kv_heads"], p["head_dim"]
    half = hd // 2
    # Rotary angles by the formula: position t, pair j turns by t * theta^(-2j/hd).
    frequency = ROPE_THETA ** (-2.0 * torch.arange(half, device=dev, dtype=torch.float64) / hd)
    angle = torch.arange(s, device=dev, dtype=torch.float64)[:, None] * frequency[None, :]
    cos, sin = torch.cos(angle), torch.sin(angle)

    def norm(t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + NORM_EPS) * f64(weight)

    def rotate(t: torch.Tensor) -> torch.Tensor:  # t [S, hd]: pair (j, j + hd/2) turned by angle[:, j]
        first, second = t[:, :half], t[:, half:]
        return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)

    qkv = norm(x, w["attn_norm"]) @ f64(w["wqkv"])
    mask = torch.ones(s, s, dtype=torch.bool, device=dev).tril()
    heads = []
    for head in range(h):
        group = head // (h // kv)
        q = rotate(qkv[:, head * hd : (head + 1) * hd])
        k = rotate(qkv[:, (h + group) * hd : (h + group + 1) * hd])
        v = qkv[:, (h + kv + group) * hd : (h + kv + group + 1) * hd]
        scores = (q @ k.t() / math.sqrt(hd)).masked_fill(~mask, float("-inf"))
        heads.append(torch.softmax(scores, dim=-1) @ v)
    x = x + torch.cat(heads, dim=-1) @ f64(w["wo"])
    y = norm(x, w["ffn_norm"])
    f = p["ffn"]
    if p["experts"] == 1:
        hidden = y @ f64(w["w13"])
        return x + (F.silu(hidden[:, :f]) * hidden[:, f:]) @ f64(w["w2"])
    assert route is not None
    logits = y @ f64(w["router"])
    k = p["top_k"]
    chosen = runtime.current().to_host(route, [list(range(k))] * s)
    out = torch.zeros_like(x)
    for t in range(s):
        gates = torch.softmax(logits[t, route[t]], dim=-1)
        for slot, e in enumerate(chosen[t]):
            hidden = y[t] @ f64(w["w13"][e])
            out[t] += gates[slot] * ((F.silu(hidden[:f]) * hidden[f:]) @ f64(w["w2"][e]))
    return x + out


class LLM(Workload):
    name = "llm"
    summary = "decoder-only transformer (Llama/Mixtral/Qwen3 presets): prefill, decode or a training step, in tokens"
    params = (
        Param("model", "choice", "tiny", "preset with published dimensions", choices=tuple(PRESETS)),
        Param("d_model", "int", None, "hidden size", auto="the preset's"),
        Param("layers", "int", None, "the model's depth", auto="the preset's"),
        Param("heads", "int", None, "query heads", auto="the preset's"),
        Param("kv_heads", "int", None, "key/value heads (grouped-query attention)", auto="the preset's"),
        Param("head_dim", "int", None, "dimension per head", auto="the preset's"),
        Param("ffn", "int", None, "feed-forward width (per expert for MoE)", auto="the preset's"),
        Param("vocab", "int", None, "vocabulary size", auto="the preset's"),
        Param("experts", "int", None, "feed-forward experts (1 = dense)", auto="the preset's"),
        Param("top_k", "int", None, "experts per token", auto="the preset's"),
        Param("dtype", "choice", None, "element type", choices=tuple(DTYPES), auto="bfloat16 on CUDA, float32 on CPU"),
        Param(
            "phase",
            "choice",
            "prefill",
            "prefill (B prompts of S tokens), decode (one token for each of B "
            "sequences at context S), train (forward, backward, AdamW on B x S tokens)",
            choices=PHASES,
        ),
        Param("batch", "int", 1, "sequences"),
        Param(
            "seq",
            "int",
            None,
            "prompt length (prefill), context length (decode, train)",
            auto="128 on CPU; on CUDA 2048 for prefill, 1024 otherwise",
        ),
        Param(
            "graph",
            "bool",
            False,
            "CUDA only, prefill and decode of a dense model: replay the iteration from a CUDA graph, as serving engines do",
        ),
        Param(
            "run_layers", "int", None, "run only the first N of the model's layers (reported as 'N of M layers')", auto="layers"
        ),
    )

    operating = ("batch",)  # a serving batch is an operating point: the tokens/s-versus-J/token curve
    # Test hook: positions the verification cache is rolled by before the decode step (a cache bug).
    verify_cache_shift: int = 0

    @classmethod
    def derive(cls, values: dict[str, Any], device: DeviceInfo) -> dict[str, Any]:
        gpu = device.kind == "cuda"
        preset = PRESETS[values["model"]]
        resolved: dict[str, Any] = {"model": values["model"]}
        for name in DIMENSIONS:
            resolved[name] = getattr(preset, name) if values[name] is None else values[name]
        if resolved["heads"] % resolved["kv_heads"]:
            raise _usage(
                "heads", f"{resolved['heads']} is not a multiple of kv_heads {resolved['kv_heads']}", "a multiple of kv_heads"
            )
        if resolved["head_dim"] % 2:
            raise _usage("head_dim", f"{resolved['head_dim']} is odd", "an even number (rotary embeddings rotate pairs)")
        if resolved["top_k"] > resolved["experts"]:
            raise _usage(
                "top_k", f"{resolved['top_k']} is larger than experts {resolved['experts']}", f"1 to {resolved['experts']}"
            )
        run_layers = values["run_layers"] or resolved["layers"]
        if run_layers > resolved["layers"]:
            raise _usage(
                "run_layers", f"{run_layers} is more than the model's {resolved['layers']} layers", f"1 to {resolved['layers']}"
            )
        phase = values["phase"]
        resolved |= {
            "dtype": values["dtype"] or ("bfloat16" if gpu else "float32"),
            "phase": phase,
            "batch": values["batch"],
            "seq": values["seq"] or ((2048 if phase == "prefill" else 1024) if gpu else 128),
            "run_layers": run_layers,
        }
        if values.get("graph"):  # only when true, as for matmul
            resolved["graph"] = True
        return resolved

    def _check_supported(self) -> None:
        p = self.p
        self.require_cuda_for_graph()
        if self.graphed:
            if p["phase"] == "train":
                raise Unsupported("graph=true captures prefill or decode, not a training step")
            if p["experts"] > 1:
                raise Unsupported("graph=true needs a dense model: MoE routing is data-dependent")
        if p["dtype"] == "float16" and not self.gpu and p["phase"] == "train":
            raise Unsupported("float16 training needs a CUDA GPU")
        fused = (
            self.gpu
            and p["kv_heads"] != p["heads"]
            and runtime.current().fused_attention(self.torch_device, p["heads"], p["kv_heads"], p["head_dim"], torch.float32)
        )
        need = memory_estimate(p, self.gpu, fused).peak_bytes
        have = free_memory(self.device, self.torch_device)
        if need > have:
            raise Unsupported(f"needs {need / GiB:.1f} GiB, device has {have / GiB:.1f} GiB")

    def setup(self) -> None:
        self._check_supported()
        p, dev = self.p, self.torch_device
        b, s = p["batch"], p["seq"]
        train = p["phase"] == "train"
        self.positions = s + 2 if p["phase"] == "decode" else s  # + the decoded token (+1 for verification)
        self.model = Transformer(p, dev, self.positions, requires_grad=train)
        gen = seeded_generator(dev, seed=4321)
        vocab = p["vocab"]
        self.launches_per_iter = self._launches()
        self.logits: torch.Tensor | None = None
        if p["phase"] == "prefill":
            self.tokens = torch.randint(vocab, (b, s), device=dev, generator=gen)
            self.cache = self.model.new_cache(b, s)
        elif p["phase"] == "decode":
            self.tokens = torch.randint(vocab, (b, 1), device=dev, generator=gen)
            self.cache = self.model.new_cache(b, s + 1)
            for k, v in self.cache:  # random keys and values, of the scale the layers produce
                k.copy_(torch.randn(k.shape, device=dev, generator=gen).to(k.dtype))
                v.copy_(torch.randn(v.shape, device=dev, generator=gen).to(v.dtype) * 0.3)
        else:
            self.tokens = torch.randint(vocab, (b, s), device=dev, generator=gen)
            self.targets = torch.randint(vocab, (b, s), device=dev, generator=gen)
            # foreach: torch's default for CUDA parameters, said here so every device runs it
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5, foreach=self.gpu)
        if self.graphed:
            self.logits = self.capture(self._forward_no_grad)

    def _launches(self) -> int:
        """About how many kernels one iteration queues (it sizes the launch-bound probe's burst):
        1 for a graph replay; eager, per layer the attention block and norms (LAUNCHES_LAYER:
        rms_norm's casts and reductions, QKV, rotary on q and k, the cache writes, one fused
        attention kernel, the output projection, residuals) plus a dense SwiGLU
        (LAUNCHES_DENSE_FFN) or MoE routing (LAUNCHES_ROUTING) and LAUNCHES_PER_EXPERT for each
        expert the batch can touch; LAUNCHES_FIXED for embedding, final norm and lm_head. Train:
        LAUNCHES_TRAIN_FACTOR x the forward (backward twice the forward, with its casts), plus
        LAUNCHES_TRAIN_FIXED (the loss, AdamW's foreach ops), and on a GPU the launches CUDA
        splits each foreach op into (`adamw_foreach_launches`). Fitted to the aten ops that
        launch a kernel, counted on fake tensors (tests/test_fake_device.py), within 10%."""
        p = self.p
        if self.graphed:
            return 1
        per_layer = LAUNCHES_LAYER
        if p["experts"] > 1:
            per_layer += LAUNCHES_ROUTING + LAUNCHES_PER_EXPERT * min(p["experts"], tokens_per_iter(p) * p["top_k"])
        else:
            per_layer += LAUNCHES_DENSE_FFN
        if p["phase"] == "train":
            split = adamw_foreach_launches(p) if self.gpu else 0
            return round(LAUNCHES_TRAIN_FACTOR * per_layer * p["run_layers"]) + LAUNCHES_TRAIN_FIXED + split
        return per_layer * p["run_layers"] + LAUNCHES_FIXED

    def _forward(self) -> torch.Tensor:
        p = self.p
        if p["phase"] == "decode":
            return self.model.forward(self.tokens, p["seq"], self.cache, last_only=True)
        return self.model.forward(self.tokens, 0, self.cache, last_only=True)

    def _forward_no_grad(self) -> torch.Tensor:
        with torch.no_grad():
            return self._forward()

    def run(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        if self.p["phase"] == "train":
            self.optimizer.zero_grad(set_to_none=True)
            self.logits = None  # the last iteration's, released before this one makes its own
            logits = self.model.forward(self.tokens, 0, None, last_only=False)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), self.targets.view(-1))
            loss.backward()
            self.optimizer.step()
            self.logits = logits.detach()
            return
        self.logits = self._forward_no_grad()

    def work(self) -> Work:
        tokens = float(tokens_per_iter(self.p))
        flop = matmul_flop(self.p) + attention_flop(self.p)
        return Work("token", tokens, {"token": tokens, "FLOP": flop, "byte": bytes_moved(self.p)})

    def details(self) -> dict[str, Any]:
        """`layers_run` always; `scope` too when only a slice ran, which the report prints beside
        the parameters: the figures are the slice's (its layers plus embedding and lm_head), and no
        whole-model figure is derived from them. `implied`: the parameters the report can leave
        out because another says them (dimensions equal to the preset's; run_layers, which is
        `layers` or said by `scope`)."""
        p = self.p
        said = f"{p['run_layers']} of {p['layers']} layers"
        preset = PRESETS[p["model"]]
        implied = [n for n in DIMENSIONS if p[n] == getattr(preset, n)] + ["run_layers"]
        return {"layers_run": said, "implied": implied} | ({"scope": said} if p["run_layers"] < p["layers"] else {})

    # --- verification ------------------------------------------------------------------------

    def verify(self) -> Verification:
        p = self.p
        errors: list[tuple[float, float]] = []
        with torch.no_grad():
            if self.logits is None or not runtime.current().to_host(torch.isfinite(self.logits).all(), True):
                return Verification(math.inf, LAYER_TOLERANCE[p["dtype"]])
            if self.graph is not None:
                errors.append((self.replay_error(), REPLAY_TOLERANCE))
            errors.append((self.layer_error(), LAYER_TOLERANCE[p["dtype"]]))
            if p["phase"] == "decode":
                errors.append((self.consistency_error(), CONSISTENCY_TOLERANCE[p["dtype"]]))
                errors.append((self.consistency_error_float32(), CONSISTENCY_TOLERANCE["float32"]))
        # One figure: the worst error as a fraction of its own tolerance, on the tighter scale.
        worst = max(errors, key=lambda et: et[0] / et[1])
        return Verification(*worst)

    def replay_error(self) -> float:
        """The logits a graph replay left in its static output against one eager forward over
        the same inputs (it rewrites the same cache positions with the same values): a replay
        that ran other kernels, or none, differs."""
        assert self.logits is not None
        replayed = self.logits.clone()
        return max_rel_error(replayed, self._forward_no_grad())

    def layer_error(self) -> float:
        """Layer 0 on a short prompt (batch 1) against `reference_layer` in float64, both on the
        model's device."""
        p, model = self.p, self.model
        s = min(VERIFY_TOKENS, self.positions)
        gen = seeded_generator(self.torch_device, seed=99)
        tokens = torch.randint(p["vocab"], (1, s), device=self.torch_device, generator=gen)
        x = model.embed[tokens].detach()
        out = model.layer(0, x, 0, None)
        route = model.last_route if p["experts"] > 1 else None
        reference = reference_layer(model.layers[0], x[0], p, route)
        return max_rel_error(out[0], reference)

    def consistency_error(self) -> float:
        """Decode at position L after a prefill of L tokens, against one prefill over L + 1 tokens
        at its last position (batch 1, caches of their own): the logits in the model's dtype."""
        model = self.model
        tokens = self._consistency_tokens()
        return self._decode_vs_prefill(model, tokens, lambda t, pos, cache: model.forward(t, pos, cache, last_only=True))

    def consistency_error_float32(self) -> float:
        """The same check on a float32 copy of the first CONSISTENCY_LAYERS layers, comparing what
        the layers add to the residual stream: in bf16 a cache one position off can hide under the
        rounding of the logits at long context; here it fails by far more than the tolerance."""
        layers = self.model.float32_slice(min(CONSISTENCY_LAYERS, self.p["run_layers"]))
        x = self.model.embed[self._consistency_tokens()].float()

        def added(e: torch.Tensor, pos: int, cache: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
            return (layers.hidden(e, pos, cache) - e)[:, -1:]

        return self._decode_vs_prefill(layers, x, added)

    def _consistency_tokens(self) -> torch.Tensor:
        gen = seeded_generator(self.torch_device, seed=7)
        return torch.randint(self.p["vocab"], (1, self.p["seq"] + 1), device=self.torch_device, generator=gen)

    def _decode_vs_prefill(
        self,
        model: Transformer,
        x: torch.Tensor,
        run: Callable[[torch.Tensor, int, list[tuple[torch.Tensor, torch.Tensor]]], torch.Tensor],
    ) -> float:
        """A prefill of the first L tokens and a decode step at L, against one prefill over all
        L + 1 at its last position. An MoE prefill takes the experts the prefill and the decode
        step chose (`Transformer.forcing_routes`): the two paths compute with different matmul
        shapes, and a rounding step may flip a near-tie of router logits, which would fail the
        check with no bug in the cache."""
        length = x.shape[1] - 1
        cache = model.new_cache(1, length + 1)
        with model.recording_routes() as routes:
            run(x[:, :length], 0, cache)
            if self.verify_cache_shift:  # an off-by-n writer: entries n positions late, the first n empty
                n = self.verify_cache_shift
                for k, v in cache:
                    for t in (k, v):
                        t[:, :, n : length + 1] = t[:, :, : length + 1 - n].clone()
                        t[:, :, :n] = 0
            step = run(x[:, length:], length, cache)
        del cache
        with model.forcing_routes(routes):
            whole = run(x, 0, model.new_cache(1, length + 1))
        return max_rel_error(step, whole.float())

    def teardown(self) -> None:
        self.graph = None
        self.logits = None
        with contextlib.suppress(AttributeError):
            del self.cache, self.model
