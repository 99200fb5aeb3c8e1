"""Scaled dot-product attention through torch.nn.functional.scaled_dot_product_attention.

FLOP per forward = 4*batch*heads*seq_q*seq_k*head_dim (two matmuls, QK^T and PV), halved when
causal; a backward pass counts 2.5x the forward, so forward+backward is 3.5x. `backend` pins one
SDPA implementation (flash, efficient, cudnn, math); one the device or shape cannot use makes the
case skipped, with torch's reason. Which kernel ran (for `auto`, torch's choice, which depends on
the device, dtype, shape and torch release) is recorded in the case's `details.backend`: asked of
the dispatcher SDPA itself consults (torch._fused_sdp_choice), with the same inputs, under the
same backend setting. On the CPU "flash" is torch's CPU flash-attention kernel.

On ROCm (AMD GPUs) flash and efficient attention are AMD's kernels, from the library torch's
ROCm build prefers (torch.backends.cuda.preferred_rocm_fa_library: AOTriton by default, or
Composable Kernel), recorded as `details.rocm_fa_library` beside the backend; cudnn is NVIDIA's
and makes the case skipped.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.errors import Unsupported
from bench.measure.hardware import DeviceInfo
from bench.measure.workload import Param, Verification, Work, Workload, max_rel_error, seeded_generator

BACKENDS = {
    "auto": None,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PASSES = ("forward", "forward+backward")
TOLERANCE = {
    ("forward", "float32"): 2e-3,
    ("forward", "bfloat16"): 3e-2,
    ("forward", "float16"): 5e-3,
    ("forward+backward", "float32"): 5e-3,
    ("forward+backward", "bfloat16"): 6e-2,
    ("forward+backward", "float16"): 2e-2,
}
BACKWARD_FACTOR = 2.5


def attention_flop(batch: int, heads: int, seq_q: int, seq_k: int, head_dim: int, causal: bool, backward: bool) -> float:
    """FLOP of one attention call by the DESIGN.md convention."""
    flop = 4.0 * batch * heads * seq_q * seq_k * head_dim
    if causal:
        flop /= 2
    if backward:
        flop *= 1 + BACKWARD_FACTOR
    return flop


# SDPBackend values (what torch._fused_sdp_choice returns) by the names `backend` uses.
CHOSEN = {b.value: name for name, b in BACKENDS.items() if b is not None} | {SDPBackend.OVERRIDEABLE.value: "overrideable"}


def chosen_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> str:
    """The SDPA kernel torch dispatches these inputs to under the current backend setting
    (flash, efficient, cudnn, math), or "unknown: <why>" where torch does not say."""
    choose = getattr(torch, "_fused_sdp_choice", None)
    if choose is None:
        return "unknown: this torch has no _fused_sdp_choice"
    try:
        value = int(choose(q, k, v, None, 0.0, causal))
    except Exception as exc:  # noqa: BLE001 - the run has already worked; only the label is missing
        return f"unknown: {type(exc).__name__}"
    return CHOSEN.get(value, f"unknown: SDPBackend {value}")


def rocm_fa_library() -> str:
    """The attention library a ROCm build of torch uses for flash and efficient attention:
    "aotriton", "ck" (Composable Kernel) or "default" (the build's own choice, AOTriton in
    PyTorch's wheels); "unknown: <why>" where torch does not say."""
    preferred = getattr(torch.backends.cuda, "preferred_rocm_fa_library", None)
    if preferred is None:
        return "unknown: this torch has no preferred_rocm_fa_library"
    try:
        value = preferred()
    except Exception as exc:  # noqa: BLE001 - the case ran; only the label is missing
        return f"unknown: {type(exc).__name__}"
    return str(getattr(value, "name", value)).rsplit(".", 1)[-1].lower()


def _is_no_kernel(exc: RuntimeError) -> bool:
    text = str(exc)
    return "No available kernel" in text or "No viable backend" in text


class Attention(Workload):
    name = "attention"
    summary = "scaled dot-product attention, forward or forward+backward (FLOP = 4*B*H*S*S*D, causal /2, backward 2.5x)"
    params = (
        Param("batch", "int", None, "sequences per batch", auto="4 on CPU, 8 on CUDA"),
        Param("heads", "int", None, "attention heads", auto="8 on CPU, 16 on CUDA"),
        Param("seq", "int", None, "sequence length (queries = keys)", auto="1024 on CPU, 4096 on CUDA"),
        Param("head_dim", "int", None, "dimension per head", auto="64 on CPU, 128 on CUDA"),
        Param("causal", "bool", False, "causal mask (FLOP halved)"),
        Param("dtype", "choice", None, "element type", choices=tuple(DTYPES), auto="bfloat16 on CUDA, float32 on CPU"),
        Param("pass", "choice", "forward", "forward only, or forward and backward", choices=PASSES),
        Param("backend", "choice", "auto", "SDPA implementation", choices=tuple(BACKENDS)),
    )

    @classmethod
    def derive(cls, values: dict[str, Any], device: DeviceInfo) -> dict[str, Any]:
        gpu = device.kind == "cuda"
        defaults = {
            "batch": 8 if gpu else 4,
            "heads": 16 if gpu else 8,
            "seq": 4096 if gpu else 1024,
            "head_dim": 128 if gpu else 64,
            "dtype": "bfloat16" if gpu else "float32",
        }
        return {k: (defaults[k] if v is None else v) for k, v in values.items()}

    def _call(self) -> torch.Tensor:
        return F.scaled_dot_product_attention(self.q, self.k, self.v, is_causal=self.p["causal"])

    def setup(self) -> None:
        p, dev = self.p, self.torch_device
        if p["backend"] in ("efficient", "cudnn") and not self.gpu:
            raise Unsupported(f"SDPA backend {p['backend']} runs only on CUDA")
        if p["backend"] == "cudnn" and self.rocm:
            raise Unsupported("SDPA backend cudnn is NVIDIA's: not on ROCm (flash and efficient are AMD's there)")
        shape = (p["batch"], p["heads"], p["seq"], p["head_dim"])
        gen = seeded_generator(dev)
        self.backward = p["pass"] == "forward+backward"
        # The math backend unrolls into several kernels, the backward pass into a dozen more.
        self.launches_per_iter = (
            (16 if self.backward else 4) if p["backend"] in ("math", "auto") else (12 if self.backward else 2)
        )
        dtype = DTYPES[p["dtype"]]
        self.q, self.k, self.v = (
            torch.randn(shape, device=dev, generator=gen).to(dtype).requires_grad_(self.backward) for _ in range(3)
        )
        self.grad_out = torch.randn(shape, device=dev, generator=gen).to(dtype) if self.backward else None
        # The backend choice holds from here to teardown, not re-entered on every timed call.
        self._backend_scope = contextlib.ExitStack()
        backend = BACKENDS[p["backend"]]
        if backend is not None:
            self._backend_scope.enter_context(sdpa_kernel(backend))
        try:
            self.run()
        except RuntimeError as exc:
            if _is_no_kernel(exc):
                first = str(exc).strip().splitlines()[0]
                raise Unsupported(f"SDPA backend {p['backend']} cannot run this case: {first}") from None
            raise
        self.ran = chosen_backend(self.q, self.k, self.v, p["causal"])

    def details(self) -> dict[str, Any]:
        """`backend`: the SDPA kernel that ran (flash, efficient, cudnn, math); `flash_impl`: a
        flash implementation other than torch's built-in one, where one was activated."""
        ran = getattr(self, "ran", None)
        if ran is None:
            return {}
        found: dict[str, Any] = {"backend": ran}
        impl = getattr(torch.nn.attention, "current_flash_attention_impl", lambda: None)()
        if ran == "flash" and impl:
            found["flash_impl"] = str(impl)
        if self.rocm and ran in ("flash", "efficient"):
            found["rocm_fa_library"] = rocm_fa_library()
        return found

    def run(self) -> None:
        if self.backward:
            out = self._call()
            self.out = out.detach()
            self.grads = torch.autograd.grad(out, (self.q, self.k, self.v), self.grad_out)
        else:
            with torch.no_grad():
                self.out = self._call()

    def teardown(self) -> None:
        if hasattr(self, "_backend_scope"):
            self._backend_scope.close()

    def work(self) -> Work:
        p = self.p
        flop = attention_flop(
            p["batch"], p["heads"], p["seq"], p["seq"], p["head_dim"], p["causal"], p["pass"] == "forward+backward"
        )
        return Work("FLOP", flop, {"FLOP": flop})

    def verify(self) -> Verification:
        """Float64 reference on batch 0, head 0 (outputs, and gradients for a backward pass)."""
        q, k, v = (t[0, 0].detach().float().double().requires_grad_(self.backward) for t in (self.q, self.k, self.v))
        scores = (q @ k.t()) / math.sqrt(q.shape[-1])
        if self.p["causal"]:
            mask = torch.ones(scores.shape, dtype=torch.bool, device=scores.device).tril()
            scores = scores.masked_fill(~mask, float("-inf"))
        reference = torch.softmax(scores, dim=-1) @ v
        errors = [max_rel_error(self.out[0, 0], reference)]
        if self.backward:
            assert self.grad_out is not None  # set up with the backward pass
            ref_grads = torch.autograd.grad(reference, (q, k, v), self.grad_out[0, 0].float().double())
            errors += [max_rel_error(g[0, 0], r) for g, r in zip(self.grads, ref_grads, strict=True)]
        return Verification(max(errors), TOLERANCE[(self.p["pass"], self.p["dtype"])])
