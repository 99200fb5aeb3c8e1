"""The device layer: wattbench's public, versioned plugin API for GPU vendors.

Only this layer imports a vendor library (pynvml; amdsmi when AMD comes); tests/test_layers.py
fails on any other module that does. Everything above it (the monitor, `wattbench info`, the
sweep's controller and restore) speaks to a vendor through one interface, `GpuVendor` in
bench/device/base.py, and the types and errors beside it:

    inventory       inventory() -> Inventory: driver version and every GPU (GpuInfo: name, UUID,
                    serial, memory, PCI bus id, power limit and its range, MIG mode and instances)
    telemetry       power_source(uuid, device_id, probe) -> bench.monitor.base.PowerSource: energy
                    counter, power, SM and memory clocks, temperature, utilisation, memory used,
                    throttle reasons, as `Reading`s that never raise
    control         power_limits / set_power_limit, supported_sm_clocks / sm_clock_mhz /
                    lock_sm_clocks / reset_sm_clocks; restore, controls and controls_by_uuid come
                    built on them
    permission      may_change_settings() -> (allowed, why), decided without trying a change
    errors          DeviceError; DeviceUnavailable; ControlError and its NoPermission, OutOfRange,
                    NotSupported. A vendor maps every library error to one of these, with a
                    one-line message naming the GPU and the call.

A vendor is one package here (bench/device/nvidia/ for NVIDIA through NVML, the first) with a
`GpuVendor` subclass, listed in BUILTIN_VENDORS below, importing its library lazily so that the
package imports on a machine without it. Units are in names (_w, _bytes, _mhz).

API_VERSION is the version of this contract. It goes up when a change would break a vendor
written against the previous one (a new abstract method, a changed signature or meaning); new
optional methods with a default leave it.

Vendors from other packages: an installed distribution adds a vendor through the entry-point
group `wattbench.devices` (ENTRY_POINT_GROUP), a name pointing at its GpuVendor subclass
("acme = acme_npu:AcmeNpu"), which declares the `api_version` it was written for. `vendors()`
returns the built-in vendors, then the plugins; a plugin that fails to load, is not a GpuVendor
subclass, or declares another API version is skipped with one warning line on stderr (once per
process), never an error. docs/plugins.md shows a complete minimal plugin.

This module itself uses the standard library only and imports no vendor package at import time:
`python3 -m bench.preflight` asks it which vendor libraries to look for.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.device.base import GpuVendor

__all__ = [
    "API_VERSION",
    "BUILTIN_VENDORS",
    "ENTRY_POINT_GROUP",
    "VendorSpec",
    "library_found",
    "plugins",
    "vendor_for",
    "vendor_libraries",
    "vendors",
]

API_VERSION = 1
ENTRY_POINT_GROUP = "wattbench.devices"  # third-party vendors (see the docstring)


@dataclass(frozen=True)
class VendorSpec:
    """A vendor wattbench knows: its name, where its GpuVendor subclass is ("module:Class", as an
    entry point names an object), and the library it imports with the pip distribution that has it."""

    name: str
    target: str
    library: str
    distribution: str

    def load(self) -> GpuVendor:
        """An instance of the vendor's GpuVendor subclass (importing its package, not its library)."""
        module_name, _, attribute = self.target.partition(":")
        vendor: GpuVendor = getattr(importlib.import_module(module_name), attribute)()
        return vendor


BUILTIN_VENDORS: tuple[VendorSpec, ...] = (VendorSpec("nvidia", "bench.device.nvidia:NvidiaGpus", "pynvml", "nvidia-ml-py"),)


def _warn(line: str) -> None:
    print(f"wattbench: warning: {line}", file=sys.stderr, flush=True)


def _plugin(entry: importlib.metadata.EntryPoint) -> GpuVendor | None:
    """The vendor an entry point names, or None after one warning line saying why it is skipped."""
    from bench.device.base import GpuVendor

    where = f"device plugin {entry.name!r} ({entry.value})"
    try:
        found = entry.load()
    except Exception as exc:  # noqa: BLE001 - whatever a third-party import raises: skip it, say so
        _warn(f"{where} skipped: it failed to load: {type(exc).__name__}: {exc}")
        return None
    if not (isinstance(found, type) and issubclass(found, GpuVendor)):
        _warn(f"{where} skipped: it is not a bench.device.base.GpuVendor subclass")
        return None
    declared = getattr(found, "api_version", None)
    if declared != API_VERSION:
        _warn(f"{where} skipped: written for device API {declared}, this wattbench has {API_VERSION}")
        return None
    try:
        return found()
    except Exception as exc:  # noqa: BLE001 - a plugin's constructor is third-party code
        _warn(f"{where} skipped: it failed to start: {type(exc).__name__}: {exc}")
        return None


@functools.cache
def plugins() -> tuple[GpuVendor, ...]:
    """The vendors installed packages add through ENTRY_POINT_GROUP (loaded once per process)."""
    builtin = {spec.name for spec in BUILTIN_VENDORS}
    found = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in builtin:
            _warn(f"device plugin {entry.name!r} ({entry.value}) skipped: {entry.name} is built in")
            continue
        vendor = _plugin(entry)
        if vendor is not None:
            found.append(vendor)
    return tuple(found)


def vendors() -> tuple[GpuVendor, ...]:
    """The GPU vendors known here, in the order they are asked: the built-in ones (NVIDIA), then
    those installed packages add (`plugins`)."""
    return (*(spec.load() for spec in BUILTIN_VENDORS), *plugins())


def vendor_for(uuid: str) -> GpuVendor:
    """The vendor that measures and controls the GPU with this UUID.

    With one vendor known, that one, without a query (its own calls then say when it does not know
    the GPU, in its words); with several, the first whose inventory lists the GPU or a MIG instance
    of it. DeviceUnavailable when none does.
    """
    from bench.device.base import DeviceError, DeviceUnavailable

    known = vendors()
    if len(known) == 1:
        return known[0]
    reasons = []
    for vendor in known:
        try:
            inventory = vendor.inventory()
        except DeviceError as exc:
            reasons.append(f"{vendor.name}: {exc}")
            continue
        if inventory.by_uuid(uuid) is not None or inventory.mig_parent(uuid) is not None:
            return vendor
        reasons.append(f"{vendor.name}: not listed")
    raise DeviceUnavailable(f"no GPU vendor library lists GPU {uuid} ({'; '.join(reasons)})")


def vendor_libraries() -> dict[str, str]:
    """The vendor libraries to look for, module name -> pip distribution ({"pynvml": "nvidia-ml-py"})."""
    return {spec.library: spec.distribution for spec in BUILTIN_VENDORS}


def library_found(module: str) -> bool:
    """Whether a vendor library is installed, looked up without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing; a module blocked with None
        return False
