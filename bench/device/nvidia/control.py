"""Operating points of an NVIDIA GPU: power limits and locked SM clocks through NVML.

NVML's setters (nvmlDeviceSetPowerManagementLimit, nvmlDeviceSetGpuLockedClocks,
nvmlDeviceResetGpuLockedClocks) need root: a non-admin caller gets NVML_ERROR_NO_PERMISSION (4);
a value the device does not take gives NVML_ERROR_INVALID_ARGUMENT (2); a GPU without the
feature gives NVML_ERROR_NOT_SUPPORTED (3). Each is mapped to one of the `NvmlControlError`
subclasses (bench.device.nvidia.nvml), whose one-line message names the GPU and the call: a sweep
must know that a setting did not take. Whether this process may change settings at all is
`bench.device.nvidia.permissions.may_change_settings`, decided without trying a change.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from bench.device.base import PowerLimits
from bench.device.nvidia.gpus import is_mig_uuid
from bench.device.nvidia.nvml import (
    NvmlControlError,
    NvmlError,
    NvmlNoPermission,
    NvmlNotSupported,
    NvmlOutOfRange,
    ensure_init,
    optional,
    text,
)
from bench.device.nvidia.permissions import ADMIN_NEEDED

__all__ = ["lock_sm_clocks", "power_limits", "reset_sm_clocks", "set_power_limit", "sm_clock_mhz", "supported_sm_clocks"]


def _w(mw: Any) -> float | None:
    return mw / 1000.0 if mw is not None else None


def _handle(nvml: ModuleType, uuid: str) -> object:
    """The NVML handle of a physical GPU by UUID, with or without the 'GPU-' prefix (torch's
    form has none). A MIG instance cannot be controlled: its limits and clocks are its GPU's."""
    if is_mig_uuid(uuid):
        raise NvmlNotSupported(f"GPU {uuid}: power limits and clocks belong to the physical GPU, not a MIG instance")
    full = uuid if uuid.lower().startswith("gpu-") else f"GPU-{uuid}"
    try:
        handle: object = nvml.nvmlDeviceGetHandleByUUID(full)
    except nvml.NVMLError as exc:
        raise NvmlControlError(f"GPU {uuid}: nvmlDeviceGetHandleByUUID: {text(exc)}") from exc
    return handle


def _code(nvml: ModuleType, name: str) -> int | None:
    code: int | None = getattr(nvml, name, None)
    return code


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
    return NvmlControlError(f"{where}: {text(exc)}")


def _read(nvml: ModuleType, uuid: str, name: str, handle: object, *args: Any) -> Any:
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
    """The GPU's power limits in watts: current (nvmlDeviceGetPowerManagementLimit), enforced
    (nvmlDeviceGetEnforcedPowerLimit, after every limiter), default, and the minimum and maximum
    nvmlDeviceSetPowerManagementLimit accepts."""
    nvml = ensure_init()
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
    nvml = ensure_init()
    handle = _handle(nvml, uuid)
    memory = _read(nvml, uuid, "nvmlDeviceGetSupportedMemoryClocks", handle)
    if not memory:
        return []
    graphics = _read(nvml, uuid, "nvmlDeviceGetSupportedGraphicsClocks", handle, max(int(m) for m in memory))
    return sorted({int(c) for c in graphics or ()}, reverse=True)


def sm_clock_mhz(uuid: str) -> int | None:
    """The GPU's SM clock now, in MHz; None where not reported."""
    nvml = ensure_init()
    value = _read(nvml, uuid, "nvmlDeviceGetClockInfo", _handle(nvml, uuid), nvml.NVML_CLOCK_SM)
    return int(value) if value is not None else None


def set_power_limit(uuid: str, watts: float) -> None:
    """Set the GPU's power limit (NVML takes milliwatts). A value outside the GPU's constraints
    raises NvmlOutOfRange listing 'valid: MIN-MAX W' before NVML is asked."""
    nvml = ensure_init()
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
    nvml = ensure_init()
    handle = _handle(nvml, uuid)
    clocks = supported_sm_clocks(uuid)
    range_text = f"valid: {clocks[-1]}-{clocks[0]} MHz" if clocks else None
    if clocks and not clocks[-1] <= int(mhz) <= clocks[0]:
        raise NvmlOutOfRange(f"GPU {uuid}: SM clock {int(mhz)} MHz is out of range ({range_text})")
    _change(nvml, uuid, "nvmlDeviceSetGpuLockedClocks", handle, int(mhz), int(mhz), range_text=range_text)


def reset_sm_clocks(uuid: str) -> None:
    """Undo any SM clock lock: the GPU picks its clocks again (nvmlDeviceResetGpuLockedClocks)."""
    nvml = ensure_init()
    _change(nvml, uuid, "nvmlDeviceResetGpuLockedClocks", _handle(nvml, uuid))
