"""MIG: torch's device is an instance whose power NVML cannot attribute. The simulated NVML puts a GPU
in MIG mode with instances (tests/fake_nvml.py); torch's side is a fake device-properties object, as
torch.cuda.get_device_properties gives it (the instance's UUID without a prefix, a '... MIG' name)."""

from __future__ import annotations

import json
import types

import pytest

from bench.device import nvidia as nvml
from bench.measure import hardware
from bench.measure.hardware import DeviceInfo, TorchCuda, cuda_device_info, gpu_diagnosis, no_power_hint
from bench.monitor.discover import DeviceRef, discover
from tests.fake_nvml import NVML_DEVICE_MIG_DISABLE, NVML_DEVICE_MIG_ENABLE, FakeGpu, mig_instance

PARENT = "GPU-11111111-2222-3333-4444-555555555555"
MIG_0 = "MIG-aaaaaaaa-0000-1111-2222-333333333333"
MIG_1 = "MIG-bbbbbbbb-0000-1111-2222-333333333333"
MIG_NAME = "NVIDIA H100 80GB HBM3 MIG 1g.10gb"
REASON = "a MIG instance: NVML reports power per physical GPU, not per instance"


@pytest.fixture
def mig(fake_nvml, monkeypatch):
    """GPU 0 in MIG mode with two instances; GPU 1 a whole GPU (MIG disabled); CUDA_VISIBLE_DEVICES unset."""
    fake_nvml.gpus[0].mig_mode = NVML_DEVICE_MIG_ENABLE
    fake_nvml.gpus[0].mig_devices = [mig_instance(MIG_0), mig_instance(MIG_1)]
    fake_nvml.gpus.append(FakeGpu(uuid="GPU-cccccccc-0000-0000-0000-000000000000", mig_mode=NVML_DEVICE_MIG_DISABLE))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake_nvml


def props(uuid: str, name: str = MIG_NAME) -> types.SimpleNamespace:
    """What torch.cuda.get_device_properties says of a device: str(uuid) has no 'GPU-'/'MIG-' prefix."""
    return types.SimpleNamespace(
        uuid=uuid.removeprefix("MIG-").removeprefix("GPU-"),
        name=name,
        total_memory=10 * 2**30,
        L2_cache_size=50 * 2**20,
        multi_processor_count=16,
        major=9,
        minor=0,
    )


def mig_device(uuid: str = MIG_0, index: int = 0) -> DeviceInfo:
    return cuda_device_info(index, props(uuid), hardware.nvml_inventory(), None)


# --- NVML's inventory -----------------------------------------------------------------------------


def test_inventory_reads_mig_mode_and_instances(mig):
    inv = nvml.inventory()
    assert inv.gpus[0].mig_mode is True and inv.gpus[0].mig_uuids == (MIG_0, MIG_1)
    assert inv.gpus[1].mig_mode is False and inv.gpus[1].mig_uuids == ()
    assert inv.mig_parent(MIG_1).uuid == PARENT
    assert inv.mig_parent(MIG_1.removeprefix("MIG-")).uuid == PARENT  # torch's spelling
    assert inv.mig_parent("MIG-ffffffff") is None and inv.mig_parent(None) is None
    assert inv.by_uuid(MIG_0) is None  # the inventory's GPUs are physical ones


def test_inventory_without_mig_support(fake_nvml):
    gpu = nvml.inventory().gpus[0]  # the simulated GPU answers 'not supported' by default
    assert gpu.mig_mode is None and gpu.mig_uuids == ()


def test_a_failing_mig_query_leaves_the_inventory_usable(mig):
    import sys

    mod = sys.modules["pynvml"]

    def broken(handle):
        raise mod.NVMLError(999)

    mod.nvmlDeviceGetMigMode = broken
    inv = nvml.inventory()
    assert len(inv.gpus) == 2 and inv.gpus[0].mig_mode is None


# --- torch's device -------------------------------------------------------------------------------


def test_mig_instance_keeps_its_mig_uuid_and_parent(mig):
    d = mig_device(MIG_1, 1)
    assert d.uuid == MIG_1 and d.mig is True and d.mig_parent_uuid == PARENT
    assert d.power_limit_w is None  # the GPU's limit is not the instance's
    assert d.pci_bus_id == "00000000:18:00.0"
    assert d.to_dict()["mig"] is True


def test_mig_instance_recognised_by_name_without_nvml():
    d = cuda_device_info(0, props(MIG_0), "NVML failed to initialise: Driver Not Loaded", None)
    assert d.uuid == MIG_0 and d.mig is True and d.mig_parent_uuid is None


def test_mig_instance_recognised_by_cuda_visible_devices():
    d = cuda_device_info(0, props(MIG_0, name="NVIDIA H100 80GB HBM3"), "no NVML", f"{MIG_0}")
    assert d.uuid == MIG_0 and d.mig is True


def test_whole_gpu_keeps_gpu_prefix(mig):
    d = cuda_device_info(
        0, props("GPU-cccccccc-0000-0000-0000-000000000000", "NVIDIA H100 80GB HBM3"), hardware.nvml_inventory(), None
    )
    assert d.uuid == "GPU-cccccccc-0000-0000-0000-000000000000" and d.mig is None
    assert "mig" not in d.to_dict() and d.power_limit_w == 700.0
    unlisted = cuda_device_info(0, props("GPU-dddddddd", "NVIDIA H100 80GB HBM3"), "no NVML", None)
    assert unlisted.uuid == "GPU-dddddddd" and unlisted.mig is None


# --- power: discovery, the run's monitor status, the hint ---------------------------------------


def test_discovery_says_mig_power_is_not_attributable(mig):
    d = mig_device()
    found = discover([DeviceRef(d.id, d.kind, d.uuid)])
    assert found.sources == ()
    assert found.status["cuda:0"] == f"unavailable: {REASON}"
    hint = no_power_hint([d], found.status)
    assert hint is not None and REASON in hint and "--nominal-watts W" in hint
    found = discover([DeviceRef(d.id, d.kind, d.uuid)], nominal_watts=100)
    assert found.status["cuda:0"] == "nominal (estimate)"


def test_run_monitor_status_names_mig(mig):
    """`wattbench run` writes discovery's status into run.monitor.status (bench.measure.machine.discover_devices)."""
    from bench.measure import machine

    found = machine.discover_devices([mig_device()], None)
    assert found.status == {"cuda:0": f"unavailable: {REASON}"}


def test_mig_reason_even_without_nvml():
    """The reason is MIG's, not NVML's: no NVML call is needed to know it."""
    with pytest.raises(nvml.NvmlUnavailable, match="per physical GPU, not per instance"):
        nvml.NvmlSource(MIG_0, "cuda:0")


# --- diagnosis and `wattbench info` ------------------------------------------------------------------


def _torch(*devices: DeviceInfo) -> TorchCuda:
    return TorchCuda(version="2.13.0+cu128", cuda="12.8", hip=None, available=True, devices=devices)


def test_diagnosis_marks_the_parent_used_through_its_instance(mig):
    diag = gpu_diagnosis(hardware.nvml_inventory(), _torch(mig_device()), {})
    parent, whole = diag
    assert parent.uuid == PARENT and parent.usable and parent.torch_device == "cuda:0"
    assert "MIG mode" in parent.problem and "not per instance" in parent.problem
    assert "--nominal-watts" in parent.fix
    assert not whole.usable and "not visible to this process" in whole.problem


def test_diagnosis_of_an_instance_nvml_does_not_list(fake_nvml):
    d = cuda_device_info(0, props(MIG_0), "no NVML", None)
    (whole, instance) = gpu_diagnosis(nvml.inventory(), _torch(d), {})
    assert instance.uuid == MIG_0 and instance.usable and instance.nvml_index is None
    assert instance.problem.startswith(REASON)


def test_info_json_under_mig(mig, monkeypatch, capsys):
    from bench.cli import main

    device = mig_device()
    monkeypatch.setattr(hardware, "cuda_devices", lambda: (device,))
    assert main(["info", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (gpu,) = [d for d in doc["devices"] if d["id"] == "cuda:0"]
    assert gpu["uuid"] == MIG_0 and gpu["mig"] is True and gpu["mig_parent_uuid"] == PARENT
    assert doc["power"]["status"]["cuda:0"] == f"unavailable: {REASON}"
    assert REASON in doc["power"]["hint"]
    assert doc["gpus"][0]["torch_device"] == "cuda:0" and "MIG mode" in doc["gpus"][0]["problem"]
