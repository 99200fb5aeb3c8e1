"""The fleet's commands: `ingest` (result files into a results store), `fleet` (every GPU against
its siblings), `report STORE` (a store aggregated per hardware, case and operating point) and
`compare`'s run selectors on a store.
The reading side: no torch; pyarrow only when a store is read or written."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.errors import UsageError

__all__ = ["add_filters", "cmd_fleet", "cmd_ingest", "load_rows", "report_store", "store_selection"]

EXIT_OUTLIERS = 1


def add_filters(parser: argparse.ArgumentParser) -> None:
    """--run, --host, --since, --until: which rows of a store (or of result files) to read."""
    parser.add_argument("--run", action="append", metavar="ID", help="only this run (a prefix of its id; repeatable)")
    parser.add_argument("--host", action="append", metavar="NAME", help="only this host (repeatable)")
    parser.add_argument("--since", metavar="DATE", help="only runs started at or after DATE (2026-12-01 or an ISO time)")
    parser.add_argument("--until", metavar="DATE", help="only runs started before DATE")


def _date(text: str, flag: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a date; valid: 2026-12-01 or 2026-12-01T08:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _filtered(frame: Any, args: argparse.Namespace) -> Any:
    import pandas as pd

    keep = pd.Series(True, index=frame.index)
    if args.run:
        keep &= frame["run_id"].astype(str).map(lambda r: any(r.startswith(p) for p in args.run))
    if args.host:
        keep &= frame["host"].astype(str).isin(args.host)
    if args.since:
        keep &= frame["started_at"] >= pd.Timestamp(_date(args.since, "--since"))
    if args.until:
        keep &= frame["started_at"] < pd.Timestamp(_date(args.until, "--until"))
    return frame[keep]


@contextlib.contextmanager
def _one_line(what: str) -> Iterator[None]:
    """A store or file that cannot be read or written (permissions, a full disk, a damaged index
    or Parquet part) as one line naming it, exit 2, not a traceback."""
    try:
        yield
    except UsageError:
        raise
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid and json's errors are ValueErrors
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        raise UsageError(f"{what}: {type(exc).__name__}: {detail}{where}") from None


def _warn(err: Console) -> Any:
    return lambda line: err.print(f"wattbench: warning: {line}", markup=False, highlight=False, soft_wrap=True)


def load_rows(paths: list[str], args: argparse.Namespace, err: Console, columns: list[str] | None = None) -> Any:
    """The rows of a results store, or of result files read the store's way, filtered."""
    import pandas as pd

    from bench.results import result_files
    from bench.store.store import Store, is_store, parse_file, pyarrow

    stores = [Path(p) for p in paths if is_store(Path(p))]
    if stores and len(stores) != len(paths):
        raise UsageError("give either one results store or result files and folders, not both")
    if len(stores) > 1:
        raise UsageError("one results store at a time; valid: a store, or result files and folders")
    if stores:
        frame = Store.open(stores[0]).read(columns)
    else:
        pa = pyarrow()
        tables = []
        for path in result_files(paths):
            try:
                tables.append(parse_file(str(path)).table)
            except Exception as exc:  # noqa: BLE001 - a damaged file is skipped, as `report` does
                _warn(err)(f"skipped {exc}")
        if not tables:
            raise UsageError("no result files could be read")
        table = pa.concat_tables(tables)
        frame = (table.select(columns) if columns else table).to_pandas(strings_to_categorical=True)
    return _filtered(frame, args) if len(frame) else pd.DataFrame(columns=frame.columns)


def cmd_ingest(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.store.store import Store

    with _one_line(f"the store {args.store}"):
        store = Store.open(Path(args.store), create=True)
        report = store.ingest(args.paths, _warn(err), workers=args.workers) if args.paths else None
        if report is not None:
            out.print(f"{args.store}: {report.summary()}", markup=False, highlight=False, soft_wrap=True)
        if args.compact:
            before, after = store.compact(_warn(err))
            out.print(f"{args.store}: compacted {before} part file(s) into {after}", markup=False, highlight=False)
    if report is not None and report.refused and args.strict:
        return 2
    return 0


def cmd_fleet(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.report.fleet import FLEET_COLUMNS, Rule, analyse
    from bench.report.fleet_output import fleet_csv, fleet_json, fleet_markdown, plot_fleet, render_fleet

    formats = ("table", "markdown", "csv", "json")
    if args.format not in formats:
        raise UsageError(f"--format {args.format!r} is not valid; valid: {', '.join(formats)}")
    if args.plot and not str(args.plot).endswith(".png"):
        raise UsageError(f"--plot {args.plot!r}: valid: a .png file name")
    with _one_line(" ".join(args.paths)):
        frame = load_rows(args.paths, args, err, FLEET_COLUMNS)
    report = analyse(frame, Rule(threshold=args.threshold / 100, min_z=args.min_z))
    if args.format == "table":
        render_fleet(report, out)
    elif args.format == "markdown":
        sys.stdout.write(fleet_markdown(report))
    elif args.format == "csv":
        sys.stdout.write(fleet_csv(report))
    else:
        sys.stdout.write(json.dumps(fleet_json(report), indent=1, default=str) + "\n")
    if args.plot:
        with _one_line(f"--plot {args.plot}"):
            panels = plot_fleet(report, frame, Path(args.plot))
        err.print(f"wattbench: {args.plot}: {panels} case(s) drawn", markup=False, highlight=False)
    return EXIT_OUTLIERS if args.fail_on_outliers and report.outliers else 0


def report_store(args: argparse.Namespace, out: Console, err: Console) -> int:
    """`report STORE`: the store aggregated per hardware, case and operating point (a million
    rows are not printed one per line): runs, GPUs, median throughput and its spread, energy
    per unit of work and power, each energy figure with its source."""
    from bench.report.fleet_output import energy_per_work_text, rate_text

    columns = ["run_id", "host", "uuid", "started_at", "hardware", "workload", "params", "case_key", "op_label", "work_unit"]
    columns += ["status", "throughput", "energy_per_unit", "avg_watts", "energy_source", "energy_boundary"]
    with _one_line(" ".join(args.paths)):
        frame = load_rows(args.paths, args, err, columns)
    ok = frame[(frame["status"] == "ok") & frame["throughput"].notna()]
    groups = ok.groupby(["hardware", "case_key", "op_label"], observed=True, sort=True)
    table = Table(title=f"{len(frame):,} rows of {frame['run_id'].nunique():,} run(s); {len(ok):,} ok", title_justify="left")
    for column in (
        "Hardware",
        "Case",
        "Operating point",
        "Runs",
        "GPUs",
        "Median",
        "5th - 95th",
        "Energy/work",
        "Power",
        "Energy from",
    ):
        table.add_column(column, overflow="fold")
    for (hardware, _, point), rows in groups:
        first = rows.iloc[0]
        unit = first["work_unit"]
        sources = ", ".join(
            sorted(
                {
                    f"{s} [{b}]" if b not in (None, "device") else str(s)
                    for s, b in zip(rows["energy_source"], rows["energy_boundary"], strict=True)
                    if s
                }
            )
        )
        table.add_row(
            str(hardware),
            f"{first['workload']} {first['params']}",
            str(point or ""),
            f"{rows['run_id'].nunique():,}",
            f"{rows['uuid'].nunique():,}",
            rate_text(rows["throughput"].median(), unit),
            f"{rate_text(rows['throughput'].quantile(0.05), unit)} - {rate_text(rows['throughput'].quantile(0.95), unit)}",
            energy_per_work_text(rows["energy_per_unit"].median(), unit),
            f"{rows['avg_watts'].median():.0f} W" if rows["avg_watts"].notna().any() else "-",
            sources or "-",
        )
    out.print(table)
    return 0


SELECTOR_KEYS = ("run", "host", "since", "until")


def store_selection(text: str, err: Console) -> list[str] | None:
    """`compare`'s run selector on a store, STORE:KEY=VALUE[;KEY=VALUE...] with keys run (id
    prefixes, comma-separated), host, since and until: the result files of the runs it selects
    (the store keeps their paths; `compare` needs their raw repeat times, which the store leaves
    in the files). None when `text` is not a selector on a store."""
    from bench.store.store import Store, is_store

    folder, colon, selector = text.partition(":")
    if not colon or not is_store(Path(folder)):
        return None
    wanted: dict[str, list[str]] = {}
    for part in filter(None, selector.split(";")):
        key, equals, value = part.partition("=")
        if not equals or key not in SELECTOR_KEYS or not value:
            raise UsageError(f"{text!r}: {part!r} is not a selector; valid: STORE:run=ID[,ID];host=NAME;since=DATE;until=DATE")
        wanted.setdefault(key, []).extend(value.split(",") if key in ("run", "host") else [value])
    since, until = wanted.get("since", []), wanted.get("until", [])
    args = argparse.Namespace(
        run=wanted.get("run"), host=wanted.get("host"), since=since[-1] if since else None, until=until[-1] if until else None
    )
    store = Store.open(Path(folder))
    rows = _filtered(store.read(["run_id", "host", "started_at"]), args)
    runs = sorted(set(rows["run_id"].astype(str)))
    if not runs:
        raise UsageError(f"{text!r} selects no run of the store")
    index = store.index()
    files = [str(index[r]["file"]) for r in runs]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise UsageError(f"{text!r}: compare needs the runs' result files (raw repeat times), and {missing[0]} is gone")
    return files
