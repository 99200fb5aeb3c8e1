"""Memory bandwidth probes: BabelStream's kernels, and host<->device copies on a GPU.

Bytes per iteration follow BabelStream (each array counted once per element): copy c=a and
scale b=s*c move 2 arrays, add c=a+b and triad a=b+s*c move 3, dot sum(a*b) reads 2. The copies
h2d, d2h (pinned host memory), d2d and p2p count the bytes moved once, as nvbandwidth does. `size`
is the bytes of one array; the default is well past the last-level cache (or the GPU's L2), and a
sweep over sizes walks down the cache hierarchy.

d2d copies within the selected GPU (it reads and writes its memory, so the memory moves twice
the bytes counted). p2p copies from the selected GPU to the one named by `peer` (cuda:N), over
NVLink or PCIe peer to peer; it needs that name, a peer other than the device, visible here and
reachable directly (torch.cuda.can_device_access_peer), else the case is skipped with the reason.
No op touches any GPU but the selected one and, for p2p, its named peer.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.errors import Unsupported, UsageError
from bench.measure import runtime
from bench.measure.hardware import DeviceInfo
from bench.measure.workload import Param, Verification, Work, Workload, max_rel_error, seeded_generator

STREAM_OPS = ("copy", "scale", "add", "triad", "dot")
COPY_OPS = ("h2d", "d2h", "d2d", "p2p")
ARRAYS_MOVED = {"copy": 2, "scale": 2, "add": 3, "triad": 3, "dot": 2, "h2d": 1, "d2h": 1, "d2d": 1, "p2p": 1}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
SCALAR = 0.4  # BabelStream's start scalar
MIN_DEFAULT_BYTES = 256 * 1024**2
CACHE_FACTOR = 4  # arrays at least 4x the last cache level, as STREAM's rules ask


def default_size(device: DeviceInfo) -> int:
    """Bytes per array: at least 4x the last cache level and at least 256 MiB."""
    return max(MIN_DEFAULT_BYTES, CACHE_FACTOR * (device.cache_bytes or 0))


class MemoryBandwidth(Workload):
    name = "membw"
    summary = "memory bandwidth: BabelStream copy/scale/add/triad/dot, h2d/d2h/d2d/p2p copies on CUDA (bytes/s)"
    params = (
        Param("op", "choice", "triad", "kernel or copy direction", choices=STREAM_OPS + COPY_OPS),
        Param("size", "bytes", None, "bytes per array", auto="max(256 MiB, 4x last-level cache or L2)"),
        Param("dtype", "choice", "float32", "element type", choices=tuple(DTYPES)),
        Param("peer", "device", None, "the GPU op=p2p copies to (required there; other ops ignore it)", auto="none"),
    )

    @classmethod
    def derive(cls, values: dict[str, Any], device: DeviceInfo) -> dict[str, Any]:
        if values["size"] is None:
            values["size"] = default_size(device)
        if values["op"] == "p2p":
            if values.get("peer") is None:
                raise UsageError("membw: op=p2p copies to another GPU: name it with peer=cuda:N")
        else:
            values.pop("peer", None)  # p2p's alone: the other ops' case ids stay as they were
        return values

    def _peer(self, dev: torch.device) -> torch.device:
        """The GPU p2p copies to, checked: named, not the device itself, visible, reachable."""
        named = self.p.get("peer")
        if named is None:
            raise Unsupported("p2p needs peer=cuda:N, the GPU to copy to")
        peer = torch.device(named)
        if named == self.device.id:
            raise Unsupported(f"p2p peer {peer} is the device itself; op=d2d copies within one GPU")
        rt = runtime.current()
        count = rt.device_count()
        if peer.index is None or peer.index >= count:
            raise Unsupported(f"p2p peer {peer} is not visible here ({count} GPU(s) visible)")
        if not rt.can_access_peer(dev, peer):
            raise Unsupported(f"p2p: {dev} cannot access {peer} directly (no NVLink or PCIe peer-to-peer path)")
        return rt.gpu(peer.index)

    def setup(self) -> None:
        op, size, dev = self.p["op"], self.p["size"], self.torch_device
        dtype = DTYPES[self.p["dtype"]]
        element = torch.tensor([], dtype=dtype).element_size()
        if size % element:
            raise Unsupported(f"size {size} is not a multiple of the {self.p['dtype']} element size ({element} bytes)")
        if op in COPY_OPS and not self.gpu:
            raise Unsupported(f"{op} copies need a CUDA device")
        target = self._peer(dev) if op == "p2p" else dev  # checked before anything is allocated
        n = size // element
        self.n = n
        gen = seeded_generator(dev)
        if op in STREAM_OPS:
            # Random data, not BabelStream's constants: constant pages can be deduplicated or compressed.
            self.a = torch.rand(n, device=dev, generator=gen, dtype=dtype)
            self.b = torch.rand(n, device=dev, generator=gen, dtype=dtype)
            self.c = torch.rand(n, device=dev, generator=gen, dtype=dtype)
            self.sum = torch.zeros((), device=dev, dtype=dtype)
        elif op == "h2d":
            self.src = runtime.current().pinned(torch.rand(n, generator=seeded_generator(torch.device("cpu")), dtype=dtype))
            self.dst = torch.empty(n, device=dev, dtype=dtype)
        elif op == "d2h":
            self.src = torch.rand(n, device=dev, generator=gen, dtype=dtype)
            self.dst = runtime.current().pinned(torch.empty(n, dtype=dtype))
        else:  # d2d within the device; p2p to the named peer, and no other GPU
            self.src = torch.rand(n, device=dev, generator=gen, dtype=dtype)
            self.dst = torch.empty(n, device=target, dtype=dtype)

    def run(self) -> None:
        op = self.p["op"]
        if op == "copy":
            self.c.copy_(self.a)
        elif op == "scale":
            torch.mul(self.c, SCALAR, out=self.b)
        elif op == "add":
            torch.add(self.a, self.b, out=self.c)
        elif op == "triad":
            torch.add(self.b, self.c, alpha=SCALAR, out=self.a)
        elif op == "dot":
            self.sum = torch.dot(self.a, self.b)  # out= would add a copy kernel per iteration
        else:
            self.dst.copy_(self.src, non_blocking=True)

    def work(self) -> Work:
        moved = float(ARRAYS_MOVED[self.p["op"]] * self.p["size"])
        return Work("byte", moved, {"byte": moved})

    def _dot_float64(self, chunk: int = 1 << 22) -> torch.Tensor:
        """sum(a*b) in float64, a chunk at a time so the reference needs little extra memory."""
        total = torch.zeros((), dtype=torch.float64, device=self.a.device)
        for start in range(0, self.n, chunk):
            total += torch.dot(self.a[start : start + chunk].double(), self.b[start : start + chunk].double())
        return total

    def verify(self) -> Verification:
        """Check a strided sample of the output (the whole array for dot) against float64."""
        op = self.p["op"]
        step = max(1, self.n // 65536)
        idx = slice(None, None, step)
        if op == "copy":
            out, ref = self.c[idx], self.a[idx].double()
        elif op == "scale":
            out, ref = self.b[idx], SCALAR * self.c[idx].double()
        elif op == "add":
            out, ref = self.c[idx], self.a[idx].double() + self.b[idx].double()
        elif op == "triad":
            out, ref = self.a[idx], self.b[idx].double() + SCALAR * self.c[idx].double()
        elif op == "dot":
            out, ref = self.sum, self._dot_float64()
        else:
            out, ref = self.dst[idx].to("cpu"), self.src[idx].to("cpu").double()
        tolerance = 1e-6 if self.p["dtype"] == "float32" else 1e-12
        if op == "dot":
            # A float32 CPU dot accumulates in float32: over 2.5e8 positive elements it drifts 0.6%
            # from float64 (measured); a kernel that drops or repeats a block is off by far more.
            tolerance = 1e-2 if self.p["dtype"] == "float32" else 1e-10
        return Verification(max_rel_error(out, ref), tolerance)
