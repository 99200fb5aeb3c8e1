"""The vendor-neutral device interface: what a GPU vendor implements (`GpuVendor`), the types it
returns and the errors it raises. Nothing here imports a vendor library.

Units are in the names: watts (`_w`), bytes (`_bytes`), MHz (`_mhz`). A GPU is named by its UUID
as the vendor spells it; every lookup also takes the form torch reports (without a "GPU-" prefix).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from bench.monitor.base import PowerSource

__all__ = [
    "ControlError",
    "DeviceError",
    "DeviceUnavailable",
    "ErrorWatch",
    "GpuControls",
    "GpuHealth",
    "GpuInfo",
    "GpuVendor",
    "Inventory",
    "NoPermission",
    "NotSupported",
    "OutOfRange",
    "PowerLimits",
]


# --- errors: a vendor maps its library's errors to these, each with a one-line message ----------


class DeviceError(Exception):
    """A device query or change failed; the message names the device and the call in one line."""


class DeviceUnavailable(DeviceError):
    """The vendor library cannot be used here, or not for this device; the message says why in words
    a user can act on (not installed, no driver, unknown GPU, a MIG instance, ...)."""


class ControlError(DeviceError):
    """Reading or changing a GPU's power limit or clocks failed; the message names the GPU and call."""


class NoPermission(ControlError):
    """The driver refused a change: it needs administrator rights."""


class OutOfRange(ControlError):
    """The value is outside what the GPU accepts; the message lists the valid range."""


class NotSupported(ControlError):
    """The GPU or driver does not have this control."""


# --- inventory ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """Identity and static limits of one GPU as its vendor library sees it, in the library's index
    order (which need not be CUDA's). None where the GPU or driver does not say."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str | None
    memory_bytes: int | None
    power_limit_w: float | None  # the limit enforced now
    mig_mode: bool | None = None  # MIG (or another partitioning) enabled; None: the GPU or driver does not say
    mig_uuids: tuple[str, ...] = ()  # its instances' UUIDs ("MIG-..."), when enabled
    serial: str | None = None  # the board's serial number
    power_limit_min_w: float | None = None  # the range a power limit may be set in
    power_limit_max_w: float | None = None
    module_id: int | None = None  # its slot on the baseboard (an HGX board's GPU 1-8)
    vbios: str | None = None  # its firmware version


@dataclass(frozen=True)
class GpuHealth:
    """What an acceptance check reads of a GPU (DCGM's diagnostics look at the same): the PCIe link
    now against its maximum, uncorrectable ECC errors since the driver loaded, and memory rows
    remapped or waiting to be (a pending remap needs a GPU reset; a failed one, a new board).
    None where the GPU or driver does not say. A link trains down when idle: a generation read at
    rest says little on its own (the fleet report compares it with the siblings')."""

    pcie_gen: int | None = None
    pcie_gen_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    ecc_uncorrected: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None

    def to_dict(self) -> dict[str, int | bool | None]:
        return {
            "pcie_gen": self.pcie_gen,
            "pcie_gen_max": self.pcie_gen_max,
            "pcie_width": self.pcie_width,
            "pcie_width_max": self.pcie_width_max,
            "ecc_uncorrected": self.ecc_uncorrected,
            "remapped_rows_pending": self.remapped_rows_pending,
            "remapped_rows_failure": self.remapped_rows_failure,
        }


@dataclass(frozen=True)
class Inventory:
    """The driver and every GPU one vendor library can see."""

    driver_version: str
    cuda_driver_version: str | None  # the newest CUDA the driver runs ("12.4"); None where it has none
    gpus: tuple[GpuInfo, ...]

    def by_uuid(self, uuid: str | None) -> GpuInfo | None:
        """Find a GPU by UUID, with or without the 'GPU-' prefix (torch reports it without)."""
        if not uuid:
            return None
        wanted = uuid.lower().removeprefix("gpu-")
        for gpu in self.gpus:
            if gpu.uuid.lower().removeprefix("gpu-") == wanted:
                return gpu
        return None

    def mig_parent(self, uuid: str | None) -> GpuInfo | None:
        """The physical GPU a MIG instance belongs to, by the instance's UUID with or without its
        'MIG-' prefix (torch reports it without); None when no GPU lists that instance."""
        if not uuid:
            return None
        wanted = uuid.lower().removeprefix("mig-")
        for gpu in self.gpus:
            if any(m.lower().removeprefix("mig-") == wanted for m in gpu.mig_uuids):
                return gpu
        return None


# --- control --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerLimits:
    """A GPU's power limits in watts; None where the GPU or driver does not report one.

    current_w: the limit set; enforced_w: the one the driver applies after every limiter (can be
    lower than current_w); default_w: the board's default; min_w, max_w: what a change accepts.
    """

    current_w: float | None
    enforced_w: float | None
    default_w: float | None
    min_w: float | None
    max_w: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "current_w": self.current_w,
            "enforced_w": self.enforced_w,
            "default_w": self.default_w,
            "min_w": self.min_w,
            "max_w": self.max_w,
        }

    def range_text(self) -> str | None:
        """'valid: 200-700 W', or None where the constraints are unknown."""
        if self.min_w is None or self.max_w is None:
            return None
        return f"valid: {self.min_w:g}-{self.max_w:g} W"


@dataclass(frozen=True)
class GpuControls:
    """What `wattbench info` shows of one GPU's operating point: its power limits and the SM clocks
    it can be locked to (MHz, highest first; empty where the GPU does not list them)."""

    uuid: str
    limits: PowerLimits
    sm_clocks_mhz: tuple[int, ...]

    def clock_range_text(self) -> str:
        """'1980..210 MHz (119 steps)', or '-' where the GPU lists no clocks."""
        clocks = self.sm_clocks_mhz
        if not clocks:
            return "-"
        return f"{clocks[0]}..{clocks[-1]} MHz ({len(clocks)} steps)"

    def to_dict(self) -> dict[str, dict[str, float | None] | dict[str, int] | None]:
        clocks = self.sm_clocks_mhz
        return {
            "power_limits": self.limits.to_dict(),
            "sm_clocks_mhz": {"max": clocks[0], "min": clocks[-1], "steps": len(clocks)} if clocks else None,
        }


class ErrorWatch:
    """The GPU error events (NVIDIA's Xids: an uncorrectable ECC error, a fallen-off bus, a
    faulting kernel) seen while it is open: `events` maps a GPU's UUID to the event codes, in the
    order seen. This base watches nothing (`watching` False): a vendor without such events."""

    watching = False

    def __init__(self) -> None:
        self.events: dict[str, list[int]] = {}

    def __enter__(self) -> ErrorWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop watching (nothing to stop here)."""


# --- the interface ----------------------------------------------------------------------------------


class GpuVendor(ABC):
    """One GPU vendor's library behind wattbench: inventory, telemetry, control and permission.

    Contract (API_VERSION 1 in bench.device):
    - No method lets a library error escape: each is mapped to a `DeviceError` subclass whose
      message is one line naming the GPU and the call.
    - `inventory()` raises `DeviceUnavailable` (with the reason) when the library cannot be used.
    - A query the GPU does not support gives None (or an empty list), never an error.
    - The controls raise `ControlError` subclasses (`NoPermission`, `OutOfRange` with the valid
      range, `NotSupported`): a sweep must know that a setting did not take.
    - `may_change_settings()` decides without trying a change (`info` runs on shared machines).
    - The vendor library is imported lazily, inside the methods: importing the vendor's module
      never fails on a machine without the library.
    - Inventory and telemetry are required; control and permission are optional (the defaults
      say "not supported"). `api_version` names the contract a vendor was written for.
    """

    name: ClassVar[str]  # short, lower case: "nvidia"
    api_version: ClassVar[int]  # the bench.device.API_VERSION it was written for (a plugin is checked)

    # --- inventory ---

    @abstractmethod
    def inventory(self) -> Inventory:
        """The driver version and every GPU the library can see; DeviceUnavailable with the reason."""

    # --- telemetry ---

    @abstractmethod
    def power_source(self, uuid: str, device_id: str, probe: bool = True) -> PowerSource:
        """A power source for the GPU with this UUID, measured as `device_id` ("cuda:0"): energy
        counter and/or power, SM and memory clocks, temperature, utilisation, throttle reasons,
        memory used. `probe` measures how often the counter and power update (about 0.3 s each).
        DeviceUnavailable when the GPU cannot be measured (unknown, a MIG instance, neither
        energy nor power reported)."""

    # --- control: optional (an accelerator without these levers says so) ---

    def power_limits(self, uuid: str) -> PowerLimits:
        """The GPU's current, enforced, default, minimum and maximum power limit."""
        raise NotSupported(f"{self.name} GPU {uuid}: power limits are not supported by this vendor")

    def set_power_limit(self, uuid: str, watts: float) -> None:
        """Set the GPU's power limit; OutOfRange (listing the valid range) before the driver is
        asked when the GPU's constraints exclude `watts`."""
        raise NotSupported(f"{self.name} GPU {uuid}: power limits are not supported by this vendor")

    def supported_sm_clocks(self, uuid: str) -> list[int]:
        """The SM clocks the GPU can be locked to, MHz, highest first; [] where it lists none."""
        return []

    def sm_clock_mhz(self, uuid: str) -> int | None:
        """The GPU's SM clock now; None where not reported."""
        return None

    def lock_sm_clocks(self, uuid: str, mhz: int) -> None:
        """Lock the GPU's SM clock to `mhz`; OutOfRange outside `supported_sm_clocks`."""
        raise NotSupported(f"{self.name} GPU {uuid}: locking clocks is not supported on this device")

    def reset_sm_clocks(self, uuid: str) -> None:
        """Undo any SM clock lock: the GPU picks its clocks again."""
        raise NotSupported(f"{self.name} GPU {uuid}: locking clocks is not supported on this device")

    # --- health: optional ---

    def health(self, uuid: str) -> GpuHealth | None:
        """The GPU's health signals (GpuHealth); None where the vendor reads none."""
        return None

    def watch_errors(self, uuids: Sequence[str]) -> ErrorWatch:
        """An ErrorWatch over these GPUs: open it for a run, read `events` after (NVIDIA: Xid
        events). The default watches nothing."""
        return ErrorWatch()

    # --- permission ---

    def may_change_settings(self) -> tuple[bool, str]:
        """Whether this process may change power limits and clocks, and why (one phrase), decided
        without trying a change."""
        return False, f"the {self.name} vendor offers no control"

    # --- built on the above: a vendor need not implement these ---

    def restore(self, uuid: str, power_limit_w: float | None, reset_clocks: bool) -> None:
        """Put a GPU back as a sweep found it: its power limit then (None: leave the limit alone)
        and, when `reset_clocks`, its SM clocks unlocked."""
        if power_limit_w is not None:
            self.set_power_limit(uuid, power_limit_w)
        if reset_clocks:
            self.reset_sm_clocks(uuid)

    def controls(self, uuid: str) -> GpuControls:
        """Power limits and lockable SM clocks of one GPU, read without changing anything."""
        return GpuControls(uuid=uuid, limits=self.power_limits(uuid), sm_clocks_mhz=tuple(self.supported_sm_clocks(uuid)))

    def controls_by_uuid(self, uuids: Iterable[str]) -> dict[str, GpuControls | str]:
        """Each GPU's controls (`controls`), or the one line why they cannot be read."""
        found: dict[str, GpuControls | str] = {}
        for uuid in uuids:
            try:
                found[uuid] = self.controls(uuid)
            except DeviceError as exc:
                found[uuid] = str(exc)
        return found

    def reset(self) -> None:  # noqa: B027 - optional hook: a vendor without library state has nothing to do
        """Release the library (shut it down if this process started it); the next call starts it
        again. Tests call this to start from a clean state."""
