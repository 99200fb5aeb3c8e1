"""Live telemetry of one AMD GPU: `AmdSmiSource`, the monitor's power source for it.

Energy from AMD SMI's accumulated energy counter (amdsmi_get_energy_count: `energy_accumulator`,
`power` in releases before 6.x, times `counter_resolution` microjoules), corrected for wrap: a
count below the previous one is taken to have wrapped at the smallest power of two above the
previous count. A counter that does not advance while the GPU draws power (MI100-era firmware
left it frozen) is found while probing, or after FROZEN_AFTER_S of readings at run time: from
then on the source reports no energy and flags every reading "energy_counter_frozen", so a
window falls back to the integral of the sampled power.

Power from amdsmi_get_power_info, in watts: `current_socket_power` where it is a number (MI300
series), else `average_socket_power` (MI200 and older), the other being "N/A". Then memory used,
GFX and memory clocks, the hotspot (junction) temperature, and on MI300 and later the violation
status's active flags as throttle reasons. An error in a read leaves its field None and is
recorded in the reading's `error`: a read never raises.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from bench.device.amd import gpus
from bench.device.amd.smi import AmdSmiError, AmdSmiUnavailable, ensure_init, find_handle, number, optional
from bench.monitor.base import PowerSource, Reading, measure_update_period

__all__ = [
    "ENERGY_KEYS",
    "FLAG_COUNTER_FROZEN",
    "FROZEN_AFTER_S",
    "POWER_KEYS",
    "SOURCE_AMDSMI_ENERGY",
    "SOURCE_AMDSMI_POWER",
    "VIOLATIONS",
    "AmdSmiSource",
]

SOURCE_AMDSMI_ENERGY = "amdsmi_energy"
SOURCE_AMDSMI_POWER = "amdsmi_power"
FLAG_COUNTER_FROZEN = "energy_counter_frozen"
FROZEN_AFTER_S = 1.0  # a counter still for this long while power is drawn is frozen

ENERGY_KEYS = ("energy_accumulator", "power")  # 6.x and later; older releases
POWER_KEYS = ("current_socket_power", "average_socket_power")  # MI300 series; MI200 and older
# amdsmi_get_violation_status's active flags (MI300 and later): our throttle reason names.
VIOLATIONS = {
    "active_ppt_pwr": "ppt_power",
    "active_socket_thrm": "socket_thermal",
    "active_prochot_thrm": "prochot_thermal",
    "active_vr_thrm": "vr_thermal",
    "active_hbm_thrm": "hbm_thermal",
}


def _member(smi: ModuleType, enum: str, member: str) -> Any:
    return getattr(getattr(smi, enum, None), member, None)


class AmdSmiSource(PowerSource):
    """Power, energy and telemetry of one AMD GPU through AMD SMI.

    The counter's corrected total is state of the source, updated under a lock with the counter
    read: a source is read from two threads at once (the sampler and a window edge)."""

    def __init__(self, uuid: str, device_id: str, probe: bool = True) -> None:
        self.device_id = device_id
        smi = self.smi = ensure_init()
        self.handle: object = find_handle(smi, uuid)
        self._lock = threading.Lock()
        self._last_counts: int | None = None
        self._total_counts = 0  # counts since the first reading, wraps included
        self._advanced_t: float | None = None  # when the counter last advanced
        self.counter_frozen = False
        self._gfx = _member(smi, "AmdSmiClkType", "GFX")
        self._mem = _member(smi, "AmdSmiClkType", "MEM")
        self._vram = _member(smi, "AmdSmiMemoryType", "VRAM")
        self._current = _member(smi, "AmdSmiTemperatureMetric", "CURRENT")
        self.power_key = self._probe_power_key()
        if self.power_key is not None:
            self.power_source = SOURCE_AMDSMI_POWER
        if self._raw_energy(None) is not None:
            self.counter_source = SOURCE_AMDSMI_ENERGY
        self._sensor = self._probe_sensor()
        self._violation_fn = self._probe(getattr(smi, "amdsmi_get_violation_status", None))
        if probe:
            if self.counter_source:
                seen: set[int] = set()

                def counts() -> int | None:
                    raw = self._raw_energy(None)
                    if raw is None:
                        return None
                    seen.add(raw[0])
                    return raw[0]

                self.counter_update_s = measure_update_period(counts)
                if len(seen) <= 1 and (self._power_w(None) or 0.0) > 0:
                    self._freeze()
            if self.power_key is not None:
                self.power_update_s = measure_update_period(lambda: self._power_w(None))

    # --- probing ---

    def _probe(self, fn: Callable[..., Any] | None, *args: Any) -> Callable[..., Any] | None:
        """`fn` where it answers for this GPU; None where missing, unsupported or failing."""
        if fn is None:
            return None
        try:
            return fn if optional(fn, self.handle, *args) is not None else None
        except AmdSmiError:
            return None

    def _probe_power_key(self) -> str | None:
        try:
            info = optional(self.smi.amdsmi_get_power_info, self.handle)
        except AmdSmiError:
            return None
        if not isinstance(info, dict):
            return None
        return next((key for key in POWER_KEYS if number(info.get(key)) is not None), None)

    def _probe_sensor(self) -> Any:
        """The temperature sensor this GPU has: the hotspot (junction), else the edge (MI300 has none)."""
        fn = getattr(self.smi, "amdsmi_get_temp_metric", None)
        for member in ("HOTSPOT", "EDGE"):
            sensor = _member(self.smi, "AmdSmiTemperatureType", member)
            if sensor is not None and self._current is not None and self._probe(fn, sensor, self._current):
                return sensor
        return None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "power_field": self.power_key,
            "energy_counter_frozen": self.counter_frozen,
            "throttle_reasons": "amdsmi_get_violation_status" if self._violation_fn else None,
        }

    # --- reads ---

    def _get(self, errors: list[str] | None, fn: Callable[..., Any] | None, *args: Any) -> Any:
        """`fn(handle, *args)`; None where unsupported or failed, the failure's message going to
        `errors` (the list of the read in progress)."""
        if fn is None:
            return None
        try:
            return optional(fn, self.handle, *args)
        except AmdSmiError as exc:
            if errors is not None:
                errors.append(str(exc))
            return None

    def _raw_energy(self, errors: list[str] | None) -> tuple[int, float] | None:
        """The raw counter and its resolution (microjoules per count); None where not reported."""
        info = self._get(errors, self.smi.amdsmi_get_energy_count)
        if not isinstance(info, dict):
            return None
        counts = next((info[key] for key in ENERGY_KEYS if number(info.get(key)) is not None), None)
        resolution = number(info.get("counter_resolution"))
        if counts is None or not resolution or resolution <= 0:
            return None
        return int(counts), resolution

    def _power_w(self, errors: list[str] | None) -> float | None:
        info = self._get(errors, self.smi.amdsmi_get_power_info)
        return number(info.get(self.power_key)) if isinstance(info, dict) and self.power_key else None

    def _freeze(self) -> None:
        """The counter is frozen: report no energy from now on; windows use the power integral."""
        self.counter_frozen = True
        self.counter_source = None
        self.counter_update_s = None

    def _energy_j(self, t: float, raw: tuple[int, float] | None, power_w: float | None) -> float | None:
        """Joules since the first reading, wraps added; None once the counter is found frozen."""
        if raw is None or self.counter_frozen:
            return None
        counts, resolution_uj = raw
        if self._last_counts is None:
            self._last_counts, self._advanced_t = counts, t
            return 0.0
        delta = counts - self._last_counts
        if delta < 0:  # wrapped: at the smallest power of two above the last count
            delta += 1 << max(self._last_counts.bit_length(), 1)
        if delta or not power_w or power_w <= 0:
            self._advanced_t = t  # advanced, or still with no power drawn: nothing wrong
        elif self._advanced_t is not None and t - self._advanced_t >= max(FROZEN_AFTER_S, 20 * (self.counter_update_s or 0.0)):
            self._freeze()
            return None
        self._last_counts = counts
        self._total_counts += delta
        return self._total_counts * resolution_uj * 1e-6

    def _throttle(self, errors: list[str]) -> tuple[str, ...]:
        status = self._get(errors, self._violation_fn)
        if not isinstance(status, dict):
            return ()
        return tuple(name for key, name in VIOLATIONS.items() if status.get(key) is True)

    def _clock(self, errors: list[str], kind: Any) -> int | None:
        if kind is None:
            return None
        info = self._get(errors, self.smi.amdsmi_get_clock_info, kind)
        mhz = number(info.get("clk")) if isinstance(info, dict) else None
        return int(mhz) if mhz is not None else None

    def read(self) -> Reading:
        """Energy and power first, right after the timestamp they belong to; then telemetry."""
        smi = self.smi
        errors: list[str] = []
        with self._lock:
            t = time.monotonic()
            raw = self._raw_energy(errors) if self.counter_source else None
            power = self._power_w(errors) if self.power_key else None
            energy = self._energy_j(t, raw, power)
        memory = (
            self._get(errors, getattr(smi, "amdsmi_get_gpu_memory_usage", None), self._vram) if self._vram is not None else None
        )
        temperature = (
            self._get(errors, smi.amdsmi_get_temp_metric, self._sensor, self._current) if self._sensor is not None else None
        )
        sm_clock, memory_clock = self._clock(errors, self._gfx), self._clock(errors, self._mem)
        throttle = self._throttle(errors)
        return Reading(
            t_s=t,
            energy_j=energy,
            power_w=power,
            error="amdsmi: " + "; ".join(errors) if errors else None,
            memory_used_bytes=int(memory) if isinstance(memory, int) else None,
            sm_clock_mhz=sm_clock,
            memory_clock_mhz=memory_clock,
            temperature_c=int(temperature) if isinstance(temperature, int | float) else None,
            throttle_reasons=throttle,
            flags=(FLAG_COUNTER_FROZEN,) if self.counter_frozen else (),
        )


def power_source(uuid: str, device_id: str, probe: bool = True) -> AmdSmiSource:
    """An AmdSmiSource; AmdSmiUnavailable where the GPU reports neither energy nor power, and for
    a partition other than a GPU's first (energy is per physical GPU: gpus.PARTITION_POWER_REASON)."""
    listed = gpus.inventory()
    whole = listed.by_uuid(uuid)
    if listed.mig_parent(uuid) is not None or (whole is not None and not gpus.first_partition(whole)):
        raise AmdSmiUnavailable(gpus.PARTITION_POWER_REASON)
    source = AmdSmiSource(uuid, device_id, probe=probe)
    if not (source.counter_source or source.power_source):
        raise AmdSmiUnavailable("AMD SMI reports neither energy nor power for this GPU")
    return source
