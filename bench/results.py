"""Result files: schemas "wattbench.run/1" and "/2", shards, atomic writes, reading and validation.

The runner writes the file after every case (temp file + rename), so a crash or Ctrl-C loses at
most the case in flight. The reading side turns files into a DataFrame (bench.report.load).
Reading never uses pickle or eval; what a file must hold is checked by the typed record
(`bench.record.RunRecord.from_json`), and a damaged file or an unknown schema is a
`ResultFileError` that names the file. Neither torch nor pandas is imported here: both sides use this module.

A multi-rank run (torchrun) writes one shard per rank ("wattbench.shard/1", in `<stem>.shards/`
beside the run file) and one merged run file ("wattbench.run/2": a run/1 document with job-level
cases and a `ranks` section; bench.merge builds it). A shard is never read as a run: read_run
refuses one, and result_files skips `*.shards` folders, so a job is counted once.
"""

from __future__ import annotations

import bisect
import functools
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import ResultFileError, UsageError
from bench.record import (  # noqa: F401 - the format's names, where the file code has always had them
    CASE_STATUSES,
    RUN_SCHEMAS,
    RUN_STATUSES,
    SCHEMA,
    SCHEMA_V2,
    SHARD_IS_NOT_A_RUN,
    SHARD_SCHEMA,
    CaseRecord,
    RecordError,
    RunRecord,
)

SHARDS_SUFFIX = ".shards"


@functools.cache
def file_mode() -> int:
    """The mode of an ordinary new file under this process's umask (0644 under umask 022).

    mkstemp creates 0600 files; a results folder shared in CI must be readable by others as
    any file the user writes would be. The umask can only be read by setting it, so it is set
    back at once (read once per process)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one; the
    file gets the permissions of an ordinary file (file_mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def default_file_name(run_id: str, started_at: str, hostname: str, device_names: Sequence[str]) -> str:
    """e.g. 20261124T131905Z_myhost_nvidia-h100-80gb-hbm3_1a2b3c4d.json"""
    stamp = re.sub(r"[-:]", "", started_at.split(".")[0]) + "Z"
    devices = "+".join(_slug(n) for n in dict.fromkeys(device_names))
    return f"{stamp}_{_slug(hostname)}_{devices}_{run_id[:8]}.json"


def output_path(out: str | None, default_name: str) -> Path:
    """--out names a .json file, or a folder to put a file of the default name in (results/ if none)."""
    if out is None:
        return Path("results") / default_name
    path = Path(out)
    if path.suffix == ".json":
        if path.is_dir():
            raise UsageError(f"--out {out}: is a folder, not a .json file")
        return path
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder; give a folder or a .json file name")
    return path / default_name


def shards_folder(run_file: Path) -> Path:
    """The folder of a multi-rank run's shards: `<dir>/<stem>.json` -> `<dir>/<stem>.shards`."""
    return run_file.with_name(run_file.stem + SHARDS_SUFFIX)


def shard_name(rank: int) -> str:
    """A rank's shard file name, rank-00003.json: five digits sort in rank order up to 99,999 ranks."""
    return f"rank-{rank:05d}.json"


def shard_path(run_file: Path, rank: int) -> Path:
    """Where rank `rank` of the run whose merged file is `run_file` writes its shard:
    `<dir>/<stem>.json` -> `<dir>/<stem>.shards/rank-00003.json`."""
    return shards_folder(run_file) / shard_name(rank)


def is_shards_folder(path: Path) -> bool:
    return path.name.endswith(SHARDS_SUFFIX) and len(path.name) > len(SHARDS_SUFFIX)


class RunFile:
    """A run's result document on disk, rewritten atomically after each change."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc
        self._slots: list[int] = []  # plan index of each entry of doc["cases"] written by put_case
        self.save()

    @property
    def cases(self) -> list[dict[str, Any]]:
        return self.doc["cases"]

    def put_case(self, slot: int, record: CaseRecord, save: bool = True) -> None:
        """Write the record of the case at plan index `slot`: replace the one written before
        (a later round), or insert it so that the cases stay in plan order."""
        case = record.to_json()
        at = bisect.bisect_left(self._slots, slot)
        if at < len(self._slots) and self._slots[at] == slot:
            self.doc["cases"][at] = case
        else:
            self._slots.insert(at, slot)
            self.doc["cases"].insert(at, case)
        if save:
            self.save()

    def start_case(self, slot: int, record: CaseRecord) -> None:
        """The case at plan index `slot` is about to run; `record` is what it is if the run ends
        from outside before it does. A run file written by its own thread ignores it (the runner
        records an interrupt itself); a shard keeps it (`bench.measure.ranks.ShardFile`)."""

    def finish(self, status: str, finished_at: str) -> None:
        self.doc["run"]["status"] = status
        self.doc["run"]["finished_at"] = finished_at
        self.save()

    def save(self) -> None:
        try:
            atomic_write_json(self.path, self.doc)
        except OSError as exc:
            raise UsageError(f"cannot write result file {self.path}: {exc.strerror or exc}") from None


def _validated(doc: Any, path: Path, shard: bool) -> RunRecord:
    try:
        return RunRecord.from_json(doc, shard=shard)
    except RecordError as exc:
        raise ResultFileError(f"{path}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a shape no check foresaw: still one line
        raise ResultFileError(f"{path}: damaged result file: {type(exc).__name__}: {exc}") from None


def check_shard(doc: Any, path: Path) -> RunRecord:
    """A rank's shard ("wattbench.shard/1") as a typed record, checked (`RunRecord.from_json`):
    the sections of a run, a `rank` object with whole `rank` < `world_size`, a whole plan
    `index` on each case that has one. A ResultFileError naming the file otherwise."""
    return _validated(doc, path, shard=True)


def read_json(path: Path) -> Any:
    """The JSON value of a file; a ResultFileError naming it when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ResultFileError(f"{path}: damaged result file: not UTF-8 text") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: damaged result file: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return doc


def read_record(path: Path) -> RunRecord:
    """Read one result file (run/1 or run/2) as a typed record; a damaged or mistyped file is a
    ResultFileError naming the file and the field, a shard is refused with a hint."""
    return _validated(read_json(path), path, shard=False)


def read_run(path: Path) -> dict[str, Any]:
    """Read and validate one result file (run/1 or run/2) as its JSON document."""
    doc = read_json(path)
    _validated(doc, path, shard=False)
    return doc


def _in_shards(path: Path, root: Path) -> bool:
    """True when `path` lies in a `*.shards` folder below `root`."""
    return any(is_shards_folder(Path(part)) for part in path.relative_to(root).parent.parts)


STORE_MARKER = "wattbench-store.json"  # bench/store: a folder holding it is a results store


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively for *.json) into result files, in order.

    Folders named *.shards are skipped silently: they hold a multi-rank run's shards, which are
    not runs, so a folder holding a merged run and its shards counts the job once. So are a
    results store's own files (its marker and index: bench/store). A shards
    folder named itself is a UsageError saying how to build its run file."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            if is_shards_folder(path):
                raise UsageError(
                    f"{path}: a folder of a multi-rank run's shards, not runs: `wattbench merge {path}` builds the run file"
                )
            candidates = sorted(p for p in path.rglob("*.json") if not p.name.startswith("."))
            stores = {p.parent for p in candidates if p.name == STORE_MARKER}  # a results store's own files are not runs
            found = [p for p in candidates if not _in_shards(p, path) and not any(s == p.parent for s in stores)]
            if not found:
                shards = sorted({p.parent for p in candidates})
                if shards:
                    raise UsageError(
                        f"{path}: no result files here, only shards of multi-rank runs: "
                        f"`wattbench merge {shards[0]}` builds a run file from them"
                    )
                raise UsageError(f"{path}: no result files (*.json) in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return list(dict.fromkeys(files))
