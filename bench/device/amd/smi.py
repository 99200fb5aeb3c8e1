"""AMD SMI itself: the one module in wattbench that imports amdsmi (AMD's Python library, which
needs ROCm's libamd_smi.so at run time).

Its traps, read in the 7.0.2 wheel: without ROCm, `import amdsmi` prints two lines to stdout and
raises KeyError('libamd_smi.so'), not ImportError. So it is imported lazily, with stdout
redirected (`wattbench info --json` stays valid JSON) and any exception caught, and mapped to
`AmdSmiUnavailable` with a one-line reason. AMD SMI is initialised once per process. Its errors
are `AmdSmiLibraryException(err_code)` (a subclass of `AmdSmiException`); the status codes below
are amdsmi_wrapper's. A query the GPU does not support becomes None (`optional`); any other error
becomes `AmdSmiError` for the caller to decide.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from bench.device.base import ControlError, DeviceError, DeviceUnavailable, NoPermission, NotSupported, OutOfRange

__all__ = [
    "STATUS_INVAL",
    "STATUS_NOT_SUPPORTED",
    "STATUS_NOT_YET_IMPLEMENTED",
    "STATUS_NO_PERM",
    "AmdSmiControlError",
    "AmdSmiError",
    "AmdSmiNoPermission",
    "AmdSmiNotSupported",
    "AmdSmiOutOfRange",
    "AmdSmiUnavailable",
    "ensure_init",
    "error_code",
    "find_handle",
    "library",
    "message",
    "number",
    "optional",
    "reset",
    "same_uuid",
]

# amdsmi_wrapper's status codes (amdsmi_status_t).
STATUS_INVAL = 1
STATUS_NOT_SUPPORTED = 2
STATUS_NOT_YET_IMPLEMENTED = 3
STATUS_NO_PERM = 10
QUIET_CODES = frozenset({STATUS_NOT_SUPPORTED, STATUS_NOT_YET_IMPLEMENTED, STATUS_NO_PERM})

INSTALL_HINT = "install the amdsmi Python package that comes with ROCm (pip install /opt/rocm/share/amd_smi)"


class AmdSmiError(DeviceError):
    """An AMD SMI call failed for a reason other than 'not supported'."""


class AmdSmiUnavailable(AmdSmiError, DeviceUnavailable):
    """AMD SMI cannot be used here; the message says why (no package, no ROCm library, no driver)."""


class AmdSmiControlError(AmdSmiError, ControlError):
    """Reading or changing a GPU's power cap failed; the message names the GPU and call."""


class AmdSmiNoPermission(AmdSmiControlError, NoPermission):
    """AMD SMI refused a change: it needs root."""


class AmdSmiOutOfRange(AmdSmiControlError, OutOfRange):
    """The value is outside what the GPU accepts; the message lists the valid range."""


class AmdSmiNotSupported(AmdSmiControlError, NotSupported):
    """The GPU or driver does not have this control."""


_lock = threading.Lock()
_initialised = False
_import_failure: str | None = None  # why `import amdsmi` failed in this process


def _import_reason(exc: BaseException) -> str:
    """Why `import amdsmi` failed, in one line a user can act on."""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "amdsmi":
        return f"amdsmi is not installed ({INSTALL_HINT})"
    if isinstance(exc, KeyError) and "libamd_smi" in str(exc):
        return "amdsmi is installed but ROCm's libamd_smi.so was not found (install ROCm's amd-smi-lib, or set ROCM_PATH)"
    detail = " ".join(str(exc).split())
    return f"amdsmi failed to import: {type(exc).__name__}" + (f": {detail}" if detail else "")


def library() -> ModuleType:
    """The amdsmi module; AmdSmiUnavailable (one line) when it cannot be imported for any reason.
    What it prints while importing is discarded. A failed import is not tried again (until
    `reset`): every vendor lookup asks, and a redirected stdout is the whole process's."""
    global _import_failure
    loaded = sys.modules.get("amdsmi")
    if loaded is not None:
        return loaded
    if _import_failure is not None and "amdsmi" not in sys.modules:
        raise AmdSmiUnavailable(_import_failure)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            module = importlib.import_module("amdsmi")
    except Exception as exc:  # noqa: BLE001 - amdsmi raises KeyError without ROCm; anything else is as fatal
        _import_failure = _import_reason(exc)
        raise AmdSmiUnavailable(_import_failure) from exc
    return module


def error_code(exc: BaseException) -> int | None:
    """The AMD SMI status code of an AmdSmiLibraryException; None for other errors."""
    code = getattr(exc, "err_code", None)
    return abs(int(code)) if isinstance(code, int) else None


def message(exc: BaseException) -> str:
    """An AMD SMI error in one line: 'AMDSMI_STATUS_NO_PERM - Permission Denied' where known."""
    info = getattr(exc, "err_info", None)
    text = str(info) if info else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def reset() -> None:
    """Shut AMD SMI down if we started it, and forget a failed import; tests call this to start
    from a clean state."""
    global _initialised, _import_failure
    _import_failure = None
    with _lock:
        if _initialised:
            try:
                library().amdsmi_shut_down()
            except Exception:  # noqa: BLE001 - shutting down is best effort
                pass
        _initialised = False


def ensure_init() -> ModuleType:
    """Initialise AMD SMI once per process (GPUs only); failures become AmdSmiUnavailable."""
    global _initialised
    smi = library()
    with _lock:
        if not _initialised:
            try:
                flags = getattr(smi, "AmdSmiInitFlags", None)
                if flags is not None:
                    smi.amdsmi_init(flags.INIT_AMD_GPUS)
                else:
                    smi.amdsmi_init()
            except Exception as exc:  # noqa: BLE001 - AmdSmiException, or OSError from a broken library
                raise AmdSmiUnavailable(f"AMD SMI failed to initialise: {message(exc)}") from exc
            _initialised = True
    return smi


def optional(fn: Callable[..., Any], *args: Any) -> Any:
    """Call an AMD SMI function; None where the GPU or driver does not support the query (or
    the caller may not read it). Any other AMD SMI error is raised as AmdSmiError."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - amdsmi's exceptions are not importable without it
        if error_code(exc) in QUIET_CODES:
            return None
        raise AmdSmiError(f"{getattr(fn, '__name__', fn)}: {message(exc)}") from exc


def number(value: Any) -> float | None:
    """A numeric field of an AMD SMI dict; None for "N/A" (0xFFFF in the C struct) or missing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def same_uuid(a: str, b: str) -> bool:
    """UUIDs compared case-insensitively, with or without a 'GPU-' prefix."""
    return a.lower().removeprefix("gpu-") == b.lower().removeprefix("gpu-")


def find_handle(smi: ModuleType, uuid: str) -> object:
    """The processor handle of the GPU with this UUID; AmdSmiUnavailable when none has it."""
    try:
        handles = list(smi.amdsmi_get_processor_handles())
    except Exception as exc:  # noqa: BLE001
        raise AmdSmiUnavailable(f"amdsmi_get_processor_handles: {message(exc)}") from exc
    for handle in handles:
        try:
            if same_uuid(str(smi.amdsmi_get_gpu_device_uuid(handle)), uuid):
                return handle
        except Exception:  # noqa: BLE001,S112 - a GPU that cannot be asked is not the one wanted
            continue
    raise AmdSmiUnavailable(f"no AMD GPU with UUID {uuid}")
