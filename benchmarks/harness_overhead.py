"""Harness overhead: does wattbench measure the hardware, or itself?

What is measured: the CPU throughput (FLOP/s, FLOP = 2*m*n*k) of a 2048 x 2048 x 2048 matrix
multiply in float32 and in bfloat16, two ways:

* wattbench: the `matmul` workload run through the real harness, `bench.runner.run_case`
  (workload set-up, verification, calibration, warm-up, timed repeats), reporting the median
  throughput over repeats as wattbench does;
* bare: the very same torch call, `torch.matmul(a, b, out=c)` on randn inputs converted to the
  dtype, in a plain Python loop timed with `time.perf_counter_ns` (a loop of N iterations per
  repeat, N chosen so a repeat lasts about `repeat_time_s`, after a warm-up; median over repeats).

Why: the ratio wattbench / bare is the share of the hardware's throughput that the harness
reports. Anything the harness adds per iteration (method dispatch, input rotation, bookkeeping)
or gets wrong (timing the wrong region, mis-counting work) shows up as a ratio away from 1. The
target is ratio >= 0.97.

The two are interleaved over several rounds (6 by default), and the median over rounds is
reported, so that drift on a noisy machine (other tenants, clock changes) falls on both alike
rather than on whichever ran second. Which runs first alternates each round, and the default is
even, so that an advantage of running first or second cancels. Besides the ratio of the medians, the median
of the per-round ratios ("paired ratio") is shown: each pair ran seconds apart, so it is the
steadier figure when the machine's speed changes between rounds. Each measurement also records
how much CPU other processes used meanwhile (benchmarks/_load.py); on a 2-core machine one
busy neighbour halves the throughput. A round in which others used more than 0.1 CPU during
either measurement is marked disturbed and left out of the medians; if fewer than half the
rounds of a dtype are clean it gets up to `--rounds` more, and if none is clean all are used
and the verdict is marked inconclusive.

Run: `.venv/bin/python benchmarks/harness_overhead.py [--rounds 6] [--json [PATH]]`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
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

SIZE = 2048
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TARGET_RATIO = 0.97
BUSY_OTHERS_CPUS = 0.1  # others using more than a tenth of a core make the figures suspect
SEED = 1234


def flop_per_iter(m: int, n: int, k: int) -> float:
    return 2.0 * m * n * k


def wattbench_flops(dtype_name: str, timing: TimingConfig) -> tuple[float, dict[str, Any]]:
    """Median FLOP/s of matmul size=SIZE in `dtype_name` as wattbench reports it, and the result."""
    device = cpu_device()
    cases = expand("matmul", {"size": [SIZE], "dtype": [dtype_name]}, [device])
    if len(cases) != 1:
        raise RuntimeError(f"expected one case, got {len(cases)}")
    result = run_case(cases[0], device, timing, workloads.get("matmul"))
    if result["status"] != "ok":
        raise RuntimeError(f"wattbench case {cases[0].id} ended {result['status']}: {result['error']}")
    return float(result["throughput"]["median"]), result


def _time_loop_s(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, iterations: int) -> float:
    """Seconds taken by `iterations` back-to-back matmuls, read with perf_counter_ns."""
    start_ns = time.perf_counter_ns()
    for _ in range(iterations):
        torch.matmul(a, b, out=c)
    return (time.perf_counter_ns() - start_ns) * 1e-9


def bare_flops(dtype_name: str, timing: TimingConfig) -> tuple[float, dict[str, Any]]:
    """Median FLOP/s of a bare torch.matmul loop, timed the way the harness times (but by hand).

    Warm-up: fixed-size loops until three in a row agree within `timing.warmup_cv` or
    `timing.warmup_max_s` is spent. Then repeats of N iterations, N = ceil(repeat_time_s /
    seconds per iteration), as many as `timing.repeats` and at least `timing.min_time_s` in all.
    """
    dtype = DTYPES[dtype_name]
    gen = torch.Generator().manual_seed(SEED)
    a = torch.randn(SIZE, SIZE, generator=gen).to(dtype)
    b = torch.randn(SIZE, SIZE, generator=gen).to(dtype)
    c = torch.empty(SIZE, SIZE, dtype=dtype)
    flop = flop_per_iter(SIZE, SIZE, SIZE)

    # Calibrate and warm up.
    per_iter_s = _time_loop_s(a, b, c, 1)
    iterations = max(1, math.ceil(timing.repeat_time_s / per_iter_s))
    warm_per_iter_s: list[float] = []
    warm_spent_s = 0.0
    while True:
        elapsed_s = _time_loop_s(a, b, c, iterations)
        warm_spent_s += elapsed_s
        warm_per_iter_s.append(elapsed_s / iterations)
        recent = warm_per_iter_s[-3:]
        if len(recent) == 3 and statistics.stdev(recent) / statistics.fmean(recent) <= timing.warmup_cv:
            break
        if warm_spent_s >= timing.warmup_max_s:
            break
    settled_s = statistics.median(warm_per_iter_s[-3:])
    iterations = max(1, math.ceil(timing.repeat_time_s / settled_s))
    repeats = max(timing.repeats, math.ceil(timing.min_time_s / (iterations * settled_s)))

    raw_s = [_time_loop_s(a, b, c, iterations) / iterations for _ in range(repeats)]
    flops = [flop / s for s in raw_s]
    return statistics.median(flops), {"iterations": iterations, "repeats": repeats, "raw_seconds": raw_s}


def _pair(name: str, r: int, timing: TimingConfig, d: dict[str, Any]) -> None:
    """One round for one dtype: wattbench and bare back to back (order alternating with `r`)."""
    order = ("wattbench", "bare") if r % 2 == 0 else ("bare", "wattbench")
    others = []
    for which in order:
        meter = LoadMeter()
        if which == "wattbench":
            value, result = wattbench_flops(name, timing)
            d["wattbench_flags"].append(result["flags"])
            d["wattbench_iterations"].append([result["iterations"], result["repeats"]])
            d["wattbench_cv"].append(result["seconds_per_iter"]["cv"])
        else:
            value, info = bare_flops(name, timing)
            d["bare_cv"].append(statistics.stdev(info["raw_seconds"]) / statistics.fmean(info["raw_seconds"]))
        d[f"{which}_flops"].append(value)
        load = meter.read()
        others.append(load.others_cpus)
        d["steal_cpus"].append(load.steal_cpus)
    d["others_cpus"].append(max(others))
    d["clean"].append(max(others) <= BUSY_OTHERS_CPUS)
    w, b = d["wattbench_flops"][-1], d["bare_flops"][-1]
    print(
        f"  round {r + 1:>2} {name:>8} ({order[0]} first): wattbench {w / 1e9:7.1f} GFLOP/s, bare {b / 1e9:7.1f} GFLOP/s, "
        f"ratio {w / b:.3f}, others used {max(others):.2f} CPU{'' if d['clean'][-1] else '  <- disturbed, not counted'}",
        flush=True,
    )


def measure(rounds: int, timing: TimingConfig) -> dict[str, Any]:
    """Rounds of wattbench and bare per dtype; figures per dtype.

    A round in which other processes used more than BUSY_OTHERS_CPUS during either measurement
    is "disturbed" and left out of the medians. After `rounds` rounds, a dtype with fewer than
    half its rounds clean gets more rounds, up to `rounds` more.
    """
    series = (
        "wattbench_flops",
        "bare_flops",
        "wattbench_cv",
        "bare_cv",
        "wattbench_flags",
        "wattbench_iterations",
        "others_cpus",
        "steal_cpus",
        "clean",
    )
    per_dtype: dict[str, dict[str, Any]] = {name: {key: [] for key in series} for name in DTYPES}
    need_clean = math.ceil(rounds / 2)
    for r in range(2 * rounds):
        todo = [name for name, d in per_dtype.items() if r < rounds or sum(d["clean"]) < need_clean]
        if not todo:
            break
        if r == rounds:
            print(f"  too few undisturbed rounds for {', '.join(todo)}: up to {rounds} more", flush=True)
        for name in todo:
            _pair(name, r, timing, per_dtype[name])
    for d in per_dtype.values():
        pairs = list(zip(d["wattbench_flops"], d["bare_flops"], d["clean"], strict=True))
        used = [(w, b) for w, b, ok in pairs if ok] or [(w, b) for w, b, _ in pairs]
        d["rounds_run"] = len(pairs)
        d["rounds_used"] = sum(d["clean"])
        d["conclusive"] = d["rounds_used"] > 0
        d["wattbench_median_flops"] = statistics.median(w for w, _ in used)
        d["bare_median_flops"] = statistics.median(b for _, b in used)
        d["ratio"] = d["wattbench_median_flops"] / d["bare_median_flops"]
        d["per_round_ratio"] = [w / b for w, b in used]
        d["paired_ratio"] = statistics.median(d["per_round_ratio"])
        d["passed"] = d["ratio"] >= TARGET_RATIO
    return per_dtype


def print_table(per_dtype: dict[str, dict[str, Any]]) -> None:
    """dtype, medians over the rounds used, their ratio; the median and range of per-round ratios."""
    header = (
        f"{'dtype':<10} {'wattbench GFLOP/s':>18} {'bare GFLOP/s':>13} {'ratio':>7}"
        f"   {'paired ratio':>12} {'per-round min..max':>19} {'rounds used':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, d in per_dtype.items():
        spread = f"{min(d['per_round_ratio']):.3f}..{max(d['per_round_ratio']):.3f}"
        used = f"{d['rounds_used']}/{d['rounds_run']}" if d["conclusive"] else f"all {d['rounds_run']}*"
        print(
            f"{name:<10} {d['wattbench_median_flops'] / 1e9:>18.1f} {d['bare_median_flops'] / 1e9:>13.1f} "
            f"{d['ratio']:>7.3f}   {d['paired_ratio']:>12.3f} {spread:>19} {used:>12}"
        )
    print("ratio = median wattbench / median bare; paired ratio = median of the per-round wattbench/bare;")
    print(
        f"rounds in which other processes used more than {BUSY_OTHERS_CPUS} CPU are not used"
        + ("" if all(d["conclusive"] for d in per_dtype.values()) else " (* every round was disturbed: all used)")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=6, help="interleaved rounds of wattbench and bare; even balances the order (default 6)"
    )
    parser.add_argument(
        "--min-time", type=float, default=1.0, dest="min_time_s", help="seconds timed per measurement (default 1.0)"
    )
    parser.add_argument(
        "--warmup-max", type=float, default=1.0, dest="warmup_max_s", help="warm-up limit in seconds (default 1.0)"
    )
    parser.add_argument(
        "--json", nargs="?", const="-", default=None, metavar="PATH", help="also dump the figures as JSON (to PATH, or stdout)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    # Same settings for both: repeats of ~0.1 s, at least `min_time_s` timed, warm-up until stable.
    timing = TimingConfig(
        min_time_s=args.min_time_s, repeats=5, repeat_time_s=0.1, warmup_cv=0.02, warmup_max_s=args.warmup_max_s
    )
    host = host_info()
    print(
        f"harness overhead: matmul m=n=k={SIZE} on the CPU ({host.cpu_model}), torch {host.torch}, "
        f"{torch.get_num_threads()} torch threads, {len(os.sched_getaffinity(0))} usable cores"
    )
    print(
        f"{args.rounds} rounds, wattbench and bare interleaved; FLOP/iter = 2*m*n*k = {flop_per_iter(SIZE, SIZE, SIZE):.4g}",
        flush=True,
    )
    started_s = time.perf_counter()
    per_dtype = measure(args.rounds, timing)
    elapsed_s = time.perf_counter() - started_s
    print()
    print_table(per_dtype)
    print()
    for name, d in per_dtype.items():
        verdict = "PASS" if d["passed"] else "FAIL"
        caveat = "" if d["conclusive"] else "  INCONCLUSIVE: other processes were busy in every round"
        print(f"{verdict}: {name} wattbench/bare = {d['ratio']:.3f} (target >= {TARGET_RATIO}){caveat}")
        if d["passed"] != (d["paired_ratio"] >= TARGET_RATIO):
            print(f"      note: the paired ratio {d['paired_ratio']:.3f} disagrees: the machine's speed drifted between rounds")
        flags = sorted({f for fl in d["wattbench_flags"] for f in fl} - {"power_unmeasured"})
        if flags:
            print(f"      note: wattbench flagged some {name} runs: {', '.join(flags)}")
    overall = all(d["passed"] for d in per_dtype.values())
    conclusive = all(d["conclusive"] for d in per_dtype.values())
    print(f"overall: {'PASS' if overall else 'FAIL'}{'' if conclusive else ' (inconclusive)'} ({elapsed_s:.0f} s)")

    if args.json is not None:
        doc = {
            "benchmark": "harness_overhead",
            "size": SIZE,
            "flop_per_iter": flop_per_iter(SIZE, SIZE, SIZE),
            "rounds": args.rounds,
            "timing": {k: getattr(timing, k) for k in ("min_time_s", "repeats", "repeat_time_s", "warmup_cv", "warmup_max_s")},
            "target_ratio": TARGET_RATIO,
            "host": host.to_dict(),
            "dtypes": per_dtype,
            "passed": overall,
            "conclusive": conclusive,
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
