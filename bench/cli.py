"""Command line: parse, call the harness, print. Exit codes: 0 ok, 1 a case failed, 2 bad usage
or input (one line on stderr, no traceback), 130 interrupted (results so far are saved)."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from bench.arguments import build_parser, run_options
from bench.errors import UsageError, WattbenchError
from bench.record import CaseRecord

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PIPE_WIDTH = 100_000  # a pipe or a file: rows never wrap (grep, diff and less -S read them whole)


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
    from bench.measure.machine import gather
    from bench.report.info import render_info

    info = gather()
    if as_json:
        print(json.dumps(info.to_json(), indent=1))
    else:
        render_info(info, out)
    return EXIT_OK


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
        err.print(
            f"wattbench: run aborted: {reason}; {done} case(s) saved in {result.path}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
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
    limits = [
        flag
        for flag, v in (
            ("--max-slowdown", args.max_slowdown),
            ("--min-throughput", args.min_throughput),
            ("--max-latency", args.max_latency),
        )
        if v is not None
    ]
    if limits and not args.frontier:
        raise UsageError(f"{limits[0]} applies to --frontier only; add --frontier")
    if args.frontier and args.format != "table":
        raise UsageError(f"--frontier prints tables; --format {args.format} is not valid with it (valid: table)")
    from bench.store.store import is_store

    if any(is_store(Path(p)) for p in args.paths):
        from bench.cli_fleet import report_store

        return report_store(args, out, err)
    if args.run or args.host or args.since or args.until:
        raise UsageError("--run, --host, --since and --until select rows of a results store; valid: report STORE --host NAME")
    grid = grid_intensity(args.grid_intensity) if args.grid_intensity else None
    df = load(
        args.paths,
        strict=args.strict,
        on_skip=lambda why: err.print(f"wattbench: warning: skipped {why}", markup=False, highlight=False, soft_wrap=True),
    )
    if args.site:  # the site projection instead of the report's tables
        from bench.cli_site import site_projection

        return site_projection(args, df, grid, out)
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
        render(
            df,
            out,
            ReportOptions(metric=args.metric, baseline=args.baseline, grid=grid, per_rank=args.per_rank),
            fit_width=out.is_terminal,
        )
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

    path, doc = merge_folder(
        Path(args.folder),
        on_skip=lambda why: err.print(f"wattbench: warning: skipped {why}", markup=False, highlight=False, soft_wrap=True),
    )
    out.print(str(path), markup=False, highlight=False, soft_wrap=True)
    out.print(summary(doc), markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def cmd_compare(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.report import gate
    from bench.report.load import load
    from bench.report.tables import comparison_markdown, comparison_table

    if args.format not in ("table", "markdown"):
        raise UsageError(f"--format {args.format!r} is not valid; valid: table, markdown")
    from bench.cli_fleet import store_selection

    sides = [store_selection(text, err) or [text] for text in (args.baseline, args.current)]
    baseline, current = load(sides[0]), load(sides[1])
    comparisons = gate.compare(baseline, current, args.threshold / 100, args.metric, args.allow_different_hardware)
    pairs = dict.fromkeys((c.baseline_device, c.current_device) for c in comparisons if "different hardware" in c.note)
    if pairs:
        named = "; ".join(f"{base} (baseline) vs {cur} (current)" for base, cur in pairs)
        err.print(f"wattbench: warning: comparing cases from different hardware: {named}", highlight=False, soft_wrap=True)
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
            out.print(
                f"{record.describe()}: changed by pid {record.pid} on {record.host} at {record.created_at}"
                f"{' (still running)' if alive else ''}; record {record.path}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
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
    from bench.monitor.node import open_node_power

    node = open_node_power(args.node_power)
    try:
        report = run_command(argv, args.interval or DEFAULT_INTERVAL_S, args.nominal_watts, node)
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
    if report.node is not None:
        _node_row(table, report)
    out.print(table)
    return report.exit_code


def _node_row(table: Table, report: Any) -> None:
    """The node's row of `monitor`: the BMC's figures with their boundary and update period."""
    energy, described = report.node.energy, report.node_power or {}
    update = described.get("update_s")
    source = f"{described.get('source')} [node, updates every {update:g} s]" if update else str(described.get("source"))
    table.add_row(
        f"node ({described.get('url')})",
        f"{energy.joules:.1f} J" if energy is not None else "- (window under one BMC update)",
        f"{energy.avg_watts:.1f} W" if energy is not None and energy.avg_watts is not None else "-",
        f"{energy.peak_watts:.1f} W" if energy is not None and energy.peak_watts is not None else "-",
        Text(source),  # not markup: "[node, ...]" is text
        "-",
        ", ".join(report.node.flags),
    )


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
        if args.command in ("report", "compare"):
            from bench.report.load import paused_gc

            with paused_gc():
                return cmd_report(args, out, err) if args.command == "report" else cmd_compare(args, out, err)
        if args.command in ("ingest", "fleet"):
            from bench import cli_fleet

            return cli_fleet.cmd_ingest(args, out, err) if args.command == "ingest" else cli_fleet.cmd_fleet(args, out, err)
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
