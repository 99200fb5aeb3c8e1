"""Collectives over torch.distributed, measured as nccl-tests measures them: algbw and busbw.

Under torchrun every rank runs the same case at the same moment; the harness owns the barriers and
the timer (the time of a repeat is the maximum across ranks). Run alone, without a process group or
with a world of one rank, a case is skipped with the reason.

`size` is the total buffer as nccl-tests counts it: the per-rank buffer for all_reduce, broadcast,
send_recv and all_to_all, the output for all_gather, the input for reduce_scatter. The ops that
split the buffer over the ranks (all_gather, reduce_scatter, all_to_all) need it to be a multiple
of world size x element size; a size that is not is skipped with the valid sizes nearest to it.

Ops and their calls (tensor APIs only; the default group, nccl on CUDA (RCCL on ROCm, behind the same
backend name), gloo on the CPU):
    all_reduce      all_reduce(buf)                             in place by nature (inplace=true)
    broadcast       broadcast(buf, src=0)                       in place by nature (inplace=true)
    all_gather      all_gather_single(out, in)                  inplace: in = out's slice of this rank
    reduce_scatter  reduce_scatter_single(out, in)              inplace: out = in's slice of this rank
    all_to_all      all_to_all_single(out, in)                  never in place (gloo silently returns
                                                                wrong data for an in-place one)
    send_recv       batch_isend_irecv: a ring, each rank sends its buffer to rank+1 and receives
                    rank-1's                                    never in place
(`all_gather_single` and `reduce_scatter_single` are torch 2.13's names of all_gather_into_tensor
and reduce_scatter_tensor; older torch gets the old names.) Where inplace is not the op's way, the
case is skipped with the reason, so a sweep over ops and inplace=true,false runs what it can.

Work per rank: a collective moves one buffer for the whole job, so each rank reports its share,
size / world_size bytes, and the job's sum is the job's figure: work terms "byte" (algbw = size / t)
and "bus_byte" (busbw = algbw x `bus_factor`: 2(n-1)/n for all_reduce, (n-1)/n for all_gather,
reduce_scatter and all_to_all, 1 for broadcast and send_recv). Busbw is the figure to compare with
the link's bandwidth: it is what each rank's link carries, whatever the op and the rank count.

Correctness: rank r fills element i of its input with v(r, i) = ((i + r) mod K) + 1, small
integers whose sums over every rank (the reducing ops) stay exactly representable in the dtype
(K = min(251, L // n) for all_reduce and reduce_scatter, L = 256 for bfloat16, 2048 for float16,
2^24 for float32; min(251, L) for the others), so every output element has one exact expected value
and is compared with ==. (Past L ranks, bfloat16 beyond 256, every rank contributes 1 where
(i + r) mod n == 0 and 0 elsewhere.) `verify()` re-fills the inputs, runs the op once and compares
every element on every rank, so the check holds however many times run() ran before it (an in-place
op overwrites its input, and re-filling inside the timed loop would time the fill); it then sums the
wrong count over the ranks (all_reduce, default group), so one wrong element on one rank fails the
case on every rank.

The timed loop runs on whatever the buffers hold, and that must stay finite: power depends on the
data (inf and NaN patterns draw less than random mantissas), and a sum that overflows measures
something else. An in-place all_reduce with SUM multiplies the buffer by the world size every
iteration (8 ranks: bfloat16 and float32 reach inf after about 40 iterations, float16 after 5),
so the timed all_reduce reduces with MAX (`TIMED_REDUCTION`): on a ring or a tree the same bytes
on every link and the same element-wise cost as SUM (NCCL's reductions are memory-bound), and a
buffer that stops changing after the first iteration. One exception: on NVSwitch systems with
NVLS (multicast), NCCL runs MAX through NVLS only for 16-bit and integer types, SUM also for
float32, so a float32 all_reduce's busbw there can read below a float32 SUM's; the record says
so (`details.timed_reduction_note`), and bfloat16 compares like for like. The check still runs
SUM, the op users call, and compares it exactly. reduce_scatter in place grows by a sum of the
ranks' other slices per iteration, linearly, so it keeps SUM; the other ops copy and never grow.
Each record says what it timed (`details.timed_reduction`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from bench.errors import Unsupported
from bench.measure import runtime
from bench.measure.hardware import DeviceInfo
from bench.measure.workload import Param, Verification, Work, Workload

OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send_recv")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int32": torch.int32}
# The largest integer up to which every integer is exact in the dtype (partial sums stay below it).
EXACT_LIMIT = {"float32": 2**24, "bfloat16": 2**8, "float16": 2**11, "int32": 2**31 - 1}
REDUCING = ("all_reduce", "reduce_scatter")
SPLITTING = ("all_gather", "reduce_scatter", "all_to_all")  # the buffer is split into world_size chunks
IN_PLACE_ONLY = ("all_reduce", "broadcast")
NEVER_IN_PLACE = {
    "all_to_all": "all_to_all never runs in place (gloo silently returns wrong data for an in-place "
    "all_to_all_single); use inplace=false",
    "send_recv": "send_recv never runs in place (each rank receives into a buffer of its own while it sends); use inplace=false",
}
TIMED_REDUCTION = {"all_reduce": "max"}  # the op's reduction inside the timed loop, where not SUM
FLOAT32_MAX_NOTE = (
    "timed with MAX: with NVLS (NVSwitch multicast) NCCL reduces float32 MAX without it and SUM with it, "
    "so busbw may read below a float32 SUM's; bfloat16 compares like for like"
)
MAX_PERIOD = 251  # a prime: the pattern's period never lines up with a power-of-two chunk
CHUNK = 1 << 22  # elements filled or checked at a time (bounds the check's extra memory)
DEFAULT_CPU_BYTES = 4 * 1024**2
DEFAULT_GPU_BYTES = 256 * 1024**2
ALONE = "needs 2 or more ranks: run under torchrun (wattbench launch -n N -- run ...)"


def bus_factor(op: str, n: int) -> float:
    """nccl-tests' busbw / algbw for `op` over `n` ranks."""
    if n < 1:
        raise ValueError(f"world size {n} must be at least 1")
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    if op in ("broadcast", "send_recv"):
        return 1.0
    raise ValueError(f"unknown collective op {op!r}; valid: {', '.join(OPS)}")


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) where there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _planned_world_size() -> int:
    """The world size a case will run in: the process group's, else torchrun's WORLD_SIZE, else 1."""
    rank, n = world()
    if n > 1:
        return n
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def period(op: str, n: int, dtype: str) -> int:
    """K of the fill pattern: sums over the ranks of values 1..K stay exact; 0 = the sparse pattern."""
    limit = EXACT_LIMIT[dtype] // (n if op in REDUCING else 1)
    return min(MAX_PERIOD, limit)


def pattern(rank: int | torch.Tensor, index: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """v(rank, i) for int64 indices (and ranks, an int or one per element): ((i + rank) mod k) + 1,
    or (k = 0) 1 where (i + rank) mod n == 0 and 0 elsewhere."""
    if k:
        return (index + rank) % k + 1
    return ((index + rank) % n == 0).to(torch.int64)


def pattern_sum(index: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """sum of v(r, i) over r = 0..n-1, in closed form (int64).

    With n = q*k + m and a = i mod k: q full periods give q*k*(k-1)/2; the m left over give
    a, a+1, ... taken mod k: m*a + m*(m-1)/2, less k for each term that wrapped, max(0, a+m-k).
    """
    if not k:
        return torch.ones_like(index)
    q, m = divmod(n, k)
    a = index % k
    wrapped = (a + m - k).clamp(min=0)
    return n + q * (k * (k - 1) // 2) + m * a + m * (m - 1) // 2 - k * wrapped


def _nearest_multiples(size: int, unit: int) -> str:
    low, high = size // unit * unit, (size // unit + 1) * unit
    return f"{low} or {high}" if low else f"{high}"


class Collective(Workload):
    name = "collective"
    summary = "torch.distributed collectives under torchrun: algbw and busbw as nccl-tests (bytes/s)"
    params = (
        Param("op", "choice", "all_reduce", "the collective", choices=OPS),
        Param(
            "size",
            "bytes",
            None,
            "total buffer as nccl-tests counts it (all_gather: the output, "
            "reduce_scatter: the input, others: each rank's buffer)",
            auto="256 MiB on CUDA, 4 MiB on CPU",
        ),
        Param("dtype", "choice", "float32", "element type", choices=tuple(DTYPES)),
        Param(
            "inplace",
            "bool",
            None,
            "output in the input's memory (all_gather, reduce_scatter; all_reduce "
            "and broadcast only run in place, all_to_all and send_recv never)",
            auto="true for all_reduce and broadcast, false otherwise",
        ),
    )

    # Test hook: the rank whose output verify() corrupts (one element) before its check; None = off.
    verify_corrupt_rank: int | None = None

    def __init__(self, params: Mapping[str, Any], device: DeviceInfo) -> None:
        super().__init__(params, device)
        self.rank, self.n = world()
        self.wrong: int | None = None

    @classmethod
    def derive(cls, values: dict[str, Any], device: DeviceInfo) -> dict[str, Any]:
        if values["size"] is None:
            size = DEFAULT_GPU_BYTES if device.kind == "cuda" else DEFAULT_CPU_BYTES
            # A multiple of world size x 4 bytes (the widest dtype), so the default splits evenly.
            unit = 4 * _planned_world_size()
            values["size"] = max(unit, size // unit * unit)
        if values["inplace"] is None:
            values["inplace"] = values["op"] in IN_PLACE_ONLY
        return values

    # --- set-up ---

    @property
    def element(self) -> int:
        return torch.tensor([], dtype=DTYPES[self.p["dtype"]]).element_size()

    def _check_supported(self) -> None:
        """What the parameters alone rule out first (so it shows run alone too), then the world."""
        op, size, dtype, inplace = self.p["op"], self.p["size"], self.p["dtype"], self.p["inplace"]
        if inplace and op in NEVER_IN_PLACE:
            raise Unsupported(NEVER_IN_PLACE[op])
        if not inplace and op in IN_PLACE_ONLY:
            raise Unsupported(f"{op} runs in place (torch.distributed.{op} writes into its input); use inplace=true")
        if size % self.element:
            raise Unsupported(
                f"size {size} B is not a multiple of the {dtype} element size ({self.element} bytes); "
                f"valid: {_nearest_multiples(size, self.element)}"
            )
        if self.n < 2:
            raise Unsupported(ALONE)
        unit = self.n * self.element
        if op in SPLITTING and size % unit:
            raise Unsupported(
                f"{op} splits size over {self.n} ranks: it must be a multiple of {self.n} x "
                f"{self.element} B ({dtype}) = {unit} B; valid: {_nearest_multiples(size, unit)}"
            )

    def setup(self) -> None:
        self._check_supported()
        op, dev = self.p["op"], self.torch_device
        dtype = DTYPES[self.p["dtype"]]
        self.count = self.p["size"] // self.element  # elements of the size buffer
        self.chunk = self.count // self.n if op in SPLITTING else self.count
        self.k = period(op, self.n, self.p["dtype"])
        r, c = self.rank, self.chunk
        if op in IN_PLACE_ONLY:
            self.inp = self.out = torch.empty(self.count, device=dev, dtype=dtype)
        elif op == "all_gather":
            self.out = torch.empty(self.count, device=dev, dtype=dtype)
            self.inp = self.out.narrow(0, r * c, c) if self.p["inplace"] else torch.empty(c, device=dev, dtype=dtype)
        elif op == "reduce_scatter":
            self.inp = torch.empty(self.count, device=dev, dtype=dtype)
            self.out = self.inp.narrow(0, r * c, c) if self.p["inplace"] else torch.empty(c, device=dev, dtype=dtype)
        else:  # all_to_all, send_recv: separate buffers of the full size
            self.inp = torch.empty(self.count, device=dev, dtype=dtype)
            self.out = torch.empty(self.count, device=dev, dtype=dtype)
        self._bind()
        self._fill()

    def _bind(self) -> None:
        op = self.p["op"]
        self._timed_reduction = getattr(
            dist.ReduceOp, TIMED_REDUCTION.get(op, "sum").upper()
        )  # looked up once, not per iteration
        if op == "send_recv":
            self.launches_per_iter = 2
            self._ring = [
                dist.P2POp(dist.isend, self.inp, (self.rank + 1) % self.n),
                dist.P2POp(dist.irecv, self.out, (self.rank - 1) % self.n),
            ]
        elif op == "all_gather":
            self._gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        elif op == "reduce_scatter":
            self._scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

    def _fill_range(self, dst: torch.Tensor, rank: int, start: int, sign: int = 1) -> None:
        """dst[j] = sign * v(rank, start + j), a chunk at a time."""
        for first in range(0, dst.numel(), CHUNK):
            part = dst[first : first + CHUNK]
            index = torch.arange(start + first, start + first + part.numel(), device=dst.device)
            part.copy_(sign * pattern(rank, index, self.k, self.n))

    def _fill(self) -> None:
        """Inputs from the pattern; outputs (where separate, or beside an in-place input) to -1,
        which no expected value equals, so an output the op never wrote is caught."""
        op, r = self.p["op"], self.rank
        if op == "broadcast":
            # The root's data everywhere else negated: a broadcast that does nothing is caught.
            self._fill_range(self.inp, r, 0, 1 if r == 0 else -1)
            return
        if self.out is not self.inp:
            self.out.fill_(-1)  # first: an in-place all_gather's input is a slice of it
        self._fill_range(self.inp, r, 0)

    # --- the timed iteration ---

    def run(self) -> None:
        self._collective(self._timed_reduction)

    def _collective(self, reduction: Any) -> None:
        """One call of the op; `reduction` is the ReduceOp of all_reduce and reduce_scatter."""
        op = self.p["op"]
        if op == "all_reduce":
            dist.all_reduce(self.inp, op=reduction)
        elif op == "broadcast":
            dist.broadcast(self.inp, src=0)
        elif op == "all_gather":
            self._gather(self.out, self.inp)
        elif op == "reduce_scatter":
            self._scatter(self.out, self.inp, op=reduction)
        elif op == "all_to_all":
            dist.all_to_all_single(self.out, self.inp)
        else:
            for request in dist.batch_isend_irecv(self._ring):
                request.wait()

    def work(self) -> Work:
        size, n = float(self.p["size"]), self.n
        share = size / n
        return Work("byte", share, {"byte": share, "bus_byte": size * bus_factor(self.p["op"], n) / n})

    # --- the check ---

    def _expected(self, index: torch.Tensor) -> torch.Tensor:
        """The exact value of output element `index` (int64 indices) on this rank."""
        op, r, c, k, n = self.p["op"], self.rank, self.chunk, self.k, self.n
        if op == "all_reduce":
            return pattern_sum(index, k, n)
        if op == "reduce_scatter":
            return pattern_sum(index + r * c, k, n)
        if op == "broadcast":
            return pattern(0, index, k, n)
        if op == "all_gather":
            return pattern(index // c, index % c, k, n)
        if op == "all_to_all":  # chunk s of the output is rank s's chunk r
            return pattern(index // c, r * c + index % c, k, n)
        return pattern((r - 1) % n, index, k, n)  # send_recv: the previous rank's buffer

    def verify(self) -> Verification:
        """Re-fill, run once, compare every output element with its exact value on every rank;
        the wrong count and the largest relative error are reduced over the ranks."""
        self._fill()
        self._collective(dist.ReduceOp.SUM)
        out = self.out
        if self.verify_corrupt_rank == self.rank:
            out[out.numel() // 2] += 1
        rt = runtime.current()
        wrong, diff, scale = 0, 0.0, 0.0
        for first in range(0, out.numel(), CHUNK):
            got = out[first : first + CHUNK].to(torch.float64)
            index = torch.arange(first, first + got.numel(), device=got.device)
            want = self._expected(index).to(torch.float64)
            # NaN != anything: counted
            bad, off, top = rt.to_host(
                torch.stack([(got != want).sum().double(), (got - want).abs().max(), want.abs().max()]), [0.0, 0.0, 1.0]
            )
            wrong += int(bad)
            diff = math.inf if math.isnan(off) else max(diff, off)  # a NaN output: an infinite error
            scale = max(scale, top)
        rel = diff / scale if scale > 0 else diff
        counts = torch.full((1,), wrong, dtype=torch.int64, device=self.torch_device)
        worst = torch.full((1,), rel, dtype=torch.float64, device=self.torch_device)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        self.wrong, rel = rt.to_host(counts, [0])[0], rt.to_host(worst, [0.0])[0]
        if self.wrong and not rel > 0:  # every rank fails when any rank saw a wrong element
            rel = math.inf
        return Verification(rel, 0.0)

    def details(self) -> dict[str, Any]:
        """World size, the busbw factor, the library that moved the data (`library`: nccl; rccl on
        ROCm, which torch's "nccl" backend is there; gloo), `count` as nccl-tests prints it (elements of each rank's
        part: the size buffer's elements, divided by the world size for the ops that split it)
        and `wrong`, the wrong elements over all ranks at the last verify() (None before it: the
        harness reads details after set-up, so a record shows None unless it reads them again)."""
        return {
            "world_size": self.n,
            "bus_factor": bus_factor(self.p["op"], self.n),
            "count": getattr(self, "chunk", None),
            "wrong": self.wrong,
            "timed_reduction": TIMED_REDUCTION.get(self.p["op"], "sum") if self.p["op"] in REDUCING else None,
            "library": ("rccl" if self.rocm else "nccl") if self.gpu else "gloo",
        } | (
            {"timed_reduction_note": FLOAT32_MAX_NOTE}
            if self.gpu and not self.rocm and self.p["op"] == "all_reduce" and self.p["dtype"] == "float32"
            else {}
        )

    def teardown(self) -> None:
        for name in ("inp", "out", "_ring"):
            self.__dict__.pop(name, None)
