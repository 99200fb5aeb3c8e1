"""Live telemetry of one NVIDIA GPU: `NvmlSource`, the monitor's power source for it.

Energy from NVML's total-energy counter (mJ, Volta and newer); power from the instantaneous field
where the driver has it, else the averaged field, else nvmlDeviceGetPowerUsage; then memory used,
utilisation, SM and memory clocks, temperature and the clock event (throttle) reasons. An NVML
error in a read leaves its field None and is recorded in the reading's `error`: a read never raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from bench.device.nvidia.gpus import MIG_POWER_REASON, is_mig_uuid
from bench.device.nvidia.nvml import NvmlError, NvmlUnavailable, ensure_init, optional, quiet_codes, text
from bench.monitor.base import (
    SOURCE_NVML_ENERGY,
    SOURCE_NVML_POWER_AVERAGE,
    SOURCE_NVML_POWER_INSTANT,
    PowerSource,
    Reading,
    measure_update_period,
)

__all__ = ["REASONS_FUNCTIONS", "SOURCE_NVML_POWER_USAGE", "THROTTLE_BITS", "NvmlSource", "throttle_names"]

# Clock event (throttle) reasons that mean the GPU ran slower than it could: our flag names.
THROTTLE_BITS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
}
# Newest first: the clock event reasons call (driver R535+) and the one it replaced.
REASONS_FUNCTIONS = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}

SOURCE_NVML_POWER_USAGE = "nvml_power_usage"

# A power reader takes the list its NVML errors go to (None: dropped, as while probing).
PowerReader = Callable[[list[str] | None], float | None]


def throttle_names(bits: int | None) -> tuple[str, ...]:
    if not bits:
        return ()
    return tuple(name for bit, name in THROTTLE_BITS.items() if bits & bit)


def _field_value(nvml: ModuleType, handle: object, field_id: int) -> float | None:
    """One NVML field value as a number; None when the field is not supported or failed."""
    try:
        (value,) = nvml.nvmlDeviceGetFieldValues(handle, [field_id])
    except nvml.NVMLError:
        return None
    if value.nvmlReturn != getattr(nvml, "NVML_SUCCESS", 0):
        return None
    return float(getattr(value.value, _VALUE_MEMBER.get(int(value.valueType), "uiVal")))


class NvmlSource(PowerSource):
    """Power, energy and telemetry of one GPU through NVML.

    Power comes from the instantaneous field (NVML_FI_DEV_POWER_INSTANT) where the driver has
    it; else the averaged field; else nvmlDeviceGetPowerUsage, which on Ampere (but GA100) and
    newer is a one-second average. `power_source` says which one `power_w` is.
    """

    def __init__(self, uuid: str, device_id: str, probe: bool = True) -> None:
        self.device_id = device_id
        if is_mig_uuid(uuid):  # NVML would hand out the instance, whose power reads 'not supported'
            raise NvmlUnavailable(MIG_POWER_REASON)
        nvml = self.nvml = ensure_init()
        try:
            self.handle: object = nvml.nvmlDeviceGetHandleByUUID(uuid)
        except nvml.NVMLError as exc:
            raise NvmlUnavailable(f"no NVML device with UUID {uuid}: {text(exc)}") from exc
        self.counter_source = SOURCE_NVML_ENERGY if self._energy_j() is not None else None
        self._power_reader: PowerReader | None = None
        readers: tuple[tuple[str, PowerReader], ...] = (
            (SOURCE_NVML_POWER_INSTANT, lambda _: self._field_w(getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None))),
            (SOURCE_NVML_POWER_AVERAGE, lambda _: self._field_w(getattr(nvml, "NVML_FI_DEV_POWER_AVERAGE", None))),
            (SOURCE_NVML_POWER_USAGE, self._power_usage_w),
        )
        for label, reader in readers:
            if reader(None) is not None:
                self.power_source, self._power_reader = label, reader
                break
        self._reasons_fn = self._probe_reasons()
        if probe:
            if self.counter_source:
                self.counter_update_s = measure_update_period(self._energy_j)
            if self._power_reader:
                power_reader = self._power_reader
                self.power_update_s = measure_update_period(lambda: power_reader(None))

    def _probe_reasons(self) -> Callable[..., Any] | None:
        """The clock event (throttle) reasons call this driver has, tried once here.

        nvidia-ml-py always has both names, but drivers before R535 lack the newer symbol: its
        call raises FUNCTION_NOT_FOUND, which would read as 'not supported' at every sample, so
        the older call is tried next. 'Not supported' or 'no permission' means the GPU does not
        report reasons (the older call is the same query): None. Any other error keeps the call,
        whose errors then show in the readings."""
        nvml = self.nvml
        not_found = getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", None)
        for name in REASONS_FUNCTIONS:
            fn: Callable[..., Any] | None = getattr(nvml, name, None)
            if fn is None:
                continue
            try:
                fn(self.handle)
            except nvml.NVMLError as exc:
                code = getattr(exc, "value", None)
                if code == not_found:
                    continue
                if code in quiet_codes(nvml):
                    return None
            return fn
        return None

    def describe(self) -> dict[str, Any]:
        reasons = getattr(self._reasons_fn, "__name__", None) if self._reasons_fn else None
        return {**super().describe(), "throttle_reasons": reasons}

    def _energy_j(self, errors: list[str] | None = None) -> float | None:
        mj = self._get(errors, self.nvml.nvmlDeviceGetTotalEnergyConsumption)
        return mj * 1e-3 if mj is not None else None

    def _field_w(self, field_id: int | None) -> float | None:
        if field_id is None or not hasattr(self.nvml, "nvmlDeviceGetFieldValues"):
            return None
        mw = _field_value(self.nvml, self.handle, field_id)
        return mw * 1e-3 if mw else None  # 0 mW means the field is not populated

    def _power_usage_w(self, errors: list[str] | None = None) -> float | None:
        mw = self._get(errors, self.nvml.nvmlDeviceGetPowerUsage)
        return mw * 1e-3 if mw is not None else None

    def _get(self, errors: list[str] | None, fn: Callable[..., Any] | None, *args: Any) -> Any:
        """`fn(handle, *args)`; None where unsupported or failed. A failure's message goes to
        `errors`, the list of the read in progress: a source is read from two threads at once
        (the sampler and a window edge), so it keeps no error state of its own."""
        if fn is None:
            return None
        try:
            return optional(self.nvml, fn, self.handle, *args)
        except NvmlError as exc:
            if errors is not None:
                errors.append(str(exc))
            return None

    def read(self) -> Reading:
        """Energy and power first, right after the timestamp they belong to; then telemetry.
        An NVML error other than 'not supported' leaves its field None and is recorded in
        `error` (the window then flags sampling_gaps)."""
        nvml = self.nvml
        errors: list[str] = []  # this read's own: another thread may be inside read() too
        t = time.monotonic()
        energy = self._energy_j(errors) if self.counter_source else None
        power = self._power_reader(errors) if self._power_reader else None
        memory = self._get(errors, nvml.nvmlDeviceGetMemoryInfo)
        util = self._get(errors, nvml.nvmlDeviceGetUtilizationRates)
        sm_clock = self._get(errors, nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM)
        memory_clock = self._get(errors, nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_MEM)
        temperature = self._get(errors, nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
        throttle = throttle_names(self._get(errors, self._reasons_fn))
        return Reading(
            t_s=t,
            energy_j=energy,
            power_w=power,
            error="nvml: " + "; ".join(errors) if errors else None,
            memory_used_bytes=int(memory.used) if memory is not None else None,
            sm_clock_mhz=sm_clock,
            memory_clock_mhz=memory_clock,
            temperature_c=temperature,
            utilization_pct=int(util.gpu) if util is not None else None,
            throttle_reasons=throttle,
        )
