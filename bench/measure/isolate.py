"""Process isolation: each round of a case runs in a fresh worker process (the parent side).

In one process, a CUDA error that poisons the context (illegal memory access, device-side
assert), a segfault in a library or a kernel that never returns ends or freezes the whole run.
Isolated, such a case fails alone: the parent starts `python -m bench.measure.worker` (a new
interpreter through subprocess, never a fork: a fork after CUDA initialisation is broken),
sends it the round as a JSON request on its stdin, and reads its messages ("ready" once its imports
are done, then the round's `RoundOutcome`) on a pipe of their own, since a workload or library
may print to stdout. The worker measures inside its own monitor window; the parent only merges.

A worker that dies without an outcome, or outlives the case timeout counted from its "ready",
gives a failed round whose error says why; the parent owns Ctrl-C (the worker is in a session of
its own, so the terminal's SIGINT does not reach it) and kills the worker before re-raising. A
worker whose parent dies sees its stdin close and exits at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bench
from bench.errors import UsageError
from bench.measure.hardware import DeviceInfo
from bench.measure.lifecycle import RoundOutcome, one_line, utc_now
from bench.measure.timing import TimedLoop, TimingConfig
from bench.measure.workload import Workload
from bench.monitor.nominal import NominalSource
from bench.monitor.sampler import Monitor

DEFAULT_CASE_TIMEOUT_S = 600.0
MIN_STARTUP_S = 120.0  # importing torch and creating a CUDA context on a busy machine
TERM_GRACE_S = 2.0  # between SIGTERM and SIGKILL when a worker is stopped for its timeout
EXIT_WAIT_S = 10.0  # for a worker to exit after its outcome (the driver frees its GPU memory)
KILL_WAIT_S = 30.0  # for a SIGKILLed worker to go; longer means it is stuck in the driver
STDERR_TAIL_BYTES = 4096
MAX_ERROR_CHARS = 300


def default_timeout_s(timing: TimingConfig | None) -> float:
    """A case timeout no honest round reaches: DEFAULT_CASE_TIMEOUT_S, or three times what the
    timing settings let a round take (warm-up limit, timed window, repeats) plus two minutes
    for set-up and verification when that is longer (a --min-time of 900 s must not time out)."""
    if timing is None:
        return DEFAULT_CASE_TIMEOUT_S
    window_s = max(timing.min_time_s, timing.repeats * timing.repeat_time_s)
    return max(DEFAULT_CASE_TIMEOUT_S, 3 * (timing.warmup_max_s + window_s) + 120.0)


def from_options(
    isolate: bool | None, case_timeout_s: float | None, devices: Sequence[DeviceInfo], timing: TimingConfig | None = None
) -> Isolation | None:
    """The run's isolation from `--isolate/--no-isolate` (None: not given) and `--case-timeout`
    (seconds, None: not given); None means every case runs in this process.

    Default: isolated when a device of the run is a GPU (a CUDA error poisons the process),
    in process on the CPU only, where a worker's start-up (about a second: importing torch)
    would dominate short suites. A timeout implies isolation; with --no-isolate it is a
    usage error, since a case in this process cannot be stopped.
    """
    if isolate is False and case_timeout_s is not None:
        raise UsageError("--case-timeout needs process isolation: it cannot be combined with --no-isolate")
    if isolate is None:
        isolate = case_timeout_s is not None or any(d.kind == "cuda" for d in devices)
    if not isolate:
        return None
    return Isolation(default_timeout_s(timing) if case_timeout_s is None else float(case_timeout_s))


@dataclass(frozen=True)
class Isolation:
    """How rounds run in worker processes. `case_timeout_s`: the longest a round may take from
    its worker's "ready" to its outcome; `startup_timeout_s`: the longest a worker may take to
    get ready (None: max(120 s, the case timeout)). Seconds."""

    case_timeout_s: float = DEFAULT_CASE_TIMEOUT_S
    startup_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not self.case_timeout_s > 0:
            raise ValueError(f"case timeout must be > 0 seconds, got {self.case_timeout_s}")

    @property
    def startup_limit_s(self) -> float:
        return self.startup_timeout_s if self.startup_timeout_s is not None else max(MIN_STARTUP_S, self.case_timeout_s)

    def measure(
        self,
        workload_cls: type[Workload],
        params: Mapping[str, Any],
        device: DeviceInfo,
        timing: TimingConfig,
        plan: TimedLoop | None = None,
        monitor: Monitor | None = None,
    ) -> RoundOutcome:
        """`lifecycle.measure_round` in a fresh worker process, same arguments and contract (never
        raises, except KeyboardInterrupt, after which no worker is left running). The monitor's
        sources are not used here: the worker builds its own for `device` from their settings."""
        started, started_at = time.monotonic(), utc_now()

        def failed(error: str) -> RoundOutcome:
            return RoundOutcome("failed", error, started_at=started_at, duration_s=time.monotonic() - started)

        if "<locals>" in workload_cls.__qualname__:
            return failed(
                f"workload class {workload_cls.__module__}.{workload_cls.__qualname__} is defined inside a function, "
                "so a worker process cannot import it (define it at module level, or run with --no-isolate)"
            )
        try:
            request = json.dumps(make_request(workload_cls, params, device, timing, plan, monitor)) + "\n"
        except (TypeError, ValueError) as exc:
            return failed(f"cannot send the case to a worker process: {one_line(exc)}")
        try:
            worker = _Worker(request)
        except OSError as exc:
            return failed(f"cannot start a worker process: {one_line(exc)}")
        try:
            outcome = worker.outcome(self.startup_limit_s, self.case_timeout_s)
        finally:
            worker.close()
        if isinstance(outcome, str):
            return failed(outcome)
        return outcome

    @contextlib.contextmanager
    def holding_context(self, device: DeviceInfo) -> Iterator[str | None]:
        """A worker holding a CUDA context on `device` while the block runs: for the idle power
        of a GPU as the cases will find it (a GPU with a context idles higher than one without),
        with no context in this process, where it would stay for the whole run, keep GPU memory
        from the cases, and in EXCLUSIVE_PROCESS compute mode stop every worker from creating
        one. Yields None, or why the worker holds no context."""
        why: str | None = None
        try:
            worker: _Worker | None = _Worker(
                json.dumps({"hold_context": True, "device": asdict(device), "sys_path": _sys_path()}) + "\n"
            )
        except OSError as exc:
            worker, why = None, f"cannot start a worker process: {one_line(exc)}"
        try:
            if worker is not None:
                try:
                    message = worker._message(time.monotonic() + self.startup_limit_s)
                except (TimeoutError, ValueError) as exc:
                    message, why = None, f"no CUDA context for the idle measurement: {one_line(exc) or 'timed out'}"
                if message is None and why is None:
                    why = f"no CUDA context for the idle measurement: {worker._death()}"
                elif message is not None and message.get("error"):
                    why = f"no CUDA context for the idle measurement: {message['error']}"
            yield why
        finally:
            if worker is not None:
                worker.close()


def _sys_path() -> list[str]:
    return [os.getcwd() if entry == "" else entry for entry in sys.path]


def make_request(
    workload_cls: type[Workload],
    params: Mapping[str, Any],
    device: DeviceInfo,
    timing: TimingConfig,
    plan: TimedLoop | None,
    monitor: Monitor | None,
) -> dict[str, Any]:
    """The worker's request, JSON-ready. The workload travels as its class's module and qualname
    (so a workload outside the registry, a test's or a plugin's, imports in the worker) with the
    parent's sys.path, as multiprocessing's spawn does; the device as its full description, so
    the worker scans no GPU; the monitor as settings, so the worker builds its own sources."""
    return {
        "workload": {"name": workload_cls.name, "module": workload_cls.__module__, "qualname": workload_cls.__qualname__},
        "params": dict(params),
        "device": asdict(device),
        "timing": timing.settings(),
        "plan": asdict(plan) if plan is not None else None,
        "monitor": monitor_settings(monitor, device.id),
        "sys_path": _sys_path(),
    }


def monitor_settings(monitor: Monitor | None, device_id: str) -> dict[str, Any] | None:
    """What a worker needs to measure `device_id` as `monitor` does: the sampling interval,
    whether a source measures the device here, the nominal watts if that source is a nominal
    one, and the update periods this process probed (seconds), which the worker copies instead
    of probing again. None: no monitor."""
    if monitor is None:
        return None
    source = next((s for s in monitor.sources if s.device_id == device_id), None)
    return {
        "interval_s": monitor.interval_s,
        "measured": source is not None,
        "nominal_watts": source.watts if isinstance(source, NominalSource) else None,
        "counter_source": source.counter_source if source is not None else None,
        "power_source": source.power_source if source is not None else None,
        "counter_update_s": source.counter_update_s if source is not None else None,
        "power_update_s": source.power_update_s if source is not None else None,
    }


def _worker_env() -> dict[str, str]:
    """This environment with the folder holding `bench` first on PYTHONPATH, so that the worker
    imports the same wattbench as this process, whatever the working directory."""
    env = dict(os.environ)
    root = str(Path(bench.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


class _Worker:
    """One running worker process: its stdin (the request, then held open: closing it tells the
    worker to exit), the read end of its message pipe, and its stdout and stderr in a temp file."""

    def __init__(self, request: str) -> None:
        self.log = tempfile.TemporaryFile(prefix="wattbench-worker-")
        self.buffer = b""
        self.unkillable = False
        read_fd, write_fd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.measure.worker", str(write_fd)],
                stdin=subprocess.PIPE,
                stdout=self.log,
                stderr=self.log,
                pass_fds=(write_fd,),
                start_new_session=True,
                env=_worker_env(),
            )
        except BaseException:
            os.close(read_fd)
            self.log.close()
            raise
        finally:
            os.close(write_fd)  # the worker holds the only write end: EOF here when it exits
        self.fd = read_fd
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(request.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # died at once: reported from its exit status
        except BaseException:  # an interrupt: leave no worker behind
            self.close()
            raise

    def outcome(self, startup_s: float, timeout_s: float) -> RoundOutcome | str:
        """Wait for "ready" (at most `startup_s` from now), then for the outcome (at most
        `timeout_s` from "ready"). The outcome, or why there is none (the worker is then
        stopped)."""
        started = time.monotonic()
        deadline, ready_s = started + startup_s, None
        while True:
            try:
                message = self._message(deadline)
            except TimeoutError:
                self.stop()
                why = f"worker did not start within {startup_s:g} s" if ready_s is None else f"timed out after {timeout_s:g} s"
                if self.unkillable:
                    why += f"; the worker did not die within {KILL_WAIT_S:g} s of SIGKILL (stuck in the driver: is the GPU hung?)"
                return why
            except ValueError as exc:
                self.stop()
                return f"worker sent a damaged message: {one_line(exc)}"
            if message is None:
                return self._death()
            if message.get("type") == "ready" and ready_s is None:
                ready_s = time.monotonic() - started
                deadline = time.monotonic() + timeout_s
            elif message.get("type") == "outcome":
                try:
                    outcome = RoundOutcome.from_json(message["outcome"])
                except (KeyError, TypeError, ValueError) as exc:
                    self.stop()
                    return f"worker sent a damaged outcome: {one_line(exc)}"
                outcome.worker_start_s = ready_s
                try:
                    self.proc.wait(EXIT_WAIT_S)
                except subprocess.TimeoutExpired:
                    self.stop()
                return outcome

    def _message(self, deadline: float) -> dict[str, Any] | None:
        """The next message; None at EOF (the worker exited or closed the pipe); TimeoutError
        past `deadline` (time.monotonic() seconds); ValueError for a line that is not JSON."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if not poller.poll(max(1, int(remaining * 1000))):
                continue
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"expected a JSON object, got {type(message).__name__}")
        return message

    def _death(self) -> str:
        """Why the worker ended without an outcome: its signal or exit code, and the last line
        it wrote to stderr."""
        try:
            code = self.proc.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:  # closed the pipe but lives on
            self.stop()
            return "worker closed its message pipe without a result"
        last = self._last_line()
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            reason = f"worker killed by signal {name} ({-code})"
            # SIGKILL comes from outside (the OOM killer, a user): what the worker last wrote is not why.
            return reason + (f": {last}" if last and -code != signal.SIGKILL else "")
        return f"worker exited with code {code}" + (f": {last}" if last else " without a result")

    def _last_line(self) -> str:
        try:
            size = self.log.seek(0, os.SEEK_END)
            self.log.seek(max(0, size - STDERR_TAIL_BYTES))
            lines = self.log.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        last = lines[-1].strip() if lines else ""
        return last if len(last) <= MAX_ERROR_CHARS else last[: MAX_ERROR_CHARS - 3] + "..."

    def stop(self, grace_s: float = TERM_GRACE_S) -> None:
        """SIGTERM the worker's process group (the worker and anything it started), then
        SIGKILL after `grace_s` seconds if it is still there; reap it. What the worker started
        is killed even when the worker itself has exited. A worker that SIGKILL cannot end
        within KILL_WAIT_S (stuck in the driver: a hung GPU) is left, and `unkillable` set."""
        if self.proc.poll() is None and grace_s > 0:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)
        try:
            self.proc.wait(KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            self.unkillable = True

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the worker leads its own session and process group
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Kill the worker if it still runs (at once: an interrupt is waiting), close its pipes
        and drop its log."""
        try:
            self.stop(grace_s=0)
        finally:
            os.close(self.fd)
            if self.proc.stdin is not None:
                try:
                    self.proc.stdin.close()
                except BrokenPipeError:
                    pass
            self.log.close()
