"""Result files: schema "wattbench.run/1", atomic writes, reading and validation.

The runner writes the file after every case (temp file + rename), so a crash or Ctrl-C loses at
most the case in flight. The reading side turns files into a DataFrame (bench.report.load).
Reading never uses pickle or eval; a damaged file or an unknown schema is a `ResultFileError`
that names the file. Neither torch nor pandas is imported here: both sides use this module.
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

SCHEMA = "wattbench.run/1"
CASE_STATUSES = ("ok", "failed", "oom", "skipped", "interrupted")
# "running" while a run writes (or after it crashed), "aborted" when a CUDA error left the
# process unable to run more cases (run.abort_reason says which and why).
RUN_STATUSES = ("running", "complete", "interrupted", "aborted")
REQUIRED = {
    "run": ("id", "started_at", "wattbench_version", "command", "status"),
    "host": ("hostname", "os", "python", "torch"),
}
REQUIRED_CASE = ("id", "workload", "params", "device", "status")



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

    def put_case(self, slot: int, case: dict[str, Any], save: bool = True) -> None:
        """Write the record of the case at plan index `slot`: replace the one written before
        (a later round), or insert it so that the cases stay in plan order."""
        at = bisect.bisect_left(self._slots, slot)
        if at < len(self._slots) and self._slots[at] == slot:
            self.doc["cases"][at] = case
        else:
            self._slots.insert(at, slot)
            self.doc["cases"].insert(at, case)
        if save:
            self.save()

    def finish(self, status: str, finished_at: str) -> None:
        self.doc["run"]["status"] = status
        self.doc["run"]["finished_at"] = finished_at
        self.save()

    def save(self) -> None:
        try:
            atomic_write_json(self.path, self.doc)
        except OSError as exc:
            raise UsageError(f"cannot write result file {self.path}: {exc.strerror or exc}") from None


def _check(doc: Any, path: Path) -> dict[str, Any]:
    def fail(msg: str) -> ResultFileError:
        return ResultFileError(f"{path}: {msg}")

    if not isinstance(doc, dict):
        raise fail("not a wattbench result file (top level is not an object)")
    schema = doc.get("schema")
    if schema != SCHEMA:
        raise fail(f"unknown schema {schema!r}; this wattbench reads {SCHEMA!r}")
    for section, keys in REQUIRED.items():
        if not isinstance(doc.get(section), dict):
            raise fail(f"damaged result file: missing section {section!r}")
        missing = [k for k in keys if k not in doc[section]]
        if missing:
            raise fail(f"damaged result file: {section} lacks {', '.join(missing)}")
    if doc["run"]["status"] not in RUN_STATUSES:
        raise fail(f"damaged result file: unknown run status {doc['run']['status']!r}")
    if not isinstance(doc.get("devices"), list) or not isinstance(doc.get("cases"), list):
        raise fail("damaged result file: devices and cases must be lists")
    for i, case in enumerate(doc["cases"]):
        if not isinstance(case, dict):
            raise fail(f"damaged result file: case {i} is not an object")
        missing = [k for k in REQUIRED_CASE if k not in case]
        if missing:
            raise fail(f"damaged result file: case {i} lacks {', '.join(missing)}")
        if case["status"] not in CASE_STATUSES:
            raise fail(f"damaged result file: case {i} has unknown status {case['status']!r}")
    return doc


def read_run(path: Path) -> dict[str, Any]:
    """Read and validate one result file."""
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
    return _check(doc, path)


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively for *.json) into result files, in order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.json") if not p.name.startswith("."))
            if not found:
                raise UsageError(f"{path}: no result files (*.json) in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return list(dict.fromkeys(files))
