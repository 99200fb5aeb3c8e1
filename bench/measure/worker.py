"""The worker process of process isolation: measures one round of one case and reports it.

    python -m bench.measure.worker FD

Started by `bench.measure.isolate` (never by hand): reads one JSON request line on stdin, writes
JSON messages, one per line, to the inherited pipe FD: {"type": "ready"} once its imports are
done and its device is ready (the parent's case timeout starts then), then {"type": "outcome",
"outcome": ...} (a `RoundOutcome`), and exits. Stdout and stderr belong to the workload and the
libraries; the parent keeps them only to explain a worker that dies. Stdin stays open for the
worker's life: end of file there means the parent is gone, and the worker exits at once with
everything it started.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
from typing import IO, Any

EXIT_USAGE = 2
EXIT_PARENT_GONE = 3


def _exit_when_parent_dies() -> None:
    """Block on stdin; at EOF (the parent exited or was killed), kill this process group."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    if os.getpgrp() == os.getpid():  # we lead our own group (start_new_session): take children too
        os.killpg(0, signal.SIGKILL)
    os._exit(EXIT_PARENT_GONE)


def _send(channel: IO[str], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def _import_class(module: str, qualname: str) -> type:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _build_monitor(settings: dict[str, Any] | None, device: Any) -> Any:
    """A monitor of the case's device alone, as the parent's measures it: the same kind of
    source, found without probing (the parent's probed update periods are copied), plus this
    process's resident memory. None when the parent runs without a monitor."""
    if settings is None:
        return None
    from bench.monitor.discover import discover
    from bench.monitor.process import ProcessMemory
    from bench.monitor.sampler import Monitor

    sources: list[Any] = []
    if settings["measured"]:
        found = discover([device.ref()], settings["nominal_watts"], probe=False)
        for source in found.sources:
            # The parent's probed periods hold only for the same readers (a first power read of
            # 0 W here would pick another power field): else the window judges by its changes.
            if source.counter_source == settings.get("counter_source"):
                source.counter_update_s = settings["counter_update_s"]
            if source.power_source == settings.get("power_source"):
                source.power_update_s = settings["power_update_s"]
            sources.append(source)
    sources.append(ProcessMemory())
    return Monitor(sources, settings["interval_s"])


def main(argv: list[str] | None = None) -> int:
    """Run the request on stdin; the exit status matters only when no outcome was sent."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m bench.measure.worker FD (started by wattbench run --isolate)", file=sys.stderr)
        return EXIT_USAGE
    fd = int(argv[0])
    os.set_inheritable(fd, False)  # a process the workload starts must not hold the pipe open
    channel = os.fdopen(fd, "w", encoding="utf-8")
    line = sys.stdin.buffer.readline()
    if not line:
        return EXIT_PARENT_GONE
    request = json.loads(line)
    sys.path[:] = request["sys_path"]
    threading.Thread(target=_exit_when_parent_dies, name="wattbench-parent-watch", daemon=True).start()

    import torch  # noqa: F401 - imported before 'ready': the case timeout counts measuring, not start-up

    from bench.measure.hardware import DeviceInfo
    from bench.measure.lifecycle import RoundOutcome, make_cuda_context, measure_round, one_line, utc_now
    from bench.measure.timing import TimedLoop, TimingConfig

    device = DeviceInfo(**request["device"])
    if request.get("hold_context"):  # the idle measurement's context: hold it until the parent lets go
        error = make_cuda_context(device)
        _send(channel, {"type": "ready", "pid": os.getpid(), "error": error})
        threading.Event().wait()  # the parent-watch thread exits when the parent closes stdin
    timing = TimingConfig(**request["timing"])
    plan = TimedLoop(**request["plan"]) if request["plan"] else None
    spec = request["workload"]
    try:
        workload_cls = _import_class(spec["module"], spec["qualname"])
    except Exception as exc:  # noqa: BLE001 - reported as the case's failure, with the cause
        error = f"cannot import workload class {spec['module']}.{spec['qualname']} in the worker: {one_line(exc)}"
        _send(channel, {"type": "outcome", "outcome": RoundOutcome("failed", error, started_at=utc_now()).to_json()})
        return 0
    monitor = _build_monitor(request["monitor"], device)
    if device.kind == "cuda":
        make_cuda_context(device)  # now, so that the case timeout counts measuring, not start-up; an
        # error here the round meets again and reports
    _send(channel, {"type": "ready", "pid": os.getpid()})
    if monitor is not None:
        monitor.start()
    try:
        outcome = measure_round(workload_cls, request["params"], device, timing, plan, monitor)
    finally:
        if monitor is not None:
            monitor.stop()
    _send(channel, {"type": "outcome", "outcome": outcome.to_json()})
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown (and CUDA's): the outcome is sent, the parent is waiting.
    os._exit(code)
