"""Cases in, results out: set up, verify, warm up, calibrate, time, record.

The runner keeps no process-global state between cases (so one process per rank can run it
later) and writes each case to the run file as soon as it ends. A case that cannot run on its
device is "skipped", one that raises or fails its check is "failed", one that runs out of memory
is "oom"; the run goes on. Ctrl-C marks the case in flight "interrupted", finishes the file and
raises `Interrupted`.
"""

from __future__ import annotations

import gc
import resource
import signal
import sys
import threading
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Protocol, Sequence

import torch

import bench
from bench.errors import Unsupported
from bench.hardware import DeviceInfo, HostInfo
from bench.plan import Case
from bench.results import SCHEMA, RunFile
from bench.timing import UNSTABLE_CV, Stats, TimingConfig, prepare, run_repeats, synchronize, timer_for
from bench.workload import Workload


class Interrupted(Exception):
    """The run was interrupted (Ctrl-C or SIGTERM); the file holds every case so far."""


class Observer(Protocol):
    def case_started(self, case: Case, index: int, total: int) -> None: ...

    def case_finished(self, case: Case, result: dict[str, Any], index: int, total: int) -> None: ...


class NullObserver:
    def case_started(self, case: Case, index: int, total: int) -> None:
        pass

    def case_finished(self, case: Case, result: dict[str, Any], index: int, total: int) -> None:
        pass


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_document(command: str, host: HostInfo, devices: Sequence[DeviceInfo], timing: TimingConfig, planned: int) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "run": {
            "id": uuid.uuid4().hex,
            "started_at": utc_now(),
            "finished_at": None,
            "wattbench_version": bench.__version__,
            "command": command,
            "status": "running",
            "settings": asdict(timing),
            "cases_planned": planned,
        },
        "host": host.to_dict(),
        "devices": [d.to_dict() for d in devices],
        "cases": [],
    }


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _base_result(case: Case, status: str, error: str | None = None) -> dict[str, Any]:
    return {
        "id": case.id,
        "workload": case.workload,
        "params": case.param_dict,
        "device": case.device,
        "status": status,
        "error": error,
        "work_unit": None,
        "work_per_iter": None,
        "work_terms": None,
        "iterations": None,
        "repeats": None,
        "seconds_per_iter": None,
        "raw_seconds": [],
        "throughput": None,
        "energy": None,
        "efficiency": None,
        "memory": None,
        "verify": None,
        "timing": None,
        "flags": [],
        "duration_s": None,
    }


def _memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_bytes": int(torch.cuda.max_memory_allocated(device)), "source": "torch.cuda.max_memory_allocated"}
    # ru_maxrss is KiB on Linux: the process's peak resident set so far, not this case's alone.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_bytes": int(rss * (1 if sys.platform == "darwin" else 1024)), "source": "getrusage.ru_maxrss (process peak)"}


def run_case(case: Case, device: DeviceInfo, timing: TimingConfig, workload_cls: type[Workload]) -> dict[str, Any]:
    """Measure one case and return its result record (never raises, except KeyboardInterrupt)."""
    started = time.perf_counter()
    result = _base_result(case, "failed")
    workload: Workload | None = None
    tdev = device.torch_device
    try:
        workload = workload_cls(case.param_dict, device)
        if tdev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(tdev)
        workload.setup()
        work = workload.work()
        result.update(work_unit=work.unit, work_per_iter=work.per_iter, work_terms=dict(work.terms))

        workload.run()
        synchronize(tdev)
        check = workload.verify()
        result["verify"] = check.to_dict()
        if not check.passed:
            result["error"] = (
                f"verification failed: max relative error {check.max_rel_error:.3g} > tolerance {check.tolerance:.3g}"
            )
            return result

        timer = timer_for(tdev)
        plan = prepare(workload.run, timer, timing)
        raw = run_repeats(workload.run, timer, plan)
        # Energy and power windows wrap run_repeats here once the monitor lands.

        seconds = Stats.of(raw)
        throughput = Stats.of([work.per_iter / s for s in raw])
        flags = ["power_unmeasured"]
        if seconds.cv > UNSTABLE_CV:
            flags.append("unstable")
        if not plan.warmup_converged:
            flags.append("warmup_unconverged")
        result.update(
            status="ok",
            iterations=plan.iterations,
            repeats=plan.repeats,
            seconds_per_iter=seconds.to_dict(),
            raw_seconds=raw,
            throughput=throughput.to_dict(),
            memory=_memory(tdev),
            timing={
                "warmup_s": plan.warmup_s,
                "warmup_windows": plan.warmup_windows,
                "warmup_converged": plan.warmup_converged,
                "window_s": sum(raw) * plan.iterations,
            },
            flags=flags,
        )
    except Unsupported as exc:
        result.update(status="skipped", error=str(exc))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a case failing must not stop the run
        result.update(status="oom" if _is_oom(exc) else "failed", error=one_line(exc))
    finally:
        if workload is not None:
            try:
                workload.teardown()
            except Exception:  # noqa: BLE001
                pass
        del workload
        gc.collect()
        if tdev.type == "cuda":
            torch.cuda.empty_cache()
        result["duration_s"] = time.perf_counter() - started
    return result


def _save_ignoring_sigint(run_file: RunFile, status: str) -> None:
    """Finish the file with a second Ctrl-C held off, so the last write completes."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        run_file.finish(status, utc_now())
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def run(
    cases: Sequence[Case],
    devices: Sequence[DeviceInfo],
    timing: TimingConfig,
    run_file: RunFile,
    observer: Observer | None = None,
) -> str:
    """Run every case, writing each result to `run_file`. Returns the run status ("complete").

    Raises `Interrupted` after saving when interrupted.
    """
    from workloads import get

    observer = observer or NullObserver()
    by_id = {d.id: d for d in devices}
    in_flight: Case | None = None
    try:
        for index, case in enumerate(cases):
            in_flight = case
            observer.case_started(case, index, len(cases))
            result = run_case(case, by_id[case.device], timing, get(case.workload))
            in_flight = None
            run_file.add_case(result)
            observer.case_finished(case, result, index, len(cases))
    except KeyboardInterrupt:
        if in_flight is not None:
            run_file.cases.append(_base_result(in_flight, "interrupted", "interrupted by the user"))
        _save_ignoring_sigint(run_file, "interrupted")
        raise Interrupted() from None
    run_file.finish("complete", utc_now())
    return "complete"
