"""AMD's inventory: the driver and every GPU AMD SMI can see.

Name from amdsmi_get_gpu_asic_info's market_name; serial from the board's product_serial (else
the ASIC's serial); memory from amdsmi_get_gpu_memory_total (VRAM, bytes); PCI bus id from
amdsmi_get_gpu_device_bdf; the power cap and its range from amdsmi_get_power_cap_info
(microwatts, here watts). Everything but the UUID is best effort: a GPU that does not report a
field leaves it None, never the inventory unavailable.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from bench.device.amd.smi import AmdSmiError, AmdSmiUnavailable, ensure_init, message, number, optional
from bench.device.base import GpuInfo, Inventory

__all__ = ["inventory", "microwatts_to_watts"]


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


def inventory() -> Inventory:
    """Driver version and every GPU AMD SMI can see. Raises AmdSmiUnavailable with the reason."""
    smi = ensure_init()
    try:
        handles = list(smi.amdsmi_get_processor_handles())
    except Exception as exc:  # noqa: BLE001 - AmdSmiException is not importable without amdsmi
        raise AmdSmiUnavailable(f"amdsmi_get_processor_handles: {message(exc)}") from exc
    gpus: list[GpuInfo] = []
    driver: str | None = None
    for index, handle in enumerate(handles):
        try:
            uuid = str(smi.amdsmi_get_gpu_device_uuid(handle))
        except Exception:  # noqa: BLE001,S112 - a GPU this process may not use: skip it, keep the rest
            continue
        asic = _best_effort(smi, "amdsmi_get_gpu_asic_info", handle)
        board = _best_effort(smi, "amdsmi_get_gpu_board_info", handle)
        caps = _best_effort(smi, "amdsmi_get_power_cap_info", handle)
        memory_type = getattr(getattr(smi, "AmdSmiMemoryType", None), "VRAM", None)
        memory = _best_effort(smi, "amdsmi_get_gpu_memory_total", handle, memory_type) if memory_type is not None else None
        driver = driver or _text(_field(_best_effort(smi, "amdsmi_get_gpu_driver_info", handle), "driver_version"))
        name = _text(_field(asic, "market_name")) or _text(_field(board, "product_name")) or "AMD GPU"
        gpus.append(
            GpuInfo(
                index=index,
                uuid=uuid,
                name=name,
                pci_bus_id=_text(_best_effort(smi, "amdsmi_get_gpu_device_bdf", handle)),
                memory_bytes=int(memory) if isinstance(memory, int) and memory > 0 else None,
                power_limit_w=microwatts_to_watts(_field(caps, "power_cap")),
                serial=_text(_field(board, "product_serial")) or _text(_field(asic, "asic_serial")),
                power_limit_min_w=microwatts_to_watts(_field(caps, "min_power_cap")),
                power_limit_max_w=microwatts_to_watts(_field(caps, "max_power_cap")),
            )
        )
    return Inventory(driver_version=driver or "unknown", cuda_driver_version=None, gpus=tuple(gpus))
