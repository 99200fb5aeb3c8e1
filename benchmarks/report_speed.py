"""How fast the reading side answers, end to end: command start to exit, as a user waits.

Three targets (issue 9), each the median of 5 runs of a fresh `python -m bench ...` process with
its output to /dev/null (a pipe: the wide layout):
- `wattbench report results/examples` (the committed example runs): <= 0.8 s;
- `wattbench compare A B` of two quick runs: <= 1 s. The two runs are real `wattbench run
  quick` runs made by this benchmark on this machine (about a minute), or `--quick-runs DIR`
  holding two such files;
- `wattbench report DIR` over 100 files of 100 cases (10,000 cases): <= 2 s, in three layouts
  (10,000 distinct cases on one hardware and on ten; 100 cases repeated in every run on ten
  hardware: medians over runs). These files are written to a temporary folder from one real
  case (a small matmul run here) copied with different parameters and hosts; they are inputs
  of this benchmark, never results, and are deleted afterwards.

Run: `.venv/bin/python benchmarks/report_speed.py [--files 100] [--cases 100] [--quick-runs DIR]`.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import bench  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workloads
from bench.measure.hardware import cpu_device, host_info
from bench.measure.plan import expand
from bench.measure.runner import new_run_document, run_case
from bench.measure.timing import TimingConfig

ROOT = Path(__file__).resolve().parent.parent
TARGETS_S = {"examples": 0.8, "compare": 1.0, "large": 2.0}
RUNS = 5


def real_case() -> tuple[dict, dict]:
    device = cpu_device()
    timing = TimingConfig(min_time_s=0.05, repeats=10, repeat_time_s=0.005, warmup_max_s=0.05)
    (case,) = expand("matmul", {"size": [128]}, [device])
    doc = new_run_document("wattbench run matmul", host_info(), [device], timing, 1)
    return doc, run_case(case, device, timing, workloads.get("matmul"))


def write_files(folder: Path, files: int, cases: int, hardware: int, distinct: bool) -> None:
    """`files` runs of `cases` each over `hardware` machines; `distinct`: no case repeats across
    files (10,000 rows to show), else every file holds the same cases (runs to aggregate)."""
    doc, case = real_case()
    for f in range(files):
        run = copy.deepcopy(doc)
        run["run"]["id"] = f"{f:032x}"
        run["run"]["status"] = "complete"
        run["devices"][0]["name"] = f"{doc['devices'][0]['name']} #{f % hardware}"
        for c in range(cases):
            item = copy.deepcopy(case)
            m = 128 + c + (f * cases if distinct else 0)
            item["params"] = {"m": m, "n": 128, "k": 128, "dtype": "float32"}
            item["id"] = f"matmul(m={m},n=128,k=128,dtype=float32)@cpu"
            run["cases"].append(item)
        (folder / f"run{f:03d}.json").write_text(json.dumps(run))


def command_seconds(args: list[str], runs: int = RUNS) -> float:
    """Median wall time of `python -m bench ARGS` from start to exit, output to /dev/null."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bench", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        times.append(time.perf_counter() - start)
        if done.returncode not in (0, 1):
            raise SystemExit(f"wattbench {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return statistics.median(times)


def quick_runs(folder: Path) -> list[Path]:
    """Two real quick runs on this machine, back to back."""
    paths = [folder / "quick-a.json", folder / "quick-b.json"]
    for path in paths:
        subprocess.run(
            [sys.executable, "-m", "bench", "run", "quick", "--out", str(path)],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return paths


def verdict(name: str, what: str, seconds: float) -> bool:
    ok = seconds <= TARGETS_S[name]
    print(f"{what}: {seconds:.3f} s (median of {RUNS}; target <= {TARGETS_S[name]:g} s): {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--quick-runs", type=Path, help="a folder holding two quick runs to compare (default: make them)")
    args = parser.parse_args()
    verdicts = [verdict("examples", "report results/examples", command_seconds(["report", "results/examples"]))]
    with tempfile.TemporaryDirectory() as tmp:
        pair = sorted(args.quick_runs.glob("*.json"))[:2] if args.quick_runs else quick_runs(Path(tmp))
        verdicts.append(
            verdict("compare", f"compare {pair[0].name} {pair[1].name}", command_seconds(["compare", str(pair[0]), str(pair[1])]))
        )
    for hardware, distinct in ((1, True), (10, True), (10, False)):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_files(folder, args.files, args.cases, hardware, distinct)
            seconds = command_seconds(["report", str(folder)])
        layout = f"{hardware} hardware, " + ("all cases distinct" if distinct else "the same cases in every run")
        verdicts.append(verdict("large", f"report of {args.files} files x {args.cases} cases, {layout}", seconds))
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
