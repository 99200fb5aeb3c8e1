"""Resident memory of a process (and optionally its children), sampled like a power source."""

from __future__ import annotations

import os
import time

import psutil

from bench.monitor.base import PowerSource, Reading

PROCESS_DEVICE = "process"


class ProcessMemory(PowerSource):
    """RSS in bytes of `pid` (default: this process), plus its descendants if `children`.

    Reported as `memory_used_bytes` of the pseudo-device "process"; it measures no power.
    """

    def __init__(self, pid: int | None = None, children: bool = False) -> None:
        self.device_id = PROCESS_DEVICE
        self.process = psutil.Process(pid or os.getpid())
        self.children = children

    def rss_bytes(self) -> int | None:
        try:
            total = self.process.memory_info().rss
        except psutil.Error:
            return None
        if self.children:
            try:
                children = self.process.children(recursive=True)
            except psutil.Error:  # the process itself has exited
                return total
            for child in children:
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass  # exited between listing and reading
        return total

    def read(self) -> Reading:
        return Reading(time.monotonic(), memory_used_bytes=self.rss_bytes())
