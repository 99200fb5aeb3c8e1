"""Command line: parse, call the harness, print. Exit codes: 0 ok, 1 a case failed, 2 bad usage
or input (one line on stderr, no traceback), 130 interrupted (results so far are saved)."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import bench
from bench.errors import UsageError, WattbenchError
from bench.record import CaseRecord

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PIPE_WIDTH = 100_000  # a pipe or a file: rows never wrap (grep, diff and less -S read them whole)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _number(what: str, ok: Callable[[float], bool], rule: str, kind: type = float) -> Callable[[str], float]:
    """An argparse type: parse `kind` from text (a trailing % allowed) and check it with `ok`;
    the error names what was expected ('a number of seconds') and the rule ('>= 0')."""

    def parse(text: str) -> float:
        try:
            value = kind(text.rstrip("%"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"{text!r} must be {rule}")
        return value

    return parse


_seconds = _number("a number of seconds", lambda v: v >= 0, "a number of seconds >= 0")
_count = _number("a whole number", lambda v: v >= 1, "at least 1", kind=int)
_watts = _number("a number of watts", lambda v: v > 0, "a number of watts > 0")
_percent = _number("a percentage", lambda v: 0 < v < 100, "a percentage between 0 and 100")
_interval = _number("a number of seconds", lambda v: 0.001 <= v <= 60, "between 0.001 and 60 seconds")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wattbench", description="Throughput and energy of AI workloads on GPUs and CPUs.")
    parser.add_argument("--version", action="version", version=f"wattbench {bench.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="workloads, their parameters and defaults, and suites")

    info = sub.add_parser("info", help="devices, versions and measurement sources on this machine")
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")

    run = sub.add_parser("run", help="run a suite or workloads and save a result file")
    run.add_argument("targets", nargs="*", metavar="TARGET", help="suite name (quick, standard, full), suite .toml, or workload (default: standard)")
    run.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE[,VALUE...]", help="set or sweep a parameter")
    run.add_argument("--device", help="cpu, cuda, cuda:N or all (default: the first GPU, else the CPU)")
    run.add_argument("--out", help="result folder or .json file (default: results/)")
    run.add_argument("--min-time", type=_seconds, help="seconds the timed window of each case lasts at least")
    run.add_argument("--repeats", type=_count, help="timed repeats per case, at least")
    run.add_argument("--repeat-time", type=_seconds, help="seconds one repeat lasts at least")
    run.add_argument("--rounds", type=_count, help="times each case is measured, the cases in a new random order each round "
                     "(samples spread over the run, so a noisy machine's slow spells fall on every case alike)")
    run.add_argument("--json", action="store_true", help="print the result document as JSON instead of the report")
    run.add_argument("--no-monitor", action="store_true", help="do not sample power, energy or memory")
    run.add_argument("--nominal-watts", type=_watts, metavar="W", help="watts to assume where nothing measures power (an estimate)")
    run.add_argument("--interval", type=_interval, metavar="S", help="sampling interval of the monitor in seconds (default 0.05)")
    run.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                     help="measure every case (each round) in a fresh worker process, so a crash, a CUDA error or a hang "
                     "fails that case alone (default: on when a GPU is used, off on the CPU)")
    run.add_argument("--case-timeout", type=_number("a number of seconds", lambda v: v > 0, "a number of seconds > 0"), metavar="S",
                     help="fail a case whose round runs longer than this in its worker (default 600, or 3x what the timing settings allow a round when longer; implies --isolate)")
    run.add_argument("--threads", type=_count, metavar="N", help="CPU threads torch uses in this process (each rank under torchrun, "
                     "which sets OMP_NUM_THREADS=1 when it is unset); recorded in the result")
    run.add_argument("--pg-timeout", type=_number("a number of seconds", lambda v: v > 0, "a number of seconds > 0"), default=300.0,
                     metavar="S", help="under torchrun: timeout of the process groups' collectives (default 300)")
    run.add_argument("--hang-timeout", type=_number("a number of seconds", lambda v: v > 0, "a number of seconds > 0"), default=120.0,
                     metavar="S", help="under torchrun: when no rank has moved for this long while some wait for others, the ranks "
                     "behind are named hung and the job ends (default 120; shorter than --pg-timeout)")
    run.add_argument("--power-limit", metavar="W[,W...]", help="sweep the GPU's power limit: watts (450) or percent of the "
                     "default limit (70%%), crossed with the cases; needs root or CAP_SYS_ADMIN; the limit as found is "
                     "restored on every way out (a watchdog restores it if this process is killed)")
    run.add_argument("--gpu-clocks", metavar="MHZ[,MHZ...]", help="sweep locked SM clocks (MHz), crossed with the cases and "
                     "--power-limit; needs root or CAP_SYS_ADMIN. NVML cannot read an existing clock lock, so afterwards the "
                     "clocks are reset to the driver's default (a lock set before the run is lost)")
    run.add_argument("--settle", type=_number("a number of seconds", lambda v: v >= 0, "a number of seconds >= 0"),
                     metavar="S", help="seconds to wait after setting an operating point, before warm-up (default 2)")

    restore = sub.add_parser("restore", help="put back GPU settings (power limit, clocks) a sweep that died left changed")
    restore.add_argument("--list", action="store_true", help="only list the restore records, change nothing")

    cmp_ = sub.add_parser("compare", help="compare a run with a baseline; exit 1 on a significant regression")
    cmp_.add_argument("baseline", metavar="BASELINE")
    cmp_.add_argument("current", metavar="CURRENT")
    cmp_.add_argument("--threshold", type=_percent, default=5.0, metavar="PCT", help="regression threshold in percent (default 5)")
    cmp_.add_argument("--metric", default="throughput", help="throughput or efficiency")
    cmp_.add_argument("--format", default="table", help="table or markdown")
    cmp_.add_argument("--allow-different-hardware", action="store_true", help="compare runs from different devices")

    mon = sub.add_parser("monitor", help="run a command and report its energy, power and memory")
    mon.add_argument("--interval", type=_interval, metavar="S", help="sampling interval in seconds (default 0.05)")
    mon.add_argument("--nominal-watts", type=_watts, metavar="W", help="watts to assume where nothing measures power")
    mon.add_argument("--json", action="store_true", help="print JSON instead of a table")
    mon.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")

    report = sub.add_parser("report", help="show result files")
    report.add_argument("paths", nargs="+", metavar="RESULT_FILE_OR_DIR")
    report.add_argument("--format", default="table", help="table, csv, markdown, json or pytest-benchmark")
    report.add_argument("--metric", default="throughput", help="throughput, efficiency or energy: what 'best' and ratios use")
    report.add_argument("--baseline", metavar="HARDWARE", help="show every hardware as a ratio to this one")
    report.add_argument("--grid-intensity", metavar="G|REGION", help="gCO2e/kWh or a region (France, Germany, USA, ...)")
    report.add_argument("--strict", action="store_true", help="a result file that cannot be read is an error (default: skipped with a warning)")
    report.add_argument("--plot", metavar="FILE.png", help="draw power over time and throughput per watt (needs matplotlib)")
    report.add_argument("--per-rank", action="store_true", help="multi-rank runs: also a table of each rank's figures per case")
    report.add_argument("--frontier", action="store_true",
                        help="per case and hardware, the operating points (power limit, clocks, llm batch) on the "
                             "throughput / energy-per-work Pareto frontier and the one to run at; with --plot, its picture")
    report.add_argument("--max-slowdown", metavar="PCT", help="--frontier: recommend the least energy per unit of work "
                        "within PCT%% of the fastest point's throughput (0 to 100, default 5)",
                        type=_number("a percentage", lambda v: 0 <= v <= 100, "a percentage from 0 to 100"))
    report.add_argument("--min-throughput", metavar="X", help="--frontier: recommend only points of at least X work "
                        "units per second (a plain number: 5000, 1.5e12)",
                        type=_number("a number of work units per second", lambda v: v > 0,
                                     "a number of work units per second > 0 (5000, 1.5e12)"))
    report.add_argument("--max-latency", metavar="S", help="--frontier: recommend only points of at most S seconds per "
                        "iteration (a plain number: 0.02)",
                        type=_number("a number of seconds", lambda v: v > 0, "a number of seconds > 0 (0.02)"))

    merge = sub.add_parser("merge", help="build a multi-rank run's file from its folder of shards (when rank 0 could not)")
    merge.add_argument("folder", metavar="DIR", help="the run's shards folder, <name>.shards; writes <name>.json beside it")

    launch = sub.add_parser("launch", help="run `wattbench run` as N ranks on this machine through torchrun (per-rank logs)")
    launch.add_argument("-n", "--nproc-per-node", dest="nproc", type=_count, required=True, metavar="N", help="ranks to start (one per GPU)")
    launch.add_argument("--log-dir", default="results/logs", metavar="DIR", help="torchrun's per-rank log folder (default: results/logs)")
    launch.add_argument("--dry-run", action="store_true", help="print the torchrun command instead of running it")
    launch.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- run [TARGET ...] [OPTIONS]")

    slurm = sub.add_parser("slurm-template", help="print an sbatch script that runs `wattbench run` under torchrun on every node")
    slurm.add_argument("--nodes", type=_count, default=2, metavar="N", help="nodes (default 2)")
    slurm.add_argument("--gpus-per-node", type=_count, default=8, metavar="G", help="GPUs per node = ranks per node (default 8)")
    slurm.add_argument("--cpus-per-task", type=_count, metavar="C", help="CPU cores per node for its ranks (default 4 per GPU)")
    slurm.add_argument("--time", default="01:00:00", metavar="HH:MM:SS", help="wall-clock limit (default 01:00:00)")
    slurm.add_argument("--partition", metavar="P", help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--socket-ifname", metavar="IFACE", help="network interface the nodes reach each other on, "
                       "exported as GLOO_SOCKET_IFNAME (needed where host names resolve to loopback)")
    slurm.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- run [TARGET ...] [OPTIONS]")
    return parser


# --- list / info -----------------------------------------------------------------------------

def cmd_list(out: Console) -> int:
    from bench.measure.suites import load_suite
    from workloads import builtin_suites, registry

    for cls in registry().values():
        table = Table(title=f"{cls.name}: {cls.summary}", title_justify="left")
        for column in ("Parameter", "Default", "Valid values", "Meaning"):
            table.add_column(column, overflow="fold")
        for p in cls.params:
            table.add_row(p.name, p.describe_default(), p.describe_valid(), p.help)
        out.print(table)
    suites = Table(title="Suites (wattbench run NAME)", title_justify="left")
    for column in ("Suite", "Entries", "Description"):
        suites.add_column(column, overflow="fold")
    for name, path in builtin_suites().items():
        suite = load_suite(path, name)
        suites.add_row(name, str(len(suite.entries)), suite.description)
    out.print(suites)
    return EXIT_OK


def cmd_info(as_json: bool, out: Console) -> int:
    """Host, devices, every GPU NVML sees (usable by this torch or why not, and the fix), and the
    power source per device, with a hint how to get one where there is none."""
    from bench.measure.hardware import (
        cpu_device,
        cuda_devices,
        gpu_diagnosis,
        host_info,
        no_power_hint,
        nvml_inventory,
    )
    from bench.units import format_bytes

    host = host_info()
    devices = [*cuda_devices(), cpu_device()]
    gpus = gpu_diagnosis()
    found = _discover(devices, None)
    hint = no_power_hint(devices, found.status)
    # Operating points: limits and lockable clocks per NVML GPU, and whether this process may change
    # them (from its user and capabilities: nothing is changed or tried here).
    from bench.device import nvidia

    controls = nvidia.controls_by_uuid(g.uuid for g in gpus if g.nvml_index is not None and g.uuid)
    may_change, may_change_why = nvidia.may_change_settings()

    def operating_range(uuid: str | None) -> dict[str, Any] | None:
        c = controls.get(uuid or "")
        return None if c is None else {"error": c} if isinstance(c, str) else c.to_dict()

    if as_json:
        doc = {
            "host": host.to_dict(),
            "devices": [d.to_dict() for d in devices],
            "gpus": [{**g.to_dict(), "operating_range": operating_range(g.uuid)} for g in gpus],
            "may_change_settings": {"allowed": may_change, "reason": may_change_why},
            "power": {"status": found.status, "sources": found.describe(), "hint": hint},
        }
        print(json.dumps(doc, indent=1))
        return EXIT_OK
    table = Table(title="Host", title_justify="left", show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    for key, value in host.to_dict().items():
        if key == "memory_bytes" and value:
            value = format_bytes(value)
        table.add_row(key, "-" if value is None else str(value))
    out.print(table)
    dev_table = Table(title="Devices (this torch)", title_justify="left")
    for column in ("Id", "Name", "Memory", "Cache", "Cores/SMs", "CC", "Power limit", "UUID"):
        dev_table.add_column(column, overflow="fold")
    for d in devices:
        dev_table.add_row(
            d.id,
            d.name,
            format_bytes(d.memory_bytes) if d.memory_bytes else "-",
            format_bytes(d.cache_bytes) if d.cache_bytes else "-",
            str(d.multiprocessors or d.cores or "-"),
            d.compute_capability or "-",
            f"{d.power_limit_w:.0f} W" if d.power_limit_w else "-",
            d.uuid or "-",
        )
    out.print(dev_table)
    if gpus:
        inventory = nvml_inventory()
        title = "GPUs (NVML)" if not isinstance(inventory, str) else "GPUs (torch; NVML unavailable)"
        gpu_table = Table(title=title, title_justify="left")
        for column in ("#", "Name", "Memory", "Power limit", "UUID", "Usable by torch"):
            gpu_table.add_column(column, overflow="fold")
        for g in gpus:
            gpu_table.add_row(
                "-" if g.nvml_index is None else str(g.nvml_index),
                g.name,
                format_bytes(g.memory_bytes) if g.memory_bytes else "-",
                f"{g.power_limit_w:.0f} W" if g.power_limit_w else "-",
                g.uuid or "-",
                f"yes ({g.torch_device})" if g.usable else "no",
            )
        out.print(gpu_table)
        # Problem and fix under the table, once per distinct pair (a CPU build of torch is the same
        # story for every GPU), soft-wrapped so a command or URL is never cut by a line break.
        notes: dict[tuple[str, str], list[str]] = {}
        for g in gpus:
            if g.problem:
                name = str(g.nvml_index) if g.nvml_index is not None else str(g.torch_device)
                notes.setdefault((g.problem, g.fix or "-"), []).append(name)
        for (problem, fix), names in notes.items():
            out.print(f"GPU {', '.join(names)}: {problem}", markup=False, highlight=False, soft_wrap=True)
            out.print(f"  fix: {fix}", markup=False, highlight=False, soft_wrap=True)
    if controls:
        op_table = Table(title="Power limits and SM clocks (NVML)", title_justify="left")
        for column in ("#", "Power limit", "Enforced", "Default", "Min-max", "SM clocks (lockable)"):
            op_table.add_column(column, overflow="fold")
        watts = lambda w: "-" if w is None else f"{w:g} W"  # noqa: E731
        for g in gpus:
            c = controls.get(g.uuid or "")
            if c is None:
                continue
            if isinstance(c, str):
                op_table.add_row(str(g.nvml_index), "-", "-", "-", "-", "-")
                continue
            lim = c.limits
            span = "-" if lim.min_w is None or lim.max_w is None else f"{lim.min_w:g}-{lim.max_w:g} W"
            op_table.add_row(str(g.nvml_index), watts(lim.current_w), watts(lim.enforced_w), watts(lim.default_w), span,
                             c.clock_range_text())
        out.print(op_table)
        for g in gpus:
            if isinstance(controls.get(g.uuid or ""), str):
                out.print(f"GPU {g.nvml_index}: {controls[g.uuid or '']}", markup=False, highlight=False, soft_wrap=True)
        verdict = f"yes ({may_change_why})" if may_change else f"no ({may_change_why})"
        out.print(f"this process may change power limits and clocks: {verdict}", markup=False, highlight=False, soft_wrap=True)
    sources = Table(title="Power and energy sources", title_justify="left")
    for column in ("Device", "Energy / power", "Counter update", "Power update"):
        sources.add_column(column, overflow="fold")
    described = {s.device_id: s for s in found.sources}
    for d in devices:
        src = described.get(d.id)
        sources.add_row(
            d.id,
            found.status[d.id],
            f"{1e3 * src.counter_update_s:.1f} ms" if src and src.counter_update_s else "-",
            f"{1e3 * src.power_update_s:.1f} ms" if src and src.power_update_s else "-",
        )
    out.print(sources)
    if hint:
        out.print(f"hint: {hint}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def _discover(devices: Sequence[Any], nominal_watts: float | None) -> Any:
    from bench.monitor.discover import DeviceRef, discover

    return discover([DeviceRef(d.id, d.kind, d.uuid) for d in devices], nominal_watts)


# --- run ---------------------------------------------------------------------------------------

class _ProgressObserver:
    """Live progress on stderr: the case in flight, how many are left, elapsed time."""

    def __init__(self, console: Console, rounds: int, rank_note: str = "") -> None:
        self.console = console
        self.rank_note = rank_note  # under torchrun: whose figures these are (the job's come at the end)
        self.rounds = rounds
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task: Any = None

    def __enter__(self) -> _ProgressObserver:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def case_started(self, case: Any, index: int, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("", total=total)
        self.progress.update(self.task, description=case.id, completed=index, total=total)

    def case_finished(self, case: Any, result: CaseRecord, index: int, total: int, round_number: int) -> None:
        from bench.units import format_rate

        if result.status == "ok" and result.throughput is not None and result.seconds_per_iter is not None:
            detail = format_rate(result.throughput.median, result.work_unit or "")
            detail += f"  cv {100 * (result.seconds_per_iter.cv or 0.0):.1f}%"
            if result.energy is not None and result.energy.avg_watts is not None:
                detail += f"  {result.energy.avg_watts:.1f} W ({result.energy.source})"
        else:
            detail = result.error or ""
        rounds = f" (round {round_number})" if self.rounds > 1 else ""
        if self.rank_note and result.status == "ok":
            detail += f"  {self.rank_note}"
        self.progress.console.print(
            f"[{index + 1}/{total}] {case.id}{rounds}: {result.status} {detail}", markup=False, highlight=False, soft_wrap=True
        )
        self.progress.update(self.task, completed=index + 1, total=total)


class _SessionConsole:
    """The session's voice on the terminal: notes on stderr, live progress (`_ProgressObserver`)."""

    def __init__(self, err: Console) -> None:
        self.err = err

    def say(self, line: str) -> None:
        self.err.print(line, markup=False, highlight=False, soft_wrap=True)

    def progress(self, rounds: int, note: str) -> _ProgressObserver:
        return _ProgressObserver(self.err, rounds, note)


def run_options(args: argparse.Namespace, argv: Sequence[str]) -> Any:
    """`wattbench run`'s flags as the session's options (plain values)."""
    from bench.measure.session import RunOptions

    return RunOptions(
        command=shlex.join(["wattbench", *argv]), targets=tuple(args.targets), params=tuple(args.params), device=args.device,
        out=args.out, min_time_s=args.min_time, repeats=args.repeats, repeat_time_s=args.repeat_time, rounds=args.rounds,
        isolate=args.isolate, case_timeout_s=args.case_timeout, power_limits=args.power_limit, gpu_clocks=args.gpu_clocks,
        settle_s=args.settle, threads=args.threads, monitor=not args.no_monitor, nominal_watts=args.nominal_watts,
        interval_s=args.interval, pg_timeout_s=args.pg_timeout, hang_timeout_s=args.hang_timeout,
    )


def cmd_run(args: argparse.Namespace, out: Console, err: Console, argv: Sequence[str]) -> int:
    """Run the session, show its results, and say how it ended (the exit code)."""
    from bench.measure.session import ABORTED, INTERRUPTED, run_session
    from bench.report.load import load
    from bench.report.tables import render

    result = run_session(run_options(args, argv), _SessionConsole(err))
    if result.rank_only:
        return EXIT_INTERRUPTED if result.status == INTERRUPTED else EXIT_OK
    if args.json:
        print(json.dumps(result.doc, indent=1))
    else:
        render(load([result.path]), out, fit_width=out.is_terminal)
    cases = result.doc["cases"]
    assert isinstance(cases, list)
    done = len(cases)
    if result.status == INTERRUPTED:
        err.print(f"wattbench: interrupted; {done} case(s) saved in {result.path}", highlight=False)
        return EXIT_INTERRUPTED
    if result.status == ABORTED:
        run = result.doc["run"]
        reason = (run.get("abort_reason") if isinstance(run, dict) else None) or "a case left the GPU unusable"
        err.print(f"wattbench: run aborted: {reason}; {done} case(s) saved in {result.path}", markup=False, highlight=False,
                  soft_wrap=True)
        return EXIT_FAILED
    failed = sum(1 for c in cases if isinstance(c, dict) and c.get("status") == "failed")
    err.print(f"wattbench: {done} case(s) saved in {result.path}" + (f"; {failed} failed" if failed else ""), highlight=False)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_report(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.report.carbon import grid_intensity
    from bench.report.export import FORMATS, export
    from bench.report.load import load
    from bench.report.tables import METRICS, ReportOptions, render

    formats = ("table", *FORMATS, "pytest-benchmark")
    if args.format not in formats:
        raise UsageError(f"--format {args.format!r} is not valid; valid: {', '.join(formats)}")
    if args.metric not in METRICS:
        raise UsageError(f"--metric {args.metric!r} is not valid; valid: {', '.join(METRICS)}")
    limits = [flag for flag, v in (("--max-slowdown", args.max_slowdown), ("--min-throughput", args.min_throughput),
                                   ("--max-latency", args.max_latency)) if v is not None]
    if limits and not args.frontier:
        raise UsageError(f"{limits[0]} applies to --frontier only; add --frontier")
    if args.frontier and args.format != "table":
        raise UsageError(f"--frontier prints tables; --format {args.format} is not valid with it (valid: table)")
    grid = grid_intensity(args.grid_intensity) if args.grid_intensity else None
    df = load(args.paths, strict=args.strict, on_skip=lambda why: err.print(f"wattbench: warning: skipped {why}", markup=False, highlight=False, soft_wrap=True))
    if args.frontier:  # the frontier tables (and picture) instead of the report's
        from bench.report.frontier import DEFAULT_MAX_SLOWDOWN, frontier
        from bench.report.tables import render_frontier

        slowdown = DEFAULT_MAX_SLOWDOWN if args.max_slowdown is None else args.max_slowdown / 100
        frontiers = frontier(df, slowdown, args.min_throughput, args.max_latency)
        if args.plot:
            from bench.report.plot import check_path, plot_frontier, save

            check_path(args.plot)
            save(plot_frontier(frontiers), args.plot)
        render_frontier(frontiers, out, fit_width=out.is_terminal)
        return EXIT_OK
    if args.plot:
        from bench.report.plot import check_path, plot, save

        check_path(args.plot)
        save(plot(df), args.plot)
    if args.format == "table":
        render(df, out, ReportOptions(metric=args.metric, baseline=args.baseline, grid=grid, per_rank=args.per_rank),
               fit_width=out.is_terminal)
    elif args.format == "pytest-benchmark":
        from bench.report.pytest_benchmark import export_text

        sys.stdout.write(export_text(df))
    else:
        sys.stdout.write(export(df, args.format))
    return EXIT_OK


def cmd_merge(args: argparse.Namespace, out: Console, err: Console) -> int:
    """`wattbench merge DIR`: the run file from a shards folder; its path and a one-line summary."""
    from pathlib import Path

    from bench.merge import merge_folder, summary

    path, doc = merge_folder(Path(args.folder), on_skip=lambda why: err.print(f"wattbench: warning: skipped {why}", markup=False,
                                                                                highlight=False, soft_wrap=True))
    out.print(str(path), markup=False, highlight=False, soft_wrap=True)
    out.print(summary(doc), markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def cmd_compare(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.report import gate
    from bench.report.load import load
    from bench.report.tables import comparison_markdown, comparison_table

    if args.format not in ("table", "markdown"):
        raise UsageError(f"--format {args.format!r} is not valid; valid: table, markdown")
    baseline, current = load([args.baseline]), load([args.current])
    comparisons = gate.compare(baseline, current, args.threshold / 100, args.metric, args.allow_different_hardware)
    if any(c.note == "different hardware" for c in comparisons):
        err.print("wattbench: warning: comparing cases from different hardware", highlight=False)
    if args.format == "markdown":
        sys.stdout.write(comparison_markdown(comparisons, args.metric))
    else:
        title = f"{args.metric}: {args.current} vs {args.baseline} (threshold {args.threshold:g}%)"
        out.print(comparison_table(comparisons, args.metric, title, out.width if out.is_terminal else None), crop=False)
    counts = {v: sum(1 for c in comparisons if c.verdict == v) for v in gate.VERDICTS}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    band = next((c.band for c in comparisons if c.band is not None), None)
    if band is not None and band > args.threshold / 100 + 1e-9:
        summary += f" (run-to-run noise widened the band from {args.threshold:g}% to {100 * band:.1f}%)"
    slower = gate.regressions(comparisons)
    err.print(f"wattbench: {summary}" + ("; regression" if slower else "; no significant regression"), highlight=False)
    return EXIT_FAILED if slower else EXIT_OK


def _say(err: Console) -> Callable[[str], None]:
    return lambda line: err.print(f"wattbench: {line}", markup=False, highlight=False, soft_wrap=True)


def cmd_restore(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Restore what sweeps that died left changed; exit 1 when something is still to restore."""
    from bench.control import restore

    records = restore.read_records()
    if not records:
        out.print(f"nothing to restore (no records in {' or '.join(map(str, restore.state_dirs()))})", highlight=False)
        return EXIT_OK
    if args.list:
        for record in records:
            alive = restore.process_alive(record.host, record.pid)
            out.print(f"{record.describe()}: changed by pid {record.pid} on {record.host} at {record.created_at}"
                      f"{' (still running)' if alive else ''}; record {record.path}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_OK
    left = restore.honour_records(_say(err))
    return EXIT_FAILED if left else EXIT_OK


def cmd_monitor(args: argparse.Namespace, out: Console, err: Console | None = None) -> int:
    from bench.control import restore
    from bench.monitor.command import run_command

    restore.honour_records(_say(err or Console(stderr=True)))
    from bench.monitor.sampler import DEFAULT_INTERVAL_S
    from bench.units import format_bytes, format_seconds

    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not argv:
        raise UsageError("monitor needs a command to run: wattbench monitor [--interval S] [--json] -- COMMAND [ARGS...]")
    try:
        report = run_command(argv, args.interval or DEFAULT_INTERVAL_S, args.nominal_watts)
    except (FileNotFoundError, PermissionError) as exc:
        raise UsageError(f"cannot run {argv[0]!r}: {exc.strerror}") from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return report.exit_code
    peak = format_bytes(report.peak_memory_bytes) if report.peak_memory_bytes else "-"
    out.print(
        f"{shlex.join(report.argv)}: exit {report.exit_code}{' (interrupted)' if report.interrupted else ''}, "
        f"wall {format_seconds(report.wall_s)}, peak memory {peak} (resident, with children)",
        highlight=False,
        markup=False,
    )
    table = Table(title_justify="left")
    for column in ("Device", "Energy", "Avg power", "Peak power", "Source", "Peak memory used", "Flags"):
        table.add_column(column, overflow="fold")
    for dev, name in report.devices.items():
        r = report.energy.get(dev)
        if r is None:
            table.add_row(f"{dev} {name}", "-", "-", "-", report.status.get(dev, "-"), "-", "power_unmeasured")
            continue
        approx = "~" if r.estimate else ""
        table.add_row(
            f"{dev} {name}",
            f"{approx}{r.joules or 0.0:.1f} J",
            f"{approx}{r.avg_watts:.1f} W" if r.avg_watts is not None else "-",
            f"{r.peak_watts:.1f} W" if r.peak_watts is not None else "-",
            (r.source or "-") + (" (estimate)" if r.estimate else ""),
            format_bytes(r.peak_memory_bytes) if r.peak_memory_bytes else "-",
            ", ".join(r.flags),
        )
    out.print(table)
    return report.exit_code


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):  # an ASCII terminal gets '?' for ³ or →, not a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    err = Console(stderr=True)
    out = Console()
    if not out.is_terminal:
        out = Console(width=PIPE_WIDTH)  # logs and files: keep table rows on one line
    try:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        signal.signal(signal.SIGHUP, _sigterm_as_interrupt)  # a closed terminal: save, restore, leave
    except ValueError:  # not the main thread (e.g. called from a test thread)
        pass
    try:
        args = build_parser().parse_args(argv)
        if args.command == "list":
            return cmd_list(out)
        if args.command == "info":
            return cmd_info(args.json, out)
        if args.command == "run":
            return cmd_run(args, out, err, argv)
        if args.command == "report":
            return cmd_report(args, out, err)
        if args.command == "compare":
            return cmd_compare(args, out, err)
        if args.command == "monitor":
            return cmd_monitor(args, out, err)
        if args.command == "merge":
            return cmd_merge(args, out, err)
        if args.command == "restore":
            return cmd_restore(args, out, err)
        if args.command in ("launch", "slurm-template"):
            from bench import launch

            return launch.cmd_launch(args) if args.command == "launch" else launch.cmd_slurm_template(args)
        raise AssertionError(args.command)
    except WattbenchError as exc:
        err.print(f"wattbench: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("wattbench: interrupted", highlight=False)
        return EXIT_INTERRUPTED
