"""STREAM comparison: do wattbench's memory probes reach the bandwidth a compiled program reaches?

What is measured: the CPU's main-memory bandwidth (GB/s, decimal) for the five BabelStream
kernels copy, scale, add, triad and dot on float32 arrays of `--size` bytes each (256 MiB by
default, far past the last-level cache), two ways:

* STREAM: benchmarks/stream.c, a small STREAM-like C program compiled here with
  `gcc -O3 -march=native -fopenmp` into benchmarks/build/ and run with OMP_NUM_THREADS = the
  number of usable cores; it reports the best and the median of its timed passes;
* wattbench: the `membw` workload for each op at the same size through the real harness,
  `bench.runner.run_case`, reporting the median throughput over repeats as wattbench does.

Both count bytes the BabelStream way (each array once per element: copy/scale/dot 2 arrays,
add/triad 3), so the two figures are directly comparable.

Why: wattbench's membw kernels are torch calls (copy_, mul, add, dot) timed from Python. The
ratio wattbench / STREAM-median says what share of the machine's attainable bandwidth (as a
plain compiled loop gets it) those calls reach. A ratio well below 1 points at the torch kernel
or its threading rather than at the memory; a ratio above 1 at kernels that move less than
counted (e.g. streaming stores skip the write-allocate read that the C loops pay).

Use sizes well past the last-level cache: near it the two differ by design. STREAM cycles
through its five kernels, so each kernel finds the cache full of other arrays, while wattbench
repeats one kernel on the same two or three arrays, which the cache can then partly hold, so
wattbench's figure there can be far above STREAM's.

On a shared machine the bandwidth a VM gets drifts by tens of percent over minutes, so each
wattbench case is paired with a STREAM run right next to it (which goes first alternates),
`--rounds` times per op (3 by default); the table gives medians over the pairs and the median
of the per-pair ratios ("paired ratio", the steadier figure). The CPU used by other processes
during each run is measured (benchmarks/_load.py): a pair in which others used more than 0.1
CPU is left out, and an op with fewer than half its pairs clean gets up to `--rounds` more.

Run: `.venv/bin/python benchmarks/stream_compare.py [--size 256MiB] [--ntimes 10] [--rounds 3] [--json [PATH]]`.
Exit status: 0 when both ran, 1 when a measurement failed, 2 when gcc is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    import bench  # noqa: F401
except ImportError:  # run as a plain script from a checkout: put the repo root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _load import LoadMeter

import workloads
from bench.measure.hardware import cpu_device, host_info
from bench.measure.plan import expand
from bench.measure.runner import run_case
from bench.measure.timing import TimingConfig
from bench.units import format_bytes, parse_bytes

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "stream.c"
BUILD_DIR = HERE / "build"
BINARY = BUILD_DIR / "stream"
CFLAGS = ("-O3", "-march=native", "-fopenmp")
OPS = ("copy", "scale", "add", "triad", "dot")
ELEMENT_BYTES = 4  # float32
BUSY_OTHERS_CPUS = 0.1
_LINE = re.compile(r"^(\w+) best_GBps=(\S+) median_GBps=(\S+) best_s=(\S+) median_s=(\S+) bytes=(\S+) runs=(\d+)$")


class MeasurementError(RuntimeError):
    pass


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def compile_stream(compiler: str) -> Path:
    """Compile stream.c into benchmarks/build/stream; MeasurementError with gcc's message on failure."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, *CFLAGS, "-o", str(BINARY), str(SOURCE), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MeasurementError(f"compiling stream.c failed ({' '.join(cmd)}):\n{proc.stderr.strip()}")
    return BINARY


def run_stream(binary: Path, elements: int, ntimes: int, threads: int) -> dict[str, dict[str, float]]:
    """Run the compiled STREAM; {op: {best_GBps, median_GBps, best_s, median_s, bytes, runs}}."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([str(binary), str(elements), str(ntimes)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise MeasurementError(f"stream exited {proc.returncode}:\n{(proc.stdout + proc.stderr).strip()}")
    figures: dict[str, dict[str, float]] = {}
    for line in proc.stdout.splitlines():
        match = _LINE.match(line.strip())
        if match:
            op, *values = match.groups()
            keys = ("best_GBps", "median_GBps", "best_s", "median_s", "bytes", "runs")
            figures[op] = {k: float(v) for k, v in zip(keys, values, strict=True)}
    missing = [op for op in OPS if op not in figures]
    if missing or not any(line.startswith("check ok") for line in proc.stdout.splitlines()):
        raise MeasurementError(f"stream output lacks {missing or 'check ok'}:\n{proc.stdout.strip()}")
    return figures


def run_wattbench(op: str, size_bytes: int, timing: TimingConfig) -> dict[str, Any]:
    """The membw case for `op` at `size_bytes` per array through run_case; its result record."""
    device = cpu_device()
    cases = expand("membw", {"op": [op], "size": [size_bytes], "dtype": ["float32"]}, [device])
    if len(cases) != 1:
        raise MeasurementError(f"expected one membw case, got {len(cases)}")
    result = run_case(cases[0], device, timing, workloads.get("membw"))
    if result["status"] != "ok":
        raise MeasurementError(f"wattbench case {cases[0].id} ended {result['status']}: {result['error']}")
    return result


def measure(binary: Path, size_bytes: int, ntimes: int, rounds: int, threads: int, timing: TimingConfig) -> dict[str, Any]:
    """`rounds` rounds; in each, for every op a STREAM run and the wattbench case back to back.

    Each wattbench case is paired with the STREAM run next to it (seconds apart; which goes
    first alternates), so slow drift of the machine's bandwidth falls on both alike. Every run
    records the CPU other processes used meanwhile; a pair in which they used more than
    BUSY_OTHERS_CPUS during either run is "disturbed" and left out. After `rounds` rounds, an op
    with fewer than half its pairs clean gets more rounds, up to `rounds` more.
    """
    elements = size_bytes // ELEMENT_BYTES
    need_clean = math.ceil(rounds / 2)
    pairs: dict[str, list[dict[str, Any]]] = {op: [] for op in OPS}
    flags: dict[str, set[str]] = {op: set() for op in OPS}
    loads: list[dict[str, Any]] = []

    def measured(r: int, what: str, meter: LoadMeter) -> float:
        load = meter.read()
        loads.append(
            {"round": r + 1, "what": what, "wall_s": load.wall_s, "others_cpus": load.others_cpus, "steal_cpus": load.steal_cpus}
        )
        return load.others_cpus

    for r in range(2 * rounds):
        due = [op for op in OPS if r < rounds or sum(p["clean"] for p in pairs[op]) < need_clean]
        if not due:
            break
        if r == rounds:
            print(f"  too few undisturbed pairs for {', '.join(due)}: up to {rounds} more rounds", flush=True)
        for i, op in enumerate(due):
            order = ("stream", "wattbench") if (r + i) % 2 == 0 else ("wattbench", "stream")
            pair: dict[str, Any] = {"round": r + 1, "first": order[0], "others_cpus": 0.0}
            for which in order:
                meter = LoadMeter()
                if which == "stream":
                    figures = run_stream(binary, elements, ntimes, threads)
                    pair["stream_median_GBps"] = figures[op]["median_GBps"]
                    pair["stream_best_GBps"] = figures[op]["best_GBps"]
                else:
                    result = run_wattbench(op, size_bytes, timing)
                    pair["wattbench_GBps"] = result["throughput"]["median"] / 1e9
                    flags[op].update(set(result["flags"]) - {"power_unmeasured"})
                pair["others_cpus"] = max(pair["others_cpus"], measured(r, f"{which} {op}", meter))
            pair["clean"] = pair["others_cpus"] <= BUSY_OTHERS_CPUS
            pair["ratio"] = pair["wattbench_GBps"] / pair["stream_median_GBps"]
            pairs[op].append(pair)
            print(
                f"  round {r + 1:>2} {op:<5} ({order[0]:<9} first): STREAM {pair['stream_median_GBps']:5.1f} GB/s, "
                f"wattbench {pair['wattbench_GBps']:5.1f} GB/s, ratio {pair['ratio']:.3f}, "
                f"others used {pair['others_cpus']:.2f} CPU{'' if pair['clean'] else '  <- disturbed, not counted'}",
                flush=True,
            )

    per_op: dict[str, dict[str, Any]] = {}
    for op in OPS:
        clean = [p for p in pairs[op] if p["clean"]]
        used = clean or pairs[op]
        stream_median = statistics.median(p["stream_median_GBps"] for p in used)
        wattbench_median = statistics.median(p["wattbench_GBps"] for p in used)
        per_op[op] = {
            "stream_median_GBps": stream_median,
            "stream_best_GBps": max(p["stream_best_GBps"] for p in used),
            "wattbench_median_GBps": wattbench_median,
            "ratio_to_stream_median": wattbench_median / stream_median,
            "paired_ratio": statistics.median(p["ratio"] for p in used),
            "pairs_used": f"{len(clean)}/{len(pairs[op])}" if clean else f"all {len(pairs[op])}*",
            "conclusive": bool(clean),
            "wattbench_flags": sorted(flags[op]),
            "pairs": pairs[op],
        }
    return {"ops": per_op, "loads": loads}


def print_table(per_op: dict[str, dict[str, Any]]) -> None:
    header = (
        f"{'op':<6} {'STREAM GB/s median':>19} {'STREAM GB/s best':>17} {'wattbench GB/s median':>22} "
        f"{'ratio wb/STREAM-median':>23} {'paired ratio':>13} {'pairs used':>11}"
    )
    print(header)
    print("-" * len(header))
    for op, d in per_op.items():
        note = f"  ({', '.join(d['wattbench_flags'])})" if d["wattbench_flags"] else ""
        print(
            f"{op:<6} {d['stream_median_GBps']:>19.2f} {d['stream_best_GBps']:>17.2f} {d['wattbench_median_GBps']:>22.2f} "
            f"{d['ratio_to_stream_median']:>23.3f} {d['paired_ratio']:>13.3f} {d['pairs_used']:>11}{note}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256MiB", help="bytes per array, e.g. 256MiB, 1GB (default 256MiB)")
    parser.add_argument(
        "--ntimes", type=int, default=10, help="passes of each kernel per STREAM run, the first not counted (default 10)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternate STREAM and wattbench this many times (default 3)")
    parser.add_argument(
        "--json", nargs="?", const="-", default=None, metavar="PATH", help="also dump the figures as JSON (to PATH, or stdout)"
    )
    args = parser.parse_args(argv)
    try:
        size_bytes = parse_bytes(args.size)
    except ValueError as exc:
        parser.error(f"--size: {exc}")
    if size_bytes <= 0 or size_bytes % ELEMENT_BYTES:
        parser.error(f"--size must be a positive multiple of {ELEMENT_BYTES} bytes (float32), got {size_bytes}")
    if not 2 <= args.ntimes <= 1000:
        parser.error("--ntimes must be between 2 and 1000")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    compiler = shutil.which("gcc")
    if compiler is None:
        print(
            "stream_compare: gcc not found on PATH; it is needed to compile benchmarks/stream.c "
            "(install gcc, e.g. `apt-get install gcc`)",
            file=sys.stderr,
        )
        return 2

    threads = usable_cores()
    timing = TimingConfig(min_time_s=1.0, repeats=10, repeat_time_s=0.1, warmup_cv=0.02, warmup_max_s=2.0)
    host = host_info()
    device = cpu_device()
    llc = format_bytes(device.cache_bytes) if device.cache_bytes else "unknown"
    print(
        f"STREAM comparison: float32, {format_bytes(size_bytes)} per array ({size_bytes // ELEMENT_BYTES} elements), "
        f"last-level cache {llc}"
    )
    print(
        f"CPU {host.cpu_model}: {threads} usable cores; STREAM OMP_NUM_THREADS={threads}, "
        f"torch {host.torch} with {torch.get_num_threads()} threads; STREAM passes {args.ntimes} (first dropped)"
    )
    started_s = time.perf_counter()
    try:
        binary = compile_stream(compiler)
        print(f"compiled {SOURCE.name} -> {binary.relative_to(HERE.parent)} with gcc {' '.join(CFLAGS)}")
        figures = measure(binary, size_bytes, args.ntimes, args.rounds, threads, timing)
    except MeasurementError as exc:
        print(f"stream_compare: {exc}", file=sys.stderr)
        return 1
    elapsed_s = time.perf_counter() - started_s

    per_op = figures["ops"]
    print()
    print_table(per_op)
    conclusive = all(d["conclusive"] for d in per_op.values())
    print("GB/s = 1e9 bytes/s, bytes counted as BabelStream counts them. STREAM median: median over pairs of each run's")
    print("median pass; STREAM best: fastest single pass; wattbench: median over pairs of run_case's median;")
    print("paired ratio: median over pairs of wattbench / STREAM-median, the two measured seconds apart;")
    print(
        f"pairs in which other processes used more than {BUSY_OTHERS_CPUS} CPU are not used"
        + ("" if conclusive else " (* all were disturbed: all used)")
    )
    ratios = {op: d["ratio_to_stream_median"] for op, d in per_op.items()}
    low, high = min(ratios, key=ratios.get), max(ratios, key=ratios.get)
    print(
        f"summary: wattbench membw reaches {ratios[low]:.2f}x ({low}) to {ratios[high]:.2f}x ({high}) of compiled STREAM's "
        f"median bandwidth, median over ops {statistics.median(ratios.values()):.2f}x, at {format_bytes(size_bytes)} per array "
        f"on {threads} cores{'' if conclusive else ' (INCONCLUSIVE: the machine was busy)'} ({elapsed_s:.0f} s)"
    )

    if args.json is not None:
        doc = {
            "benchmark": "stream_compare",
            "size_bytes": size_bytes,
            "ntimes": args.ntimes,
            "rounds": args.rounds,
            "threads": threads,
            "torch_threads": torch.get_num_threads(),
            "cflags": list(CFLAGS),
            "timing": {k: getattr(timing, k) for k in ("min_time_s", "repeats", "repeat_time_s", "warmup_cv", "warmup_max_s")},
            "host": host.to_dict(),
            **figures,
            "elapsed_s": elapsed_s,
        }
        text = json.dumps(doc, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
