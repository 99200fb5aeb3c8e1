"""membw d2d and p2p: d2d copies within the selected GPU; p2p copies to the GPU named by `peer`,
records it in the case id, and touches no GPU but the selected one and that peer. Runs on the CPU:
a fake CUDA (device count, peer access, allocations recorded by device) stands in for the GPUs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import workloads.membw as membw
from bench.errors import Unsupported, UsageError
from bench.measure.hardware import DeviceInfo
from bench.measure.plan import expand
from bench.measure.runner import run_case
from workloads import get
from workloads.membw import MemoryBandwidth


def _gpu(index: int) -> DeviceInfo:
    return DeviceInfo(id=f"cuda:{index}", kind="cuda", name="Fake GPU", memory_bytes=80 * 2**30, cache_bytes=50 * 2**20)


# --- the parameter ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,parsed", [("cuda:1", "cuda:1"), (" CUDA:2 ", "cuda:2"), ("3", "cuda:3"), (1, "cuda:1"), ("cuda:07", "cuda:7")]
)
def test_peer_parses_to_a_cuda_device(raw: Any, parsed: str) -> None:
    assert MemoryBandwidth.param("peer").parse(raw, "membw") == parsed


@pytest.mark.parametrize("raw", ["cpu", "cuda", "cuda:", "cuda:-1", "gpu1", "cuda:1.5", "cuda:²", True, ""])
def test_a_peer_that_is_not_a_gpu_is_a_usage_error(raw: Any) -> None:
    with pytest.raises(UsageError, match=r"membw: parameter peer: .* is not a GPU; valid: cuda:N"):
        MemoryBandwidth.param("peer").parse(raw, "membw")


def test_p2p_without_a_peer_is_a_usage_error(cpu: DeviceInfo) -> None:
    with pytest.raises(UsageError, match="op=p2p copies to another GPU: name it with peer=cuda:N"):
        expand("membw", {"op": ["p2p"], "size": ["1MiB"]}, [cpu])


def test_the_peer_is_part_of_the_case_id() -> None:
    (case,) = expand("membw", {"op": ["p2p"], "size": ["1MiB"], "peer": ["cuda:1"]}, [_gpu(0)])
    assert case.param_dict["peer"] == "cuda:1"
    assert case.id == "membw(op=p2p,size=1MiB,dtype=float32,peer=cuda:1)@cuda:0"


def test_other_ops_leave_the_peer_out_and_keep_their_case_ids() -> None:
    cases = expand("membw", {"op": ["d2d", "triad", "p2p"], "size": ["1MiB"], "peer": ["cuda:1"]}, [_gpu(0)])
    assert [c.id for c in cases] == [
        "membw(op=d2d,size=1MiB,dtype=float32)@cuda:0",  # as before p2p existed: results still match
        "membw(op=triad,size=1MiB,dtype=float32)@cuda:0",
        "membw(op=p2p,size=1MiB,dtype=float32,peer=cuda:1)@cuda:0",
    ]
    (plain,) = expand("membw", {"op": ["copy"], "size": ["1MiB"]}, [_gpu(0)])
    assert "peer" not in plain.param_dict


def test_copies_count_their_bytes_once() -> None:
    for op in ("d2d", "p2p"):
        workload = MemoryBandwidth({"op": op, "size": 2**20, "dtype": "float32", "peer": "cuda:1"}, _gpu(0))
        assert workload.work().per_iter == 2**20


# --- on the CPU --------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["d2d", "p2p"])
def test_copies_are_skipped_on_cpu_with_the_reason(cpu: DeviceInfo, fast_timing: Any, op: str) -> None:
    (case,) = expand("membw", {"op": [op], "size": ["1MiB"], "peer": ["cuda:1"]}, [cpu])
    result = run_case(case, cpu, fast_timing, get("membw"))
    assert result["status"] == "skipped"
    assert result["error"] == f"{op} copies need a CUDA device"


# --- a fake CUDA: which GPUs a case touches ----------------------------------------------------


class FakeCuda:
    """`visible` GPUs; `peers` the (device, peer) index pairs with direct access. Allocations
    are made on the CPU and their device recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, visible: int, peers: set[tuple[int, int]]) -> None:
        self.visible, self.peers = visible, peers
        self.asked: list[tuple[int, int]] = []
        self.touched: list[str] = []
        real_rand, real_empty = torch.rand, torch.empty

        def can_access(device: torch.device, peer: torch.device) -> bool:
            self.asked.append((device.index, peer.index))
            return (device.index, peer.index) in self.peers

        def alloc(real: Any) -> Any:
            def make(*args: Any, device: Any = None, generator: Any = None, **kwargs: Any) -> torch.Tensor:
                if device is not None:
                    self.touched.append(str(torch.device(device)))
                return real(*args, **kwargs)

            return make

        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.visible)
        monkeypatch.setattr(torch.cuda, "can_device_access_peer", can_access)
        monkeypatch.setattr(torch, "rand", alloc(real_rand))
        monkeypatch.setattr(torch, "empty", alloc(real_empty))
        monkeypatch.setattr(membw, "seeded_generator", lambda device: None)


def _setup(op: str, device: int, peer: str | None = None) -> MemoryBandwidth:
    params = {"op": op, "size": 2**20, "dtype": "float32"} | ({"peer": peer} if peer else {})
    workload = MemoryBandwidth(params, _gpu(device))
    workload.setup()
    return workload


def test_d2d_stays_on_the_selected_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(monkeypatch, visible=8, peers={(3, 4)})
    _setup("d2d", 3)
    assert cuda.touched == ["cuda:3", "cuda:3"]  # before: the destination was on cuda:4
    assert cuda.asked == []  # no peer is even asked about


def test_p2p_copies_to_the_named_peer_and_nowhere_else(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(monkeypatch, visible=8, peers={(3, 6)})
    workload = _setup("p2p", 3, "cuda:6")
    assert cuda.touched == ["cuda:3", "cuda:6"]  # source on the device, destination on the peer
    assert cuda.asked == [(3, 6)]
    workload.run()
    assert workload.verify().passed


@pytest.mark.parametrize(
    "peer,visible,reason",
    [
        ("cuda:3", 8, "p2p peer cuda:3 is the device itself; op=d2d copies within one GPU"),
        ("cuda:8", 8, r"p2p peer cuda:8 is not visible here \(8 GPU\(s\) visible\)"),
        ("cuda:1", 1, r"p2p peer cuda:1 is not visible here \(1 GPU\(s\) visible\)"),
        ("cuda:5", 8, "p2p: cuda:3 cannot access cuda:5 directly"),
    ],
)
def test_p2p_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch, peer: str, visible: int, reason: str) -> None:
    cuda = FakeCuda(monkeypatch, visible=visible, peers={(3, 6)})
    with pytest.raises(Unsupported, match=reason):
        _setup("p2p", 3, peer)
    assert cuda.touched == []  # checked before anything is allocated


def test_p2p_without_a_peer_in_setup_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCuda(monkeypatch, visible=2, peers={(0, 1)})
    with pytest.raises(Unsupported, match="p2p needs peer=cuda:N"):
        _setup("p2p", 0)
