"""The command line's grammar: `build_parser` (argparse, one sub-command per verb) and the
conversion of `run`'s flags into the session's plain options (`run_options`). Number flags
are checked as they are parsed, so a bad value is one line naming the flag and what is valid
(exit 2), before anything runs."""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

import bench
from bench.errors import UsageError

if TYPE_CHECKING:  # the session imports torch: `report` and `compare` must start without it
    from bench.measure.session import RunOptions


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
_positive_seconds = _number("a number of seconds", lambda v: v > 0, "a number of seconds > 0")
_positive_number = _number("a number", lambda v: v > 0, "a number > 0")
_watts = _number("a number of watts", lambda v: v > 0, "a number of watts > 0")
_percent = _number("a percentage", lambda v: 0 < v < 100, "a percentage between 0 and 100")
_interval = _number("a number of seconds", lambda v: 0.001 <= v <= 60, "between 0.001 and 60 seconds")


def build_parser() -> argparse.ArgumentParser:
    """The command line's grammar: one sub-command per verb (DESIGN.md's CLI contract)."""
    parser = _Parser(prog="wattbench", description="Throughput and energy of AI workloads on GPUs and CPUs.")
    parser.add_argument("--version", action="version", version=f"wattbench {bench.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="workloads, their parameters and defaults, and suites")
    info = sub.add_parser("info", help="devices, versions and measurement sources on this machine")
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _add_run(sub.add_parser("run", help="run a suite or workloads and save a result file"))
    restore = sub.add_parser("restore", help="put back GPU settings (power limit, clocks) a sweep that died left changed")
    restore.add_argument("--list", action="store_true", help="only list the restore records, change nothing")
    _add_compare(sub.add_parser("compare", help="compare a run with a baseline; exit 1 on a significant regression"))
    _add_monitor(sub.add_parser("monitor", help="run a command and report its energy, power and memory"))
    _add_report(sub.add_parser("report", help="show result files (or a results store, aggregated)"))
    _add_ingest(sub.add_parser("ingest", help="add result files to a results store (Parquet) for a fleet"))
    _add_fleet(sub.add_parser("fleet", help="every GPU against its siblings: the slow, hungry or unhealthy ones named"))
    merge = sub.add_parser("merge", help="build a multi-rank run's file from its folder of shards (when rank 0 could not)")
    merge.add_argument("folder", metavar="DIR", help="the run's shards folder, <name>.shards; writes <name>.json beside it")
    _add_launch(sub.add_parser("launch", help="run `wattbench run` as N ranks on this machine through torchrun (per-rank logs)"))
    _add_slurm(
        sub.add_parser("slurm-template", help="print an sbatch script that runs `wattbench run` under torchrun on every node")
    )
    return parser


def _add_run(parser: argparse.ArgumentParser) -> None:
    """`run`: targets, parameters, timing and monitoring (`_add_run_modes`: how the cases run)."""
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="suite name (quick, standard, full), suite .toml, or workload (default: standard)",
    )
    parser.add_argument(
        "-p", dest="params", action="append", default=[], metavar="KEY=VALUE[,VALUE...]", help="set or sweep a parameter"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:N or all (default: the first GPU, else the CPU)")
    parser.add_argument("--out", help="result folder or .json file (default: results/)")
    parser.add_argument("--min-time", type=_seconds, help="seconds the timed window of each case lasts at least")
    parser.add_argument("--repeats", type=_count, help="timed repeats per case, at least")
    parser.add_argument("--repeat-time", type=_seconds, help="seconds one repeat lasts at least")
    parser.add_argument(
        "--rounds",
        type=_count,
        help="times each case is measured, the cases in a new random order each round "
        "(samples spread over the run, so a noisy machine's slow spells fall on every case alike)",
    )
    parser.add_argument(
        "--sustain",
        type=_positive_seconds,
        metavar="S",
        help="time each case for S seconds in segments of about 1 s, to set a burst window against a tail window "
        "(a GPU that throttles after minutes; flag sustained_drop); one round",
    )
    parser.add_argument(
        "--burst", type=_positive_seconds, metavar="S", help="with --sustain: the burst window, the first S seconds (default 10)"
    )
    parser.add_argument(
        "--tail", type=_positive_seconds, metavar="S", help="with --sustain: the tail window, the last S seconds (default 60)"
    )
    parser.add_argument("--json", action="store_true", help="print the result document as JSON instead of the report")
    parser.add_argument("--no-monitor", action="store_true", help="do not sample power, energy or memory")
    parser.add_argument(
        "--nominal-watts", type=_watts, metavar="W", help="watts to assume where nothing measures power (an estimate)"
    )
    parser.add_argument(
        "--interval", type=_interval, metavar="S", help="sampling interval of the monitor in seconds (default 0.05)"
    )
    parser.add_argument("--node-power", metavar="SPEC", help=NODE_POWER_HELP)
    _add_run_modes(parser)


def _add_run_modes(parser: argparse.ArgumentParser) -> None:
    """`run`: how the cases run: process isolation, threads, torchrun timeouts, operating points."""
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure every case (each round) in a fresh worker process, so a crash, a CUDA error or a hang "
        "fails that case alone (default: on when a GPU is used, off on the CPU)",
    )
    parser.add_argument(
        "--case-timeout",
        type=_number("a number of seconds", lambda v: v > 0, "a number of seconds > 0"),
        metavar="S",
        help="fail a case whose round runs longer than this in its worker (default 600, or 3x what the timing "
        "settings allow a round when longer; implies --isolate)",
    )
    parser.add_argument(
        "--threads",
        type=_count,
        metavar="N",
        help="CPU threads torch uses in this process (each rank under torchrun, "
        "which sets OMP_NUM_THREADS=1 when it is unset); recorded in the result",
    )
    parser.add_argument(
        "--pg-timeout",
        type=_number("a number of seconds", lambda v: v > 0, "a number of seconds > 0"),
        default=300.0,
        metavar="S",
        help="under torchrun: timeout of the process groups' collectives (default 300)",
    )
    parser.add_argument(
        "--hang-timeout",
        type=_number("a number of seconds", lambda v: v > 0, "a number of seconds > 0"),
        default=120.0,
        metavar="S",
        help="under torchrun: when no rank has moved for this long while some wait for others, the ranks "
        "behind are named hung and the job ends (default 120; shorter than --pg-timeout)",
    )
    parser.add_argument(
        "--power-limit",
        metavar="W[,W...]",
        help="sweep the GPU's power limit: watts (450) or percent of the "
        "default limit (70%%), crossed with the cases; needs root or CAP_SYS_ADMIN; the limit as found is "
        "restored on every way out (a watchdog restores it if this process is killed)",
    )
    parser.add_argument(
        "--gpu-clocks",
        metavar="MHZ[,MHZ...]",
        help="sweep locked SM clocks (MHz), crossed with the cases and "
        "--power-limit; needs root or CAP_SYS_ADMIN. NVML cannot read an existing clock lock, so afterwards the "
        "clocks are reset to the driver's default (a lock set before the run is lost)",
    )
    parser.add_argument(
        "--settle",
        type=_number("a number of seconds", lambda v: v >= 0, "a number of seconds >= 0"),
        metavar="S",
        help="seconds to wait after setting an operating point, before warm-up (default 2)",
    )


def _add_compare(parser: argparse.ArgumentParser) -> None:
    """`compare BASELINE CURRENT`: the regression gate; either side a file, a folder, or runs of a
    results store (STORE:run=ID[,ID];host=NAME;since=DATE;until=DATE)."""
    parser.add_argument("baseline", metavar="BASELINE", help="result file or folder, or STORE:run=ID (a store's runs)")
    parser.add_argument("current", metavar="CURRENT", help="as BASELINE")
    parser.add_argument(
        "--threshold", type=_percent, default=5.0, metavar="PCT", help="regression threshold in percent (default 5)"
    )
    parser.add_argument("--metric", default="throughput", help="throughput or efficiency")
    parser.add_argument("--format", default="table", help="table or markdown")
    parser.add_argument("--allow-different-hardware", action="store_true", help="compare runs from different devices")


NODE_POWER_HELP = (
    "also measure the whole node through its BMC: ipmi://HOST[:PORT], redfish://HOST[:PORT] (https), "
    "redfish+http://HOST[:PORT], or a TOML file (url, credentials, chassis, verify_tls, ca_file, poll_s, timeout_s); "
    "default $WATTBENCH_NODE_POWER. Credentials from $WATTBENCH_BMC_USERNAME and $WATTBENCH_BMC_PASSWORD or a file "
    "only you can read ($WATTBENCH_BMC_CREDENTIALS), never from the command line"
)


def _add_monitor(parser: argparse.ArgumentParser) -> None:
    """`monitor -- COMMAND`: energy, power and memory of any command."""
    parser.add_argument("--interval", type=_interval, metavar="S", help="sampling interval in seconds (default 0.05)")
    parser.add_argument("--nominal-watts", type=_watts, metavar="W", help="watts to assume where nothing measures power")
    parser.add_argument("--node-power", metavar="SPEC", help=NODE_POWER_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")


def _grid_presets() -> str:
    """The carbon presets for --help: name, gCO2e/kWh, side and year (bench/report/carbon.py has
    their sources)."""
    from bench.report.carbon import PRESETS

    return "; ".join(f"{p.name} {p.g_per_kwh:g} ({p.side}, {p.year})" for p in PRESETS.values())


def _add_ingest(parser: argparse.ArgumentParser) -> None:
    """`ingest FILES... --store DIR`: result files into a results store."""
    parser.add_argument("paths", nargs="*", metavar="RESULT_FILE_OR_DIR")
    parser.add_argument("--store", required=True, metavar="DIR", help="the store folder (made if new)")
    parser.add_argument("--compact", action="store_true", help="then rewrite the store's part files into as few as can be")
    parser.add_argument("--workers", type=_count, metavar="N", help="processes that read files (default: up to 2)")
    parser.add_argument("--strict", action="store_true", help="exit 2 when a file was skipped (damaged, still running)")


def _add_fleet(parser: argparse.ArgumentParser) -> None:
    """`fleet STORE_OR_RESULTS...`: outliers among siblings."""
    from bench.cli_fleet import add_filters

    parser.add_argument("paths", nargs="+", metavar="STORE_OR_RESULT_FILE_OR_DIR")
    parser.add_argument(
        "--threshold", type=_percent, default=5.0, metavar="PCT", help="how much worse than the median an outlier is (default 5)"
    )
    parser.add_argument(
        "--min-z", type=_number("a number", lambda v: v > 0, "> 0"), default=3.5, metavar="Z", help="robust z-score (default 3.5)"
    )
    parser.add_argument("--fail-on-outliers", action="store_true", help="exit 1 when anything is named (an acceptance gate)")
    parser.add_argument("--format", default="table", help="table, markdown, csv or json")
    parser.add_argument("--plot", metavar="FILE.png", help="each case's spread across the fleet, the named GPUs marked")
    add_filters(parser)


def _add_report(parser: argparse.ArgumentParser) -> None:
    """`report FILES...`: tables, exports, plots, the frontier."""
    parser.add_argument("paths", nargs="+", metavar="RESULT_FILE_OR_DIR")
    parser.add_argument("--format", default="table", help="table, csv, markdown, json or pytest-benchmark")
    parser.add_argument("--metric", default="throughput", help="throughput, efficiency or energy: what 'best' and ratios use")
    parser.add_argument("--baseline", metavar="HARDWARE", help="show every hardware as a ratio to this one")
    parser.add_argument(
        "--grid-intensity",
        metavar="G|REGION",
        help="gCO2e/kWh or a region preset: " + _grid_presets(),
    )
    parser.add_argument(
        "--strict", action="store_true", help="a result file that cannot be read is an error (default: skipped with a warning)"
    )
    parser.add_argument("--plot", metavar="FILE.png", help="draw power over time and throughput per watt (needs matplotlib)")
    parser.add_argument("--per-rank", action="store_true", help="multi-rank runs: also a table of each rank's figures per case")
    parser.add_argument(
        "--frontier",
        action="store_true",
        help="per case and hardware, the operating points (power limit, clocks, llm batch) on the "
        "throughput / energy-per-work Pareto frontier and the one to run at; with --plot, its picture",
    )
    parser.add_argument(
        "--max-slowdown",
        metavar="PCT",
        help="--frontier: recommend the least energy per unit of work "
        "within PCT%% of the fastest point's throughput (0 to 100, default 5)",
        type=_number("a percentage", lambda v: 0 <= v <= 100, "a percentage from 0 to 100"),
    )
    parser.add_argument(
        "--min-throughput",
        metavar="X",
        help="--frontier: recommend only points of at least X work units per second (a plain number: 5000, 1.5e12)",
        type=_number(
            "a number of work units per second", lambda v: v > 0, "a number of work units per second > 0 (5000, 1.5e12)"
        ),
    )
    parser.add_argument(
        "--max-latency",
        metavar="S",
        help="--frontier: recommend only points of at most S seconds per iteration (a plain number: 0.02)",
        type=_number("a number of seconds", lambda v: v > 0, "a number of seconds > 0 (0.02)"),
    )
    site = parser.add_argument_group("site projection (--site): from tokens per joule to megawatts, tonnes and cost")
    site.add_argument(
        "--site",
        action="store_true",
        help="project each hardware's case, at its recommended point, onto a site (--format table, markdown, csv or json)",
    )
    demand = site.add_mutually_exclusive_group()
    demand.add_argument("--tokens-per-day", type=_positive_number, metavar="N", help="the demand: tokens a day (llm cases)")
    demand.add_argument("--flop-per-day", type=_positive_number, metavar="N", help="the demand: FLOP a day (matmul, attention)")
    demand.add_argument("--devices", type=_count, metavar="N", help="the demand: this many devices, busy at --load-factor")
    site.add_argument(
        "--pue", type=_number("a PUE", lambda v: v >= 1, ">= 1"), metavar="X", help="facility / IT power (default 1.56)"
    )
    site.add_argument(
        "--load-factor",
        type=_number("a fraction", lambda v: 0 < v <= 1, "in (0, 1]"),
        metavar="F",
        help="share of hours busy (default 1)",
    )
    site.add_argument(
        "--price", metavar="AMOUNT[CUR]", help="electricity per kWh, e.g. 0.12USD (default: the grid preset's, Korea 182.7KRW)"
    )
    site.add_argument(
        "--node-overhead",
        type=_number("a ratio", lambda v: v >= 1, ">= 1"),
        metavar="X",
        help="node power / device power where only devices were measured (default 1.82, NVIDIA DGX H100)",
    )
    from bench.cli_fleet import add_filters

    add_filters(parser)


def _add_launch(parser: argparse.ArgumentParser) -> None:
    """`launch -n N -- run ...`: N ranks on this machine through torchrun."""
    parser.add_argument(
        "-n", "--nproc-per-node", dest="nproc", type=_count, required=True, metavar="N", help="ranks to start (one per GPU)"
    )
    parser.add_argument(
        "--log-dir", default="results/logs", metavar="DIR", help="torchrun's per-rank log folder (default: results/logs)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the torchrun command instead of running it")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- run [TARGET ...] [OPTIONS]")


def _add_slurm(parser: argparse.ArgumentParser) -> None:
    """`slurm-template -- run ...`: an sbatch script for torchrun on every node."""
    parser.add_argument("--nodes", type=_count, default=2, metavar="N", help="nodes (default 2)")
    parser.add_argument("--gpus-per-node", type=_count, default=8, metavar="G", help="GPUs per node = ranks per node (default 8)")
    parser.add_argument("--cpus-per-task", type=_count, metavar="C", help="CPU cores per node for its ranks (default 4 per GPU)")
    parser.add_argument("--time", default="01:00:00", metavar="HH:MM:SS", help="wall-clock limit (default 01:00:00)")
    parser.add_argument("--partition", metavar="P", help="Slurm partition (default: the cluster's)")
    parser.add_argument(
        "--socket-ifname",
        metavar="IFACE",
        help="network interface the nodes reach each other on, "
        "exported as GLOO_SOCKET_IFNAME (needed where host names resolve to loopback)",
    )
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="a fleet's acceptance: every node on its own (run acceptance), then ingest into --store and the fleet report",
    )
    parser.add_argument("--store", default="results/fleet-store", metavar="DIR", help="with --fleet: the results store")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- run [TARGET ...] [OPTIONS]")


def run_options(args: argparse.Namespace, argv: Sequence[str]) -> RunOptions:
    """`wattbench run`'s flags as the session's options (plain values)."""
    from bench.measure.session import RunOptions

    return RunOptions(
        command=shlex.join(["wattbench", *argv]),
        targets=tuple(args.targets),
        params=tuple(args.params),
        device=args.device,
        out=args.out,
        min_time_s=args.min_time,
        repeats=args.repeats,
        repeat_time_s=args.repeat_time,
        rounds=args.rounds,
        sustain_s=args.sustain,
        burst_s=args.burst,
        tail_s=args.tail,
        isolate=args.isolate,
        case_timeout_s=args.case_timeout,
        power_limits=args.power_limit,
        gpu_clocks=args.gpu_clocks,
        settle_s=args.settle,
        threads=args.threads,
        monitor=not args.no_monitor,
        nominal_watts=args.nominal_watts,
        interval_s=args.interval,
        node_power=args.node_power,
        pg_timeout_s=args.pg_timeout,
        hang_timeout_s=args.hang_timeout,
    )
