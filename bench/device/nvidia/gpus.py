"""NVIDIA's inventory: the driver and every GPU NVML can see, with MIG instances.

A GPU this process may not use (a cgroup) or that is lost is skipped, the rest listed. The serial
number and the power-limit range are read best effort: a GPU that does not report them (GeForce
boards have no serial) or an error there leaves them None, never the inventory unavailable.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from bench.device.base import GpuHealth, GpuInfo, Inventory
from bench.device.nvidia.nvml import NvmlError, NvmlUnavailable, ensure_init, optional, text

__all__ = ["MIG_POWER_REASON", "health", "inventory", "is_mig_uuid"]

# Why a MIG instance has no power source: NVML's power and energy are the physical GPU's, shared
# by all its instances; none of it can be attributed to one.
MIG_POWER_REASON = "a MIG instance: NVML reports power per physical GPU, not per instance"


def is_mig_uuid(uuid: str | None) -> bool:
    """True for a MIG instance's UUID as NVML and CUDA_VISIBLE_DEVICES write it ("MIG-...")."""
    return bool(uuid) and str(uuid).lower().startswith("mig-")


def inventory() -> Inventory:
    """Driver version and every GPU NVML can see. Raises NvmlUnavailable with the reason."""
    nvml = ensure_init()
    try:
        driver = text(nvml.nvmlSystemGetDriverVersion())
        cuda_version = (
            optional(nvml, nvml.nvmlSystemGetCudaDriverVersion_v2) if hasattr(nvml, "nvmlSystemGetCudaDriverVersion_v2") else None
        )
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid, name = text(nvml.nvmlDeviceGetUUID(handle)), text(nvml.nvmlDeviceGetName(handle))
            except nvml.NVMLError:
                continue  # a GPU this process may not use (cgroup) or that is lost: skip it, keep the rest
            pci = optional(nvml, nvml.nvmlDeviceGetPciInfo, handle)
            memory = optional(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
            limit_mw = optional(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            mig_mode, mig_uuids = _mig(nvml, handle)
            serial = _best_effort(nvml, "nvmlDeviceGetSerial", handle)
            module_id = _best_effort(nvml, "nvmlDeviceGetModuleId", handle)
            vbios = _best_effort(nvml, "nvmlDeviceGetVbiosVersion", handle)
            constraints = _best_effort(nvml, "nvmlDeviceGetPowerManagementLimitConstraints", handle)
            low_mw, high_mw = (constraints[0], constraints[1]) if constraints else (None, None)
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=uuid,
                    name=name,
                    pci_bus_id=text(pci.busId) if pci is not None else None,
                    memory_bytes=int(memory.total) if memory is not None else None,
                    power_limit_w=_watts(limit_mw),
                    mig_mode=mig_mode,
                    mig_uuids=mig_uuids,
                    serial=text(serial) if serial else None,
                    power_limit_min_w=_watts(low_mw),
                    power_limit_max_w=_watts(high_mw),
                    module_id=int(module_id) if isinstance(module_id, int) else None,
                    vbios=text(vbios) if vbios else None,
                )
            )
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML query failed: {text(exc)}") from exc
    except NvmlError as exc:
        raise NvmlUnavailable(str(exc)) from exc
    return Inventory(
        driver_version=driver,
        cuda_driver_version=_cuda_version_text(cuda_version),
        gpus=tuple(gpus),
    )


def _watts(milliwatts: Any) -> float | None:
    return float(milliwatts) / 1000.0 if milliwatts is not None else None


def _best_effort(nvml: ModuleType, name: str, handle: object) -> Any:
    """An NVML getter's value, or None: not in this nvidia-ml-py, not supported, or failing."""
    fn = getattr(nvml, name, None)
    if fn is None:
        return None
    try:
        return optional(nvml, fn, handle)
    except NvmlError:
        return None


def _mig(nvml: ModuleType, handle: object) -> tuple[bool | None, tuple[str, ...]]:
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
            uuids.append(text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index))))
        except nvml.NVMLError:
            continue
    return enabled, tuple(uuids)


def _cuda_version_text(version: int | None) -> str | None:
    """NVML encodes the CUDA driver version as 1000*major + 10*minor (12040 -> '12.4')."""
    if not version:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


def health(uuid: str) -> GpuHealth | None:
    """The GPU's health signals through NVML, each best effort (None where not supported): the
    PCIe link (nvmlDeviceGetCurrPcieLinkGeneration/Width against the GPU's maximum), volatile
    uncorrectable ECC errors (nvmlDeviceGetTotalEccErrors) and remapped rows
    (nvmlDeviceGetRemappedRows: pending, failure). None when NVML does not know the GPU."""
    nvml = ensure_init()
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
    except nvml.NVMLError:
        return None
    gen_max = _best_effort(nvml, "nvmlDeviceGetGpuMaxPcieLinkGeneration", handle) or _best_effort(
        nvml, "nvmlDeviceGetMaxPcieLinkGeneration", handle
    )
    ecc = None
    uncorrected, volatile = getattr(nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", None), getattr(nvml, "NVML_VOLATILE_ECC", None)
    if uncorrected is not None and volatile is not None and hasattr(nvml, "nvmlDeviceGetTotalEccErrors"):
        try:
            ecc = optional(nvml, nvml.nvmlDeviceGetTotalEccErrors, handle, uncorrected, volatile)
        except NvmlError:
            ecc = None
    rows = _best_effort(nvml, "nvmlDeviceGetRemappedRows", handle)
    pending, failure = (bool(rows[2]), bool(rows[3])) if isinstance(rows, tuple | list) and len(rows) == 4 else (None, None)

    def whole(value: Any) -> int | None:
        return int(value) if isinstance(value, int) else None

    return GpuHealth(
        pcie_gen=whole(_best_effort(nvml, "nvmlDeviceGetCurrPcieLinkGeneration", handle)),
        pcie_gen_max=whole(gen_max),
        pcie_width=whole(_best_effort(nvml, "nvmlDeviceGetCurrPcieLinkWidth", handle)),
        pcie_width_max=whole(_best_effort(nvml, "nvmlDeviceGetMaxPcieLinkWidth", handle)),
        ecc_uncorrected=whole(ecc),
        remapped_rows_pending=pending,
        remapped_rows_failure=failure,
    )
