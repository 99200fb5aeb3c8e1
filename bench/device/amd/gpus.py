"""AMD's inventory: the driver and every GPU AMD SMI can see.

Name from amdsmi_get_gpu_asic_info's market_name; serial from the board's product_serial (else
the ASIC's serial); memory from amdsmi_get_gpu_memory_total (VRAM, bytes); PCI bus id from
amdsmi_get_gpu_device_bdf; the power cap and its range from amdsmi_get_power_cap_info
(microwatts, here watts). Everything but the UUID is best effort: a GPU that does not report a
field leaves it None, never the inventory unavailable.

Partitions (MI300X compute modes DPX..CPX, up to 8 logical GPUs per socket) are treated as NVIDIA's
MIG is: AMD SMI lists one processor handle per partition, their BDFs differing only in the PCI
function; the inventory lists the physical GPU once (its first partition, function 0, which alone
reports the socket's power and energy) with `mig_mode` True and the other partitions' UUIDs in
`mig_uuids`. Energy is per physical GPU: a partition has no power source of its own
(PARTITION_POWER_REASON).
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType
from typing import Any

from bench.device.amd.smi import AmdSmiError, AmdSmiUnavailable, ensure_init, message, number, optional
from bench.device.base import GpuInfo, Inventory

__all__ = ["PARTITION_POWER_REASON", "first_partition", "inventory", "microwatts_to_watts", "physical_bus_id"]

PARTITION_POWER_REASON = "a partition of an AMD GPU: AMD SMI reports power and energy per physical GPU, not per partition"


def microwatts_to_watts(value: Any) -> float | None:
    uw = number(value)
    return uw / 1e6 if uw is not None else None


def _text(value: Any) -> str | None:
    """A string field; None where AMD SMI says "N/A" or gives nothing."""
    if value is None:
        return None
    text = str(value).strip()
    return text if text and text != "N/A" else None


def _best_effort(smi: ModuleType, name: str, *args: Any) -> Any:
    fn = getattr(smi, name, None)
    if fn is None:
        return None
    try:
        return optional(fn, *args)
    except AmdSmiError:
        return None


def _field(info: Any, key: str) -> Any:
    return info.get(key) if isinstance(info, dict) else None


def first_partition(gpu: GpuInfo) -> bool:
    """Whether an inventory entry is a GPU as a whole (unpartitioned, or seen through its first
    partition, PCI function 0, the one that reports the socket's power), not a lone later
    partition (a container given some partitions of a GPU but not the first)."""
    return not gpu.mig_mode or not gpu.pci_bus_id or gpu.pci_bus_id.endswith(".0")


def physical_bus_id(bdf: str | None) -> str | None:
    """The physical GPU's PCI address, without the function that tells partitions apart:
    "0000:05:00.1" -> "0000:05:00"."""
    return bdf.lower().rsplit(".", 1)[0] if bdf else None


def _gpu_info(smi: ModuleType, handle: object, uuid: str, bdf: str | None, index: int) -> GpuInfo:
    asic = _best_effort(smi, "amdsmi_get_gpu_asic_info", handle)
    board = _best_effort(smi, "amdsmi_get_gpu_board_info", handle)
    caps = _best_effort(smi, "amdsmi_get_power_cap_info", handle)
    memory_type = getattr(getattr(smi, "AmdSmiMemoryType", None), "VRAM", None)
    memory = _best_effort(smi, "amdsmi_get_gpu_memory_total", handle, memory_type) if memory_type is not None else None
    name = _text(_field(asic, "market_name")) or _text(_field(board, "product_name")) or "AMD GPU"
    return GpuInfo(
        index=index,
        uuid=uuid,
        name=name,
        pci_bus_id=bdf,
        memory_bytes=int(memory) if isinstance(memory, int) and memory > 0 else None,
        power_limit_w=microwatts_to_watts(_field(caps, "power_cap")),
        serial=_text(_field(board, "product_serial")) or _text(_field(asic, "asic_serial")),
        power_limit_min_w=microwatts_to_watts(_field(caps, "min_power_cap")),
        power_limit_max_w=microwatts_to_watts(_field(caps, "max_power_cap")),
    )


def inventory() -> Inventory:
    """Driver version and every physical GPU AMD SMI can see, partitions folded into their GPU.
    Raises AmdSmiUnavailable with the reason."""
    smi = ensure_init()
    try:
        handles = list(smi.amdsmi_get_processor_handles())
    except Exception as exc:  # noqa: BLE001 - AmdSmiException is not importable without amdsmi
        raise AmdSmiUnavailable(f"amdsmi_get_processor_handles: {message(exc)}") from exc
    groups: dict[str, list[tuple[object, str, str | None]]] = {}  # physical GPU -> its partitions
    driver: str | None = None
    for handle in handles:
        try:
            uuid = str(smi.amdsmi_get_gpu_device_uuid(handle))
        except Exception:  # noqa: BLE001,S112 - a GPU this process may not use: skip it, keep the rest
            continue
        bdf = _text(_best_effort(smi, "amdsmi_get_gpu_device_bdf", handle))
        groups.setdefault(physical_bus_id(bdf) or uuid, []).append((handle, uuid, bdf))
        driver = driver or _text(_field(_best_effort(smi, "amdsmi_get_gpu_driver_info", handle), "driver_version"))
    gpus: list[GpuInfo] = []
    for index, partitions in enumerate(groups.values()):
        partitions.sort(key=lambda p: (p[2] or "").lower())  # function 0, the first partition, first
        handle, uuid, bdf = partitions[0]
        mode = _text(_best_effort(smi, "amdsmi_get_gpu_compute_partition", handle))
        info = _gpu_info(smi, handle, uuid, bdf, index)
        partitioned = len(partitions) > 1 or (mode is not None and mode.upper() != "SPX")
        if partitioned:
            info = replace(info, mig_mode=True, mig_uuids=tuple(p[1] for p in partitions[1:]))
        elif mode is not None:
            info = replace(info, mig_mode=False)
        gpus.append(info)
    return Inventory(driver_version=driver or "unknown", cuda_driver_version=None, gpus=tuple(gpus))
