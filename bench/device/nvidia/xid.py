"""Xid events through NVML while a run runs: what an acceptance check looks for besides the
figures (an Xid 48 is a double-bit ECC error, 79 a GPU that fell off the bus, 13/31/43 faulting
kernels, 94/95 contained and uncontained memory errors).

`XidWatch` registers the GPUs for nvmlEventTypeXidCriticalError in one event set and waits on it
in a thread (nvmlEventSetWait_v2 with a 500 ms timeout, so closing takes at most that long),
keeping each event's Xid by the GPU's UUID. A GPU that cannot be registered (not supported, no
permission) is left out; the watch never raises into the run.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from bench.device.base import ErrorWatch
from bench.device.nvidia.nvml import NvmlError, ensure_init, text

__all__ = ["WAIT_MS", "XidWatch"]

WAIT_MS = 500


class XidWatch(ErrorWatch):
    """NVML's Xid events on `uuids` while open (see the module docstring)."""

    def __init__(self, uuids: Sequence[str]) -> None:
        super().__init__()
        self.uuids = list(uuids)
        self.watching = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._set: Any = None
        self._nvml: Any = None

    def __enter__(self) -> XidWatch:
        try:
            nvml = self._nvml = ensure_init()
            kind = getattr(nvml, "nvmlEventTypeXidCriticalError", None)
            if kind is None or not hasattr(nvml, "nvmlEventSetWait_v2"):
                return self
            self._set = nvml.nvmlEventSetCreate()
            for uuid in self.uuids:
                try:
                    nvml.nvmlDeviceRegisterEvents(nvml.nvmlDeviceGetHandleByUUID(uuid), kind, self._set)
                    self.events[uuid] = []
                except nvml.NVMLError:
                    continue  # a GPU without Xid events for this process: not watched
        except (NvmlError, Exception):  # noqa: BLE001 - the watch must never stop a run
            return self
        if self.events:
            self.watching = True
            self._thread = threading.Thread(target=self._wait, name="wattbench-xid", daemon=True)
            self._thread.start()
        return self

    def _wait(self) -> None:
        nvml = self._nvml
        timeout = getattr(nvml, "NVML_ERROR_TIMEOUT", 10)
        while not self._stop.is_set():
            try:
                data = nvml.nvmlEventSetWait_v2(self._set, WAIT_MS)
            except nvml.NVMLError as exc:
                if getattr(exc, "value", None) == timeout:
                    continue
                return  # the event set broke: keep what was seen
            try:
                uuid = text(nvml.nvmlDeviceGetUUID(data.device))
            except nvml.NVMLError:
                continue
            self.events.setdefault(uuid, []).append(int(data.eventData))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * WAIT_MS / 1000)
        if self._set is not None and (self._thread is None or not self._thread.is_alive()):
            try:  # never while the thread may still wait on the set (it would wait on freed memory)
                self._nvml.nvmlEventSetFree(self._set)
            except Exception:  # noqa: BLE001
                pass
