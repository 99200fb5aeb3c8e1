"""The `wattbench` pytest fixture, run inside an inner pytest session (pytester)."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

pytest_plugins = ["pytester"]

pytest.importorskip("pytest_benchmark")

FAST = 'device="cpu", min_time=0.01, repeats=3, repeat_time=0.002'


def _plugin_args() -> list[str]:
    """`-p bench.pytest_plugin` where the pytest11 entry point is not installed; nothing where it
    is (pytest refuses to register one module under two names)."""
    installed = any(ep.name == "wattbench" for ep in metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "bench.pytest_plugin"]


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-rs", *_plugin_args(), *args)


def test_result_is_recorded_in_benchmark_json(pytester):
    pytester.makepyfile(
        f"""
        import json, pathlib

        def test_matmul(wattbench):
            result = wattbench("matmul", m=64, n=64, k=64, dtype="float32", {FAST})
            assert result["status"] == "ok"
            pathlib.Path("result.json").write_text(json.dumps(result))
        """
    )
    run = _run(pytester, "--benchmark-json=out.json", "--wattbench-nominal-watts=100")
    run.assert_outcomes(passed=1)
    result = json.loads((pytester.path / "result.json").read_text())
    doc = json.loads((pytester.path / "out.json").read_text())
    (bench,) = doc["benchmarks"]
    assert bench["name"] == "test_matmul"
    assert bench["fullname"] == "test_result_is_recorded_in_benchmark_json.py::test_matmul"
    assert bench["group"] == "matmul"
    stats = bench["stats"]
    assert stats["rounds"] == result["repeats"] == len(result["raw_seconds"]) >= 3
    assert stats["iterations"] == result["iterations"]
    assert stats["data"] == pytest.approx(result["raw_seconds"], rel=1e-12)
    assert stats["median"] == pytest.approx(result["seconds_per_iter"]["median"], rel=1e-12)
    info = bench["extra_info"]
    assert info["case"] == "matmul(m=64,n=64,k=64,dtype=float32)@cpu"
    assert info["efficiency"] == pytest.approx(result["efficiency"]) and info["efficiency"] > 0
    assert info["energy_j"] == pytest.approx(result["energy"]["joules"]) and info["energy_j"] > 0
    assert info["avg_watts"] > 0 and info["energy_source"] == result["energy"]["source"]
    assert info["throughput"] == pytest.approx(result["throughput"]["median"])


def test_unsupported_dtype_is_skipped(pytester):
    pytester.makepyfile(
        f"""
        def test_fp8(wattbench):
            wattbench("matmul", m=64, n=64, k=64, dtype="float8", {FAST})
        """
    )
    run = _run(pytester)
    run.assert_outcomes(skipped=1)
    run.stdout.fnmatch_lines(["*SKIPPED*float8 matmul needs an NVIDIA GPU*"])
    assert "was not used at all" not in run.stdout.str()


def test_failed_verification_fails_the_test_with_one_line(pytester):
    pytester.makepyfile(
        f"""
        import workloads
        from workloads.matmul import MatMul

        class Wrong(MatMul):
            name = "wrongmatmul"

            def run(self):
                super().run()
                self.c.mul_(1.5)

        def test_wrong(wattbench, monkeypatch):
            monkeypatch.setitem(workloads.registry(), "wrongmatmul", Wrong)
            wattbench("wrongmatmul", size=16, {FAST})
        """
    )
    run = _run(pytester)
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(["*wrongmatmul(m=16,n=16,k=16,dtype=float32)@cpu: failed: verification failed: max relative error*"])
    assert "Traceback" not in run.stdout.str()


def test_usage_errors_and_a_second_call_fail(pytester):
    pytester.makepyfile(
        f"""
        def test_bad_param(wattbench):
            wattbench("matmul", q=3)

        def test_twice(wattbench):
            wattbench("matmul", size=16, dtype="float32", {FAST})
            wattbench("matmul", size=16, dtype="float32", {FAST})

        def test_both(wattbench, benchmark):
            pass
        """
    )
    run = _run(pytester, "--benchmark-json=out.json")
    run.assert_outcomes(failed=2, errors=1)
    run.stdout.fnmatch_lines_random(
        [
            "*wattbench: matmul: unknown parameter 'q'; valid: size, m, n, k, dtype*",
            "*WattbenchUsedTwice: wattbench(...) can be called once per test*",
            "*uses both the `benchmark` and the `wattbench` fixture*",
        ]
    )
    # the errored test_twice entry is left out of the JSON, as pytest-benchmark does for errors
    assert json.loads((pytester.path / "out.json").read_text())["benchmarks"] == []


@pytest.mark.parametrize("flag", ["--benchmark-disable", "-p no:benchmark"])
def test_runs_without_recording_when_pytest_benchmark_is_off(pytester, flag):
    pytester.makepyfile(
        f"""
        def test_matmul(wattbench):
            result = wattbench("matmul", size=32, dtype="float32", {FAST})
            assert result["status"] == "ok" and result["throughput"]["median"] > 0
        """
    )
    run = _run(pytester, *flag.split())
    run.assert_outcomes(passed=1)
    assert "Name (time in" not in run.stdout.str()  # no pytest-benchmark results table


def test_benchmark_skip_skips_before_running(pytester):
    pytester.makepyfile(
        """
        def test_matmul(wattbench):
            raise AssertionError("must not run")
        """
    )
    run = _run(pytester, "--benchmark-skip")
    run.assert_outcomes(skipped=1)
