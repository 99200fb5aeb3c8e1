"""Cases in, results out: the run loop and each case's record.

The runner keeps no process-global state between cases (so one process per rank can run it)
and writes each case to the run file as soon as a round of it ends. A case that cannot run on
its device is "skipped", one that raises or fails its check is "failed", one that runs out of
memory is "oom"; the run goes on, unless a round that failed in this process left its CUDA
context unusable (a sticky error): then the file is finished "aborted" and no further case runs.
Ctrl-C marks the case in flight "interrupted" (or, when earlier rounds of it ended, keeps them
and flags `rounds_incomplete`), finishes the file and raises `Interrupted`.

A round of a case is measured by the run's execution mode (`bench.measure.modes`: in this
process, in a worker process, or in step with a job's other ranks), which returns a
`RoundOutcome` (`bench.measure.lifecycle`); `CaseRun.merge` adds it to the case, and
`CaseRun.record` is the case's typed record (`bench.record.CaseRecord`) so far. What surrounds
the run (mode, monitor, operating points) comes in one `RunContext`, composed by the session
(`bench.measure.session`).
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import bench
from bench.device.base import ErrorWatch
from bench.measure.hardware import DeviceInfo, HostInfo
from bench.measure.lifecycle import RoundOutcome, one_line, utc_now
from bench.measure.modes import Execution, InProcess
from bench.measure.plan import Case
from bench.measure.sustain import FLAG as SUSTAINED_DROP
from bench.measure.sustain import sustained_record
from bench.measure.timing import UNSTABLE_CV, TimedLoop, TimingConfig
from bench.measure.workload import Work, Workload
from bench.monitor.base import SOURCE_NOMINAL
from bench.monitor.node import NodePower
from bench.monitor.sampler import Monitor
from bench.record import CaseRecord, Energy, JsonObject, Memory, OperatingState, Round, Summary, Timing, Verify
from bench.results import SCHEMA, RunFile


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


def new_run_document(
    command: str, host: HostInfo, devices: Sequence[DeviceInfo], timing: TimingConfig, planned: int
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "run": {
            "id": uuid.uuid4().hex,
            "started_at": utc_now(),
            "finished_at": None,
            "wattbench_version": bench.__version__,
            "command": command,
            "status": "running",
            "settings": timing.settings(),
            "cases_planned": planned,
        },
        "host": host.to_dict(),
        "devices": [d.to_dict() for d in devices],
        "cases": [],
    }


def _base_result(case: Case, status: str, error: str | None = None) -> CaseRecord:
    """The record of a case that has no figures (yet): skipped, failed before timing, interrupted."""
    return CaseRecord.started(case.id, case.workload, dict(case.param_dict), case.device, status, error)


class CaseRun:
    """One case measured in one or more rounds; `record()` is its result so far.

    Round 1 sets the workload up, checks its output, calibrates and warms up; each later round
    sets it up afresh (new buffers, so memory placement is sampled too), warms up again and
    times the same loop (`bench.measure.timing.rewarm`). Raw times of all rounds are pooled in
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
        node: NodePower | None = None,
    ) -> None:
        self.case, self.device, self.timing = case, device, timing
        self.workload_cls, self.idle_watts, self.node = workload_cls, idle_watts, node
        self.node_parts: list[Energy | None] = []  # each ok round's node energy (None: withheld)
        self.status: str | None = None  # None until round 1 has run
        self.error: str | None = None
        self.work: Work | None = None
        self.verify: Verify | None = None
        self.plan: TimedLoop | None = None
        self.raw: list[float] = []
        self.segments: list[JsonObject] = []  # a sustained round's (bench.measure.sustain)
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

    def measure(self, monitor: Monitor | None = None, execution: Execution | None = None) -> None:
        """Run the next round and merge it into the case (never raises, except
        KeyboardInterrupt): in this process, or as `execution` measures rounds
        (`bench.measure.modes`). A monitor without sources measures nothing."""
        window = monitor if monitor is not None and monitor.sources else None
        execution = execution or InProcess()
        self.merge(execution.measure(self.workload_cls, self.case.param_dict, self.device, self.timing, self.plan, window))

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
        self.segments.extend(outcome.segments)
        if energy is not None:
            self.energy_parts.append(energy)
        else:
            self.unmeasured_rounds += 1
        node_flags: tuple[str, ...] = ()
        if self.node is not None and len(outcome.window_s) == 2:
            window = self.node.window(*outcome.window_s)
            self.node_parts.append(window.energy)
            node_flags = window.flags
        for flag in (*outcome.flags, *node_flags):
            if flag not in self.flags:
                self.flags.append(flag)
        memory = outcome.memory
        if memory is not None and (self.memory is None or (memory.peak_bytes or 0) > (self.memory.peak_bytes or 0)):
            self.memory = memory
        self.rounds.append(
            Round(
                started_at=outcome.started_at,
                repeats=len(raw),
                seconds_per_iter_median=Summary.of(raw).median,
                avg_watts=energy.avg_watts if energy else None,
                warmup_s=plan.warmup_s,
                warmup_windows=plan.warmup_windows,
                warmup_converged=plan.warmup_converged,
                worker_start_s=outcome.worker_start_s,
            )
        )

    def _energy(self) -> Energy | None:
        """The case's energy over its rounds, above the device's idle draw; only when every round
        measured it (a total over some rounds would mislead)."""
        if not self.energy_parts or self.unmeasured_rounds:
            return None
        energy = Energy.over_rounds(self.energy_parts)
        return energy.above_idle(self.idle_watts)

    def _node_energy(self) -> Energy | None:
        """The node's energy over the case's windows, only when every round has one."""
        parts = [p for p in self.node_parts if p is not None]
        if not parts or len(parts) < len(self.node_parts):
            return None
        return Energy.over_rounds(parts)

    def _flags(self, seconds: Summary, plan: TimedLoop) -> tuple[str, ...]:
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
            duration_s=self.duration_s,
            verify=self.verify,
            details=dict(self.details),
        )
        point = (
            OperatingState.parse(dict(self.operating, sm_clock_mhz=None, avg_watts=None)) if self.operating is not None else None
        )
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
        flags = self._flags(seconds, plan)
        if cap_not_binding(point, energy, flags):
            flags = (*flags, CAP_NOT_BINDING)
        if self.segments and self.timing.sustain is not None:
            sustained, dropped = sustained_record(self.segments, work.per_iter, self.timing.sustain)
            result = result.but(sustained=sustained).with_keys("sustained")
            if dropped:
                flags = (*flags, SUSTAINED_DROP)
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
            flags=flags,
            node_energy=self._node_energy(),
        )


CAP_NOT_BINDING = "cap_not_binding"
CAP_MARGIN = 0.05  # the highest sample stays this far (a fraction) below the enforced limit


def cap_not_binding(point: OperatingState | None, energy: Energy | None, flags: Sequence[str]) -> bool:
    """A power-limit point that changed nothing: the driver never reported the power cap holding
    the clocks back (no `throttled:sw_power_cap` in the window) and the highest power sample stayed
    more than CAP_MARGIN below the enforced limit. The highest sample, not the average: an average
    under the cap can hide clipped peaks. Such a point is the GPU as found; clocks, not caps, are
    the lever there (an H200 decoding draws 137-300 W of its 700 W)."""
    if point is None or energy is None or point.power_limit_request is None:
        return False
    limit, peak = point.enforced_power_limit_w, energy.peak_watts
    if not isinstance(limit, int | float) or not isinstance(peak, int | float) or limit <= 0:
        return False
    return "throttled:sw_power_cap" not in flags and peak < limit * (1 - CAP_MARGIN)


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


IDLE_WINDOW_S = 1.0


def measure_idle(monitor: Monitor, seconds: float = IDLE_WINDOW_S) -> JsonObject:
    """Average watts per device with nothing running: the baseline for dynamic energy. Where
    no source measures power (only memory is sampled, or a nominal wattage stands in, which has
    no idle draw), there is nothing to wait for: {} at once."""
    if not any((s.counter_source or s.power_source) and s.power_source != SOURCE_NOMINAL for s in monitor.sources):
        return {}
    with monitor.window() as window:
        time.sleep(seconds)
    return {
        device: {"watts": r.avg_watts, "source": r.source, "duration_s": r.duration_s, "flags": list(r.flags)}
        for device, r in window.results.items()
        if r.avg_watts is not None and not r.estimate  # a nominal wattage has no idle to measure
    }


def idle_power(monitor: Monitor, devices: Sequence[DeviceInfo], execution: Execution) -> JsonObject:
    """Idle power of each device with a CUDA context on every GPU, as the cases will run: made
    here when cases run here, else held by a worker for the length of the measurement (this
    process then never creates one). A context that could not be made is said per device."""
    errors: dict[str, str] = {}
    with contextlib.ExitStack() as contexts:
        for device in devices:
            if device.kind == "cuda":
                why = contexts.enter_context(execution.idle_context(device))
                if why:
                    errors[device.id] = why
        idle = measure_idle(monitor)
    for device_id, why in errors.items():
        entry = idle.setdefault(device_id, {})
        assert isinstance(entry, dict)
        entry["context_error"] = why
    return idle


class OperatingControl(Protocol):
    """Sets a case's operating point (`bench.control.controller.Controller`): returns what each
    GPU enforces now, or None when nothing is set (a run without a sweep)."""

    def apply(self, point: Any) -> list[dict[str, Any]] | None: ...


class AsFound:
    """The operating point of a run without a sweep: the devices run as they were found."""

    def apply(self, point: Any) -> None:
        return None


@dataclass(frozen=True)
class RunContext:
    """What the session composes around a run: how rounds are measured (`bench.measure.modes`),
    the monitor whose windows the timed repeats run in (one without sources measures nothing),
    and what sets each case's operating point."""

    execution: Execution = field(default_factory=InProcess)
    monitor: Monitor = field(default_factory=lambda: Monitor([]))
    controller: OperatingControl = field(default_factory=AsFound)
    node: NodePower | None = None  # the node's BMC, where this process reads it (bench.monitor.node)


def _set_operating_point(controller: OperatingControl, case_run: CaseRun) -> bool:
    """The case's power limit and clocks, then the settle time; False (the case failed with the
    reason, the run goes on) when the driver refuses them."""
    try:
        states = controller.apply(case_run.case.operating)
    except Exception as exc:  # noqa: BLE001 - an NVML error: this point cannot be measured
        point = case_run.case.operating.suffix if case_run.case.operating is not None else "as found"
        case_run.merge(RoundOutcome(status="failed", error=f"could not set the operating point {point}: {one_line(exc)}"))
        return False
    if states is not None:
        state = next((st for st in states if st["device"] == case_run.device.id), states[0])
        case_run.operating = {k: v for k, v in state.items() if k != "device"}
    return True


class _Run:
    """One run's progress: the cases measured so far, the one in flight, the observer's count."""

    def __init__(
        self,
        cases: Sequence[Case],
        devices: Sequence[DeviceInfo],
        timing: TimingConfig,
        run_file: RunFile,
        observer: Observer,
        context: RunContext,
    ) -> None:
        self.cases, self.timing, self.run_file, self.observer, self.context = cases, timing, run_file, observer, context
        self.devices = devices
        self.total, self.step = len(cases) * timing.rounds, 0
        self.in_flight: tuple[int, CaseRun] | None = None
        self.measured: list[CaseRun] = []

    def start(self) -> None:
        """The idle power (with a monitor that measures something), then the cases' records."""
        from workloads import get

        idle: JsonObject = {}
        if self.context.monitor.sources:
            with self.context.execution.idle_window():
                idle = idle_power(self.context.monitor, self.devices, self.context.execution)
            self.run_file.doc["run"]["idle_power"] = idle
        by_id = {d.id: d for d in self.devices}

        def idle_watts(device_id: str) -> float | None:
            entry = idle.get(device_id)
            watts = entry.get("watts") if isinstance(entry, dict) else None
            return float(watts) if isinstance(watts, (int, float)) else None

        self.measured = [
            CaseRun(c, by_id[c.device], self.timing, get(c.workload), idle_watts(c.device), self.context.node) for c in self.cases
        ]

    def order(self) -> Iterator[tuple[int, int]]:
        """(round number, plan index) in the order they run: plan order for one round; with
        several, each round in a new random order seeded by the run id."""
        shuffle = random.Random(self.run_file.doc["run"]["id"])
        for round_number in range(1, self.timing.rounds + 1):
            indices = list(range(len(self.cases)))
            if self.timing.rounds > 1:
                shuffle.shuffle(indices)
            for index in indices:
                yield round_number, index

    def measure(self, round_number: int, index: int) -> bool:
        """Measure one round of one case and write its record; False when the run must stop
        (the CUDA context is lost)."""
        case_run, execution = self.measured[index], self.context.execution
        self.in_flight = (index, case_run)
        if not case_run.rounds:  # what the case is if the run ends from outside before it does
            self.run_file.start_case(index, _base_result(case_run.case, "interrupted", "interrupted by the user"))
        self.observer.case_started(self.cases[index], self.step, self.total)
        execution.before_case(index, round_number, case_run.case.id)
        if _set_operating_point(self.context.controller, case_run):
            case_run.measure(self.context.monitor, execution)
        lost = execution.lost_context(case_run.device, case_run.status or "failed")
        if lost is not None:  # every further case would fail the same way: stop here
            self._abort(index, case_run, lost, round_number)
            return False
        result = case_run.record()
        self.run_file.put_case(index, result)
        self.in_flight = None
        if not case_run.measuring:  # stopped: skipped or failed cases get no more rounds
            self.total -= self.timing.rounds - round_number
        self.observer.case_finished(self.cases[index], result, self.step, self.total, round_number)
        self.step += 1
        return True

    def _abort(self, index: int, case_run: CaseRun, lost: str, round_number: int) -> None:
        case_run.status = "failed"
        if lost not in (case_run.error or ""):
            case_run.error = f"{case_run.error}; then the CUDA context failed: {lost}"
        self.run_file.doc["run"]["abort_reason"] = (
            f"CUDA error on {case_run.device.id} in case {case_run.case.id}, which leaves this process's "
            f"CUDA context unusable: {lost} (--isolate runs each case in a fresh process)"
        )
        result = case_run.record()
        self.run_file.put_case(index, result, save=False)
        self.in_flight = None
        self.observer.case_finished(self.cases[index], result, self.step, self.step + 1, round_number)
        self.run_file.finish("aborted", utc_now())

    def interrupted(self) -> None:
        """Ctrl-C: the case in flight keeps its earlier rounds (flagged) or becomes "interrupted"."""
        if self.in_flight is not None:
            index, case_run = self.in_flight
            if case_run.rounds:  # earlier rounds stand; the record flags the missing ones
                self.run_file.put_case(index, case_run.record(), save=False)
            else:
                self.run_file.put_case(index, _base_result(case_run.case, "interrupted", "interrupted by the user"), save=False)
        _save_ignoring_sigint(self.run_file, "interrupted")


def run(
    cases: Sequence[Case],
    devices: Sequence[DeviceInfo],
    timing: TimingConfig,
    run_file: RunFile,
    observer: Observer | None = None,
    context: RunContext | None = None,
) -> str:
    """Run every case, `timing.rounds` times, writing each result to `run_file` as soon as a
    round of it ends. Returns the run status ("complete" or "aborted").

    With one round the cases run in plan order. With several, each round runs the cases still
    measuring in a new random order (seeded by the run id, so a file says how its order came
    about), so that a case's rounds fall at different times of the run and no case always
    follows the same neighbour. With a monitor that measures something, first measures the idle
    power of each device (the run's `idle_power`), then times every round inside a measurement
    window. How a round is measured is the context's `execution` (`bench.measure.modes`; the
    run's `settings` record it); its `controller` sets each case's operating point first (the
    record's `operating_point` says what was asked, what the driver enforced, and the mean SM
    clock and power observed). A round that leaves the process's CUDA context unusable ends the
    run: the case is recorded failed, the file is finished "aborted" with the reason in
    `run.abort_reason`, and "aborted" is returned. Raises `Interrupted` after saving when
    interrupted.
    """
    from workloads import get

    context = context or RunContext()
    run_file.doc["workloads"] = {name: get(name).schema().to_dict() for name in dict.fromkeys(c.workload for c in cases)}
    run_file.doc["run"].setdefault("settings", {}).update(context.execution.settings())
    state = _Run(cases, devices, timing, run_file, observer or NullObserver(), context)
    with contextlib.ExitStack() as stack:
        watches = _watch_errors(devices, stack)
        try:
            state.start()
            for round_number, index in state.order():
                if state.measured[index].measuring and not state.measure(round_number, index):
                    return "aborted"
        except KeyboardInterrupt:
            state.interrupted()
            raise Interrupted() from None
    record_health(run_file, devices, watches)
    run_file.finish("complete", utc_now())
    return "complete"


def _gpus(devices: Sequence[DeviceInfo]) -> list[DeviceInfo]:
    """The whole GPUs among `devices` (a MIG instance or a partition has no health of its own)."""
    return [d for d in devices if d.kind == "cuda" and d.uuid and not d.mig]


def _watch_errors(devices: Sequence[DeviceInfo], stack: contextlib.ExitStack) -> dict[str, ErrorWatch]:
    """Each GPU's error watch (NVIDIA: Xid events), open for the run: by UUID."""
    from bench.device import vendor_for
    from bench.device.base import DeviceError

    by_vendor: dict[str, tuple[Any, list[str]]] = {}
    for device in _gpus(devices):
        try:
            vendor = vendor_for(str(device.uuid))
        except DeviceError:
            continue
        by_vendor.setdefault(vendor.name, (vendor, []))[1].append(str(device.uuid))
    watches: dict[str, ErrorWatch] = {}
    for vendor, uuids in by_vendor.values():
        watch = stack.enter_context(vendor.watch_errors(uuids))
        watches.update({uuid: watch for uuid in uuids})
    return watches


def record_health(run_file: RunFile, devices: Sequence[DeviceInfo], watches: dict[str, ErrorWatch] | None = None) -> None:
    """Each GPU's health signals (bench.device.base.GpuHealth) into its `devices` entry, read once
    the run completes, after its last case (a PCIe link may have trained down by then, so the fleet
    report compares the generation with the siblings'), with the error events its watch saw during
    the run (`xid_events`: [] when watched and none came). Best effort: a vendor that reads none,
    or an error, leaves the entry as it was."""
    from bench.device import vendor_for
    from bench.device.base import DeviceError

    entries = {entry.get("id"): entry for entry in run_file.doc.get("devices") or [] if isinstance(entry, dict)}
    for device in _gpus(devices):
        if device.id not in entries:
            continue
        uuid = str(device.uuid)
        try:
            health = vendor_for(uuid).health(uuid)
        except DeviceError:
            health = None
        found: JsonObject = dict(health.to_dict()) if health is not None else {}
        watch = (watches or {}).get(uuid)
        if watch is not None and watch.watching and uuid in watch.events:
            found["xid_events"] = list(watch.events[uuid])
        if found:
            entries[device.id]["health"] = found
