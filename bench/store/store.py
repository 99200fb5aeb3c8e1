"""The fleet's results store: plain Parquet files in a folder, one row per case and device.

    STORE/wattbench-store.json   what this folder is ("wattbench.store/1") and its columns
    STORE/index.json             each run stored: its row count, the part file that holds it, the
                                 digest and completeness of the file it came from
    STORE/rows/part-*.parquet    the rows (bench/store/rows.py: COLUMNS), zstd-compressed
    STORE/.lock                  held by the one writer (fcntl), with its pid

Any Parquet reader can query `rows/*.parquet` (DuckDB, Spark, Trino, pyarrow, over object storage
too); `index.json` says which part holds each run's current rows, and wattbench's reader keeps
only those. No part is rewritten in place: a write adds new parts, then the index (written
atomically) switches to them, then parts no entry names are removed; a write that dies before
the switch leaves the store as it was, plus a part nothing names (removed by the next write). Compaction (`compact`, or when a store has more than MAX_PARTS parts) rewrites all
parts into files of up to PART_ROWS rows.

Ingesting: rows are keyed by (run id, case index, rank). A run already stored from the same bytes
is unchanged; from other bytes it is replaced when the new file is more complete (a finished run
over an interrupted one, more cases measured, finished later), else left as it is. A file still
"running" is refused, a damaged one skipped, each with one line. pyarrow is imported only here, so
the reading side starts without it and `make gpu-check` never needs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.errors import ResultFileError, UsageError
from bench.record import RecordError, RunRecord
from bench.results import STORE_MARKER, atomic_write_json, result_files
from bench.store.rows import COLUMNS, rows_of

__all__ = ["MAX_PARTS", "PART_ROWS", "STORE_SCHEMA", "IngestReport", "Store", "is_store", "pyarrow"]

STORE_SCHEMA = "wattbench.store/1"
MARKER = STORE_MARKER
MAX_PARTS = 32  # more part files than this: the next ingest compacts
PART_ROWS = 2_000_000  # rows per part file after compaction
PARALLEL_FILES = 16  # files at least, before reading them in worker processes pays
STATUS_RANK = {"complete": 3, "aborted": 2, "interrupted": 2}  # "running" is refused


def pyarrow() -> ModuleType:
    """pyarrow, or a UsageError saying how to get it (the store is an optional extra)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401 - the submodule the store writes with
    except ImportError:
        raise UsageError("the results store needs pyarrow: pip install 'wattbench[store]' (or pip install pyarrow)") from None
    return pa


def is_store(path: Path) -> bool:
    return (path / MARKER).is_file()


@dataclass
class IngestReport:
    """What an ingest did, run by run."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # a stored version as complete or more: left as it is
    refused: list[str] = field(default_factory=list)  # files: still running, damaged
    rows: int = 0

    def summary(self) -> str:
        parts = [
            f"{len(self.added)} run(s) added",
            f"{len(self.replaced)} replaced by a more complete version",
            f"{len(self.unchanged)} unchanged",
        ]
        if self.kept:
            parts.append(f"{len(self.kept)} kept (the stored version is as complete)")
        if self.refused:
            parts.append(f"{len(self.refused)} file(s) skipped")
        return ", ".join(parts) + f"; {self.rows:,} rows written"


@dataclass(frozen=True)
class _Parsed:
    """One result file read for the store: its run, how complete it is, its rows (a pyarrow table)."""

    path: str
    run_id: str
    digest: str
    completeness: tuple[int, int, str]
    table: Any


def _completeness(run: RunRecord) -> tuple[int, int, str]:
    """Which of two versions of a run is the more complete: its status, then the cases it
    measured (any status but "interrupted"), then when it finished."""
    info = run.run
    assert info is not None
    measured = sum(1 for c in run.case_list() if c.status != "interrupted")
    return STATUS_RANK.get(str(info.status), 0), measured, str(info.finished_at or "")


def _arrow_schema(pa: ModuleType) -> Any:
    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "ts": pa.timestamp("us", tz="UTC")}
    return pa.schema([(name, types[kind]) for name, kind in COLUMNS.items()])


def parse_file(path: str) -> _Parsed:
    """Read one result file into the store's rows; ResultFileError (one line) when it cannot be,
    and for a run still "running"."""
    pa = pyarrow()
    data = Path(path).read_bytes()
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFileError(f"{path}: damaged result file: not JSON ({exc})") from None
    try:
        run = RunRecord.from_json(doc)
    except RecordError as exc:
        raise ResultFileError(f"{path}: {exc}") from None
    info = run.run
    assert info is not None
    if info.status == "running":
        raise ResultFileError(f"{path}: still running (or its run died): not stored until it finishes")
    table = pa.Table.from_pydict(rows_of(run, str(path)), schema=_arrow_schema(pa))
    return _Parsed(str(path), str(info.id), hashlib.sha256(data).hexdigest(), _completeness(run), table)


def _parse_or_why(path: str) -> _Parsed | str:
    try:
        return parse_file(path)
    except (ResultFileError, OSError) as exc:
        return str(exc) if isinstance(exc, ResultFileError) else f"{path}: {exc.strerror or exc}"


def _parse_all(paths: Sequence[str], workers: int) -> Iterator[_Parsed | str]:
    """Each file parsed (or why not), in order; in `workers` processes when there are many."""
    if workers <= 1 or len(paths) < PARALLEL_FILES:
        yield from (_parse_or_why(p) for p in paths)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_parse_or_why, paths, chunksize=max(1, len(paths) // (workers * 8)))


class Store:
    """A results store folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rows_dir = root / "rows"

    # --- opening ---

    @classmethod
    def open(cls, root: Path, create: bool = False) -> Store:
        """The store at `root`; with `create`, made there when the folder is new or empty.
        UsageError (one line) for a folder that is something else."""
        root = Path(root)
        if is_store(root):
            marker = json.loads((root / MARKER).read_text())
            if marker.get("schema") != STORE_SCHEMA:
                raise UsageError(
                    f"{root}: a results store of schema {marker.get('schema')!r}; this wattbench reads {STORE_SCHEMA!r}"
                )
            return cls(root)
        if not create:
            raise UsageError(f"{root}: not a results store (no {MARKER}); `wattbench ingest FILES --store {root}` makes one")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise UsageError(f"{root}: exists and is not an empty folder or a results store; valid: a new folder or a store")
        root.mkdir(parents=True, exist_ok=True)
        (root / "rows").mkdir(exist_ok=True)
        atomic_write_json(root / MARKER, {"schema": STORE_SCHEMA, "columns": COLUMNS})
        atomic_write_json(root / "index.json", {"runs": {}})
        return cls(root)

    # --- the index ---

    def index(self) -> dict[str, dict[str, Any]]:
        """run id -> {"part", "rows", "digest", "completeness", "file", "ingested_at"}."""
        doc = json.loads((self.root / "index.json").read_text())
        runs = doc.get("runs")
        return runs if isinstance(runs, dict) else {}

    def _write_index(self, runs: dict[str, dict[str, Any]]) -> None:
        atomic_write_json(self.root / "index.json", {"runs": runs})

    def parts(self) -> list[Path]:
        return sorted(self.rows_dir.glob("part-*.parquet"))

    # --- writing ---

    @contextlib.contextmanager
    def writing(self, say: Callable[[str], None]) -> Iterator[None]:
        """Hold the store's write lock (one writer at a time); says so while waiting for it."""
        with open(self.root / ".lock", "a+", encoding="utf-8") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                say(f"waiting for the store's lock (held by {holder})")
                fcntl.flock(lock, fcntl.LOCK_EX)
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()}")
            lock.flush()
            try:
                yield
            finally:
                lock.seek(0)
                lock.truncate()
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write_part(self, table: Any) -> str:
        pa = pyarrow()
        name = f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}.parquet"
        temporary = self.rows_dir / f".{name}.tmp"
        pa.parquet.write_table(table, temporary, compression="zstd")
        os.replace(temporary, self.rows_dir / name)
        return name

    def ingest(self, paths: Iterable[str | Path], warn: Callable[[str], None], workers: int | None = None) -> IngestReport:
        """Add result files (and folders of them) to the store; see the module docstring."""
        pa = pyarrow()
        files = [str(p.resolve()) for p in result_files(paths)]  # absolute: compare finds them from anywhere
        report = IngestReport()
        with self.writing(warn):
            runs = self.index()
            chosen: dict[str, _Parsed] = {}
            for parsed in _parse_all(files, workers if workers is not None else min(2, os.cpu_count() or 1)):
                if isinstance(parsed, str):
                    warn(f"skipped {parsed}")
                    report.refused.append(parsed)
                    continue
                stored = runs.get(parsed.run_id)
                rival = chosen.get(parsed.run_id)
                if (
                    stored is not None
                    and stored.get("digest") == parsed.digest
                    or rival is not None
                    and rival.digest == parsed.digest
                ):
                    report.unchanged.append(parsed.run_id)
                    continue
                best = max((tuple(stored["completeness"]) if stored else None, rival.completeness if rival else None), key=_order)
                if best is not None and tuple(parsed.completeness) <= best:
                    report.kept.append(parsed.run_id)
                    continue
                chosen[parsed.run_id] = parsed
            if not chosen:
                return report
            table = pa.concat_tables([p.table for p in chosen.values()])
            part = self._write_part(table)
            replaced = {run_id for run_id in chosen if run_id in runs}
            self._prune(runs, replaced)  # before the index names the new part: see _prune
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for run_id, parsed in chosen.items():
                (report.replaced if run_id in replaced else report.added).append(run_id)
                runs[run_id] = {
                    "part": part,
                    "rows": parsed.table.num_rows,
                    "digest": parsed.digest,
                    "completeness": list(parsed.completeness),
                    "file": parsed.path,
                    "ingested_at": now,
                }
            self._write_index(runs)
            self._remove_unreferenced(runs)
            report.rows = table.num_rows
            if len(self.parts()) > MAX_PARTS:
                self._compact(runs)
        return report

    def _prune(self, runs: dict[str, dict[str, Any]], replaced: set[str]) -> None:
        """Copy the parts that hold rows of `replaced` runs without them, under new names, and
        point the index's other runs of those parts at the copies. Nothing is rewritten in place:
        until the new index is written the old parts stand as they were, so a crash or a reader
        holding the old index loses nothing (the old parts go once no entry names them)."""
        pa = pyarrow()
        for part in sorted({runs[r]["part"] for r in replaced}):
            path = self.rows_dir / part
            if not path.exists():
                continue
            table = pa.parquet.read_table(path)
            kept = table.filter(pa.compute.invert(pa.compute.is_in(table["run_id"], value_set=pa.array(sorted(replaced)))))
            others = [r for r, entry in runs.items() if entry["part"] == part and r not in replaced]
            if kept.num_rows and others:
                copy = self._write_part(kept)
                for run_id in others:
                    runs[run_id]["part"] = copy

    def _remove_unreferenced(self, runs: dict[str, dict[str, Any]]) -> None:
        used = {entry["part"] for entry in runs.values()}
        for path in self.parts():
            if path.name not in used:
                path.unlink(missing_ok=True)

    def compact(self, say: Callable[[str], None]) -> tuple[int, int]:
        """Rewrite every part into as few files as PART_ROWS allows; (parts before, after)."""
        with self.writing(say):
            before = len(self.parts())
            self._compact(self.index())
            return before, len(self.parts())

    def _compact(self, runs: dict[str, dict[str, Any]]) -> None:
        pa = pyarrow()
        table = self._read_table(runs, None, dictionaries=False)
        if table.num_rows == 0:
            return
        order = pa.compute.sort_indices(table, sort_keys=[("run_id", "ascending"), ("case_index", "ascending")])
        table = table.take(order)
        run_ids = table["run_id"].to_pylist()
        start = 0
        while start < len(run_ids):
            end = min(start + PART_ROWS, len(run_ids))
            while end < len(run_ids) and run_ids[end] == run_ids[end - 1]:
                end += 1  # a part ends where a run does: a run's rows are never split over parts
            part = self._write_part(table.slice(start, end - start))
            for run_id in dict.fromkeys(run_ids[start:end]):
                runs[run_id]["part"] = part
            start = end
        self._write_index(runs)
        self._remove_unreferenced(runs)

    # --- reading ---

    def _read_table(self, runs: dict[str, dict[str, Any]], columns: Sequence[str] | None, dictionaries: bool = True) -> Any:
        pa = pyarrow()
        wanted = list(columns) if columns is not None else list(COLUMNS)
        read = wanted if "run_id" in wanted else [*wanted, "run_id"]
        by_part: dict[str, list[str]] = {}
        for run_id, entry in runs.items():
            by_part.setdefault(entry["part"], []).append(run_id)
        tables = []
        text = [name for name in read if COLUMNS[name] == "str" and name != "run_id"] if dictionaries else []
        for part, run_ids in sorted(by_part.items()):
            # text as dictionaries, as Parquet keeps it: no decoding and re-encoding of repeated names
            table = pa.parquet.read_table(self.rows_dir / part, columns=read, read_dictionary=text)
            if sum(runs[r]["rows"] for r in run_ids) != table.num_rows:  # rows of runs stored elsewhere now
                table = table.filter(pa.compute.is_in(table["run_id"], value_set=pa.array(run_ids)))
            tables.append(table.select(wanted))
        if not tables:
            return _arrow_schema(pa).empty_table().select(wanted)
        return pa.concat_tables(tables)

    def read(self, columns: Sequence[str] | None = None) -> Any:
        """The store's current rows as a pandas DataFrame (`columns`: only these). Text columns
        are categories: a million rows hold a few thousand distinct hosts, UUIDs and cases, and
        filtering or grouping categories is many times faster than strings."""
        for attempt in range(3):  # a compaction may remove a part between reading the index and it
            try:
                return self._read_table(self.index(), columns).to_pandas(strings_to_categorical=True)
            except FileNotFoundError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def _order(value: tuple[int, int, str] | None) -> tuple[int, tuple[int, int, str]]:
    return (0, (0, 0, "")) if value is None else (1, tuple(value))  # type: ignore[return-value]


def warn_line(text: str) -> None:
    print(f"wattbench: warning: {text}", file=sys.stderr, flush=True)
