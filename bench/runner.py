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
from bench.monitor.process import PROCESS_DEVICE
from bench.monitor.sampler import EnergyResult, Monitor
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


IDLE_WINDOW_S = 1.0


def _memory(device: torch.device, window: dict[str, EnergyResult] | None) -> dict[str, Any]:
    """Peak memory of the case: torch's allocator peak on a GPU (plus NVML's used where
    sampled), the process's resident set sampled during the timed window on the CPU."""
    window = window or {}
    if device.type == "cuda":
        gpu = window.get(str(device))
        return {
            "peak_bytes": int(torch.cuda.max_memory_allocated(device)),
            "source": "torch.cuda.max_memory_allocated",
            "nvml_used_peak_bytes": gpu.peak_memory_bytes if gpu else None,
        }
    process = window.get(PROCESS_DEVICE)
    if process is not None and process.peak_memory_bytes:
        return {"peak_bytes": process.peak_memory_bytes, "source": "process_rss_sampled"}
    # ru_maxrss is KiB on Linux: the process's peak resident set so far, not this case's alone.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_bytes": int(rss * (1 if sys.platform == "darwin" else 1024)), "source": "getrusage.ru_maxrss (process peak)"}


def _energy(reading: EnergyResult | None, idle_watts: float | None) -> dict[str, Any] | None:
    if reading is None or reading.joules is None:
        return None
    energy = reading.to_dict()
    energy["idle_watts"] = idle_watts
    energy["dynamic_joules"] = reading.joules - idle_watts * reading.duration_s if idle_watts is not None else None
    return energy


def run_case(
    case: Case,
    device: DeviceInfo,
    timing: TimingConfig,
    workload_cls: type[Workload],
    monitor: Monitor | None = None,
    idle_watts: float | None = None,
) -> dict[str, Any]:
    """Measure one case and return its result record (never raises, except KeyboardInterrupt).

    With a monitor, the timed repeats run inside one measurement window: the case gets the
    window's energy, and efficiency = median throughput / the window's average watts (work per
    joule: FLOP/J is FLOP/s per W).
    """
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
        readings: dict[str, EnergyResult] | None = None
        if monitor is not None:
            with monitor.window(lambda: synchronize(tdev)) as window:
                raw = run_repeats(workload.run, timer, plan)
            readings = window.results
        else:
            raw = run_repeats(workload.run, timer, plan)

        seconds = Stats.of(raw)
        throughput = Stats.of([work.per_iter / s for s in raw])
        reading = (readings or {}).get(device.id)
        energy = _energy(reading, idle_watts)
        flags = list(reading.flags) if reading is not None else ["power_unmeasured"]
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
            energy=energy,
            efficiency=throughput.median / energy["avg_watts"] if energy and energy["avg_watts"] else None,
            memory=_memory(tdev, readings),
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


def measure_idle(monitor: Monitor, seconds: float = IDLE_WINDOW_S) -> dict[str, dict[str, Any]]:
    """Average watts per device with nothing running: the baseline for dynamic energy."""
    with monitor.window() as window:
        time.sleep(seconds)
    return {
        device: {"watts": r.avg_watts, "source": r.source, "duration_s": r.duration_s, "flags": list(r.flags)}
        for device, r in window.results.items()
        if r.avg_watts is not None and not r.estimate  # a nominal wattage has no idle to measure
    }


def run(
    cases: Sequence[Case],
    devices: Sequence[DeviceInfo],
    timing: TimingConfig,
    run_file: RunFile,
    observer: Observer | None = None,
    monitor: Monitor | None = None,
) -> str:
    """Run every case, writing each result to `run_file`. Returns the run status ("complete").

    With a monitor, first measures the idle power of each device (recorded in the run's
    `idle_power`), then times every case inside a measurement window. Raises `Interrupted`
    after saving when interrupted.
    """
    from workloads import get

    observer = observer or NullObserver()
    by_id = {d.id: d for d in devices}
    in_flight: Case | None = None
    try:
        idle: dict[str, dict[str, Any]] = {}
        if monitor is not None:
            for device in devices:  # idle with a CUDA context, as the cases will run
                if device.kind == "cuda":
                    torch.zeros(1, device=device.torch_device)
                    synchronize(device.torch_device)
            idle = measure_idle(monitor)
            run_file.doc["run"]["idle_power"] = idle
        for index, case in enumerate(cases):
            in_flight = case
            observer.case_started(case, index, len(cases))
            idle_watts = idle.get(case.device, {}).get("watts")
            result = run_case(case, by_id[case.device], timing, get(case.workload), monitor, idle_watts)
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
