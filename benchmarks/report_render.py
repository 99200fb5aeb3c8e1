"""Report rendering speed: `wattbench report` over 100 result files holding 10,000 cases.

What is measured: wall time of loading the files (bench.results.load) and rendering the table
report into a string console, the path `wattbench report DIR` takes. The files are written
to a temporary folder from one real case (a quick matmul run on this machine) copied 10,000
times with different parameters and hosts; they exercise the reader and the renderer and are
deleted afterwards (they are inputs of this benchmark, never results). Three layouts: 10,000
distinct cases on one hardware and on ten, and 100 cases repeated in every run on ten hardware
(medians over runs). Target: <= 3 s.

Run: `.venv/bin/python benchmarks/report_render.py [--files 100] [--cases 100]`.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    import bench  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console

import workloads
from bench import results
from bench.measure.hardware import cpu_device, host_info
from bench.measure.plan import expand
from bench.report.tables import render
from bench.measure.runner import new_run_document, run_case
from bench.measure.timing import TimingConfig
from bench.report.load import load

TARGET_S = 3.0


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


def time_report(folder: Path, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        df = load([folder])
        render(df, Console(file=io.StringIO(), width=200, color_system=None))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--cases", type=int, default=100)
    args = parser.parse_args()
    verdicts = []
    for hardware, distinct in ((1, True), (10, True), (10, False)):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_files(folder, args.files, args.cases, hardware, distinct)
            seconds = time_report(folder)
        ok = seconds <= TARGET_S
        verdicts.append(ok)
        layout = f"{hardware} hardware, " + ("all cases distinct" if distinct else "the same cases in every run")
        print(f"{args.files} files x {args.cases} cases, {layout}: load + render {seconds:.2f} s (median of 3; "
              f"target <= {TARGET_S:g} s): {'PASS' if ok else 'FAIL'}")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
