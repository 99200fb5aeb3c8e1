"""Energy windows against the simulated NVML: a known power trace, unsupported fields, NVML
failing, a counter slower than the window, throttling, counter and power disagreeing."""

import sys
import time

import pytest

from bench.monitor.discover import DeviceRef, discover
from bench.monitor.sampler import Monitor
from tests.fake_nvml import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_FI_DEV_POWER_AVERAGE,
    NVML_FI_DEV_POWER_INSTANT,
)

UUID = "GPU-11111111-2222-3333-4444-555555555555"
GPU = DeviceRef("cuda:0", "cuda", UUID)


@pytest.fixture
def fake(fake_nvml):
    return fake_nvml


def _window(sources, seconds=1.0, interval=0.01, during=None):
    with Monitor(sources, interval) as monitor:
        t0 = time.monotonic()
        with monitor.window() as window:
            if during:
                during()
            time.sleep(seconds)
        t1 = time.monotonic()
    return window.results["cuda:0"], t0, t1


def _source(fake, nominal=None):
    found = discover([GPU], nominal)
    assert len(found.sources) == 1, found.status
    return found.sources[0], found


def test_counter_energy_within_1_percent_of_trace(fake):
    src, found = _source(fake)
    assert found.status["cuda:0"] == "nvml_energy + nvml_power_instant"
    assert src.counter_update_s == pytest.approx(0.001, rel=0.5)
    result, t0, t1 = _window([src])
    truth = fake.gpus[0].trace.joules(t1) - fake.gpus[0].trace.joules(t0)
    assert result.source == "nvml_energy"
    assert result.joules == pytest.approx(truth, rel=0.01)
    assert result.integral_joules == pytest.approx(truth, rel=0.01)
    assert result.mismatch < 0.05
    assert result.avg_watts == pytest.approx(result.joules / result.duration_s)
    assert 300 < result.peak_watts <= 400.5
    assert result.flags == ()
    assert result.peak_memory_bytes == 20 * 2**30
    assert result.samples >= 50


def test_instant_power_integral_when_counter_unsupported(fake):
    fake.gpus[0].unsupported.add("nvmlDeviceGetTotalEnergyConsumption")
    src, found = _source(fake)
    assert found.status["cuda:0"] == "nvml_power_instant"
    result, t0, t1 = _window([src])
    truth = fake.gpus[0].trace.joules(t1) - fake.gpus[0].trace.joules(t0)
    assert result.source == "nvml_power_instant"
    assert result.joules == pytest.approx(truth, rel=0.01)
    assert result.counter_joules is None and result.mismatch is None


def test_average_field_then_power_usage_fallbacks(fake):
    fake.gpus[0].unsupported.update({"nvmlDeviceGetTotalEnergyConsumption", NVML_FI_DEV_POWER_INSTANT})
    src, _ = _source(fake)
    assert src.power_source == "nvml_power_average"
    fake.gpus[0].unsupported.add(NVML_FI_DEV_POWER_AVERAGE)
    src, _ = _source(fake)
    assert src.power_source == "nvml_power_usage"
    result, _, _ = _window([src], seconds=0.3)
    assert result.source == "nvml_power_usage"


@pytest.mark.parametrize(
    "fn, attr",
    [
        ("nvmlDeviceGetMemoryInfo", "memory_used_bytes"),
        ("nvmlDeviceGetClockInfo", "sm_clock_mhz"),
        ("nvmlDeviceGetTemperature", "temperature_c"),
        ("nvmlDeviceGetUtilizationRates", "utilization_pct"),
        ("nvmlDeviceGetCurrentClocksEventReasons", "throttle_reasons"),
    ],
)
def test_unsupported_single_field_is_none_and_run_goes_on(fake, fn, attr):
    fake.gpus[0].unsupported.add(fn)
    src, _ = _source(fake)
    reading = src.read()
    assert getattr(reading, attr) in (None, ())
    assert reading.energy_j is not None and reading.error is None
    result, t0, t1 = _window([src], seconds=0.3)
    assert result.source == "nvml_energy"
    assert result.joules == pytest.approx(fake.gpus[0].trace.joules(t1) - fake.gpus[0].trace.joules(t0), rel=0.02)


def test_nothing_supported_means_unmeasured(fake):
    fake.gpus[0].unsupported.update(
        {"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetFieldValues", "nvmlDeviceGetPowerUsage"}
    )
    found = discover([GPU])
    assert found.sources == ()
    assert found.status["cuda:0"] == "unavailable: NVML reports neither energy nor power for this GPU"


def test_nvml_failing_at_init(fake):
    fake.init_error = NVML_ERROR_DRIVER_NOT_LOADED
    found = discover([GPU])
    assert found.sources == ()
    assert found.status["cuda:0"] == "unavailable: NVML failed to initialise: Driver Not Loaded"
    found = discover([GPU], nominal_watts=450)
    assert found.status["cuda:0"] == "nominal (estimate)"
    with Monitor(found.sources, 0.01) as monitor:
        with monitor.window() as window:
            time.sleep(0.2)
    result = window.results["cuda:0"]
    assert result.source == "nominal" and result.estimate
    assert result.avg_watts == pytest.approx(450)


def test_counter_slower_than_window_is_flagged(fake):
    fake.gpus[0].counter_period_s = 0.5
    src, _ = _source(fake)
    result, _, _ = _window([src], seconds=1.0)
    assert "window_too_short" in result.flags


def test_short_window_flagged_even_when_probe_cannot_see_the_counter_move(fake):
    fake.gpus[0].counter_period_s = 2.0
    src, _ = _source(fake)
    assert src.counter_update_s is None  # slower than the start-up probe
    result, _, _ = _window([src], seconds=0.3)
    assert "window_too_short" in result.flags


def test_throttle_bits_during_window(fake):
    src, _ = _source(fake)

    def throttle():
        fake.gpus[0].throttle_bits = 0x4 | 0x40 | 0x1  # power cap, hw thermal, idle (ignored)

    result, _, _ = _window([src], seconds=0.3, during=throttle)
    assert "throttled:sw_power_cap" in result.flags
    assert "throttled:hw_thermal" in result.flags
    assert not any("idle" in f for f in result.flags)


NEW_REASONS, OLD_REASONS = "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"


def _count_calls(name):
    """Wrap the simulated NVML's `name` to count its calls."""
    mod = sys.modules["pynvml"]
    inner, calls = getattr(mod, name), []

    def counted(handle):
        calls.append(handle)
        return inner(handle)

    counted.__name__ = name
    setattr(mod, name, counted)
    return calls


def _throttled_window(fake, src):
    def throttle():
        fake.gpus[0].throttle_bits = 0x4 | 0x20  # power cap, sw thermal

    result, _, _ = _window([src], seconds=0.3, during=throttle)
    return result


def test_throttle_reasons_use_the_newer_call_where_the_driver_has_it(fake):
    old_calls = _count_calls(OLD_REASONS)
    src, found = _source(fake)
    assert found.describe()[0]["throttle_reasons"] == NEW_REASONS
    assert "throttled:sw_power_cap" in _throttled_window(fake, src).flags
    assert old_calls == []


def test_throttle_reasons_fall_back_to_the_older_call_before_r535(fake):
    """A driver before R535 lacks the newer symbol (pynvml raises FUNCTION_NOT_FOUND): the start-up
    probe picks the older call, and the window still gets its throttle flags."""
    fake.missing_functions.add(NEW_REASONS)
    new_calls = _count_calls(NEW_REASONS)
    src, found = _source(fake)
    assert found.describe()[0]["throttle_reasons"] == OLD_REASONS
    assert len(new_calls) == 1  # probed once, at start-up, never again
    result = _throttled_window(fake, src)
    assert "throttled:sw_power_cap" in result.flags and "throttled:sw_thermal" in result.flags
    assert "sampling_gaps" not in result.flags
    assert len(new_calls) == 1
    assert src.read().error is None


def test_throttle_reasons_fall_back_when_the_package_lacks_the_newer_name(fake, monkeypatch):
    monkeypatch.delattr(sys.modules["pynvml"], NEW_REASONS)
    src, found = _source(fake)
    assert found.describe()[0]["throttle_reasons"] == OLD_REASONS
    assert "throttled:sw_power_cap" in _throttled_window(fake, src).flags


def test_throttle_reasons_none_when_neither_call_works(fake):
    fake.missing_functions.update({NEW_REASONS, OLD_REASONS})
    src, found = _source(fake)
    assert found.describe()[0]["throttle_reasons"] is None
    reading = src.read()
    assert reading.throttle_reasons == () and reading.error is None
    assert found.status["cuda:0"] == "nvml_energy + nvml_power_instant"  # energy is unaffected


def test_throttle_reasons_not_supported_keeps_none(fake):
    """'Not supported' is the GPU's answer to the query, not a missing symbol: no fallback needed."""
    fake.gpus[0].unsupported.add(NEW_REASONS)
    old_calls = _count_calls(OLD_REASONS)
    src, found = _source(fake)
    assert found.describe()[0]["throttle_reasons"] is None
    assert src.read().throttle_reasons == () and old_calls == []


def test_reasons_names_and_error_code_exist_in_nvidia_ml_py():
    """The names the probe uses are the real package's (the simulated NVML could drift)."""
    import importlib.util

    from bench.device.nvidia.telemetry import REASONS_FUNCTIONS

    spec = importlib.util.find_spec("pynvml")
    if spec is None or spec.loader is None:
        pytest.skip("nvidia-ml-py is not installed")
    real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real)  # a fresh copy: whatever sys.modules holds is left alone
    for name in REASONS_FUNCTIONS:
        assert callable(getattr(real, name))
    assert real.NVML_ERROR_FUNCTION_NOT_FOUND == 13
    for name in ("nvmlDeviceGetMigMode", "nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetMigDeviceHandleByIndex"):
        assert callable(getattr(real, name))
    assert real.NVML_DEVICE_MIG_ENABLE == 1


def test_counter_and_power_disagreeing_is_flagged(fake):
    fake.gpus[0].power_field_scale = 1.2
    src, _ = _source(fake)
    result, _, _ = _window([src], seconds=0.5)
    assert result.source == "nvml_energy"
    assert result.mismatch == pytest.approx(0.2, abs=0.03)
    assert "energy_mismatch" in result.flags


def test_nvml_error_in_a_read_is_recorded_and_flagged(fake):
    src, _ = _source(fake)
    mod = sys.modules["pynvml"]
    working = mod.nvmlDeviceGetTotalEnergyConsumption

    def lost(handle):
        raise mod.NVMLError(15)  # GPU_IS_LOST

    mod.nvmlDeviceGetTotalEnergyConsumption = lost
    reading = src.read()
    assert reading.energy_j is None and reading.error.startswith("nvml: ")
    mod.nvmlDeviceGetTotalEnergyConsumption = working

    def flaky_window():
        mod.nvmlDeviceGetTotalEnergyConsumption = lost
        time.sleep(0.05)
        mod.nvmlDeviceGetTotalEnergyConsumption = working

    result, _, _ = _window([src], seconds=0.2, during=flaky_window)
    assert "sampling_gaps" in result.flags


def test_concurrent_reads_keep_their_own_errors(fake):
    """The sampler and a window edge read one source at once: an NVML error of one read must be
    reported by that read only, never lost nor shown in the other's."""
    import threading

    src, _ = _source(fake)
    mod = sys.modules["pynvml"]
    working_memory, working_util = mod.nvmlDeviceGetMemoryInfo, mod.nvmlDeviceGetUtilizationRates
    both_started = threading.Barrier(2, timeout=5)

    def memory(handle):
        both_started.wait()  # both reads are past their start before either fails
        return working_memory(handle)

    def util(handle):
        if threading.current_thread().name == "bad":
            raise mod.NVMLError(15)  # GPU_IS_LOST
        time.sleep(0.05)  # the good read finishes after the bad one has failed
        return working_util(handle)

    mod.nvmlDeviceGetMemoryInfo, mod.nvmlDeviceGetUtilizationRates = memory, util
    readings = {}

    def read():
        readings[threading.current_thread().name] = src.read()

    threads = [threading.Thread(target=read, name=name) for name in ("good", "bad")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert readings["good"].error is None and readings["good"].utilization_pct == 97
    assert readings["bad"].error == "nvml: util: NVML error 15"
    assert readings["bad"].utilization_pct is None


def test_errors_of_the_last_telemetry_calls_are_recorded(fake):
    src, _ = _source(fake)
    mod = sys.modules["pynvml"]

    def lost(handle, sensor):
        raise mod.NVMLError(15)

    mod.nvmlDeviceGetTemperature = lost
    reading = src.read()
    assert reading.temperature_c is None
    assert reading.error == "nvml: lost: NVML error 15"
