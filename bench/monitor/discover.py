"""Which power source measures which device here, and why a device has none.

Per device, best first: a GPU gets its vendor's power source (bench.device; NVML for NVIDIA),
matched by UUID; the CPU gets RAPL (package + dram); a device with neither gets the user's
nominal wattage if one was given. This module never imports torch: the caller passes plain
device descriptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.device import vendor_for
from bench.device.base import DeviceError, DeviceUnavailable
from bench.monitor.base import PowerSource
from bench.monitor.nominal import NominalSource
from bench.monitor.rapl import POWERCAP_ROOT, RaplSource, RaplUnavailable


@dataclass(frozen=True)
class DeviceRef:
    """What discovery needs to know of a device: its id ("cuda:0", "cpu"), kind and GPU UUID, and
    for a part of a GPU that cannot be named alone (an AMD partition) the whole GPU's UUID."""

    id: str
    kind: str
    uuid: str | None = None
    partition_of: str | None = None


@dataclass(frozen=True)
class Discovery:
    sources: tuple[PowerSource, ...]
    status: dict[str, str]  # device id -> "nvml_energy + nvml_power_instant" or "unavailable: reason"

    def describe(self) -> list[dict]:
        return [s.describe() for s in self.sources]


def discover(
    devices: Sequence[DeviceRef],
    nominal_watts: float | None = None,
    powercap_root: Path = POWERCAP_ROOT,
    probe: bool = True,
) -> Discovery:
    """Build one source per device that can be measured; say why for the others."""
    sources: list[PowerSource] = []
    status: dict[str, str] = {}
    for device in devices:
        source: PowerSource | None = None
        reason = "unavailable"
        try:
            if device.kind == "cuda":
                if not device.uuid and device.partition_of:
                    raise DeviceUnavailable(
                        f"a partition of GPU {device.partition_of}: power and energy are reported per physical GPU, not per partition"
                    )
                if not device.uuid:
                    raise DeviceUnavailable("the GPU's UUID is unknown")
                vendor = vendor_for(device.uuid)
                source = vendor.power_source(device.uuid, device.id, probe=probe)
                if not (source.counter_source or source.power_source):  # the vendor should have said so
                    source, reason = None, f"{vendor.name} reports neither energy nor power for this GPU"
            elif device.kind == "cpu":
                source = RaplSource(powercap_root, device.id, probe=probe)
        except (DeviceError, RaplUnavailable) as exc:
            reason = str(exc)
        if source is None and nominal_watts is not None:
            source = NominalSource(nominal_watts, device.id)
        if source is None:
            status[device.id] = f"unavailable: {reason}"
            continue
        sources.append(source)
        labels = [x for x in (source.counter_source, source.power_source) if x]
        status[device.id] = " + ".join(labels) + (" (estimate)" if isinstance(source, NominalSource) else "")
    return Discovery(tuple(sources), status)
