"""The sweep's controller: checks everything before the first change, then sets each case's
operating point and restores the GPUs as found on every way out (see restore.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench import testing_hooks
from bench.control import restore
from bench.control.points import OperatingPoint
from bench.errors import UsageError

if TYPE_CHECKING:
    from bench.device.base import GpuVendor, PowerLimits

DEFAULT_SETTLE_S = 2.0
CLOCK_WARNING = (
    "NVML cannot read an existing clock lock: after this sweep the SM clocks are reset to the driver's "
    "default, and any lock set before it is lost"
)


@dataclass
class Target:
    """A GPU the sweep changes: the run's device id, its UUID, its limits and clocks as found, and
    the vendor (bench.device) that changes them."""

    device: str
    uuid: str
    limits: PowerLimits
    clocks_mhz: list[int]
    vendor: GpuVendor
    applied: OperatingPoint = field(default_factory=OperatingPoint)


class Controller:
    """Sets operating points on `targets` and puts them back.

    `check()` first (permission, ranges: a one-line UsageError and nothing changed), then use it
    as a context manager around the run: entering writes the restore records and starts the
    watchdog before any change; `apply(point)` before each case; leaving restores, deletes the
    records and tells the watchdog the sweep is done.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        points: Sequence[OperatingPoint],
        settle_s: float,
        command: str,
        say: Callable[[str], None],
    ) -> None:
        self.targets, self.points, self.settle_s = list(targets), list(points), settle_s
        self.command, self.say = command, say
        self.records: list[restore.Record] = []
        self.watchdog: subprocess.Popen[bytes] | None = None

    def check(self) -> None:
        for vendor in {type(t.vendor): t.vendor for t in self.targets}.values():
            allowed, why = vendor.may_change_settings()
            if not allowed:
                raise UsageError(
                    f"--power-limit and --gpu-clocks change the GPU's settings, which needs administrator rights: {why}"
                )
        for target in self.targets:
            for point in self.points:
                watts = point.watts(target.limits.default_w)
                low, high = target.limits.min_w, target.limits.max_w
                if watts is not None and low is not None and high is not None and not low <= watts <= high:
                    raise UsageError(
                        f"--power-limit {point.power_limit}: {watts:g} W is outside the range of "
                        f"{target.device}; valid: {low:g}-{high:g} W"
                    )
                clk = point.gpu_clocks_mhz
                if clk is not None:
                    if not target.clocks_mhz:
                        raise UsageError(
                            f"--gpu-clocks: {target.device} does not list its supported clocks; it cannot be locked here"
                        )
                    low_c, high_c = min(target.clocks_mhz), max(target.clocks_mhz)
                    if not low_c <= clk <= high_c:
                        raise UsageError(
                            f"--gpu-clocks {clk}: outside the SM clocks of {target.device}; valid: {low_c}-{high_c} MHz"
                        )
        for target in self.targets:
            if any(p.power_limit is not None for p in self.points) and target.limits.current_w is None:
                raise UsageError(
                    f"--power-limit: {target.device} does not say its current limit, so it could not be "
                    "restored; it cannot be swept here"
                )
        for left in restore.read_records():  # what honour_records could not restore, or a live sweep's
            if any(left.uuid == t.uuid for t in self.targets):
                busy = restore.process_alive(left.host, left.pid)
                raise UsageError(
                    f"{left.device} ({left.uuid}) "
                    + (
                        f"is being swept by another wattbench (pid {left.pid}); valid: wait for it to end"
                        if busy
                        else f"still has a restore record from pid {left.pid} ({left.path}); valid: `wattbench restore` first"
                    )
                )
        if any(p.gpu_clocks_mhz is not None for p in self.points):
            self.say(f"warning: {CLOCK_WARNING}")

    def __enter__(self) -> Controller:
        locks = any(p.gpu_clocks_mhz is not None for p in self.points)
        limits = any(p.power_limit is not None for p in self.points)
        try:
            for target in self.targets:
                before = target.limits.current_w if limits else None
                self.records.append(restore.write_record(target.uuid, target.device, before, locks, self.command))
            paths = [str(r.path) for r in self.records]
            self.watchdog = subprocess.Popen(
                [sys.executable, "-m", "bench.control.restore", "WATCH", str(os.getpid()), *paths],
                stdin=subprocess.PIPE,
                start_new_session=True,
                env=os.environ.copy(),
            )
        except BaseException:  # nothing was changed yet: take back what was written
            for record in self.records:
                record.path.unlink(missing_ok=True)
            self.records = []
            raise
        return self

    def apply(self, point: OperatingPoint | None) -> list[dict[str, Any]]:
        """Set `point` on every target (a knob the point leaves alone goes back to as found), wait
        the settle time when anything changed, and return what each GPU enforces now."""
        point = point or OperatingPoint()
        changed = False
        for target in self.targets:
            now = target.applied
            if point.power_limit != now.power_limit:
                watts = point.watts(target.limits.default_w)
                if watts is None:  # back to as found, which check() made sure is known
                    watts = target.limits.current_w
                assert watts is not None, "check() refuses a power-limit sweep of a GPU whose current limit is unknown"
                target.vendor.set_power_limit(target.uuid, watts)
                changed = True
            if point.gpu_clocks_mhz != now.gpu_clocks_mhz:
                if point.gpu_clocks_mhz is None:
                    target.vendor.reset_sm_clocks(target.uuid)
                else:
                    target.vendor.lock_sm_clocks(target.uuid, point.gpu_clocks_mhz)
                changed = True
            target.applied = point
        if changed and self.settle_s > 0:
            time.sleep(self.settle_s)
        return [self._state(target, point) for target in self.targets]

    def _state(self, target: Target, point: OperatingPoint) -> dict[str, Any]:
        enforced = target.vendor.power_limits(target.uuid).enforced_w
        return {
            "device": target.device,
            "power_limit_request": point.power_limit,
            "power_limit_w": point.watts(target.limits.default_w),
            "enforced_power_limit_w": enforced,
            "gpu_clocks_mhz": point.gpu_clocks_mhz,
            "settle_s": self.settle_s,
        }

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Restore every target as found, delete the records, stop the watchdog (idempotent).
        A restore that fails keeps its record and says so: the watchdog will not, as it is told
        the sweep is done only after every record it could restore is gone."""
        failed = []
        for record in self.records:
            try:
                restore.restore(record)
            except Exception as exc:  # noqa: BLE001 - say it; the record stays for `wattbench restore`
                failed.append(record)
                self.say(f"could not restore {record.describe()}: {exc}; run `wattbench restore` (record {record.path})")
        self.records = failed
        if self.watchdog is not None and self.watchdog.stdin is not None:
            try:
                if not failed:
                    self.watchdog.stdin.write(restore.DONE)
                self.watchdog.stdin.close()
                self.watchdog.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self.watchdog = None


def targets_for(devices: Sequence[Any]) -> list[Target]:
    """The GPUs behind the run's CUDA devices (by UUID), each with the vendor that controls it. A
    run without one cannot sweep: one line, unless the test hook
    (`testing_hooks.simulated_operating_gpu`) names a GPU of the simulated NVML."""
    from bench.device import vendor_for

    chosen = [(d.id, d.uuid) for d in devices if getattr(d, "kind", "") == "cuda" and getattr(d, "uuid", None)]
    test_gpu = testing_hooks.simulated_operating_gpu()
    if not chosen and test_gpu:
        chosen = [("cpu", test_gpu)]
    if not chosen:
        names = ", ".join(d.id for d in devices)
        raise UsageError(
            f"--power-limit and --gpu-clocks set a GPU's operating point; this run measures {names}; valid: a run on cuda devices"
        )
    found = []
    for device_id, uuid in chosen:
        try:
            vendor = vendor_for(uuid)
            found.append(Target(device_id, uuid, vendor.power_limits(uuid), vendor.supported_sm_clocks(uuid), vendor))
        except Exception as exc:  # noqa: BLE001 - no vendor library, or it does not know the GPU
            raise UsageError(f"--power-limit/--gpu-clocks: cannot control {device_id} ({uuid}): {exc}") from None
    return found
