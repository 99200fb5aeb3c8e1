"""AMD GPUs through the simulated AMD SMI (tests/fake_amdsmi.py): inventory, energy windows against
a known power trace (counter, wrap, frozen counter), the MI300 and MI200 power fields, the power
cap and its permission errors, and amdsmi failing to import."""

from __future__ import annotations

import sys
import time

import pytest

from bench.device.amd import AmdGpus, control, smi
from bench.device.amd.telemetry import FLAG_COUNTER_FROZEN, AmdSmiSource
from bench.device.base import DeviceUnavailable, NoPermission, NotSupported, OutOfRange
from bench.monitor.sampler import Monitor
from tests.fake_amdsmi import AMDSMI_STATUS_DRIVER_NOT_LOADED, FakeAmdGpu, FakeAmdSmiState, make_module, mi250x, two_mi300x

UUID0 = "6eff74a1-0000-1000-80c2-3a0f5b2d1e11"
UUID1 = "6eff74a1-0000-1000-80c2-3a0f5b2d1e22"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """Swap amdsmi for the simulated one; reset AMD SMI before and after."""
    state = FakeAmdSmiState()
    smi.reset()
    monkeypatch.setitem(sys.modules, "amdsmi", make_module(state))
    yield state
    smi.reset()


def _window(sources, seconds=1.0, interval=0.01, during=None):
    with Monitor(sources, interval) as monitor:
        t0 = time.monotonic()
        with monitor.window() as window:
            if during:
                during()
            time.sleep(seconds)
        t1 = time.monotonic()
    return window.results, t0, t1


def _truth(gpu, t0: float, t1: float) -> float:
    return gpu.trace.joules(t1) - gpu.trace.joules(t0)


def test_inventory_lists_both_gpus_with_cap_and_range(fake):
    inventory = AmdGpus().inventory()
    assert inventory.driver_version == "6.10.5" and inventory.cuda_driver_version is None
    assert [g.uuid for g in inventory.gpus] == [UUID0, UUID1]
    first, second = inventory.gpus
    assert first.name == "AMD Instinct MI300X" and first.index == 0 and second.index == 1
    assert first.serial == "692251001122" and second.serial == "692251003344"
    assert first.pci_bus_id == "0000:0c:00.0" and second.pci_bus_id == "0000:22:00.0"
    assert first.memory_bytes == 192 * 2**30
    assert (first.power_limit_w, first.power_limit_min_w, first.power_limit_max_w) == (750.0, 0.0, 750.0)
    assert inventory.by_uuid("GPU-" + UUID1.upper()) is second  # torch's and other spellings


def test_energy_of_two_gpus_within_3_percent_of_the_trace(fake):
    vendor = AmdGpus()
    sources = [vendor.power_source(UUID0, "cuda:0"), vendor.power_source(UUID1, "cuda:1")]
    for source in sources:
        assert (source.counter_source, source.power_source) == ("amdsmi_energy", "amdsmi_power")
        assert source.counter_update_s == pytest.approx(0.001, rel=0.5)
        assert source.describe()["power_field"] == "current_socket_power"
    results, t0, t1 = _window(sources)
    for device, gpu in zip(("cuda:0", "cuda:1"), fake.gpus, strict=True):
        result = results[device]
        truth = _truth(gpu, t0, t1)
        assert result.source == "amdsmi_energy"
        assert result.joules == pytest.approx(truth, rel=0.03)
        assert result.integral_joules == pytest.approx(truth, rel=0.03)
        assert result.flags == ()
        assert result.peak_memory_bytes == 24 * 2**30
        assert result.sm_clock_mhz == 2100 and result.max_temperature_c == 61
    assert results["cuda:1"].joules > results["cuda:0"].joules  # 450 W against 300 W


def test_a_counter_wrap_mid_window_is_handled(fake):
    gpu = fake.gpus[0]
    gpu.counter_bits = 32
    source = AmdSmiSource(UUID0, "cuda:0", probe=False)
    rate = gpu.trace.base * 1e6 / gpu.counter_resolution_uj  # counts a second, about
    gpu.counter_start = (1 << 32) - gpu.counts() - int(0.4 * rate)  # wraps about 0.4 s from now
    before = gpu.counts()
    results, t0, t1 = _window([source])
    assert gpu.counts() < before  # it did wrap inside the window
    result = results["cuda:0"]
    assert result.source == "amdsmi_energy"
    assert result.joules == pytest.approx(_truth(gpu, t0, t1), rel=0.03)
    assert "energy_mismatch" not in result.flags


def test_a_frozen_counter_is_found_while_probing_and_the_integral_used(fake):
    fake.gpus[0].frozen = True
    source = AmdGpus().power_source(UUID0, "cuda:0")
    assert source.counter_source is None and source.power_source == "amdsmi_power"
    assert source.describe()["energy_counter_frozen"] is True
    results, t0, t1 = _window([source])
    result = results["cuda:0"]
    assert result.source == "amdsmi_power"
    assert result.joules == pytest.approx(_truth(fake.gpus[0], t0, t1), rel=0.03)
    assert FLAG_COUNTER_FROZEN in result.flags


def test_a_counter_that_freezes_at_run_time_is_flagged_and_the_integral_used(fake):
    fake.gpus[0].frozen = True
    source = AmdSmiSource(UUID0, "cuda:0", probe=False)  # not probed: found from the readings
    assert source.counter_source == "amdsmi_energy"
    results, t0, t1 = _window([source], seconds=1.4)
    result = results["cuda:0"]
    assert source.counter_frozen and source.counter_source is None
    assert result.source == "amdsmi_power" and result.counter_joules is None
    assert result.joules == pytest.approx(_truth(fake.gpus[0], t0, t1), rel=0.03)
    assert FLAG_COUNTER_FROZEN in result.flags


def test_mi300_and_mi200_power_fields_and_violation_status(fake):
    fake.gpus[:] = [fake.gpus[0], mi250x(1, energy_key="power")]  # MI200 with an older release's key
    fake.gpus[0].ppt_violation = True
    mi300 = AmdSmiSource(UUID0, "cuda:0", probe=False)
    mi200 = AmdSmiSource(fake.gpus[1].uuid, "cuda:1", probe=False)
    assert mi300.power_key == "current_socket_power" and mi200.power_key == "average_socket_power"
    assert mi200.counter_source == "amdsmi_energy"  # the legacy "power" key is read too
    for source, gpu in ((mi300, fake.gpus[0]), (mi200, fake.gpus[1])):
        reading = source.read()
        assert reading.power_w == pytest.approx(gpu.trace.watts(reading.t_s), abs=2.0)
        assert reading.energy_j == 0.0 and reading.error is None
    assert mi300.read().throttle_reasons == ("ppt_power",)
    assert mi200.read().throttle_reasons == () and mi200.describe()["throttle_reasons"] is None
    assert mi300.read().temperature_c == 61  # hotspot: MI300 has no edge sensor
    results, t0, t1 = _window([mi200], seconds=0.6)
    result = results["cuda:1"]
    assert result.source == "amdsmi_energy"
    assert result.joules == pytest.approx(_truth(fake.gpus[1], t0, t1), rel=0.03)


def test_power_cap_refused_without_rights_and_set_with_them(fake, monkeypatch):
    vendor = AmdGpus()
    limits = vendor.power_limits(UUID0)
    assert (limits.current_w, limits.default_w, limits.min_w, limits.max_w) == (750.0, 750.0, 0.0, 750.0)
    with pytest.raises(NoPermission) as refused:
        vendor.set_power_limit(UUID0, 500)
    assert "\n" not in str(refused.value) and "no permission" in str(refused.value)
    assert fake.gpus[0].power_cap_uw == 750_000_000
    with pytest.raises(OutOfRange, match=r"valid: 0-750 W"):
        vendor.set_power_limit(UUID0, 800)
    fake.privileged = True
    vendor.set_power_limit(UUID0, 500)
    assert fake.set_cap_calls == [(UUID0, 500_000_000)]
    assert vendor.power_limits(UUID0).current_w == 500.0
    vendor.restore(UUID0, 750.0, reset_clocks=True)
    assert fake.gpus[0].power_cap_uw == 750_000_000
    with pytest.raises(NotSupported, match="performance determinism .*not supported on this device$"):
        vendor.lock_sm_clocks(UUID0, 1500)  # an MI300X: AMD documents the mode for MI200
    assert vendor.sm_clock_mhz(UUID0) == 2100
    monkeypatch.setattr(control, "effective_uid", lambda: 1000)
    assert vendor.may_change_settings() == (False, "not root: run as root (sudo)")
    monkeypatch.setattr(control, "effective_uid", lambda: 0)
    assert vendor.may_change_settings() == (True, "root")


def test_amdsmi_failing_to_initialise_is_unavailable(fake):
    fake.init_error = AMDSMI_STATUS_DRIVER_NOT_LOADED
    with pytest.raises(
        DeviceUnavailable, match="AMD SMI failed to initialise: AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded"
    ):
        AmdGpus().inventory()
    with pytest.raises(DeviceUnavailable):
        AmdGpus().power_source(UUID0, "cuda:0")


def test_an_unknown_uuid_is_unavailable(fake):
    with pytest.raises(DeviceUnavailable, match="no AMD GPU with UUID nope"):
        AmdGpus().power_source("nope", "cuda:0")


def test_amdsmi_without_rocm_is_one_line_and_prints_nothing(tmp_path, monkeypatch, capsys):
    """As the 7.0.2 wheel does without libamd_smi.so: two lines on stdout, then KeyError."""
    package = tmp_path / "amdsmi"
    package.mkdir()
    (package / "__init__.py").write_text(
        "print(OSError('Could not load libamd_smi.so'))\n"
        "print('Unable to find libamd_smi.so library try installing amd-smi-lib from your package manager')\n"
        "raise KeyError('libamd_smi.so')\n"
    )
    smi.reset()
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DeviceUnavailable) as caught:
        AmdGpus().inventory()
    assert "libamd_smi.so was not found" in str(caught.value) and "\n" not in str(caught.value)
    assert capsys.readouterr().out == ""
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # not installed at all
    with pytest.raises(DeviceUnavailable, match="amdsmi is not installed"):
        AmdGpus().inventory()


def test_performance_determinism_is_the_clock_lever_where_the_gpu_offers_it(fake):
    """An MI250X: the GFX clock held at a ceiling, refused without rights and out of range (one
    line with the range), and left by the performance level AUTO, which is also the restore."""
    fake.gpus = [mi250x(0)]
    uuid = fake.gpus[0].uuid
    vendor = AmdGpus()
    clocks = vendor.supported_sm_clocks(uuid)
    assert (clocks[0], clocks[-1], len(clocks)) == (1700, 500, 1201)
    with pytest.raises(NoPermission, match="no permission"):
        vendor.lock_sm_clocks(uuid, 1500)
    fake.privileged = True
    with pytest.raises(OutOfRange, match=r"GFX clock 2000 MHz is out of range \(valid: 500-1700 MHz\)"):
        vendor.lock_sm_clocks(uuid, 2000)
    vendor.lock_sm_clocks(uuid, 1500)
    assert vendor.sm_clock_mhz(uuid) == 1500 and fake.gpus[0].determinism_mhz == 1500
    vendor.restore(uuid, None, reset_clocks=True)
    assert vendor.sm_clock_mhz(uuid) == 1700 and fake.gpus[0].determinism_mhz is None


def test_a_partitioned_mi300x_is_one_gpu_whose_partitions_have_no_power_of_their_own(fake):
    """CPX: eight logical GPUs on one socket, told apart by the PCI function; only the first reports
    the socket's power and energy. Treated as MIG is: energy per physical GPU, said so."""
    first = FakeAmdGpu(compute_partition="CPX", bdf="0000:05:00.0")
    others = [
        FakeAmdGpu(
            uuid=f"6eff74a1-0000-1000-80c2-3a0f5b2d1f{n:02x}", bdf=f"0000:05:00.{n}", compute_partition="CPX", secondary=True
        )
        for n in range(1, 8)
    ]
    fake.gpus = [*reversed(others), first, two_mi300x()[1]]  # listed in any order
    gpus = AmdGpus().inventory().gpus
    assert [(g.uuid, g.pci_bus_id, g.mig_mode) for g in gpus] == [
        (first.uuid, "0000:05:00.0", True),
        (UUID1, "0000:22:00.0", False),
    ]
    assert gpus[0].mig_uuids == tuple(g.uuid for g in others) and [g.index for g in gpus] == [0, 1]
    with pytest.raises(DeviceUnavailable, match="per physical GPU, not per partition"):
        AmdGpus().power_source(others[3].uuid, "cuda:3", probe=False)
    source = AmdGpus().power_source(first.uuid, "cuda:0", probe=False)  # the physical GPU, as the monitor asks
    assert source.counter_source == "amdsmi_energy" and source.power_source == "amdsmi_power"


def test_a_lone_later_partition_is_not_measured_as_its_gpu(fake):
    """A container given partition 3 of a CPX MI300X but not the first: the inventory sees one
    'GPU', but its power is the socket's, reported on partition 0 only: refused, said so."""
    fake.gpus = [FakeAmdGpu(bdf="0000:05:00.3", compute_partition="CPX", secondary=True)]
    (gpu,) = AmdGpus().inventory().gpus
    assert gpu.mig_mode is True and gpu.mig_uuids == ()
    with pytest.raises(DeviceUnavailable, match="per physical GPU, not per partition"):
        AmdGpus().power_source(gpu.uuid, "cuda:0", probe=False)


def test_mi300_lists_no_clocks_so_a_clock_sweep_is_refused_up_front(fake):
    assert AmdGpus().supported_sm_clocks(UUID0) == []  # gfx942: AMD documents determinism for MI200
