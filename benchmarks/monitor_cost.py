"""Monitor cost: how much CPU does `wattbench monitor -- CMD` burn while the command sleeps?

What is measured: the CPU time of the process `python -m bench monitor -- CMD` where CMD sleeps S
seconds, minus that of the same with CMD sleeping 0 s run just before it, as a percentage of one
core over the extra wall time (about S seconds). The difference removes start-up (imports,
device discovery, printing), leaving what following the command costs while it runs. Several
pairs are run back to back and the median quoted; CPU used by other processes meanwhile is shown.

Two clocks, both shown. The target is judged on the exact one: the scheduler's own count of the
nanoseconds each of the monitor's threads ran (`/proc/PID/task/*/schedstat`, read by CMD itself
just before it exits, so the monitor's sampler is still running). The other is what rusage
(`os.wait4`, /usr/bin/time) says, which on a kernel with tick-based CPU accounting
(CONFIG_TICK_CPU_ACCOUNTING, as on the CI VM: HZ=250) charges a whole 4 ms tick to a thread that
happens to run when a tick fires: a sampler that wakes for 50 us twenty times a second is charged
several times its real cost, and even a plain `python -c "time.sleep(10)"` shows 0.3-0.5% of a
core that way.

This is done twice: on the machine as it is, and with `--procs` (default 1,000) idle unrelated
processes (`sleep`) started by this script, which are not descendants of the monitored command:
following the command's process tree must not cost more because the machine has more processes.
Target: at most 1% of one core in both.

Also: the peak memory `wattbench monitor --json` reports for a command that allocates and touches
500 MB (`bytearray(500_000_000)`, a write to every 4096th byte, then a 0.5 s sleep). Target:
within 5% of 500 MB (the interpreter itself adds about 10 MB).

`--root DIR` measures another checkout (a copy of an older `bench/` package, for example), so the
figures before and after a change can be compared.

Run: `.venv/bin/python benchmarks/monitor_cost.py [--pairs 3] [--seconds 10] [--procs 1000] [--root DIR]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import LoadMeter

TARGET_CORE_PCT = 1.0
TARGET_PEAK_REL = 0.05
ALLOC_BYTES = 500_000_000
ALLOC = f"import time\nb = bytearray({ALLOC_BYTES})\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(0.5)\n"


def _monitor(root: Path, command: list[str]) -> tuple[float, float, str]:
    """Run `python -m bench monitor --json -- command` from `root`: (CPU seconds by rusage,
    wall seconds, stdout). rusage counts the monitor and its waited-for descendants."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "monitor", "--json", "--", *command],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.stdout:
        proc.stdout.close()
    if proc.returncode != 0:
        raise RuntimeError(f"monitor of {command} exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime, wall, out


def _sleep_and_report(seconds: float, path: Path) -> list[str]:
    """A command that sleeps, then writes its parent's (the monitor's) per-thread scheduler
    runtimes to `path`: the monitor is still sampling when they are read."""
    return ["sh", "-c", f"sleep {seconds:g}; cat /proc/$PPID/task/*/schedstat > {path}"]


def _runtime_s(path: Path) -> float:
    """Seconds on a CPU, summed over the threads listed in a schedstat dump (field 1: ns)."""
    return sum(int(line.split()[0]) for line in path.read_text().splitlines() if line.strip()) * 1e-9


def _cost_pct(root: Path, seconds: float) -> tuple[float, float, float, float]:
    """One pair: (% of one core exactly, its CPU seconds, % of one core by rusage, CPU used by
    others meanwhile)."""
    meter = LoadMeter()
    with tempfile.TemporaryDirectory() as tmp:
        short, long = Path(tmp) / "short", Path(tmp) / "long"
        cpu0, wall0, _ = _monitor(root, _sleep_and_report(0, short))
        cpu1, wall1, _ = _monitor(root, _sleep_and_report(seconds, long))
        exact = _runtime_s(long) - _runtime_s(short)
    extra_wall = wall1 - wall0
    return 100.0 * exact / extra_wall, exact, 100.0 * (cpu1 - cpu0) / extra_wall, meter.read().others_cpus


WAKER = (
    "import threading, time\n"
    "stop = threading.Event()\n"
    "t = threading.Thread(target=lambda: [None for _ in iter(lambda: stop.wait({period}), True)])\n"
    "t.start(); time.sleep({seconds}); v = open(f'/proc/self/task/{{t.native_id}}/schedstat').read()\n"
    "stop.set(); t.join(); print(int(v.split()[0]))\n"
)


def floor_pct(seconds: float, period_s: float) -> float:
    """% of one core charged to a Python thread that does nothing but wake every `period_s`:
    what this machine charges for waking at all (on a VM, far more than the wake-up's work)."""
    done = subprocess.run(
        [sys.executable, "-c", WAKER.format(period=period_s, seconds=seconds)], capture_output=True, text=True, check=True
    )
    return 100.0 * int(done.stdout) * 1e-9 / seconds


def _series(label: str, root: Path, seconds: float, pairs: int) -> float:
    pcts, ticks = [], []
    for i in range(pairs):
        pct, exact, tick_pct, others = _cost_pct(root, seconds)
        pcts.append(pct)
        ticks.append(tick_pct)
        print(
            f"  {label} pair {i + 1}: {pct:5.2f}% of one core ({exact * 1e3:6.1f} ms on a CPU over ~{seconds:g} s; "
            f"rusage says {tick_pct:.2f}%)  others {others:.2f} CPU",
            flush=True,
        )
    median = statistics.median(pcts)
    print(
        f"{label}: median {median:.2f}% of one core (target <= {TARGET_CORE_PCT}%; rusage, tick-sampled, "
        f"median {statistics.median(ticks):.2f}%)",
        flush=True,
    )
    return median


def _idle_processes(n: int) -> list[subprocess.Popen]:
    procs = []
    for _ in range(n):
        procs.append(
            subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except OSError:
            pass
    for p in procs:
        p.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="back-to-back (sleep 0, sleep S) pairs per condition")
    parser.add_argument("--seconds", type=float, default=10.0, help="S: how long the monitored command sleeps")
    parser.add_argument("--procs", type=int, default=1000, help="idle unrelated processes in the second condition")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="checkout whose `bench` package is measured (default: this one)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    root = args.root.resolve()

    print(
        f"measuring {root}/bench; {len(os.listdir('/proc')) if os.path.isdir('/proc') else '?'} /proc entries; "
        f"{args.pairs} pairs of `monitor -- sleep 0` / `monitor -- sleep {args.seconds:g}`",
        flush=True,
    )
    from bench.monitor.process import TREE_SAMPLE_PERIOD_S

    floor = statistics.median(floor_pct(args.seconds, TREE_SAMPLE_PERIOD_S) for _ in range(args.pairs))
    print(
        f"floor: a Python thread doing nothing but wake every {TREE_SAMPLE_PERIOD_S:g} s (the monitor's rate with no "
        f"power source) is charged {floor:.2f}% of one core here",
        flush=True,
    )
    quiet = _series("as is", root, args.seconds, args.pairs)
    procs = _idle_processes(args.procs)
    try:
        crowded = _series(f"with {args.procs} idle processes", root, args.seconds, args.pairs)
    finally:
        _stop(procs)

    _, _, out = _monitor(root, [sys.executable, "-c", ALLOC])
    peak = json.loads(out)["peak_memory_bytes"] or 0
    rel = peak / ALLOC_BYTES - 1
    print(
        f"peak memory of a command touching {ALLOC_BYTES / 1e6:.0f} MB: {peak / 1e6:.1f} MB ({100 * rel:+.1f}%,"
        f" target within {100 * TARGET_PEAK_REL:.0f}%)"
    )

    ok = quiet <= TARGET_CORE_PCT and crowded <= TARGET_CORE_PCT and abs(rel) <= TARGET_PEAK_REL
    print(
        f"monitor cost: {quiet:.2f}% of one core, {crowded:.2f}% with {args.procs} idle processes; "
        f"peak {peak / 1e6:.1f} MB: {'PASS' if ok else 'FAIL'}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "core_pct": quiet,
                    "core_pct_crowded": crowded,
                    "procs": args.procs,
                    "seconds": args.seconds,
                    "peak_bytes": peak,
                },
                indent=1,
            )
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
