"""ROCm builds of torch on AMD GPUs (bench/measure/rocm.py): a torch device is matched to AMD SMI's
GPU by PCI address, not index; a partition is known as one and has no power of its own; `info`'s
AMD diagnosis names a missing AMD SMI, /dev/kfd without access, a CPU or CUDA build of torch, and
GPUs hidden by the visibility variables, each with its fix."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from bench.device.base import GpuInfo, Inventory
from bench.measure import hardware, machine, rocm
from bench.monitor.discover import discover
from bench.report.info import render_accelerators

A = "6eff74a1-0000-1000-80c2-3a0f5b2d1e11"
B = "6eff74a1-0000-1000-80c2-3a0f5b2d1e22"


def _inventory(partitioned: bool = False) -> Inventory:
    gpus = (
        GpuInfo(
            0,
            A,
            "AMD Instinct MI300X",
            "0000:0c:00.0",
            192 * 2**30,
            750.0,
            mig_mode=partitioned,
            mig_uuids=("p1",) if partitioned else (),
        ),
        GpuInfo(1, B, "AMD Instinct MI300X", "0000:22:00.0", 192 * 2**30, 700.0, mig_mode=False),
    )
    return Inventory("6.10.5", None, gpus)


def _props(bus: int, uuid: str = "", **more) -> SimpleNamespace:
    """torch.cuda.get_device_properties on ROCm (the fields bench reads)."""
    values = dict(name="AMD Instinct MI300X", total_memory=192 * 2**30, multi_processor_count=304, major=9, minor=4)
    values.update(pci_domain_id=0, pci_bus_id=bus, pci_device_id=0, uuid=uuid, gcnArchName="gfx942:sramecc+:xnack-")
    return SimpleNamespace(**{**values, **more})


def test_torch_devices_are_matched_by_pci_address_not_index():
    """HIP's order (after ROCR_VISIBLE_DEVICES) is not AMD SMI's: cuda:0 here is AMD SMI's GPU 1."""
    first = hardware.rocm_device_info(0, _props(0x22), _inventory())
    second = hardware.rocm_device_info(1, _props(0x0C), _inventory())
    assert (first.uuid, first.pci_bus_id, first.power_limit_w) == (B, "0000:22:00.0", 700.0)
    assert (second.uuid, second.mig, second.compute_capability) == (A, None, "9.4")
    assert rocm.torch_bus_id(_props(0xC1)) == "0000:c1:00"
    no_pci = SimpleNamespace(**{k: v for k, v in vars(_props(0)).items() if not k.startswith("pci_")})
    assert hardware.rocm_device_info(0, SimpleNamespace(**{**vars(no_pci), "uuid": B}), _inventory()).uuid == B
    # a torch without PCI fields whose UUIDs are spelled otherwise: AMD SMI's order, where the caller knows it holds
    assert hardware.rocm_device_info(1, no_pci, _inventory(), in_order=_inventory().gpus[1]).uuid == B


def test_a_device_on_a_partitioned_gpu_is_a_partition_without_power_of_its_own():
    device = hardware.rocm_device_info(3, _props(0x0C), _inventory(partitioned=True))
    assert (device.uuid, device.mig, device.mig_parent_uuid, device.power_limit_w) == (None, True, A, None)
    assert device.name == "AMD Instinct MI300X (partition)"  # not the board: no board peak, not its hardware
    found = discover([device.ref()], probe=False)
    assert found.sources == ()
    assert (
        found.status["cuda:3"]
        == f"unavailable: a partition of GPU {A}: power and energy are reported per physical GPU, not per partition"
    )


def _problems(
    tmp_path: Path,
    inventory: Inventory | str,
    hip: str | None = "6.4.43482",
    cuda: str | None = None,
    devices=(),
    environ=None,
    access=None,
):
    return rocm.setup_problems(
        inventory, "2.9.0", cuda, hip, list(devices), environ or {}, root=tmp_path, access=access or (lambda path, mode: True)
    )


def test_a_sound_amd_machine_has_no_problems(tmp_path):
    devices = [hardware.rocm_device_info(i, _props(bus), _inventory()) for i, bus in enumerate((0x0C, 0x22))]
    assert _problems(tmp_path, _inventory(), devices=devices) == []


def test_amd_smi_missing_and_no_access_to_dev_kfd_say_the_fix(tmp_path):
    (tmp_path / "dev/dri").mkdir(parents=True)
    (tmp_path / "dev/kfd").touch()
    (tmp_path / "dev/dri/renderD128").touch()
    found = _problems(tmp_path, "amdsmi is not installed", access=lambda path, mode: False)
    assert [p.problem for p in found] == [
        "power and energy cannot be measured: AMD SMI cannot be used (amdsmi is not installed)",
        f"no access to {tmp_path}/dev/kfd (ROCm's compute device)",
        f"no access to the render nodes in {tmp_path}/dev/dri",
    ]
    assert "pip install /opt/rocm/share/amd_smi" in found[0].fix
    assert "usermod -aG render,video" in found[1].fix and "--device=/dev/kfd" in found[1].fix


@pytest.mark.parametrize("cuda, build", [(None, "a CPU-only build"), ("12.8", "a CUDA (CUDA 12.8) build")])
def test_a_cpu_or_cuda_torch_on_an_amd_machine_is_told_the_rocm_wheel(tmp_path, cuda, build):
    (tmp_path / "opt/rocm/.info").mkdir(parents=True)
    (tmp_path / "opt/rocm/.info/version").write_text("6.4.1-120\n")
    (problem,) = _problems(tmp_path, _inventory(), hip=None, cuda=cuda)
    assert problem.problem == f"torch 2.9.0 is {build} (torch.version.hip is None): it cannot use AMD GPUs"
    assert "--index-url https://download.pytorch.org/whl/rocm6.4 " in problem.fix and "6.4.1" in problem.fix
    # with NVIDIA GPUs beside the AMD ones a CUDA torch is no mistake: no advice to replace it
    found = rocm.setup_problems(
        _inventory(), "2.9.0", cuda, None, [], {}, root=tmp_path, access=lambda p, m: True, nvidia_too=True
    )
    assert bool(found) == (cuda is None)


def test_gpus_hidden_by_the_visibility_variables_are_named(tmp_path):
    seen = [hardware.rocm_device_info(0, _props(0x22), _inventory())]
    (problem,) = _problems(tmp_path, _inventory(), devices=seen, environ={"HIP_VISIBLE_DEVICES": "1", "PATH": "/bin"})
    assert problem.problem == "AMD GPU(s) 0 (0000:0c:00.0) not used by torch (it uses cuda:0): hidden by HIP_VISIBLE_DEVICES='1'"
    (problem,) = _problems(tmp_path, _inventory(), devices=seen)
    assert "not visible to torch" in problem.problem and "no visibility variable is set" in problem.problem
    assert rocm.visibility({"ROCR_VISIBLE_DEVICES": "GPU-abc", "CUDA_VISIBLE_DEVICES": "0"}) == (
        "ROCR_VISIBLE_DEVICES='GPU-abc' CUDA_VISIBLE_DEVICES='0'"
    )


def test_info_shows_the_amd_problems_under_the_accelerators(tmp_path, monkeypatch):
    node = tmp_path / "sys/class/kfd/kfd/topology/nodes/1/properties"  # ROCm's driver lists an AMD GPU
    node.parent.mkdir(parents=True)
    node.write_text("cpu_cores_count 0\nsimd_count 1216\n")
    monkeypatch.setattr(hardware, "amd_inventory", lambda: "amdsmi is installed but ROCm's libamd_smi.so was not found")
    problems = machine.amd_setup_problems([], root=tmp_path)
    assert problems and problems[0].problem.endswith("(amdsmi is installed but ROCm's libamd_smi.so was not found)")
    info = SimpleNamespace(accelerators=(), vendor_errors=(), setup_problems=problems)
    out = io.StringIO()
    render_accelerators(info, Console(file=out, width=200))
    assert "amd: power and energy cannot be measured: AMD SMI cannot be used" in out.getvalue()
    assert "  fix: install ROCm's amd-smi-lib" in out.getvalue()
    assert machine.amd_setup_problems([], root=tmp_path / "elsewhere") == ()  # no amdgpu driver: nothing said
