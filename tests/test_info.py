"""`wattbench info` diagnoses GPUs the driver has but this torch cannot use, and says how to get a
power source; `wattbench run` gives that hint once. NVML is simulated (tests/fake_nvml.py); torch is
whatever is installed, so the CLI tests need a CPU build and the decision logic gets its inputs."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console

from bench.cli import cmd_info, main
from bench.device.nvidia import NvmlGpu, NvmlInventory
from bench.measure.hardware import DeviceInfo, TorchCuda, gpu_diagnosis, no_power_hint
from tests.fake_nvml import FakeGpu

cpu_build = pytest.mark.skipif(torch.version.cuda is not None, reason="needs a CPU build of torch")

UUID_0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID_1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@pytest.fixture
def two_gpus(fake_nvml, monkeypatch):
    """The simulated NVML with two GPUs and a CUDA 12.6 driver; CUDA_VISIBLE_DEVICES unset."""
    fake_nvml.gpus.append(FakeGpu(uuid=UUID_1, name="NVIDIA H100 80GB HBM3", bus_id="00000000:2A:00.0"))
    fake_nvml.cuda_version = 12060
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake_nvml


def inventory(cuda: str | None = "12.4", n: int = 2) -> NvmlInventory:
    uuids = [UUID_0, UUID_1, "GPU-cccccccc-0000-0000-0000-000000000000"]
    return NvmlInventory(
        driver_version="550.54.15",
        cuda_driver_version=cuda,
        gpus=tuple(NvmlGpu(i, uuids[i], "NVIDIA H100", None, 80 * 2**30, 700.0) for i in range(n)),
    )


def gpu(index: int, uuid: str) -> DeviceInfo:
    return DeviceInfo(id=f"cuda:{index}", kind="cuda", name="NVIDIA H100", memory_bytes=80 * 2**30, uuid=uuid)


def cuda_torch(cuda: str = "12.8", devices: tuple[DeviceInfo, ...] = (), error: str | None = None) -> TorchCuda:
    return TorchCuda(
        version=f"2.13.0+cu{cuda.replace('.', '')}", cuda=cuda, hip=None, available=bool(devices), devices=devices, error=error
    )


# --- the CLI on this machine (a CPU build of torch, two simulated GPUs) -----------------------------


@cpu_build
def test_info_lists_both_gpus_as_not_usable_by_a_cpu_build(two_gpus, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "GPUs (NVML)" in out
    for uuid in (UUID_0, UUID_1):
        row = next(line for line in out.splitlines() if uuid in line)
        assert "NVIDIA H100" in row and row.rstrip(" │").endswith("no")
    assert f"GPU 0, 1: torch {torch.__version__} is a CPU-only build" in out  # one note for both
    assert "pip uninstall -y torch && pip install torch --index-url https://download.pytorch.org/whl/cu126" in out


@cpu_build
def test_info_json_says_why_and_what_to_do(two_gpus, capsys):
    assert main(["info", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    gpus = doc["gpus"]
    assert [g["uuid"] for g in gpus] == [UUID_0, UUID_1]
    assert [g["nvml_index"] for g in gpus] == [0, 1]
    for g in gpus:
        assert g["usable_by_torch"] is False and g["torch_device"] is None
        assert "CPU-only build" in g["problem"] and torch.__version__ in g["problem"]
        assert "/whl/cu126" in g["fix"]
        assert g["memory_bytes"] == 80 * 2**30 and g["power_limit_w"] == 700.0
    assert doc["power"]["status"]["cpu"]  # the CPU is always listed with its source or reason


@cpu_build
def test_info_fits_100_columns(two_gpus):
    console = Console(width=100, record=True, file=io.StringIO())
    assert cmd_info(False, console) == 0
    text = console.export_text()
    table_lines = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert table_lines and all(len(line) <= 100 for line in table_lines)
    assert "GPU-11111111-2222-3333-4444" in text  # folded, not cut


def test_info_says_how_to_get_a_power_source(fake_nvml, capsys, monkeypatch):
    from bench.measure import machine
    from bench.monitor.discover import Discovery

    denied = "permission denied reading /sys/class/powercap/intel-rapl:0/energy_uj (root only since Linux 5.10)"
    monkeypatch.setattr(
        machine, "discover_devices", lambda devices, nominal: Discovery((), {d.id: f"unavailable: {denied}" for d in devices})
    )
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "hint: no power source for cpu (RAPL: permission denied" in out
    assert "run as root" in out and "--nominal-watts W" in out
    assert main(["info", "--json"]) == 0
    assert "run as root" in json.loads(capsys.readouterr().out)["power"]["hint"]


# --- power limits and clocks (operating points) ----------------------------------------------------


@pytest.fixture
def not_admin(monkeypatch):
    from bench.device.nvidia import permissions

    monkeypatch.setattr(permissions, "effective_uid", lambda: 1000)
    monkeypatch.setattr(permissions, "effective_capabilities", lambda: 0)


@pytest.fixture
def untouchable(two_gpus):
    """Every NVML setter fails the test: `info` may read limits, never change (or try) them."""
    import sys

    mod = sys.modules["pynvml"]
    for name in ("nvmlDeviceSetPowerManagementLimit", "nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks"):
        setattr(mod, name, lambda *args, _name=name: pytest.fail(f"info called {_name}"))
    two_gpus.privileged = True
    return two_gpus


def test_info_shows_power_limits_clocks_and_whether_they_may_change(untouchable, not_admin, capsys):
    gpu = untouchable.gpus[1]
    gpu.power_limit_mw, gpu.enforced_cap_mw = 450_000, 400_500
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "Power limits and SM clocks (NVML)" in out
    rows = [line for line in out.splitlines() if "1980..210 MHz (119 steps)" in line]
    assert len(rows) == 2
    assert [cell.strip() for cell in rows[0].strip("│ ").split("│")] == [
        "0",
        "700 W",
        "700 W",
        "700 W",
        "200-700 W",
        "1980..210 MHz (119 steps)",
    ]
    assert [cell.strip() for cell in rows[1].strip("│ ").split("│")][:5] == ["1", "450 W", "400.5 W", "700 W", "200-700 W"]
    assert (
        "this process may change power limits and clocks: no (not root and no CAP_SYS_ADMIN: "
        "run as root (sudo) or grant CAP_SYS_ADMIN)"
    ) in out
    assert [g.power_limit_mw for g in untouchable.gpus] == [700_000, 450_000]


def test_info_json_has_operating_ranges(untouchable, monkeypatch, capsys):
    from bench.device.nvidia import permissions

    monkeypatch.setattr(permissions, "effective_uid", lambda: 0)
    monkeypatch.setattr(permissions, "effective_capabilities", lambda: 0x000001FFFFFFFFFF)
    monkeypatch.setattr(permissions, "in_user_namespace", lambda: False)
    assert main(["info", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["may_change_settings"] == {"allowed": True, "reason": "root"}
    for g in doc["gpus"]:
        assert g["operating_range"] == {
            "power_limits": {"current_w": 700.0, "enforced_w": 700.0, "default_w": 700.0, "min_w": 200.0, "max_w": 700.0},
            "sm_clocks_mhz": {"max": 1980, "min": 210, "steps": 119},
        }


def test_info_json_may_change_through_cap_sys_admin(two_gpus, monkeypatch, capsys):
    from bench.device.nvidia import permissions

    monkeypatch.setattr(permissions, "effective_uid", lambda: 1000)
    monkeypatch.setattr(permissions, "effective_capabilities", lambda: 1 << 21)
    monkeypatch.setattr(permissions, "in_user_namespace", lambda: False)
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["may_change_settings"] == {"allowed": True, "reason": "CAP_SYS_ADMIN"}


def test_info_gpu_without_controls_or_failing_read(two_gpus, not_admin, capsys):
    import sys

    from tests.fake_nvml import CONTROL_FUNCTIONS, NVML_ERROR_UNKNOWN, NVMLError

    two_gpus.gpus[0].unsupported |= CONTROL_FUNCTIONS
    mod = sys.modules["pynvml"]
    real = mod.nvmlDeviceGetPowerManagementLimitConstraints

    def constraints(handle):
        if handle is two_gpus.gpus[1]:
            raise NVMLError(NVML_ERROR_UNKNOWN)
        return real(handle)

    mod.nvmlDeviceGetPowerManagementLimitConstraints = constraints
    assert main(["info", "--json"]) == 0
    first, second = json.loads(capsys.readouterr().out)["gpus"]
    assert first["operating_range"] == {
        "power_limits": {"current_w": None, "enforced_w": 700.0, "default_w": None, "min_w": None, "max_w": None},
        "sm_clocks_mhz": None,
    }
    assert second["operating_range"] == {"error": f"GPU {UUID_1}: nvmlDeviceGetPowerManagementLimitConstraints: Unknown Error"}
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    row0 = next(line for line in out.splitlines() if line.startswith("│ 0 ") and "700 W" in line and "H100" not in line)
    assert [cell.strip() for cell in row0.strip("│ ").split("│")] == ["0", "-", "700 W", "-", "-", "-"]
    assert f"GPU 1: GPU {UUID_1}: nvmlDeviceGetPowerManagementLimitConstraints: Unknown Error" in out


def test_info_without_nvml_shows_no_operating_ranges(monkeypatch, capsys):
    import sys

    from bench.device.nvidia import nvml
    from bench.measure import hardware

    nvml.reset()
    hardware.nvml_inventory.cache_clear()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    try:
        assert main(["info", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert all(g["operating_range"] is None for g in doc["gpus"])
        assert set(doc["may_change_settings"]) == {"allowed", "reason"}
        assert main(["info"]) == 0
        assert "Power limits and SM clocks" not in capsys.readouterr().out
    finally:
        nvml.reset()
        hardware.nvml_inventory.cache_clear()


# --- the decision logic, inputs passed in --------------------------------------------------------


def test_usable_gpus_have_no_problem():
    torch_cuda = cuda_torch("12.4", (gpu(0, UUID_0.removeprefix("GPU-")), gpu(1, UUID_1)))
    diag = gpu_diagnosis(inventory("12.4"), torch_cuda, {})
    assert [(d.usable, d.torch_device, d.problem) for d in diag] == [(True, "cuda:0", None), (True, "cuda:1", None)]


def test_cpu_build_names_the_driver_cuda_wheel():
    cpu_torch = TorchCuda(version="2.13.0+cpu", cuda=None, hip=None, available=False, devices=())
    (d, _) = gpu_diagnosis(inventory("12.4"), cpu_torch, {})
    assert not d.usable and "2.13.0+cpu is a CPU-only build" in d.problem
    assert "--index-url https://download.pytorch.org/whl/cu124" in d.fix and "at most 12.4" in d.fix


def test_cpu_build_without_driver_cuda_version_points_to_nvidia_smi():
    cpu_torch = TorchCuda(version="2.13.0+cpu", cuda=None, hip=None, available=False, devices=())
    (d, _) = gpu_diagnosis(inventory(None), cpu_torch, {})
    assert "nvidia-smi" in d.fix and "/whl/cu" not in d.fix


def test_rocm_build_cannot_use_nvidia_gpus():
    rocm = TorchCuda(version="2.13.0+rocm6.4", cuda=None, hip="6.4", available=False, devices=())
    (d, _) = gpu_diagnosis(inventory("12.4"), rocm, {})
    assert "ROCm" in d.problem and "/whl/cu124" in d.fix


def test_driver_too_old_for_this_torch():
    diag = gpu_diagnosis(inventory("11.8"), cuda_torch("12.8"), {})
    assert len(diag) == 2 and not any(d.usable for d in diag)
    d = diag[0]
    assert "driver is too old" in d.problem and "CUDA 12.8" in d.problem and "at most CUDA 11.8" in d.problem
    assert "upgrade the NVIDIA driver" in d.fix and "/whl/cu118" in d.fix


@pytest.mark.parametrize("error", ["CUDA driver initialization failed, you might not have a CUDA gpu.", None])
def test_older_driver_minor_version_is_not_the_cause(error):
    """CUDA's minor-version compatibility runs a torch built for 12.8 on a 12.4 driver: torch's
    own error (where it gave one) is the diagnosis, not 'driver too old'."""
    diag = gpu_diagnosis(inventory("12.4"), cuda_torch("12.8", error=error), {})
    d = diag[0]
    assert not d.usable and "too old" not in d.problem
    assert d.problem.startswith("CUDA does not start in torch 2.13.0+cu128 (CUDA 12.8; driver 550.54.15, CUDA 12.4): ")
    assert d.problem.endswith(error or "torch.cuda.is_available() is False")
    assert "nvidia-smi" in d.fix


def test_driver_new_enough_reports_torchs_own_error():
    diag = gpu_diagnosis(inventory("12.8"), cuda_torch("12.6", error="No CUDA GPUs are available"), {})
    assert "CUDA does not start" in diag[0].problem and "No CUDA GPUs are available" in diag[0].problem
    assert "nvidia-smi" in diag[0].fix


@pytest.mark.parametrize("value", ["", "-1", "GPU-deadbeef", "7"])
def test_cuda_visible_devices_hiding_every_gpu(value):
    diag = gpu_diagnosis(inventory("11.8"), cuda_torch("12.8"), {"CUDA_VISIBLE_DEVICES": value})
    assert f"hidden by CUDA_VISIBLE_DEVICES={value!r}" in diag[0].problem  # before "driver too old"
    assert "unset CUDA_VISIBLE_DEVICES" in diag[0].fix


def test_cuda_visible_devices_naming_a_gpu_is_not_the_cause():
    diag = gpu_diagnosis(inventory("11.8"), cuda_torch("12.8"), {"CUDA_VISIBLE_DEVICES": "GPU-aaaa,0"})
    assert "driver is too old" in diag[0].problem


def test_gpu_hidden_by_cuda_visible_devices_while_others_are_used():
    torch_cuda = cuda_torch("12.4", (gpu(0, UUID_1),))
    diag = gpu_diagnosis(inventory("12.4"), torch_cuda, {"CUDA_VISIBLE_DEVICES": "1"})
    assert diag[1].usable and diag[1].torch_device == "cuda:0" and diag[1].problem is None
    assert not diag[0].usable
    assert "hidden by CUDA_VISIBLE_DEVICES='1' (torch uses cuda:0)" in diag[0].problem
    assert UUID_0 in diag[0].fix


def test_gpu_not_visible_without_cuda_visible_devices():
    diag = gpu_diagnosis(inventory("12.4"), cuda_torch("12.4", (gpu(0, UUID_1),)), {})
    assert "not visible to this process" in diag[0].problem and "CUDA_VISIBLE_DEVICES is not set" in diag[0].problem


def test_nvml_unavailable_while_torch_sees_gpus():
    reason = "NVML failed to initialise: Driver Not Loaded"
    diag = gpu_diagnosis(reason, cuda_torch("12.4", (gpu(0, UUID_0),)), {})
    (d,) = diag
    assert d.usable and d.nvml_index is None
    assert "power and energy cannot be measured" in d.problem and reason in d.problem
    assert "--nominal-watts" in d.fix


def test_nvml_unavailable_and_no_gpu_says_nothing():
    assert gpu_diagnosis("nvidia-ml-py is not installed", TorchCuda("2.13.0+cpu", None, None, False, ()), {}) == []


def test_torch_gpu_nvml_does_not_list():
    diag = gpu_diagnosis(inventory("12.4", n=1), cuda_torch("12.4", (gpu(0, UUID_0), gpu(1, "GPU-99999999"))), {})
    assert [d.torch_device for d in diag] == ["cuda:0", "cuda:1"]
    assert diag[1].nvml_index is None and "NVML lists no GPU" in diag[1].problem


# --- the power hint ----------------------------------------------------------------------------------


CPU = DeviceInfo(id="cpu", kind="cpu", name="CPU", memory_bytes=None)


def test_no_hint_when_every_device_has_a_source():
    assert no_power_hint([CPU], {"cpu": "rapl"}) is None
    assert no_power_hint([CPU], {"cpu": "nominal (estimate)"}) is None


def test_hint_for_rapl_permission_denied_says_root_or_chmod():
    hint = no_power_hint([CPU], {"cpu": "unavailable: permission denied reading /sys/x/energy_uj (root only since Linux 5.10)"})
    assert hint.startswith("no power source for cpu (RAPL: permission denied")
    assert "run as root" in hint and "chmod" in hint and "udev" in hint and "--nominal-watts W" in hint


def test_hint_without_rapl_does_not_suggest_root():
    gpu0 = gpu(0, UUID_0)
    hint = no_power_hint([gpu0, CPU], {"cuda:0": "unavailable: NVML failed", "cpu": "unavailable: not present"})
    assert "cuda:0 (NVML: NVML failed), cpu (RAPL: not present)" in hint
    assert "root" not in hint and hint.endswith("pass --nominal-watts W for an estimate")


RUN = ["run", "matmul", "-p", "size=16,32", "--min-time", "0.01", "--repeats", "2", "--repeat-time", "0.002"]


def test_run_prints_the_no_power_hint_once(tmp_path, capsys, monkeypatch):
    from bench.measure import hardware
    from bench.monitor.rapl import RaplSource, RaplUnavailable

    try:  # the hint is for a machine where RAPL cannot be read (this one, in CI); skip where it can
        RaplSource(probe=False)
        pytest.skip("RAPL is readable here")
    except RaplUnavailable:
        pass
    monkeypatch.setattr(hardware, "cuda_devices", lambda: ())  # the CPU, also on a GPU machine
    assert main([*RUN, "--out", str(tmp_path / "r.json")]) == 0
    err = capsys.readouterr().err
    assert err.count("no power source") == 1, err
    (line,) = [line for line in err.splitlines() if "no power source" in line]
    assert line.startswith("wattbench: no power source for cpu (RAPL: ") and "--nominal-watts W" in line
    assert err.count("@cpu: ok") == 2  # several cases, one hint


def test_run_without_monitor_or_with_nominal_watts_prints_no_hint(tmp_path, capsys, monkeypatch):
    from bench.measure import hardware

    monkeypatch.setattr(hardware, "cuda_devices", lambda: ())
    assert main([*RUN, "--out", str(tmp_path / "a.json"), "--no-monitor"]) == 0
    assert "no power source" not in capsys.readouterr().err
    assert main([*RUN, "--out", str(tmp_path / "b.json"), "--nominal-watts", "50"]) == 0
    assert "no power source" not in capsys.readouterr().err
