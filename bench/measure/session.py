"""A `wattbench run` from its options to its run file: what the CLI calls, and nothing else does.

`run_session(options, console)` resolves the devices (this rank's under torchrun), plans the
cases (suites, workloads, `-p` sweeps, operating points), composes the run's context once (the
execution mode, the monitor, the operating-point controller: `bench.measure.runner.RunContext`),
writes the run file as the cases go, and under torchrun merges the ranks' shards on rank 0. It
returns where the results are and how the run ended; the CLI renders them and maps the status to
an exit code. Options are plain values (`RunOptions`): nothing below the CLI sees argparse.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from bench import results, testing_hooks
from bench.errors import UsageError
from bench.measure import hardware, runner
from bench.measure.distributed import Job, JobBroken, RankInfo
from bench.measure.hardware import DeviceInfo, no_power_hint
from bench.measure.modes import Execution, InProcess, Isolated, Ranked
from bench.measure.plan import Case
from bench.measure.runner import AsFound, OperatingControl, RunContext
from bench.measure.timing import Sustain, TimingConfig
from bench.monitor.node import NodePower
from bench.monitor.sampler import Monitor
from bench.record import Json, JsonObject

COMPLETE, ABORTED, INTERRUPTED = "complete", "aborted", "interrupted"


@dataclass(frozen=True)
class RunOptions:
    """What `wattbench run` was asked: targets and `-p` parameters as typed, and the settings
    (None: the default). Seconds and watts as the flags give them."""

    command: str = "wattbench run"  # the command line, as the run file records it
    targets: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    device: str | None = None
    out: str | None = None
    min_time_s: float | None = None
    repeats: int | None = None
    repeat_time_s: float | None = None
    rounds: int | None = None
    sustain_s: float | None = None  # a sustained timed window (bench.measure.sustain), its burst and tail
    burst_s: float | None = None
    tail_s: float | None = None
    isolate: bool | None = None
    case_timeout_s: float | None = None
    power_limits: str | None = None
    gpu_clocks: str | None = None
    settle_s: float | None = None
    threads: int | None = None
    monitor: bool = True
    nominal_watts: float | None = None
    interval_s: float | None = None
    node_power: str | None = None  # --node-power SPEC (bench.device.bmc.target); None: $WATTBENCH_NODE_POWER
    pg_timeout_s: float = 300.0
    hang_timeout_s: float = 120.0


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its status ("complete", "aborted", "interrupted"), the run file (the
    job's merged file on rank 0) and its document; `rank_only` on a rank other than 0, whose
    `path` is its shard and whose figures the job's file holds."""

    status: str
    path: Path
    doc: JsonObject
    rank_only: bool = False


class Console(Protocol):
    """Where a session speaks: one-line notes, and live progress while the cases run."""

    def say(self, line: str) -> None: ...

    def progress(self, rounds: int, note: str) -> contextlib.AbstractContextManager[runner.Observer]: ...


def _prefixed(console: Console) -> Callable[[str], None]:
    """`console.say` with "wattbench: " in front, for the parts that speak in plain sentences
    (restore records, the sweep's controller)."""
    return lambda line: console.say(f"wattbench: {line}")


def plan_cases(options: RunOptions, devices: Sequence[DeviceInfo]) -> tuple[list[Case], dict[str, Any]]:
    """Cases and suite settings for the run's targets (default: the standard suite)."""
    from bench.measure.plan import expand, parse_param_args
    from bench.measure.suites import find_suite
    from workloads import builtin_suites, registry

    overrides = parse_param_args(list(options.params))
    targets = list(options.targets) or ["standard"]
    cases: list[Case] = []
    settings: dict[str, Any] = {}
    for target in targets:
        suite = find_suite(target)
        if suite is not None:
            new = suite.cases(devices, overrides)
            settings = {**suite.settings, **settings}
        elif target in registry():
            new = expand(target, overrides, devices)
        else:
            raise UsageError(
                f"unknown target {target!r}; valid: suites {', '.join(builtin_suites())}, a suite .toml file, "
                f"or workloads {', '.join(sorted(registry()))}"
            )
        cases.extend(c for c in new if c not in cases)
    if not cases:
        raise UsageError(f"nothing to run: {', '.join(targets)} has no case for device(s) {', '.join(d.id for d in devices)}")
    return cases, settings


def _sweep(
    options: RunOptions, devices: Sequence[DeviceInfo], cases: list[Case], ranked: bool, say: Callable[[str], None]
) -> tuple[OperatingControl, list[Case]]:
    """The operating-point sweep's controller (checked: permission, ranges) and the cases crossed
    with its points; every check is done here, before anything is measured or changed."""
    from bench.control.controller import DEFAULT_SETTLE_S, Controller, targets_for
    from bench.control.points import operating_points, parse_clocks, parse_power_limits

    if ranked:
        raise UsageError("--power-limit and --gpu-clocks are not supported under torchrun; valid: a single-process run")
    points = operating_points(
        parse_power_limits(options.power_limits) if options.power_limits else [],
        parse_clocks(options.gpu_clocks) if options.gpu_clocks else [],
    )
    used = [d for d in devices if any(c.device == d.id for c in cases)]
    settle = DEFAULT_SETTLE_S if options.settle_s is None else options.settle_s
    controller = Controller(targets_for(used), points, settle, options.command, say)
    controller.check()
    return controller, [dataclasses.replace(c, operating=p) for c in cases for p in points]


def _timing(options: RunOptions, settings: dict[str, Any]) -> TimingConfig:
    """The suite's timing settings with the flags given over them."""
    given = {
        "min_time_s": options.min_time_s,
        "repeats": options.repeats,
        "repeat_time_s": options.repeat_time_s,
        "rounds": options.rounds,
    }
    settings = {**settings, **{k: v for k, v in given.items() if v is not None}}
    sustain: dict[str, float] = {k: float(settings.pop(k)) for k in ("sustain_s", "burst_s", "tail_s") if k in settings}
    sustain.update(
        {
            k: v
            for k, v in (("sustain_s", options.sustain_s), ("burst_s", options.burst_s), ("tail_s", options.tail_s))
            if v is not None
        }
    )
    if sustain and "sustain_s" not in sustain:
        raise UsageError("--burst and --tail shape a sustained case; valid: with --sustain S")
    try:
        if sustain:
            if options.rounds is None:  # a suite's rounds give way: a sustained case is one window
                settings["rounds"] = 1
            settings["sustain"] = Sustain.of(sustain["sustain_s"], sustain.get("burst_s"), sustain.get("tail_s"))
        return TimingConfig(**settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _monitor(options: RunOptions, used: Sequence[DeviceInfo], doc: JsonObject, lead: bool, say: Callable[[str], None]) -> Monitor:
    """The run's monitor (one without sources under --no-monitor), recorded in `run.monitor`."""
    from bench.measure.machine import discover_devices
    from bench.monitor.process import ProcessMemory
    from bench.monitor.sampler import DEFAULT_INTERVAL_S

    if not options.monitor:
        return Monitor([])
    found = discover_devices(used, options.nominal_watts)
    hint = no_power_hint(used, found.status)
    if hint and lead:  # once per run: every case of an unmeasured device would lack energy
        say(f"wattbench: {hint}")
    monitor = Monitor([*found.sources, ProcessMemory()], options.interval_s or DEFAULT_INTERVAL_S)
    run = doc["run"]
    assert isinstance(run, dict)
    sources = cast(Json, found.describe())
    run["monitor"] = {"interval_s": monitor.interval_s, "status": dict(found.status), "sources": sources}
    return monitor


def _node_power(options: RunOptions, info: RankInfo | None, doc: JsonObject, hostname: str) -> NodePower | None:
    """The node's BMC where this process reads it: alone, or as local rank 0 of a job (one reader
    per node, so a merge counts each node's energy once). Recorded in `run.node_power`."""
    from bench.monitor.node import open_node_power

    reader = "this process" if info is None else f"local rank 0 (rank {info.rank}) on {hostname}"
    if info is not None and info.local_rank != 0:
        return None
    node = open_node_power(options.node_power, reader)
    if node is not None:
        from bench.device import gpus_on_node

        run = doc["run"]
        assert isinstance(run, dict)
        # the node's figure counts every GPU on it; a case's device figure only those it ran on
        per_case = 1 if info is None else info.local_world_size
        run["node_power"] = cast(Json, {**node.describe(), "gpus_on_node": gpus_on_node(), "gpus_per_case": per_case})
    return node


@dataclass
class _Plan:
    """The run as planned: devices, cases, timing, the mode and controller, the file."""

    info: RankInfo | None
    devices: list[DeviceInfo]
    used: list[DeviceInfo]
    cases: list[Case]
    timing: TimingConfig
    controller: OperatingControl
    execution: Execution


def _plan(options: RunOptions, say: Callable[[str], None]) -> _Plan:
    """Everything checked before anything is measured or changed: a UsageError (exit 2) here
    leaves no file behind."""
    from bench.measure import isolate, ranks

    info = RankInfo.from_env()
    if info is not None:
        ranks.check_options(options.isolate, options.case_timeout_s, options.hang_timeout_s, options.pg_timeout_s)
        devices = [ranks.rank_device(options.device, info)]
    else:
        devices = hardware.resolve_devices(options.device)
    cases, settings = plan_cases(options, devices)
    controller: OperatingControl = AsFound()
    if options.power_limits or options.gpu_clocks:
        controller, cases = _sweep(options, devices, cases, info is not None, say)
    timing = _timing(options, settings)
    used = [d for d in devices if any(c.device == d.id for c in cases)]
    isolation = isolate.from_options(options.isolate, options.case_timeout_s, used, timing) if info is None else None
    execution: Execution = Isolated(isolation) if isolation is not None else InProcess()
    return _Plan(info, devices, used, cases, timing, controller, execution)


def _new_document(options: RunOptions, planned: _Plan) -> tuple[JsonObject, str]:
    """The run's document before its first case, and the host's name."""
    host = hardware.host_info()
    doc = runner.new_run_document(options.command, host, planned.used, planned.timing, len(planned.cases))
    if options.threads:
        doc["run"].setdefault("settings", {})["threads"] = options.threads
    return doc, host.hostname


def _open_file(
    options: RunOptions, planned: _Plan, doc: JsonObject, hostname: str, job: Job | None, say: Callable[[str], None]
) -> results.RunFile:
    """The run file (this rank's shard under torchrun), written before the first case."""
    from bench.measure import ranks

    run = doc["run"]
    assert isinstance(run, dict)
    name = results.default_file_name(str(run["id"]), str(run["started_at"]), hostname, [d.name for d in planned.used])
    path = results.output_path(options.out, name)
    if job is None:
        run_file = results.RunFile(path, doc)
        say(f"wattbench: {len(planned.cases)} case(s) on {', '.join(d.id for d in planned.used)} -> {run_file.path}")
        return run_file
    path = ranks.share_run(job, doc, path)
    if job.rank == 0:
        say(f"wattbench: {len(planned.cases)} case(s) on {job.world_size} rank(s) ({job.backend}) -> {path}")
    return ranks.ShardFile(job, path, doc, planned.devices[0])


def _run_cases(
    planned: _Plan, run_file: results.RunFile, monitor: Monitor, job: Job | None, console: Console, node: NodePower | None = None
) -> str:
    """The cases measured with the run's context; "complete", "aborted" or "interrupted"."""
    from bench.measure import ranks

    lead = job is None or job.rank == 0  # the process that speaks for the run
    note = f"(rank 0 of {job.world_size}; the job's figures follow)" if job is not None else ""
    try:
        with contextlib.ExitStack() as stack:
            observer = stack.enter_context(console.progress(planned.timing.rounds, note)) if lead else runner.NullObserver()
            stack.enter_context(monitor)
            if node is not None:
                stack.enter_context(node)
            if isinstance(planned.controller, contextlib.AbstractContextManager):  # innermost: restored first
                stack.enter_context(planned.controller)
            context = RunContext(planned.execution, monitor, planned.controller, node)
            return runner.run(planned.cases, planned.used, planned.timing, run_file, observer, context)
    except runner.Interrupted:
        return INTERRUPTED
    except Exception as exc:
        if job is None:
            raise
        assert isinstance(run_file, ranks.ShardFile)
        why = f"rank {job.rank} raised {runner.one_line(exc)} while {job.doing}"
        run_file.fail_here({"rank": job.rank, "kind": "raised", "why": why, "case": None})  # ends the process
        raise  # not reached
    except JobBroken as exc:
        if job is None:
            raise
        job.end_broken(exc)  # a peer died or the job is being stopped: name the culprit, end
        raise


def _finish_job(job: Job, run_file: results.RunFile, status: str, say: Callable[[str], None]) -> RunResult:
    """After the cases under torchrun: the job's file merged on rank 0; a rank whose CUDA
    context broke ends the job here."""
    from bench.measure import ranks

    assert isinstance(run_file, ranks.ShardFile)
    if status == ABORTED:  # a CUDA error left this rank's context unusable: the job ends here
        why = f"rank {job.rank}: {run_file.doc['run'].get('abort_reason')}"
        run_file.fail_here({"rank": job.rank, "kind": "raised", "why": why, "case": None})  # ends the process
    try:
        merged = ranks.finish(job, run_file, INTERRUPTED if status == INTERRUPTED else COMPLETE)
    except BaseException as exc:  # noqa: BLE001 - JobBroken in the final gather
        job.end_broken(exc)
        raise
    if merged is None:
        say(f"wattbench: rank {job.rank}: {len(run_file.cases)} case(s) in {run_file.path}")
        return RunResult(status, run_file.path, run_file.doc, rank_only=True)
    return RunResult(status, merged, results.read_run(merged))


def run_session(options: RunOptions, console: Console) -> RunResult:
    """Run what `options` ask and say where the results are (see the module docstring).

    Raises UsageError (exit 2) for anything wrong with the options before a case runs; the
    returned status says how the run ended (an interrupted run's cases so far are saved)."""
    from bench.control import restore
    from bench.measure import ranks

    restore.honour_records(_prefixed(console))  # what a sweep that died left changed, before measuring anything
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    planned = _plan(options, _prefixed(console))
    doc, hostname = _new_document(options, planned)
    node = _node_power(options, planned.info, doc, hostname)  # a wrong BMC is said before a job starts
    job = (
        ranks.start_job(planned.info, planned.devices[0], options.pg_timeout_s, options.hang_timeout_s) if planned.info else None
    )
    if job is not None:
        ranks.check_same_plan(job, planned.cases, planned.devices[0])
        planned.execution = Ranked(job, testing_hooks.fault_from_env())  # a malformed test fault: said before the cases
    monitor = _monitor(options, planned.used, doc, job is None or job.rank == 0, console.say)
    run_file = _open_file(options, planned, doc, hostname, job, console.say)
    status = _run_cases(planned, run_file, monitor, job, console, node)
    if job is not None:
        return _finish_job(job, run_file, status, console.say)
    return RunResult(status, run_file.path, run_file.doc)
