"""Dense matrix multiply C = A @ B: the core of transformer training and inference.

FLOP per iteration = 2*m*n*k. float32 runs in full precision (TF32 off), `tf32` lets NVIDIA
tensor cores use TF32, `float8` runs E4M3 inputs through torch._scaled_mm (Hopper/Ada and newer,
AMD MI300 and MI350 series) with bfloat16 output and without fast accumulation
(use_fast_accum=False, torch's default): the accurate mode, slower than the fp8 rates often
quoted, which enable it. The E4M3 format is the one the GPU's matrix cores take, recorded in the
case's `details.float8_format`: OCP's e4m3fn on NVIDIA and on AMD gfx950 (MI350 series), AMD's
e4m3fnuz (no negative zero, exponent bias 8) on gfx942 (MI300 series), where hipBLASLt has no
OCP FP8. On ROCm `tf32` is skipped: whether hipBLASLt runs a float32 matmul as XF32 depends on
the torch build and HIPBLASLT_ALLOW_TF32, so the case could not say what it measured. Small problems on a GPU
rotate through several input sets so the L2 cache does not hold them between iterations (the same
idea as mamf-finder's cache flush).

`graph=true` (CUDA only) measures the device rather than the host's launches: setup warms the
multiply up on a side stream, then captures into one `torch.cuda.CUDAGraph` a multiply of every
rotating input set in turn (the same stream, so cuBLAS's workspace for it exists before
capture), and `run()` replays the graph. One iteration is then one replay: `len(sets)` matmuls,
and `work()` counts them all (FLOP = sets x 2*m*n*k), so throughput compares with eager's while
seconds per iteration do not. The inputs and the output are the static tensors the graph was
captured on; the capture's own synchronisation happens in setup, which is not timed. On the CPU
the case is skipped. `graph=false`, the default, is left out of the case's parameters (and id),
so eager cases keep the ids they had before the parameter existed.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from bench.errors import Unsupported
from bench.measure.hardware import DeviceInfo
from bench.measure.workload import Param, Verification, Work, Workload, max_rel_error, seeded_generator

DTYPES = ("float32", "tf32", "bfloat16", "float16", "float8")
_TORCH_DTYPE = {
    "float32": torch.float32,
    "tf32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float8": torch.float8_e4m3fn,
}
# Tolerance on max|C - ref| / max|ref|, ref in float64 from the same (rounded) inputs; the error
# left is accumulation order plus rounding of C to the output type.
TOLERANCE = {"float32": 1e-4, "tf32": 5e-3, "bfloat16": 2e-2, "float16": 5e-3, "float8": 2e-2}
VERIFY_SLICE = 64
GPU_WORKING_SET_FACTOR = 2  # rotate inputs until the sets together exceed 2x L2
MAX_INPUT_SETS = 64


def set_fp32_matmul_precision(tf32: bool) -> tuple[str, object]:
    """Let (or forbid) cuBLAS use TF32 for float32 matmuls; returns (attribute, old value) to
    restore. torch 2.9+ has `fp32_precision` ("tf32" / "ieee"), and reading the legacy
    `allow_tf32` after the new API was used raises, so the new one is used where it exists."""
    backend = torch.backends.cuda.matmul
    if hasattr(backend, "fp32_precision"):
        saved = ("fp32_precision", backend.fp32_precision)
        backend.fp32_precision = "tf32" if tf32 else "ieee"
    else:
        saved = ("allow_tf32", backend.allow_tf32)
        backend.allow_tf32 = tf32
    return saved


def float8_format(device: DeviceInfo) -> torch.dtype:
    """The E4M3 dtype this GPU's matrix cores take (see the module docstring); Unsupported, with
    the reason, on an AMD GPU without FP8."""
    arch = (device.arch or "").lower()
    if not device.rocm or arch.startswith(("gfx95", "gfx12")):
        return torch.float8_e4m3fn
    if arch.startswith("gfx94"):
        return torch.float8_e4m3fnuz
    raise Unsupported(f"float8 matmul needs an AMD GPU with FP8 (MI300 series gfx942, MI350 series gfx950); this GPU is {arch}")


def best_dtype(device: DeviceInfo) -> str:
    """`dtype=auto`: the fastest element type the device's matrix units take (what an acceptance
    run sustains): float8 on NVIDIA compute capability 8.9+ and AMD gfx94x/gfx95x, else bfloat16
    on a GPU, float32 on a CPU."""
    if device.kind != "cuda":
        return "float32"
    if device.rocm:
        return "float8" if (device.arch or "").lower().startswith(("gfx94", "gfx95")) else "bfloat16"
    major, minor = (int(x) for x in (device.compute_capability or "0.0").split(".")[:2])
    return "float8" if (major, minor) >= (8, 9) else "bfloat16"


def rotation_count(device: DeviceInfo, bytes_per_set: int) -> int:
    """How many input sets to rotate so a GPU's L2 cannot hold them all; 1 on the CPU."""
    if device.kind != "cuda" or not device.cache_bytes:
        return 1
    return max(1, min(MAX_INPUT_SETS, math.ceil(GPU_WORKING_SET_FACTOR * device.cache_bytes / bytes_per_set)))


class MatMul(Workload):
    name = "matmul"
    summary = "dense matrix multiply C = A @ B (FLOP = 2*m*n*k)"
    shape = ("m", "n", "k")
    params = (
        Param("size", "int", None, "sets m, n and k together", auto="2048 on CPU, 8192 on CUDA"),
        Param("m", "int", None, "rows of A and C", auto="size"),
        Param("n", "int", None, "columns of B and C", auto="size"),
        Param("k", "int", None, "columns of A, rows of B", auto="size"),
        Param(
            "dtype",
            "choice",
            None,
            "element type; auto: the fastest this device has (float8 on Hopper, Ada, MI300, MI350; else bfloat16 on a GPU, "
            "float32 on a CPU), resolved per device and recorded as the dtype that ran",
            choices=(*DTYPES, "auto"),
            auto="bfloat16 on CUDA, float32 on CPU",
        ),
        Param(
            "graph",
            "bool",
            False,
            "CUDA only: replay the iteration from a CUDA graph (one launch for every "
            "rotating input set), so a small case measures the GPU, not Python's launches",
        ),
    )

    @classmethod
    def derive(cls, values: dict[str, Any], device: DeviceInfo) -> dict[str, Any]:
        size = values.pop("size") or (8192 if device.kind == "cuda" else 2048)
        resolved = {
            "m": values["m"] or size,
            "n": values["n"] or size,
            "k": values["k"] or size,
            "dtype": best_dtype(device)
            if values["dtype"] == "auto"
            else values["dtype"] or ("bfloat16" if device.kind == "cuda" else "float32"),
        }
        if values.get("graph"):  # only when true: eager cases keep their ids (see the docstring)
            resolved["graph"] = True
        return resolved

    def _check_supported(self) -> None:
        dtype, dev = self.p["dtype"], self.device
        self.require_cuda_for_graph()
        if dtype == "tf32" and not self.gpu:
            raise Unsupported("tf32 needs an NVIDIA GPU (compute capability 8.0 or newer)")
        if dtype == "tf32" and self.rocm:
            raise Unsupported(
                "tf32 is not measured on ROCm: whether hipBLASLt runs it as XF32 depends on the torch build and "
                "HIPBLASLT_ALLOW_TF32, so the case could not say what ran (float32 and bfloat16 can)"
            )
        if dtype == "float8" and self.rocm:
            self.float8 = float8_format(dev)
            if self.p["k"] % 16 or self.p["n"] % 16:
                raise Unsupported("float8 matmul needs k and n to be multiples of 16")
            return
        if dtype == "float8":
            if not self.gpu:
                raise Unsupported("float8 matmul needs an NVIDIA GPU with compute capability 8.9 or newer")
            major, minor = (int(x) for x in (dev.compute_capability or "0.0").split("."))
            if (major, minor) < (8, 9):
                raise Unsupported(f"float8 matmul needs compute capability 8.9 or newer, this GPU has {major}.{minor}")
            if self.p["k"] % 16 or self.p["n"] % 16:
                raise Unsupported("float8 matmul needs k and n to be multiples of 16")
            self.float8 = torch.float8_e4m3fn
        if dtype == "tf32":
            major = int((dev.compute_capability or "0.0").split(".")[0])
            if major < 8:
                raise Unsupported(f"tf32 needs compute capability 8.0 or newer, this GPU has {dev.compute_capability}")

    def setup(self) -> None:
        self._check_supported()
        m, n, k, dtype = self.p["m"], self.p["n"], self.p["k"], self.p["dtype"]
        dev = self.torch_device
        if self.gpu:
            self._saved_precision = set_fp32_matmul_precision(dtype == "tf32")
        sets = self._input_sets()
        gen = seeded_generator(dev)
        self.a: list[torch.Tensor] = []
        self.b: list[torch.Tensor] = []
        for _ in range(sets):
            a = torch.randn(m, k, device=dev, generator=gen)
            b = torch.randn(k, n, device=dev, generator=gen)
            if dtype == "float8":
                # _scaled_mm wants B column-major: make B^T contiguous and view it transposed.
                self.a.append(a.to(self.float8))
                self.b.append(b.t().contiguous().to(self.float8).t())
            else:
                self.a.append(a.to(_TORCH_DTYPE[dtype]))
                self.b.append(b.to(_TORCH_DTYPE[dtype]))
        out_dtype = torch.bfloat16 if dtype == "float8" else _TORCH_DTYPE[dtype]
        self.c = torch.empty(m, n, device=dev, dtype=out_dtype)
        self.scale = torch.ones((), device=dev, dtype=torch.float32)
        self.index = 0
        self.last = 0
        self._bind()
        if self.graphed:
            self.capture(self._multiply_every_set)
            self.last = len(self.a) - 1  # a replay leaves the last set's product in C

    def details(self) -> dict[str, Any]:
        """`float8_format`: the E4M3 variant a float8 case ran (e4m3fn or e4m3fnuz)."""
        fmt = getattr(self, "float8", None)
        return {"float8_format": str(fmt).removeprefix("torch.float8_")} if fmt is not None else {}

    def _input_sets(self) -> int:
        m, n, k, dtype = self.p["m"], self.p["n"], self.p["k"], self.p["dtype"]
        element = torch.tensor([], dtype=_TORCH_DTYPE[dtype]).element_size()
        out_element = 2 if dtype == "float8" else element
        return rotation_count(self.device, (m * k + k * n) * element + m * n * out_element)

    def _bind(self) -> None:
        """One ready call per input set, so an iteration does no lookups of its own (in the
        launch-bound regime every host microsecond shows in the figure)."""
        if self.p["dtype"] == "float8":
            self._ops = [
                functools.partial(
                    torch._scaled_mm, a, b, scale_a=self.scale, scale_b=self.scale, out_dtype=torch.bfloat16, out=self.c
                )
                for a, b in zip(self.a, self.b, strict=True)
            ]
        else:
            self._ops = [functools.partial(torch.matmul, a, b, out=self.c) for a, b in zip(self.a, self.b, strict=True)]

    def _multiply_every_set(self) -> None:
        """What a graphed iteration captures: one multiply of every input set, in turn."""
        for op in self._ops:
            op()

    def run(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        i = self.index
        self._ops[i]()
        self.last = i
        self.index = (i + 1) % len(self.a)

    def work(self) -> Work:
        flop = 2.0 * self.p["m"] * self.p["n"] * self.p["k"]
        if self.graphed:  # one replay multiplies every rotating input set
            flop *= len(self.a) if hasattr(self, "a") else self._input_sets()
        return Work("FLOP", flop, {"FLOP": flop})

    def verify(self) -> Verification:
        rows = min(VERIFY_SLICE, self.p["m"])
        cols = min(VERIFY_SLICE, self.p["n"])
        a = self.a[self.last][:rows].float().double()
        b = self.b[self.last][:, :cols].float().double()
        reference = a @ b
        return Verification(max_rel_error(self.c[:rows, :cols], reference), TOLERANCE[self.p["dtype"]])

    def teardown(self) -> None:
        self.graph = None  # frees the graph and its memory pool before the next case
        if hasattr(self, "_saved_precision"):
            setattr(torch.backends.cuda.matmul, *self._saved_precision)
