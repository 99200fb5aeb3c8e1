"""Launch helpers that only wrap torchrun, the engine every torch user already has.

`wattbench launch -n N -- run ...` execs `python -m torch.distributed.run --standalone` on this
machine with per-rank log files; `wattbench slurm-template` prints an sbatch script that starts one
torchrun agent per node with the c10d rendezvous. Neither imports torch (they only build command
lines), so `--help` and `--dry-run` start like command-line tools.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import sys
from collections.abc import Sequence

from bench.errors import UsageError

DEFAULT_LOG_DIR = "results/logs"
RDZV_PORT = 29500
CPUS_PER_GPU = 4

# Slurm's --time forms: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds.
_SLURM_TIME = re.compile(r"\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}")
_SLURM_PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")


def run_args(rest: Sequence[str], command: str) -> list[str]:
    """The wattbench arguments after `--`, which must start with `run` (launch wraps only `run`)."""
    rest = list(rest[1:] if rest[:1] == ["--"] else rest)
    if not rest or rest[0] != "run":
        got = f"got {rest[0]!r}" if rest else "got nothing"
        raise UsageError(f"{command} wraps only `wattbench run`: give `-- run [TARGET ...] [OPTIONS]` ({got})")
    return rest


def torchrun_argv(nproc: int, log_dir: str, args: Sequence[str]) -> list[str]:
    """The torchrun command of `wattbench launch`: standalone rendezvous on this machine, no
    restarts (a failed rank ends the job), every rank's stdout and stderr in a log file and on the
    console (--redirects 3 --tee 3: both streams of every local rank)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "--max-restarts",
        "0",
        "--log-dir",
        log_dir,
        "--redirects",
        "3",
        "--tee",
        "3",
        "-m",
        "bench",
        *args,
    ]


def cmd_launch(args: argparse.Namespace) -> int:
    """Exec torchrun (os.execv: its signals and exit code are the command's), or print the
    command with --dry-run."""
    argv = torchrun_argv(args.nproc, args.log_dir, run_args(args.cmd, "launch"))
    if args.dry_run:
        print(shlex.join(argv))
        return 0
    if "TORCHELASTIC_RUN_ID" in os.environ:
        raise UsageError("already running under torchrun: use `wattbench run` here, not `wattbench launch`")
    if importlib.util.find_spec("torch") is None:  # finds the package without importing it
        raise UsageError(f"launch needs torch in this Python ({sys.executable}): pip install torch")
    try:
        os.makedirs(args.log_dir, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--log-dir {args.log_dir!r}: cannot create it: {exc.strerror}") from None
    where = os.path.join(args.log_dir, "<job id>_*", "attempt_0", "<local rank>")
    sys.stderr.write(f"wattbench: {args.nproc} rank(s) through torchrun; per-rank logs: {where}/stdout.log and stderr.log\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
    raise AssertionError("os.execv returned")  # pragma: no cover


_IFNAME = re.compile(r"[A-Za-z0-9_.:@^-]+(,[A-Za-z0-9_.:@^-]+)*")


def _run_line(args: Sequence[str], default: list[str]) -> str:
    """The `wattbench` arguments a job runs (`default` where none were given), with the job's
    results folder as --out unless they name one."""
    run = list(args) if args else default
    line = shlex.join(run)
    if not any(a == "--out" or a.startswith("--out=") for a in run):
        line += ' --out "$results"'
    return line


def _sbatch_header(
    title: list[str], nodes: int, gpus_per_node: int, time: str, partition: str | None, cpus_per_task: int | None
) -> list[str]:
    """A job script's first lines: `title` (its last line continued with where wattbench must be
    installed), how to submit, and the #SBATCH resources (nodes, one task per node, GPUs, CPUs,
    time, partition, --exclusive offered), up to the job's own --output line. UsageError for a time
    or partition Slurm would refuse."""
    if not _SLURM_TIME.fullmatch(time):
        raise UsageError(f"--time {time!r} is not a Slurm time; valid: HH:MM:SS, MM, MM:SS, D-HH, D-HH:MM or D-HH:MM:SS")
    if partition is not None and not _SLURM_PARTITION.fullmatch(partition):
        raise UsageError(f"--partition {partition!r} is not a partition name; valid: letters, digits, _ . - (a list with commas)")
    cpus = cpus_per_task or CPUS_PER_GPU * gpus_per_node
    lines = [
        "#!/bin/bash",
        *title[:-1],
        f"{title[-1]} wattbench and torch must be installed on every node, in the Python",
        "# that `torchrun` runs (activate its environment before sbatch, or below). Submit: sbatch FILE",
        "#",
        "# Nodes in the job:",
        f"#SBATCH --nodes={nodes}",
        "# One task per node: the torchrun agent, which starts that node's ranks itself:",
        "#SBATCH --ntasks-per-node=1",
        "# GPUs per node; each rank binds to one (LOCAL_RANK):",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"# CPU cores for the agent and its ranks ({CPUS_PER_GPU} per GPU unless --cpus-per-task was given):",
        f"#SBATCH --cpus-per-task={cpus}",
        "# Wall-clock limit of the job:",
        f"#SBATCH --time={time}",
    ]
    if partition:
        lines += ["# Partition (queue):", f"#SBATCH --partition={partition}"]
    return [
        *lines,
        "# Whole nodes, so no other job's load is in the power figures: remove one '#' below.",
        "##SBATCH --exclusive",
        "# Console output of every node, %j = the job id:",
    ]


def slurm_script(
    nodes: int,
    gpus_per_node: int,
    time: str,
    partition: str | None,
    cpus_per_task: int | None,
    args: Sequence[str],
    socket_ifname: str | None = None,
) -> str:
    """An sbatch script: one torchrun agent per node (srun, --ntasks-per-node=1), each starting
    one rank per GPU, meeting at a c10d rendezvous on the job's first node, named by the job id."""
    title = [
        f"# wattbench on {nodes} node(s) x {gpus_per_node} GPU(s): one torchrun agent per node starts one rank per GPU,",
        f"# {nodes * gpus_per_node} ranks in all.",
    ]
    header = _sbatch_header(title, nodes, gpus_per_node, time, partition, cpus_per_task)
    if socket_ifname is not None and not _IFNAME.fullmatch(socket_ifname):
        raise UsageError(f"--socket-ifname {socket_ifname!r} is not an interface name; valid: e.g. eth0, ib0 or a list eth0,eth1")
    run_line = _run_line(args, ["run", "standard"])
    lines = [
        *header,
        "#SBATCH --output=wattbench-%j.out",
        "#SBATCH --job-name=wattbench",
        "",
        "# Stop at the first failing command, an unset variable or a failing pipe stage.",
        "set -euo pipefail",
        "",
        "# The run file (rank 0 writes it) and every rank's shard go to a folder of their own.",
        'results="results/$SLURM_JOB_ID"',
        'mkdir -p "$results"',
        "",
        "# The harness's own gloo group connects the nodes on the address each host name resolves to;",
        "# where that is loopback (containers, host networking, Debian's default /etc/hosts) it fails",
        "# with 'connectFullMesh ... Connection refused'. Name the interface the nodes share:",
        f"export GLOO_SOCKET_IFNAME={shlex.quote(socket_ifname)}" if socket_ifname else "# export GLOO_SOCKET_IFNAME=eth0",
        "",
        "# The rendezvous runs on the job's first node (awk, not head -n 1, reads the whole list,",
        "# so a long one cannot fail the pipe with SIGPIPE).",
        "head_node=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | awk 'NR == 1')",
        "",
        "# One torchrun per node (srun starts --ntasks-per-node=1 of them); they meet at the c10d",
        "# rendezvous on the first node, named by the job id, and start one rank per GPU each. No",
        "# restarts: a failed rank ends the job, and the run file names it.",
        "srun torchrun \\",
        '    --nnodes "$SLURM_NNODES" \\',
        f"    --nproc-per-node {gpus_per_node} \\",
        "    --rdzv-backend c10d \\",
        f'    --rdzv-endpoint "$head_node:{RDZV_PORT}" \\',
        '    --rdzv-id "$SLURM_JOB_ID" \\',
        "    --max-restarts 0 \\",
        f"    -m bench {run_line}",
        "",
    ]
    return "\n".join(lines)


def fleet_script(
    nodes: int,
    gpus_per_node: int,
    time: str,
    partition: str | None,
    cpus_per_task: int | None,
    args: Sequence[str],
    store: str,
) -> str:
    """An sbatch script for a fleet's acceptance: one job of `nodes` nodes in which every node
    runs on its own (a standalone torchrun, one rank per GPU: a node's GPUs are compared with the
    fleet's, not with each other's timing), each node writing its run file to the job's folder;
    then the batch step ingests them into the store and prints the fleet report.

    One job rather than a job array: the report needs every node's file, and in one job it is the
    step after `srun` returns, where an array would need a second job depending on the first. A
    node that fails does not stop the others (--kill-on-bad-exit=0); its file, if it wrote one,
    is ingested as it is, and a node without one is missing from the report."""
    title = [
        f"# wattbench fleet acceptance on {nodes} node(s) x {gpus_per_node} GPU(s): every node runs on its own (a",
        f"# standalone torchrun, one rank per GPU), then the fleet report compares its {nodes * gpus_per_node} GPUs.",
        "#",
    ]
    run_line = _run_line(args, ["run", "acceptance"])
    lines = [
        *_sbatch_header(title, nodes, gpus_per_node, time, partition, cpus_per_task),
        "#SBATCH --output=wattbench-fleet-%j.out",
        "#SBATCH --job-name=wattbench-fleet",
        "",
        "set -euo pipefail",
        "",
        "# The Python that has wattbench (and torch) on every node; override with PYTHON=... sbatch FILE.",
        'python="${PYTHON:-python3}"',
        "# This job's run files (one per node: rank 0 of each writes it) and the store they join.",
        'results="results/fleet-$SLURM_JOB_ID"',
        f'store="${{WATTBENCH_STORE:-{store}}}"',
        'mkdir -p "$results"',
        "",
        "# Every node on its own: one task per node, a standalone torchrun with one rank per GPU. A",
        "# failing node does not stop the others.",
        "srun --kill-on-bad-exit=0 \\",
        f'    "$python" -m torch.distributed.run --standalone --nproc-per-node {gpus_per_node} --max-restarts 0 \\',
        f"    -m bench {run_line} \\",
        '    || echo "wattbench: some nodes failed; the files they wrote are ingested as they are" >&2',
        "",
        "# The fleet: this job's files into the store (its history of every GPU by serial), then",
        "# every GPU of this job against its siblings; exit 1 when anything is named.",
        '"$python" -m bench ingest "$results" --store "$store"',
        '"$python" -m bench fleet "$results" --fail-on-outliers',
        "",
    ]
    return "\n".join(lines)


def cmd_slurm_template(args: argparse.Namespace) -> int:
    rest = run_args(args.cmd, "slurm-template") if args.cmd and args.cmd != ["--"] else []
    if args.fleet:
        sys.stdout.write(
            fleet_script(args.nodes, args.gpus_per_node, args.time, args.partition, args.cpus_per_task, rest, args.store)
        )
        return 0
    if args.store != DEFAULT_STORE:
        raise UsageError("--store names the fleet's results store; valid: with --fleet")
    sys.stdout.write(
        slurm_script(args.nodes, args.gpus_per_node, args.time, args.partition, args.cpus_per_task, rest, args.socket_ifname)
    )
    return 0


DEFAULT_STORE = "results/fleet-store"
