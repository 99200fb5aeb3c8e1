"""Resident memory of a process, or of a process and all its descendants, sampled like a power source.

`ProcessMemory()` (the benchmark runner's use: this process alone) reads one RSS per sample
through psutil. `ProcessMemory(pid, children=True)` (`wattbench monitor -- CMD`) follows the
command's process tree without scanning every process on the machine at each sample, so what it
costs grows with the size of the tree, not with the number of processes on the machine:

- Each sample reads only the resident size of the pids known to be in the tree: one small
  /proc/<pid>/statm read each on Linux, psutil `memory_info` of cached Process objects elsewhere.
  A pid that has exited is dropped.
- Every `REFRESH_S` the tree is re-discovered, if a task (process or thread) has been created on
  the machine since the last discovery (the last pid in /proc/loadavg moved; always where that is
  unknown, and at least every `SCAN_MAX_INTERVAL_S`): otherwise the tree cannot have grown. Then
  each member's kernel high-water mark is read. Where Linux lists each thread's children in
  /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN), discovery walks down from the root:
  O(tree size). Without that file the only way to find children is to read every process (psutil
  `children(recursive=True)`, about 15 ms of CPU with 1,000 processes), so that scan also runs at
  most every `SCAN_INTERVAL_S` and at most 0.5% of a core (it waits `SCAN_COST_FACTOR` times its
  own CPU time).
- A process that joins the tree is counted from the next refresh; one that starts and exits
  between two refreshes is seen only through the rusage of waited-for children (see
  `bench.monitor.command`).

Peak (`peak_bytes`): the larger of the tree's summed RSS at any sample (every
`TREE_SAMPLE_PERIOD_S`, so a spike of the sum shorter than that can be missed; sampling it more
often would cost the monitor more than the tree itself on an idle machine) and the largest single process's exact peak kept by
the kernel (VmHWM in /proc/<pid>/status on Linux, peak_wset on Windows), read at each refresh and
at the end. RSS counts a shared page in every process that maps it, so a tree's sum can exceed
the memory it really uses (after a fork, for example).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import psutil

from bench.monitor.base import PowerSource, Reading

PROCESS_DEVICE = "process"

REFRESH_S = 0.5  # look for new members and read per-process peaks this often
TREE_SAMPLE_PERIOD_S = REFRESH_S  # sum the tree's resident memory this often (the sampler's interval if longer)
SCAN_MAX_INTERVAL_S = 30.0  # re-discover at least this often, even when no new pid was seen
SCAN_INTERVAL_S = 1.0  # the full scan (no children file) runs at most this often...
SCAN_COST_FACTOR = 200.0  # ...and waits at least this many times its own CPU time (<= 0.5% of a core)

PROC = "/proc"
LINUX = sys.platform.startswith("linux")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
RU_MAXRSS_BYTES = 1 if sys.platform == "darwin" else 1024  # the unit of getrusage's ru_maxrss: bytes on macOS, KiB elsewhere

_now = time.monotonic  # the clock of refreshes and scans; tests replace it


def children_file_supported() -> bool:
    """True where Linux lists each thread's children in /proc/<pid>/task/<tid>/children."""
    pid = os.getpid()
    return LINUX and os.path.exists(f"{PROC}/{pid}/task/{pid}/children")


def statm_rss_bytes(pid: int) -> int:
    """Resident bytes of `pid` from /proc/<pid>/statm (its second field, in pages).

    Raises OSError (or ValueError) once the process is gone.
    """
    fd = os.open(f"{PROC}/{pid}/statm", os.O_RDONLY)
    try:
        data = os.read(fd, 256)
    finally:
        os.close(fd)
    return int(data.split()[1]) * PAGE_BYTES


def vm_hwm_bytes(pid: int) -> int | None:
    """Peak resident bytes of `pid` over its life (VmHWM in /proc/<pid>/status), exact, kept by
    the kernel; None when gone or not shown (a zombie, a kernel thread, not Linux)."""
    try:
        with open(f"{PROC}/{pid}/status", "rb") as f:
            data = f.read()
        i = data.index(b"VmHWM:")
        return int(data[i + 6 : data.index(b"\n", i)].split()[0]) * 1024  # "VmHWM:  1234 kB"
    except (OSError, ValueError, IndexError):
        return None


def proc_children(pid: int) -> list[int]:
    """Direct children of `pid`: those of each of its threads, from /proc/<pid>/task/<tid>/children
    (a child's parent is the thread that forked it). [] once `pid` is gone."""
    try:
        tids = os.listdir(f"{PROC}/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"{PROC}/{pid}/task/{tid}/children", "rb") as f:
                found.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass  # the thread exited
    return found


def last_pid() -> int | None:
    """The pid the kernel handed out last in this pid namespace (/proc/loadavg's fifth field);
    None where unknown. Threads take pids too, so it moves whenever any task is created."""
    try:
        with open(f"{PROC}/loadavg", "rb") as f:
            pid = int(f.read().split()[4])
    except (OSError, ValueError, IndexError):
        return None
    return pid or None


class _ProcessTree:
    """The known members of a process tree, their summed RSS, and the peaks seen.

    Called from the sampler thread and from the window edges on the caller's thread, hence the lock.
    """

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.children_file = children_file_supported()
        self.statm = LINUX and os.path.exists(f"{PROC}/{root.pid}/statm")
        # pid -> Process; the Process object only where per-sample reads go through psutil.
        self.members: dict[int, psutil.Process | None] = {root.pid: None if self.statm else root}
        self.peak_sum = 0
        self.peak_one = 0
        self.lock = threading.Lock()
        self.discovered_last_pid: int | None = None
        self.last_discovery = float("-inf")
        self.next_scan = float("-inf")
        self.next_refresh = float("-inf")
        with self.lock:
            self._refresh(_now())

    def rss_bytes(self) -> int | None:
        """Summed resident bytes of the members alive now; None when none is."""
        with self.lock:
            now = _now()
            if now >= self.next_refresh:
                self._refresh(now)
            total, alive = 0, False
            for pid, proc in list(self.members.items()):
                try:
                    if proc is None:
                        total += statm_rss_bytes(pid)
                    else:
                        info = proc.memory_info()
                        total += info.rss
                        self.peak_one = max(self.peak_one, getattr(info, "peak_wset", 0))
                except (OSError, ValueError, IndexError, psutil.Error):
                    del self.members[pid]  # exited
                    continue
                alive = True
            if not alive:
                return None
            self.peak_sum = max(self.peak_sum, total)
            return total

    def peak_bytes(self) -> int | None:
        """Refresh once more (reading the per-process peaks of the members still alive), then the
        larger of the largest summed RSS sampled and the largest per-process kernel peak."""
        with self.lock:
            self._refresh(_now(), final=True)
            return max(self.peak_sum, self.peak_one) or None

    def _refresh(self, now: float, final: bool = False) -> None:
        self.next_refresh = now + REFRESH_S
        newest = last_pid() if LINUX else None  # read before discovery, so later births are noticed
        found = self._discover(now, newest)
        if found is not None:
            self.members = found
            self.discovered_last_pid = newest
        # A pid read between discoveries could have been reused by an unrelated process only if a
        # process was created since; the children walk and the scan check identity themselves.
        quiet = found is not None or (newest is not None and newest == self.discovered_last_pid)
        if self.statm and (quiet or final):
            for pid in self.members:
                self.peak_one = max(self.peak_one, vm_hwm_bytes(pid) or 0)

    def _discover(self, now: float, newest: int | None) -> dict[int, psutil.Process | None] | None:
        """The tree's members now (root first), or None where discovery was skipped or the root is gone."""
        unchanged = newest is not None and newest == self.discovered_last_pid
        if unchanged and now - self.last_discovery < SCAN_MAX_INTERVAL_S:
            return None  # no task was created anywhere since the last look, so the tree cannot have grown
        if self.children_file:
            self.last_discovery = now
            try:
                if not self.root.is_running():  # compares start times, so a reused pid is caught
                    return None
            except psutil.Error:
                return None
            members: dict[int, psutil.Process | None] = {self.root.pid: None}
            todo = [self.root.pid]
            while todo:
                for child in proc_children(todo.pop()):
                    if child not in members:
                        members[child] = None
                        todo.append(child)
            return members
        if now < self.next_scan:
            return None
        started = time.thread_time()
        try:
            if not self.root.is_running():
                return None
            children = self.root.children(recursive=True)  # reads every process: O(machine)
        except psutil.Error:
            return None
        finally:
            cost = time.thread_time() - started
            self.last_discovery = now
            self.next_scan = now + max(SCAN_INTERVAL_S, SCAN_COST_FACTOR * cost)
        found: dict[int, psutil.Process | None] = {self.root.pid: None if self.statm else self.root}
        for child in children:
            found[child.pid] = None if self.statm else self.members.get(child.pid) or child
        return found


class ProcessMemory(PowerSource):
    """RSS in bytes of `pid` (default: this process), plus its descendants if `children`.

    Reported as `memory_used_bytes` of the pseudo-device "process"; it measures no power. Without
    `children` each read is one psutil `memory_info` call. With `children` the tree is followed as
    the module docstring says: each read costs O(tree size), never a scan of every process.
    """

    def __init__(self, pid: int | None = None, children: bool = False) -> None:
        self.device_id = PROCESS_DEVICE
        self.process = psutil.Process(pid or os.getpid())
        self.children = children
        self._tree = _ProcessTree(self.process) if children else None
        if children:  # each process's exact peak comes from the kernel; the tree's sum is sampled
            self.sample_period_s = TREE_SAMPLE_PERIOD_S

    def rss_bytes(self) -> int | None:
        """Resident bytes now: of the process, or summed over its tree; None once it is gone."""
        if self._tree is not None:
            return self._tree.rss_bytes()
        try:
            return self.process.memory_info().rss
        except psutil.Error:
            return None

    def pids(self) -> frozenset[int]:
        """The pids whose memory the reads sum: the process, and its known descendants if `children`."""
        if self._tree is None:
            return frozenset((self.process.pid,))
        with self._tree.lock:
            return frozenset(self._tree.members)

    def peak_bytes(self) -> int | None:
        """Peak resident bytes so far. With `children`: the tree's largest sampled total, or the
        largest single process's exact kernel peak when that is larger (see the module docstring).
        Without: the process's own kernel peak (VmHWM, Linux only, else None)."""
        if self._tree is not None:
            return self._tree.peak_bytes()
        return vm_hwm_bytes(self.process.pid) if LINUX else None

    def read(self) -> Reading:
        return Reading(time.monotonic(), memory_used_bytes=self.rss_bytes())
