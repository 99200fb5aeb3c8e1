"""`wattbench launch` and `wattbench slurm-template`: helpers that only wrap torchrun."""

import json
import os
import shlex
import subprocess
import sys

import pytest
from torch.distributed.run import get_args_parser

from bench import launch
from bench.cli import main
from tests.test_reading_side import _loaded

RUN = ["run", "membw", "-p", "op=triad", "-p", "size=1MiB"]


def test_dry_run_prints_the_torchrun_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["launch", "-n", "2", "--dry-run", "--", *RUN])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    argv = shlex.split(captured.out)
    assert argv == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "0",
        "--log-dir",
        "results/logs",
        "--redirects",
        "3",
        "--tee",
        "3",
        "-m",
        "bench",
        *RUN,
    ]
    assert not (tmp_path / "results").exists(), "a dry run creates nothing"
    # every option is one this torch's torchrun knows, and the script is `-m bench` with the run args
    parsed = get_args_parser().parse_args(argv[3:])
    assert (parsed.standalone, parsed.nproc_per_node, parsed.max_restarts, parsed.redirects, parsed.tee) == (
        True,
        "2",
        0,
        "3",
        "3",
    )
    assert (parsed.module, parsed.training_script, parsed.training_script_args) == (True, "bench", RUN)


def test_launch_execs_torchrun_and_says_where_the_logs_are(tmp_path, capsys, monkeypatch):
    called = []

    class Execed(Exception):
        pass

    def fake_execv(path, argv):
        called.append((path, argv))
        raise Execed

    monkeypatch.setattr(os, "execv", fake_execv)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    logs = tmp_path / "logs"
    with pytest.raises(Execed):
        main(["launch", "-n", "3", "--log-dir", str(logs), "--", "run", "quick"])
    ((path, argv),) = called
    assert path == sys.executable and argv == launch.torchrun_argv(3, str(logs), ["run", "quick"])
    assert logs.is_dir()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{logs}/<job id>_*/attempt_0/<local rank>/stdout.log and stderr.log" in line


def test_launch_under_torchrun_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert main(["launch", "-n", "2", "--", "run"]) == 2
    assert "already running under torchrun" in capsys.readouterr().err


BAD = {
    "-n 0": (["launch", "-n", "0", "--", "run"], "argument -n/--nproc-per-node: '0' must be at least 1"),
    "-n -2": (["launch", "-n", "-2", "--", "run"], "'-2' must be at least 1"),
    "-n not a number": (["launch", "-n", "two", "--", "run"], "'two' is not a whole number"),
    "-n missing": (["launch", "--", "run"], "the following arguments are required: -n"),
    "launch without run": (["launch", "-n", "2", "--", "report", "x.json"], "launch wraps only `wattbench run`: give `-- run"),
    "launch with nothing": (["launch", "-n", "2"], "(got nothing)"),
    "slurm --nodes 0": (["slurm-template", "--nodes", "0"], "argument --nodes: '0' must be at least 1"),
    "slurm --gpus-per-node 0": (["slurm-template", "--gpus-per-node", "0"], "argument --gpus-per-node: '0' must be at least 1"),
    "slurm bad time": (["slurm-template", "--time", "1h"], "--time '1h' is not a Slurm time; valid: HH:MM:SS"),
    "slurm bad partition": (["slurm-template", "--partition", "gpu; rm -rf ~"], "is not a partition name"),
    "slurm without run": (["slurm-template", "--", "list"], "slurm-template wraps only `wattbench run`"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_exits_2_with_one_line(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, expected = BAD[name]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("wattbench: error: ") and expected in line, line
    assert captured.out == "" and "Traceback" not in captured.err
    assert not (tmp_path / "results").exists()


def _script(capsys, *args):
    assert main(["slurm-template", *args]) == 0
    return capsys.readouterr().out


def _run_script(script, tmp_path):
    """Run the script with stand-ins for scontrol and srun (srun prints its argv as JSON), as
    Slurm would on a 2-node job 4242; returns the argv srun got."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && printf "gpu-a17\\ngpu-b03\\n"\n')
    (bin_dir / "srun").write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "gpu-a17,gpu-b03",
    }
    done = subprocess.run(["bash", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "results" / "4242").is_dir()
    return json.loads(done.stdout)


def test_slurm_template_defaults(capsys, tmp_path):
    script = _script(capsys)
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    for line in (
        "#!/bin/bash",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH --time=01:00:00",
        "#SBATCH --output=wattbench-%j.out",
        "set -euo pipefail",
        'results="results/$SLURM_JOB_ID"',
        "    --rdzv-backend c10d \\",
        '    --rdzv-id "$SLURM_JOB_ID" \\',
        "    --nproc-per-node 8 \\",
        '    --nnodes "$SLURM_NNODES" \\',
        '    -m bench run standard --out "$results"',
    ):
        assert line in script.splitlines(), line
    assert "--partition" not in script
    assert "must be installed on every node" in script.replace("\n# ", " ")
    argv = _run_script(script, tmp_path)
    assert argv == [
        "torchrun",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "8",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "gpu-a17:29500",
        "--rdzv-id",
        "4242",
        "--max-restarts",
        "0",
        "-m",
        "bench",
        "run",
        "standard",
        "--out",
        "results/4242",
    ]
    parsed = get_args_parser().parse_args(argv[1:])  # options this torch's torchrun knows
    assert (parsed.rdzv_backend, parsed.rdzv_id, parsed.nnodes, parsed.module) == ("c10d", "4242", "2", True)


def test_slurm_template_with_options_and_run_args(capsys, tmp_path):
    script = _script(
        capsys,
        "--nodes",
        "4",
        "--gpus-per-node",
        "2",
        "--time",
        "0-02:30:00",
        "--partition",
        "gpu",
        "--",
        "run",
        "matmul",
        "-p",
        "size=4096,8192",
        "--nominal-watts",
        "300",
        "--device",
        "cuda",
    )
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    lines = script.splitlines()
    for line in (
        "#SBATCH --nodes=4",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=0-02:30:00",
        "#SBATCH --partition=gpu",
        "    --nproc-per-node 2 \\",
    ):
        assert line in lines, line
    argv = _run_script(script, tmp_path)
    assert argv[-11:] == [
        "bench",
        "run",
        "matmul",
        "-p",
        "size=4096,8192",
        "--nominal-watts",
        "300",
        "--device",
        "cuda",
        "--out",
        "results/4242",
    ]
    # the user's own --out wins
    script = _script(capsys, "--", "run", "quick", "--out", "elsewhere/")
    assert script.splitlines()[-1].endswith("-m bench run quick --out elsewhere/")


@pytest.mark.parametrize("args", [["launch", "-n", "2", "--dry-run", "--", "run"], ["launch", "--help"], ["slurm-template"]])
def test_helpers_never_import_torch(args):
    code, loaded = _loaded(*args)
    assert code == 0
    assert loaded == "", f"`wattbench {' '.join(args)}` imported {loaded}"


def test_real_launch_of_two_cpu_ranks(tmp_path):
    out = tmp_path / "out.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "launch",
            "-n",
            "2",
            "--log-dir",
            str(tmp_path),
            "--",
            "run",
            "membw",
            "-p",
            "op=triad",
            "-p",
            "size=1MiB",
            "--device",
            "cpu",
            "--min-time",
            "0",
            "--repeats",
            "1",
            "--repeat-time",
            "0.001",
            "--no-monitor",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["schema"] == "wattbench.run/2"
    assert [r["rank"] for r in doc["ranks"]] == [0, 1]
    assert [c["status"] for c in doc["cases"]] == ["ok"]
    for rank in ("0", "1"):
        for stream in ("stdout.log", "stderr.log"):
            (log,) = tmp_path.glob(f"*_*/attempt_0/{rank}/{stream}")
            assert log.is_file()
    assert any("wattbench:" in p.read_text() for p in tmp_path.glob("*_*/attempt_0/0/stderr.log"))


GLOO_REFUSED = (
    "[../third_party/gloo/gloo/transport/tcp/pair.cc:144] connectFullMesh failed with "
    "[../third_party/gloo/gloo/transport/tcp/pair.cc:144] Connection refused"
)


def _loopback_host(monkeypatch, address="127.0.1.1"):
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "node7")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: address)
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)


def test_a_gloo_group_refused_on_a_loopback_host_name_says_why_in_one_line(monkeypatch):
    """A multi-node job whose host names resolve to loopback: gloo's connectFullMesh is refused
    (NCCL would have worked). The job stops with a UsageError naming the host, its address and
    GLOO_SOCKET_IFNAME, not gloo's stack."""
    import torch.distributed as dist

    from bench.errors import UsageError
    from bench.measure.distributed import Job, RankInfo

    _loopback_host(monkeypatch)

    def refused(*args, **kwargs):
        raise RuntimeError(GLOO_REFUSED + "\n(more gloo lines)")

    monkeypatch.setattr(dist, "init_process_group", refused)
    job = Job(RankInfo(rank=1, local_rank=0, world_size=2, local_world_size=1, node_rank=1, nodes=2), "gloo")
    with pytest.raises(UsageError) as caught:
        job.start()
    message = str(caught.value)
    assert "\n" not in message
    assert "node7 resolves to 127.0.1.1, a loopback address" in message
    assert "GLOO_SOCKET_IFNAME" in message and "connectFullMesh" in message


def test_the_loopback_warning_comes_before_a_multi_node_job_only(monkeypatch):
    from bench.measure.groups import RankInfo, gloo_connect_error, loopback_warning

    _loopback_host(monkeypatch)
    two_nodes = RankInfo(rank=0, local_rank=0, world_size=2, local_world_size=1, node_rank=0, nodes=2)
    one_node = RankInfo(rank=0, local_rank=0, world_size=2, local_world_size=2, node_rank=0, nodes=1)
    assert "node7 resolves to 127.0.1.1 (loopback)" in loopback_warning(two_nodes, {})
    assert loopback_warning(one_node, {}) is None  # one machine: loopback is where the ranks are
    assert loopback_warning(two_nodes, {"GLOO_SOCKET_IFNAME": "eth0"}) is None
    assert gloo_connect_error(RuntimeError("CUDA error: out of memory")) is None
    set_already = gloo_connect_error(RuntimeError(GLOO_REFUSED), {"GLOO_SOCKET_IFNAME": "eth9"})
    assert "GLOO_SOCKET_IFNAME=eth9 is set" in set_already


def test_slurm_template_exports_the_socket_interface(capsys, tmp_path):
    assert main(["slurm-template", "--socket-ifname", "ib0"]) == 0
    script = capsys.readouterr().out
    assert "\nexport GLOO_SOCKET_IFNAME=ib0\n" in script
    script_path = tmp_path / "job.sbatch"
    script_path.write_text(script)
    assert subprocess.run(["bash", "-n", str(script_path)]).returncode == 0
    assert main(["slurm-template"]) == 0
    assert "\n# export GLOO_SOCKET_IFNAME=eth0\n" in capsys.readouterr().out  # said, commented, without the flag
    assert main(["slurm-template", "--socket-ifname", "eth0; rm -rf /"]) == 2
    assert "--socket-ifname 'eth0; rm -rf /' is not an interface name" in capsys.readouterr().err


def test_slurm_template_for_a_fleet_runs_every_node_then_ingests_and_reports(capsys, tmp_path):
    """--fleet: one job of N nodes, each a standalone torchrun of the acceptance suite (one rank
    per GPU), then the job's files ingested into the store and the fleet report as a gate. Run with
    stand-ins for srun (prints its argv) and for the Python (records each call)."""
    script = _script(capsys, "--fleet", "--nodes", "64", "--gpus-per-node", "8", "--store", "/data/fleet")
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    for line in (
        "#SBATCH --nodes=64",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "srun --kill-on-bad-exit=0 \\",
    ):
        assert line in script.splitlines(), line
    calls = tmp_path / "calls.txt"
    python = tmp_path / "python-stand-in"
    python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    python.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    (bin_dir / "srun").chmod(0o755)
    (tmp_path / "job.sbatch").write_text(script)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "777", "PYTHON": str(python)}
    done = subprocess.run(
        ["bash", str(tmp_path / "job.sbatch")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    srun = json.loads(done.stdout)
    assert srun[:6] == ["--kill-on-bad-exit=0", str(python), "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    assert srun[srun.index("bench") + 1 :] == ["run", "acceptance", "--out", "results/fleet-777"]
    assert calls.read_text().splitlines() == [
        "-m bench ingest results/fleet-777 --store /data/fleet",
        "-m bench fleet results/fleet-777 --fail-on-outliers",
    ]
    assert (tmp_path / "results" / "fleet-777").is_dir()
    assert main(["slurm-template", "--store", "/data/fleet"]) == 2
    assert "valid: with --fleet" in capsys.readouterr().err
