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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import torch
import torch.nn.functional as F

from bench.errors import Unsupported, UsageError
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
WORKSPACE_BYTES = 256 * 1024**2  # allocator slack, library workspaces


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


def memory_estimate(p: dict[str, Any]) -> int:
    """Bytes one case needs at its peak: weights, KV cache, activations (+ gradients and AdamW's
    two moments for train). An estimate, meant to skip what plainly cannot fit."""
    size = element_size(p)
    d, h, kv, hd, v = p["d_model"], p["heads"], p["kv_heads"], p["head_dim"], p["vocab"]
    ffn_width = p["ffn"] * (p["top_k"] if p["experts"] > 1 else 1)
    weights = weight_elements(p, touched_only=False) * size
    tokens = tokens_per_iter(p)
    per_token_layer = 4 * d + (2 * h + 2 * kv) * hd + 3 * ffn_width + p["experts"]
    if p["phase"] == "train":
        activations = tokens * (p["run_layers"] * per_token_layer * size + v * (2 * size + 8))
        return weights * 4 + activations + WORKSPACE_BYTES
    positions = p["seq"] + 1 if p["phase"] == "decode" else p["seq"]
    cache = kv_elements(p, positions) * size
    logits = p["batch"] * v * (size + 4)
    # Verification keeps a batch-1 cache of L + 1 positions beside the timed one, and in decode a
    # float32 copy of the first CONSISTENCY_LAYERS layers with a float32 cache of its own.
    verify_cache = kv_elements({**p, "batch": 1}, positions + 1) * size
    if p["phase"] == "decode":
        copied = min(CONSISTENCY_LAYERS, p["run_layers"])
        _, stored = layer_matmul_params(p)
        verify_cache += copied * (stored + 2 * d) * 4
        verify_cache += kv_elements({**p, "batch": 1, "run_layers": copied}, positions + 1) * 4
    activations = tokens * per_token_layer * size * 2 + logits
    return weights + cache + verify_cache + activations + WORKSPACE_BYTES


def free_memory(device: DeviceInfo, torch_device: torch.device) -> int:
    if device.kind == "cuda":
        free, _ = torch.cuda.mem_get_info(torch_device)
        return int(free)
    return int(psutil.virtual_memory().available)


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

    def float32_slice(self, layers: int) -> Transformer:
        """A float32 copy of the first `layers` layers (no embedding, final norm or lm_head: run it
        through `hidden`), for checks that must not drown in bf16 rounding."""
        copy = object.__new__(Transformer)
        copy.p = {**self.p, "dtype": "float32", "run_layers": layers}
        copy.dtype, copy.device = torch.float32, self.device
        copy.layers = [{k: t.detach().float() for k, t in layer.items()} for layer in self.layers[:layers]]
        copy.cos, copy.sin = rope_tables(self.cos.shape[0], self.p["head_dim"], self.device, torch.float32)
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
        return [(torch.empty(shape, device=dev, dtype=self.dtype), torch.empty(shape, device=dev, dtype=self.dtype))
                for _ in self.layers]

    def attention(self, i: int, x: torch.Tensor, pos: int, cache: list[tuple[torch.Tensor, torch.Tensor]] | None) -> torch.Tensor:
        p, w = self.p, self.layers[i]
        b, s, _ = x.shape
        h, kv, hd = p["heads"], p["kv_heads"], p["head_dim"]
        qkv = (x @ w["wqkv"]).view(b, s, h + 2 * kv, hd)
        cos, sin = self.cos[pos:pos + s], self.sin[pos:pos + s]
        q = apply_rope(qkv[:, :, :h], cos, sin).transpose(1, 2)
        k = apply_rope(qkv[:, :, h:h + kv], cos, sin).transpose(1, 2)
        v = qkv[:, :, h + kv:].transpose(1, 2)
        if cache is not None:
            cache_k, cache_v = cache[i]
            cache_k[:, :, pos:pos + s] = k
            cache_v[:, :, pos:pos + s] = v
            if pos > 0:  # attend to what the cache holds before this chunk, too
                k, v = cache_k[:, :, :pos + s], cache_v[:, :, :pos + s]
        if pos > 0 and s > 1:
            raise AssertionError("a chunk after position 0 must be one token (decode)")
        out = F.scaled_dot_product_attention(q, k, v, is_causal=pos == 0 and s > 1, enable_gqa=kv != h)
        return out.transpose(1, 2).reshape(b, s, h * hd) @ w["wo"]

    def feed_forward(self, i: int, x: torch.Tensor) -> torch.Tensor:
        w = self.layers[i]
        if self.p["experts"] == 1:
            gate, up = (x @ w["w13"]).chunk(2, dim=-1)
            return (F.silu(gate) * up) @ w["w2"]
        return self.experts(w, x)

    def experts(self, w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits = flat @ w["router"]
        top, chosen = logits.topk(self.p["top_k"], dim=-1)
        self.last_route = chosen
        gates = torch.softmax(top.float(), dim=-1).to(x.dtype).reshape(-1)
        # Group the (token, slot) pairs by expert; one host synchronisation per layer (the counts).
        order = chosen.reshape(-1).argsort(stable=True)
        counts = torch.bincount(chosen.reshape(-1), minlength=self.p["experts"]).tolist()
        out = torch.zeros_like(flat)
        start = 0
        for e, count in enumerate(counts):
            if count == 0:
                continue
            pairs = order[start:start + count]
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

    def forward(self, tokens: torch.Tensor, pos: int, cache: list[tuple[torch.Tensor, torch.Tensor]] | None,
                last_only: bool) -> torch.Tensor:
        x = self.hidden(self.embed[tokens], pos, cache)
        if last_only:
            x = x[:, -1:]
        return rms_norm(x, self.final_norm) @ self.lm_head


def reference_layer(w: dict[str, torch.Tensor], x: torch.Tensor, p: dict[str, Any],
                    route: torch.Tensor | None) -> torch.Tensor:
    """Layer 0 in float64 from first principles, on x [S, d] at positions 0..S-1 (causal).
    For MoE the expert choice (a discrete decision rounding can flip) is taken from `route`."""
    w = {k: t.detach().double() for k, t in w.items()}
    x = x.double()
    s = x.shape[0]
    h, kv, hd = p["heads"], p["kv_heads"], p["head_dim"]

    def norm(t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + NORM_EPS) * weight

    def rotate(t: torch.Tensor) -> torch.Tensor:  # t [S, hd]
        out = torch.empty_like(t)
        half = hd // 2
        for j in range(half):
            theta = torch.arange(s, dtype=torch.float64) * ROPE_THETA ** (-2 * j / hd)
            c, sn = torch.cos(theta), torch.sin(theta)
            out[:, j] = t[:, j] * c - t[:, j + half] * sn
            out[:, j + half] = t[:, j + half] * c + t[:, j] * sn
        return out

    qkv = norm(x, w["attn_norm"]) @ w["wqkv"]
    mask = torch.ones(s, s, dtype=torch.bool).tril()
    heads = []
    for head in range(h):
        group = head // (h // kv)
        q = rotate(qkv[:, head * hd:(head + 1) * hd])
        k = rotate(qkv[:, (h + group) * hd:(h + group + 1) * hd])
        v = qkv[:, (h + kv + group) * hd:(h + kv + group + 1) * hd]
        scores = (q @ k.t() / math.sqrt(hd)).masked_fill(~mask, float("-inf"))
        heads.append(torch.softmax(scores, dim=-1) @ v)
    x = x + torch.cat(heads, dim=-1) @ w["wo"]
    y = norm(x, w["ffn_norm"])
    f = p["ffn"]
    if p["experts"] == 1:
        hidden = y @ w["w13"]
        return x + (F.silu(hidden[:, :f]) * hidden[:, f:]) @ w["w2"]
    assert route is not None
    logits = y @ w["router"]
    out = torch.zeros_like(x)
    for t in range(s):
        chosen = route[t]
        gates = torch.softmax(logits[t, chosen], dim=-1)
        for slot, e in enumerate(chosen.tolist()):
            hidden = y[t] @ w["w13"][e]
            out[t] += gates[slot] * ((F.silu(hidden[:f]) * hidden[f:]) @ w["w2"][e])
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
        Param("phase", "choice", "prefill", "prefill (B prompts of S tokens), decode (one token for each of B "
              "sequences at context S), train (forward, backward, AdamW on B x S tokens)", choices=PHASES),
        Param("batch", "int", 1, "sequences"),
        Param("seq", "int", None, "prompt length (prefill), context length (decode, train)",
              auto="128 on CPU; on CUDA 2048 for prefill, 1024 otherwise"),
        Param("graph", "bool", False, "CUDA only, prefill and decode of a dense model: replay the iteration "
              "from a CUDA graph, as serving engines do"),
        Param("run_layers", "int", None, "run only the first N of the model's layers (reported as 'N of M layers')",
              auto="layers"),
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
            raise _usage("heads", f"{resolved['heads']} is not a multiple of kv_heads {resolved['kv_heads']}",
                         "a multiple of kv_heads")
        if resolved["head_dim"] % 2:
            raise _usage("head_dim", f"{resolved['head_dim']} is odd", "an even number (rotary embeddings rotate pairs)")
        if resolved["top_k"] > resolved["experts"]:
            raise _usage("top_k", f"{resolved['top_k']} is larger than experts {resolved['experts']}",
                         f"1 to {resolved['experts']}")
        run_layers = values["run_layers"] or resolved["layers"]
        if run_layers > resolved["layers"]:
            raise _usage("run_layers", f"{run_layers} is more than the model's {resolved['layers']} layers",
                         f"1 to {resolved['layers']}")
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
        if p["dtype"] == "float16" and self.device.kind != "cuda" and p["phase"] == "train":
            raise Unsupported("float16 training needs a CUDA GPU")
        need = memory_estimate(p)
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
        self.graph: torch.cuda.CUDAGraph | None = None
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
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5)
        if self.graphed:
            self._capture()

    def _launches(self) -> int:
        """About how many kernels one iteration queues: ~25 per dense layer (two norms of four,
        QKV, rotary on q and k, two cache writes, attention, output, SwiGLU's three, residuals);
        an MoE layer adds the router and ~8 per expert touched; train ~3x plus AdamW's per-tensor
        kernels (foreach, a handful)."""
        p = self.p
        per_layer = 25
        if p["experts"] > 1:
            per_layer += 4 + 8 * min(p["experts"], tokens_per_iter(p) * p["top_k"])
        n = per_layer * p["run_layers"] + 8
        return 3 * n + 20 if p["phase"] == "train" else n

    def _forward(self) -> torch.Tensor:
        p = self.p
        if p["phase"] == "decode":
            return self.model.forward(self.tokens, p["seq"], self.cache, last_only=True)
        return self.model.forward(self.tokens, 0, self.cache, last_only=True)

    def _capture(self) -> None:
        dev = self.torch_device
        with torch.cuda.device(dev):
            stream = torch.cuda.Stream(dev)
            stream.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(stream), torch.no_grad():
                for _ in range(3):
                    self._forward()
            torch.cuda.current_stream(dev).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream), torch.no_grad():
                self.logits = self._forward()
        self.graph = graph

    def run(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        if self.p["phase"] == "train":
            self.optimizer.zero_grad(set_to_none=True)
            logits = self.model.forward(self.tokens, 0, None, last_only=False)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), self.targets.view(-1))
            loss.backward()
            self.optimizer.step()
            self.logits = logits.detach()
            return
        with torch.no_grad():
            self.logits = self._forward()

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
            if self.logits is None or not torch.isfinite(self.logits).all():
                return Verification(math.inf, LAYER_TOLERANCE[p["dtype"]])
            errors.append((self.layer_error(), LAYER_TOLERANCE[p["dtype"]]))
            if p["phase"] == "decode":
                errors.append((self.consistency_error(), CONSISTENCY_TOLERANCE[p["dtype"]]))
                errors.append((self.consistency_error_float32(), CONSISTENCY_TOLERANCE["float32"]))
        # One figure: the worst error as a fraction of its own tolerance, on the tighter scale.
        worst = max(errors, key=lambda et: et[0] / et[1])
        return Verification(*worst)

    def layer_error(self) -> float:
        """Layer 0 on a short prompt (batch 1) against `reference_layer` in float64."""
        p, model = self.p, self.model
        s = min(VERIFY_TOKENS, self.positions)
        gen = seeded_generator(self.torch_device, seed=99)
        tokens = torch.randint(p["vocab"], (1, s), device=self.torch_device, generator=gen)
        x = model.embed[tokens].detach()
        out = model.layer(0, x, 0, None)
        route = getattr(model, "last_route", None) if p["experts"] > 1 else None
        reference = reference_layer(model.layers[0], x[0].cpu(), p, route.cpu() if route is not None else None)
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

    def _decode_vs_prefill(self, model: Transformer, x: torch.Tensor,
                           run: Callable[[torch.Tensor, int, list[tuple[torch.Tensor, torch.Tensor]]], torch.Tensor]) -> float:
        length = x.shape[1] - 1
        whole = run(x, 0, model.new_cache(1, length + 1))
        cache = model.new_cache(1, length + 1)
        run(x[:, :length], 0, cache)
        if self.verify_cache_shift:  # an off-by-n writer: entries n positions late, the first n empty
            n = self.verify_cache_shift
            for k, v in cache:
                for t in (k, v):
                    t[:, :, n:length + 1] = t[:, :, :length + 1 - n].clone()
                    t[:, :, :n] = 0
        step = run(x[:, length:], length, cache)
        return max_rel_error(step, whole.float())

    def teardown(self) -> None:
        self.graph = None
        with contextlib.suppress(AttributeError):
            del self.cache, self.model
