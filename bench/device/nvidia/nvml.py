"""NVML itself: the one module in wattbench that imports pynvml (nvidia-ml-py).

NVML is initialised once per process, on first use, and its errors are mapped to wattbench's
(bench.device.base): NVML missing or failing to initialise becomes `NvmlUnavailable` with a
reason a user can act on; a query the GPU does not support becomes None (`optional`); any other
NVML error becomes `NvmlError` for the caller to decide. The `Nvml*` names are the NVIDIA
spellings of the base errors (each is both), kept for the messages and tests that name them.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from bench.device.base import ControlError, DeviceError, DeviceUnavailable, NoPermission, NotSupported, OutOfRange

__all__ = [
    "NvmlControlError",
    "NvmlError",
    "NvmlNoPermission",
    "NvmlNotSupported",
    "NvmlOutOfRange",
    "NvmlUnavailable",
    "ensure_init",
    "library",
    "optional",
    "quiet_codes",
    "reset",
    "text",
]


class NvmlError(DeviceError):
    """An NVML call failed for a reason other than 'not supported'."""


class NvmlUnavailable(NvmlError, DeviceUnavailable):
    """NVML cannot be used on this machine; the message says why (no package, no driver, ...)."""


class NvmlControlError(NvmlError, ControlError):
    """Reading or changing a GPU's power limit or clocks failed; the message names the GPU and call."""


class NvmlNoPermission(NvmlControlError, NoPermission):
    """NVML refused a change: it needs root (or CAP_SYS_ADMIN)."""


class NvmlOutOfRange(NvmlControlError, OutOfRange):
    """The value is outside what the GPU accepts; the message lists the valid range."""


class NvmlNotSupported(NvmlControlError, NotSupported):
    """The GPU or driver does not have this control."""


_lock = threading.Lock()
_initialised = False


def reset() -> None:
    """Shut NVML down if we started it; tests call this to start from a clean state."""
    global _initialised
    with _lock:
        if _initialised:
            try:
                library().nvmlShutdown()
            except Exception:  # shutting down is best effort
                pass
        _initialised = False


def library() -> ModuleType:
    """The pynvml module; NvmlUnavailable when nvidia-ml-py is not installed."""
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from exc
    module: ModuleType = pynvml
    return module


def text(value: object) -> str:
    """NVML's strings are bytes in older nvidia-ml-py releases."""
    return value.decode() if isinstance(value, bytes) else str(value)


def ensure_init() -> ModuleType:
    """Initialise NVML once per process; map failures to NvmlUnavailable with the reason."""
    global _initialised
    nvml = library()
    with _lock:
        if not _initialised:
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                raise NvmlUnavailable(f"NVML failed to initialise: {text(exc)}") from exc
            except OSError as exc:  # a broken libnvidia-ml.so can surface as OSError
                raise NvmlUnavailable(f"NVML library could not be loaded: {exc}") from exc
            _initialised = True
    return nvml


@functools.cache
def quiet_codes(nvml: ModuleType) -> frozenset[int]:
    """NVML error codes that mean 'this query is not available here' (looked up once)."""
    return frozenset(
        int(getattr(nvml, name))
        for name in ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_NO_PERMISSION")
        if hasattr(nvml, name)
    )


def optional(nvml: ModuleType, fn: Callable[..., Any], *args: Any) -> Any:
    """Call an NVML function; None where the GPU or driver does not support the query.

    Any other NVML error is raised as NvmlError so that callers decide; 'not supported',
    'function not found' (older driver) and 'no permission' are expected and become None.
    """
    try:
        return fn(*args)
    except nvml.NVMLError as exc:
        if getattr(exc, "value", None) in quiet_codes(nvml):
            return None
        raise NvmlError(f"{getattr(fn, '__name__', fn)}: {text(exc)}") from exc
