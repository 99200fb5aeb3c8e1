"""Cases in, results out: set up, verify, warm up, calibrate, time, record.

The runner keeps no process-global state between cases (so one process per rank can run it
later) and writes each case to the run file as soon as it ends. A case that cannot run on its
device is "skipped", one that raises or fails its check is "failed", one that runs out of memory
is "oom"; the run goes on, unless a round that failed in this process left its CUDA context
unusable (a sticky error): then the file is finished "aborted" and no further case runs.
Ctrl-C marks the case in flight "interrupted" (or, when earlier rounds of it ended, keeps them
and flags `rounds_incomplete`), finishes the file and raises `Interrupted`.

One round of one case is measured by `measure_round`, a function of its inputs that returns a
small serialisable `RoundOutcome`; `CaseRun.merge` adds an outcome to the case's record. In
process, `CaseRun.measure` calls both; with process isolation (`bench.measure.isolate`) the
outcome comes from a fresh worker process and is merged here, so a case that kills, poisons or
hangs its process fails alone.
"""

from __future__ import annotations

import contextlib
import gc
import random
import resource
import signal
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import psutil
import torch

import bench
from bench.errors import Unsupported
from bench.measure import runtime
from bench.measure.distributed import FAULT_ENV, Job, JobBroken, PeerFailed, fault_from_env
from bench.measure.hardware import DeviceInfo, HostInfo
from bench.measure.plan import Case
from bench.measure.runtime import PoolMemory
from bench.measure.timing import UNSTABLE_CV, Plan, TimingConfig, prepare, rewarm, run_repeats, synchronize, timer_for
from bench.measure.workload import Work, Workload
from bench.monitor.process import PROCESS_DEVICE, RU_MAXRSS_BYTES
from bench.monitor.sampler import EnergyResult, Monitor
from bench.record import CaseRecord, Energy, Json, JsonObject, Memory, OperatingPoint, Round, Section, Summary, Timing, Verify
from bench.results import SCHEMA, RunFile

if TYPE_CHECKING:
    from bench.control.controller import Controller
    from bench.measure.isolate import Isolation


class Interrupted(Exception):
    """The run was interrupted (Ctrl-C or SIGTERM); the file holds every case so far."""


class Observer(Protocol):
    """Progress of a run. `index` counts measurements (a case once per round) from 0; `total` is
    how many the run will make, which shrinks when a case stops early (skipped or failed cases
    get no more rounds); `round_number` is the round just measured, from 1."""

    def case_started(self, case: Case, index: int, total: int) -> None: ...

    def case_finished(self, case: Case, result: CaseRecord, index: int, total: int, round_number: int) -> None: ...


class NullObserver:
    def case_started(self, case: Case, index: int, total: int) -> None:
        pass

    def case_finished(self, case: Case, result: CaseRecord, index: int, total: int, round_number: int) -> None:
        pass


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def _base_result(case: Case, status: str, error: str | None = None) -> CaseRecord:
    """The record of a case that has no figures (yet): skipped, failed before timing, interrupted."""
    return CaseRecord.started(case.id, case.workload, dict(case.param_dict), case.device, status, error)


IDLE_WINDOW_S = 1.0


MEMORY_SCOPE = "timed window"


def _rss_bytes() -> int | None:
    """This process's resident memory now, in bytes; None where it cannot be read."""
    try:
        return int(psutil.Process().memory_info().rss)
    except psutil.Error:
        return None


def _memory(
    device: DeviceInfo,
    window: dict[str, EnergyResult] | None,
    baseline_bytes: int | None = None,
    edge_bytes: int | None = None,
    graph_pool: PoolMemory | None = None,
) -> Memory:
    """Peak memory of the case over its timed window (`scope`): set-up's staging copies, the
    check's reference, calibration and warm-up are outside it.

    GPU: torch's allocator peak since the runner reset it just before the window (the tensors
    the case holds while timed, and any it makes per iteration), plus NVML's used memory of
    the whole device where sampled. A case replayed from a CUDA graph (`graph_pool`) allocates
    nothing while timed: its activations live in the graph's private pool, reserved at capture
    and freed there, which the allocated peak never counts. Its `peak_bytes` is therefore the
    allocated peak plus the pool's reserved bytes that no live tensor holds, so that eager and
    graphed cases of one workload compare; `allocated_peak_bytes` and `graph_pool` keep the
    parts. CPU: the process's resident memory, sampled during the
    window, less `baseline_bytes` (its resident memory before set-up), so `peak_bytes` is what
    the case itself holds and `process_peak_bytes` the process's total. Without a sampled
    window, `edge_bytes` (the larger resident size at the window's edges) stands for the peak;
    with neither, the process's lifetime peak (getrusage). The CPU figure can fall short when
    the allocator reuses memory an earlier case freed but kept resident, and a process's first
    case also carries what its first run made the libraries allocate once (thread pools,
    workspaces: a few MiB); it never goes below 0.
    """
    window = window or {}
    if device.kind == "cuda":
        gpu = window.get(device.id)
        allocated = runtime.current().peak_memory_allocated(device.torch_device)
        found: JsonObject = {
            "peak_bytes": allocated,
            "source": "torch.cuda.max_memory_allocated",
            "scope": MEMORY_SCOPE,
            "nvml_used_peak_bytes": gpu.peak_memory_bytes if gpu else None,
        }
        if graph_pool is not None:
            found |= {
                "peak_bytes": allocated + max(0, graph_pool.reserved_bytes - graph_pool.allocated_bytes),
                "source": "torch.cuda.max_memory_allocated + CUDA graph pool reserved",
                "allocated_peak_bytes": allocated,
                "graph_pool": {"reserved_bytes": graph_pool.reserved_bytes, "allocated_bytes": graph_pool.allocated_bytes},
            }
        return Memory.parse(found)
    process = window.get(PROCESS_DEVICE)
    if process is not None and process.peak_memory_bytes:
        peak, source = int(process.peak_memory_bytes), "process_rss_sampled"
    elif edge_bytes is not None:
        peak, source = int(edge_bytes), "process_rss_window_edges"
    else:
        # ru_maxrss is KiB on Linux: the process's peak resident set so far, not this case's alone.
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return Memory.parse({"peak_bytes": int(rss * RU_MAXRSS_BYTES), "source": "getrusage.ru_maxrss (process peak)",
                             "scope": "process lifetime"})
    if baseline_bytes is None:
        return Memory.parse({"peak_bytes": peak, "source": source, "scope": MEMORY_SCOPE, "process_peak_bytes": peak,
                             "baseline_bytes": None})
    return Memory.parse({
        "peak_bytes": max(0, peak - int(baseline_bytes)),
        "source": source,
        "scope": MEMORY_SCOPE,
        "process_peak_bytes": peak,
        "baseline_bytes": int(baseline_bytes),
    })


@dataclass
class RoundOutcome:
    """What one round of one case gave: small and JSON-serialisable, so a worker process can
    send it back (`to_json`, `from_json`).

    `status` is "ok", "failed", "oom" or "skipped"; `error` is one line without the round label
    (the case adds it). Round 1 fills `work` and `verify`. An ok round fills `plan` (the timed
    loop it ran), `raw` (seconds per iteration of each repeat), `energy` (the case device's
    window as in the result file, or None where no joules were measured), `flags` (that
    window's flags) and `memory`. `started_at` is ISO 8601 UTC; `duration_s` is the round's wall
    time in seconds; `worker_start_s` the seconds its worker process took to start (isolated
    rounds only). `details` are the workload's facts about what ran (`Workload.details`).
    """

    status: str
    error: str | None = None
    work: Work | None = None
    verify: Verify | None = None
    plan: Plan | None = None
    raw: list[float] = field(default_factory=list)
    energy: Energy | None = None
    flags: list[str] = field(default_factory=list)
    memory: Memory | None = None
    started_at: str = ""
    duration_s: float = 0.0
    worker_start_s: float | None = None
    details: JsonObject = field(default_factory=dict)

    SECTIONS: ClassVar[dict[str, type[Section]]] = {"verify": Verify, "energy": Energy, "memory": Memory}

    def to_json(self) -> JsonObject:
        doc: JsonObject = {}
        for key, value in self.__dict__.items():
            if isinstance(value, Section):
                doc[key] = value.to_json()
            elif key == "work":
                doc[key] = {"unit": value.unit, "per_iter": value.per_iter, "terms": dict(value.terms)} if value else None
            elif key == "plan":
                doc[key] = asdict(value) if value else None
            else:
                doc[key] = value
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Json]) -> RoundOutcome:
        fields = {k: (cls.SECTIONS[k].parse(v) if k in cls.SECTIONS and isinstance(v, dict) else v) for k, v in doc.items()}
        work, plan = fields.pop("work", None), fields.pop("plan", None)
        return cls(
            **fields,  # type: ignore[arg-type]
            work=Work(work["unit"], work["per_iter"], work["terms"]) if isinstance(work, dict) else None,  # type: ignore[arg-type]
            plan=Plan(**plan) if isinstance(plan, dict) else None,  # type: ignore[arg-type]
        )


def measure_round(
    workload_cls: type[Workload],
    params: Mapping[str, Any],
    device: DeviceInfo,
    timing: TimingConfig,
    plan: Plan | None = None,
    monitor: Monitor | None = None,
    job: Job | None = None,
) -> RoundOutcome:
    """Measure one round of one case in this process and say what it gave (never raises, except
    KeyboardInterrupt).

    Round 1 (`plan` None) sets the workload up, checks its output, calibrates and warms up
    (`timing.prepare`); a later round sets it up afresh and times round 1's loop `plan` after a
    new warm-up (`timing.rewarm`). With a monitor the timed repeats run inside one measurement
    window, whose reading of `device` becomes the outcome's energy and flags.

    Under torchrun (`job`), every rank runs this at the same moment: after set-up and the check
    the ranks agree (a case one rank skips or fails is skipped or failed on all, with that rank's
    reason), the timer is the job's (`SyncTimer`: a barrier before each timed loop, the slowest
    rank's time after it), barriers bracket the window, and a failure after the agreement is
    announced at the next sync point, where every rank leaves the case.
    """
    started, outcome = time.perf_counter(), RoundOutcome(status="failed", started_at=utc_now())
    workload: Workload | None = None
    on_gpu = device.kind == "cuda"
    rt = runtime.current()
    # Under torchrun: the agreement point this rank still owes the others (after set-up, so no
    # rank enters a workload's own collectives while another failed to set up; after the check).
    pending: str | None = AFTER_SETUP if job is not None else None
    try:
        workload = workload_cls(dict(params), device)
        baseline = None if on_gpu else _rss_bytes()  # what the process holds before the case
        workload.setup()
        if job is not None and job.fail_setup:
            job.fail_setup = False
            raise RuntimeError(f"injected set-up failure ({FAULT_ENV})")
        outcome.details = dict(workload.details())
        timer = timer_for(device) if job is None else job.timer(timer_for(device))
        if job is not None:
            job.agree("ok", None, AFTER_SETUP)
            pending = AFTER_CHECK
        if plan is None:
            outcome.work = workload.work()
            workload.run()
            synchronize(device)
            check = workload.verify()
            outcome.verify = Verify.parse(check.to_dict())
            outcome.details = dict(workload.details())  # again: the check may add what it found
            if not check.passed:
                outcome.error = (
                    f"verification failed: max relative error {check.max_rel_error:.3g} > tolerance {check.tolerance:.3g}"
                )
                return outcome
        if job is not None:
            job.agree("ok", None, AFTER_CHECK)
            pending = None
        this_plan = prepare(workload.run, timer, timing, workload.launches_per_iter) if plan is None else rewarm(workload.run, timer, plan, timing)
        # Memory is measured over the timed window alone (MEMORY_SCOPE): set-up's staging
        # copies and the check's reference are gone by now.
        if on_gpu:
            rt.reset_peak_memory(device.torch_device)
        edge = None if on_gpu else _rss_bytes()
        readings: dict[str, EnergyResult] | None = None
        if job is not None:
            job.sync(0.0, "the opening of the measurement window")
        if monitor is not None:
            with monitor.window(lambda: synchronize(device)) as window:
                raw = run_repeats(workload.run, timer, this_plan)
            readings = window.results
        else:
            raw = run_repeats(workload.run, timer, this_plan)
        if not on_gpu:
            edge = max((r for r in (edge, _rss_bytes()) if r is not None), default=None)
        reading = (readings or {}).get(device.id)
        outcome.plan, outcome.raw = this_plan, list(raw)
        outcome.energy = Energy.parse(reading.to_dict()) if reading is not None and reading.joules is not None else None
        outcome.flags = list(reading.flags) if reading is not None else ["power_unmeasured"]
        graph = workload.graph
        outcome.memory = _memory(device, readings, baseline, edge, graph.pool_memory() if graph is not None else None)
        if job is not None:  # last: whatever failed above is announced at this sync point
            job.sync(0.0, "the close of the measurement window")
        outcome.status = "ok"
    except PeerFailed as exc:  # another rank's failure, agreed: this rank records it too
        pending = None
        outcome.status, outcome.error = exc.status, exc.error
    except JobBroken:
        pending = None
        raise
    except Unsupported as exc:
        outcome.status, outcome.error = "skipped", str(exc)
        _announce(job, pending, outcome)
    except KeyboardInterrupt:
        pending = None
        raise
    except Exception as exc:  # noqa: BLE001 - a case failing must not stop the run
        outcome.status, outcome.error = ("oom" if _is_oom(exc) else "failed"), one_line(exc)
        _announce(job, pending, outcome)
    finally:
        if job is not None and pending is not None:  # failed before an agreement: say so there
            job.agree(outcome.status, outcome.error, pending)
        if workload is not None:
            try:
                workload.teardown()
            except Exception:  # noqa: BLE001
                pass
        workload = None
        gc.collect()
        if on_gpu:
            try:
                rt.release_cached_memory(device.torch_device)
            except Exception:  # noqa: BLE001 - after a sticky CUDA error (illegal address, device-side
                pass  # assert) every CUDA call raises; the round has already failed with the cause
        outcome.duration_s = time.perf_counter() - started
    return outcome


AFTER_SETUP = "the agreement after set-up"
AFTER_CHECK = "the agreement after the check"


def _announce(job: Job | None, pending: str | None, outcome: RoundOutcome) -> None:
    """Under torchrun, a failure after both agreements: the other ranks learn it at their next
    sync point (before them, `measure_round` says it at the agreement it still owes)."""
    if job is not None and pending is None:
        job.fail(outcome.status, outcome.error or outcome.status, "the announcement of a failed case")


class CaseRun:
    """One case measured in one or more rounds; `record()` is its result so far.

    Round 1 sets the workload up, checks its output, calibrates and warms up; each later round
    sets it up afresh (new buffers, so memory placement is sampled too), warms up again and
    times the same loop (`bench.timing.rewarm`). Raw times of all rounds are pooled in
    `raw_seconds`; `rounds` says how many came from each round, and when. A round that fails
    ends the case: its status becomes that failure, the rounds before it stay in the record.
    """

    def __init__(
        self,
        case: Case,
        device: DeviceInfo,
        timing: TimingConfig,
        workload_cls: type[Workload],
        idle_watts: float | None = None,
    ) -> None:
        self.case, self.device, self.timing = case, device, timing
        self.workload_cls, self.idle_watts = workload_cls, idle_watts
        self.status: str | None = None  # None until round 1 has run
        self.error: str | None = None
        self.work: Work | None = None
        self.verify: Verify | None = None
        self.plan: Plan | None = None
        self.raw: list[float] = []
        self.rounds: list[Round] = []
        self.energy_parts: list[Energy] = []
        self.unmeasured_rounds = 0
        self.flags: list[str] = []
        self.memory: Memory | None = None
        self.details: JsonObject = {}
        self.duration_s = 0.0
        self.operating: JsonObject | None = None  # what the sweep set before the case (Controller.apply)

    @property
    def measuring(self) -> bool:
        """True while another round may run: round 1 has not run, or every round so far was ok."""
        return self.status in (None, "ok") and len(self.rounds) < self.timing.rounds

    def measure(self, monitor: Monitor | None = None, isolation: Isolation | None = None, job: Job | None = None) -> None:
        """Run the next round and merge it into the case (never raises, except
        KeyboardInterrupt). With `isolation` the round runs in a fresh worker process; under
        torchrun (`job`) in this one, in step with the other ranks."""
        args = (self.workload_cls, self.case.param_dict, self.device, self.timing, self.plan, monitor)
        self.merge(isolation.measure(*args) if isolation is not None else measure_round(*args, job=job))

    def merge(self, outcome: RoundOutcome) -> None:
        """Add the next round's outcome to the case. A round that did not end ok ends the case:
        its status and error (labelled "round N of M: " after round 1) become the case's."""
        first = self.status is None
        self.duration_s += outcome.duration_s
        if outcome.work is not None:
            self.work = outcome.work
        if outcome.verify is not None:
            self.verify = outcome.verify
        if outcome.details:
            self.details = dict(outcome.details)
        if outcome.status != "ok":
            label = "" if first else f"round {len(self.rounds) + 1} of {self.timing.rounds}: "
            self.status, self.error = outcome.status, label + (outcome.error or outcome.status)
            return
        self._add_round(outcome)

    def _add_round(self, outcome: RoundOutcome) -> None:
        plan, raw, energy = outcome.plan, outcome.raw, outcome.energy
        assert plan is not None
        if self.plan is None:
            self.plan = plan
        self.status = "ok"
        self.raw.extend(raw)
        if energy is not None:
            self.energy_parts.append(energy)
        else:
            self.unmeasured_rounds += 1
        for flag in outcome.flags:
            if flag not in self.flags:
                self.flags.append(flag)
        memory = outcome.memory
        if memory is not None and (self.memory is None or (memory.peak_bytes or 0) > (self.memory.peak_bytes or 0)):
            self.memory = memory
        self.rounds.append(Round(
            started_at=outcome.started_at,
            repeats=len(raw),
            seconds_per_iter_median=Summary.of(raw).median,
            avg_watts=energy.avg_watts if energy else None,
            warmup_s=plan.warmup_s,
            warmup_windows=plan.warmup_windows,
            warmup_converged=plan.warmup_converged,
            worker_start_s=outcome.worker_start_s,
        ))

    def _energy(self) -> Energy | None:
        """The case's energy over its rounds, above the device's idle draw; only when every round
        measured it (a total over some rounds would mislead)."""
        if not self.energy_parts or self.unmeasured_rounds:
            return None
        energy = Energy.over_rounds(self.energy_parts)
        return energy.above_idle(self.idle_watts)

    def _flags(self, seconds: Summary, plan: Plan) -> tuple[str, ...]:
        flags = list(self.flags)
        if (seconds.cv or 0.0) > UNSTABLE_CV:
            flags.append("unstable")
        if not all(r.warmup_converged for r in self.rounds):
            flags.append("warmup_unconverged")
        if self.status == "ok" and len(self.rounds) < self.timing.rounds:
            flags.append("rounds_incomplete")
        if plan.launch_bound:  # the host's launches set the pace (timing.probe_launch)
            flags.append("launch_bound")
        return tuple(flags)

    def record(self) -> CaseRecord:
        """The case's result record (the run file's `cases[]` entry) from the rounds so far."""
        result = _base_result(self.case, self.status or "failed", self.error).but(
            duration_s=self.duration_s, verify=self.verify,
            details=dict(self.details),
        )
        point = OperatingPoint.parse(dict(self.operating, sm_clock_mhz=None, avg_watts=None)) if self.operating is not None else None
        if self.work is not None:
            result = result.but(work_unit=self.work.unit, work_per_iter=self.work.per_iter, work_terms=dict(self.work.terms))
        if not self.rounds:
            return result.but(operating_point=point)
        plan, raw, work = self.plan, self.raw, self.work
        assert plan is not None and work is not None  # an ok round set both
        seconds = Summary.of(raw)
        throughput = Summary.of([work.per_iter / s for s in raw])
        energy = self._energy()
        if point is not None and energy is not None:  # what the window observed at the point
            point = point.but(sm_clock_mhz=energy.sm_clock_mhz, avg_watts=energy.avg_watts)
        return result.but(
            iterations=plan.iterations,
            repeats=len(raw),
            seconds_per_iter=seconds,
            raw_seconds=tuple(raw),
            throughput=throughput,
            energy=energy,
            efficiency=CaseRecord.efficiency_of(throughput, energy),
            memory=self.memory,
            timing=Timing(
                warmup_s=sum(r.warmup_s or 0.0 for r in self.rounds),
                warmup_windows=sum(r.warmup_windows or 0 for r in self.rounds),
                warmup_converged=all(r.warmup_converged for r in self.rounds),
                window_s=sum(raw) * plan.iterations,
                enqueue_s_per_iter=plan.enqueue_s_per_iter,
                enqueue_ratio=plan.enqueue_ratio,
            ),
            operating_point=point,
            rounds=tuple(r.but(round=i + 1) for i, r in enumerate(self.rounds)),
            flags=self._flags(seconds, plan),
        )


def run_case(
    case: Case,
    device: DeviceInfo,
    timing: TimingConfig,
    workload_cls: type[Workload],
    monitor: Monitor | None = None,
    idle_watts: float | None = None,
) -> JsonObject:
    """Measure one case, all its rounds back to back, and return its result record as the run
    file holds it (JSON: the pytest plugin's and the benchmarks' API; never raises, except
    KeyboardInterrupt).

    With a monitor, the timed repeats of each round run inside one measurement window: the case
    gets the windows' energy, and efficiency = median throughput / the windows' average watts
    (work per joule: FLOP/J is FLOP/s per W).
    """
    measured = CaseRun(case, device, timing, workload_cls, idle_watts)
    while measured.measuring:
        measured.measure(monitor)
    return measured.record().to_json()


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


def make_cuda_context(device: DeviceInfo) -> str | None:
    """Create this process's CUDA context on `device`; None, or why it could not be made."""
    try:
        torch.zeros(1, device=device.torch_device)
        synchronize(device)
    except Exception as exc:  # noqa: BLE001 - a busy or broken GPU: recorded, the cases will say more
        return one_line(exc)
    return None


def _idle_power(monitor: Monitor, devices: Sequence[DeviceInfo], isolation: Isolation | None) -> dict[str, dict[str, Any]]:
    """Idle power of each device with a CUDA context on every GPU, as the cases will run: made
    here when cases run here, else held by a worker for the length of the measurement (this
    process then never creates one). A context that could not be made is said per device."""
    errors: dict[str, str] = {}
    with contextlib.ExitStack() as contexts:
        for device in devices:
            if device.kind == "cuda":
                why = contexts.enter_context(isolation.holding_context(device)) if isolation else make_cuda_context(device)
                if why:
                    errors[device.id] = why
        idle = measure_idle(monitor)
    for device_id, why in errors.items():
        idle.setdefault(device_id, {})["context_error"] = why
    return idle


def cuda_context_error(device: DeviceInfo) -> str | None:
    """None when this process's CUDA context on `device` still works, else the error a
    synchronize raises there (one line). An illegal address, a device-side assert or an Xid
    leaves a sticky error: every later CUDA call in the process fails with it."""
    try:
        runtime.current().synchronize(device.torch_device)
    except Exception as exc:  # noqa: BLE001 - any failure means the context is gone
        return one_line(exc)
    return None


def _lost_context(case_run: CaseRun, isolation: Isolation | None) -> str | None:
    """After a round that failed in this process on a GPU: the CUDA error that poisoned the
    context, or None when the context still works (or the round ran in a worker process)."""
    if isolation is not None or case_run.device.kind != "cuda" or case_run.status not in ("failed", "oom"):
        return None
    return cuda_context_error(case_run.device)


def _set_operating_point(controller: Controller, case_run: CaseRun) -> bool:
    """The case's power limit and clocks, then the settle time; False (the case failed with the
    reason, the run goes on) when NVML refuses them."""
    try:
        states = controller.apply(case_run.case.operating)
    except Exception as exc:  # noqa: BLE001 - an NVML error: this point cannot be measured
        point = case_run.case.operating.suffix if case_run.case.operating is not None else "as found"
        case_run.merge(RoundOutcome(status="failed", error=f"could not set the operating point {point}: {one_line(exc)}"))
        return False
    state = next((st for st in states if st["device"] == case_run.device.id), states[0])
    case_run.operating = {k: v for k, v in state.items() if k != "device"}
    return True


def run(
    cases: Sequence[Case],
    devices: Sequence[DeviceInfo],
    timing: TimingConfig,
    run_file: RunFile,
    observer: Observer | None = None,
    monitor: Monitor | None = None,
    isolation: Isolation | None = None,
    job: Job | None = None,
    controller: Controller | None = None,
) -> str:
    """Run every case, `timing.rounds` times, writing each result to `run_file` as soon as a
    round of it ends. Returns the run status ("complete" or "aborted").

    With one round the cases run in plan order. With several, each round runs the cases still
    measuring in a new random order (seeded by the run id, so a file says how its order came
    about), so that a case's rounds fall at different times of the run and no case always
    follows the same neighbour. With a monitor, first measures the idle power of each device
    (recorded in the run's `idle_power`), then times every round inside a measurement window.
    With `isolation`, every round of every case runs in a fresh worker process (the idle power
    is still measured here); a worker that dies, or outlives the case timeout, fails its case
    and the run goes on. The run's `settings` record `isolate` and `case_timeout_s`.
    Without isolation, a round that fails on a GPU whose CUDA context no longer works (a sticky
    error: illegal address, device-side assert, Xid) ends the run: the case is recorded failed
    with the CUDA error, the file is finished "aborted" with the reason in `run.abort_reason`,
    and "aborted" is returned. Raises `Interrupted` after saving when interrupted.
    Under torchrun (`job`) every rank runs this with the same cases and run id (so the same order
    of every round), each case in step with the other ranks (`measure_round`); the idle power is
    measured with every rank idle; `run_file` is this rank's shard. A test fault
    (`distributed.FAULT_ENV`) fires when its rank starts its case. With a `controller` (an
    operating-point sweep) each round of a case runs after its power limit and clocks are set and
    settled; the record's `operating_point` says what was asked, what NVML enforced, and the mean
    SM clock and power observed over the timed window.
    """
    from workloads import get

    observer = observer or NullObserver()
    run_file.doc["workloads"] = {name: get(name).schema().to_dict() for name in dict.fromkeys(c.workload for c in cases)}
    run_file.doc["run"].setdefault("settings", {}).update(
        isolate=isolation is not None, case_timeout_s=isolation.case_timeout_s if isolation is not None else None
    )
    by_id = {d.id: d for d in devices}
    order = random.Random(run_file.doc["run"]["id"])
    fault = fault_from_env() if job is not None else None
    total = len(cases) * timing.rounds
    step = 0
    in_flight: tuple[int, CaseRun] | None = None
    try:
        idle: dict[str, dict[str, Any]] = {}
        if monitor is not None:
            if job is not None:
                job.sync(0.0, "the start of the idle-power window")
            idle = _idle_power(monitor, devices, isolation)
            if job is not None:
                job.sync(0.0, "the end of the idle-power window")
            run_file.doc["run"]["idle_power"] = idle
        measured = [
            CaseRun(case, by_id[case.device], timing, get(case.workload), idle.get(case.device, {}).get("watts"))
            for case in cases
        ]
        for round_number in range(1, timing.rounds + 1):
            indices = list(range(len(cases)))
            if timing.rounds > 1:
                order.shuffle(indices)
            for index in indices:
                case_run = measured[index]
                if not case_run.measuring:
                    continue
                in_flight = (index, case_run)
                if not case_run.rounds:  # what the case is if the run ends from outside before it does
                    run_file.start_case(index, _base_result(case_run.case, "interrupted", "interrupted by the user"))
                observer.case_started(cases[index], step, total)
                if job is not None:
                    job.doing = f"running case {case_run.case.id} (round {round_number})"
                    if fault is not None and fault.rank == job.rank and fault.case == index and round_number == 1:
                        fault.fire(job)
                if controller is None or _set_operating_point(controller, case_run):
                    case_run.measure(monitor, isolation, job)
                lost = _lost_context(case_run, isolation)
                if lost is not None:  # every further case would fail the same way: stop here
                    case_run.status = "failed"
                    if lost not in (case_run.error or ""):
                        case_run.error = f"{case_run.error}; then the CUDA context failed: {lost}"
                    run_file.doc["run"]["abort_reason"] = (
                        f"CUDA error on {case_run.device.id} in case {case_run.case.id}, which leaves this process's "
                        f"CUDA context unusable: {lost} (--isolate runs each case in a fresh process)"
                    )
                    result = case_run.record()
                    run_file.put_case(index, result, save=False)
                    in_flight = None
                    observer.case_finished(cases[index], result, step, step + 1, round_number)
                    run_file.finish("aborted", utc_now())
                    return "aborted"
                result = case_run.record()
                run_file.put_case(index, result)
                in_flight = None
                if not case_run.measuring:  # stopped: skipped or failed cases get no more rounds
                    total -= timing.rounds - round_number
                observer.case_finished(cases[index], result, step, total, round_number)
                step += 1
    except KeyboardInterrupt:
        if in_flight is not None:
            index, case_run = in_flight
            if case_run.rounds:  # earlier rounds stand; the record flags the missing ones
                run_file.put_case(index, case_run.record(), save=False)
            else:
                run_file.put_case(index, _base_result(case_run.case, "interrupted", "interrupted by the user"), save=False)
        _save_ignoring_sigint(run_file, "interrupted")
        raise Interrupted() from None
    run_file.finish("complete", utc_now())
    return "complete"
