"""What else the machine was doing while a benchmark measured: CPU used by other processes.

A benchmark on a shared machine cannot stop other processes, but it can say they were there.
`LoadMeter` reads the machine's busy time from /proc/stat and this process's own CPU time (its
children's included, once they have been waited for) from `os.times`; the difference is what
others used, in CPUs (1.0 = one core fully busy), over the wall time between two readings. Steal
(time the hypervisor gave our virtual CPUs to another guest) is reported apart. On a system
without /proc/stat every figure is 0.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Load:
    """CPU use over one window. CPUs: 1.0 = one core for the whole window."""

    wall_s: float
    own_cpus: float
    others_cpus: float
    steal_cpus: float

    def describe(self) -> str:
        return f"others {self.others_cpus:.2f} CPU, steal {self.steal_cpus:.2f} CPU"


def _proc_stat_jiffies() -> tuple[int, int]:
    """(busy, steal) jiffies summed over all CPUs; busy excludes idle and iowait."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return user + nice + system + irq + softirq, steal


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadMeter:
    """Start with `LoadMeter()`, read with `.read()`: the load since the start."""

    def __init__(self) -> None:
        self._wall_s = time.perf_counter()
        self._busy, self._steal = _proc_stat_jiffies()
        self._own_s = _own_cpu_s()

    def read(self) -> Load:
        wall_s = time.perf_counter() - self._wall_s
        busy, steal = _proc_stat_jiffies()
        own_s = _own_cpu_s() - self._own_s
        if wall_s <= 0 or busy == 0:
            return Load(wall_s, 0.0, 0.0, 0.0)
        busy_s = (busy - self._busy) / CLK_TCK_HZ
        steal_s = (steal - self._steal) / CLK_TCK_HZ
        return Load(
            wall_s=wall_s,
            own_cpus=own_s / wall_s,
            others_cpus=max(0.0, busy_s - own_s) / wall_s,
            steal_cpus=steal_s / wall_s,
        )
