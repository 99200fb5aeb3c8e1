"""A simulated AMD SMI: a module object with the `amdsmi` names wattbench uses.

It lives in tests/ only: nothing in bench/ can import it, so a report can never show simulated
numbers as real. tests/test_fake_amdsmi.py checks every function, parameter name and dict key
offered here against the pinned wheel's amdsmi/amdsmi_interface.py (parsed, never imported).

Facts taken from amdsmi 7.0.2 (amdsmi/amdsmi_interface.py, amdsmi_exception.py, amdsmi_wrapper.py):

- amdsmi_init(flag=AmdSmiInitFlags.INIT_AMD_GPUS), amdsmi_shut_down(); amdsmi_get_processor_handles()
  lists every GPU handle (over all sockets).
- Every per-GPU call takes `processor_handle` first. Errors: `_check_res` raises
  AmdSmiLibraryException(ret_code) (a subclass of AmdSmiException; `.err_code` and
  `.get_error_code()`; str() is "Error code:\\n\\t<code> | <info>"). Status codes (amdsmi_wrapper):
  SUCCESS 0, INVAL 1, NOT_SUPPORTED 2, NOT_YET_IMPLEMENTED 3, NO_PERM 10, INIT_ERROR 18,
  NOT_FOUND 31, NOT_INIT 32, DRIVER_NOT_LOADED 34.
- amdsmi_get_gpu_asic_info -> {"market_name", "vendor_id", "vendor_name", "subvendor_id",
  "device_id" (hex string "0x74a1"), "rev_id", "asic_serial" ("0x%016X"), "oam_id",
  "num_compute_units", "target_graphics_version" ("gfx942"), "subsystem_id"}; "N/A" where empty.
- amdsmi_get_gpu_device_uuid -> str; amdsmi_get_gpu_device_bdf -> "0000:0c:00.0".
- amdsmi_get_gpu_board_info -> {"model_number", "product_serial", "fru_id", "product_name",
  "manufacturer_name"}; "N/A" where empty.
- amdsmi_get_gpu_driver_info -> {"driver_name", "driver_version", "driver_date"}.
- amdsmi_get_gpu_memory_total(processor_handle, mem_type) and amdsmi_get_gpu_memory_usage(
  processor_handle, mem_type): bytes (uint64). (amdsmi_get_gpu_vram_usage's vram_total/vram_used
  are uint32 megabytes: not used.)
- amdsmi_get_energy_count -> {"energy_accumulator" (uint64 counts), "counter_resolution" (float,
  microjoules per count), "timestamp" (uint64)}. Releases before 6.x named the count "power"
  (`FakeAmdGpu.energy_key = "power"` models them; the drift test allows that one key).
- amdsmi_get_power_info -> {"socket_power", "current_socket_power", "average_socket_power",
  "gfx_voltage", "soc_voltage", "mem_voltage", "power_limit"}: watts (and mV), each 0xFFFF
  replaced by the string "N/A". MI300-series: current_socket_power a number, average "N/A";
  MI200 and older: the reverse (`FakeAmdGpu.profile`).
- amdsmi_get_power_cap_info -> {"power_cap", "default_power_cap", "dpm_cap", "min_power_cap",
  "max_power_cap"}: microwatts. amdsmi_set_power_cap(processor_handle, sensor_ind, cap): cap in
  microwatts (an int), sensor_ind 0; NO_PERM unless root.
- amdsmi_get_temp_metric(processor_handle, sensor_type, metric) -> int degrees C (MI300 has no
  EDGE sensor: NOT_SUPPORTED; HOTSPOT is the junction).
- amdsmi_get_clock_info(processor_handle, clock_type) -> {"clk", "min_clk", "max_clk",
  "clk_locked", "clk_deep_sleep"}: MHz.
- amdsmi_get_violation_status -> {"active_ppt_pwr", "active_socket_thrm", "active_prochot_thrm",
  "active_vr_thrm", "active_hbm_thrm", ... (acc_*, per_*)}: bools or "N/A"; MI300 and later only
  (NOT_SUPPORTED before).
- amdsmi_get_gpu_compute_partition / amdsmi_get_gpu_memory_partition -> str ("SPX".."CPX",
  "NPS1".."NPS8"); a partitioned GPU lists one processor handle per partition, whose BDFs differ in
  the PCI function ("0000:05:00.0", "0000:05:00.1"), and only the primary (function 0) reports
  socket power and energy ("N/A" / NOT_SUPPORTED on the others).
- amdsmi_set_gpu_perf_determinism_mode(processor_handle, clkvalue): the GFX clock ceiling in MHz
  (an int); amdsmi_set_gpu_perf_level(processor_handle, perf_level) with AmdSmiDevPerfLevel.AUTO
  leaves it; amdsmi_get_gpu_perf_level -> "AMDSMI_DEV_PERF_LEVEL_AUTO" / "..._DETERMINISM" (a
  string). AMD documents the mode for MI200 (MI300 "may not support" it: NOT_SUPPORTED here).
- Enums are IntEnums: AmdSmiInitFlags.INIT_AMD_GPUS = 2; AmdSmiClkType.SYS = GFX = 0, MEM = 4;
  AmdSmiTemperatureType.EDGE = 0, HOTSPOT = 1; AmdSmiTemperatureMetric.CURRENT = 0;
  AmdSmiMemoryType.VRAM = 0.

Several processes, one device (as tests/fake_nvml.py does it): when WATTBENCH_FAKE_AMDSMI_STATE
(STATE_ENV) names a JSON file, the GPUs are those it describes (`state_from_file`), each get of the
power cap re-reads the file and each set writes it (atomically), and "privileged" is re-read at
each set. tests/fake_site/amdsmi.py loads it as `import amdsmi` in test subprocesses:

    {"privileged": true,                      # amdsmi_set_power_cap succeeds (else NO_PERM)
     "gpus": [{"uuid": "...", "model": "mi300x" | "mi250x", "power_cap_uw": 750000000,
               "base_w": 300, "amp_w": 100, "period_s": 0.4,   # its power trace
               "counter_bits": 24, "frozen": false, ...}]}     # any plain FakeAmdGpu field

The simulation: each GPU draws a known power trace (tests.fake_nvml.PowerTrace: closed-form
integral); its energy counter is floor(joules / resolution) counts from `counter_start`, updated
every `counter_period_s`, wrapping at `counter_bits`; `frozen` keeps it at `counter_start`
(MI100-era firmware). The power fields report the trace rounded to whole watts, as the C struct's
uint32 does.
"""

from __future__ import annotations

import enum
import math
import os
import time
import types
from dataclasses import dataclass, field, fields
from typing import Any

from tests.fake_nvml import PowerTrace, read_state, write_state

STATE_ENV = "WATTBENCH_FAKE_AMDSMI_STATE"

AMDSMI_STATUS_SUCCESS = 0
AMDSMI_STATUS_INVAL = 1
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_NOT_YET_IMPLEMENTED = 3
AMDSMI_STATUS_NO_PERM = 10
AMDSMI_STATUS_INIT_ERROR = 18
AMDSMI_STATUS_NOT_FOUND = 31
AMDSMI_STATUS_NOT_INIT = 32
AMDSMI_STATUS_DRIVER_NOT_LOADED = 34

_INFO = {
    AMDSMI_STATUS_INVAL: "AMDSMI_STATUS_INVAL - Invalid parameters",
    AMDSMI_STATUS_NOT_SUPPORTED: "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported",
    AMDSMI_STATUS_NOT_YET_IMPLEMENTED: "AMDSMI_STATUS_NOT_YET_IMPLEMENTED - Feature not yet implemented",
    AMDSMI_STATUS_NO_PERM: "AMDSMI_STATUS_NO_PERM - Permission Denied",
    AMDSMI_STATUS_INIT_ERROR: "AMDSMI_STATUS_INIT_ERROR - Initialization error",
    AMDSMI_STATUS_NOT_FOUND: "AMDSMI_STATUS_NOT_FOUND - Device Not found",
    AMDSMI_STATUS_NOT_INIT: "AMDSMI_STATUS_NOT_INIT - Device not initialized",
    AMDSMI_STATUS_DRIVER_NOT_LOADED: "AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded",
}


class AmdSmiException(Exception):
    """Base smi exception class"""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        self.err_info = _INFO.get(err_code, "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred")

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {self.err_info}"

    def get_error_code(self) -> int:
        return self.err_code

    def get_error_info(self, detailed: bool = True) -> str:
        return self.err_info if detailed else self.err_info.split(" - ")[0]


class AmdSmiInitFlags(enum.IntEnum):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1
    INIT_AMD_GPUS = 2


class AmdSmiClkType(enum.IntEnum):
    SYS = 0
    GFX = 0
    DF = 1
    DCEF = 2
    SOC = 3
    MEM = 4


class AmdSmiTemperatureType(enum.IntEnum):
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2


class AmdSmiTemperatureMetric(enum.IntEnum):
    CURRENT = 0
    MAX = 1


class AmdSmiDevPerfLevel(enum.IntEnum):
    AUTO = 0
    LOW = 1
    HIGH = 2
    MANUAL = 3
    STABLE_STD = 4
    STABLE_PEAK = 5
    STABLE_MIN_MCLK = 6
    STABLE_MIN_SCLK = 7
    DETERMINISM = 8
    UNKNOWN = 256


class AmdSmiMemoryType(enum.IntEnum):
    VRAM = 0
    VIS_VRAM = 1
    GTT = 2


# The GPUs' profiles: market name, PCI device id, gfx target, memory, power caps (microwatts).
MI300X = {
    "market_name": "AMD Instinct MI300X",
    "device_id": 0x74A1,
    "gfx": "942",
    "memory_total": 192 * 2**30,
    "power_cap_uw": 750_000_000,
    "min_power_cap_uw": 0,
    "max_power_cap_uw": 750_000_000,
}
MI250X = {
    "market_name": "AMD Instinct MI250X",
    "device_id": 0x740C,
    "gfx": "90a",
    "memory_total": 64 * 2**30,
    "power_cap_uw": 500_000_000,
    "min_power_cap_uw": 0,
    "max_power_cap_uw": 560_000_000,
}
N_A = "N/A"


@dataclass
class FakeAmdGpu:
    uuid: str = "6eff74a1-0000-1000-80c2-3a0f5b2d1e11"
    profile: str = "mi300"  # "mi300": current_socket_power, violation status; "mi200": average_socket_power
    market_name: str = str(MI300X["market_name"])
    device_id: int = int(MI300X["device_id"])
    gfx: str = str(MI300X["gfx"])
    bdf: str = "0000:0c:00.0"
    product_serial: str = "692251001122"
    asic_serial: str = "0xB6B4B1F8E1A3C011"
    memory_total: int = int(MI300X["memory_total"])
    memory_used: int = 24 * 2**30
    driver_version: str = "6.10.5"
    trace: PowerTrace = field(default_factory=PowerTrace)
    counter_resolution_uj: float = 15.259  # microjoules per count (MI300X reports 15.259 uJ)
    counter_bits: int = 64  # the counter wraps at 2**counter_bits counts
    counter_start: int = 0  # counts at the trace's t0 (near 2**counter_bits: a wrap soon)
    counter_period_s: float = 0.001  # how often the counter advances
    frozen: bool = False  # the counter never advances (MI100-era firmware)
    energy_key: str = "energy_accumulator"  # "power" in releases before 6.x
    power_cap_uw: int = int(MI300X["power_cap_uw"])
    default_power_cap_uw: int = int(MI300X["power_cap_uw"])
    min_power_cap_uw: int = int(MI300X["min_power_cap_uw"])
    max_power_cap_uw: int = int(MI300X["max_power_cap_uw"])
    gfx_clock_mhz: int = 2100
    max_gfx_clock_mhz: int = 2100
    mem_clock_mhz: int = 1300
    hotspot_c: int = 61
    ppt_violation: bool = False  # active_ppt_pwr: held at the power cap
    thermal_violation: bool = False  # active_socket_thrm
    unsupported: set[str] = field(default_factory=set)  # function names that raise NOT_SUPPORTED
    compute_partition: str = "SPX"
    memory_partition: str = "NPS1"
    secondary: bool = False  # a partition other than the first: no socket power or energy of its own
    min_gfx_clock_mhz: int = 500
    determinism_supported: bool | None = None  # None: as AMD documents it (MI200 yes, MI300 no)
    determinism_mhz: int | None = None  # performance determinism on, at this GFX ceiling

    @property
    def may_determinism(self) -> bool:
        return self.profile == "mi200" if self.determinism_supported is None else self.determinism_supported

    def counts(self, t: float | None = None) -> int:
        """The raw counter value now (or at `t`)."""
        if self.frozen:
            return self.counter_start % (1 << self.counter_bits)
        t = time.monotonic() if t is None else t
        t = self.trace.t0 + math.floor((t - self.trace.t0) / self.counter_period_s) * self.counter_period_s
        joules = self.trace.joules(t)
        return (self.counter_start + int(joules * 1e6 / self.counter_resolution_uj)) % (1 << self.counter_bits)

    def watts(self) -> int:
        return int(round(self.trace.watts(time.monotonic())))

    @property
    def gfx_now_mhz(self) -> int:
        return min(self.gfx_clock_mhz, self.determinism_mhz) if self.determinism_mhz else self.gfx_clock_mhz

    def counts_to_wrap(self) -> int:
        return (1 << self.counter_bits) - self.counter_start


def mi250x(index: int = 0, **changes: Any) -> FakeAmdGpu:
    """An MI200-series GPU (one GCD of an MI250X): average_socket_power only, no violation status."""
    values: dict[str, Any] = {
        "uuid": f"6eff740c-0000-1000-80c2-3a0f5b2d1e{index:02x}",
        "profile": "mi200",
        "market_name": MI250X["market_name"],
        "device_id": MI250X["device_id"],
        "gfx": MI250X["gfx"],
        "bdf": f"0000:{0x0C + index * 0x10:02x}:00.0",
        "memory_total": MI250X["memory_total"],
        "power_cap_uw": MI250X["power_cap_uw"],
        "default_power_cap_uw": MI250X["power_cap_uw"],
        "min_power_cap_uw": MI250X["min_power_cap_uw"],
        "max_power_cap_uw": MI250X["max_power_cap_uw"],
        "gfx_clock_mhz": 1700,
        "max_gfx_clock_mhz": 1700,
        "mem_clock_mhz": 1600,
    }
    values.update(changes)
    return FakeAmdGpu(**values)


def two_mi300x() -> list[FakeAmdGpu]:
    return [
        FakeAmdGpu(),
        FakeAmdGpu(
            uuid="6eff74a1-0000-1000-80c2-3a0f5b2d1e22",
            bdf="0000:22:00.0",
            product_serial="692251003344",
            asic_serial="0xB6B4B1F8E1A3C022",
            trace=PowerTrace(base_w=450.0, amp_w=150.0, period_s=0.5),
        ),
    ]


@dataclass
class FakeAmdSmiState:
    gpus: list[FakeAmdGpu] = field(default_factory=two_mi300x)
    init_error: int | None = None  # amdsmi_init raises this status (e.g. AMDSMI_STATUS_DRIVER_NOT_LOADED)
    privileged: bool = False  # root: amdsmi_set_power_cap succeeds (else NO_PERM)
    init_calls: int = 0
    shutdown_calls: int = 0
    set_cap_calls: list[tuple[str, int]] = field(default_factory=list)
    state_file: str | None = None  # where the power caps and "privileged" persist (module docstring)


def gpu_from_entry(entry: dict[str, Any], index: int) -> FakeAmdGpu:
    """A GPU described by a state-file entry: the MI300X profile (or "model": "mi250x"), the
    second one of two_mi300x at index 1, with any plain FakeAmdGpu field the entry names, and
    "base_w"/"amp_w"/"period_s" for its power trace."""
    plain = {f.name for f in fields(FakeAmdGpu)} - {"trace", "unsupported"}
    changes: dict[str, Any] = {k: v for k, v in entry.items() if k in plain}
    if entry.get("model") == "mi250x":
        gpu = mi250x(index, **changes)
    else:
        base = two_mi300x()[min(index, 1)]
        if index > 1:
            base.uuid = f"6eff74a1-0000-1000-80c2-3a0f5b2d1e{index:02x}"
            base.bdf = f"0000:{0x0C + index * 0x10:02x}:00.0"
        gpu = FakeAmdGpu(**{**{f.name: getattr(base, f.name) for f in fields(FakeAmdGpu)}, **changes})
    if any(k in entry for k in ("base_w", "amp_w", "period_s")):
        gpu.trace = PowerTrace(
            float(entry.get("base_w", 300.0)), float(entry.get("amp_w", 100.0)), float(entry.get("period_s", 0.4))
        )
    gpu.unsupported = set(entry.get("unsupported", ()))
    return gpu


def state_from_file(path: str | os.PathLike[str] | None) -> FakeAmdSmiState:
    """The simulated AMD SMI a test subprocess sees: the GPUs the file describes (two MI300X where
    it lists none), persisting their power caps in it."""
    doc = read_state(path) if path else {}
    entries = doc.get("gpus")
    gpus = [gpu_from_entry(e, i) for i, e in enumerate(entries)] if entries else two_mi300x()
    return FakeAmdSmiState(gpus=gpus, privileged=bool(doc.get("privileged", False)), state_file=str(path) if path else None)


def _load_settings(state: FakeAmdSmiState) -> None:
    if not state.state_file:
        return
    doc = read_state(state.state_file)
    state.privileged = bool(doc.get("privileged", state.privileged))
    for entry in doc.get("gpus") or []:
        for gpu in state.gpus:
            if entry.get("uuid") == gpu.uuid:
                gpu.power_cap_uw = int(entry.get("power_cap_uw", gpu.power_cap_uw))
                gpu.determinism_mhz = entry.get("determinism_mhz", gpu.determinism_mhz)


def _save_settings(state: FakeAmdSmiState, gpu: FakeAmdGpu) -> None:
    if not state.state_file:
        return
    doc = read_state(state.state_file)
    entries = doc.setdefault("gpus", [])
    entry = next((e for e in entries if e.get("uuid") == gpu.uuid), None)
    if entry is None:
        entry = {"uuid": gpu.uuid}
        entries.append(entry)
    entry["power_cap_uw"] = gpu.power_cap_uw
    entry["determinism_mhz"] = gpu.determinism_mhz
    write_state(state.state_file, doc)


class _Handle:
    """An opaque processor handle (a ctypes pointer in the real library)."""

    def __init__(self, gpu: FakeAmdGpu) -> None:
        self.gpu = gpu

    def __repr__(self) -> str:
        return f"<processor_handle {self.gpu.bdf}>"


def make_module(state: FakeAmdSmiState) -> types.ModuleType:
    """A fresh module object behaving like amdsmi over `state`."""
    mod = types.ModuleType("amdsmi")
    mod.state = state
    initialised = {"on": False}

    def gpu_of(name: str, handle: _Handle) -> FakeAmdGpu:
        if not initialised["on"]:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        if not isinstance(handle, _Handle):
            raise AmdSmiException(f"Invalid parameter: {type(handle)}")
        if name in handle.gpu.unsupported:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return handle.gpu

    def amdsmi_init(flag: AmdSmiInitFlags = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
        state.init_calls += 1
        if state.init_error is not None:
            raise AmdSmiLibraryException(state.init_error)
        initialised["on"] = True

    def amdsmi_shut_down() -> None:
        state.shutdown_calls += 1
        initialised["on"] = False

    def amdsmi_get_processor_handles() -> list[_Handle]:
        if not initialised["on"]:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        return [_Handle(g) for g in state.gpus]

    def amdsmi_get_gpu_asic_info(processor_handle: _Handle) -> dict[str, Any]:
        g = gpu_of("amdsmi_get_gpu_asic_info", processor_handle)
        return {
            "market_name": g.market_name,
            "vendor_id": "0x1002",
            "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
            "subvendor_id": "0x1002",
            "device_id": hex(g.device_id),
            "rev_id": "0x00",
            "asic_serial": g.asic_serial,
            "oam_id": 0,
            "num_compute_units": 304 if g.profile == "mi300" else 110,
            "target_graphics_version": "gfx" + g.gfx,
            "subsystem_id": "0x74a1",
        }

    def amdsmi_get_gpu_device_uuid(processor_handle: _Handle) -> str:
        return gpu_of("amdsmi_get_gpu_device_uuid", processor_handle).uuid

    def amdsmi_get_gpu_device_bdf(processor_handle: _Handle) -> str:
        return gpu_of("amdsmi_get_gpu_device_bdf", processor_handle).bdf

    def amdsmi_get_gpu_board_info(processor_handle: _Handle) -> dict[str, Any]:
        g = gpu_of("amdsmi_get_gpu_board_info", processor_handle)
        return {
            "model_number": "102-G30211-00",
            "product_serial": g.product_serial or N_A,
            "fru_id": N_A,
            "product_name": g.market_name,
            "manufacturer_name": "AMD",
        }

    def amdsmi_get_gpu_driver_info(processor_handle: _Handle) -> dict[str, Any]:
        g = gpu_of("amdsmi_get_gpu_driver_info", processor_handle)
        return {"driver_name": "amdgpu", "driver_version": g.driver_version, "driver_date": "2015/01/01 00:00"}

    def amdsmi_get_gpu_memory_total(processor_handle: _Handle, mem_type: AmdSmiMemoryType) -> int:
        return gpu_of("amdsmi_get_gpu_memory_total", processor_handle).memory_total

    def amdsmi_get_gpu_memory_usage(processor_handle: _Handle, mem_type: AmdSmiMemoryType) -> int:
        return gpu_of("amdsmi_get_gpu_memory_usage", processor_handle).memory_used

    def amdsmi_get_energy_count(processor_handle: _Handle) -> dict[str, Any]:
        g = gpu_of("amdsmi_get_energy_count", processor_handle)
        if g.secondary:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return {
            g.energy_key: g.counts(),
            "counter_resolution": g.counter_resolution_uj,
            "timestamp": time.monotonic_ns(),
        }

    def amdsmi_get_power_info(processor_handle: _Handle) -> dict[str, Any]:
        g = gpu_of("amdsmi_get_power_info", processor_handle)
        watts: int | str = N_A if g.secondary else g.watts()
        mi300 = g.profile == "mi300"
        return {
            "socket_power": watts,
            "current_socket_power": watts if mi300 else N_A,
            "average_socket_power": N_A if mi300 else watts,
            "gfx_voltage": N_A,
            "soc_voltage": N_A,
            "mem_voltage": N_A,
            "power_limit": g.power_cap_uw // 1_000_000,
        }

    def amdsmi_get_power_cap_info(processor_handle: _Handle) -> dict[str, Any]:
        g = gpu_of("amdsmi_get_power_cap_info", processor_handle)
        _load_settings(state)
        return {
            "power_cap": g.power_cap_uw,
            "default_power_cap": g.default_power_cap_uw,
            "dpm_cap": 0,
            "min_power_cap": g.min_power_cap_uw,
            "max_power_cap": g.max_power_cap_uw,
        }

    def amdsmi_set_power_cap(processor_handle: _Handle, sensor_ind: int, cap: int) -> None:
        g = gpu_of("amdsmi_set_power_cap", processor_handle)
        if not isinstance(sensor_ind, int) or not isinstance(cap, int):
            raise AmdSmiException("Invalid parameter: sensor_ind and cap must be int")
        _load_settings(state)
        if not state.privileged:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NO_PERM)
        if not g.min_power_cap_uw <= cap <= g.max_power_cap_uw:
            raise AmdSmiLibraryException(AMDSMI_STATUS_INVAL)
        g.power_cap_uw = cap
        state.set_cap_calls.append((g.uuid, cap))
        _save_settings(state, g)

    def amdsmi_get_temp_metric(
        processor_handle: _Handle, sensor_type: AmdSmiTemperatureType, metric: AmdSmiTemperatureMetric
    ) -> int:
        g = gpu_of("amdsmi_get_temp_metric", processor_handle)
        if sensor_type == AmdSmiTemperatureType.EDGE and g.profile == "mi300":
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)  # MI300 has no edge sensor
        return g.hotspot_c if sensor_type == AmdSmiTemperatureType.HOTSPOT else g.hotspot_c - 8

    def amdsmi_get_clock_info(processor_handle: _Handle, clock_type: AmdSmiClkType) -> dict[str, Any]:
        g = gpu_of("amdsmi_get_clock_info", processor_handle)
        if clock_type == AmdSmiClkType.MEM:
            return {"clk": g.mem_clock_mhz, "min_clk": 900, "max_clk": g.mem_clock_mhz, "clk_locked": N_A, "clk_deep_sleep": 0}
        return {
            "clk": g.gfx_now_mhz,
            "min_clk": g.min_gfx_clock_mhz,
            "max_clk": g.max_gfx_clock_mhz,
            "clk_locked": g.determinism_mhz is not None,
            "clk_deep_sleep": 0,
        }

    def amdsmi_get_gpu_compute_partition(processor_handle: _Handle) -> str:
        return gpu_of("amdsmi_get_gpu_compute_partition", processor_handle).compute_partition

    def amdsmi_get_gpu_memory_partition(processor_handle: _Handle) -> str:
        return gpu_of("amdsmi_get_gpu_memory_partition", processor_handle).memory_partition

    def amdsmi_get_gpu_perf_level(processor_handle: _Handle) -> str:
        g = gpu_of("amdsmi_get_gpu_perf_level", processor_handle)
        return "AMDSMI_DEV_PERF_LEVEL_DETERMINISM" if g.determinism_mhz else "AMDSMI_DEV_PERF_LEVEL_AUTO"

    def amdsmi_set_gpu_perf_determinism_mode(processor_handle: _Handle, clkvalue: int) -> None:
        g = gpu_of("amdsmi_set_gpu_perf_determinism_mode", processor_handle)
        if not isinstance(clkvalue, int):
            raise AmdSmiException("Invalid parameter: clkvalue must be int")
        _load_settings(state)
        if not g.may_determinism:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        if not state.privileged:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NO_PERM)
        if not g.min_gfx_clock_mhz <= clkvalue <= g.max_gfx_clock_mhz:
            raise AmdSmiLibraryException(AMDSMI_STATUS_INVAL)
        g.determinism_mhz = clkvalue
        _save_settings(state, g)

    def amdsmi_set_gpu_perf_level(processor_handle: _Handle, perf_level: AmdSmiDevPerfLevel) -> None:
        g = gpu_of("amdsmi_set_gpu_perf_level", processor_handle)
        _load_settings(state)
        if not state.privileged:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NO_PERM)
        if perf_level != AmdSmiDevPerfLevel.AUTO:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_YET_IMPLEMENTED)  # the fake models AUTO only
        g.determinism_mhz = None
        _save_settings(state, g)

    def amdsmi_get_violation_status(processor_handle: _Handle) -> dict[str, Any]:
        g = gpu_of("amdsmi_get_violation_status", processor_handle)
        if g.profile != "mi300":
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return {
            "reference_timestamp": time.monotonic_ns() // 1000,
            "active_prochot_thrm": False,
            "active_ppt_pwr": g.ppt_violation,
            "active_socket_thrm": g.thermal_violation,
            "active_vr_thrm": False,
            "active_hbm_thrm": N_A,
        }

    for fn in (
        amdsmi_init,
        amdsmi_shut_down,
        amdsmi_get_processor_handles,
        amdsmi_get_gpu_asic_info,
        amdsmi_get_gpu_device_uuid,
        amdsmi_get_gpu_device_bdf,
        amdsmi_get_gpu_board_info,
        amdsmi_get_gpu_driver_info,
        amdsmi_get_gpu_memory_total,
        amdsmi_get_gpu_memory_usage,
        amdsmi_get_energy_count,
        amdsmi_get_power_info,
        amdsmi_get_power_cap_info,
        amdsmi_set_power_cap,
        amdsmi_get_temp_metric,
        amdsmi_get_clock_info,
        amdsmi_get_violation_status,
        amdsmi_get_gpu_compute_partition,
        amdsmi_get_gpu_memory_partition,
        amdsmi_get_gpu_perf_level,
        amdsmi_set_gpu_perf_determinism_mode,
        amdsmi_set_gpu_perf_level,
    ):
        setattr(mod, fn.__name__, fn)
    for cls in (
        AmdSmiException,
        AmdSmiLibraryException,
        AmdSmiInitFlags,
        AmdSmiClkType,
        AmdSmiTemperatureType,
        AmdSmiTemperatureMetric,
        AmdSmiMemoryType,
        AmdSmiDevPerfLevel,
    ):
        setattr(mod, cls.__name__, cls)
    return mod


# The functions the module offers, for the drift test: name -> keyword arguments to call it with
# on a handle (None: called without a handle).
FUNCTIONS: dict[str, dict[str, Any] | None] = {
    "amdsmi_init": None,
    "amdsmi_shut_down": None,
    "amdsmi_get_processor_handles": None,
    "amdsmi_get_gpu_asic_info": {},
    "amdsmi_get_gpu_device_uuid": {},
    "amdsmi_get_gpu_device_bdf": {},
    "amdsmi_get_gpu_board_info": {},
    "amdsmi_get_gpu_driver_info": {},
    "amdsmi_get_gpu_memory_total": {"mem_type": AmdSmiMemoryType.VRAM},
    "amdsmi_get_gpu_memory_usage": {"mem_type": AmdSmiMemoryType.VRAM},
    "amdsmi_get_energy_count": {},
    "amdsmi_get_power_info": {},
    "amdsmi_get_power_cap_info": {},
    "amdsmi_set_power_cap": {"sensor_ind": 0, "cap": 500_000_000},
    "amdsmi_get_temp_metric": {"sensor_type": AmdSmiTemperatureType.HOTSPOT, "metric": AmdSmiTemperatureMetric.CURRENT},
    "amdsmi_get_clock_info": {"clock_type": AmdSmiClkType.GFX},
    "amdsmi_get_violation_status": {},
    "amdsmi_get_gpu_compute_partition": {},
    "amdsmi_get_gpu_memory_partition": {},
    "amdsmi_get_gpu_perf_level": {},
    "amdsmi_set_gpu_perf_determinism_mode": {"clkvalue": 1900},
    "amdsmi_set_gpu_perf_level": {"perf_level": AmdSmiDevPerfLevel.AUTO},
}
