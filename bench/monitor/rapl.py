"""CPU energy from Linux powercap RAPL (/sys/class/powercap/intel-rapl:*).

Only the package zones and their dram subzones are summed: psys covers the whole platform and
core/uncore sit inside package, so adding any of them would count energy twice. Each counter
wraps at its max_energy_range_uj; the source keeps a running total across wraps, which is right
as long as it is read more often than a wrap (minutes at full load). Since Linux 5.10 energy_uj
is readable by root only: that is reported as "unavailable: permission denied", never guessed.

A source is read from two threads (the sampler, and the window edges on the caller's thread), so
the read-and-advance of the zones runs under a lock: two interleaved reads could otherwise see
the counter go backwards (a stale read stored after a newer one) and count a whole wrap.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.monitor.base import SOURCE_RAPL, PowerSource, Reading, measure_update_period

POWERCAP_ROOT = Path("/sys/class/powercap")


class RaplUnavailable(Exception):
    """No usable RAPL zone; the message is the reason ("not present", "permission denied")."""


@dataclass
class _Zone:
    name: str
    path: Path
    max_range_uj: int
    last_uj: int
    total_uj: int = 0

    def read_uj(self) -> int:
        with open(self.path / "energy_uj", "rb") as f:
            return int(f.read())

    def advance(self) -> None:
        now = self.read_uj()
        delta = now - self.last_uj
        if delta < 0:  # the counter wrapped
            delta += self.max_range_uj
        self.total_uj += delta
        self.last_uj = now


def _zone_dirs(root: Path) -> list[tuple[str, Path]]:
    """(name, dir) of every package zone and its dram subzones, in a stable order."""
    zones = []
    for top in sorted(root.glob("intel-rapl:*")):
        if top.name.count(":") != 1:
            continue  # subzones are handled under their package
        name = _read_text(top / "name")
        if name is None or not name.startswith("package"):
            continue
        zones.append((name, top))
        for sub in sorted(top.glob(f"{top.name}:*")):
            sub_name = _read_text(sub / "name")
            if sub_name == "dram":
                zones.append((f"{name}/dram", sub))
    return zones


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


class RaplSource(PowerSource):
    """Sum of package and dram energy counters of every CPU socket."""

    counter_source = SOURCE_RAPL

    def __init__(self, root: Path = POWERCAP_ROOT, device_id: str = "cpu", probe: bool = True) -> None:
        self.device_id = device_id
        dirs = _zone_dirs(root)
        if not dirs:
            raise RaplUnavailable("not present (no powercap package zone)")
        self.zones: list[_Zone] = []
        for name, path in dirs:
            try:
                max_range = int((path / "max_energy_range_uj").read_text())
                first = int((path / "energy_uj").read_text())
            except PermissionError:
                raise RaplUnavailable(f"permission denied reading {path / 'energy_uj'} (root only since Linux 5.10)") from None
            except (OSError, ValueError) as exc:
                raise RaplUnavailable(f"cannot read {path}: {exc}") from None
            self.zones.append(_Zone(name, path, max_range, first))
        self._lock = threading.Lock()
        if probe:
            self.counter_update_s = measure_update_period(lambda: self.read().energy_j)

    @property
    def zone_names(self) -> list[str]:
        return [z.name for z in self.zones]

    def read(self) -> Reading:
        with self._lock:  # uncontended but for the rare edge that meets a sampler tick
            t = time.monotonic()
            try:
                for zone in self.zones:
                    zone.advance()
            except (OSError, ValueError) as exc:
                return Reading(t, error=f"rapl: {exc}")
            return Reading(t, energy_j=sum(z.total_uj for z in self.zones) * 1e-6)

    def describe(self) -> dict:
        return {**super().describe(), "zones": self.zone_names}


def rapl_status(root: Path = POWERCAP_ROOT) -> str:
    """'ok (zones)' or 'unavailable: reason', for `wattbench info`."""
    if not os.path.isdir(root):
        return "unavailable: not present (no /sys/class/powercap)"
    try:
        source = RaplSource(root, probe=False)
    except RaplUnavailable as exc:
        return f"unavailable: {exc}"
    return f"ok ({', '.join(source.zone_names)})"
