"""Operating points of an AMD GPU through AMD SMI: the power cap (read and set) and the GFX clock.

amdsmi_get_power_cap_info and amdsmi_set_power_cap(processor_handle, sensor_ind, cap) speak
microwatts; wattbench speaks watts. Setting the cap needs root: AMD SMI answers
AMDSMI_STATUS_NO_PERM otherwise (AmdSmiNoPermission here); a value the GPU does not take gives
AMDSMI_STATUS_INVAL (AmdSmiOutOfRange). Locking the clocks is not offered (performance
determinism, AMD's lever on MI200/MI300, is not yet used): lock_sm_clocks says "not supported".
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

__all__ = ["ADMIN_NEEDED", "lock_sm_clocks", "may_change_settings", "power_limits", "set_power_limit", "sm_clock_mhz"]

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
    where = f"GPU {uuid}: amdsmi_set_power_cap"
    try:
        smi.amdsmi_set_power_cap(handle, 0, microwatts)
    except Exception as exc:  # noqa: BLE001 - AmdSmiException is not importable without amdsmi
        code = error_code(exc)
        if code == STATUS_NO_PERM:
            raise AmdSmiNoPermission(f"{where}: no permission ({ADMIN_NEEDED})") from exc
        if code == STATUS_INVAL:
            raise AmdSmiOutOfRange(f"{where}: value out of range" + (f" ({range_text})" if range_text else "")) from exc
        if code in (STATUS_NOT_SUPPORTED, STATUS_NOT_YET_IMPLEMENTED):
            raise AmdSmiNotSupported(f"{where}: not supported on this GPU or driver") from exc
        raise AmdSmiControlError(f"{where}: {message(exc)}") from exc


def sm_clock_mhz(uuid: str) -> int | None:
    """The GPU's GFX clock now, MHz (amdsmi_get_clock_info's clk); None where not reported."""
    smi, handle = _handle(uuid)
    gfx = getattr(getattr(smi, "AmdSmiClkType", None), "GFX", None)
    if gfx is None:
        return None
    try:
        info = optional(smi.amdsmi_get_clock_info, handle, gfx)
    except AmdSmiError as exc:
        raise AmdSmiControlError(f"GPU {uuid}: {exc}") from exc
    mhz = number(info.get("clk")) if isinstance(info, dict) else None
    return int(mhz) if mhz is not None else None


def lock_sm_clocks(uuid: str, mhz: int) -> None:
    """Not offered on AMD GPUs yet: one line saying so."""
    raise AmdSmiNotSupported(f"GPU {uuid}: locking clocks is not supported on this device (AMD)")
