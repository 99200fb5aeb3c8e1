"""A GPU that is not there: every workload's CUDA branch traced on the CPU with fake tensors.

`trace(workload, params)` runs one case's set-up, one iteration and its check (the harness's
order) on a CUDA-kind device whose tensors are fake (torch's FakeTensorMode on the `meta` device:
a device, dtype and shape, no data, no memory). An op that mixes devices, dtypes or shapes raises
as it would on the GPU, and the trace says in which phase and at which aten op.

The pieces, each standing in for one thing a CPU-only machine lacks:
- `FakeGpu`: the workload's DeviceInfo says kind "cuda" (the property workloads branch on), its
  tensors go to `meta` (fake `cuda` tensors cannot index without the CUDA backend).
- `FakeRuntime`: bench.measure.runtime's seam without CUDA. Synchronize, events, free memory,
  pinned memory and peer access answer like an H200; generators are remembered with the device
  they were made for, and a factory that draws on a generator of another device fails as CUDA
  would ("Expected a 'cuda' device type for generator"); a graph capture runs its body and a
  replay runs it again; a read back to the host (`to_host`, the one data-dependent step) answers
  the workload's stand-in and is logged, so the trace steps over it instead of stopping there.
- `OpLog`: a dispatch mode that counts the aten ops of each phase and remembers the last one
  (the op a failure names; the CPU proxy for kernels per iteration).
- Collectives: a fake process group ("cpu:fake,meta:fake", torch's testing backend) of any
  world size in this one process: the calls run, no data moves.

Data cannot be checked here: a fake tensor's check compares stand-ins. What the trace proves is
that the code reaches every op of every phase with consistent devices, dtypes and shapes.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from bench.measure import runtime
from bench.measure.hardware import DeviceInfo
from bench.measure.runtime import PoolMemory
from bench.measure.workload import Workload

GiB = 1024**3
PHASES = ("setup", "run", "verify")


class FakeGpu(DeviceInfo):
    """A CUDA-kind device (`kind` "cuda") whose tensors live on `tensor_device` (meta for fake
    tensors; the CPU for a workload's GPU branch run on real data)."""

    tensor_device = "meta"

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.tensor_device)


class CpuGpu(FakeGpu):
    """A CUDA-kind device computing on the CPU with real tensors: GPU branches on real data."""

    tensor_device = "cpu"


# An H200 SXM as torch and NVML describe it (the machines gpu-check runs on).
H200 = FakeGpu(
    id="cuda:0",
    kind="cuda",
    name="NVIDIA H200 (fake)",
    memory_bytes=143771 * 1024**2,
    cache_bytes=60 * 1024**2,
    multiprocessors=132,
    compute_capability="9.0",
    uuid="GPU-fake-0000",
)
# An A100: no float8 (compute capability 8.0).
A100 = FakeGpu(
    id="cuda:0",
    kind="cuda",
    name="NVIDIA A100 (fake)",
    memory_bytes=80 * GiB,
    cache_bytes=40 * 1024**2,
    multiprocessors=108,
    compute_capability="8.0",
    uuid="GPU-fake-a100",
)
# AMD GPUs as a ROCm build of torch describes them (a "cuda" device; `arch` from gcnArchName).
MI300X = FakeGpu(
    id="cuda:0",
    kind="cuda",
    name="AMD Instinct MI300X (fake)",
    memory_bytes=192 * GiB,
    cache_bytes=4 * 1024**2,  # L2 per XCD, as torch reports it (the 256 MB Infinity Cache is not)
    multiprocessors=304,
    compute_capability="9.4",
    uuid="GPU-fake-mi300x",
    arch="gfx942",
)
MI355X = FakeGpu(
    id="cuda:0",
    kind="cuda",
    name="AMD Instinct MI355X (fake)",
    memory_bytes=288 * GiB,
    cache_bytes=4 * 1024**2,
    multiprocessors=256,
    compute_capability="9.5",
    uuid="GPU-fake-mi355x",
    arch="gfx950",
)
MI250X = FakeGpu(  # one die (GCD) of an MI250X: no FP8
    id="cuda:0",
    kind="cuda",
    name="AMD Instinct MI250X / MI250 (fake)",
    memory_bytes=64 * GiB,
    cache_bytes=8 * 1024**2,
    multiprocessors=110,
    compute_capability="9.0",
    uuid="GPU-fake-mi250x",
    arch="gfx90a",
)
CPU_AS_GPU = CpuGpu(
    id="cuda:0",
    kind="cuda",
    name="CPU standing in for a GPU",
    memory_bytes=16 * GiB,
    cache_bytes=32 * 1024**2,
    compute_capability="9.0",
)


class FakeEvent:
    """A timing event on the host clock (fake work takes host time only)."""

    def __init__(self) -> None:
        self.at = 0.0

    def record(self) -> None:
        self.at = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: FakeEvent) -> float:
        return (end.at - self.at) * 1e3


class ReplayGraph:
    """A captured iteration without CUDA: `replay()` runs the body again and copies what it
    returns into the tensors it returned during capture (the static outputs)."""

    def __init__(self, body: Callable[[], Any], static: Any, pool: PoolMemory | None) -> None:
        self.body, self.static, self.pool = body, static, pool
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        out = self.body()
        if isinstance(self.static, torch.Tensor):
            self.static.copy_(out)

    def pool_memory(self) -> PoolMemory | None:
        return self.pool


@dataclass
class FakeRuntime(runtime.Runtime):
    """bench.measure.runtime.Runtime without CUDA (see the module docstring)."""

    free_bytes: int = 140 * GiB
    total_bytes: int = 143771 * 1024**2
    gpus: int = 8
    peak_bytes: int = 0
    graph_pool: PoolMemory | None = None
    phase: str = "setup"
    reads: list[tuple[str, str]] = field(default_factory=list)  # (phase, what was read) stepped over
    generators: dict[int, torch.device] = field(default_factory=dict)
    graphs: list[ReplayGraph] = field(default_factory=list)
    synchronized: int = 0
    released: int = 0
    real_data: bool = False  # tensors with data (CPU_AS_GPU): host reads answer the data, not stand-ins
    graph_class: type[ReplayGraph] = ReplayGraph

    def synchronize(self, device: torch.device) -> None:
        self.synchronized += 1

    def device_scope(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def event(self) -> FakeEvent:  # type: ignore[override]
        return FakeEvent()

    def mem_get_info(self, device: torch.device) -> tuple[int, int]:
        return self.free_bytes, self.total_bytes

    def generator(self, device: torch.device, seed: int) -> torch.Generator:
        gen = torch.Generator()  # meta has no generator; what matters is the device it was made for
        gen.manual_seed(seed)
        self.generators[id(gen)] = torch.device(device)
        return gen

    def capture(self, device: torch.device, body: Callable[[], Any], warmup: int = runtime.CAPTURE_WARMUP) -> tuple[Any, Any]:
        body()  # one warm-up is enough to trace it
        static = body()
        graph = self.graph_class(body, static, self.graph_pool)
        self.graphs.append(graph)
        return graph, static

    def reset_peak_memory(self, device: torch.device) -> None:
        pass

    def peak_memory_allocated(self, device: torch.device) -> int:
        return self.peak_bytes

    def release_cached_memory(self, device: torch.device) -> None:
        self.released += 1

    def pinned(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def device_count(self) -> int:
        return self.gpus

    def can_access_peer(self, device: torch.device, peer: torch.device) -> bool:
        return True

    def gpu(self, index: int) -> torch.device:
        return torch.device("meta")

    def fused_attention(self, device: torch.device, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> bool:
        return (
            dtype != torch.float32
        )  # CUDA in torch 2.13: flash takes 16-bit dtypes with grouped-query heads, nothing takes float32

    def to_host(self, tensor: torch.Tensor, stand_in: Any) -> Any:
        if self.real_data:
            return tensor.tolist()
        parent, caller, _ = traceback.extract_stack(limit=3)
        self.reads.append(
            (self.phase, f"{caller.name} ({caller.filename.rsplit('/', 1)[-1]}:{caller.lineno}, from {parent.name})")
        )
        return stand_in


def _scaled_mm_out(
    self: torch.Tensor,
    mat2: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale_result: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    use_fast_accum: bool = False,
    *,
    out: torch.Tensor,
) -> torch.Tensor:
    """torch._scaled_mm(..., out=) on fake tensors, with the checks cuBLASLt's float8 GEMM makes
    on a GPU (torch ships a meta kernel for the functional form only, and that one skips the
    layout checks off CUDA): float8 inputs, A row-major, B column-major, k and n multiples of
    16, float32 scalar scales, and an output of the result's shape and dtype."""
    float8 = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)
    torch._check(
        self.dtype in float8 and mat2.dtype in float8, lambda: f"_scaled_mm needs float8 inputs, got {self.dtype}, {mat2.dtype}"
    )
    torch._check(
        self.dim() == 2 and mat2.dim() == 2 and self.shape[1] == mat2.shape[0],
        lambda: f"_scaled_mm: shapes {tuple(self.shape)} and {tuple(mat2.shape)} do not multiply",
    )
    torch._check(
        self.stride(1) == 1 and self.stride(0) >= self.shape[1], lambda: f"self must be row-major, got stride {self.stride()}"
    )
    torch._check(
        mat2.stride(0) == 1 and mat2.stride(1) >= mat2.shape[0], lambda: f"mat2 must be column-major, got stride {mat2.stride()}"
    )
    torch._check(self.shape[1] % 16 == 0 and mat2.shape[1] % 16 == 0, lambda: "_scaled_mm needs k and n divisible by 16")
    for scale in (scale_a, scale_b):
        torch._check(scale.dtype == torch.float32 and scale.numel() == 1, lambda: "tensorwise scales must be float32 scalars")
    want = out_dtype or self.dtype
    torch._check(
        tuple(out.shape) == (self.shape[0], mat2.shape[1]) and out.dtype == want,
        lambda: f"_scaled_mm out: {tuple(out.shape)} {out.dtype}, the result is {(self.shape[0], mat2.shape[1])} {want}",
    )
    return out


_ATEN_META = torch.library.Library("aten", "IMPL")
_ATEN_META.impl("_scaled_mm.out", _scaled_mm_out, "Meta")


class FunctionChecks(TorchFunctionMode):
    """What the torch-function level sees that aten ops do not:
    - a factory or in-place sampler that draws on a generator made for another device raises,
      as CUDA does (CPU and meta never check);
    - an SDPA call counts as one kernel in `log` (a GPU runs one fused kernel; fake tensors on
      meta decompose it into the math backend's ops)."""

    def __init__(self, fake: FakeRuntime, log: OpLog) -> None:
        super().__init__()
        self.fake, self.log = fake, log

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Mapping[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            with self.log.one_kernel():
                return func(*args, **kwargs)
        gen = kwargs.get("generator")
        if isinstance(gen, torch.Generator) and id(gen) in self.fake.generators:
            made_for = self.fake.generators[id(gen)]
            target = kwargs.get("device")
            if target is None:
                target = args[0].device if args and isinstance(args[0], torch.Tensor) and func.__name__.endswith("_") else "cpu"
            if torch.device(target).type != made_for.type:
                raise RuntimeError(
                    f"{func.__name__}: a generator made for {made_for} draws tensors on {torch.device(target)} "
                    f"(CUDA refuses: Expected a '{torch.device(target).type}' device type for generator)"
                )
        return func(*args, **kwargs)


# aten ops that launch no kernel: aliases the schema does not mark as views, allocations
# without a fill, dispatch helpers.
NO_KERNEL = {"_unsafe_view", "empty", "empty_strided", "lift_fresh", "_fused_sdp_choice", "_local_scalar_dense"}


def launches_kernel(op: Any) -> bool:
    """Whether an op (an OpOverload) stands for a kernel launch on a GPU: an aten op that is
    neither a view (views only change metadata) nor one of NO_KERNEL; prim ops (device queries)
    never are."""
    return (
        getattr(op, "namespace", "") == "aten"
        and not getattr(op, "is_view", False)
        and op.overloadpacket.__name__ not in NO_KERNEL
    )


@dataclass
class PhaseTrace:
    ops: Counter = field(default_factory=Counter)  # op name -> calls
    kernels: int = 0  # calls of ops that launch a kernel (`launches_kernel`)
    last_op: str | None = None
    finished: bool = False
    error: str | None = None
    failed_op: str | None = None


class OpLog(TorchDispatchMode):
    """Counts the aten ops of each phase, the last one, and the one that raised."""

    def __init__(self) -> None:
        super().__init__()
        self.phases: dict[str, PhaseTrace] = {}
        self.current = PhaseTrace()
        self.fused = 0  # > 0 inside a call that runs as one kernel on a GPU

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseTrace]:
        self.current = self.phases[name] = PhaseTrace()
        yield self.current

    @contextlib.contextmanager
    def one_kernel(self) -> Iterator[None]:
        """The ops inside the block count as one kernel (their names are still logged)."""
        if not self.fused:
            self.current.kernels += 1
        self.fused += 1
        try:
            yield
        finally:
            self.fused -= 1

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Mapping[str, Any] | None = None) -> Any:
        name = str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") else str(func)
        self.current.ops[name] += 1
        if not self.fused:
            self.current.kernels += launches_kernel(func)
        self.current.last_op = name
        try:
            return func(*args, **(kwargs or {}))
        except Exception:
            self.current.failed_op = name
            raise


@dataclass
class Trace:
    """What one fake run reached: per phase the ops it dispatched, the last one, and the error
    and failing op where it stopped; the host reads stepped over; a skip reason if set-up said
    the device cannot run the case."""

    case: str
    phases: dict[str, PhaseTrace]
    reads: list[tuple[str, str]]
    skipped: str | None = None
    workload: Workload | None = None

    @property
    def complete(self) -> bool:
        return self.skipped is None and all(p in self.phases and self.phases[p].finished for p in PHASES)

    def ops(self, phase: str) -> int:
        return sum(self.phases[phase].ops.values()) if phase in self.phases else 0

    def __str__(self) -> str:
        if self.skipped is not None:
            return f"{self.case}: skipped at set-up: {self.skipped}"
        lines = [self.case]
        for name in PHASES:
            p = self.phases.get(name)
            if p is None:
                lines.append(f"  {name}: not reached")
            elif p.finished:
                lines.append(f"  {name}: reached its end, {sum(p.ops.values())} aten ops, last {p.last_op}")
            else:
                lines.append(f"  {name}: stopped at {p.failed_op or p.last_op} after {sum(p.ops.values())} ops: {p.error}")
        for phase, what in self.reads:
            lines.append(f"  stepped over in {phase}: a read to the host in {what}")
        return "\n".join(lines)


@contextlib.contextmanager
def fake_process_group(world_size: int, rank: int = 0) -> Iterator[None]:
    """A process group of `world_size` ranks in this process, this one `rank`: collectives run
    and move nothing (torch's testing backend), on the CPU and on meta tensors."""
    import torch.distributed as dist
    import torch.testing._internal.distributed.fake_pg as fake_pg

    dist.init_process_group("cpu:fake,meta:fake", rank=rank, world_size=world_size, store=fake_pg.FakeStore())
    try:
        yield
    finally:
        dist.destroy_process_group()


def trace(
    workload: str | type[Workload], params: Mapping[str, Any], device: DeviceInfo = H200, fake: FakeRuntime | None = None
) -> Trace:
    """Set up, run once and check one case of `workload` on `device` with fake tensors (the
    harness's order: set-up, one iteration, check), recording each phase (see `Trace`)."""
    import workloads
    from bench.errors import Unsupported

    cls = workloads.get(workload) if isinstance(workload, str) else workload
    resolved = cls.resolve(dict(params), device)
    label = f"{cls.name}({', '.join(f'{k}={v}' for k, v in resolved.items())})@{device.name}"
    fake = fake or FakeRuntime()
    log = OpLog()
    result = Trace(label, log.phases, fake.reads)
    with runtime.use(fake), FakeTensorMode(allow_non_fake_inputs=False), FunctionChecks(fake, log), log:
        instance = cls(resolved, device)
        result.workload = instance
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("setup", instance.setup),
            ("run", instance.run),
            ("verify", instance.verify),
        ]
        try:
            for name, step in steps:
                fake.phase = name
                with log.phase(name) as phase:
                    try:
                        step()
                    except Unsupported as exc:
                        result.skipped = str(exc)
                        return result
                    except Exception as exc:  # noqa: BLE001 - the trace says where and why
                        phase.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        return result
                    phase.finished = True
        finally:
            with contextlib.suppress(Exception):
                instance.teardown()
    return result
