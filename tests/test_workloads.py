"""Every workload verifies its own output before it is timed; a wrong kernel is a failed case."""

import statistics

import pytest
import torch

from bench.measure.plan import expand
from bench.measure.runner import run_case
from workloads import get
from workloads.matmul import MatMul


def _run(cpu, timing, workload: str, cls=None, **params):
    (case,) = expand(workload, {k: [v] for k, v in params.items()}, [cpu])
    return run_case(case, cpu, timing, cls or get(workload))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_matmul_verifies_and_times(cpu, fast_timing, dtype):
    result = _run(cpu, fast_timing, "matmul", m=64, n=48, k=32, dtype=dtype)
    assert result["status"] == "ok", result["error"]
    assert result["verify"]["passed"]
    assert result["verify"]["max_rel_error"] <= result["verify"]["tolerance"]
    # Throughput is computed per repeat, then summarised: the median of work / each repeat's time
    # (with two noisy repeats that is their mean, not work / the median time).
    per_repeat = [2 * 64 * 48 * 32 / s for s in result["raw_seconds"]]
    assert result["throughput"]["median"] == pytest.approx(statistics.median(per_repeat))
    assert len(result["raw_seconds"]) == result["repeats"] >= 2


@pytest.mark.parametrize("dtype", ["tf32", "float8"])
def test_matmul_gpu_only_dtypes_are_skipped_on_cpu(cpu, fast_timing, dtype):
    result = _run(cpu, fast_timing, "matmul", size=32, dtype=dtype)
    assert result["status"] == "skipped"
    assert "GPU" in result["error"]
    assert result["throughput"] is None


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
def test_attention_verifies(cpu, fast_timing, causal, pass_):
    result = _run(cpu, fast_timing, "attention", batch=1, heads=2, seq=64, head_dim=16, causal=causal, **{"pass": pass_})
    assert result["status"] == "ok", result["error"]
    assert result["verify"]["passed"]


@pytest.mark.parametrize("backend", ["flash", "math"])
def test_attention_cpu_backends(cpu, fast_timing, backend):
    result = _run(cpu, fast_timing, "attention", batch=1, heads=2, seq=64, head_dim=16, backend=backend)
    assert result["status"] == "ok", result["error"]


@pytest.mark.parametrize("backend", ["efficient", "cudnn"])
def test_attention_cuda_backends_skipped_on_cpu(cpu, fast_timing, backend):
    result = _run(cpu, fast_timing, "attention", batch=1, heads=2, seq=64, head_dim=16, backend=backend)
    assert result["status"] == "skipped"
    assert "CUDA" in result["error"]


@pytest.mark.parametrize("op", ["copy", "scale", "add", "triad", "dot"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_membw_stream_ops_verify(cpu, fast_timing, op, dtype):
    result = _run(cpu, fast_timing, "membw", op=op, size="1MiB", dtype=dtype)
    assert result["status"] == "ok", result["error"]
    assert result["work_unit"] == "byte"


@pytest.mark.parametrize("op", ["h2d", "d2h", "d2d"])
def test_membw_copies_need_cuda(cpu, fast_timing, op):
    assert _run(cpu, fast_timing, "membw", op=op, size="1MiB")["status"] == "skipped"


def test_membw_size_not_multiple_of_element_is_skipped(cpu, fast_timing):
    result = _run(cpu, fast_timing, "membw", op="copy", size=1001)
    assert result["status"] == "skipped"
    assert "multiple" in result["error"]


class WrongMatMul(MatMul):
    """A deliberately wrong kernel: the product plus a small error in one element."""

    def run(self) -> None:
        super().run()
        self.c[0, 0] += 1.0


def test_wrong_kernel_is_caught_by_verification(cpu, fast_timing):
    result = _run(cpu, fast_timing, "matmul", cls=WrongMatMul, size=64, dtype="float32")
    assert result["status"] == "failed"
    assert result["verify"]["passed"] is False
    assert result["error"].startswith("verification failed: max relative error")
    assert result["throughput"] is None  # a wrong result is never a throughput
    assert result["raw_seconds"] == []


def test_case_that_raises_is_failed_with_one_line_error(cpu, fast_timing):
    class Broken(MatMul):
        def setup(self) -> None:
            raise RuntimeError("kernel exploded\nsecond line of detail")

    result = _run(cpu, fast_timing, "matmul", cls=Broken, size=16)
    assert result["status"] == "failed"
    assert result["error"] == "RuntimeError: kernel exploded"


def test_out_of_memory_is_recorded_as_oom(cpu, fast_timing):
    class Hungry(MatMul):
        def setup(self) -> None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    result = _run(cpu, fast_timing, "matmul", cls=Hungry, size=16)
    assert result["status"] == "oom"
    assert "out of memory" in result["error"]


class NanMatMul(MatMul):
    """A kernel whose output is NaN: its error is not a number JSON can hold."""

    name = "nan_matmul"

    def run(self) -> None:
        super().run()
        self.c[0, 0] = float("nan")


def test_nan_output_is_a_failed_case_in_a_valid_complete_file(cpu, fast_timing, registry, tmp_path):
    import json

    from bench import results
    from bench.measure import runner
    from bench.measure.hardware import host_info

    registry[NanMatMul.name] = NanMatMul
    cases = expand(NanMatMul.name, {"size": [32]}, [cpu]) + expand("matmul", {"size": [32]}, [cpu])
    path = tmp_path / "r.json"
    doc = runner.new_run_document("test", host_info(), [cpu], fast_timing, len(cases))
    assert runner.run(cases, [cpu], fast_timing, results.RunFile(path, doc)) == "complete"
    saved = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in a result file"))
    assert saved["run"]["status"] == "complete"
    bad, good = saved["cases"]
    assert bad["status"] == "failed" and good["status"] == "ok"  # the run went on
    assert bad["verify"] == {"max_rel_error": None, "tolerance": bad["verify"]["tolerance"], "passed": False}
    assert bad["error"] == f"verification failed: max relative error inf > tolerance {bad['verify']['tolerance']:.3g}"
    assert bad["throughput"] is None


@pytest.mark.parametrize("error", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_error_never_passes_and_is_stored_as_null(error):
    from bench.measure.workload import Verification

    check = Verification(error, 1e-3)
    assert not check.passed
    assert check.to_dict() == {"max_rel_error": None, "tolerance": 1e-3, "passed": False}
    assert f"{check.max_rel_error:.3g}" in ("inf", "-inf")  # as the runner's failure message shows it
