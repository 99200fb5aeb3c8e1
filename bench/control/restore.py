"""Restore records: what a sweep must put back, written to disk before its first change.

One JSON file per GPU, `restore-<uuid>.json` in the state folder ($WATTBENCH_STATE_DIR, else
/var/lib/wattbench where this process may write, as a sweep run with sudo may, else
$XDG_STATE_HOME/wattbench or ~/.local/state/wattbench; records are looked for in all of them):
the GPU, the limit it had before the sweep (watts), whether the sweep locks its clocks, and the
sweeping process (host, pid).

Who restores, and when:
- the sweeping process itself, on every way out it survives (normal end, a failed case, Ctrl-C,
  SIGTERM), then deletes the record;
- its watchdog (`python -m bench.control.restore WATCH RECORD...`, started with the sweep in a
  session of its own, so a Ctrl-C aimed at the sweep does not reach it): it holds the read end
  of a pipe whose write end only the sweep holds. When the sweep ends, the pipe closes: "done"
  before EOF means the sweep restored; EOF alone means it died (kill -9, a crash) and the
  watchdog restores at once;
- when the watchdog died too, the next measuring command (`run`, `monitor`) or `wattbench
  restore` finds the record of a process that no longer runs, restores and says so. A record
  whose process still runs belongs to a sweep in progress and is left alone.

NVML cannot read an existing clock lock, so restoring clocks resets them to the driver's
default (any lock set before the sweep is lost); the sweep warns before it starts.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.results import atomic_write_json

SCHEMA = "wattbench.restore/1"
STATE_ENV = "WATTBENCH_STATE_DIR"


SYSTEM_DIR = Path("/var/lib/wattbench")  # one place for every user of the machine, root's sweeps included


def user_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "wattbench"


def state_dirs() -> list[Path]:
    """Where records are looked for: $WATTBENCH_STATE_DIR alone when set; else the machine-wide
    folder (a sweep run with sudo writes there, so a later run as another user still sees its
    record and says the GPU is left changed) and this user's own."""
    explicit = os.environ.get(STATE_ENV)
    return [Path(explicit)] if explicit else [SYSTEM_DIR, user_dir()]


def state_dir() -> Path:
    """Where a new record is written: the first of `state_dirs` this process can write to."""
    for folder in state_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    return state_dirs()[-1]


@dataclass(frozen=True)
class Record:
    """What to put back on one GPU, and who changed it; `folder` is where it was found."""

    uuid: str
    device: str
    power_limit_w: float | None  # the limit before the sweep; None: the sweep does not change it
    reset_clocks: bool  # the sweep locks clocks: restoring resets them
    host: str
    pid: int
    created_at: str
    command: str
    folder: str

    @property
    def path(self) -> Path:
        return Path(self.folder) / f"restore-{self.uuid}.json"

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **{k: v for k, v in asdict(self).items() if k != "folder"}}

    def describe(self) -> str:
        parts = []
        if self.power_limit_w is not None:
            parts.append(f"power limit {self.power_limit_w:g} W")
        if self.reset_clocks:
            parts.append("SM clocks reset (unlocked)")
        return f"{self.device} ({self.uuid}): {' and '.join(parts) or 'nothing'}"


def write_record(uuid: str, device: str, power_limit_w: float | None, reset_clocks: bool, command: str) -> Record:
    record = Record(
        uuid,
        device,
        power_limit_w,
        reset_clocks,
        socket.gethostname(),
        os.getpid(),
        datetime.now(UTC).isoformat(timespec="seconds"),
        command,
        str(state_dir()),
    )
    atomic_write_json(record.path, record.to_json())
    return record


def load_record(path: Path) -> Record | None:
    try:
        doc = json.loads(path.read_text())
        if doc.pop("schema", None) != SCHEMA:
            return None
        doc.pop("folder", None)
    except (OSError, ValueError):
        return None
    try:
        return Record(**doc, folder=str(path.parent))
    except TypeError:  # a record of another version: not ours to interpret
        return None


def read_records() -> list[Record]:
    """Every readable record in the state folders (a damaged one is skipped: it cannot say what
    to restore; `wattbench info` still shows the GPU's limits)."""
    found = []
    for folder in state_dirs():
        for path in sorted(folder.glob("restore-*.json")) if folder.is_dir() else []:
            record = load_record(path)
            if record is not None:
                found.append(record)
    return found


def process_alive(host: str, pid: int) -> bool:
    """Whether the process that wrote a record still runs (on this host; a record from another
    host sharing the folder is taken as alive: it cannot be checked from here)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restore(record: Record) -> None:
    """Put the GPU back as the record says, then delete the record. The device layer's errors
    propagate (bench.device.base.ControlError, DeviceUnavailable): the record stays for a later try."""
    from bench.device import vendor_for

    vendor_for(record.uuid).restore(record.uuid, record.power_limit_w, record.reset_clocks)
    record.path.unlink(missing_ok=True)


def honour_records(say: Callable[[str], None]) -> list[Record]:
    """Restore what dead runs left (this host's records whose process is gone), saying so in one
    line each; returns the records still left (a sweep in progress, or no permission to restore,
    which is said too: a GPU is never left capped without the user being told)."""
    from bench.device import vendor_for

    left = []
    for record in read_records():
        if record.pid == os.getpid():
            continue
        if process_alive(record.host, record.pid):
            say(
                f"a wattbench sweep (pid {record.pid} on {record.host}) is changing {record.device} ({record.uuid}); "
                "its figures and this run's would disturb each other"
            )
            left.append(record)
            continue
        allowed, why = vendor_for(record.uuid).may_change_settings()
        if not allowed:
            say(
                f"{record.describe()} is still to restore: the run that changed it (pid {record.pid}) ended without "
                f"restoring, and this process may not ({why}); run `sudo wattbench restore`"
            )
            left.append(record)
            continue
        try:
            restore(record)
        except Exception as exc:  # noqa: BLE001 - NVML gone or refusing: say it, keep the record
            say(f"could not restore {record.describe()} left by pid {record.pid}: {exc}; record kept at {record.path}")
            left.append(record)
            continue
        say(
            f"restored {record.describe()}: the run that changed it (pid {record.pid}, {record.created_at}) ended "
            "without restoring"
        )
    return left


# --- the watchdog ----------------------------------------------------------------------------

DONE = b"done\n"


def _tell(text: str) -> None:
    """Best effort: the terminal the sweep ran in may be gone (a closed ssh session)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass


def watch(owner: int, paths: list[str], stdin: Any = None) -> int:
    """Block until the sweep's pipe closes; unless it said "done" first, restore from `paths` the
    records the sweep (pid `owner`) still owns. A record another sweep wrote since (it honoured
    this one's and took the GPU over) is left alone: restoring it would undo that sweep's setting
    under its feet."""
    stream = stdin or sys.stdin.buffer
    said = b""
    while chunk := stream.read(64):
        said += chunk
    if said.endswith(DONE):
        return 0
    for path in paths:
        record = load_record(Path(path))
        if record is None:
            continue  # restored and deleted by the sweep already
        if record.pid != owner or record.host != socket.gethostname():
            continue
        try:
            restore(record)
            _tell(f"wattbench watchdog: the sweep (pid {record.pid}) died; restored {record.describe()}")
        except Exception as exc:  # noqa: BLE001
            _tell(
                f"wattbench watchdog: could not restore {record.describe()}: {exc}; record kept at {path}; "
                "run `wattbench restore`"
            )
    return 0


if __name__ == "__main__":  # python -m bench.control.restore WATCH PID RECORD...
    if len(sys.argv) < 3 or sys.argv[1] != "WATCH" or not sys.argv[2].isdigit():
        sys.exit("usage: python -m bench.control.restore WATCH PID RECORD...")
    sys.exit(watch(int(sys.argv[2]), sys.argv[3:]))
