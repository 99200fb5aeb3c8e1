"""NVIDIA GPUs through NVML (nvidia-ml-py, `import pynvml`): wattbench's first device vendor.

    nvml.py         NVML itself: the one `import pynvml` in wattbench, initialised once per
                    process; NVML's errors as wattbench's (NvmlError is a DeviceError, ...)
    gpus.py         the inventory: driver, CUDA version, every GPU (name, UUID, serial, memory,
                    PCI bus id, power limit and its range, MIG mode and instances)
    telemetry.py    NvmlSource: energy counter, power, clocks, temperature, utilisation, memory
                    used, throttle reasons
    control.py      power limits and locked SM clocks (NvmlControlError subclasses when a
                    setting does not take)
    xid.py          XidWatch: Xid events seen while a run runs
    permissions.py  may_change_settings: whether this process may change them, without trying

`NvidiaGpus` puts them behind the vendor-neutral interface (bench.device.base.GpuVendor). The
names below are the same operations for callers that know they deal with NVIDIA: `wattbench
info`'s diagnosis of CUDA builds and MIG instances, and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.device.base import ErrorWatch, GpuHealth, GpuInfo, GpuVendor, Inventory, PowerLimits
from bench.device.nvidia import control, gpus, nvml, permissions, telemetry
from bench.device.nvidia.control import (
    lock_sm_clocks,
    power_limits,
    reset_sm_clocks,
    set_power_limit,
    sm_clock_mhz,
    supported_sm_clocks,
)
from bench.device.nvidia.gpus import MIG_POWER_REASON, inventory, is_mig_uuid
from bench.device.nvidia.nvml import (
    NvmlControlError,
    NvmlError,
    NvmlNoPermission,
    NvmlNotSupported,
    NvmlOutOfRange,
    NvmlUnavailable,
    reset,
)
from bench.device.nvidia.permissions import may_change_settings
from bench.device.nvidia.telemetry import NvmlSource
from bench.device.nvidia.xid import XidWatch
from bench.monitor.base import PowerSource

__all__ = [
    "MIG_POWER_REASON",
    "NvidiaGpus",
    "NvmlControlError",
    "NvmlError",
    "NvmlGpu",
    "NvmlInventory",
    "NvmlNoPermission",
    "NvmlNotSupported",
    "NvmlOutOfRange",
    "NvmlSource",
    "NvmlUnavailable",
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

# The names these types had in the NVML monitor module, before the device layer replaced it.
NvmlGpu = GpuInfo
NvmlInventory = Inventory


class NvidiaGpus(GpuVendor):
    """NVIDIA's GPUs through NVML, as bench.device.base.GpuVendor describes."""

    name = "nvidia"
    api_version = 1

    def inventory(self) -> Inventory:
        return gpus.inventory()

    def power_source(self, uuid: str, device_id: str, probe: bool = True) -> PowerSource:
        source = telemetry.NvmlSource(uuid, device_id, probe=probe)
        if not (source.counter_source or source.power_source):
            raise NvmlUnavailable("NVML reports neither energy nor power for this GPU")
        return source

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
        return permissions.may_change_settings()

    def health(self, uuid: str) -> GpuHealth | None:
        return gpus.health(uuid)

    def watch_errors(self, uuids: Sequence[str]) -> ErrorWatch:
        return XidWatch(uuids)

    def reset(self) -> None:
        nvml.reset()


_NVIDIA = NvidiaGpus()
# Read-only views built on the interface (GpuVendor.controls, .controls_by_uuid), by their old names.
gpu_controls = _NVIDIA.controls
controls_by_uuid = _NVIDIA.controls_by_uuid
