"""A user-given wattage (wall meter, PDU, spec sheet) for devices nothing can measure.

Its figures are estimates: the window's source says "nominal" and reports label them so.
"""

from __future__ import annotations

import math
import time

from bench.monitor.base import SOURCE_NOMINAL, PowerSource, Reading


class NominalSource(PowerSource):
    power_source = SOURCE_NOMINAL

    def __init__(self, watts: float, device_id: str) -> None:
        if not (math.isfinite(watts) and watts > 0):
            raise ValueError(f"nominal watts must be a positive number, got {watts}")
        self.watts = float(watts)
        self.device_id = device_id

    def read(self) -> Reading:
        return Reading(time.monotonic(), power_w=self.watts)

    def describe(self) -> dict:
        return {**super().describe(), "nominal_watts": self.watts}
