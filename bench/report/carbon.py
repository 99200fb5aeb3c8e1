"""Carbon: grams of CO2-equivalent for an amount of energy at a grid's carbon intensity.

Presets are annual averages of electricity generation (gCO2e per kWh generated), each with its
source and year; a user may give any number instead (`--grid-intensity 120`). Marginal or
hourly intensity can differ widely from these averages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.errors import UsageError

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class GridIntensity:
    name: str
    g_per_kwh: float
    source: str


PRESETS: dict[str, GridIntensity] = {
    p.name.lower(): p
    for p in (
        GridIntensity("France", 56.0, "Ember, carbon intensity of electricity generation, 2023 (via Our World in Data)"),
        GridIntensity("Germany", 381.0, "Ember, carbon intensity of electricity generation, 2023 (via Our World in Data)"),
        GridIntensity("China", 582.0, "Ember, carbon intensity of electricity generation, 2023 (via Our World in Data)"),
        GridIntensity("India", 713.0, "Ember, carbon intensity of electricity generation, 2023 (via Our World in Data)"),
        GridIntensity("World", 481.0, "Ember, global power sector emissions intensity, 2023"),
        GridIntensity("South Korea", 413.0, "lowcarbonpower.org, carbon intensity of electricity in 2023 (Oct-Dec forecast)"),
        GridIntensity("USA", 345.0, "US EIA, power sector CO2 intensity 2023: about 760 lb CO2/MWh"),
    )
}


def grid_intensity(text: str) -> GridIntensity:
    """A number of gCO2e/kWh, or a preset region name (case-insensitive)."""
    preset = PRESETS.get(text.strip().lower())
    if preset is not None:
        return preset
    try:
        value = float(text)
    except ValueError:
        names = ", ".join(p.name for p in PRESETS.values())
        raise UsageError(f"--grid-intensity {text!r}: give gCO2e/kWh (a number) or a region: {names}") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"--grid-intensity {text!r} must be a number of gCO2e/kWh >= 0")
    return GridIntensity(f"{value:g} gCO2e/kWh", value, "given by the user")


def grams_co2e(joules: float, intensity: GridIntensity) -> float:
    return joules / J_PER_KWH * intensity.g_per_kwh
