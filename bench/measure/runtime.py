"""The measuring side's one seam to the GPU runtime.

Every call the harness and the workloads make to CUDA that is not a tensor operation goes through
`current()`: synchronising, timing events, free memory, seeded generators, CUDA graph capture and
its memory pool, the allocator's peak statistics, pinned host memory, peer access. So does every
read of a device value back to the host (`to_host`), the one step whose result depends on data.

Why one seam: a CPU-only machine cannot execute a CUDA branch, but it can trace one. Tests swap
this runtime for a stand-in (`use`, see tests/fake_device.py) and run each workload's set-up, one
iteration and its check on fake tensors that carry a device, dtype and shape but no data. A
tensor on the wrong device, a wrong dtype or shape then fails on the CPU the way it would fail on
the GPU, and the stand-in answers the host reads with values computed from shapes alone
(`stand_in`), so no branch stops early at the first data-dependent step.

ROCm builds of torch answer the same torch.cuda calls (HIP behind them), so one runtime serves
both vendors' GPUs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

T = TypeVar("T")
CAPTURE_WARMUP = 3  # eager runs on the capture stream first: cuBLAS handles, workspaces, heuristics


@dataclass(frozen=True)
class PoolMemory:
    """Bytes a CUDA graph's private memory pool holds: `reserved_bytes` (the segments cudaMalloc'd
    for it) and `allocated_bytes` (what live tensors use of them). Activations a graph frees
    during capture stay reserved for its replays, and the allocator's peak statistics, which count
    allocated bytes, never see them."""

    reserved_bytes: int
    allocated_bytes: int


class Graph(Protocol):
    """A captured iteration: `replay()` runs it again on the tensors it was captured with."""

    def replay(self) -> None: ...

    def pool_memory(self) -> PoolMemory | None: ...


class Event(Protocol):
    def record(self) -> None: ...

    def synchronize(self) -> None: ...

    def elapsed_time(self, end: Any) -> float: ...


class CudaGraph:
    """A torch.cuda.CUDAGraph with the bytes of its pool."""

    def __init__(self, graph: torch.cuda.CUDAGraph) -> None:
        self.graph = graph

    def replay(self) -> None:
        self.graph.replay()

    def pool_memory(self) -> PoolMemory | None:
        """The pool's bytes from the allocator's snapshot (segments tagged with the pool's id);
        None where this torch's snapshot does not tag segments with their pool."""
        pool = tuple(self.graph.pool())
        reserved = allocated = 0
        tagged = False
        for segment in torch.cuda.memory_snapshot():
            owner = segment.get("segment_pool_id")
            tagged |= owner is not None
            if owner is not None and tuple(owner) == pool:
                reserved += int(segment.get("total_size", 0))
                allocated += int(segment.get("allocated_size", 0))
        return PoolMemory(reserved, allocated) if tagged else None


class Runtime:
    """CUDA through torch.cuda. Every method is what one torch.cuda call (or a short fixed
    sequence of them) does; the CPU needs none of them except `generator` and `to_host`."""

    def synchronize(self, device: torch.device) -> None:
        torch.cuda.synchronize(device)

    def device_scope(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """Make `device` current for the calls inside (events record on its current stream)."""
        return torch.cuda.device(device)

    def event(self) -> Event:
        """A timing event on the current stream of the current device."""
        return torch.cuda.Event(enable_timing=True)

    def mem_get_info(self, device: torch.device) -> tuple[int, int]:
        """(free, total) bytes of the GPU, as the driver sees it."""
        free, total = torch.cuda.mem_get_info(device)
        return int(free), int(total)

    def generator(self, device: torch.device, seed: int) -> torch.Generator:
        """A generator on `device` with a fixed seed: CUDA's factories refuse a CPU generator."""
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        return gen

    def capture(self, device: torch.device, body: Callable[[], T], warmup: int = CAPTURE_WARMUP) -> tuple[Graph, T]:
        """Capture `body` into a CUDA graph by PyTorch's rules: run it `warmup` times on a side
        stream, then capture it on that stream (static inputs and outputs, nothing inside that
        synchronises). Returns the graph and what `body` returned during capture (the static
        outputs a replay rewrites)."""
        with torch.cuda.device(device):
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(warmup):
                    body()
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                out = body()
        return CudaGraph(graph), out

    def reset_peak_memory(self, device: torch.device) -> None:
        torch.cuda.reset_peak_memory_stats(device)

    def peak_memory_allocated(self, device: torch.device) -> int:
        """Bytes of live tensors at their peak since the last reset (every pool, graphs' included)."""
        return int(torch.cuda.max_memory_allocated(device))

    def release_cached_memory(self, device: torch.device) -> None:
        """Free what the allocator caches, cuBLAS's workspaces included, so the next case's peak
        does not carry this one's (pytorch#95668: a workspace per handle and stream)."""
        with torch.cuda.device(device):
            clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
            if clear is not None:
                clear()
            torch.cuda.empty_cache()

    def pinned(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` in page-locked host memory (what an asynchronous host<->device copy needs)."""
        return tensor.pin_memory()

    def device_count(self) -> int:
        return torch.cuda.device_count()

    def gpu(self, index: int) -> torch.device:
        """The torch device of visible GPU `index` (a peer a workload copies to)."""
        return torch.device("cuda", index)

    def can_access_peer(self, device: torch.device, peer: torch.device) -> bool:
        return bool(torch.cuda.can_device_access_peer(device, peer))

    def fused_attention(self, device: torch.device, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> bool:
        """Whether a fused SDPA kernel (flash, memory-efficient, cuDNN) takes causal attention of
        this shape and dtype with grouped-query heads on `device`, asked of the dispatcher's own
        checks on tiny tensors; False where it cannot say (the math backend, with its S x S
        scores, is then assumed: the larger memory figure). torch 2.13 answers False for float32
        with grouped-query attention; later releases may not."""
        backends = torch.backends.cuda
        try:
            q = torch.zeros(1, heads, 8, head_dim, device=device, dtype=dtype)
            kv = torch.zeros(1, kv_heads, 8, head_dim, device=device, dtype=dtype)
            params = backends.SDPAParams(q, kv, kv, None, 0.0, True, kv_heads != heads)
            return any(
                check(params, False)
                for check in (
                    backends.can_use_flash_attention,
                    backends.can_use_efficient_attention,
                    backends.can_use_cudnn_attention,
                )
            )
        except Exception:  # noqa: BLE001 - an older torch without these checks: assume the math backend
            return False

    def to_host(self, tensor: torch.Tensor, stand_in: Any) -> Any:
        """The tensor's value on the host (`tolist()`: a number for one element, else nested
        lists). On a GPU this waits for the work queued before it. `stand_in` is what a runtime
        without data answers instead (the same shape of value, from shapes alone); this one
        ignores it."""
        return tensor.tolist()


_current: Runtime = Runtime()


def current() -> Runtime:
    """The runtime the measuring side calls (the real one, unless a test swapped it)."""
    return _current


@contextlib.contextmanager
def use(runtime: Runtime) -> Iterator[Runtime]:
    """Swap the runtime for the length of the block (tests: a stand-in that needs no GPU)."""
    global _current
    saved, _current = _current, runtime
    try:
        yield runtime
    finally:
        _current = saved
