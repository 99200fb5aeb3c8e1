"""`wattbench monitor -- COMMAND`: energy, power and memory of any command, like `perf stat`.

Runs the command as a child process with the terminal's stdin/stdout/stderr, measures every GPU
a vendor library (NVML) can see and the CPU (RAPL) for as long as it runs, and the resident
memory of the child and its descendants (followed without scanning every process on the machine: see
`bench.monitor.process`). The child's exit status is passed through; Ctrl-C reaches the child (it is in
the same process group), the totals are still reported, and a child that ignores it is stopped.
This module does not import torch, so monitoring starts in well under a second.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.device import inventories
from bench.device.base import DeviceError
from bench.monitor.discover import DeviceRef, discover
from bench.monitor.node import NodePower, NodeWindow
from bench.monitor.process import PROCESS_DEVICE, RU_MAXRSS_BYTES, ProcessMemory
from bench.monitor.sampler import EnergyResult, Monitor

STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class CommandReport:
    argv: tuple[str, ...]
    exit_code: int
    interrupted: bool
    wall_s: float
    peak_memory_bytes: int | None
    devices: dict[str, str]  # device id -> name
    energy: dict[str, EnergyResult]
    status: dict[str, str]  # device id -> source or reason unavailable
    node: NodeWindow | None = None  # the whole node from its BMC over the command's run (--node-power)
    node_power: dict[str, Any] | None = None  # which BMC, what it read, its update period

    def to_dict(self) -> dict[str, Any]:
        node = None
        if self.node is not None:
            node = {
                **(self.node_power or {}),
                "energy": self.node.energy.to_json() if self.node.energy is not None else None,
                "flags": list(self.node.flags),
            }
        return {
            "command": list(self.argv),
            "exit_code": self.exit_code,
            "interrupted": self.interrupted,
            "wall_s": self.wall_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "devices": [
                {
                    "id": dev,
                    "name": name,
                    "status": self.status.get(dev),
                    "energy": self.energy[dev].to_dict() if dev in self.energy else None,
                    "flags": list(self.energy[dev].flags) if dev in self.energy else ["power_unmeasured"],
                }
                for dev, name in self.devices.items()
            ],
            "node": node,
        }


def _devices() -> tuple[list[DeviceRef], dict[str, str]]:
    """Every GPU each vendor library lists, as gpuN by the library's index (those of the first
    vendor that lists any; a later vendor's are named after it: amd-gpuN), then the CPU."""
    refs, names = [], {}
    first = True
    for vendor, inventory in inventories():
        if isinstance(inventory, DeviceError):
            continue
        gpus = inventory.gpus
        prefix = "gpu" if first else f"{vendor.name}-gpu"
        first = first and not gpus
        for gpu in gpus:
            dev = f"{prefix}{gpu.index}"
            refs.append(DeviceRef(dev, "cuda", gpu.uuid))
            names[dev] = gpu.name
    refs.append(DeviceRef("cpu", "cpu"))
    names["cpu"] = "CPU"
    return refs, names


def _exit_code(returncode: int) -> int:
    """A child killed by signal N exits 128+N, as shells report it."""
    return 128 - returncode if returncode < 0 else returncode


def _maxrss_bytes(who: int) -> int:
    return resource.getrusage(who).ru_maxrss * RU_MAXRSS_BYTES


def run_command(
    argv: Sequence[str], interval_s: float, nominal_watts: float | None = None, node: NodePower | None = None
) -> CommandReport:
    """Run `argv` to completion under the monitor. Raises FileNotFoundError if it cannot start.

    `peak_memory_bytes` is the largest of: the summed resident memory of the command's process
    tree at any sample; the largest exact per-process peak the kernel kept (VmHWM) for a member
    still alive at a refresh; and the exact peak of the largest descendant that was waited for
    (ru_maxrss of children), where that figure is about the command (see below). So it is the
    tree's sampled total, or one process's exact peak when that is larger. Bytes.

    With `node` (the node's BMC), the whole node's energy over the same time, read on its own
    thread and flagged where the command ran for too few of the BMC's update periods.
    """
    refs, names = _devices()
    found = discover(refs, nominal_watts, probe=True)
    interrupted = False
    children_before = _maxrss_bytes(resource.RUSAGE_CHILDREN)
    if node is not None:
        node.start()  # its first answer comes before the command starts
    start = time.monotonic()
    try:
        proc = subprocess.Popen(list(argv))
    except OSError:
        if node is not None:
            node.stop()
        raise
    # Linux folds the memory a child had before exec -- this process's, shared by vfork or copied
    # by fork -- into the child's ru_maxrss, so that figure says something about the command only
    # where it exceeds this process's own peak at the fork (and any earlier child's).
    children_floor = max(children_before, _maxrss_bytes(resource.RUSAGE_SELF))
    memory = ProcessMemory(proc.pid, children=True)
    with Monitor([*found.sources, memory], interval_s) as monitor:
        with monitor.window() as window:
            while True:
                try:
                    proc.wait()
                    break
                except KeyboardInterrupt:
                    interrupted = True
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(timeout=STOP_GRACE_S)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    except KeyboardInterrupt:
                        proc.kill()
                    proc.wait()
                    break
    end = time.monotonic()
    wall = end - start
    node_window = None
    if node is not None:
        node.wait_past(end)
        node_window = node.window(start, end)
        node.stop()
    # ru_maxrss of waited-for children is the exact peak of the largest one (the command, or a
    # descendant of it that its parent waited for).
    children_peak = _maxrss_bytes(resource.RUSAGE_CHILDREN)
    exact_child = children_peak if children_peak > children_floor else 0
    sampled = window.results.get(PROCESS_DEVICE)
    peak = max(exact_child, memory.peak_bytes() or 0, (sampled.peak_memory_bytes or 0) if sampled else 0) or None
    energy = {dev: r for dev, r in window.results.items() if dev != PROCESS_DEVICE and r.joules is not None}
    return CommandReport(
        argv=tuple(argv),
        exit_code=_exit_code(proc.returncode),
        interrupted=interrupted,
        wall_s=wall,
        peak_memory_bytes=peak,
        devices=names,
        energy=energy,
        status=found.status,
        node=node_window,
        node_power=node.describe() if node is not None else None,
    )
