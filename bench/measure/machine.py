"""What `wattbench info` shows, gathered on the measuring side: the host, the devices this torch
can use, every GPU the vendor library sees (usable by this torch or why not, and the fix), each
GPU's power-limit and clock ranges with whether this process may change them, and which power
source measures each device. Nothing is changed or tried here; the CLI renders the result
(`bench.report.info`) or prints its JSON."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from bench import device
from bench.device import amd, nvidia
from bench.device.base import DeviceError, GpuControls, GpuInfo
from bench.measure import hardware, rocm
from bench.measure.hardware import DeviceInfo, GpuDiagnosis, HostInfo
from bench.measure.rocm import SetupProblem
from bench.monitor.discover import Discovery, discover
from bench.record import Json, JsonObject


def discover_devices(devices: Sequence[DeviceInfo], nominal_watts: float | None) -> Discovery:
    """The power source of each device (`bench.monitor.discover`), as a run would find them."""
    return discover([d.ref() for d in devices], nominal_watts)


@dataclass(frozen=True)
class MachineInfo:
    """This machine as `wattbench info` describes it (see the module docstring). `controls`
    maps a GPU's UUID to its limits and lockable clocks, or to why they could not be read;
    `may_change` says whether this process may change them, and why."""

    host: HostInfo
    devices: list[DeviceInfo]
    gpus: list[GpuDiagnosis]
    nvml_available: bool
    controls: dict[str, GpuControls | str]
    may_change: tuple[bool, str]
    power: Discovery
    hint: str | None
    accelerators: tuple[tuple[str, GpuInfo], ...] = ()  # (vendor, GPU) of every vendor but NVIDIA
    vendor_errors: tuple[tuple[str, str], ...] = ()  # (vendor, why its inventory could not be read)
    setup_problems: tuple[SetupProblem, ...] = ()  # an AMD machine's (bench.measure.rocm)

    def operating_range(self, uuid: str | None) -> JsonObject | None:
        """A GPU's power-limit and clock ranges as JSON ({"error": why} where unreadable)."""
        found = self.controls.get(uuid or "")
        if found is None:
            return None
        return {"error": found} if isinstance(found, str) else cast(JsonObject, found.to_dict())

    def to_json(self) -> JsonObject:
        """`wattbench info --json`."""
        sources = cast(Json, self.power.describe())
        return {
            "host": self.host.to_dict(),
            "devices": [d.to_dict() for d in self.devices],
            "gpus": [{**g.to_dict(), "operating_range": self.operating_range(g.uuid)} for g in self.gpus],
            "may_change_settings": {"allowed": self.may_change[0], "reason": self.may_change[1]},
            "power": {"status": dict(self.power.status), "sources": sources, "hint": self.hint},
            "accelerators": [_accelerator(vendor, gpu, self.devices) for vendor, gpu in self.accelerators],
            "vendor_errors": dict(self.vendor_errors),
            "setup_problems": [cast(JsonObject, p.to_dict()) for p in self.setup_problems],
        }

    def torch_devices_of(self, gpu: GpuInfo) -> str | None:
        """The torch devices on a GPU of another vendor (its partitions'), joined; None if none."""
        return _torch_devices(gpu, self.devices)


def _torch_devices(gpu: GpuInfo, devices: Sequence[DeviceInfo]) -> str | None:
    wanted = gpu.uuid.lower()
    ids = [d.id for d in devices if wanted in ((d.uuid or "").lower(), (d.mig_parent_uuid or "").lower())]
    return ", ".join(ids) or None


def _accelerator(vendor: str, gpu: GpuInfo, devices: Sequence[DeviceInfo]) -> JsonObject:
    return {
        "vendor": vendor,
        "index": gpu.index,
        "name": gpu.name,
        "uuid": gpu.uuid,
        "serial": gpu.serial,
        "pci_bus_id": gpu.pci_bus_id,
        "memory_bytes": gpu.memory_bytes,
        "power_limit_w": gpu.power_limit_w,
        "power_limit_min_w": gpu.power_limit_min_w,
        "power_limit_max_w": gpu.power_limit_max_w,
        "partitioned": gpu.mig_mode,
        "torch_device": _torch_devices(gpu, devices),
    }


def other_vendors() -> tuple[tuple[tuple[str, GpuInfo], ...], tuple[tuple[str, str], ...]]:
    """The GPUs of every vendor but NVIDIA (whose GPUs `gpu_diagnosis` lists with more), and
    the vendors whose inventory could not be read, with why."""
    found: list[tuple[str, GpuInfo]] = []
    errors: list[tuple[str, str]] = []
    shown = device.vendors_shown()
    for vendor in device.vendors():
        if vendor.name == nvidia.NvidiaGpus.name:
            continue
        try:
            found.extend((vendor.name, gpu) for gpu in vendor.inventory().gpus)
        except DeviceError as exc:
            if vendor.name in shown:  # not an amdsmi package without ROCm on a machine without AMD GPUs
                errors.append((vendor.name, str(exc)))
    return tuple(found), tuple(errors)


def gather() -> MachineInfo:
    """Everything `wattbench info` shows, read from this machine."""
    devices = [*hardware.cuda_devices(), hardware.cpu_device()]
    gpus = hardware.gpu_diagnosis()
    found = discover_devices(devices, None)
    controls = nvidia.controls_by_uuid(g.uuid for g in gpus if g.nvml_index is not None and g.uuid)
    accelerators, vendor_errors = other_vendors()
    problems = amd_setup_problems(devices)
    if problems:  # they say why AMD SMI cannot be used, with the fix
        vendor_errors = tuple(e for e in vendor_errors if e[0] != amd.AmdGpus.name)
    return MachineInfo(
        host=hardware.host_info(),
        devices=devices,
        gpus=gpus,
        nvml_available=not isinstance(hardware.nvml_inventory(), str),
        controls=dict(controls),
        may_change=nvidia.may_change_settings(),
        power=found,
        hint=hardware.no_power_hint(devices, found.status),
        accelerators=accelerators,
        vendor_errors=vendor_errors,
        setup_problems=problems,
    )


def amd_setup_problems(devices: Sequence[DeviceInfo], root: Path = Path("/")) -> tuple[SetupProblem, ...]:
    """What is wrong with this machine's AMD set-up (bench.measure.rocm), where ROCm's driver lists
    an AMD GPU; () elsewhere."""
    specs = {s.name: s for s in device.BUILTIN_VENDORS}
    if not device.driver_present(specs[amd.AmdGpus.name], root):
        return ()
    live = hardware.TorchCuda.live()
    amd_devices = [d for d in devices if d.rocm]
    nvidia_too = device.driver_present(specs[nvidia.NvidiaGpus.name], root)
    found = rocm.setup_problems(
        hardware.amd_inventory(), live.version, live.cuda, live.hip, amd_devices, os.environ, root, nvidia_too=nvidia_too
    )
    return tuple(found)
