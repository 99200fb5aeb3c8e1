"""Does the llm workload run at the speed of the machine, not of its own Python? Two ratios on the CPU.

- Decode at batch 1 of a decoder whose weights (~300 MB in float32: d_model 1024, 8 layers,
  vocab 32000) are far past the last-level cache is judged against a bare torch loop of the same
  GEMVs (x @ W with out=, for every weight matrix of every layer and lm_head, timed by the same
  harness): decode's time per token over the bare loop's is the overhead of everything else the
  model does (norms, rotary, attention over the cache, Python). Target: the bare loop reaches at
  least 80% of decode's speed. Triad is the wrong yardstick to judge on: a single-vector GEMV
  reads memory at its own rate (MKL's on a 2-vCPU EPYC VM: about 18 GB/s against a 31-44 GB/s
  triad), so decode's counted bytes per second as "% of triad" (MBU is against datasheet peaks;
  a CPU VM has none) is printed for information only.
- Prefill of 512 tokens reaches a FLOP rate (its `FLOP` term) compared with a bare matmul of its
  largest feed-forward shape (512 x 1024 times 1024 x 2*ffn, the fused gate/up projection).
  Target >= 70%.

This VM's memory bandwidth and speed jump between levels that last seconds, so each ratio is
taken from back-to-back pairs (the workload, then its reference, in one process) and the median
of the paired ratios is quoted.

Run: `.venv/bin/python benchmarks/llm_roofline.py [--pairs 5]`.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from pathlib import Path

import torch

try:
    import bench  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workloads
from bench.measure.hardware import cpu_device
from bench.measure.plan import expand
from bench.measure.runner import run_case
from bench.measure.timing import CpuTimer, TimingConfig, prepare, run_repeats
from workloads.llm import LLM

MODEL = {
    "model": "tiny",
    "d_model": 1024,
    "layers": 8,
    "heads": 16,
    "kv_heads": 4,
    "ffn": 2816,
    "vocab": 32000,
    "dtype": "float32",
}
PROMPT = 512
TARGETS = {"decode": 0.80, "prefill": 0.70}
TIMING = TimingConfig(min_time_s=1.0, repeats=5, repeat_time_s=0.1, warmup_max_s=2.0)


def _measure(workload: str, params: dict) -> dict:
    (case,) = expand(workload, {k: [v] for k, v in params.items()}, [cpu_device()])
    result = run_case(case, cpu_device(), TIMING, workloads.get(workload))
    if result["status"] != "ok":
        raise SystemExit(f"{case.id}: {result['status']}: {result['error']}")
    return result


def _term_rate(result: dict, term: str) -> float:
    """The case's `term` (bytes or FLOP) per second, at its median time per iteration."""
    return float(result["work_terms"][term]) / result["seconds_per_iter"]["median"]


def bare_gemvs_s() -> float:
    """Seconds per token of a bare loop over decode's weight matrices: one x @ W (out=) each, with
    the model's shapes, dtype and seeded random data, timed like a case."""
    resolved = LLM.resolve({**MODEL, "phase": "decode"}, cpu_device())
    d, h, kv, hd, f, v = (resolved[n] for n in ("d_model", "heads", "kv_heads", "head_dim", "ffn", "vocab"))
    gen = torch.Generator().manual_seed(1234)
    shapes = [(d, (h + 2 * kv) * hd), (h * hd, d), (d, 2 * f), (f, d)] * resolved["run_layers"] + [(d, v)]
    calls = []
    for rows, cols in shapes:
        x, w, out = torch.randn(1, rows, generator=gen), torch.randn(rows, cols, generator=gen) * 0.02, torch.empty(1, cols)
        calls.append(functools.partial(torch.matmul, x, w, out=out))

    def loop() -> None:
        for call in calls:
            call()

    timer = CpuTimer()
    plan = prepare(loop, timer, TIMING)
    return statistics.median(run_repeats(loop, timer, plan))


def decode_pair() -> float:
    """Bare GEMVs' time per token over decode's (1.0: decode costs nothing beyond its GEMVs);
    prints decode's counted bytes per second against triad for information."""
    decode = _measure("llm", {**MODEL, "phase": "decode", "batch": 1, "seq": PROMPT})
    bare = bare_gemvs_s()
    triad = _measure("membw", {"op": "triad"})
    print(
        f"    decode {1e3 * decode['seconds_per_iter']['median']:.2f} ms/token, bare GEMVs {1e3 * bare:.2f} ms; "
        f"decode moves its counted bytes at {100 * _term_rate(decode, 'byte') / triad['throughput']['median']:.0f}% of triad "
        "(information)",
        flush=True,
    )
    return bare / decode["seconds_per_iter"]["median"]


def prefill_pair() -> float:
    prefill = _measure("llm", {**MODEL, "phase": "prefill", "batch": 1, "seq": PROMPT})
    ffn = _measure("matmul", {"m": PROMPT, "n": 2 * MODEL["ffn"], "k": MODEL["d_model"], "dtype": "float32"})
    return _term_rate(prefill, "FLOP") / ffn["throughput"]["median"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    ok = True
    for name, pair in (("decode", decode_pair), ("prefill", prefill_pair)):
        ratios = []
        for i in range(args.pairs):
            ratios.append(pair())
            print(f"  {name} pair {i + 1}: {100 * ratios[-1]:.1f}%", flush=True)
        median = statistics.median(ratios)
        passed = median >= TARGETS[name]
        ok &= passed
        what = "% of a bare loop of its GEMVs (speed)" if name == "decode" else "% of its largest FFN matmul (FLOP/s)"
        print(
            f"{name}: median {100 * median:.1f}{what} (target >= {100 * TARGETS[name]:.0f}%): {'PASS' if passed else 'FAIL'}",
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
