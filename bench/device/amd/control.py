"""Operating points of an AMD GPU through AMD SMI: the power cap (read and set) and the GFX clock.

amdsmi_get_power_cap_info and amdsmi_set_power_cap(processor_handle, sensor_ind, cap) speak
microwatts; wattbench speaks watts. Setting the cap needs root: AMD SMI answers
AMDSMI_STATUS_NO_PERM otherwise (AmdSmiNoPermission here); a value the GPU does not take gives
AMDSMI_STATUS_INVAL (AmdSmiOutOfRange).

The clock lever is performance determinism (amdsmi_set_gpu_perf_determinism_mode(handle,
clkvalue)): the GFX clock held at or under a ceiling in MHz, so throughput does not wander with
power and temperature. AMD documents it for MI200-series GPUs; MI300-series ones may refuse it,
so on MI300 and MI350 (gfx94x, gfx95x) no clocks are listed and a clock sweep is refused up
front; where the driver refuses it anyway, AMDSMI_STATUS_NOT_SUPPORTED is one line "not supported
on this device". It takes any whole MHz between the GFX clock's minimum and maximum
(amdsmi_get_clock_info), so `supported_sm_clocks` lists every one of them. Setting the performance level back to AUTO (amdsmi_set_gpu_perf_level)
leaves the mode: that is the reset, and what a sweep's restore does.
Whether this process may change settings is `may_change_settings`, decided without trying.
"""

from __future__ import annotations

import os
from typing import Any

from bench.device.amd.gpus import microwatts_to_watts
from bench.device.amd.smi import (
    STATUS_INVAL,
    STATUS_NO_PERM,
    STATUS_NOT_SUPPORTED,
    STATUS_NOT_YET_IMPLEMENTED,
    AmdSmiControlError,
    AmdSmiError,
    AmdSmiNoPermission,
    AmdSmiNotSupported,
    AmdSmiOutOfRange,
    AmdSmiUnavailable,
    ensure_init,
    error_code,
    find_handle,
    message,
    number,
    optional,
)
from bench.device.base import PowerLimits

__all__ = [
    "ADMIN_NEEDED",
    "lock_sm_clocks",
    "may_change_settings",
    "power_limits",
    "reset_sm_clocks",
    "set_power_limit",
    "sm_clock_mhz",
    "supported_sm_clocks",
]

ADMIN_NEEDED = "run as root (sudo)"


def effective_uid() -> int | None:
    """This process's effective user id; None where the OS has none (tests replace this)."""
    geteuid = getattr(os, "geteuid", None)
    return int(geteuid()) if geteuid is not None else None


def may_change_settings() -> tuple[bool, str]:
    """AMD SMI writes the power cap through the amdgpu driver's sysfs files, which only root may
    write: decided from the user id, never by trying."""
    if effective_uid() == 0:
        return True, "root"
    return False, f"not root: {ADMIN_NEEDED}"


def _handle(uuid: str) -> tuple[Any, object]:
    smi = ensure_init()
    try:
        return smi, find_handle(smi, uuid)
    except AmdSmiUnavailable as exc:
        raise AmdSmiControlError(f"GPU {uuid}: {exc}") from exc


def _caps(smi: Any, uuid: str, handle: object) -> dict[str, Any]:
    try:
        info = optional(smi.amdsmi_get_power_cap_info, handle)
    except AmdSmiError as exc:
        raise AmdSmiControlError(f"GPU {uuid}: {exc}") from exc
    return info if isinstance(info, dict) else {}


def power_limits(uuid: str) -> PowerLimits:
    """The GPU's power cap (set and enforced: AMD SMI reports one), default, minimum and maximum, W."""
    smi, handle = _handle(uuid)
    caps = _caps(smi, uuid, handle)
    current = microwatts_to_watts(caps.get("power_cap"))
    return PowerLimits(
        current_w=current,
        enforced_w=current,
        default_w=microwatts_to_watts(caps.get("default_power_cap")),
        min_w=microwatts_to_watts(caps.get("min_power_cap")),
        max_w=microwatts_to_watts(caps.get("max_power_cap")),
    )


def _change(where: str, call: Any, *args: Any, range_text: str | None = None) -> None:
    """One AMD SMI setter, its errors mapped to ours (`where` names the GPU and the call)."""
    try:
        call(*args)
    except Exception as exc:  # noqa: BLE001 - AmdSmiException is not importable without amdsmi
        code = error_code(exc)
        if code == STATUS_NO_PERM:
            raise AmdSmiNoPermission(f"{where}: no permission ({ADMIN_NEEDED})") from exc
        if code == STATUS_INVAL:
            raise AmdSmiOutOfRange(f"{where}: value out of range" + (f" ({range_text})" if range_text else "")) from exc
        if code in (STATUS_NOT_SUPPORTED, STATUS_NOT_YET_IMPLEMENTED):
            raise AmdSmiNotSupported(f"{where}: not supported on this device") from exc
        raise AmdSmiControlError(f"{where}: {message(exc)}") from exc


def set_power_limit(uuid: str, watts: float) -> None:
    """Set the GPU's power cap (AMD SMI takes microwatts). Outside the GPU's range: AmdSmiOutOfRange
    listing 'valid: MIN-MAX W' before AMD SMI is asked."""
    smi, handle = _handle(uuid)
    caps = _caps(smi, uuid, handle)
    low, high = number(caps.get("min_power_cap")), number(caps.get("max_power_cap"))
    microwatts = int(round(float(watts) * 1e6))
    range_text = f"valid: {low / 1e6:g}-{high / 1e6:g} W" if low is not None and high is not None and high > 0 else None
    if range_text and low is not None and high is not None and not low <= microwatts <= high:
        raise AmdSmiOutOfRange(f"GPU {uuid}: power limit {float(watts):g} W is out of range ({range_text})")
    _change(f"GPU {uuid}: amdsmi_set_power_cap", smi.amdsmi_set_power_cap, handle, 0, microwatts, range_text=range_text)


def _gfx_clock(uuid: str) -> dict[str, Any]:
    """amdsmi_get_clock_info for the GFX clock: {"clk", "min_clk", "max_clk", ...} in MHz; {} where
    not reported."""
    smi, handle = _handle(uuid)
    gfx = getattr(getattr(smi, "AmdSmiClkType", None), "GFX", None)
    if gfx is None:
        return {}
    try:
        info = optional(smi.amdsmi_get_clock_info, handle, gfx)
    except AmdSmiError as exc:
        raise AmdSmiControlError(f"GPU {uuid}: {exc}") from exc
    return info if isinstance(info, dict) else {}


def sm_clock_mhz(uuid: str) -> int | None:
    """The GPU's GFX clock now, MHz (amdsmi_get_clock_info's clk); None where not reported."""
    mhz = number(_gfx_clock(uuid).get("clk"))
    return int(mhz) if mhz is not None else None


NO_DETERMINISM = ("gfx94", "gfx95")  # MI300 and MI350 series: AMD documents the mode for MI200


def supported_sm_clocks(uuid: str) -> list[int]:
    """Every whole MHz performance determinism may hold the GFX clock at, highest first: the GFX
    clock's range; [] where AMD SMI does not report it, the library has no determinism call, or
    the GPU is of a series AMD does not document the mode for (so a sweep says so up front)."""
    smi, handle = _handle(uuid)
    if not hasattr(smi, "amdsmi_set_gpu_perf_determinism_mode"):
        return []
    try:
        asic = optional(smi.amdsmi_get_gpu_asic_info, handle)
    except AmdSmiError:
        asic = None
    target = str(asic.get("target_graphics_version", "")) if isinstance(asic, dict) else ""
    if target.lower().startswith(NO_DETERMINISM):
        return []
    info = _gfx_clock(uuid)
    low, high = number(info.get("min_clk")), number(info.get("max_clk"))
    if low is None or high is None or not 0 < low <= high:
        return []
    return list(range(int(high), int(low) - 1, -1))


def lock_sm_clocks(uuid: str, mhz: int) -> None:
    """Performance determinism with the GFX clock at or under `mhz`; AmdSmiNotSupported (one line)
    where the GPU does not offer it, AmdSmiOutOfRange outside the GFX clock's range."""
    clocks = supported_sm_clocks(uuid)
    range_text = f"valid: {clocks[-1]}-{clocks[0]} MHz" if clocks else None
    if clocks and not clocks[-1] <= int(mhz) <= clocks[0]:
        raise AmdSmiOutOfRange(f"GPU {uuid}: GFX clock {mhz} MHz is out of range ({range_text})")
    smi, handle = _handle(uuid)
    where = f"GPU {uuid}: performance determinism (amdsmi_set_gpu_perf_determinism_mode)"
    if not hasattr(smi, "amdsmi_set_gpu_perf_determinism_mode"):
        raise AmdSmiNotSupported(f"{where}: not supported by this AMD SMI")
    _change(where, smi.amdsmi_set_gpu_perf_determinism_mode, handle, int(mhz), range_text=range_text)


def reset_sm_clocks(uuid: str) -> None:
    """Leave performance determinism: the performance level back to AUTO (the driver's default)."""
    smi, handle = _handle(uuid)
    auto = getattr(getattr(smi, "AmdSmiDevPerfLevel", None), "AUTO", None)
    where = f"GPU {uuid}: performance level AUTO (amdsmi_set_gpu_perf_level)"
    if auto is None or not hasattr(smi, "amdsmi_set_gpu_perf_level"):
        raise AmdSmiNotSupported(f"{where}: not supported by this AMD SMI")
    _change(where, smi.amdsmi_set_gpu_perf_level, handle, auto)
