"""Operating-point controls (bench/device/nvidia/control.py, permissions.py) against the simulated
NVML: power limits and locked SM clocks, their NVML errors mapped to ours, the decision whether
this process may change them (never by trying), the fake's power/clock model, and its state file
shared by processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.device import nvidia as nvml
from bench.device.nvidia import permissions
from tests.fake_nvml import (
    CONTROL_FUNCTIONS,
    NVML_CLOCK_SM,
    NVML_ERROR_UNKNOWN,
    STATE_ENV,
    FakeGpu,
    NVMLError,
    make_module,
    read_state,
    state_from_file,
    write_state,
)

UUID = "GPU-11111111-2222-3333-4444-555555555555"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake(fake_nvml):
    return fake_nvml


@pytest.fixture
def admin(fake_nvml):
    fake_nvml.privileged = True
    return fake_nvml


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and UUID in text
    return text


# --- reading --------------------------------------------------------------------------------------


def test_power_limits_in_watts(fake):
    assert nvml.power_limits(UUID) == nvml.PowerLimits(
        current_w=700.0, enforced_w=700.0, default_w=700.0, min_w=200.0, max_w=700.0
    )
    gpu = fake.gpus[0]
    gpu.power_limit_mw, gpu.enforced_cap_mw = 450_500, 400_000  # another limiter holds it lower
    limits = nvml.power_limits(UUID.removeprefix("GPU-"))  # torch's form of the UUID works too
    assert (limits.current_w, limits.enforced_w) == (450.5, 400.0)
    assert limits.range_text() == "valid: 200-700 W"
    assert limits.to_dict()["min_w"] == 200.0


def test_unsupported_limits_are_none(fake):
    fake.gpus[0].unsupported |= CONTROL_FUNCTIONS
    limits = nvml.power_limits(UUID)
    assert (limits.current_w, limits.default_w, limits.min_w, limits.max_w) == (None, None, None, None)
    assert limits.enforced_w == 700.0 and limits.range_text() is None
    assert nvml.supported_sm_clocks(UUID) == []


def test_supported_sm_clocks_at_the_highest_memory_clock(fake):
    clocks = nvml.supported_sm_clocks(UUID)
    assert clocks[0] == 1980 and clocks[-1] == 210 and len(clocks) == 119
    assert clocks == sorted(clocks, reverse=True)
    mod = sys.modules["pynvml"]
    asked = []
    real = mod.nvmlDeviceGetSupportedGraphicsClocks
    mod.nvmlDeviceGetSupportedGraphicsClocks = lambda h, mem: asked.append(mem) or real(h, mem)
    fake.gpus[0].memory_clocks_mhz = (810, 2619, 1593)
    assert nvml.supported_sm_clocks(UUID) == clocks and asked == [2619]
    controls = nvml.gpu_controls(UUID)
    assert controls.clock_range_text() == "1980..210 MHz (119 steps)"
    assert controls.to_dict()["sm_clocks_mhz"] == {"max": 1980, "min": 210, "steps": 119}


def test_sm_clock_follows_limit_and_lock(fake):
    assert nvml.sm_clock_mhz(UUID) == 1980
    fake.gpus[0].configure(power_limit_mw=350_000)
    assert nvml.sm_clock_mhz(UUID) == round(1980 * 0.5**0.4)  # 1501: lower as the limit tightens
    fake.gpus[0].configure(power_limit_mw=700_000, locked_clock_mhz=1410)
    assert nvml.sm_clock_mhz(UUID) == 1410


def test_unexpected_read_error_names_gpu_and_call(fake):
    mod = sys.modules["pynvml"]

    def broken(handle):
        raise NVMLError(NVML_ERROR_UNKNOWN)

    mod.nvmlDeviceGetPowerManagementLimitConstraints = broken
    with pytest.raises(nvml.NvmlControlError) as exc:
        nvml.power_limits(UUID)
    assert one_line(exc) == f"GPU {UUID}: nvmlDeviceGetPowerManagementLimitConstraints: Unknown Error"
    assert nvml.controls_by_uuid([UUID])[UUID] == str(exc.value)


def test_unknown_gpu_and_mig_instance(fake):
    with pytest.raises(nvml.NvmlControlError, match="GPU GPU-ffff: nvmlDeviceGetHandleByUUID: Not Found"):
        nvml.power_limits("GPU-ffff")
    with pytest.raises(nvml.NvmlNotSupported, match="not a MIG instance"):
        nvml.set_power_limit("MIG-aaaa", 300)


# --- changing ------------------------------------------------------------------------------------


def test_set_power_limit_in_milliwatts(admin):
    nvml.set_power_limit(UUID, 450)
    assert admin.gpus[0].power_limit_mw == 450_000
    assert nvml.power_limits(UUID).current_w == 450.0 and nvml.power_limits(UUID).enforced_w == 450.0
    nvml.set_power_limit(UUID, 333.3334)
    assert admin.gpus[0].power_limit_mw == 333_333
    nvml.set_power_limit(UUID, 200)  # the ends of the range are valid
    nvml.set_power_limit(UUID, 700)
    assert admin.gpus[0].power_limit_mw == 700_000


@pytest.mark.parametrize("watts", [150, 199.9, 700.5, 1000])
def test_power_limit_out_of_range_lists_the_range(admin, watts):
    with pytest.raises(nvml.NvmlOutOfRange) as exc:
        nvml.set_power_limit(UUID, watts)
    assert one_line(exc) == f"GPU {UUID}: power limit {watts:g} W is out of range (valid: 200-700 W)"
    assert admin.gpus[0].power_limit_mw == 700_000


def test_nvml_invalid_argument_is_out_of_range(admin):
    """Without constraints to check first, NVML's own INVALID_ARGUMENT still maps to out of range."""
    admin.gpus[0].unsupported.add("nvmlDeviceGetPowerManagementLimitConstraints")
    with pytest.raises(nvml.NvmlOutOfRange) as exc:
        nvml.set_power_limit(UUID, 900)
    assert one_line(exc) == f"GPU {UUID}: nvmlDeviceSetPowerManagementLimit: value out of range"


def test_lock_and_reset_sm_clocks(admin):
    nvml.lock_sm_clocks(UUID, 1410)
    assert admin.gpus[0].locked_clock_mhz == 1410 and nvml.sm_clock_mhz(UUID) == 1410
    nvml.reset_sm_clocks(UUID)
    assert admin.gpus[0].locked_clock_mhz is None and nvml.sm_clock_mhz(UUID) == 1980


@pytest.mark.parametrize("mhz", [2100, 100])
def test_clock_out_of_range_lists_the_range(admin, mhz):
    with pytest.raises(nvml.NvmlOutOfRange) as exc:
        nvml.lock_sm_clocks(UUID, mhz)
    assert one_line(exc) == f"GPU {UUID}: SM clock {mhz} MHz is out of range (valid: 210-1980 MHz)"
    assert admin.gpus[0].locked_clock_mhz is None


@pytest.mark.parametrize(
    ("change", "call"),
    [
        (lambda: nvml.set_power_limit(UUID, 450), "nvmlDeviceSetPowerManagementLimit"),
        (lambda: nvml.lock_sm_clocks(UUID, 1410), "nvmlDeviceSetGpuLockedClocks"),
        (lambda: nvml.reset_sm_clocks(UUID), "nvmlDeviceResetGpuLockedClocks"),
    ],
)
def test_no_permission(fake, change, call):
    with pytest.raises(nvml.NvmlNoPermission) as exc:
        change()
    assert one_line(exc) == f"GPU {UUID}: {call}: no permission (run as root (sudo) or grant CAP_SYS_ADMIN)"
    assert isinstance(exc.value, nvml.NvmlControlError) and isinstance(exc.value, nvml.NvmlError)
    assert (fake.gpus[0].power_limit_mw, fake.gpus[0].locked_clock_mhz) == (700_000, None)


@pytest.mark.parametrize(
    ("change", "call"),
    [
        (lambda: nvml.set_power_limit(UUID, 450), "nvmlDeviceSetPowerManagementLimit"),
        (lambda: nvml.lock_sm_clocks(UUID, 1410), "nvmlDeviceSetGpuLockedClocks"),
        (lambda: nvml.reset_sm_clocks(UUID), "nvmlDeviceResetGpuLockedClocks"),
    ],
)
def test_not_supported(admin, change, call):
    admin.gpus[0].unsupported |= CONTROL_FUNCTIONS
    with pytest.raises(nvml.NvmlNotSupported) as exc:
        change()
    assert one_line(exc) == f"GPU {UUID}: {call}: not supported on this GPU or driver"


def test_other_setter_error(admin):
    mod = sys.modules["pynvml"]

    def lost(handle):
        raise NVMLError(NVML_ERROR_UNKNOWN)

    mod.nvmlDeviceResetGpuLockedClocks = lost
    with pytest.raises(nvml.NvmlControlError) as exc:
        nvml.reset_sm_clocks(UUID)
    assert type(exc.value) is nvml.NvmlControlError
    assert one_line(exc) == f"GPU {UUID}: nvmlDeviceResetGpuLockedClocks: Unknown Error"


# --- may this process change settings? -----------------------------------------------------------


def status_file(tmp_path: Path, cap_eff: int) -> str:
    path = tmp_path / "status"
    path.write_text(f"Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff:016x}\nCapBnd:\t000001ffffffffff\n")
    return str(path)


@pytest.mark.parametrize(
    ("uid", "cap_eff", "expected"),
    [
        (0, 0x000001FFFFFFFFFF, (True, "root")),
        (
            0,
            0,
            (
                False,
                "root, but without CAP_SYS_ADMIN (a container needs --cap-add SYS_ADMIN): "
                "run as root (sudo) or grant CAP_SYS_ADMIN",
            ),
        ),
        (1000, 1 << 21, (True, "CAP_SYS_ADMIN")),
        (1000, 0x000001FFFEDFFFFF, (False, "not root and no CAP_SYS_ADMIN: run as root (sudo) or grant CAP_SYS_ADMIN")),
        (1000, 0, (False, "not root and no CAP_SYS_ADMIN: run as root (sudo) or grant CAP_SYS_ADMIN")),
    ],
)
def test_may_change_settings(fake, monkeypatch, tmp_path, uid, cap_eff, expected):
    monkeypatch.setattr(permissions, "effective_uid", lambda: uid)
    monkeypatch.setattr(permissions, "proc_status_path", lambda: status_file(tmp_path, cap_eff))
    monkeypatch.setattr(permissions, "in_user_namespace", lambda: False)
    assert nvml.may_change_settings() == expected
    assert fake.init_calls == 0  # decided without NVML, let alone a change


def test_may_change_settings_without_proc(monkeypatch, tmp_path):
    monkeypatch.setattr(permissions, "effective_uid", lambda: None)  # no euid (not POSIX)
    monkeypatch.setattr(permissions, "proc_status_path", lambda: str(tmp_path / "missing"))
    assert permissions.effective_capabilities() is None
    assert nvml.may_change_settings()[0] is False


def test_may_change_settings_here_reads_the_real_process():
    allowed, why = nvml.may_change_settings()
    assert why in ("root", "CAP_SYS_ADMIN") if allowed else "CAP_SYS_ADMIN" in why
    caps = permissions.effective_capabilities()
    assert allowed == (bool(caps >> 21 & 1) and not permissions.in_user_namespace() if caps is not None else os.geteuid() == 0)


def test_capabilities_inside_a_user_namespace_are_not_enough(monkeypatch, tmp_path):
    """A rootless container: full CapEff, but only in its own user namespace."""
    uid_map = tmp_path / "uid_map"
    uid_map.write_text("         0       1000          1\n")
    monkeypatch.setattr(permissions, "uid_map_path", lambda: str(uid_map))
    monkeypatch.setattr(permissions, "effective_uid", lambda: 0)
    monkeypatch.setattr(permissions, "proc_status_path", lambda: status_file(tmp_path, 0x000001FFFFFFFFFF))
    allowed, why = nvml.may_change_settings()
    assert not allowed and "user namespace" in why
    uid_map.write_text("         0          0 4294967295\n")
    assert nvml.may_change_settings() == (True, "root")


# --- the fake's model ----------------------------------------------------------------------------


def test_power_is_clipped_at_the_limit(admin):
    mod = sys.modules["pynvml"]
    mod.nvmlInit()
    handle = mod.nvmlDeviceGetHandleByUUID(UUID)
    nvml.set_power_limit(UUID, 250)  # the trace runs 200..400 W
    readings, capped = [], 0
    deadline = time.monotonic() + 0.45  # longer than one period
    while time.monotonic() < deadline:
        readings.append(mod.nvmlDeviceGetPowerUsage(handle))
        (field,) = mod.nvmlDeviceGetFieldValues(handle, [mod.NVML_FI_DEV_POWER_INSTANT])
        assert field.value.uiVal <= 250_000
        capped += bool(mod.nvmlDeviceGetCurrentClocksEventReasons(handle) & 0x4)  # sw_power_cap
        time.sleep(0.002)
    assert max(readings) == 250_000 and min(readings) < 220_000
    assert capped > 0


def test_locked_clocks_scale_power(admin):
    gpu = admin.gpus[0]
    nvml.lock_sm_clocks(UUID, 990)  # half the top clock: power x 0.5^2.5
    t = time.monotonic()
    assert gpu.watts(t) == pytest.approx(gpu.trace.watts(t) * 0.5**2.5)


def test_energy_counter_under_a_cap():
    gpu = FakeGpu()
    gpu.configure(power_limit_mw=300_000)  # clips the upper half of the 200..400 W sine
    start = time.monotonic() + 1.0
    period = gpu.trace.period
    # One full period: the sine's positive half is cut away, mean 300 - 100/pi W.
    assert gpu.energy_j(start + period) - gpu.energy_j(start) == pytest.approx(period * (300 - 100 / 3.141592653589793), rel=1e-4)
    gpu.configure(power_limit_mw=700_000)  # never bites: the exact integral again
    later = time.monotonic() + 1.0
    assert gpu.energy_j(later + 0.3) - gpu.energy_j(later) == pytest.approx(
        gpu.trace.joules(later + 0.3) - gpu.trace.joules(later)
    )


# --- the state file: one device for several processes --------------------------------------------


def test_state_file_shared_by_two_modules(tmp_path):
    path = tmp_path / "nvml.json"
    write_state(path, {"privileged": True})
    first, second = make_module(state_from_file(path)), make_module(state_from_file(path))
    for mod in (first, second):
        mod.nvmlInit()
    a, b = first.nvmlDeviceGetHandleByIndex(0), second.nvmlDeviceGetHandleByIndex(0)
    assert first.nvmlDeviceGetUUID(a) == second.nvmlDeviceGetUUID(b) == UUID  # one H100 profile

    first.nvmlDeviceSetPowerManagementLimit(a, 450_000)
    assert second.nvmlDeviceGetPowerManagementLimit(b) == 450_000
    assert second.nvmlDeviceGetEnforcedPowerLimit(b) == 450_000
    second.nvmlDeviceSetGpuLockedClocks(b, 1410, 1410)
    assert first.nvmlDeviceGetClockInfo(a, NVML_CLOCK_SM) == 1410
    assert read_state(path) == {"privileged": True, "gpus": [{"uuid": UUID, "power_limit_mw": 450_000, "locked_clock_mhz": 1410}]}
    second.nvmlDeviceResetGpuLockedClocks(b)
    assert first.nvmlDeviceGetClockInfo(a, NVML_CLOCK_SM) == round(1980 * (450 / 700) ** 0.4)
    assert [p.name for p in tmp_path.iterdir()] == ["nvml.json"]  # no temp file left behind

    write_state(path, {**read_state(path), "privileged": False})  # the file says who may change
    with pytest.raises(NVMLError) as exc:
        first.nvmlDeviceSetPowerManagementLimit(a, 300_000)
    assert exc.value.value == 4  # NVML_ERROR_NO_PERMISSION
    assert read_state(path)["gpus"][0]["power_limit_mw"] == 450_000

    third = make_module(state_from_file(path))  # a later process starts where they left it
    third.nvmlInit()
    assert third.nvmlDeviceGetPowerManagementLimit(third.nvmlDeviceGetHandleByIndex(0)) == 450_000


def test_state_file_describes_gpus(tmp_path):
    path = tmp_path / "nvml.json"
    write_state(
        path,
        {
            "privileged": True,
            "gpus": [
                {"power_limit_mw": 600_000},
                {
                    "name": "NVIDIA A100-SXM4-40GB",
                    "max_power_limit_mw": 400_000,
                    "default_power_limit_mw": 400_000,
                    "min_power_limit_mw": 100_000,
                    "power_limit_mw": 400_000,
                    "sm_clocks_mhz": [1410, 1395, 210],
                },
                {"uuid": "GPU-cccc", "controls_supported": False},
            ],
        },
    )
    mod = make_module(state_from_file(path))
    mod.nvmlInit()
    first, second, third = (mod.nvmlDeviceGetHandleByIndex(i) for i in range(3))
    assert mod.nvmlDeviceGetPowerManagementLimit(first) == 600_000
    assert mod.nvmlDeviceGetPowerManagementLimitConstraints(second) == [100_000, 400_000]
    assert mod.nvmlDeviceGetSupportedGraphicsClocks(second, 2619) == [1410, 1395, 210]
    mod.nvmlDeviceSetPowerManagementLimit(second, 250_000)
    entries = read_state(path)["gpus"]
    assert entries[1]["power_limit_mw"] == 250_000 and entries[1]["uuid"] == mod.nvmlDeviceGetUUID(second)
    assert entries[1]["name"] == "NVIDIA A100-SXM4-40GB" and entries[0] == {"power_limit_mw": 600_000}
    with pytest.raises(NVMLError) as exc:
        mod.nvmlDeviceSetPowerManagementLimit(third, 300_000)
    assert exc.value.value == 3  # NVML_ERROR_NOT_SUPPORTED


def test_in_process_fake_persists_through_the_env_var(fake, monkeypatch, tmp_path):
    """The in-process fixture joins the same file when the variable is set (a parent and its
    subprocesses), and the bench API's changes land in it."""
    path = tmp_path / "nvml.json"
    write_state(path, {"privileged": True, "gpus": [{"uuid": UUID, "power_limit_mw": 500_000}]})
    monkeypatch.setenv(STATE_ENV, str(path))
    assert nvml.power_limits(UUID).current_w == 500.0  # loaded at nvmlInit
    nvml.set_power_limit(UUID, 420)
    assert read_state(path)["gpus"][0]["power_limit_mw"] == 420_000
    other = make_module(state_from_file(path))
    other.nvmlInit()
    other.nvmlDeviceSetPowerManagementLimit(other.nvmlDeviceGetHandleByIndex(0), 380_000)
    assert nvml.power_limits(UUID).current_w == 380.0  # re-read before each get of a setting


def test_without_the_env_var_nothing_persists(admin, monkeypatch, tmp_path):
    monkeypatch.delenv(STATE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    nvml.set_power_limit(UUID, 450)
    assert admin.state_file is None and list(tmp_path.iterdir()) == []


# --- real subprocesses through tests/fake_site ---------------------------------------------------


def run_python(code: str, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests' / 'fake_site'}{os.pathsep}{REPO}", STATE_ENV: str(state)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_subprocesses_share_one_simulated_gpu(tmp_path):
    state = tmp_path / "nvml.json"
    write_state(state, {"privileged": True})
    setter = run_python(
        f"""
        from bench.device import nvidia as nvml
        print(nvml.may_change_settings())
        nvml.set_power_limit({UUID!r}, 400)
        nvml.lock_sm_clocks({UUID!r}, 1200)
    """,
        state,
    )
    assert setter.returncode == 0, setter.stderr
    assert setter.stdout.strip() == "(True, 'root')"  # the fake's privileged flag decides

    reader = run_python(
        """
        import json, pynvml
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        print(json.dumps([pynvml.__file__, pynvml.nvmlDeviceGetName(h), pynvml.nvmlDeviceGetPowerManagementLimit(h),
                          pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)]))
    """,
        state,
    )
    assert reader.returncode == 0, reader.stderr
    module_file, name, limit_mw, clock = json.loads(reader.stdout)
    assert Path(module_file) == REPO / "tests" / "fake_site" / "pynvml.py"
    assert (name, limit_mw, clock) == ("NVIDIA H100 80GB HBM3", 400_000, 1200)
    assert read_state(state)["gpus"][0]["power_limit_mw"] == 400_000  # and this process sees it


def test_unprivileged_subprocess_is_told_and_changes_nothing(tmp_path):
    state = tmp_path / "nvml.json"
    write_state(state, {"privileged": False, "gpus": [{"uuid": UUID, "power_limit_mw": 700_000}]})
    result = run_python(
        f"""
        from bench.device import nvidia as nvml
        print(nvml.may_change_settings())
        try:
            nvml.set_power_limit({UUID!r}, 400)
        except nvml.NvmlNoPermission as exc:
            print(exc)
    """,
        state,
    )
    assert result.returncode == 0, result.stderr
    verdict, error = result.stdout.strip().splitlines()
    assert verdict == "(False, 'not root and no CAP_SYS_ADMIN: run as root (sudo) or grant CAP_SYS_ADMIN')"
    assert error == f"GPU {UUID}: nvmlDeviceSetPowerManagementLimit: no permission (run as root (sudo) or grant CAP_SYS_ADMIN)"
    assert read_state(state)["gpus"][0]["power_limit_mw"] == 700_000
