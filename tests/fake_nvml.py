"""A simulated NVML: a module object with the pynvml names wattbench uses.

It lives in tests/ only: nothing in bench/ can import it, so a report can never show simulated
numbers as real. Errors follow pynvml: `NVMLError(value)` with the NVML_ERROR_* codes.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_UNKNOWN = 999

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML error {self.value}")


@dataclass
class FakeGpu:
    uuid: str = "GPU-11111111-2222-3333-4444-555555555555"
    name: str = "NVIDIA H100 80GB HBM3"
    bus_id: str = "00000000:18:00.0"
    memory_total: int = 80 * 2**30
    power_limit_mw: int = 700_000
    unsupported: set[str] = field(default_factory=set)  # function names that raise NotSupported


@dataclass
class FakeNvmlState:
    gpus: list[FakeGpu] = field(default_factory=lambda: [FakeGpu()])
    driver: str = "560.35.03"
    cuda_version: int = 12060
    init_error: int | None = None
    init_calls: int = 0
    shutdown_calls: int = 0


def make_module(state: FakeNvmlState) -> types.ModuleType:
    """A fresh module object behaving like pynvml over `state`."""
    mod = types.ModuleType("pynvml")
    mod.__dict__.update({k: v for k, v in globals().items() if k.startswith("NVML_ERROR_")})
    mod.NVMLError = NVMLError
    mod.state = state
    initialised = {"on": False}

    def check() -> None:
        if not initialised["on"]:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def gpu_call(fn_name: str, getter):
        def call(handle: FakeGpu, *args: Any) -> Any:
            check()
            if fn_name in handle.unsupported:
                raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
            return getter(handle, *args)

        call.__name__ = fn_name
        return call

    def nvmlInit() -> None:
        state.init_calls += 1
        if state.init_error is not None:
            raise NVMLError(state.init_error)
        initialised["on"] = True

    def nvmlShutdown() -> None:
        state.shutdown_calls += 1
        initialised["on"] = False

    def nvmlSystemGetDriverVersion() -> str:
        check()
        return state.driver

    def nvmlSystemGetCudaDriverVersion_v2() -> int:
        check()
        return state.cuda_version

    def nvmlDeviceGetCount() -> int:
        check()
        return len(state.gpus)

    def nvmlDeviceGetHandleByIndex(index: int) -> FakeGpu:
        check()
        return state.gpus[index]

    mod.nvmlInit = nvmlInit
    mod.nvmlShutdown = nvmlShutdown
    mod.nvmlSystemGetDriverVersion = nvmlSystemGetDriverVersion
    mod.nvmlSystemGetCudaDriverVersion_v2 = nvmlSystemGetCudaDriverVersion_v2
    mod.nvmlDeviceGetCount = nvmlDeviceGetCount
    mod.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex
    mod.nvmlDeviceGetUUID = gpu_call("nvmlDeviceGetUUID", lambda g: g.uuid)
    mod.nvmlDeviceGetName = gpu_call("nvmlDeviceGetName", lambda g: g.name)
    mod.nvmlDeviceGetPciInfo = gpu_call("nvmlDeviceGetPciInfo", lambda g: types.SimpleNamespace(busId=g.bus_id))
    mod.nvmlDeviceGetMemoryInfo = gpu_call(
        "nvmlDeviceGetMemoryInfo", lambda g: types.SimpleNamespace(total=g.memory_total, used=0, free=g.memory_total)
    )
    mod.nvmlDeviceGetEnforcedPowerLimit = gpu_call("nvmlDeviceGetEnforcedPowerLimit", lambda g: g.power_limit_mw)
    return mod
