"""NVIDIA Management Library access through nvidia-ml-py (`import pynvml`).

This is the only module that imports pynvml. NVML errors are mapped to our own: a field the GPU
does not support becomes None, NVML missing or failing to initialise becomes `NvmlUnavailable`
with a reason a user can act on, and nothing here lets an NVML error stop a benchmark run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

__all__ = ["NvmlError", "NvmlUnavailable", "NvmlGpu", "NvmlInventory", "inventory", "reset"]


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


def optional(nvml: ModuleType, fn: Callable[..., Any], *args: Any) -> Any:
    """Call an NVML function; None where the GPU or driver does not support the query.

    Any other NVML error is raised as NvmlError so that callers decide; 'not supported',
    'function not found' (older driver) and 'no permission' are expected and become None.
    """
    quiet = {
        getattr(nvml, name)
        for name in ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_NO_PERMISSION")
        if hasattr(nvml, name)
    }
    try:
        return fn(*args)
    except nvml.NVMLError as exc:
        if getattr(exc, "value", None) in quiet:
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
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            pci = optional(nvml, nvml.nvmlDeviceGetPciInfo, handle)
            memory = optional(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
            limit_mw = optional(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            gpus.append(
                NvmlGpu(
                    index=index,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    pci_bus_id=_text(pci.busId) if pci is not None else None,
                    memory_bytes=int(memory.total) if memory is not None else None,
                    power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
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


def _cuda_version_text(version: int | None) -> str | None:
    """NVML encodes the CUDA driver version as 1000*major + 10*minor (12040 -> '12.4')."""
    if not version:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"
