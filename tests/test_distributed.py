"""`wattbench run` under a real torchrun on this CPU (gloo): two ranks in step, one merged file,
two simulated nodes, and failures that name the rank that caused them. Each job is a real
torchrun subprocess bounded by a timeout."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import UsageError
from bench.measure.distributed import RankInfo
from bench.measure.heartbeat import Watch
from bench.measure.lockstep import worst
from bench.testing_hooks import fault_from_env

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--device", "cpu", "--min-time", "0", "--repeats", "3", "--repeat-time", "0.001", "--no-monitor"]
TWO_CASES = ["membw", "-p", "op=triad", "-p", "size=64KiB,256KiB"]
JOB_TIMEOUT_S = 90


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATTBENCH_", "TORCHELASTIC_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env | extra


def _torchrun(
    args: list[str], tmp_path: Path, nproc: int = 2, fault: str | None = None, extra: list[str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "--max-restarts",
        "0",
        *(extra or []),
        "-m",
        "bench",
        "run",
        *args,
    ]
    env = _env(**({"WATTBENCH_TEST_FAULT": fault} if fault else {}))
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    return done, time.monotonic() - started


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


# --- pure logic ---------------------------------------------------------------------------------


def test_rank_info_comes_from_torchrun_environment():
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
        "GROUP_WORLD_SIZE": "2",
        "MASTER_ADDR": "node0",
        "MASTER_PORT": "29500",
    }
    assert RankInfo.from_env(env) == RankInfo(rank=3, local_rank=1, world_size=4, local_world_size=2, node_rank=1, nodes=2)
    assert RankInfo.from_env({}) is None
    assert RankInfo.from_env({k: v for k, v in env.items() if k != "MASTER_PORT"}) is None


def test_the_fault_switch_is_off_unless_set_and_says_what_is_valid():
    assert fault_from_env({}) is None
    fault = fault_from_env({"WATTBENCH_TEST_FAULT": "hang:rank=1:case=2"})
    assert (fault.kind, fault.rank, fault.case) == ("hang", 1, 2)
    with pytest.raises(UsageError, match="KIND:rank=R:case=I"):
        fault_from_env({"WATTBENCH_TEST_FAULT": "explode:rank=1:case=2"})


def test_the_worst_status_decides_a_case():
    assert worst([(0, "ok", None), (1, "ok", None)]) is None
    assert worst([(0, "ok", None), (1, "skipped", "why"), (2, "failed", "boom")]) == (2, "failed", "boom")
    assert worst([(0, "skipped", "a"), (1, "skipped", "b")]) == (0, "skipped", "a")


def test_the_watch_names_the_rank_behind_not_its_victims():
    watch = Watch(3, hang_timeout_s=10)
    states = [
        {"beat": 1, "step": 7, "doing": "waiting at the agreement"},
        {"beat": 1, "step": 6, "doing": "running case x"},
        {"beat": 1, "step": 7, "doing": "waiting at the agreement"},
    ]
    assert watch.look(states, set(), now=100.0) is None
    for t in range(1, 12):  # every rank still beats; nobody moves
        states = [dict(s, beat=s["beat"] + 1) for s in states]
        found = watch.look(states, set(), now=100.0 + t)
    assert found is not None and found["rank"] == 1 and found["kind"] == "hung"
    assert "rank(s) 0, 2" in found["why"]


def test_the_watch_names_a_rank_that_stops_beating():
    watch = Watch(2, hang_timeout_s=100)
    states = [{"beat": 1, "step": 3, "doing": "a"}, {"beat": 1, "step": 3, "doing": "running case y"}]
    watch.look(states, set(), now=0.0)
    found = None
    for t in range(1, 8):
        states = [dict(states[0], beat=1 + t), states[1]]
        found = watch.look(states, set(), now=float(t)) or found
    assert found is not None and found["rank"] == 1 and found["kind"] == "stopped"


def test_torchrun_only_options_are_refused_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(key, value)
    for extra, expected in (
        (["--isolate"], "do not apply under torchrun"),
        (["--hang-timeout", "400"], "must be shorter than --pg-timeout"),
        (["--device", "cuda:1"], "each rank uses the GPU of its LOCAL_RANK"),
    ):
        assert main(["run", *TWO_CASES, *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines


def test_a_node_with_fewer_gpus_than_local_ranks_stops_with_one_line(monkeypatch):
    from bench.measure import ranks
    from tests.test_suites import FAKE_GPU

    monkeypatch.setattr(ranks, "cuda_devices", lambda: [FAKE_GPU])
    info = RankInfo(rank=1, local_rank=1, world_size=2, local_world_size=2, node_rank=0, nodes=1)
    with pytest.raises(
        UsageError,
        match=r"this node has 1 GPU\(s\) visible to torch but torchrun started 2 local ranks; "
        r"valid: --nproc-per-node 1 to 1",
    ):
        ranks.rank_device("cuda", info)


# --- real torchrun jobs -------------------------------------------------------------------------


def test_two_ranks_run_in_step_and_merge_into_one_file(tmp_path):
    out = tmp_path / "job.json"
    done, _ = _torchrun([*TWO_CASES, *FAST, "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = _read(out)
    assert doc["schema"] == "wattbench.run/2"
    assert [r["rank"] for r in doc["ranks"]] == [0, 1]
    assert doc["run"]["status"] == "complete"
    assert all(c["status"] == "ok" and c["ranks"] == 2 for c in doc["cases"])
    shards = sorted(p.name for p in (tmp_path / "job.shards").iterdir())
    assert shards == ["rank-00000.json", "rank-00001.json"]
    r0, r1 = (_read(tmp_path / "job.shards" / name) for name in shards)
    # The synchronised timer: both ranks recorded the job's (the slowest rank's) times and plan.
    for a, b in zip(r0["cases"], r1["cases"], strict=True):
        assert a["raw_seconds"] == b["raw_seconds"] and a["iterations"] == b["iterations"]
    # Job work is the sum over ranks; one CPU on one host.
    case = doc["cases"][0]
    assert case["work_per_iter"] == pytest.approx(2 * r0["cases"][0]["work_per_iter"])


def test_two_ranks_run_every_collective_at_two_sizes_checked(tmp_path):
    """The collective workload through `wattbench run` under torchrun: every result checked on
    both ranks before timing, algbw from the job's bytes, busbw by nccl-tests' factor for n = 2."""
    out = tmp_path / "coll.json"
    ops = "op=all_reduce,all_gather,reduce_scatter,all_to_all,broadcast"
    done, _ = _torchrun(["collective", "-p", ops, "-p", "size=4KiB,256KiB", *FAST, "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = _read(out)
    assert len(doc["cases"]) == 10
    factors = {"all_reduce": 1.0, "all_gather": 0.5, "reduce_scatter": 0.5, "all_to_all": 0.5, "broadcast": 1.0}
    for case in doc["cases"]:
        assert case["status"] == "ok", case["error"]
        assert case["verify"]["passed"] and case["details"]["wrong"] == 0
        size = case["params"]["size"]
        assert case["work_per_iter"] == size  # the job moves the buffer once: algbw = size / time
        assert case["work_terms"]["bus_byte"] == pytest.approx(size * factors[case["params"]["op"]])


def test_a_set_up_failure_on_one_rank_fails_the_collective_on_both_and_the_job_goes_on(tmp_path):
    """Rank 1's set-up fails while rank 0's succeeded: no rank enters the workload's own
    all_reduce; both record the case failed with rank 1's reason, and the next case runs."""
    out = tmp_path / "setup.json"
    args = ["collective", "-p", "op=all_reduce", "-p", "size=4KiB,8KiB", *FAST, "--out", str(out)]
    done, seconds = _torchrun(args, tmp_path, fault="setup:rank=1:case=0")
    assert done.returncode == 1, done.stderr[-2000:]  # a case failed; the job ended normally
    assert seconds < 30
    first, second = _read(out)["cases"]
    assert first["status"] == "failed" and first["error"].startswith("rank 1: RuntimeError: injected set-up failure")
    assert second["status"] == "ok"


def test_three_ranks_name_the_one_that_exited_not_a_victim(tmp_path):
    out = tmp_path / "three.json"
    done, seconds = _torchrun([*TWO_CASES, *FAST, "--out", str(out)], tmp_path, nproc=3, fault="exit:rank=1:case=1")
    assert done.returncode != 0 and seconds < 30
    assert _read(out)["run"]["failed_rank"]["rank"] == 1


def test_ctrl_c_on_the_job_saves_every_shard_and_an_interrupted_run_file(tmp_path):
    out = tmp_path / "int.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "0",
        "-m",
        "bench",
        "run",
        "membw",
        "-p",
        "op=triad,copy",
        "-p",
        "size=64KiB,256KiB",
        "--device",
        "cpu",
        "--min-time",
        "1",
        "--no-monitor",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        shard = tmp_path / "int.shards" / "rank-00001.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (shard.exists() and _read(shard)["cases"]):
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the agent and every rank
        proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    doc = _read(out)
    assert doc["run"]["status"] == "interrupted" and doc["run"]["failed_rank"] is None
    # Ctrl-C reaches the ranks at different points: a case one rank wrote and the other had not
    # is interrupted (naming who finished it), never a failure of the rank that was still on it.
    statuses = [(c["status"], c["error"]) for c in doc["cases"]]
    assert statuses and all(status in ("ok", "interrupted") for status, _ in statuses), statuses
    for status, error in statuses:
        assert status == "ok" or error.startswith("interrupted by the user before rank"), error


def test_two_nodes_on_localhost(tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    out = tmp_path / "nodes.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--max-restarts",
        "0",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"localhost:{port}",
        "--rdzv-id",
        "wattbench-test",
        "-m",
        "bench",
        "run",
        *TWO_CASES,
        *FAST,
        "--out",
        str(out),
    ]
    agents = [
        subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [a.communicate(timeout=JOB_TIMEOUT_S) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], [r[1][-2000:] for r in results]
    doc = _read(out)
    assert doc["run"]["settings"]["distributed"]["nodes"] == 2
    assert sorted(r["node_rank"] for r in doc["ranks"]) == [0, 1]


def test_a_rank_that_exits_ends_the_job_fast_and_is_named(tmp_path):
    out = tmp_path / "exit.json"
    done, seconds = _torchrun([*TWO_CASES, *FAST, "--out", str(out)], tmp_path, fault="exit:rank=1:case=1")
    assert done.returncode != 0
    assert seconds < 20, seconds
    doc = _read(out)
    assert doc["run"]["status"] == "aborted"
    assert doc["run"]["failed_rank"]["rank"] == 1
    assert "rank 1" in doc["run"]["abort_reason"]
    assert (tmp_path / "exit.shards" / "rank-00000.json").exists()
    assert doc["cases"][0]["status"] == "ok"  # measured before the failure: kept


def test_a_rank_that_raises_is_named_with_its_error(tmp_path):
    out = tmp_path / "raise.json"
    done, seconds = _torchrun([*TWO_CASES, *FAST, "--out", str(out)], tmp_path, fault="raise:rank=1:case=0")
    assert done.returncode != 0 and seconds < 20
    failed = _read(out)["run"]["failed_rank"]
    assert failed["rank"] == 1 and "injected fault" in failed["why"]


def test_a_hung_rank_is_named_not_its_victims(tmp_path):
    out = tmp_path / "hang.json"
    done, seconds = _torchrun([*TWO_CASES, *FAST, "--hang-timeout", "3", "--out", str(out)], tmp_path, fault="hang:rank=1:case=1")
    assert done.returncode != 0 and seconds < 30, (seconds, done.stderr[-2000:])
    failed = _read(out)["run"]["failed_rank"]
    assert (failed["rank"], failed["kind"]) == (1, "hung"), failed
    assert "rank 1 hung" in done.stderr


def test_merge_rebuilds_a_job_whose_rank_0_was_killed(tmp_path, capsys):
    out = tmp_path / "killed.json"
    done, seconds = _torchrun([*TWO_CASES, *FAST, "--out", str(out)], tmp_path, fault="kill:rank=0:case=1")
    assert done.returncode != 0 and seconds < 20
    assert not out.exists()  # rank 0 wrote nothing at the end: it was killed
    assert main(["merge", str(tmp_path / "killed.shards")]) == 0
    doc = _read(out)
    assert doc["run"]["failed_rank"]["rank"] == 0
    assert [r["rank"] for r in doc["ranks"]] == [0, 1]
    assert doc["cases"][0]["status"] == "ok"


def test_ranks_that_plan_different_runs_stop_with_one_line(cpu):
    """A node whose ranks would plan other cases (another kind of device, other defaults) stops
    every rank before anything runs."""
    from bench.measure import ranks
    from bench.measure.plan import expand

    class Rank1:
        rank = 1

        def broadcast(self, obj):  # rank 0 planned one more case
            return {"kind": "cuda", "cases": [*obj["cases"], ("membw", ())]}

        def agree(self, status, error, what):
            self.said = (status, error)

    job = Rank1()
    cases = expand("membw", {"op": ["triad"], "size": ["64KiB"]}, [cpu])
    with pytest.raises(UsageError, match=r"rank 1 planned 1 case\(s\) on cpu, rank 0 2 on cuda"):
        ranks.check_same_plan(job, cases, cpu)
    assert job.said[0] == "failed"
