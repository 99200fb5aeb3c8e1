"""Peak memory covers the timed window and what the case itself holds, not set-up or the check."""

from __future__ import annotations

import pytest
import torch

from bench.measure import lifecycle
from bench.measure.hardware import DeviceInfo, cpu_device
from bench.measure.timing import CpuTimer
from bench.measure.workload import Param, Verification, Work, Workload
from bench.monitor.process import ProcessMemory
from bench.monitor.sampler import Monitor

MiB = 1 << 20
HELD, STAGING, REFERENCE, TRANSIENT = 384 * MiB, 512 * MiB, 1024 * MiB, 8 * MiB


class FakeCudaMemory:
    """torch.cuda's allocated-bytes counter and its peak, without a GPU."""

    def __init__(self) -> None:
        self.current = self.peak = 0
        self.events: list[str] = []

    def alloc(self, n: int) -> None:
        self.current += n
        self.peak = max(self.peak, self.current)

    def free(self, n: int) -> None:
        self.current -= n

    def reset_peak_memory_stats(self, device: object = None) -> None:
        self.events.append("reset")
        self.peak = self.current

    def max_memory_allocated(self, device: object = None) -> int:
        return self.peak


class StagedOnGpu(Workload):
    """Like matmul on a GPU: set-up draws its inputs through larger staging copies, the check
    builds a float64 reference, each iteration makes a small temporary; it holds HELD bytes."""

    name = "staged_gpu"
    summary = "fake GPU memory use"
    params = (Param("n", "int", 1, "unused"),)
    memory: FakeCudaMemory

    def setup(self) -> None:
        self.memory.events.append("setup")
        self.memory.alloc(STAGING)
        self.memory.alloc(HELD)
        self.memory.free(STAGING)

    def run(self) -> None:
        self.memory.alloc(TRANSIENT)
        self.memory.free(TRANSIENT)

    def work(self) -> Work:
        return Work("FLOP", 1.0)

    def verify(self) -> Verification:
        self.memory.events.append("verify")
        self.memory.alloc(REFERENCE)
        self.memory.free(REFERENCE)
        return Verification(0.0, 1e-6)

    def teardown(self) -> None:
        self.memory.free(HELD)


@pytest.fixture
def fake_cuda(monkeypatch):
    """A device of kind "cuda" whose memory counter is FakeCudaMemory; host timers stand in
    for CUDA events."""
    memory = FakeCudaMemory()
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", memory.reset_peak_memory_stats)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", memory.max_memory_allocated)
    monkeypatch.setattr(lifecycle, "timer_for", lambda device: CpuTimer())
    monkeypatch.setattr(lifecycle, "synchronize", lambda device: None)
    monkeypatch.setattr(StagedOnGpu, "memory", memory, raising=False)
    return DeviceInfo("cuda:0", "cuda", "Fake GPU", 80 << 30), memory


def test_gpu_peak_is_the_timed_window_not_setup_or_the_reference(fake_cuda, fast_timing):
    device, memory = fake_cuda
    first = lifecycle.measure_round(StagedOnGpu, {"n": 1}, device, fast_timing)
    later = lifecycle.measure_round(StagedOnGpu, {"n": 1}, device, fast_timing, plan=first.plan)  # a round 2: re-warms
    for outcome in (first, later):
        assert outcome.status == "ok", outcome.error
        assert outcome.memory is not None and outcome.memory.to_json() == {
            "peak_bytes": HELD + TRANSIENT,  # not HELD + REFERENCE (1.4 GiB), nor STAGING + HELD
            "source": "torch.cuda.max_memory_allocated",
            "scope": "timed window",
            "nvml_used_peak_bytes": None,
        }
    assert memory.events == ["setup", "verify", "reset", "setup", "reset"]  # reset after the check, before timing
    assert memory.current == 0


def test_memory_helper_on_the_cpu_subtracts_what_the_process_held_before():
    class Reading:
        peak_memory_bytes = 900 * MiB

    memory = lifecycle._memory(cpu_device(), {"process": Reading()}, baseline_bytes=700 * MiB).to_json()
    assert memory == {
        "peak_bytes": 200 * MiB,
        "source": "process_rss_sampled",
        "scope": "timed window",
        "process_peak_bytes": 900 * MiB,
        "baseline_bytes": 700 * MiB,
    }
    edges = lifecycle._memory(cpu_device(), None, baseline_bytes=700 * MiB, edge_bytes=650 * MiB).to_json()
    assert edges["peak_bytes"] == 0 and edges["source"] == "process_rss_window_edges"  # never below 0


BUFFER = 192 * MiB


class HoldsBuffer(Workload):
    """Holds a BUFFER-byte tensor (every page touched) and sums a little of it per iteration."""

    name = "holds_buffer"
    summary = "a known resident buffer"
    params = (Param("n", "int", 1, "unused"),)

    def setup(self) -> None:
        self.buffer = torch.ones(BUFFER, dtype=torch.uint8)

    def run(self) -> None:
        self.total = int(self.buffer[:4096].sum())

    def work(self) -> Work:
        return Work("byte", 4096.0)

    def verify(self) -> Verification:
        return Verification(0.0 if self.total == 4096 else 1.0, 1e-6)

    def teardown(self) -> None:
        del self.buffer


@pytest.mark.parametrize("monitored", [True, False])
def test_cpu_peak_is_the_cases_own_buffer_not_the_process(fast_timing, monitored):
    cpu = cpu_device()
    if monitored:
        with Monitor([ProcessMemory()], 0.002) as monitor:
            outcome = lifecycle.measure_round(HoldsBuffer, {"n": 1}, cpu, fast_timing, monitor=monitor)
    else:
        outcome = lifecycle.measure_round(HoldsBuffer, {"n": 1}, cpu, fast_timing)
    assert outcome.status == "ok", outcome.error
    assert outcome.memory is not None
    memory = outcome.memory.to_json()
    assert memory["source"] == ("process_rss_sampled" if monitored else "process_rss_window_edges")
    assert memory["scope"] == "timed window"
    assert BUFFER * 0.95 <= memory["peak_bytes"] <= BUFFER + 32 * MiB
    # the process (python, torch, pytest) holds far more: kept beside it, not in it
    assert memory["process_peak_bytes"] == memory["peak_bytes"] + memory["baseline_bytes"]
    assert memory["baseline_bytes"] > 50 * MiB
