"""Carbon: grams of CO2-equivalent for an amount of energy at a grid's carbon intensity.

Presets are annual averages, each with its source, year and side: `generation` (gCO2e per kWh
generated: what the power plants emitted) or `consumption` (per kWh consumed: a national
emission factor as a government publishes it for users of grid electricity, which counts what
is lost between plant and meter). A user may give any number instead (`--grid-intensity 120`).
Marginal or hourly intensity can differ widely from these averages.
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
    year: int | None = None
    side: str = "generation"  # or "consumption" (see the module docstring), "given" by the user

    def describe(self) -> str:
        """'417 gCO2e/kWh, consumption side, 2023: source'."""
        when = f", {self.year}" if self.year else ""
        side = f", {self.side} side" if self.side != "given" else ""
        return f"{self.g_per_kwh:g} gCO2e/kWh{side}{when}: {self.source}"


PRESETS: dict[str, GridIntensity] = {
    p.name.lower(): p
    for p in (
        GridIntensity("France", 56.0, "Ember, carbon intensity of electricity generation (via Our World in Data)", 2023),
        GridIntensity("Germany", 381.0, "Ember, carbon intensity of electricity generation (via Our World in Data)", 2023),
        GridIntensity("China", 582.0, "Ember, carbon intensity of electricity generation (via Our World in Data)", 2023),
        GridIntensity("India", 713.0, "Ember, carbon intensity of electricity generation (via Our World in Data)", 2023),
        GridIntensity("World", 481.0, "Ember, global power sector emissions intensity", 2023),
        # Korea: the government's national grid emission factor for 2023 (published December 2025),
        # a consumption-side factor; it replaces the generation-side 413 g this table held before.
        GridIntensity(
            "South Korea",
            417.0,
            "Korean government, national electricity (grid) emission factor for 2023, published December 2025",
            2023,
            "consumption",
        ),
        GridIntensity("USA", 345.0, "US EIA, power sector CO2 intensity: about 760 lb CO2/MWh", 2023),
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
    return GridIntensity(f"{value:g} gCO2e/kWh", value, "given by the user", None, "given")


def grams_co2e(joules: float, intensity: GridIntensity) -> float:
    return joules / J_PER_KWH * intensity.g_per_kwh
