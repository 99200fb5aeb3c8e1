"""Shared fixtures: a fast timing configuration, a CPU device, and GPU test skipping."""

from __future__ import annotations

import signal

import pytest
import torch

from bench.measure.hardware import cpu_device
from bench.measure.timing import TimingConfig

FAST = TimingConfig(min_time_s=0.01, repeats=2, repeat_time_s=0.002, warmup_max_s=0.02)


def pytest_configure(config: pytest.Config) -> None:
    """A shell starts background jobs with SIGINT ignored, and a child inherits an ignored signal
    through exec: then the tests that press Ctrl-C on a real `wattbench run` would find it ignored
    (the run completes). With a handler here, children start with SIGINT at its default."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fast_timing() -> TimingConfig:
    return FAST


@pytest.fixture
def cpu():
    return cpu_device()


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The workload registry, restored after the test (tests may register extra workloads)."""
    import workloads

    current = dict(workloads.registry())
    monkeypatch.setattr(workloads, "_registry", current)
    return current


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch):
    """Swap pynvml for the simulated NVML (tests/fake_nvml.py); reset NVML and the hardware
    caches before and after, so no state leaks between tests. Yields the fake's state."""
    import sys

    from bench.device.nvidia import nvml
    from bench.measure import hardware
    from tests.fake_nvml import FakeNvmlState, make_module

    state = FakeNvmlState()
    nvml.reset()
    hardware.nvml_inventory.cache_clear()
    monkeypatch.setitem(sys.modules, "pynvml", make_module(state))
    yield state
    nvml.reset()
    hardware.nvml_inventory.cache_clear()


@pytest.fixture
def without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing matplotlib fails, as on a machine without the `plot` extra."""
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
