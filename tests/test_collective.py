"""The collective workload: nccl-tests' busbw factors, per-rank work, the exact fill pattern, skips
with reasons (run alone, in place where the op cannot be, a size that does not split), and a real
2-rank torchrun (gloo) where every op at two sizes is checked and wrong results fail every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.errors import Unsupported
from bench.measure.plan import expand
from bench.measure.runner import run_case
from workloads import collective, get
from workloads.collective import ALONE, DTYPES, EXACT_LIMIT, OPS, Collective, bus_factor, pattern, pattern_sum, period

REPO = Path(__file__).resolve().parent.parent


def _run(cpu, timing, **params):
    (case,) = expand("collective", {k: [v] for k, v in params.items()}, [cpu])
    return run_case(case, cpu, timing, get("collective"))


@pytest.fixture
def two_ranks(monkeypatch):
    """The workload believes it is rank 0 of 2 (no process group: for accounting and set-up checks)."""
    monkeypatch.setattr(collective, "world", lambda: (0, 2))


FACTORS = {  # nccl-tests: all_reduce 2(n-1)/n; all_gather, reduce_scatter, all_to_all (n-1)/n; else 1
    2: {"all_reduce": 1.0, "all_gather": 0.5, "reduce_scatter": 0.5, "all_to_all": 0.5, "broadcast": 1.0, "send_recv": 1.0},
    8: {
        "all_reduce": 1.75,
        "all_gather": 0.875,
        "reduce_scatter": 0.875,
        "all_to_all": 0.875,
        "broadcast": 1.0,
        "send_recv": 1.0,
    },
}


@pytest.mark.parametrize("n", [2, 8])
@pytest.mark.parametrize("op", OPS)
def test_bus_factor(op, n):
    assert bus_factor(op, n) == FACTORS[n][op]


@pytest.mark.parametrize("op", OPS)
def test_work_is_each_ranks_share_of_the_job(cpu, two_ranks, op):
    """Per rank: size / n bytes, bus bytes size * factor / n; the job's sum over 2 ranks is
    algbw's size and busbw's size * factor."""
    work = Collective(Collective.resolve({"op": op, "size": "1MiB"}, cpu), cpu).work()
    size = 1024**2
    assert work.unit == "byte"
    assert work.per_iter == size / 2
    assert work.terms == {"byte": size / 2, "bus_byte": size * FACTORS[2][op] / 2}
    assert 2 * work.terms["bus_byte"] == size * bus_factor(op, 2)


@pytest.mark.parametrize("dtype", list(EXACT_LIMIT))
@pytest.mark.parametrize("n", [2, 3, 8, 64, 300, 5000])
def test_the_fill_pattern_sums_exactly(dtype, n):
    """The closed-form sum over ranks equals the brute-force one and stays where every integer is
    exact in the dtype, for a reducing op at any world size (the sparse pattern past the limit)."""
    k = period("all_reduce", n, dtype)
    index = torch.arange(1000, dtype=torch.int64)
    brute = torch.stack([pattern(r, index, k, n) for r in range(n)]).sum(0)
    assert torch.equal(pattern_sum(index, k, n), brute)
    assert int(brute.max()) <= EXACT_LIMIT[dtype]
    assert int(brute.min()) >= 1  # every element has a contribution
    assert torch.equal(brute.to(DTYPES[dtype]).to(torch.int64), brute)


def test_ranks_are_told_apart():
    """Non-reducing ops: at one index every rank of 8 holds a different value."""
    k = period("all_gather", 8, "bfloat16")
    index = torch.arange(100)
    values = torch.stack([pattern(r, index, k, 8) for r in range(8)])
    assert all(len(set(column.tolist())) == 8 for column in values.t())


def test_run_alone_is_skipped_with_the_reason(cpu, fast_timing):
    result = _run(cpu, fast_timing, op="all_reduce", size="64KiB")
    assert result["status"] == "skipped"
    assert result["error"] == ALONE
    assert "torchrun" in result["error"] and "wattbench launch -n N -- run" in result["error"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"op": "all_to_all", "inplace": "true"}, "all_to_all never runs in place (gloo silently returns wrong data"),
        ({"op": "send_recv", "inplace": "true"}, "send_recv never runs in place"),
        ({"op": "all_reduce", "inplace": "false"}, "all_reduce runs in place"),
        ({"op": "broadcast", "inplace": "false"}, "broadcast runs in place"),
        (
            {"op": "all_reduce", "size": "4097B"},
            "size 4097 B is not a multiple of the float32 element size (4 bytes); valid: 4096 or 4100",
        ),
    ],
)
def test_what_the_parameters_rule_out_is_skipped_with_the_reason_even_alone(cpu, fast_timing, params, reason):
    """A combination the op cannot run is a skipped case (as llm's graph=true with train), so a
    sweep over ops and inplace=true,false runs what it can; the reason says what is valid."""
    result = _run(cpu, fast_timing, **params)
    assert result["status"] == "skipped"
    assert result["error"].startswith(reason), result["error"]
    assert "\n" not in result["error"]


@pytest.mark.parametrize("op", ["all_gather", "reduce_scatter", "all_to_all"])
def test_a_size_that_does_not_split_over_the_ranks_is_skipped(cpu, two_ranks, op):
    workload = Collective(Collective.resolve({"op": op, "size": "4100B"}, cpu), cpu)
    with pytest.raises(
        Unsupported,
        match=rf"^{op} splits size over 2 ranks: it must be a multiple of "
        r"2 x 4 B \(float32\) = 8 B; valid: 4096 or 4104$",
    ):
        workload.setup()


def test_inplace_defaults_to_the_ops_way(cpu):
    assert Collective.resolve({"op": "all_reduce"}, cpu)["inplace"] is True
    assert Collective.resolve({"op": "broadcast"}, cpu)["inplace"] is True
    for op in ("all_gather", "reduce_scatter", "all_to_all", "send_recv"):
        assert Collective.resolve({"op": op}, cpu)["inplace"] is False


def test_the_default_size_splits_over_torchruns_world(cpu, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    size = Collective.resolve({"op": "all_gather"}, cpu)["size"]
    assert size % 12 == 0 and 4 * 1024**2 - 12 < size <= 4 * 1024**2


def test_bad_values_exit_2_with_one_line(capsys, tmp_path, monkeypatch):
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["run", "collective", "-p", "op=gather", "--min-time", "0", "--repeats", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert "collective: parameter op: 'gather' is not valid; valid: all_reduce, all_gather" in err


def _torchrun(*args: str) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("WATTBENCH_TEST_FAULT", None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "0",
        "tests/collective_driver.py",
        *args,
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def torchrun_lines() -> list[dict]:
    """One 2-rank torchrun launch for every case below (about 4 s)."""
    return _torchrun("--faults")


def _by_case(lines: list[dict], mode: str) -> dict[tuple, list[dict]]:
    cases: dict[tuple, list[dict]] = {}
    for line in lines:
        if line["mode"] == mode:
            cases.setdefault((line["op"], line["size"], line["dtype"], line["inplace"]), []).append(line)
    return cases


def test_every_op_at_two_sizes_is_exact_on_both_ranks(torchrun_lines):
    cases = _by_case(torchrun_lines, "check")
    ran = {key for key, lines in cases.items() if lines[0]["status"] == "ok"}
    expected = {
        (op, size, "float32", inplace)
        for op in OPS
        for size in (4096, 1024**2)
        for inplace in (
            (True,) if op in ("all_reduce", "broadcast") else (False,) if op in ("all_to_all", "send_recv") else (False, True)
        )
    }
    assert ran == expected
    for key in ran:
        lines = cases[key]
        assert sorted(line["rank"] for line in lines) == [0, 1], key
        for line in lines:
            assert line["passed"] and line["wrong"] == 0 and line["max_rel_error"] == 0.0, line
            size, factor = key[1], bus_factor(key[0], 2)
            assert line["work"] == {"byte": size / 2, "bus_byte": size * factor / 2}
            assert line["details"]["world_size"] == 2 and line["details"]["bus_factor"] == factor
            split = key[0] in ("all_gather", "reduce_scatter", "all_to_all")
            assert line["details"]["count"] == size // 4 // (2 if split else 1)
    skipped = {key: lines[0]["error"] for key, lines in cases.items() if lines[0]["status"] == "skipped"}
    assert set(skipped) == set(cases) - ran
    assert all(len(cases[key]) == 2 for key in skipped)


def test_every_dtype_is_exact(torchrun_lines):
    cases = _by_case(torchrun_lines, "dtype")
    assert {key[2] for key in cases} == set(EXACT_LIMIT)
    assert len(cases) == len(OPS) * len(EXACT_LIMIT)
    for key, lines in cases.items():
        assert len(lines) == 2 and all(line["status"] == "ok" and line["passed"] for line in lines), (key, lines)


def test_a_size_that_does_not_split_is_skipped_on_both_ranks(torchrun_lines):
    lines = [line for line in torchrun_lines if line["mode"] == "odd_size"]
    assert len(lines) == 2
    for line in lines:
        assert line["status"] == "skipped"
        assert line["error"].endswith("= 8 B; valid: 4096 or 4104")


@pytest.mark.parametrize("mode", ["noop", "corrupt"])
def test_a_wrong_result_fails_on_every_rank(torchrun_lines, mode):
    """A collective that never ran, or one wrong element on rank 1 alone: both ranks fail."""
    cases = _by_case(torchrun_lines, mode)
    assert {key[0] for key in cases} == set(OPS)
    for key, lines in cases.items():
        assert sorted(line["rank"] for line in lines) == [0, 1], key
        for line in lines:
            assert line["status"] == "ok" and line["passed"] is False, line
            assert line["wrong"] >= 1 and line["max_rel_error"] > 0
        if mode == "corrupt":
            assert all(line["wrong"] == 1 for line in lines)


def test_the_timed_all_reduce_keeps_its_data_finite(torchrun_lines):
    """200 timed iterations of an in-place all_reduce on 2 ranks: with SUM a float16 buffer
    doubles to inf within 8 and bfloat16 within 120; the timed loop's MAX leaves it finite, and
    the check (SUM, exact) still passes after it."""
    lines = [line for line in torchrun_lines if line["mode"] == "long"]
    assert sorted((line["dtype"], line["rank"]) for line in lines) == [
        ("bfloat16", 0),
        ("bfloat16", 1),
        ("float16", 0),
        ("float16", 1),
    ]
    for line in lines:
        assert line["finite"] and line["passed"], line
        assert line["details"]["timed_reduction"] == "max"
