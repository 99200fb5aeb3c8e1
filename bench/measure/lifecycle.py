"""One round of one case: the workload's life cycle, in this process.

`measure_round` sets a workload up, checks its output against its reference (round 1),
calibrates and warms up, times the repeats inside one measurement window, and tears the
workload down; it returns a small serialisable `RoundOutcome` (a worker process sends it back
as JSON). It never reads a test switch and knows nothing of the run around it: a run under
torchrun passes a `Lockstep` whose hooks keep the ranks together (`bench.measure.modes`); alone,
the hooks do nothing (`SOLO`).

Peak memory is measured over the timed window (`_memory`), and the CUDA context of a failed
round can be checked for a sticky error (`cuda_context_error`).
"""

from __future__ import annotations

import gc
import math
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import psutil
import torch

from bench.errors import Unsupported
from bench.measure import runtime
from bench.measure.distributed import JobBroken, PeerFailed
from bench.measure.hardware import DeviceInfo
from bench.measure.runtime import PoolMemory
from bench.measure.sustain import segment as sustain_segment
from bench.measure.timing import (
    Sustain,
    TimedLoop,
    Timer,
    TimingConfig,
    prepare,
    rewarm,
    run_repeats,
    segment_repeats,
    synchronize,
    timer_for,
)
from bench.measure.workload import Work, Workload
from bench.monitor.process import PROCESS_DEVICE, RU_MAXRSS_BYTES
from bench.monitor.sampler import EnergyResult, Monitor
from bench.record import Energy, Json, JsonObject, Memory, Section, Verify


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


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
        return Memory.parse(
            {
                "peak_bytes": int(rss * RU_MAXRSS_BYTES),
                "source": "getrusage.ru_maxrss (process peak)",
                "scope": "process lifetime",
            }
        )
    if baseline_bytes is None:
        return Memory.parse(
            {"peak_bytes": peak, "source": source, "scope": MEMORY_SCOPE, "process_peak_bytes": peak, "baseline_bytes": None}
        )
    return Memory.parse(
        {
            "peak_bytes": max(0, peak - int(baseline_bytes)),
            "source": source,
            "scope": MEMORY_SCOPE,
            "process_peak_bytes": peak,
            "baseline_bytes": int(baseline_bytes),
        }
    )


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
    plan: TimedLoop | None = None
    raw: list[float] = field(default_factory=list)
    energy: Energy | None = None
    flags: list[str] = field(default_factory=list)
    memory: Memory | None = None
    started_at: str = ""
    duration_s: float = 0.0
    worker_start_s: float | None = None
    details: JsonObject = field(default_factory=dict)
    segments: list[JsonObject] = field(default_factory=list)  # a sustained round's (bench.measure.sustain)
    # The timed window's edges in time.monotonic() seconds (one clock for every process here), so
    # the parent's node-power reader (bench.monitor.node) measures the node over the same window.
    window_s: list[float] = field(default_factory=list)

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
            work=Work(**work) if isinstance(work, dict) else None,  # type: ignore[arg-type]
            plan=TimedLoop(**plan) if isinstance(plan, dict) else None,  # type: ignore[arg-type]
        )


class Lockstep(Protocol):
    """What keeps the ranks of a torchrun job in step through one round (`bench.measure.modes`):
    they agree after set-up and after the check (a case one rank skips or fails is skipped or
    failed on all, with that rank's reason), time with a synchronised timer, bracket the window
    with barriers, and announce a failure after the agreements at the next sync point."""

    def begin(self) -> None:
        """A round starts: the agreements are owed."""

    def set_up(self) -> None:
        """The workload is set up: agree that every rank's is."""

    def timer(self, inner: Timer) -> Timer:
        """The timer the round uses (a job's: the slowest rank's time)."""
        ...

    def checked(self) -> None:
        """The output passed its check (or there was none, a later round): agree on it."""

    def sync(self, what: str) -> None:
        """A sync point of the timed window (`what` names it in errors)."""

    def settled(self) -> None:
        """The round ends by an agreed stop (another rank's failure, the job breaking, Ctrl-C):
        nothing more is owed."""

    def failed(self, status: str, error: str) -> None:
        """The round failed here: say so where the others listen."""

    def end(self, status: str, error: str | None) -> None:
        """The round is over: settle what is still owed with its status."""


class Solo:
    """The lockstep of a process alone: every hook does nothing."""

    def begin(self) -> None:
        pass

    def set_up(self) -> None:
        pass

    def timer(self, inner: Timer) -> Timer:
        return inner

    def checked(self) -> None:
        pass

    def sync(self, what: str) -> None:
        pass

    def settled(self) -> None:
        pass

    def failed(self, status: str, error: str) -> None:
        pass

    def end(self, status: str, error: str | None) -> None:
        pass


SOLO = Solo()


def _check(workload: Workload, device: DeviceInfo, outcome: RoundOutcome) -> bool:
    """Round 1: the work of one iteration, one iteration run and checked against the reference.
    False (the outcome says why) when the output is wrong: a wrong result is never timed."""
    outcome.work = workload.work()
    workload.run()
    synchronize(device)
    check = workload.verify()
    outcome.verify = Verify.parse(check.to_dict())
    outcome.details = dict(workload.details())  # again: the check may add what it found
    if not check.passed:
        outcome.error = f"verification failed: max relative error {check.max_rel_error:.3g} > tolerance {check.tolerance:.3g}"
    return check.passed


def _time(
    workload: Workload,
    device: DeviceInfo,
    timing: TimingConfig,
    plan: TimedLoop | None,
    monitor: Monitor | None,
    timer: Timer,
    lockstep: Lockstep,
    outcome: RoundOutcome,
    baseline: int | None,
) -> None:
    """Calibrate and warm up (round 1) or re-warm (a later round), then time the repeats inside
    one measurement window; the outcome gets the times, the window's energy and flags, and the
    window's peak memory."""
    on_gpu = device.kind == "cuda"
    this_plan = (
        prepare(workload.run, timer, timing, workload.launches_per_iter)
        if plan is None
        else rewarm(workload.run, timer, plan, timing)
    )
    # Memory is measured over the timed window alone (MEMORY_SCOPE): set-up's staging
    # copies and the check's reference are gone by now.
    if on_gpu:
        runtime.current().reset_peak_memory(device.torch_device)
    edge = None if on_gpu else _rss_bytes()
    readings: dict[str, EnergyResult] | None = None
    lockstep.sync("the opening of the measurement window")
    opened = time.monotonic()
    if timing.sustain is not None:
        raw, windows, outcome.segments = _sustained(
            workload, device, this_plan, timing.sustain, monitor, timer, fixed_count=lockstep is not SOLO
        )
        outcome.energy, outcome.flags = _joined(windows, device.id)
        readings = max(windows, key=lambda w: getattr(w.get(device.id), "peak_memory_bytes", None) or 0, default=None)
    else:
        if monitor is not None:
            with monitor.window(lambda: synchronize(device)) as window:
                raw = run_repeats(workload.run, timer, this_plan)
            readings = window.results
        else:
            raw = run_repeats(workload.run, timer, this_plan)
        reading = (readings or {}).get(device.id)
        outcome.energy = Energy.parse(reading.to_dict()) if reading is not None and reading.joules is not None else None
        outcome.flags = list(reading.flags) if reading is not None else ["power_unmeasured"]
    outcome.window_s = [opened, time.monotonic()]
    if not on_gpu:
        edge = max((r for r in (edge, _rss_bytes()) if r is not None), default=None)
    outcome.plan, outcome.raw = this_plan, list(raw)
    graph = workload.graph
    outcome.memory = _memory(device, readings, baseline, edge, graph.pool_memory() if graph is not None else None)
    lockstep.sync("the close of the measurement window")  # last: whatever failed above is announced here


def _sustained(
    workload: Workload,
    device: DeviceInfo,
    plan: TimedLoop,
    sustain: Sustain,
    monitor: Monitor | None,
    timer: Timer,
    fixed_count: bool = False,
) -> tuple[list[float], list[dict[str, EnergyResult]], list[JsonObject]]:
    """A sustained timed window (bench.measure.sustain): segments of about `sustain.segment_s`,
    each its own measurement window, for `sustain.seconds`; returns the raw times of every
    repeat, each segment's window readings and the segments. Alone, each segment's repeats are
    re-sized from the last one's length, so the window lasts its seconds however the machine's
    speed moves; in a job (`fixed_count`) the count is fixed up front from the warm-up, so every
    rank runs the same segments."""
    per_segment = replace(plan, repeats=segment_repeats(plan, sustain.segment_s))
    count = max(1, math.ceil(sustain.seconds / sustain.segment_s))
    raw: list[float] = []
    windows: list[dict[str, EnergyResult]] = []
    segments: list[JsonObject] = []
    opened = time.perf_counter()
    while len(segments) < count if fixed_count else time.perf_counter() - opened < sustain.seconds:
        start = time.perf_counter()
        if monitor is not None:
            with monitor.window(lambda: synchronize(device)) as window:
                part = run_repeats(workload.run, timer, per_segment)
            windows.append(window.results)
        else:
            part = run_repeats(workload.run, timer, per_segment)
        raw += part
        took = time.perf_counter() - start
        reading = windows[-1].get(device.id) if monitor is not None else None
        segments.append(sustain_segment(start - opened, took, part, reading))
        if not fixed_count and took > 0:
            per_segment = replace(per_segment, repeats=max(1, round(per_segment.repeats * sustain.segment_s / took)))
    return raw, windows, segments


def _joined(windows: Sequence[Mapping[str, EnergyResult]], device_id: str) -> tuple[Energy | None, list[str]]:
    """A sustained round's energy (its segments' windows, one after the other) and flags."""
    readings = [w[device_id] for w in windows if device_id in w]
    parts = [Energy.parse(r.to_dict()) for r in readings if r.joules is not None]
    flags = list(dict.fromkeys(f for r in readings for f in r.flags)) if readings else ["power_unmeasured"]
    return (Energy.over_rounds(parts) if parts else None), flags


def _tear_down(workload: Workload | None, device: DeviceInfo) -> None:
    """The workload's buffers freed, and on a GPU the allocator's cache returned."""
    if workload is not None:
        try:
            workload.teardown()
        except Exception:  # noqa: BLE001
            pass
    workload = None
    gc.collect()
    if device.kind == "cuda":
        try:
            runtime.current().release_cached_memory(device.torch_device)
        except Exception:  # noqa: BLE001 - after a sticky CUDA error (illegal address, device-side
            pass  # assert) every CUDA call raises; the round has already failed with the cause


def measure_round(
    workload_cls: type[Workload],
    params: Mapping[str, Any],
    device: DeviceInfo,
    timing: TimingConfig,
    plan: TimedLoop | None = None,
    monitor: Monitor | None = None,
    lockstep: Lockstep = SOLO,
) -> RoundOutcome:
    """Measure one round of one case in this process and say what it gave (never raises, except
    KeyboardInterrupt and a broken job).

    Round 1 (`plan` None) sets the workload up, checks its output, calibrates and warms up
    (`timing.prepare`); a later round sets it up afresh and times round 1's loop `plan` after a
    new warm-up (`timing.rewarm`). With a monitor the timed repeats run inside one measurement
    window, whose reading of `device` becomes the outcome's energy and flags. `lockstep` is
    told of each step (see `Lockstep`).
    """
    started, outcome = time.perf_counter(), RoundOutcome(status="failed", started_at=utc_now())
    workload: Workload | None = None
    lockstep.begin()
    try:
        workload = workload_cls(dict(params), device)
        baseline = None if device.kind == "cuda" else _rss_bytes()  # what the process holds before the case
        workload.setup()
        outcome.details = dict(workload.details())
        timer = lockstep.timer(timer_for(device))
        lockstep.set_up()
        if plan is None and not _check(workload, device, outcome):
            return outcome
        lockstep.checked()
        _time(workload, device, timing, plan, monitor, timer, lockstep, outcome, baseline)
        outcome.status = "ok"
    except PeerFailed as exc:  # another rank's failure, agreed: this rank records it too
        lockstep.settled()
        outcome.status, outcome.error = exc.status, exc.error
    except (JobBroken, KeyboardInterrupt):
        lockstep.settled()
        raise
    except Unsupported as exc:
        outcome.status, outcome.error = "skipped", str(exc)
        lockstep.failed(outcome.status, outcome.error)
    except Exception as exc:  # noqa: BLE001 - a case failing must not stop the run
        outcome.status, outcome.error = ("oom" if _is_oom(exc) else "failed"), one_line(exc)
        lockstep.failed(outcome.status, outcome.error)
    finally:
        lockstep.end(outcome.status, outcome.error)  # failed before an agreement: said there
        _tear_down(workload, device)
        workload = None
        outcome.duration_s = time.perf_counter() - started
    return outcome


def make_cuda_context(device: DeviceInfo) -> str | None:
    """Create this process's CUDA context on `device`; None, or why it could not be made."""
    try:
        torch.zeros(1, device=device.torch_device)
        synchronize(device)
    except Exception as exc:  # noqa: BLE001 - a busy or broken GPU: recorded, the cases will say more
        return one_line(exc)
    return None


def cuda_context_error(device: DeviceInfo) -> str | None:
    """None when this process's CUDA context on `device` still works, else the error a
    synchronize raises there (one line). An illegal address, a device-side assert or an Xid
    leaves a sticky error: every later CUDA call in the process fails with it."""
    try:
        runtime.current().synchronize(device.torch_device)
    except Exception as exc:  # noqa: BLE001 - any failure means the context is gone
        return one_line(exc)
    return None
