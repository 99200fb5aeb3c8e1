"""The device layer: wattbench's public, versioned plugin API for GPU vendors.

Only this layer imports a vendor library (pynvml, amdsmi); tests/test_layers.py fails on any
other module that does. Everything above it (the monitor, `wattbench info`, the
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

A vendor is one package here (bench/device/nvidia/ for NVIDIA through NVML, bench/device/amd/ for
AMD through AMD SMI) with a `GpuVendor` subclass, listed in BUILTIN_VENDORS below, importing its
library lazily so that the package imports on a machine without it. Units are in names (_w,
_bytes, _mhz).

Which vendors speak: every vendor is asked wherever its library works, but a built-in vendor's
failures are shown only where its driver drives one of its GPUs (`driver_present`: for AMD a
ROCm compute node that is not an APU's integrated GPU), and NVIDIA's, the
default vendor's, also where no vendor's driver is (a machine without a GPU is told why NVML
cannot be used). An NVIDIA machine with the amdsmi package but no ROCm is not told about AMD, nor
an AMD machine about NVML.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.device.base import DeviceError, GpuVendor, Inventory

__all__ = [
    "API_VERSION",
    "BUILTIN_VENDORS",
    "ENTRY_POINT_GROUP",
    "VendorSpec",
    "driver_present",
    "gpus_on_node",
    "inventories",
    "library_found",
    "plugins",
    "vendor_for",
    "vendor_libraries",
    "vendors",
    "vendors_shown",
]

API_VERSION = 1
ENTRY_POINT_GROUP = "wattbench.devices"  # third-party vendors (see the docstring)


@dataclass(frozen=True)
class VendorSpec:
    """A vendor wattbench knows: its name, where its GpuVendor subclass is ("module:Class", as an
    entry point names an object), the library it imports with what to pip-install for it, and how
    to tell, without the library, that its driver drives one of its GPUs here (`gpu_present(root)`)."""

    name: str
    target: str
    library: str
    distribution: str
    gpu_present: Callable[[Path], bool] = lambda root: False

    def load(self) -> GpuVendor:
        """An instance of the vendor's GpuVendor subclass (importing its package, not its library)."""
        module_name, _, attribute = self.target.partition(":")
        vendor: GpuVendor = getattr(importlib.import_module(module_name), attribute)()
        return vendor


def nvidia_gpu_present(root: Path) -> bool:
    """Whether NVIDIA's kernel driver is loaded (it creates /proc/driver/nvidia and /dev/nvidiactl)."""
    return any((root / path).exists() for path in ("proc/driver/nvidia", "dev/nvidiactl"))


KFD_NODES = "sys/class/kfd/kfd/topology/nodes"


def amd_gpu_present(root: Path) -> bool:
    """Whether ROCm's kernel driver (KFD, part of amdgpu) lists an AMD GPU that is not an APU's
    integrated one: a topology node with SIMDs and no CPU cores. amdgpu alone is no sign (it
    drives the integrated GPU of many a Ryzen desktop with an NVIDIA card in it)."""
    for properties in (root / KFD_NODES).glob("*/properties"):
        try:
            fields = dict(line.split(None, 1) for line in properties.read_text().splitlines() if " " in line.strip())
            if int(fields.get("simd_count", "0")) > 0 and int(fields.get("cpu_cores_count", "0")) == 0:
                return True
        except (OSError, ValueError):
            continue
    return False


BUILTIN_VENDORS: tuple[VendorSpec, ...] = (
    VendorSpec("nvidia", "bench.device.nvidia:NvidiaGpus", "pynvml", "nvidia-ml-py", nvidia_gpu_present),
    # amdsmi on PyPI is an unofficial build: ROCm ships the one to install, under /opt/rocm
    VendorSpec("amd", "bench.device.amd:AmdGpus", "amdsmi", "/opt/rocm/share/amd_smi", amd_gpu_present),
)
DEFAULT_VENDOR = BUILTIN_VENDORS[0].name  # whose reasons a machine without any GPU driver is told


def driver_present(spec: VendorSpec, root: Path = Path("/")) -> bool:
    """Whether the vendor's driver drives one of its GPUs here (`root`: a test's stand-in for /)."""
    return spec.gpu_present(root)


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
    """The GPU vendors known here, in the order they are asked: the built-in ones (NVIDIA, AMD),
    then those installed packages add (`plugins`)."""
    return (*(spec.load() for spec in BUILTIN_VENDORS), *plugins())


def inventories() -> tuple[tuple[GpuVendor, Inventory | DeviceError], ...]:
    """Every vendor known here (`vendors`, in order) with its inventory, or the DeviceError that
    says why its library cannot be read."""
    from bench.device.base import DeviceError

    found: list[tuple[GpuVendor, Inventory | DeviceError]] = []
    for vendor in vendors():
        try:
            found.append((vendor, vendor.inventory()))
        except DeviceError as exc:
            found.append((vendor, exc))
    return tuple(found)


def gpus_on_node() -> int | None:
    """How many GPUs the vendor libraries list on this machine: every one they see, not only those
    CUDA_VISIBLE_DEVICES or HIP_VISIBLE_DEVICES leave this process (a container's cgroup may hide
    more). A node-level meter (the BMC) sees them all, busy or idle. None where no vendor library
    can be read."""
    from bench.device.base import DeviceError

    counts = [len(listed.gpus) for _, listed in inventories() if not isinstance(listed, DeviceError)]
    return sum(counts) if counts else None


def vendors_shown() -> frozenset[str]:
    """The vendors whose failure to list GPUs is worth saying: every plugin (installed on purpose),
    a built-in vendor whose driver drives one of its GPUs here, and the default vendor (NVIDIA) where no
    built-in vendor's driver is (a machine without a GPU is told why NVML cannot be used)."""
    builtin = {spec.name: spec for spec in BUILTIN_VENDORS}
    loaded = {name for name, spec in builtin.items() if driver_present(spec)}
    shown = set(loaded or {DEFAULT_VENDOR})
    shown.update(vendor.name for vendor in plugins())
    return frozenset(shown)


def vendor_for(uuid: str) -> GpuVendor:
    """The vendor that measures and controls the GPU with this UUID.

    The vendors whose inventory can be read here and lists a GPU are asked. With one, that one, without looking
    the GPU up (its own calls then say when it does not know the GPU, in its words); with several,
    the first whose inventory lists the GPU or a MIG instance of it. With none, the default vendor
    (NVIDIA), whose calls say why it cannot be used, where it is the only vendor worth hearing
    from (`vendors_shown`); else DeviceUnavailable naming each shown vendor's reason.
    DeviceUnavailable too when several vendors work and none lists the GPU.
    """
    from bench.device.base import DeviceError, DeviceUnavailable

    listed = inventories()
    known = tuple(vendor for vendor, _ in listed)
    shown = vendors_shown()
    usable: list[tuple[GpuVendor, Inventory]] = []
    reasons: list[str] = []
    for vendor, inventory in listed:
        if isinstance(inventory, DeviceError):
            if vendor.name in shown:
                reasons.append(f"{vendor.name}: {inventory}")
        elif inventory.gpus:  # a library that works but lists no GPU is no candidate
            usable.append((vendor, inventory))
    if len(usable) == 1:
        return usable[0][0]
    if not usable:
        if shown == {DEFAULT_VENDOR}:
            return known[0]
        raise DeviceUnavailable(f"no GPU vendor library can be used for GPU {uuid} ({'; '.join(reasons)})")
    for vendor, inventory in usable:
        if inventory.by_uuid(uuid) is not None or inventory.mig_parent(uuid) is not None:
            return vendor
    listing = [f"{vendor.name}: not listed" for vendor, _ in usable] + reasons
    raise DeviceUnavailable(f"no GPU vendor library lists GPU {uuid} ({'; '.join(listing)})")


def vendor_libraries(machine: bool = False, root: Path = Path("/")) -> dict[str, str]:
    """The vendor libraries to look for, module name -> pip distribution ({"pynvml": "nvidia-ml-py"}).

    All of them, or with `machine` those of the vendors whose GPUs are here (under
    `root`), and the default vendor's where none is: `make gpu-check` on an NVIDIA machine does
    not ask for amdsmi, nor on an AMD machine for pynvml."""
    specs = BUILTIN_VENDORS
    if machine:
        specs = tuple(spec for spec in BUILTIN_VENDORS if driver_present(spec, root)) or BUILTIN_VENDORS[:1]
    return {spec.library: spec.distribution for spec in specs}


def library_found(module: str) -> bool:
    """Whether a vendor library is installed, looked up without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing; a module blocked with None
        return False
