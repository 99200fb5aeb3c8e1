"""The vocabulary every power source speaks: a `Reading` at one instant, and `PowerSource`.

A source belongs to one device ("cuda:0", "cpu"). Every field of a reading is optional: a
source fills in what its hardware supports and leaves the rest None. Cumulative energy is in
joules since an arbitrary origin, already corrected for counter wrap by the source, so a window's
energy is a plain difference. Time is `time.monotonic()` seconds.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Energy sources, best first: what a window's `source` field says.
SOURCE_NVML_ENERGY = "nvml_energy"
SOURCE_NVML_POWER_INSTANT = "nvml_power_instant"
SOURCE_NVML_POWER_AVERAGE = "nvml_power_average"
SOURCE_RAPL = "rapl"
SOURCE_NOMINAL = "nominal"


@dataclass(slots=True)
class Reading:
    t_s: float
    energy_j: float | None = None
    power_w: float | None = None
    memory_used_bytes: int | None = None
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    temperature_c: int | None = None
    utilization_pct: int | None = None
    throttle_reasons: tuple[str, ...] = ()
    error: str | None = None
    # What the source found wrong with its own numbers at this reading, as window flags (e.g.
    # "energy_counter_frozen": the counter stopped while the GPU drew power; its energy_j is then
    # None and the window falls back to the power integral).
    flags: tuple[str, ...] = ()


class PowerSource(ABC):
    """One device's power, energy and telemetry. `read()` must be cheap and must not raise."""

    device_id: str
    counter_source: str | None = None  # label of energy_j when the source has a counter
    power_source: str | None = None  # label of power_w when the source has power
    counter_update_s: float | None = None  # measured period of the energy counter
    power_update_s: float | None = None  # measured period of the power field
    sample_period_s: float | None = None  # read at most this often (None: every sampler tick); seconds
    # What the source's joules include (bench.record.BOUNDARIES): "device" for a GPU board or a
    # CPU package; "node" for a whole server (a BMC); "wall" for an external meter.
    boundary: str = "device"

    @abstractmethod
    def read(self) -> Reading:
        """Everything the source knows now."""

    def describe(self) -> dict[str, Any]:
        """What this source measures, for `wattbench info` and the result file."""
        return {
            "device": self.device_id,
            "energy_counter": self.counter_source,
            "power": self.power_source,
            "counter_update_s": self.counter_update_s,
            "power_update_s": self.power_update_s,
        }

    def close(self) -> None:  # noqa: B027 - optional hook: most sources hold nothing
        """Release what the source holds (file handles)."""


def measure_update_period(read: Callable[[], Any], duration_s: float = 0.3, poll_s: float = 0.0005) -> float | None:
    """Median seconds between changes of a counter or field, polled for `duration_s`.

    None when it changed fewer than three times (slower than the probe, or constant).
    """
    changes: list[float] = []
    last = read()
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        value = read()
        if value is not None and value != last:
            changes.append(time.monotonic())
            last = value
        time.sleep(poll_s)
    if len(changes) < 3:
        return None
    gaps = sorted(b - a for a, b in zip(changes, changes[1:], strict=False))
    return gaps[len(gaps) // 2]
