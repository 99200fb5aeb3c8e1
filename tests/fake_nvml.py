"""A simulated NVML: a module object with the pynvml names wattbench uses.

It lives in tests/ only: nothing in bench/ can import it, so a report can never show simulated
numbers as real. Errors follow pynvml: `NVMLError(value)` with the NVML_ERROR_* codes.

Operating points: each GPU has power limit constraints, supported clocks and an SM clock lock, and
the setters return NVML's codes (NO_PERMISSION unless `FakeNvmlState.privileged`, INVALID_ARGUMENT
out of range, NOT_SUPPORTED where the GPU lacks the control). A published-shape model ties power
and speed to them: the power trace is clipped at the enforced limit, scaled by
(clock / max clock)^2.5 when clocks are locked (dynamic power ~ f V^2), and the SM clock reported is
the lock, else max clock * min(1, limit / default)^0.4 (the lower of the two when both apply).

Several processes, one device: when the environment variable WATTBENCH_FAKE_NVML_STATE (STATE_ENV)
names a JSON file, nvmlInit loads each GPU's settings from it, every get of a setting re-reads it
(another process's change is seen) and every set writes it (atomically). The file:

    {"privileged": true,                       # setters succeed (else NO_PERMISSION)
     "gpus": [{"uuid": "GPU-...",               # matched by uuid, else by position
               "power_limit_mw": 700000,        # settings: read and written
               "locked_clock_mhz": null,
               ...}]}                           # description (tests/fake_site only): see gpu_from_entry

Test subprocesses load it as `pynvml` through PYTHONPATH=tests/fake_site:<repo>.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

STATE_ENV = "WATTBENCH_FAKE_NVML_STATE"
_blocked = threading.Event()  # never set: what an event wait blocks on until its timeout

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_UNKNOWN = 999

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML error {self.value}")


NVML_SUCCESS = 0
NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0
nvmlEventTypeXidCriticalError = 8
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
SW_POWER_CAP = 0x4  # clock event reason: the power limit holds the clocks down


class PowerTrace:
    """Power in watts as a function of time.monotonic(), and its exact integral in joules.

    p(t) = base + amp * sin(2*pi*(t - t0) / period): a smooth load whose integral is known
    in closed form, so tests can compare measured energy with the truth.
    """

    def __init__(self, base_w: float = 300.0, amp_w: float = 100.0, period_s: float = 0.4) -> None:
        self.base, self.amp, self.period = base_w, amp_w, period_s
        self.t0 = time.monotonic()

    def watts(self, t: float) -> float:
        return self.base + self.amp * math.sin(2 * math.pi * (t - self.t0) / self.period)

    def joules(self, t: float) -> float:
        """Exact energy from t0 to t."""
        w = 2 * math.pi / self.period
        return self.base * (t - self.t0) + self.amp / w * (1 - math.cos(w * (t - self.t0)))


# The H100 profile's lockable SM clocks: 1980 MHz down to 210 MHz in 15 MHz steps (119 clocks).
H100_SM_CLOCKS = tuple(range(1980, 209, -15))


@dataclass
class FakeGpu:
    uuid: str = "GPU-11111111-2222-3333-4444-555555555555"
    name: str = "NVIDIA H100 80GB HBM3"
    bus_id: str = "00000000:18:00.0"
    serial: str = "1654922012345"  # nvmlDeviceGetSerial (a GPU without one: add it to `unsupported`)
    memory_total: int = 80 * 2**30
    memory_used: int = 20 * 2**30
    power_limit_mw: int = 700_000  # the limit set (nvmlDeviceGetPowerManagementLimit)
    trace: PowerTrace = field(default_factory=PowerTrace)
    counter_period_s: float = 0.001  # how often the energy counter advances
    power_period_s: float = 0.001  # how often the power fields refresh
    power_field_scale: float = 1.0  # != 1 makes the power fields disagree with the counter
    throttle_bits: int = 0
    unsupported: set[str] = field(default_factory=set)  # function names (or field ids) that raise NotSupported
    mig_mode: int | None = None  # NVML_DEVICE_MIG_ENABLE/DISABLE; None: a GPU without MIG (NotSupported)
    mig_devices: list[FakeGpu] = field(default_factory=list)  # its MIG instances (see mig_instance)
    min_power_limit_mw: int = 200_000
    max_power_limit_mw: int = 700_000
    default_power_limit_mw: int = 700_000
    enforced_cap_mw: int | None = None  # another limiter (out of band): the enforced limit is the lower
    memory_clocks_mhz: tuple[int, ...] = (2619,)
    sm_clocks_mhz: tuple[int, ...] = H100_SM_CLOCKS
    locked_clock_mhz: int | None = None  # None: not locked
    # What an acceptance check reads (nvmlDeviceGetModuleId, ...GetVbiosVersion, the PCIe link,
    # uncorrectable ECC errors, remapped rows: (corrected, uncorrected, pending, failure))
    module_id: int = 1
    vbios: str = "96.00.99.00.01"
    # heat soak: from `clock_drop_at` (time.monotonic) on, the SM clock reads `dropped_clock_mhz`
    clock_drop_at: float | None = None
    dropped_clock_mhz: int | None = None
    pcie_gen: int = 5
    pcie_gen_max: int = 5
    pcie_width: int = 16
    pcie_width_max: int = 16
    ecc_uncorrected: int = 0
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)
    # Energy accumulated up to _acc_t under the settings in force then (settings change over time).
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _acc_trace: PowerTrace | None = field(default=None, init=False, repr=False, compare=False)
    _acc_t: float = field(default=0.0, init=False, repr=False, compare=False)
    _acc_j: float = field(default=0.0, init=False, repr=False, compare=False)

    # --- the model ---

    @property
    def max_sm_clock(self) -> int:
        return max(self.sm_clocks_mhz) if self.sm_clocks_mhz else 1980

    def enforced_limit_mw(self) -> int:
        if self.enforced_cap_mw is None:
            return self.power_limit_mw
        return min(self.power_limit_mw, self.enforced_cap_mw)

    def clock_factor(self) -> float:
        """Power scale of a clock lock: (clock / max clock)^2.5 (dynamic power ~ f V^2, V ~ f^0.75)."""
        if self.locked_clock_mhz is None:
            return 1.0
        return (min(self.locked_clock_mhz, self.max_sm_clock) / self.max_sm_clock) ** 2.5

    def sm_clock(self) -> int:
        """The SM clock NVML reports: the lock, else lower as the limit tightens below the default."""
        top = self.max_sm_clock
        by_limit = top * min(1.0, self.enforced_limit_mw() / self.default_power_limit_mw) ** 0.4
        clock = by_limit if self.locked_clock_mhz is None else min(self.locked_clock_mhz, by_limit)
        if self.clock_drop_at is not None and self.dropped_clock_mhz is not None and time.monotonic() >= self.clock_drop_at:
            clock = min(clock, self.dropped_clock_mhz)
        return int(round(clock))

    def unclipped_watts(self, t: float) -> float:
        return self.trace.watts(t) * self.clock_factor()

    def watts(self, t: float) -> float:
        """Power at time t under the current settings: the (scaled) trace clipped at the limit."""
        return min(self.enforced_limit_mw() / 1000.0, self.unclipped_watts(t))

    def capped(self, t: float) -> bool:
        return self.unclipped_watts(t) > self.enforced_limit_mw() / 1000.0

    def _segment_j(self, a: float, b: float) -> float:
        """Energy from a to b under the current settings: exact where the limit never bites."""
        if b <= a:
            return 0.0
        trace, scale, limit_w = self.trace, self.clock_factor(), self.enforced_limit_mw() / 1000.0
        if scale * (trace.base + abs(trace.amp)) <= limit_w:
            return scale * (trace.joules(b) - trace.joules(a))
        if scale * (trace.base - abs(trace.amp)) >= limit_w:
            return limit_w * (b - a)
        n = max(2, math.ceil((b - a) / (trace.period / 256)))
        n += n % 2
        h = (b - a) / n
        total = self.watts(a) + self.watts(b)
        total += sum((4 if i % 2 else 2) * self.watts(a + i * h) for i in range(1, n))
        return total * h / 3  # Simpson

    def energy_j(self, t: float) -> float:
        """Energy since the trace started, under the settings in force at each moment."""
        with self._lock:
            if self._acc_trace is not self.trace:  # a new trace (or the first read): start over
                self._acc_trace, self._acc_t, self._acc_j = self.trace, self.trace.t0, 0.0
            if t >= self._acc_t:
                self._acc_j += self._segment_j(self._acc_t, t)
                self._acc_t = t
                return self._acc_j
            return self._acc_j - self._segment_j(t, self._acc_t)

    def configure(self, power_limit_mw: int | None = None, locked_clock_mhz: int | None | str = "keep") -> None:
        """Change the settings, the energy so far accounted under the old ones."""
        limit = self.power_limit_mw if power_limit_mw is None else int(power_limit_mw)
        locked = self.locked_clock_mhz if locked_clock_mhz == "keep" else locked_clock_mhz
        if limit == self.power_limit_mw and locked == self.locked_clock_mhz:
            return
        self.energy_j(time.monotonic())
        with self._lock:
            self.power_limit_mw = limit
            self.locked_clock_mhz = None if locked is None else int(locked)

    def _quantize(self, t: float, period: float) -> float:
        return self.trace.t0 + ((t - self.trace.t0) // period) * period

    def energy_mj(self) -> int:
        return int(1000 * self.energy_j(self._quantize(time.monotonic(), self.counter_period_s))) + 10**9

    def power_mw(self) -> int:
        t = self._quantize(time.monotonic(), self.power_period_s)
        return int(1000 * self.power_field_scale * self.watts(t))

    def throttle_reasons(self) -> int:
        return self.throttle_bits | (SW_POWER_CAP if self.capped(time.monotonic()) else 0)


# The operating-point calls: a GPU without these controls (`gpu.unsupported |= CONTROL_FUNCTIONS`)
# answers NOT_SUPPORTED to each; its enforced limit stays readable.
CONTROL_FUNCTIONS = frozenset(
    {
        "nvmlDeviceGetPowerManagementLimit",
        "nvmlDeviceGetPowerManagementDefaultLimit",
        "nvmlDeviceGetPowerManagementLimitConstraints",
        "nvmlDeviceGetSupportedMemoryClocks",
        "nvmlDeviceGetSupportedGraphicsClocks",
        "nvmlDeviceSetPowerManagementLimit",
        "nvmlDeviceSetGpuLockedClocks",
        "nvmlDeviceResetGpuLockedClocks",
    }
)


# What NVML answers 'not supported' for on a MIG instance's handle: power and energy are the GPU's.
MIG_UNSUPPORTED = {
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    NVML_FI_DEV_POWER_INSTANT,
    NVML_FI_DEV_POWER_AVERAGE,
    *CONTROL_FUNCTIONS,
}


def mig_instance(uuid: str, name: str = "NVIDIA H100 80GB HBM3 MIG 1g.10gb") -> FakeGpu:
    """A MIG instance's NVML handle (nvmlDeviceGetMigDeviceHandleByIndex): no power of its own."""
    return FakeGpu(uuid=uuid, name=name, memory_total=10 * 2**30, memory_used=0, unsupported=set(MIG_UNSUPPORTED))


@dataclass
class FakeNvmlState:
    gpus: list[FakeGpu] = field(default_factory=lambda: [FakeGpu()])
    driver: str = "560.35.03"
    cuda_version: int = 12060
    init_error: int | None = None
    # Xid events the driver will report: (GPU UUID, Xid, time.monotonic() from when it is seen)
    xid_events: list[tuple[str, int, float]] = field(default_factory=list)
    init_calls: int = 0
    shutdown_calls: int = 0
    # Functions the driver lacks (an older driver than the package): they raise FUNCTION_NOT_FOUND,
    # as pynvml does when libnvidia-ml.so has no such symbol; e.g. nvmlDeviceGetCurrentClocksEventReasons
    # before R535.
    missing_functions: set[str] = field(default_factory=set)
    privileged: bool = False  # the caller may change settings (root); else the setters say NO_PERMISSION
    # The JSON file the settings persist in (see the module docstring); None: the environment's
    # STATE_ENV at nvmlInit, if set; else nothing persists (in-process tests).
    state_file: str | None = None


# --- the state file --------------------------------------------------------------------------------

SETTINGS = ("power_limit_mw", "locked_clock_mhz")


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state file's document; {} while it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: the fake NVML state must be a JSON object")
    return doc


def write_state(path: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    """Write the state file atomically (temp file in the same folder + rename): a reader in another
    process sees the old document or the new one, never half of one."""
    from bench.results import atomic_write_json

    atomic_write_json(Path(path), doc)


def _entry_for(entries: list[dict[str, Any]], gpu: FakeGpu, index: int) -> dict[str, Any] | None:
    """A GPU's entry in the file: by uuid, else the entry at its position if that names no uuid."""
    for entry in entries:
        if entry.get("uuid") == gpu.uuid:
            return entry
    if index < len(entries) and "uuid" not in entries[index]:
        return entries[index]
    return None


def gpu_from_entry(entry: dict[str, Any], index: int = 0) -> FakeGpu:
    """A GPU described by a state-file entry: the H100 profile, with any FakeGpu field of a plain
    type the entry names (uuid, name, power_limit_mw, min/max/default_power_limit_mw,
    enforced_cap_mw, sm_clocks_mhz, locked_clock_mhz, ...), plus "base_w"/"amp_w"/"period_s" for
    its power trace, "unsupported" (function names) and "controls_supported": false."""
    plain = {f.name for f in fields(FakeGpu) if not f.name.startswith("_")} - {"trace", "unsupported", "mig_devices"}
    kwargs: dict[str, Any] = {k: v for k, v in entry.items() if k in plain}
    for key in ("sm_clocks_mhz", "memory_clocks_mhz"):
        if key in kwargs:
            kwargs[key] = tuple(int(c) for c in kwargs[key])
    if "uuid" not in kwargs and index:
        kwargs["uuid"] = f"GPU-{index:08x}-2222-3333-4444-555555555555"
    gpu = FakeGpu(**kwargs)
    if any(k in entry for k in ("base_w", "amp_w", "period_s")):
        gpu.trace = PowerTrace(
            float(entry.get("base_w", 300.0)), float(entry.get("amp_w", 100.0)), float(entry.get("period_s", 0.4))
        )
    gpu.unsupported = set(entry.get("unsupported", ()))
    if entry.get("controls_supported") is False:
        gpu.unsupported |= CONTROL_FUNCTIONS
    return gpu


def state_from_file(path: str | os.PathLike[str] | None) -> FakeNvmlState:
    """A FakeNvmlState as a test subprocess sees it: the GPUs the file describes (one H100 where it
    lists none, or where there is no file), persisting their settings in it. "init_error": an
    NVML_ERROR_* code makes nvmlInit fail with it (9, DRIVER_NOT_LOADED: a machine without NVIDIA)."""
    doc = read_state(path) if path else {}
    entries = doc.get("gpus") or [{}]
    state = FakeNvmlState(gpus=[gpu_from_entry(e, i) for i, e in enumerate(entries)], state_file=str(path) if path else None)
    state.privileged = bool(doc.get("privileged", False))
    if doc.get("init_error") is not None:
        state.init_error = int(doc["init_error"])
    return state


def load_settings(state: FakeNvmlState) -> None:
    """Take each GPU's settings and the privileged flag from the state file (if there is one)."""
    if not state.state_file:
        return
    doc = read_state(state.state_file)
    if "privileged" in doc:
        state.privileged = bool(doc["privileged"])
    entries = doc.get("gpus") or []
    for index, gpu in enumerate(state.gpus):
        entry = _entry_for(entries, gpu, index)
        if entry is None:
            continue
        gpu.configure(
            power_limit_mw=entry.get("power_limit_mw", gpu.power_limit_mw),
            locked_clock_mhz=entry.get("locked_clock_mhz", gpu.locked_clock_mhz),
        )


def save_settings(state: FakeNvmlState, gpu: FakeGpu) -> None:
    """Write one GPU's settings into the state file, keeping everything else in it."""
    if not state.state_file:
        return
    doc = read_state(state.state_file)
    entries = doc.setdefault("gpus", [])
    index = next((i for i, g in enumerate(state.gpus) if g is gpu), len(entries))
    entry = _entry_for(entries, gpu, index)
    if entry is None:
        entry = {}
        entries.append(entry)
    entry["uuid"] = gpu.uuid
    for key in SETTINGS:
        entry[key] = getattr(gpu, key)
    write_state(state.state_file, doc)


def make_module(state: FakeNvmlState) -> types.ModuleType:
    """A fresh module object behaving like pynvml over `state`."""
    mod = types.ModuleType("pynvml")
    mod.__dict__.update({k: v for k, v in globals().items() if k.startswith("NVML_ERROR_")})
    mod.NVMLError = NVMLError
    mod.state = state
    initialised = {"on": False}

    def check() -> None:
        if not initialised["on"]:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def settings_call(fn_name: str, getter):
        """A getter whose answer depends on the settings: re-read them first (another process may
        have changed them)."""

        def read(g: FakeGpu, *args: Any) -> Any:
            load_settings(state)
            return getter(g, *args)

        return gpu_call(fn_name, read)

    def setter_call(fn_name: str, change):
        """A setter: NO_PERMISSION unless privileged; `change` validates (INVALID_ARGUMENT) and
        changes the GPU; the new settings go to the state file."""

        def set_(g: FakeGpu, *args: Any) -> None:
            load_settings(state)
            if not state.privileged:
                raise NVMLError(NVML_ERROR_NO_PERMISSION)
            change(g, *args)
            save_settings(state, g)

        return gpu_call(fn_name, set_)

    def gpu_call(fn_name: str, getter):
        def call(handle: FakeGpu, *args: Any) -> Any:
            check()
            if fn_name in state.missing_functions:
                raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
            if fn_name in handle.unsupported:
                raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
            return getter(handle, *args)

        call.__name__ = fn_name
        return call

    def nvmlInit() -> None:
        state.init_calls += 1
        if state.init_error is not None:
            raise NVMLError(state.init_error)
        if state.state_file is None and os.environ.get(STATE_ENV):
            state.state_file = os.environ[STATE_ENV]
        load_settings(state)
        initialised["on"] = True

    def nvmlShutdown() -> None:
        state.shutdown_calls += 1
        initialised["on"] = False

    def nvmlSystemGetDriverVersion() -> str:
        check()
        return state.driver

    def nvmlSystemGetCudaDriverVersion_v2() -> int:
        check()
        return state.cuda_version

    def nvmlDeviceGetCount() -> int:
        check()
        return len(state.gpus)

    def nvmlDeviceGetHandleByIndex(index: int) -> FakeGpu:
        check()
        return state.gpus[index]

    mod.nvmlInit = nvmlInit
    mod.nvmlShutdown = nvmlShutdown
    mod.nvmlSystemGetDriverVersion = nvmlSystemGetDriverVersion
    mod.nvmlSystemGetCudaDriverVersion_v2 = nvmlSystemGetCudaDriverVersion_v2
    mod.nvmlDeviceGetCount = nvmlDeviceGetCount
    mod.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex
    mod.nvmlDeviceGetUUID = gpu_call("nvmlDeviceGetUUID", lambda g: g.uuid)
    mod.nvmlDeviceGetName = gpu_call("nvmlDeviceGetName", lambda g: g.name)
    mod.nvmlDeviceGetPciInfo = gpu_call("nvmlDeviceGetPciInfo", lambda g: types.SimpleNamespace(busId=g.bus_id))
    mod.nvmlDeviceGetSerial = gpu_call("nvmlDeviceGetSerial", lambda g: g.serial)
    mod.nvmlDeviceGetModuleId = gpu_call("nvmlDeviceGetModuleId", lambda g: g.module_id)
    mod.nvmlDeviceGetVbiosVersion = gpu_call("nvmlDeviceGetVbiosVersion", lambda g: g.vbios)
    mod.nvmlDeviceGetCurrPcieLinkGeneration = gpu_call("nvmlDeviceGetCurrPcieLinkGeneration", lambda g: g.pcie_gen)
    mod.nvmlDeviceGetGpuMaxPcieLinkGeneration = gpu_call("nvmlDeviceGetGpuMaxPcieLinkGeneration", lambda g: g.pcie_gen_max)
    mod.nvmlDeviceGetCurrPcieLinkWidth = gpu_call("nvmlDeviceGetCurrPcieLinkWidth", lambda g: g.pcie_width)
    mod.nvmlDeviceGetMaxPcieLinkWidth = gpu_call("nvmlDeviceGetMaxPcieLinkWidth", lambda g: g.pcie_width_max)
    mod.nvmlDeviceGetTotalEccErrors = gpu_call(
        "nvmlDeviceGetTotalEccErrors", lambda g, error_type, counter_type: g.ecc_uncorrected if error_type == 1 else 0
    )
    mod.nvmlDeviceGetRemappedRows = gpu_call("nvmlDeviceGetRemappedRows", lambda g: g.remapped_rows)

    # Xid events: an event set the GPUs register with; a wait returns the next event due on a
    # registered GPU, else times out (NVML_ERROR_TIMEOUT) after a short sleep.
    def nvmlEventSetCreate() -> dict[str, Any]:
        check()
        return {"gpus": set()}

    def register(g: FakeGpu, event_types: int, event_set: dict[str, Any]) -> None:
        if not event_types & nvmlEventTypeXidCriticalError:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        event_set["gpus"].add(g.uuid)

    def nvmlEventSetWait_v2(event_set: dict[str, Any], timeoutms: int) -> Any:
        check()
        now = time.monotonic()
        for entry in list(state.xid_events):
            uuid, xid, at = entry
            if uuid in event_set["gpus"] and at <= now:
                state.xid_events.remove(entry)
                device = next(g for g in state.gpus if g.uuid == uuid)
                return types.SimpleNamespace(
                    device=device, eventType=nvmlEventTypeXidCriticalError, eventData=xid, gpuInstanceId=0, computeInstanceId=0
                )
        _blocked.wait(min(timeoutms / 1000.0, 0.02))  # a real wait, as NVML's: not a test's virtual clock
        raise NVMLError(NVML_ERROR_TIMEOUT)

    mod.nvmlEventTypeXidCriticalError = nvmlEventTypeXidCriticalError
    mod.nvmlEventSetCreate = nvmlEventSetCreate
    mod.nvmlDeviceRegisterEvents = gpu_call("nvmlDeviceRegisterEvents", register)
    mod.nvmlEventSetWait_v2 = nvmlEventSetWait_v2
    mod.nvmlEventSetFree = lambda event_set: None
    mod.nvmlDeviceGetEnforcedPowerLimit = settings_call("nvmlDeviceGetEnforcedPowerLimit", lambda g: g.enforced_limit_mw())
    for name in (
        "NVML_SUCCESS",
        "NVML_FI_DEV_POWER_AVERAGE",
        "NVML_FI_DEV_POWER_INSTANT",
        "NVML_CLOCK_GRAPHICS",
        "NVML_CLOCK_SM",
        "NVML_CLOCK_MEM",
        "NVML_TEMPERATURE_GPU",
        "NVML_MEMORY_ERROR_TYPE_UNCORRECTED",
        "NVML_VOLATILE_ECC",
    ):
        setattr(mod, name, globals()[name])

    def nvmlDeviceGetHandleByUUID(uuid: str) -> FakeGpu:
        check()
        for gpu in state.gpus:
            for device in (gpu, *gpu.mig_devices):  # NVML hands out a MIG instance by its UUID too
                if device.uuid == uuid:
                    return device
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def field_values(g: FakeGpu, field_ids: list[int]) -> list[Any]:
        out = []
        for fid in field_ids:
            ret = NVML_ERROR_NOT_SUPPORTED if fid in g.unsupported else NVML_SUCCESS
            value = types.SimpleNamespace(uiVal=g.power_mw() if ret == NVML_SUCCESS else 0)
            out.append(types.SimpleNamespace(fieldId=fid, nvmlReturn=ret, valueType=NVML_VALUE_TYPE_UNSIGNED_INT, value=value))
        return out

    mod.nvmlDeviceGetHandleByUUID = nvmlDeviceGetHandleByUUID
    mod.nvmlDeviceGetFieldValues = settings_call("nvmlDeviceGetFieldValues", field_values)
    mod.nvmlDeviceGetTotalEnergyConsumption = settings_call("nvmlDeviceGetTotalEnergyConsumption", lambda g: g.energy_mj())
    mod.nvmlDeviceGetPowerUsage = settings_call("nvmlDeviceGetPowerUsage", lambda g: g.power_mw())
    mod.nvmlDeviceGetMemoryInfo = gpu_call(
        "nvmlDeviceGetMemoryInfo",
        lambda g: types.SimpleNamespace(total=g.memory_total, used=g.memory_used, free=g.memory_total - g.memory_used),
    )
    mod.nvmlDeviceGetClockInfo = settings_call(
        "nvmlDeviceGetClockInfo",
        lambda g, kind: g.sm_clock() if kind in (NVML_CLOCK_SM, NVML_CLOCK_GRAPHICS) else max(g.memory_clocks_mhz),
    )
    mod.nvmlDeviceGetTemperature = gpu_call("nvmlDeviceGetTemperature", lambda g, sensor: 54)
    mod.nvmlDeviceGetUtilizationRates = gpu_call(
        "nvmlDeviceGetUtilizationRates", lambda g: types.SimpleNamespace(gpu=97, memory=40)
    )
    mod.nvmlDeviceGetCurrentClocksEventReasons = settings_call(
        "nvmlDeviceGetCurrentClocksEventReasons", lambda g: g.throttle_reasons()
    )
    mod.nvmlDeviceGetCurrentClocksThrottleReasons = settings_call(
        "nvmlDeviceGetCurrentClocksThrottleReasons", lambda g: g.throttle_reasons()
    )

    # --- operating points ---
    mod.nvmlDeviceGetPowerManagementLimit = settings_call("nvmlDeviceGetPowerManagementLimit", lambda g: g.power_limit_mw)
    mod.nvmlDeviceGetPowerManagementDefaultLimit = gpu_call(
        "nvmlDeviceGetPowerManagementDefaultLimit", lambda g: g.default_power_limit_mw
    )
    mod.nvmlDeviceGetPowerManagementLimitConstraints = gpu_call(
        "nvmlDeviceGetPowerManagementLimitConstraints", lambda g: [g.min_power_limit_mw, g.max_power_limit_mw]
    )
    mod.nvmlDeviceGetSupportedMemoryClocks = gpu_call("nvmlDeviceGetSupportedMemoryClocks", lambda g: list(g.memory_clocks_mhz))

    def graphics_clocks(g: FakeGpu, memory_mhz: int) -> list[int]:
        if int(memory_mhz) not in g.memory_clocks_mhz:
            raise NVMLError(NVML_ERROR_NOT_FOUND)  # not a memory clock of this GPU
        return list(g.sm_clocks_mhz)

    def set_limit(g: FakeGpu, milliwatts: int) -> None:
        if not g.min_power_limit_mw <= int(milliwatts) <= g.max_power_limit_mw:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        g.configure(power_limit_mw=int(milliwatts))

    def lock_clocks(g: FakeGpu, low_mhz: int, high_mhz: int) -> None:
        """A range is modelled by its upper end: the clock the GPU runs at under load."""
        clocks = g.sm_clocks_mhz
        if not clocks or not min(clocks) <= int(low_mhz) <= int(high_mhz) <= max(clocks):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        g.configure(locked_clock_mhz=int(high_mhz))

    mod.nvmlDeviceGetSupportedGraphicsClocks = gpu_call("nvmlDeviceGetSupportedGraphicsClocks", graphics_clocks)
    mod.nvmlDeviceSetPowerManagementLimit = setter_call("nvmlDeviceSetPowerManagementLimit", set_limit)
    mod.nvmlDeviceSetGpuLockedClocks = setter_call("nvmlDeviceSetGpuLockedClocks", lock_clocks)
    mod.nvmlDeviceResetGpuLockedClocks = setter_call(
        "nvmlDeviceResetGpuLockedClocks", lambda g: g.configure(locked_clock_mhz=None)
    )

    def mig_mode(g: FakeGpu) -> list[int]:
        if g.mig_mode is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return [g.mig_mode, g.mig_mode]  # [current, pending]

    def mig_handle(g: FakeGpu, index: int) -> FakeGpu:
        if g.mig_mode != NVML_DEVICE_MIG_ENABLE or index >= len(g.mig_devices):
            raise NVMLError(NVML_ERROR_NOT_FOUND)  # an empty slot
        return g.mig_devices[index]

    mod.nvmlDeviceGetMigMode = gpu_call("nvmlDeviceGetMigMode", mig_mode)
    mod.nvmlDeviceGetMaxMigDeviceCount = gpu_call("nvmlDeviceGetMaxMigDeviceCount", lambda g: 7 if g.mig_mode is not None else 0)
    mod.nvmlDeviceGetMigDeviceHandleByIndex = gpu_call("nvmlDeviceGetMigDeviceHandleByIndex", mig_handle)
    mod.NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE
    mod.NVML_DEVICE_MIG_DISABLE = NVML_DEVICE_MIG_DISABLE
    return mod
