"""How fast the results store takes and reports a fleet of a million rows.

A synthetic fleet (benchmarks/fleet_synthetic.py: real example cases, made-up GPU identities,
+-2% truncated noise) of 1,000 merged node files, 8 GPUs each, 125 cases: 1,000,000 rows.
Generating it is not timed. Then, three times each, medians quoted:
- `wattbench ingest FLEET --store NEW_STORE` (a fresh store each time; the command as a user runs
  it, both cores), with its peak resident memory (the largest process: ru_maxrss of children);
- `wattbench fleet STORE --format json` (the analysis and its output, process start included).
The store's size on disk is printed beside them. Targets (issue 20): ingest <= 60 s, fleet <= 5 s,
peak RSS < 4 GiB.

    python benchmarks/fleet_store.py [--nodes 1000] [--cases 125] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fleet_synthetic import FleetSpec, write_fleet  # noqa: E402

ROOT = HERE.parent


def _run(args: list[str]) -> tuple[float, int]:
    """Wall seconds and the peak RSS (bytes) of `python -m bench ARGS` and its workers."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"wattbench {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) * 1024


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--cases", type=int, default=125)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the fleet and stores here and keep them")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="wattbench-fleet-"))
    fleet = work / "fleet"
    try:
        start = time.perf_counter()
        if not fleet.exists():
            write_fleet(fleet, FleetSpec(nodes=args.nodes, gpus=8, cases=args.cases))
        rows = args.nodes * 8 * args.cases
        size = sum(p.stat().st_size for p in fleet.iterdir())
        print(
            f"fleet: {args.nodes:,} node files, {rows:,} rows, {size / 1e9:.2f} GB of JSON (made in {time.perf_counter() - start:.0f} s, not timed)"
        )
        ingests, peaks = [], []
        for i in range(args.repeats):
            store = work / f"store-{i}"
            shutil.rmtree(store, ignore_errors=True)
            seconds, peak = _run(["ingest", str(fleet), "--store", str(store)])
            ingests.append(seconds)
            peaks.append(peak)
            print(f"ingest {i + 1}: {seconds:.1f} s, peak RSS {peak / 2**20:.0f} MiB")
        store = work / "store-0"
        on_disk = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        reports = []
        for i in range(args.repeats):
            seconds, _ = _run(["fleet", str(store), "--format", "json"])
            reports.append(seconds)
            print(f"fleet {i + 1}: {seconds:.2f} s")
        result = {
            "rows": rows,
            "ingest_s_median": statistics.median(ingests),
            "ingest_peak_rss_mib_max": max(peaks) / 2**20,
            "fleet_s_median": statistics.median(reports),
            "store_bytes": on_disk,
        }
        print(json.dumps(result, indent=1))
        print(
            f"ingest {result['ingest_s_median']:.1f} s (target <= 60), fleet {result['fleet_s_median']:.2f} s (target <= 5), "
            f"peak RSS {result['ingest_peak_rss_mib_max']:.0f} MiB (< 4096), store {on_disk / 2**20:.1f} MiB on disk"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
