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
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_UNKNOWN = 999

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
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


NVML_SUCCESS = 0
NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1


class PowerTrace:
    """Power in watts as a function of time.monotonic(), and its exact integral in joules.

    p(t) = base + amp * sin(2*pi*(t - t0) / period): a smooth load whose integral is known
    in closed form, so tests can compare measured energy with the truth.
    """

    def __init__(self, base_w: float = 300.0, amp_w: float = 100.0, period_s: float = 0.4) -> None:
        import math
        import time

        self.base, self.amp, self.period = base_w, amp_w, period_s
        self.t0 = time.monotonic()
        self._math = math

    def watts(self, t: float) -> float:
        return self.base + self.amp * self._math.sin(2 * self._math.pi * (t - self.t0) / self.period)

    def joules(self, t: float) -> float:
        """Exact energy from t0 to t."""
        m = self._math
        w = 2 * m.pi / self.period
        return self.base * (t - self.t0) + self.amp / w * (1 - m.cos(w * (t - self.t0)))


@dataclass
class FakeGpu:
    uuid: str = "GPU-11111111-2222-3333-4444-555555555555"
    name: str = "NVIDIA H100 80GB HBM3"
    bus_id: str = "00000000:18:00.0"
    memory_total: int = 80 * 2**30
    memory_used: int = 20 * 2**30
    power_limit_mw: int = 700_000
    trace: PowerTrace = field(default_factory=PowerTrace)
    counter_period_s: float = 0.001  # how often the energy counter advances
    power_period_s: float = 0.001  # how often the power fields refresh
    power_field_scale: float = 1.0  # != 1 makes the power fields disagree with the counter
    throttle_bits: int = 0
    unsupported: set[str] = field(default_factory=set)  # function names (or field ids) that raise NotSupported
    mig_mode: int | None = None  # NVML_DEVICE_MIG_ENABLE/DISABLE; None: a GPU without MIG (NotSupported)
    mig_devices: list[FakeGpu] = field(default_factory=list)  # its MIG instances (see mig_instance)

    def _quantize(self, t: float, period: float) -> float:
        return self.trace.t0 + ((t - self.trace.t0) // period) * period

    def energy_mj(self) -> int:
        import time

        return int(1000 * self.trace.joules(self._quantize(time.monotonic(), self.counter_period_s))) + 10**9

    def power_mw(self) -> int:
        import time

        t = self._quantize(time.monotonic(), self.power_period_s)
        return int(1000 * self.power_field_scale * self.trace.watts(t))


# What NVML answers 'not supported' for on a MIG instance's handle: power and energy are the GPU's.
MIG_UNSUPPORTED = {
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    NVML_FI_DEV_POWER_INSTANT,
    NVML_FI_DEV_POWER_AVERAGE,
}


def mig_instance(uuid: str, name: str = "NVIDIA H100 80GB HBM3 MIG 1g.10gb") -> FakeGpu:
    """A MIG instance's NVML handle (nvmlDeviceGetMigDeviceHandleByIndex): no power of its own."""
    return FakeGpu(uuid=uuid, name=name, memory_total=10 * 2**30, memory_used=0, unsupported=set(MIG_UNSUPPORTED))


@dataclass
class FakeNvmlState:
    gpus: list[FakeGpu] = field(default_factory=lambda: [FakeGpu()])
    driver: str = "560.35.03"
    cuda_version: int = 12060
    init_error: int | None = None
    init_calls: int = 0
    shutdown_calls: int = 0
    # Functions the driver lacks (an older driver than the package): they raise FUNCTION_NOT_FOUND,
    # as pynvml does when libnvidia-ml.so has no such symbol; e.g. nvmlDeviceGetCurrentClocksEventReasons
    # before R535.
    missing_functions: set[str] = field(default_factory=set)


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
            if fn_name in state.missing_functions:
                raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
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
    mod.nvmlDeviceGetEnforcedPowerLimit = gpu_call("nvmlDeviceGetEnforcedPowerLimit", lambda g: g.power_limit_mw)
    for name in ("NVML_SUCCESS", "NVML_FI_DEV_POWER_AVERAGE", "NVML_FI_DEV_POWER_INSTANT", "NVML_CLOCK_SM",
                 "NVML_CLOCK_MEM", "NVML_TEMPERATURE_GPU"):
        setattr(mod, name, globals()[name])

    def nvmlDeviceGetHandleByUUID(uuid: str) -> FakeGpu:
        check()
        for gpu in state.gpus:
            for device in (gpu, *gpu.mig_devices):  # NVML hands out a MIG instance by its UUID too
                if device.uuid == uuid:
                    return device
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def field_values(g: FakeGpu, field_ids: list[int]) -> list[Any]:
        out = []
        for fid in field_ids:
            ret = NVML_ERROR_NOT_SUPPORTED if fid in g.unsupported else NVML_SUCCESS
            value = types.SimpleNamespace(uiVal=g.power_mw() if ret == NVML_SUCCESS else 0)
            out.append(types.SimpleNamespace(fieldId=fid, nvmlReturn=ret, valueType=NVML_VALUE_TYPE_UNSIGNED_INT, value=value))
        return out

    mod.nvmlDeviceGetHandleByUUID = nvmlDeviceGetHandleByUUID
    mod.nvmlDeviceGetFieldValues = gpu_call("nvmlDeviceGetFieldValues", field_values)
    mod.nvmlDeviceGetTotalEnergyConsumption = gpu_call("nvmlDeviceGetTotalEnergyConsumption", lambda g: g.energy_mj())
    mod.nvmlDeviceGetPowerUsage = gpu_call("nvmlDeviceGetPowerUsage", lambda g: g.power_mw())
    mod.nvmlDeviceGetMemoryInfo = gpu_call(
        "nvmlDeviceGetMemoryInfo", lambda g: types.SimpleNamespace(total=g.memory_total, used=g.memory_used, free=g.memory_total - g.memory_used)
    )
    mod.nvmlDeviceGetClockInfo = gpu_call("nvmlDeviceGetClockInfo", lambda g, kind: 1980 if kind == NVML_CLOCK_SM else 2619)
    mod.nvmlDeviceGetTemperature = gpu_call("nvmlDeviceGetTemperature", lambda g, sensor: 54)
    mod.nvmlDeviceGetUtilizationRates = gpu_call("nvmlDeviceGetUtilizationRates", lambda g: types.SimpleNamespace(gpu=97, memory=40))
    mod.nvmlDeviceGetCurrentClocksEventReasons = gpu_call("nvmlDeviceGetCurrentClocksEventReasons", lambda g: g.throttle_bits)
    mod.nvmlDeviceGetCurrentClocksThrottleReasons = gpu_call("nvmlDeviceGetCurrentClocksThrottleReasons", lambda g: g.throttle_bits)

    def mig_mode(g: FakeGpu) -> list[int]:
        if g.mig_mode is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return [g.mig_mode, g.mig_mode]  # [current, pending]

    def mig_handle(g: FakeGpu, index: int) -> FakeGpu:
        if g.mig_mode != NVML_DEVICE_MIG_ENABLE or index >= len(g.mig_devices):
            raise NVMLError(NVML_ERROR_NOT_FOUND)  # an empty slot
        return g.mig_devices[index]

    mod.nvmlDeviceGetMigMode = gpu_call("nvmlDeviceGetMigMode", mig_mode)
    mod.nvmlDeviceGetMaxMigDeviceCount = gpu_call("nvmlDeviceGetMaxMigDeviceCount", lambda g: 7 if g.mig_mode is not None else 0)
    mod.nvmlDeviceGetMigDeviceHandleByIndex = gpu_call("nvmlDeviceGetMigDeviceHandleByIndex", mig_handle)
    mod.NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE
    mod.NVML_DEVICE_MIG_DISABLE = NVML_DEVICE_MIG_DISABLE
    return mod
