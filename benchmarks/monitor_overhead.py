"""Monitor overhead: does sampling power and memory slow the workload down?

What is measured: the median throughput (FLOP/s) of a float32 matmul on the CPU through the
real harness (`bench.runner.run_case`), with the monitor on (the sources `wattbench run` would
use on this machine, plus the process-memory sampler, at the default interval) and off. The two
are interleaved over several rounds, alternating which goes first, so drift on a noisy machine
falls on both alike. The median of the per-round ratios on/off is the figure; the target is
>= 0.99 (the sampler costs under 1% of throughput).

Where nothing measures the CPU's power (no RAPL access), a nominal wattage stands in so the
sampler still runs and reads a source every interval; that is what a user with
`--nominal-watts` gets. CPU used by other processes during each measurement is shown.

Run: `.venv/bin/python benchmarks/monitor_overhead.py [--rounds 7] [--size 1024] [--interval S]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

try:
    import bench  # noqa: F401
except ImportError:  # run as a plain script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import LoadMeter

import workloads
from bench.measure.hardware import cpu_device
from bench.measure.plan import expand
from bench.measure.runner import run_case
from bench.measure.timing import TimingConfig
from bench.monitor.discover import DeviceRef, discover
from bench.monitor.process import ProcessMemory
from bench.monitor.sampler import DEFAULT_INTERVAL_S, Monitor

TARGET_RATIO = 0.99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="sampling interval in seconds")
    parser.add_argument("--min-time", type=float, default=2.0, help="timed window per measurement, seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()

    device = cpu_device()
    (case,) = expand("matmul", {"size": [args.size], "dtype": ["float32"]}, [device])
    timing = TimingConfig(min_time_s=args.min_time, repeats=10, repeat_time_s=0.1, warmup_max_s=1.0)
    found = discover([DeviceRef("cpu", "cpu")], nominal_watts=100.0)
    sources = [*found.sources, ProcessMemory()]
    print(f"case {case.id}; monitor sources: cpu={found.status['cpu']} + process memory; interval {args.interval * 1e3:.0f} ms")

    def measure(monitor: Monitor | None) -> tuple[float, dict]:
        meter = LoadMeter()
        result = run_case(case, device, timing, workloads.get("matmul"), monitor)
        if result["status"] != "ok":
            raise RuntimeError(result["error"])
        return result["throughput"]["median"], {
            "others_cpus": meter.read().others_cpus,
            "samples": (result["energy"] or {}).get("samples"),
        }

    rounds = []
    with Monitor(sources, args.interval) as monitor:
        measure(None)  # settle clocks and allocator before the first round
        for i in range(args.rounds):
            order = [monitor, None] if i % 2 == 0 else [None, monitor]
            got = {}
            for m in order:
                got["on" if m is not None else "off"] = measure(m)
            (on, on_info), (off, off_info) = got["on"], got["off"]
            rounds.append(
                {
                    "on": on,
                    "off": off,
                    "ratio": on / off,
                    "samples": on_info["samples"],
                    "others_cpus": max(on_info["others_cpus"], off_info["others_cpus"]),
                }
            )
            print(
                f"round {i + 1}: on {on / 1e9:7.2f} GFLOP/s ({on_info['samples']} samples)  off {off / 1e9:7.2f} GFLOP/s"
                f"  on/off {on / off:.4f}  others {rounds[-1]['others_cpus']:.2f} CPU"
            )
    paired = statistics.median(r["ratio"] for r in rounds)
    of_medians = statistics.median(r["on"] for r in rounds) / statistics.median(r["off"] for r in rounds)
    verdict = "PASS" if paired >= TARGET_RATIO else "FAIL"
    print(
        f"monitor on/off: median paired ratio {paired:.4f}, ratio of medians {of_medians:.4f} "
        f"(target >= {TARGET_RATIO}): {verdict}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rounds": rounds,
                    "paired_ratio": paired,
                    "ratio_of_medians": of_medians,
                    "interval_s": args.interval,
                    "sources": found.status,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
