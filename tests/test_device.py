"""The device layer (bench/device/): its versioned interface, NVIDIA (NVML, simulated by
tests/fake_nvml.py) behind it with NVML's errors as the layer's, the inventory's serial and
power-limit range, and a second vendor written against bench/device/base.py alone that the
monitor, `wattbench monitor` and the sweep's controller and restore use without a change outside
bench/device/."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import device
from bench.control import controller, restore
from bench.control.points import OperatingPoint
from bench.device import nvidia
from bench.device.base import (
    ControlError,
    DeviceError,
    DeviceUnavailable,
    GpuInfo,
    GpuVendor,
    Inventory,
    NoPermission,
    NotSupported,
    OutOfRange,
    PowerLimits,
)
from bench.errors import UsageError
from bench.monitor import command
from bench.monitor.base import PowerSource, Reading
from bench.monitor.discover import DeviceRef, discover
from tests.fake_nvml import NVML_ERROR_UNKNOWN, NVMLError

REPO = Path(__file__).resolve().parent.parent
UUID = "GPU-11111111-2222-3333-4444-555555555555"  # the simulated NVML's H100
TOY_UUID = "GPU-70707070-0000-0000-0000-000000000000"


# --- the layer and NVIDIA behind it ------------------------------------------------------------------


def test_api_version_and_the_vendors_built_in():
    assert type(device.API_VERSION) is int and device.API_VERSION == 1
    first, second = device.vendors()
    assert isinstance(first, nvidia.NvidiaGpus) and isinstance(first, GpuVendor) and first.name == "nvidia"
    assert type(second).__name__ == "AmdGpus" and second.name == "amd" and second.api_version == device.API_VERSION
    assert device.vendor_libraries() == {"pynvml": "nvidia-ml-py", "amdsmi": "/opt/rocm/share/amd_smi"}
    assert device.ENTRY_POINT_GROUP == "wattbench.devices"


GPU_NODE = "cpu_cores_count 0\nsimd_count 1216\ngfx_target_version 90402\n"  # an MI300X's KFD node
APU_NODE = "cpu_cores_count 16\nsimd_count 8\ngfx_target_version 110003\n"  # a Ryzen's integrated GPU


@pytest.mark.parametrize(
    "files, libraries",
    [
        ({}, {"pynvml": "nvidia-ml-py"}),  # no GPU driver: the default vendor's (gpu-check is an NVIDIA check)
        ({"proc/driver/nvidia/version": ""}, {"pynvml": "nvidia-ml-py"}),
        ({"sys/class/kfd/kfd/topology/nodes/1/properties": GPU_NODE}, {"amdsmi": "/opt/rocm/share/amd_smi"}),
        # amdgpu drives a Ryzen's integrated GPU on many an NVIDIA workstation: not an AMD machine
        (
            {"dev/nvidiactl": "", "dev/kfd": "", "sys/class/kfd/kfd/topology/nodes/0/properties": APU_NODE},
            {"pynvml": "nvidia-ml-py"},
        ),
        (
            {"dev/nvidiactl": "", "sys/class/kfd/kfd/topology/nodes/2/properties": GPU_NODE},
            {"pynvml": "nvidia-ml-py", "amdsmi": "/opt/rocm/share/amd_smi"},
        ),
    ],
)
def test_the_vendor_libraries_a_machine_needs_follow_its_gpus(tmp_path, files, libraries):
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert device.vendor_libraries(machine=True, root=tmp_path) == libraries


def test_a_vendor_whose_library_lists_no_gpu_is_not_a_candidate(fake_nvml, monkeypatch):
    """ROCm installed without an AMD GPU: amdsmi works and lists nothing; NVIDIA's GPU is NVIDIA's."""

    class NoGpus(ToyVendor):
        name = "empty"

        def inventory(self) -> Inventory:
            return Inventory("1.0", None, ())

    monkeypatch.setattr(device, "vendors", lambda: (nvidia.NvidiaGpus(), NoGpus()))
    assert isinstance(device.vendor_for("GPU-anything"), nvidia.NvidiaGpus)


def test_a_vendor_without_its_driver_here_is_not_heard_from(monkeypatch):
    """The amdsmi package without ROCm on a machine without AMD GPUs (this one): AMD says nothing;
    with the amdgpu driver loaded its reason is shown, and NVML's no longer is."""
    assert device.vendors_shown() == {"nvidia"}
    amd = next(spec for spec in device.BUILTIN_VENDORS if spec.name == "amd")
    monkeypatch.setattr(device, "driver_present", lambda spec, root=None: spec is amd)
    assert device.vendors_shown() == {"amd"}
    monkeypatch.setattr(device, "driver_present", lambda spec, root=None: True)
    assert device.vendors_shown() == {"nvidia", "amd"}


def test_importing_the_layer_imports_no_vendor_library():
    """A vendor's package imports its library lazily: wattbench imports on a machine without it,
    and bench.device alone (what the preflight reads) imports no vendor package at all."""
    code = (
        "import sys, bench.device; first = sorted(m for m in sys.modules if m.startswith('bench.device'))\n"
        "import bench.device.nvidia; print(first, 'pynvml' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['bench.device']", "False"]


def test_library_found_looks_up_without_importing(monkeypatch):
    assert device.library_found("json") and not device.library_found("no_such_vendor_library")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # blocked, as tests block an import
    assert not device.library_found("pynvml")


@pytest.mark.parametrize(
    ("nvml_error", "base_error"),
    [
        (nvidia.NvmlError, DeviceError),
        (nvidia.NvmlUnavailable, DeviceUnavailable),
        (nvidia.NvmlControlError, ControlError),
        (nvidia.NvmlNoPermission, NoPermission),
        (nvidia.NvmlOutOfRange, OutOfRange),
        (nvidia.NvmlNotSupported, NotSupported),
    ],
)
def test_nvml_errors_are_the_layers_errors(nvml_error, base_error):
    assert issubclass(nvml_error, base_error) and issubclass(nvml_error, nvidia.NvmlError)


def test_control_errors_reach_callers_as_the_layers_errors(fake_nvml):
    vendor = device.vendor_for(UUID)
    with pytest.raises(OutOfRange, match=r"valid: 200-700 W"):
        vendor.set_power_limit(UUID, 900)
    with pytest.raises(NoPermission, match="no permission"):
        vendor.set_power_limit(UUID, 450)  # the simulated NVML is not privileged by default
    with pytest.raises(NotSupported, match="not a MIG instance"):
        vendor.lock_sm_clocks("MIG-aaaa", 1410)
    with pytest.raises(DeviceUnavailable, match="no NVML device with UUID GPU-ffff"):
        vendor.power_source("GPU-ffff", "cuda:0", probe=False)


def test_inventory_has_serial_and_power_limit_range(fake_nvml):
    gpu = nvidia.inventory().gpus[0]
    assert gpu.serial == "1654922012345"
    assert (gpu.power_limit_min_w, gpu.power_limit_w, gpu.power_limit_max_w) == (200.0, 700.0, 700.0)


def test_serial_and_range_are_best_effort(fake_nvml):
    """A GPU without a serial (GeForce) or failing to say its range keeps the rest of its entry."""
    fake_nvml.gpus[0].unsupported.add("nvmlDeviceGetSerial")

    def failing(handle):
        raise NVMLError(NVML_ERROR_UNKNOWN)

    sys.modules["pynvml"].nvmlDeviceGetPowerManagementLimitConstraints = failing
    gpu = nvidia.inventory().gpus[0]
    assert (gpu.serial, gpu.power_limit_min_w, gpu.power_limit_max_w) == (None, None, None)
    assert gpu.power_limit_w == 700.0 and gpu.memory_bytes == 80 * 2**30


def test_nvidia_through_the_interface(fake_nvml):
    fake_nvml.privileged = True
    vendor = device.vendor_for(UUID)
    assert vendor.inventory().by_uuid(UUID.removeprefix("GPU-")).name == "NVIDIA H100 80GB HBM3"
    reading = vendor.power_source(UUID, "cuda:0", probe=False).read()
    assert reading.energy_j is not None and reading.power_w and reading.temperature_c == 54 and reading.error is None
    vendor.set_power_limit(UUID, 450)
    vendor.lock_sm_clocks(UUID, 1410)
    assert vendor.power_limits(UUID).current_w == 450.0 and vendor.sm_clock_mhz(UUID) == 1410
    vendor.restore(UUID, 700.0, reset_clocks=True)
    assert vendor.power_limits(UUID).current_w == 700.0 and fake_nvml.gpus[0].locked_clock_mhz is None
    assert vendor.controls(UUID).clock_range_text() == "1980..210 MHz (119 steps)"
    assert vendor.controls_by_uuid(["GPU-ffff"]) == {"GPU-ffff": "GPU GPU-ffff: nvmlDeviceGetHandleByUUID: Not Found"}


def test_power_source_refuses_a_gpu_with_neither_energy_nor_power(fake_nvml):
    fake_nvml.gpus[0].unsupported |= {
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetFieldValues",
        "nvmlDeviceGetPowerUsage",
    }
    with pytest.raises(DeviceUnavailable, match="NVML reports neither energy nor power for this GPU"):
        device.vendor_for(UUID).power_source(UUID, "cuda:0", probe=False)


def test_the_serial_call_exists_in_nvidia_ml_py():
    """The simulated NVML could drift from the real package's names."""
    import importlib.util

    spec = importlib.util.find_spec("pynvml")
    if spec is None or spec.loader is None:
        pytest.skip("nvidia-ml-py is not installed")
    real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real)  # a fresh copy: whatever sys.modules holds is left alone
    assert callable(real.nvmlDeviceGetSerial)


# --- a second vendor, written against bench/device/base.py alone ----------------------------------


class ToySource(PowerSource):
    """A constant 250 W with a counter."""

    counter_source = "toy_energy"
    power_source = "toy_power"

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.t0 = time.monotonic()

    def read(self) -> Reading:
        t = time.monotonic()
        return Reading(t_s=t, energy_j=250.0 * (t - self.t0), power_w=250.0, temperature_c=41)


class ToyVendor(GpuVendor):
    """One GPU held in memory, with a power limit of 100-300 W and three lockable clocks."""

    name = "toy"

    def __init__(self) -> None:
        self.limit_w = 300.0
        self.clock_mhz: int | None = None
        self.allowed = (True, "toy admin")

    def inventory(self) -> Inventory:
        gpu = GpuInfo(
            0, TOY_UUID, "Toy GPU", None, 16 * 2**30, self.limit_w, serial="T-1", power_limit_min_w=100.0, power_limit_max_w=300.0
        )
        return Inventory(driver_version="toy 1.0", cuda_driver_version=None, gpus=(gpu,))

    def _known(self, uuid: str) -> None:
        if self.inventory().by_uuid(uuid) is None:
            raise DeviceUnavailable(f"no toy GPU {uuid}")

    def power_source(self, uuid: str, device_id: str, probe: bool = True) -> PowerSource:
        self._known(uuid)
        return ToySource(device_id)

    def power_limits(self, uuid: str) -> PowerLimits:
        self._known(uuid)
        return PowerLimits(current_w=self.limit_w, enforced_w=self.limit_w, default_w=300.0, min_w=100.0, max_w=300.0)

    def set_power_limit(self, uuid: str, watts: float) -> None:
        if not 100.0 <= watts <= 300.0:
            raise OutOfRange(f"GPU {uuid}: power limit {watts:g} W is out of range (valid: 100-300 W)")
        self.limit_w = watts

    def supported_sm_clocks(self, uuid: str) -> list[int]:
        return [2100, 1500, 900]

    def sm_clock_mhz(self, uuid: str) -> int | None:
        return self.clock_mhz or 2100

    def lock_sm_clocks(self, uuid: str, mhz: int) -> None:
        self.clock_mhz = mhz

    def reset_sm_clocks(self, uuid: str) -> None:
        self.clock_mhz = None

    def may_change_settings(self) -> tuple[bool, str]:
        return self.allowed


@pytest.fixture
def toy(fake_nvml, monkeypatch):
    """NVIDIA (one simulated H100) and the toy vendor, as a registry of two would list them."""
    vendor = ToyVendor()
    both = (nvidia.NvidiaGpus(), vendor)
    monkeypatch.setattr(device, "vendors", lambda: both)  # the monitor asks through device.inventories()
    return vendor


def test_vendor_for_picks_the_vendor_that_lists_the_gpu(toy):
    assert device.vendor_for(TOY_UUID) is toy
    assert isinstance(device.vendor_for(UUID.removeprefix("GPU-")), nvidia.NvidiaGpus)
    with pytest.raises(DeviceUnavailable, match=r"GPU-ffff \(nvidia: not listed; toy: not listed\)"):
        device.vendor_for("GPU-ffff")


def test_a_second_vendor_is_measured_by_the_monitor(toy):
    found = discover([DeviceRef("cuda:0", "cuda", UUID), DeviceRef("cuda:1", "cuda", TOY_UUID)], probe=False)
    assert found.status == {"cuda:0": "nvml_energy + nvml_power_instant", "cuda:1": "toy_energy + toy_power"}
    refs, names = command._devices()
    assert [(r.id, r.uuid) for r in refs] == [("gpu0", UUID), ("toy-gpu0", TOY_UUID), ("cpu", None)]
    assert names["toy-gpu0"] == "Toy GPU"


def test_a_second_vendor_is_swept_and_restored(toy, tmp_path, monkeypatch):
    monkeypatch.setenv(restore.STATE_ENV, str(tmp_path))
    (target,) = controller.targets_for([DeviceRef("cuda:1", "cuda", TOY_UUID)])
    assert target.vendor is toy and target.clocks_mhz == [2100, 1500, 900]
    points = [OperatingPoint(power_limit="150", gpu_clocks_mhz=1500)]
    sweep = controller.Controller([target], points, settle_s=0.0, command="test", say=lambda line: None)
    toy.allowed = (False, "toy says no")
    with pytest.raises(UsageError, match="needs administrator rights: toy says no"):
        sweep.check()
    toy.allowed = (True, "toy admin")
    sweep.check()
    (state,) = sweep.apply(points[0])
    assert (toy.limit_w, toy.clock_mhz, state["enforced_power_limit_w"]) == (150.0, 1500, 150.0)
    record = restore.write_record(TOY_UUID, "cuda:1", 300.0, True, "test")
    restore.restore(record)
    assert (toy.limit_w, toy.clock_mhz, record.path.exists()) == (300.0, None, False)
