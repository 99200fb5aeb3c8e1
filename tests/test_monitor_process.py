"""ProcessMemory follows a process tree without reading every process at each sample.

Real processes (a root that starts a child that starts a `sleep` grandchild) check that the tree is
found and that an exited member is dropped, through whichever discovery this machine supports and
through the full-scan fallback forced on. A fake /proc checks the walk over
/proc/<pid>/task/<tid>/children where the kernel lacks it. Refreshes run on a replaced clock, so
nothing here depends on timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import psutil
import pytest

from bench.cli import main
from bench.monitor import process
from bench.monitor.process import PROCESS_DEVICE, ProcessMemory

# The child prints its pid and, once told, starts a `sleep` grandchild and prints its pid; told
# again it kills and reaps the grandchild, prints "gone", and exits at the next line.
CHILD = (
    "import os, subprocess, sys\n"
    "print('child', os.getpid(), flush=True)\n"
    "sys.stdin.readline()\n"
    "g = subprocess.Popen(['sleep', '60'])\n"
    "print('grandchild', g.pid, flush=True)\n"
    "sys.stdin.readline()\n"
    "g.kill(); g.wait()\n"
    "print('gone', flush=True)\n"
    "sys.stdin.readline()\n"
)
ROOT = f"import subprocess, sys\nsys.exit(subprocess.call([sys.executable, '-c', {CHILD!r}]))\n"


class Tree:
    """The root process (started here) and what its descendants print on the shared pipe."""

    def __init__(self) -> None:
        self.root = subprocess.Popen([sys.executable, "-c", ROOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.child = self._expect("child")
        self.grandchild: int | None = None

    def _expect(self, word: str) -> int:
        assert self.root.stdout is not None
        line = self.root.stdout.readline().split()
        assert line and line[0] == word, line
        return int(line[1]) if len(line) > 1 else 0

    def tell(self) -> None:
        assert self.root.stdin is not None
        self.root.stdin.write("\n")
        self.root.stdin.flush()

    def start_grandchild(self) -> int:
        self.tell()
        self.grandchild = self._expect("grandchild")
        return self.grandchild

    def stop_grandchild(self) -> None:
        self.tell()
        self._expect("gone")

    def close(self) -> None:
        if self.root.poll() is None:
            for p in (self.grandchild, self.child, self.root.pid):
                try:
                    if p:
                        os.kill(p, 9)
                except OSError:
                    pass
        self.root.wait()
        for pipe in (self.root.stdin, self.root.stdout):
            if pipe:
                pipe.close()


@pytest.fixture
def tree():
    t = Tree()
    yield t
    t.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(process, "_now", c)
    return c


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call that reads every process on the machine, by name."""
    calls: list[str] = []
    children, process_iter, pids = psutil.Process.children, psutil.process_iter, psutil.pids

    def counted_children(self, recursive=False):
        calls.append(f"children(recursive={recursive})")
        return children(self, recursive)

    def counted(name, fn):
        def wrapper(*a, **k):
            calls.append(name)
            return fn(*a, **k)

        return wrapper

    monkeypatch.setattr(psutil.Process, "children", counted_children)
    monkeypatch.setattr(psutil, "process_iter", counted("process_iter", process_iter))
    monkeypatch.setattr(psutil, "pids", counted("pids", pids))
    return calls


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a kernel without /proc/<pid>/task/<tid>/children."""
    monkeypatch.setattr(process, "children_file_supported", lambda: False)


def _follows(tree: Tree, clock: Clock) -> None:
    memory = ProcessMemory(tree.root.pid, children=True)
    assert memory.pids() == {tree.root.pid, tree.child}
    grandchild = tree.start_grandchild()
    clock.t += 60.0  # past any refresh and scan interval
    assert (memory.rss_bytes() or 0) > 0
    assert memory.pids() == {tree.root.pid, tree.child, grandchild}
    tree.stop_grandchild()  # killed and reaped by its parent
    assert (memory.rss_bytes() or 0) > 0  # a sample drops it at once, before any refresh
    assert memory.pids() == {tree.root.pid, tree.child}


def test_tree_followed_and_exited_member_dropped(tree: Tree, clock: Clock) -> None:
    _follows(tree, clock)


def test_tree_followed_by_full_scan_without_children_file(tree: Tree, clock: Clock, fallback: None) -> None:
    _follows(tree, clock)


def test_samples_read_known_pids_only(tree: Tree, clock: Clock, scans: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the children file, the worst case: samples at 50 ms for 20 s on a machine where no
    # process is created (the last pid stays put) never read every process.
    monkeypatch.setattr(process, "children_file_supported", lambda: False)
    monkeypatch.setattr(process, "last_pid", lambda: 4321)
    memory = ProcessMemory(tree.root.pid, children=True)
    assert scans == ["children(recursive=True)"]  # the first discovery
    for _ in range(400):
        clock.t += 0.05
        assert (memory.rss_bytes() or 0) > 0
    assert scans == ["children(recursive=True)"]


def test_full_scan_when_a_process_was_created_at_most_every_interval(
    tree: Tree, clock: Clock, scans: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "children_file_supported", lambda: False)
    newest = iter(range(10**6, 2 * 10**6))  # a process is created on the machine before every look
    monkeypatch.setattr(process, "last_pid", lambda: next(newest))
    memory = ProcessMemory(tree.root.pid, children=True)
    scanned_at = [clock.t]
    for _ in range(400):  # 20 s of samples at 50 ms
        clock.t += 0.05
        before = len(scans)
        memory.rss_bytes()
        if len(scans) > before:
            scanned_at.append(clock.t)
    gaps = [b - a for a, b in pairwise(scanned_at)]
    assert gaps and min(gaps) >= process.SCAN_INTERVAL_S - 1e-9
    assert set(scans) == {"children(recursive=True)"}


def test_samples_do_not_scan_with_children_file(tree: Tree, clock: Clock, scans: list[str]) -> None:
    if not process.children_file_supported():
        pytest.skip("this kernel has no /proc/<pid>/task/<tid>/children (the fake /proc test covers the walk)")
    memory = ProcessMemory(tree.root.pid, children=True)
    tree.start_grandchild()
    for _ in range(40):
        clock.t += 0.05
        memory.rss_bytes()
    assert tree.grandchild in memory.pids()
    assert scans == []


def _fake_proc(root: Path, pid: int, rss_pages: int, hwm_kib: int, threads: dict[int, list[int]]) -> None:
    (root / str(pid)).mkdir()
    (root / str(pid) / "statm").write_text(f"{rss_pages * 3} {rss_pages} 7 1 0 9 0\n")
    (root / str(pid) / "status").write_text(f"Name:\tx\nVmPeak:\t  99999999 kB\nVmHWM:\t{hwm_kib:>10} kB\nVmRSS:\t 1 kB\n")
    for tid, kids in threads.items():
        (root / str(pid) / "task" / str(tid)).mkdir(parents=True)
        (root / str(pid) / "task" / str(tid) / "children").write_text("".join(f"{k} " for k in kids))


def test_walk_of_children_files(tmp_path: Path, clock: Clock, scans: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.getpid()  # a real, running root: its start time is checked through psutil
    monkeypatch.setattr(process, "PROC", str(tmp_path))
    monkeypatch.setattr(process, "children_file_supported", lambda: True)
    (tmp_path / "loadavg").write_text("0.00 0.01 0.05 1/80 4321\n")
    _fake_proc(tmp_path, me, 10, 100, {me: [900001]})
    _fake_proc(tmp_path, 900001, 20, 200, {900001: [], 900003: [900002]})  # its 2nd thread forked
    _fake_proc(tmp_path, 900002, 30, 3_000_000, {900002: []})
    page = process.PAGE_BYTES

    memory = ProcessMemory(me, children=True)
    assert memory.pids() == {me, 900001, 900002}
    assert memory.rss_bytes() == 60 * page
    assert memory.read().memory_used_bytes == 60 * page
    assert memory.peak_bytes() == max(60 * page, 3_000_000 * 1024)  # the grandchild's exact peak

    _fake_proc(tmp_path, 900004, 40, 400, {900004: []})
    (tmp_path / str(me) / "task" / str(me) / "children").write_text("900001 900004 ")
    clock.t += process.REFRESH_S
    assert memory.rss_bytes() == 60 * page  # the last pid did not move: no walk
    (tmp_path / "loadavg").write_text("0.00 0.01 0.05 1/81 900004\n")
    assert memory.rss_bytes() == 60 * page  # a new child counts from the next refresh...
    clock.t += process.REFRESH_S
    assert memory.rss_bytes() == 100 * page  # ...not before
    assert memory.pids() == {me, 900001, 900002, 900004}

    for f in (tmp_path / "900002").rglob("*"):
        if f.is_file():
            f.unlink()
    assert memory.rss_bytes() == 70 * page  # gone: dropped by the sample itself
    assert memory.pids() == {me, 900001, 900004}
    assert scans == []


def test_this_process_alone_is_unchanged() -> None:
    memory = ProcessMemory()
    assert memory.device_id == PROCESS_DEVICE and not memory.children
    rss = memory.rss_bytes()
    assert rss and rss > 1_000_000
    assert (memory.read().memory_used_bytes or 0) > 0
    assert memory.pids() == {os.getpid()}
    if process.LINUX:
        assert (memory.peak_bytes() or 0) >= rss * 0.5


ALLOC_500MB = "import time\nb = bytearray(500_000_000)\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(0.5)\n"


def _monitor(capsys: pytest.CaptureFixture[str], *command: str) -> dict:
    capsys.readouterr()
    assert main(["monitor", "--json", "--", *command]) == 0
    return json.loads(capsys.readouterr().out)


def test_monitor_reports_peak_of_500mb_command(capsys: pytest.CaptureFixture[str]) -> None:
    report = _monitor(capsys, sys.executable, "-c", ALLOC_500MB)
    assert report["peak_memory_bytes"] == pytest.approx(500e6, rel=0.05)


def test_monitor_does_not_report_its_own_memory_as_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    # A child's ru_maxrss includes the memory it had before exec: a copy of this (large) pytest
    # process's. `sleep` itself stays near a megabyte.
    hold = bytearray(200_000_000)
    hold[::4096] = b"\1" * len(hold[::4096])
    report = _monitor(capsys, "sleep", "0.2")
    assert 0 < report["peak_memory_bytes"] < 50e6
    del hold


def test_ru_maxrss_unit_is_one_constant():
    """ru_maxrss is KiB on Linux and bytes on macOS: one constant, used by `wattbench monitor` and
    by the runner's fallback memory figure."""
    import resource

    from bench.measure import lifecycle
    from bench.measure.hardware import cpu_device
    from bench.monitor import command

    assert process.RU_MAXRSS_BYTES == (1 if sys.platform == "darwin" else 1024)
    assert command.RU_MAXRSS_BYTES is process.RU_MAXRSS_BYTES is lifecycle.RU_MAXRSS_BYTES
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * process.RU_MAXRSS_BYTES
    memory = lifecycle._memory(cpu_device(), None).to_json()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * process.RU_MAXRSS_BYTES
    assert memory["source"].startswith("getrusage.ru_maxrss") and before <= memory["peak_bytes"] <= after
    if process.LINUX:  # the kernel's own high-water mark, in bytes, says the unit is right
        assert memory["peak_bytes"] == pytest.approx(process.vm_hwm_bytes(os.getpid()), rel=0.05)
