"""NVML access against the simulated NVML in tests/fake_nvml.py."""

import sys

import pytest

from bench.device import nvidia as nvml
from bench.measure import hardware
from tests.fake_nvml import NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_UNKNOWN, FakeGpu


@pytest.fixture
def fake(fake_nvml):
    return fake_nvml


def test_inventory_reads_driver_and_gpus(fake):
    fake.gpus.append(FakeGpu(uuid="GPU-aaaa", name="NVIDIA H200", bus_id="00000000:2A:00.0", power_limit_mw=680_500))
    inv = nvml.inventory()
    assert inv.driver_version == "560.35.03"
    assert inv.cuda_driver_version == "12.6"
    assert [g.name for g in inv.gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]
    assert inv.gpus[0].power_limit_w == 700.0 and inv.gpus[1].power_limit_w == 680.5
    assert inv.gpus[0].memory_bytes == 80 * 2**30
    assert inv.gpus[1].pci_bus_id == "00000000:2A:00.0"
    assert fake.init_calls == 1
    nvml.inventory()
    assert fake.init_calls == 1  # initialised once per process


def test_match_by_uuid_with_or_without_prefix(fake):
    inv = nvml.inventory()
    assert inv.by_uuid("11111111-2222-3333-4444-555555555555").index == 0
    assert inv.by_uuid("GPU-11111111-2222-3333-4444-555555555555").index == 0
    assert inv.by_uuid("ffffffff") is None and inv.by_uuid(None) is None


@pytest.mark.parametrize("fn", ["nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPciInfo", "nvmlDeviceGetMemoryInfo"])
def test_unsupported_field_is_none(fake, fn):
    fake.gpus[0].unsupported.add(fn)
    gpu = nvml.inventory().gpus[0]
    field = {
        "nvmlDeviceGetEnforcedPowerLimit": "power_limit_w",
        "nvmlDeviceGetPciInfo": "pci_bus_id",
        "nvmlDeviceGetMemoryInfo": "memory_bytes",
    }[fn]
    assert getattr(gpu, field) is None
    assert gpu.name == "NVIDIA H100 80GB HBM3"


def test_init_failure_gives_reason(fake):
    fake.init_error = NVML_ERROR_DRIVER_NOT_LOADED
    with pytest.raises(nvml.NvmlUnavailable, match="NVML failed to initialise: Driver Not Loaded"):
        nvml.inventory()
    assert hardware.nvml_inventory() == "NVML failed to initialise: Driver Not Loaded"
    assert hardware.host_info().nvml == "unavailable: NVML failed to initialise: Driver Not Loaded"


def test_missing_package_gives_reason(monkeypatch):
    nvml.reset()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(nvml.NvmlUnavailable, match="nvidia-ml-py is not installed"):
        nvml.inventory()


def test_unexpected_error_is_mapped(fake):
    mod = sys.modules["pynvml"]

    def broken():
        raise mod.NVMLError(NVML_ERROR_UNKNOWN)

    mod.nvmlDeviceGetCount = broken
    with pytest.raises(nvml.NvmlUnavailable, match="NVML query failed: Unknown Error"):
        nvml.inventory()


def test_host_info_reports_driver(fake):
    info = hardware.host_info()
    assert info.driver == "560.35.03"
    assert info.nvml == "ok (1 GPU(s))"


def test_one_inaccessible_gpu_does_not_hide_the_others(fake):
    from tests.fake_nvml import FakeGpu

    fake.gpus.append(FakeGpu(uuid="GPU-bbbb", name="NVIDIA H200"))
    mod = sys.modules["pynvml"]
    real = mod.nvmlDeviceGetHandleByIndex

    def guarded(index):
        if index == 0:
            raise mod.NVMLError(4)  # NO_PERMISSION: a GPU outside this job's cgroup
        return real(index)

    mod.nvmlDeviceGetHandleByIndex = guarded
    inv = nvml.inventory()
    assert [g.name for g in inv.gpus] == ["NVIDIA H200"]


def test_health_signals_and_identity_for_a_fleet(fake_nvml):
    """What an acceptance check reads (the PCIe link against its maximum, uncorrectable ECC
    errors, remapped rows) and the board's identity (serial, module id, firmware); None where
    the GPU does not say."""
    from bench.device import nvidia

    gpu = fake_nvml.gpus[0]
    gpu.pcie_gen, gpu.pcie_width, gpu.ecc_uncorrected, gpu.remapped_rows, gpu.module_id = 4, 8, 2, (0, 1, 1, 0), 5
    health = nvidia.NvidiaGpus().health(gpu.uuid)
    assert health is not None and health.to_dict() == {
        "pcie_gen": 4,
        "pcie_gen_max": 5,
        "pcie_width": 8,
        "pcie_width_max": 16,
        "ecc_uncorrected": 2,
        "remapped_rows_pending": True,
        "remapped_rows_failure": False,
    }
    (listed,) = nvidia.inventory().gpus
    assert (listed.serial, listed.module_id, listed.vbios) == ("1654922012345", 5, "96.00.99.00.01")
    gpu.unsupported |= {"nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetRemappedRows", "nvmlDeviceGetCurrPcieLinkGeneration"}
    health = nvidia.NvidiaGpus().health(gpu.uuid)
    assert health is not None and (health.ecc_uncorrected, health.remapped_rows_pending, health.pcie_gen) == (None, None, None)
    assert nvidia.NvidiaGpus().health("GPU-not-here") is None


def test_xid_events_during_a_run_are_kept_by_gpu(fake_nvml):
    """The watch registers the GPUs for Xid events and keeps what comes while it is open; one due
    after it closed is not seen."""
    import time

    from bench.device import nvidia

    uuid = fake_nvml.gpus[0].uuid
    fake_nvml.xid_events += [(uuid, 79, time.monotonic() + 0.05), (uuid, 48, time.monotonic() + 30)]
    with nvidia.NvidiaGpus().watch_errors([uuid]) as watch:
        time.sleep(0.3)
    assert watch.watching and watch.events == {uuid: [79]}
