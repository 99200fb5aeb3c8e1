"""NVIDIA Management Library access through nvidia-ml-py (`import pynvml`).

This is the only module that imports pynvml. NVML errors are mapped to our own: a field the GPU
does not support becomes None, NVML missing or failing to initialise becomes `NvmlUnavailable`
with a reason a user can act on, and nothing here lets an NVML error stop a benchmark run.

The operating-point controls at the end (power limits, locked SM clocks) raise `NvmlControlError`
subclasses instead: a sweep must know that a setting did not take. Whether this process may change
settings at all is `may_change_settings`, decided without trying a change.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from bench.monitor.base import (
    SOURCE_NVML_ENERGY,
    SOURCE_NVML_POWER_AVERAGE,
    SOURCE_NVML_POWER_INSTANT,
    PowerSource,
    Reading,
    measure_update_period,
)

__all__ = [
    "MIG_POWER_REASON",
    "GpuControls",
    "NvmlControlError",
    "NvmlError",
    "NvmlGpu",
    "NvmlInventory",
    "NvmlNoPermission",
    "NvmlNotSupported",
    "NvmlOutOfRange",
    "NvmlSource",
    "NvmlUnavailable",
    "PowerLimits",
    "controls_by_uuid",
    "gpu_controls",
    "inventory",
    "is_mig_uuid",
    "lock_sm_clocks",
    "may_change_settings",
    "power_limits",
    "reset",
    "reset_sm_clocks",
    "set_power_limit",
    "sm_clock_mhz",
    "supported_sm_clocks",
]


class NvmlError(Exception):
    """An NVML call failed for a reason other than 'not supported'."""


class NvmlUnavailable(NvmlError):
    """NVML cannot be used on this machine; the message says why (no package, no driver, ...)."""


@dataclass(frozen=True)
class NvmlGpu:
    """Identity and static limits of one GPU as NVML sees it (NVML index order, not CUDA's)."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str | None
    memory_bytes: int | None
    power_limit_w: float | None
    mig_mode: bool | None = None  # MIG enabled (None: the GPU or driver does not say)
    mig_uuids: tuple[str, ...] = ()  # its MIG instances NVML lists ("MIG-..."), when enabled


# Why a MIG instance has no power source: NVML's power and energy are the physical GPU's, shared
# by all its instances; none of it can be attributed to one.
MIG_POWER_REASON = "a MIG instance: NVML reports power per physical GPU, not per instance"


def is_mig_uuid(uuid: str | None) -> bool:
    """True for a MIG instance's UUID as NVML and CUDA_VISIBLE_DEVICES write it ("MIG-...")."""
    return bool(uuid) and str(uuid).lower().startswith("mig-")


@dataclass(frozen=True)
class NvmlInventory:
    driver_version: str
    cuda_driver_version: str | None
    gpus: tuple[NvmlGpu, ...]

    def by_uuid(self, uuid: str | None) -> NvmlGpu | None:
        """Find a GPU by UUID, with or without NVML's 'GPU-' prefix (torch reports it without)."""
        if not uuid:
            return None
        wanted = uuid.lower().removeprefix("gpu-")
        for gpu in self.gpus:
            if gpu.uuid.lower().removeprefix("gpu-") == wanted:
                return gpu
        return None

    def mig_parent(self, uuid: str | None) -> NvmlGpu | None:
        """The physical GPU a MIG instance belongs to, by the instance's UUID with or without its
        'MIG-' prefix (torch reports it without); None when no GPU lists that instance."""
        if not uuid:
            return None
        wanted = uuid.lower().removeprefix("mig-")
        for gpu in self.gpus:
            if any(m.lower().removeprefix("mig-") == wanted for m in gpu.mig_uuids):
                return gpu
        return None


_lock = threading.Lock()
_initialised = False


def reset() -> None:
    """Shut NVML down if we started it; tests call this to start from a clean state."""
    global _initialised
    with _lock:
        if _initialised:
            try:
                _pynvml().nvmlShutdown()
            except Exception:  # shutting down is best effort
                pass
        _initialised = False


def _pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from exc
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ensure_init() -> ModuleType:
    """Initialise NVML once per process; map failures to NvmlUnavailable with the reason."""
    global _initialised
    nvml = _pynvml()
    with _lock:
        if not _initialised:
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                raise NvmlUnavailable(f"NVML failed to initialise: {_text(exc)}") from exc
            except OSError as exc:  # a broken libnvidia-ml.so can surface as OSError
                raise NvmlUnavailable(f"NVML library could not be loaded: {exc}") from exc
            _initialised = True
    return nvml


@functools.cache
def _quiet_codes(nvml: ModuleType) -> frozenset[int]:
    """NVML error codes that mean 'this query is not available here' (looked up once)."""
    return frozenset(
        getattr(nvml, name)
        for name in ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_NO_PERMISSION")
        if hasattr(nvml, name)
    )


def optional(nvml: ModuleType, fn: Callable[..., Any], *args: Any) -> Any:
    """Call an NVML function; None where the GPU or driver does not support the query.

    Any other NVML error is raised as NvmlError so that callers decide; 'not supported',
    'function not found' (older driver) and 'no permission' are expected and become None.
    """
    try:
        return fn(*args)
    except nvml.NVMLError as exc:
        if getattr(exc, "value", None) in _quiet_codes(nvml):
            return None
        raise NvmlError(f"{getattr(fn, '__name__', fn)}: {_text(exc)}") from exc


def inventory() -> NvmlInventory:
    """Driver version and every GPU NVML can see. Raises NvmlUnavailable with the reason."""
    nvml = _ensure_init()
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda_version = optional(nvml, nvml.nvmlSystemGetCudaDriverVersion_v2) if hasattr(
            nvml, "nvmlSystemGetCudaDriverVersion_v2"
        ) else None
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid, name = _text(nvml.nvmlDeviceGetUUID(handle)), _text(nvml.nvmlDeviceGetName(handle))
            except nvml.NVMLError:
                continue  # a GPU this process may not use (cgroup) or that is lost: skip it, keep the rest
            pci = optional(nvml, nvml.nvmlDeviceGetPciInfo, handle)
            memory = optional(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
            limit_mw = optional(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            mig_mode, mig_uuids = _mig(nvml, handle)
            gpus.append(
                NvmlGpu(
                    index=index,
                    uuid=uuid,
                    name=name,
                    pci_bus_id=_text(pci.busId) if pci is not None else None,
                    memory_bytes=int(memory.total) if memory is not None else None,
                    power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
                    mig_mode=mig_mode,
                    mig_uuids=mig_uuids,
                )
            )
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML query failed: {_text(exc)}") from exc
    except NvmlError as exc:
        raise NvmlUnavailable(str(exc)) from exc
    return NvmlInventory(
        driver_version=driver,
        cuda_driver_version=_cuda_version_text(cuda_version),
        gpus=tuple(gpus),
    )


def _mig(nvml: ModuleType, handle: Any) -> tuple[bool | None, tuple[str, ...]]:
    """Whether MIG is enabled on a GPU and the UUIDs of the instances NVML lists on it.

    Best effort: a driver or GPU without MIG, or a failing query, gives (None, ()) or what was
    read, and never makes the rest of the inventory unavailable."""
    get_mode = getattr(nvml, "nvmlDeviceGetMigMode", None)
    if get_mode is None:
        return None, ()
    try:
        mode = optional(nvml, get_mode, handle)  # [current, pending]
    except NvmlError:
        return None, ()
    if mode is None:
        return None, ()
    enabled = int(mode[0]) == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1)
    if not enabled or not hasattr(nvml, "nvmlDeviceGetMigDeviceHandleByIndex"):
        return enabled, ()
    uuids: list[str] = []
    try:
        count = optional(nvml, nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
    except NvmlError:
        count = 0
    for index in range(int(count)):
        try:  # an empty slot raises NOT_FOUND
            uuids.append(_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index))))
        except nvml.NVMLError:
            continue
    return enabled, tuple(uuids)


def _cuda_version_text(version: int | None) -> str | None:
    """NVML encodes the CUDA driver version as 1000*major + 10*minor (12040 -> '12.4')."""
    if not version:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


# --- live telemetry -------------------------------------------------------------------------

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


def throttle_names(bits: int | None) -> tuple[str, ...]:
    if not bits:
        return ()
    return tuple(name for bit, name in THROTTLE_BITS.items() if bits & bit)


def _field_value(nvml: ModuleType, handle: Any, field_id: int) -> float | None:
    """One NVML field value as a number; None when the field is not supported or failed."""
    try:
        (value,) = nvml.nvmlDeviceGetFieldValues(handle, [field_id])
    except nvml.NVMLError:
        return None
    if value.nvmlReturn != getattr(nvml, "NVML_SUCCESS", 0):
        return None
    return float(getattr(value.value, _VALUE_MEMBER.get(int(value.valueType), "uiVal")))

SOURCE_NVML_POWER_USAGE = "nvml_power_usage"


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
        nvml = self.nvml = _ensure_init()
        try:
            self.handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        except nvml.NVMLError as exc:
            raise NvmlUnavailable(f"no NVML device with UUID {uuid}: {_text(exc)}") from exc
        self.counter_source = SOURCE_NVML_ENERGY if self._energy_j() is not None else None
        # Each reader takes the list its NVML errors go to (None: dropped, as while probing).
        self._power_reader: Callable[[list[str] | None], float | None] | None = None
        readers: tuple[tuple[str, Callable[[list[str] | None], float | None]], ...] = (
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
            fn = getattr(nvml, name, None)
            if fn is None:
                continue
            try:
                fn(self.handle)
            except nvml.NVMLError as exc:
                code = getattr(exc, "value", None)
                if code == not_found:
                    continue
                if code in _quiet_codes(nvml):
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


# --- operating points: power limits and locked clocks -----------------------------------------
#
# NVML's setters (nvmlDeviceSetPowerManagementLimit, nvmlDeviceSetGpuLockedClocks,
# nvmlDeviceResetGpuLockedClocks) need root: a non-admin caller gets NVML_ERROR_NO_PERMISSION (4);
# a value the device does not take gives NVML_ERROR_INVALID_ARGUMENT (2); a GPU without the
# feature gives NVML_ERROR_NOT_SUPPORTED (3). Each is mapped to one of the exceptions below, whose
# one-line message names the GPU and the call.


class NvmlControlError(NvmlError):
    """Reading or changing a GPU's power limit or clocks failed; the message names the GPU and call."""


class NvmlNoPermission(NvmlControlError):
    """NVML refused a change: it needs root (or CAP_SYS_ADMIN)."""


class NvmlOutOfRange(NvmlControlError):
    """The value is outside what the GPU accepts; the message lists the valid range."""


class NvmlNotSupported(NvmlControlError):
    """The GPU or driver does not have this control."""


ADMIN_NEEDED = "run as root (sudo) or grant CAP_SYS_ADMIN"
CAP_SYS_ADMIN = 21  # bit in the capability sets of /proc/PID/status
PROC_SELF_STATUS = "/proc/self/status"


@dataclass(frozen=True)
class PowerLimits:
    """A GPU's power limits in watts; None where the GPU or driver does not report one.

    current_w: the limit set (nvmlDeviceGetPowerManagementLimit); enforced_w: the one the driver
    applies after every limiter (nvmlDeviceGetEnforcedPowerLimit, can be lower than current_w);
    default_w: the board's default; min_w, max_w: what nvmlDeviceSetPowerManagementLimit accepts.
    """

    current_w: float | None
    enforced_w: float | None
    default_w: float | None
    min_w: float | None
    max_w: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "current_w": self.current_w,
            "enforced_w": self.enforced_w,
            "default_w": self.default_w,
            "min_w": self.min_w,
            "max_w": self.max_w,
        }

    def range_text(self) -> str | None:
        """'valid: 200-700 W', or None where the constraints are unknown."""
        if self.min_w is None or self.max_w is None:
            return None
        return f"valid: {self.min_w:g}-{self.max_w:g} W"


@dataclass(frozen=True)
class GpuControls:
    """What `wattbench info` shows of one GPU's operating point: its power limits and the SM clocks
    it can be locked to (MHz, highest first; empty where the GPU does not list them)."""

    uuid: str
    limits: PowerLimits
    sm_clocks_mhz: tuple[int, ...]

    def clock_range_text(self) -> str:
        """'1980..210 MHz (119 steps)', or '-' where the GPU lists no clocks."""
        clocks = self.sm_clocks_mhz
        if not clocks:
            return "-"
        return f"{clocks[0]}..{clocks[-1]} MHz ({len(clocks)} steps)"

    def to_dict(self) -> dict[str, Any]:
        clocks = self.sm_clocks_mhz
        return {
            "power_limits": self.limits.to_dict(),
            "sm_clocks_mhz": {"max": clocks[0], "min": clocks[-1], "steps": len(clocks)} if clocks else None,
        }


def _w(mw: Any) -> float | None:
    return mw / 1000.0 if mw is not None else None


def _handle(nvml: ModuleType, uuid: str) -> Any:
    """The NVML handle of a physical GPU by UUID, with or without the 'GPU-' prefix (torch's
    form has none). A MIG instance cannot be controlled: its limits and clocks are its GPU's."""
    if is_mig_uuid(uuid):
        raise NvmlNotSupported(f"GPU {uuid}: power limits and clocks belong to the physical GPU, not a MIG instance")
    full = uuid if uuid.lower().startswith("gpu-") else f"GPU-{uuid}"
    try:
        return nvml.nvmlDeviceGetHandleByUUID(full)
    except nvml.NVMLError as exc:
        raise NvmlControlError(f"GPU {uuid}: nvmlDeviceGetHandleByUUID: {_text(exc)}") from exc


def _code(nvml: ModuleType, name: str) -> int | None:
    return getattr(nvml, name, None)


def _control_error(nvml: ModuleType, exc: BaseException, uuid: str, call: str, range_text: str | None = None) -> NvmlControlError:
    """Our exception for an NVML error raised by `call` on GPU `uuid`, with a one-line message."""
    code = getattr(exc, "value", None)
    where = f"GPU {uuid}: {call}"
    if code is not None and code == _code(nvml, "NVML_ERROR_NO_PERMISSION"):
        return NvmlNoPermission(f"{where}: no permission ({ADMIN_NEEDED})")
    if code is not None and code == _code(nvml, "NVML_ERROR_INVALID_ARGUMENT"):
        return NvmlOutOfRange(f"{where}: value out of range" + (f" ({range_text})" if range_text else ""))
    if code is not None and code in (_code(nvml, "NVML_ERROR_NOT_SUPPORTED"), _code(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND")):
        return NvmlNotSupported(f"{where}: not supported on this GPU or driver")
    return NvmlControlError(f"{where}: {_text(exc)}")


def _read(nvml: ModuleType, uuid: str, name: str, handle: Any, *args: Any) -> Any:
    """A getter's value; None where not supported (or not permitted); other errors raised as
    NvmlControlError naming the GPU and the call."""
    fn = getattr(nvml, name, None)
    if fn is None:
        return None
    try:
        return optional(nvml, fn, handle, *args)
    except NvmlError as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise _control_error(nvml, cause, uuid, name) from exc


def _change(nvml: ModuleType, uuid: str, name: str, *args: Any, range_text: str | None = None) -> None:
    """Call an NVML setter; every error becomes one of our control exceptions."""
    fn = getattr(nvml, name, None)
    if fn is None:  # an nvidia-ml-py too old to have the call
        raise NvmlNotSupported(f"GPU {uuid}: {name}: not in this nvidia-ml-py")
    try:
        fn(*args)
    except nvml.NVMLError as exc:
        raise _control_error(nvml, exc, uuid, name, range_text) from exc


def power_limits(uuid: str) -> PowerLimits:
    """The GPU's current, enforced, default, minimum and maximum power limit in watts."""
    nvml = _ensure_init()
    handle = _handle(nvml, uuid)
    constraints = _read(nvml, uuid, "nvmlDeviceGetPowerManagementLimitConstraints", handle)
    low, high = (constraints[0], constraints[1]) if constraints else (None, None)
    return PowerLimits(
        current_w=_w(_read(nvml, uuid, "nvmlDeviceGetPowerManagementLimit", handle)),
        enforced_w=_w(_read(nvml, uuid, "nvmlDeviceGetEnforcedPowerLimit", handle)),
        default_w=_w(_read(nvml, uuid, "nvmlDeviceGetPowerManagementDefaultLimit", handle)),
        min_w=_w(low),
        max_w=_w(high),
    )


def supported_sm_clocks(uuid: str) -> list[int]:
    """The SM (graphics) clocks in MHz the GPU lists at its highest memory clock, highest first;
    [] where the GPU does not list them."""
    nvml = _ensure_init()
    handle = _handle(nvml, uuid)
    memory = _read(nvml, uuid, "nvmlDeviceGetSupportedMemoryClocks", handle)
    if not memory:
        return []
    graphics = _read(nvml, uuid, "nvmlDeviceGetSupportedGraphicsClocks", handle, max(int(m) for m in memory))
    return sorted({int(c) for c in graphics or ()}, reverse=True)


def sm_clock_mhz(uuid: str) -> int | None:
    """The GPU's SM clock now, in MHz; None where not reported."""
    nvml = _ensure_init()
    value = _read(nvml, uuid, "nvmlDeviceGetClockInfo", _handle(nvml, uuid), nvml.NVML_CLOCK_SM)
    return int(value) if value is not None else None


def gpu_controls(uuid: str) -> GpuControls:
    """Power limits and lockable SM clocks of one GPU, read without changing anything."""
    return GpuControls(uuid=uuid, limits=power_limits(uuid), sm_clocks_mhz=tuple(supported_sm_clocks(uuid)))


def controls_by_uuid(uuids: Iterable[str]) -> dict[str, GpuControls | str]:
    """Each GPU's controls (`gpu_controls`), or the one line why they cannot be read."""
    found: dict[str, GpuControls | str] = {}
    for uuid in uuids:
        try:
            found[uuid] = gpu_controls(uuid)
        except NvmlError as exc:
            found[uuid] = str(exc)
    return found


def set_power_limit(uuid: str, watts: float) -> None:
    """Set the GPU's power limit (NVML takes milliwatts). A value outside the GPU's constraints
    raises NvmlOutOfRange listing 'valid: MIN-MAX W' before NVML is asked."""
    nvml = _ensure_init()
    handle = _handle(nvml, uuid)
    constraints = _read(nvml, uuid, "nvmlDeviceGetPowerManagementLimitConstraints", handle)
    milliwatts = int(round(float(watts) * 1000))
    range_text = None
    if constraints:
        low, high = int(constraints[0]), int(constraints[1])
        range_text = f"valid: {low / 1000:g}-{high / 1000:g} W"
        if not low <= milliwatts <= high:
            raise NvmlOutOfRange(f"GPU {uuid}: power limit {float(watts):g} W is out of range ({range_text})")
    _change(nvml, uuid, "nvmlDeviceSetPowerManagementLimit", handle, milliwatts, range_text=range_text)


def lock_sm_clocks(uuid: str, mhz: int) -> None:
    """Lock the GPU's SM clocks to `mhz` (min = max). A value outside the clocks the GPU lists
    raises NvmlOutOfRange listing 'valid: MIN-MAX MHz'. NVML cannot read an existing lock back:
    undoing this means `reset_sm_clocks`."""
    nvml = _ensure_init()
    handle = _handle(nvml, uuid)
    clocks = supported_sm_clocks(uuid)
    range_text = f"valid: {clocks[-1]}-{clocks[0]} MHz" if clocks else None
    if clocks and not clocks[-1] <= int(mhz) <= clocks[0]:
        raise NvmlOutOfRange(f"GPU {uuid}: SM clock {int(mhz)} MHz is out of range ({range_text})")
    _change(nvml, uuid, "nvmlDeviceSetGpuLockedClocks", handle, int(mhz), int(mhz), range_text=range_text)


def reset_sm_clocks(uuid: str) -> None:
    """Undo any SM clock lock: the GPU picks its clocks again (nvmlDeviceResetGpuLockedClocks)."""
    nvml = _ensure_init()
    _change(nvml, uuid, "nvmlDeviceResetGpuLockedClocks", _handle(nvml, uuid))


def effective_uid() -> int | None:
    """This process's effective user id; None where the OS has none (tests replace this)."""
    geteuid = getattr(os, "geteuid", None)
    return geteuid() if geteuid is not None else None


def proc_status_path() -> str:
    """Where this process's capability sets are read (tests replace this)."""
    return PROC_SELF_STATUS


def effective_capabilities() -> int | None:
    """The CapEff bit mask from /proc/self/status; None where it cannot be read (not Linux)."""
    try:
        with open(proc_status_path(), encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split(":", 1)[1].strip(), 16)
    except (OSError, ValueError):
        return None
    return None


def may_change_settings() -> tuple[bool, str]:
    """Whether this process may change power limits and clocks, and why; decided from the
    process's user and capabilities alone, never by trying a change (`info` runs on shared GPU
    machines).

    NVML's setters need CAP_SYS_ADMIN as the host sees it (the driver checks the capability, not
    the user id): bit 21 of CapEff in /proc/self/status, outside a user namespace. Root in a
    container without SYS_ADMIN, or in a rootless one, is refused by the driver, so here too. nvidia-smi's "-acp UNRESTRICTED" opens only the applications clocks to
    other users, not power limits or locked clocks; wattbench does not rely on it.
    """
    caps = effective_capabilities()
    if caps is None:  # no /proc/self/status (not Linux): only the user id can say
        return (True, "root") if effective_uid() == 0 else (False, f"not root and no CAP_SYS_ADMIN: {ADMIN_NEEDED}")
    if not caps >> CAP_SYS_ADMIN & 1:
        if effective_uid() == 0:  # e.g. root in a container started without --cap-add SYS_ADMIN
            return False, f"root, but without CAP_SYS_ADMIN (a container needs --cap-add SYS_ADMIN): {ADMIN_NEEDED}"
        return False, f"not root and no CAP_SYS_ADMIN: {ADMIN_NEEDED}"
    if in_user_namespace():
        return False, ("CAP_SYS_ADMIN only inside a user namespace (a rootless container); the driver checks it "
                       f"on the host: {ADMIN_NEEDED}")
    return True, "root" if effective_uid() == 0 else "CAP_SYS_ADMIN"


def uid_map_path() -> str:
    return "/proc/self/uid_map"


def in_user_namespace() -> bool:
    """True when this process's user ids are a slice of the host's (/proc/self/uid_map maps less
    than the whole range): its capabilities then hold in that namespace only."""
    try:
        with open(uid_map_path(), encoding="ascii") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields[:3] != ["0", "0", "4294967295"]
