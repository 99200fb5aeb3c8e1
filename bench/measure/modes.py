"""How a run measures each round of each case: in this process, in a fresh worker process, or
in step with the other ranks of a torchrun job. The session chooses one mode per run; the runner
talks to it through `Execution` and never asks which one it has.

- `InProcess`: `measure_round` here. A round that fails on a GPU is followed by a check of the
  CUDA context (`lost_context`): a sticky error ends the run, since every later case would fail.
- `Isolated` (`--isolate`): every round in a fresh worker process (`bench.measure.isolate`), so a
  case that kills, poisons or hangs its process fails alone.
- `Ranked` (under torchrun): `measure_round` here, with the job's `Lockstep` hooks: the ranks
  agree after set-up and after the check, time with a synchronised timer and bracket the window
  with barriers. The idle-power window is bracketed the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from bench import testing_hooks
from bench.measure.distributed import Job
from bench.measure.hardware import DeviceInfo
from bench.measure.isolate import Isolation
from bench.measure.lifecycle import RoundOutcome, cuda_context_error, make_cuda_context, measure_round
from bench.measure.timing import TimedLoop, Timer, TimingConfig
from bench.measure.workload import Workload
from bench.monitor.sampler import Monitor
from bench.record import JsonObject

AFTER_SETUP = "the agreement after set-up"
AFTER_CHECK = "the agreement after the check"


class Execution(Protocol):
    """One way of measuring a round (see the module docstring)."""

    def settings(self) -> JsonObject:
        """What the run file's `run.settings` records of the mode (`isolate`, `case_timeout_s`)."""
        ...

    def measure(
        self,
        workload_cls: type[Workload],
        params: Mapping[str, Any],
        device: DeviceInfo,
        timing: TimingConfig,
        plan: TimedLoop | None,
        monitor: Monitor | None,
    ) -> RoundOutcome:
        """One round of one case (never raises, except KeyboardInterrupt and a broken job)."""
        ...

    def idle_context(self, device: DeviceInfo) -> contextlib.AbstractContextManager[str | None]:
        """A CUDA context on `device` for the length of the idle-power window, as the cases will
        have one; yields None, or why it could not be made."""
        ...

    def idle_window(self) -> contextlib.AbstractContextManager[None]:
        """Around the idle-power window (the ranks of a job idle together)."""
        ...

    def before_case(self, index: int, round_number: int, case_id: str) -> None:
        """The case at plan `index` is about to run its round `round_number`."""

    def lost_context(self, device: DeviceInfo, status: str) -> str | None:
        """After a round that ended `status` on `device`: the CUDA error that left this process
        unable to run more cases, or None."""
        ...


@contextlib.contextmanager
def _own_context(device: DeviceInfo) -> Iterator[str | None]:
    yield make_cuda_context(device)


class InProcess:
    """Rounds measured in this process, one after the other."""

    def settings(self) -> JsonObject:
        return {"isolate": False, "case_timeout_s": None}

    def measure(
        self,
        workload_cls: type[Workload],
        params: Mapping[str, Any],
        device: DeviceInfo,
        timing: TimingConfig,
        plan: TimedLoop | None,
        monitor: Monitor | None,
    ) -> RoundOutcome:
        return measure_round(workload_cls, params, device, timing, plan, monitor)

    def idle_context(self, device: DeviceInfo) -> contextlib.AbstractContextManager[str | None]:
        return _own_context(device)

    def idle_window(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def before_case(self, index: int, round_number: int, case_id: str) -> None:
        pass

    def lost_context(self, device: DeviceInfo, status: str) -> str | None:
        """A failed round on a GPU may leave a sticky error (illegal address, device-side
        assert, Xid): then every later CUDA call in the process fails with it."""
        if device.kind != "cuda" or status not in ("failed", "oom"):
            return None
        return cuda_context_error(device)


class Isolated:
    """Every round in a fresh worker process (`bench.measure.isolate.Isolation`)."""

    def __init__(self, isolation: Isolation) -> None:
        self.isolation = isolation

    def settings(self) -> JsonObject:
        return {"isolate": True, "case_timeout_s": self.isolation.case_timeout_s}

    def measure(
        self,
        workload_cls: type[Workload],
        params: Mapping[str, Any],
        device: DeviceInfo,
        timing: TimingConfig,
        plan: TimedLoop | None,
        monitor: Monitor | None,
    ) -> RoundOutcome:
        return self.isolation.measure(workload_cls, params, device, timing, plan, monitor)

    def idle_context(self, device: DeviceInfo) -> contextlib.AbstractContextManager[str | None]:
        """Held by a worker for the length of the window: this process never makes one."""
        return self.isolation.holding_context(device)

    def idle_window(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def before_case(self, index: int, round_number: int, case_id: str) -> None:
        pass

    def lost_context(self, device: DeviceInfo, status: str) -> str | None:
        return None  # the worker's context died with it; this process never made one


class RankLockstep:
    """The `Lockstep` of one rank of a job: the agreement this rank still owes the others
    (after set-up, so no rank enters a workload's own collectives while another failed to set
    up; after the check), and a failure after both announced at the next sync point."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.pending: str | None = None

    def begin(self) -> None:
        self.pending = AFTER_SETUP

    def set_up(self) -> None:
        testing_hooks.before_setup()  # a test fault may fail this rank's set-up here
        self.job.agree("ok", None, AFTER_SETUP)
        self.pending = AFTER_CHECK

    def timer(self, inner: Timer) -> Timer:
        return self.job.timer(inner)

    def checked(self) -> None:
        self.job.agree("ok", None, AFTER_CHECK)
        self.pending = None

    def sync(self, what: str) -> None:
        self.job.sync(0.0, what)

    def settled(self) -> None:
        self.pending = None

    def failed(self, status: str, error: str) -> None:
        if self.pending is None:  # before the agreements, `end` says it there
            self.job.fail(status, error or status, "the announcement of a failed case")

    def end(self, status: str, error: str | None) -> None:
        if self.pending is not None:
            self.job.agree(status, error, self.pending)
            self.pending = None


class Ranked(InProcess):
    """Rounds measured here in step with the job's other ranks."""

    def __init__(self, job: Job, fault: testing_hooks.Fault | None = None) -> None:
        self.job = job
        self.fault = fault  # a test fault (testing_hooks.FAULT_ENV): fires when its rank starts its case

    def measure(
        self,
        workload_cls: type[Workload],
        params: Mapping[str, Any],
        device: DeviceInfo,
        timing: TimingConfig,
        plan: TimedLoop | None,
        monitor: Monitor | None,
    ) -> RoundOutcome:
        return measure_round(workload_cls, params, device, timing, plan, monitor, RankLockstep(self.job))

    @contextlib.contextmanager
    def _idle_together(self) -> Iterator[None]:
        self.job.sync(0.0, "the start of the idle-power window")
        yield
        self.job.sync(0.0, "the end of the idle-power window")

    def idle_window(self) -> contextlib.AbstractContextManager[None]:
        return self._idle_together()

    def before_case(self, index: int, round_number: int, case_id: str) -> None:
        self.job.doing = f"running case {case_id} (round {round_number})"
        if self.fault is not None and self.fault.applies(self.job.rank, index, round_number):
            self.fault.fire()
