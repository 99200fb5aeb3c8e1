"""Run under torchrun by tests/test_collective.py: every collective case on gloo, checked.

Each rank builds the workload as the harness does (resolve, setup, run, verify), for every op at
two sizes (and in place where the op allows it), prints one JSON line per case with its verdict
({"rank", "op", "size", "dtype", "inplace", "status", "passed", "wrong", "error"}), then, with
--faults, checks that verification catches a wrong result: every op with its collective skipped in
verify (mode "noop"), and with one element of rank 1's output corrupted (mode "corrupt", the
class's test hook); every rank must report each failure. Unsupported cases print status "skipped" and the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from bench.errors import Unsupported
from bench.measure.hardware import cpu_device
from workloads.collective import OPS, Collective

RUNS = 3
LONG_RUNS = 200


def case(device: Any, mode: str, noop: bool = False, **given: Any) -> dict[str, Any]:
    params = Collective.resolve(given, device)
    line: dict[str, Any] = {"rank": dist.get_rank(), "mode": mode, **params}
    workload = Collective(params, device)
    try:
        workload.setup()
    except Unsupported as exc:
        return line | {"status": "skipped", "error": str(exc)}
    try:
        for _ in range(RUNS):
            workload.run()
        if noop:  # a collective that never ran: verify's own call does nothing
            workload._collective = lambda reduction: None  # type: ignore[method-assign]
        check = workload.verify()
        details = workload.details()
        return line | {
            "status": "ok",
            "passed": check.passed,
            "wrong": details["wrong"],
            "max_rel_error": check.to_dict()["max_rel_error"],
            "details": details,
            "work": workload.work().terms,
        }
    finally:
        workload.teardown()


def long_run(device: Any, **given: Any) -> dict[str, Any]:
    """LONG_RUNS timed iterations, then: is every element of the buffer still finite?"""
    params = Collective.resolve(given, device)
    workload = Collective(params, device)
    workload.setup()
    try:
        for _ in range(LONG_RUNS):
            workload.run()
        finite = bool(torch.isfinite(workload.out).all())
        return {
            "rank": dist.get_rank(),
            "mode": "long",
            **params,
            "status": "ok",
            "finite": finite,
            "passed": workload.verify().passed,
            "details": workload.details(),
        }
    finally:
        workload.teardown()


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")  # one write per line: ranks' lines never interleave
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="4KiB,1MiB")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16,int32")
    parser.add_argument("--faults", action="store_true")
    args = parser.parse_args()
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    device = cpu_device()
    try:
        for op in OPS:
            for size in args.sizes.split(","):
                for inplace in (False, True):
                    emit(case(device, "check", op=op, size=size, inplace=inplace))
        for dtype in args.dtypes.split(","):
            for op in OPS:
                emit(case(device, "dtype", op=op, size="64KiB", dtype=dtype))
        emit(case(device, "odd_size", op="all_gather", size="4100B"))  # 1025 floats over 2 ranks
        for dtype in ("float16", "bfloat16"):  # SUM in place doubles the buffer (2 ranks): inf in 8 / 120 runs
            emit(long_run(device, op="all_reduce", size="4KiB", dtype=dtype))
        if args.faults:
            for op in OPS:
                emit(case(device, "noop", noop=True, op=op, size="4KiB"))
            emit(case(device, "noop", noop=True, op="reduce_scatter", size="4KiB", inplace=True))
            Collective.verify_corrupt_rank = 1
            for op in OPS:
                emit(case(device, "corrupt", op=op, size="4KiB"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
