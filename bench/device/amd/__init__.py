"""AMD GPUs through AMD SMI (`import amdsmi`, which needs ROCm's libamd_smi.so at run time).

    smi.py        AMD SMI itself: the one import of amdsmi in wattbench (lazy, stdout redirected,
                  any exception -> AmdSmiUnavailable with one line), initialised once per process;
                  its errors as wattbench's (AmdSmiError is a DeviceError, ...)
    gpus.py       the inventory: driver, every GPU (name, UUID, serial, memory, PCI bus id, power
                  cap and its range)
    telemetry.py  AmdSmiSource: energy counter (wrap corrected, a frozen counter flagged), socket
                  power, clocks, temperature, memory used, violation status (MI300+)
    control.py    the power cap get/set (microwatts in AMD SMI, watts here), performance
                  determinism as the clock lever, and who may set them

`AmdGpus` puts them behind the vendor-neutral interface (bench.device.base.GpuVendor).
"""

from __future__ import annotations

from bench.device.amd import control, gpus, smi, telemetry
from bench.device.amd.smi import (
    AmdSmiControlError,
    AmdSmiError,
    AmdSmiNoPermission,
    AmdSmiNotSupported,
    AmdSmiOutOfRange,
    AmdSmiUnavailable,
)
from bench.device.amd.telemetry import SOURCE_AMDSMI_ENERGY, SOURCE_AMDSMI_POWER, AmdSmiSource
from bench.device.base import GpuVendor, Inventory, PowerLimits
from bench.monitor.base import PowerSource

__all__ = [
    "SOURCE_AMDSMI_ENERGY",
    "SOURCE_AMDSMI_POWER",
    "AmdGpus",
    "AmdSmiControlError",
    "AmdSmiError",
    "AmdSmiNoPermission",
    "AmdSmiNotSupported",
    "AmdSmiOutOfRange",
    "AmdSmiSource",
    "AmdSmiUnavailable",
]


class AmdGpus(GpuVendor):
    """AMD's GPUs through AMD SMI, as bench.device.base.GpuVendor describes."""

    name = "amd"
    api_version = 1

    def inventory(self) -> Inventory:
        return gpus.inventory()

    def power_source(self, uuid: str, device_id: str, probe: bool = True) -> PowerSource:
        return telemetry.power_source(uuid, device_id, probe=probe)

    def power_limits(self, uuid: str) -> PowerLimits:
        return control.power_limits(uuid)

    def set_power_limit(self, uuid: str, watts: float) -> None:
        control.set_power_limit(uuid, watts)

    def supported_sm_clocks(self, uuid: str) -> list[int]:
        return control.supported_sm_clocks(uuid)

    def sm_clock_mhz(self, uuid: str) -> int | None:
        return control.sm_clock_mhz(uuid)

    def lock_sm_clocks(self, uuid: str, mhz: int) -> None:
        control.lock_sm_clocks(uuid, mhz)

    def reset_sm_clocks(self, uuid: str) -> None:
        control.reset_sm_clocks(uuid)

    def may_change_settings(self) -> tuple[bool, str]:
        return control.may_change_settings()

    def reset(self) -> None:
        smi.reset()
