"""Suites: the built-in TOML files, a user's own file, and -p overrides."""

import pytest

from bench.errors import UsageError
from bench.measure.hardware import DeviceInfo, cpu_device
from bench.measure.suites import find_suite, load_suite
from workloads import builtin_suites

FAKE_GPU = DeviceInfo(
    id="cuda:0", kind="cuda", name="Fake GPU", memory_bytes=80 * 2**30, cache_bytes=50 * 2**20, compute_capability="9.0"
)


@pytest.mark.parametrize("name", ["quick", "standard", "full"])
def test_builtin_suites_expand_on_cpu_and_gpu(name, cpu):
    suite = find_suite(name)
    assert suite.description
    cpu_cases = suite.cases([cpu])
    gpu_cases = suite.cases([FAKE_GPU])
    assert {c.workload for c in cpu_cases} == {"matmul", "attention", "membw", "llm"}
    assert {c.workload for c in gpu_cases} == {"matmul", "attention", "membw", "llm"}
    assert all(c.device == "cpu" for c in cpu_cases)
    assert len({c.id for c in cpu_cases}) == len(cpu_cases)


def test_builtin_names():
    assert set(builtin_suites()) == {"quick", "standard", "full", "llm-sweep", "acceptance"}


def test_the_acceptance_suite_sustains_the_fastest_dtype_per_device():
    """dtype=auto resolves per device and the case records it: float8 on an H100 (fake), float32
    on the CPU; every case sustained 60 s with a 10 s burst and a 30 s tail, one round."""
    suite = find_suite("acceptance")
    assert suite.settings["sustain_s"] == 60 and suite.settings["burst_s"] == 10 and suite.settings["tail_s"] == 30
    gpu = {c.workload: c for c in suite.cases([FAKE_GPU])}
    assert set(gpu) == {"matmul", "membw", "collective"} and gpu["matmul"].param_dict["dtype"] == "float8"
    (cpu_matmul, _) = sorted(suite.cases([cpu_device()]), key=lambda c: c.workload)
    assert cpu_matmul.param_dict["dtype"] == "float32"


def test_no_builtin_suite_shadows_a_workload():
    """`wattbench run NAME` takes a suite before a workload, so a suite named like a workload would
    make the workload unreachable by name (`run llm -p model=tiny` must be three cases, not a sweep)."""
    from workloads import registry

    assert not set(builtin_suites()) & set(registry())


def test_standard_fills_a_gpu(cpu):
    cases = find_suite("standard").cases([FAKE_GPU])
    matmul = [c.param_dict for c in cases if c.workload == "matmul"]
    assert {"m": 8192, "n": 8192, "k": 8192, "dtype": "bfloat16"} in matmul
    membw = [c.param_dict for c in cases if c.workload == "membw"]
    assert all(p["size"] >= 4 * FAKE_GPU.cache_bytes for p in membw)


def test_user_suite_file_and_settings(tmp_path, cpu):
    path = tmp_path / "mine.toml"
    path.write_text(
        'description = "mine"\n[settings]\nmin_time = 0.2\nrepeats = 3\n'
        '[[case]]\nworkload = "matmul"\nparams = { size = [32, 64], dtype = "float32" }\n'
        '[[case]]\nworkload = "membw"\ndevice = "cuda"\n'
    )
    suite = find_suite(str(path))
    assert suite.name == "mine"
    assert suite.settings == {"min_time_s": 0.2, "repeats": 3}
    cases = suite.cases([cpu])
    assert [c.id for c in cases] == ["matmul(m=32,n=32,k=32,dtype=float32)@cpu", "matmul(m=64,n=64,k=64,dtype=float32)@cpu"]


def test_overrides_apply_to_entries_that_have_the_key(cpu):
    cases = find_suite("quick").cases([cpu], {"dtype": ["float32"]})
    assert all(c.param_dict["dtype"] == "float32" for c in cases if "dtype" in c.param_dict)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "needs at least one [[case]]"),
        ("[[case]]\nparams = {}\n", "case 1 needs a workload"),
        ('[[case]]\nworkload = "matmul"\ncolour = "red"\n', "unknown key(s) colour"),
        ('[[case]]\nworkload = "matmul"\ndevice = "tpu"\n', "device 'tpu' is not valid; valid: cpu, cuda"),
        ('[[case]]\nworkload = "matmul"\nparams = { dtype = "int4" }\n', "case 1: matmul: parameter dtype"),
        ('[settings]\nspeed = 3\n[[case]]\nworkload = "matmul"\n', "unknown setting 'speed'"),
        ('[settings]\nrepeats = -3\n[[case]]\nworkload = "matmul"\n', "setting repeats must be a number >= 0"),
        ('[settings]\nrounds = 1.5\n[[case]]\nworkload = "matmul"\n', "setting rounds must be a whole number >= 1, got 1.5"),
        ('[settings]\nrounds = 0\n[[case]]\nworkload = "matmul"\n', "setting rounds must be a whole number >= 1, got 0"),
    ],
)
def test_bad_suite_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_suite(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_the_llm_sweep_suite_sweeps_decode_batch_and_context(cpu):
    gpu = find_suite("llm-sweep").cases([FAKE_GPU])
    assert {c.param_dict["batch"] for c in gpu} == {1, 2, 4, 8, 16, 32, 64, 128, 256}
    assert {c.param_dict["seq"] for c in gpu} == {512, 1024, 2048, 4096}
    assert all(c.param_dict["phase"] == "decode" for c in gpu + find_suite("llm-sweep").cases([cpu]))
