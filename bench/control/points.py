"""Operating points as the user asks for them: `--power-limit W[,W...]` (watts, or percent of the
default limit) crossed with `--gpu-clocks MHz[,MHz...]` (locked SM clocks)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.errors import UsageError

_LIMIT = re.compile(r"^(\d+(?:\.\d+)?)\s*(w|%)?$", re.IGNORECASE)


@dataclass(frozen=True)
class OperatingPoint:
    """One setting of a GPU: a power limit as requested ("450" watts or "70%" of the default)
    and/or locked SM clocks in MHz; None leaves that knob as found."""

    power_limit: str | None = None
    gpu_clocks_mhz: int | None = None

    @property
    def suffix(self) -> str:
        """The part of a case id (and of its identity across runs) that names the point:
        '[pl=450W]', '[pl=70%]', '[clk=1410MHz]', '[pl=450W,clk=1410MHz]'; '' for none."""
        parts = []
        if self.power_limit is not None:
            parts.append(f"pl={self.power_limit}" + ("" if self.power_limit.endswith("%") else "W"))
        if self.gpu_clocks_mhz is not None:
            parts.append(f"clk={self.gpu_clocks_mhz}MHz")
        return f"[{','.join(parts)}]" if parts else ""

    def watts(self, default_w: float | None) -> float | None:
        """The requested limit in watts (a percent of `default_w`); None when none is requested."""
        if self.power_limit is None:
            return None
        if self.power_limit.endswith("%"):
            if default_w is None:
                raise UsageError(f"--power-limit {self.power_limit}: this GPU does not say its default limit; give watts")
            return default_w * float(self.power_limit[:-1]) / 100
        return float(self.power_limit)


def parse_power_limits(text: str) -> list[str]:
    """'300,450W,70%' -> ['300', '450', '70%']; one-line UsageError naming what is valid."""
    found = []
    for item in (t.strip() for t in text.split(",")):
        m = _LIMIT.match(item)
        value = float(m.group(1)) if m else 0.0
        percent = bool(m and m.group(2) == "%")
        if not m or value <= 0 or (percent and value > 100):
            raise UsageError(
                f"--power-limit {item!r} is not a power limit; valid: watts (450 or 450W) or a percent "
                "of the default limit (1% to 100%), several separated by commas"
            )
        found.append(f"{value:g}%" if percent else f"{value:g}")
    return list(dict.fromkeys(found))


def parse_clocks(text: str) -> list[int]:
    """'1410,1980' -> [1410, 1980]; one-line UsageError naming what is valid."""
    found = []
    for item in (t.strip() for t in text.split(",")):
        digits = item.lower().removesuffix("mhz").strip()
        if not digits.isdigit() or int(digits) <= 0:
            raise UsageError(
                f"--gpu-clocks {item!r} is not a clock; valid: SM clocks in MHz (1410 or 1410MHz), several separated by commas"
            )
        found.append(int(digits))
    return list(dict.fromkeys(found))


def operating_points(limits: list[str], clocks: list[int]) -> list[OperatingPoint]:
    """Every power limit crossed with every clock (an empty axis leaves that knob as found)."""
    axis_pl: list[str | None] = list(limits) or [None]
    axis_clk: list[int | None] = list(clocks) or [None]
    return [OperatingPoint(pl, clk) for pl in axis_pl for clk in axis_clk]
