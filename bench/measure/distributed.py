"""Runs under torchrun: every rank measures the same cases at the same moment, and a failure is
named after the rank that caused it.

wattbench has no launcher of its own: torchrun (or `wattbench launch`, which only wraps it)
starts one process per rank and sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
GROUP_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. `RankInfo.from_env` reads them; without them a run
is a single process as before.

A `Job` is this rank's membership of the run:

- Process groups: the default group (nccl on CUDA, gloo on the CPU) is the workloads' (the
  collective workload moves its data there); a second, gloo, group carries the harness's own
  agreements, so control messages never queue behind a GPU collective. Both get the process-group
  timeout (`--pg-timeout`).
- Lockstep: every decision that changes what runs is the same on every rank. Rank 0's run id
  (broadcast) seeds the case order of every round. The timing plan is made identical by
  construction rather than by message: the synchronised timer (`SyncTimer`) puts a barrier
  before every timed loop and returns the maximum of the ranks' times (an all_reduce MAX), so
  each rank calibrates, warms up and times from the same figures and takes the same decisions
  (iterations per repeat, repeats, when warm-up ends); the time recorded is the job's, the
  slowest rank's. After set-up and the output check the ranks agree on the case (`agree`): one
  that one rank must skip, or that failed there, is skipped or failed on all, with that rank's
  reason. A rank whose case fails later (in the timed loop) says so at the next sync point
  (`fail`: it contributes +inf), where every rank leaves the case together.
- Heartbeats: a thread publishes this rank's progress (a step counter bumped at every sync
  point, and what it is doing) to the rendezvous store torch.distributed already runs, every
  `HEARTBEAT_S`, so it works across nodes. Rank 0 watches them: a rank whose heartbeat stops for
  `STALE_S` has died or frozen; when no rank has moved for `hang_timeout_s` while some wait at a
  later sync point than others, the ranks furthest behind are the hung ones (their victims are
  ahead of them, waiting), and the job is ended at once, before any process-group timeout blames
  the victims.
- Termination: when torchrun stops the job (a rank exited or raised), each survivor learns of it
  through SIGTERM even while blocked in a collective: the signal's wakeup file descriptor wakes
  the heartbeat thread, which marks this rank as terminated in the store, finds the culprit (the
  rank that published a failure, else the one that neither finished nor was terminated), writes
  this rank's shard with it and, on rank 0, the merged run file, and exits.

Fault injection for tests lives in bench.testing_hooks; `Fault`, `FAULT_ENV`, `fault_from_env` and
`Job.fail_setup` stay here only until bench/measure calls its hooks (`testing_hooks.fault`,
`testing_hooks.before_setup`) itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from bench import testing_hooks
from bench.errors import UsageError
from bench.merge import SEVERITY
from bench.testing_hooks import FAULT_ENV, Fault, fault_from_env

# Kept for callers until they call bench.testing_hooks themselves.
__all__ = ["FAULT_ENV", "Fault", "fault_from_env"]

HEARTBEAT_S = 0.5
STALE_S = 5.0  # no heartbeat for this long: the rank died or froze
TERM_GRACE_S = 1.5  # after SIGTERM, how long to wait for the other survivors to say so
STORE_LOST_BEATS = 6  # heartbeats in a row the store refused: the job is over
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DEFAULT_PG_TIMEOUT_S = 300.0
DEFAULT_HANG_TIMEOUT_S = 120.0
KEY = "wattbench/"  # prefix of this job's keys in the rendezvous store
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in a torchrun job (from torchrun's environment)."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    nodes: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RankInfo | None:
        """This rank under torchrun, or None for a plain process (any of TORCHRUN_ENV unset)."""
        env = os.environ if environ is None else environ
        if not all(env.get(k) for k in TORCHRUN_ENV):
            return None
        try:
            world = int(env["WORLD_SIZE"])
            return cls(
                rank=int(env["RANK"]),
                local_rank=int(env["LOCAL_RANK"]),
                world_size=world,
                local_world_size=int(env.get("LOCAL_WORLD_SIZE") or world),
                node_rank=int(env.get("GROUP_RANK") or 0),
                nodes=int(env.get("GROUP_WORLD_SIZE") or 1),
            )
        except ValueError:
            raise UsageError("torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK must be integers") from None


GLOO_IFNAME = "GLOO_SOCKET_IFNAME"
_GLOO_CONNECT = ("connectFullMesh", "Connection refused", "Connection reset", "Connection timed out")


def hostname_address(name: str | None = None) -> tuple[str, str | None]:
    """(this host's name, the address it resolves to, or None when it does not resolve). gloo
    tells its peers to connect to that address unless GLOO_SOCKET_IFNAME names an interface."""
    name = name or socket.gethostname()
    try:
        return name, socket.gethostbyname(name)
    except OSError:
        return name, None


def _is_loopback(address: str | None) -> bool:
    return address is not None and (address.startswith("127.") or address == "::1")


def loopback_warning(info: RankInfo, environ: Mapping[str, str] | None = None) -> str | None:
    """Before a job of several nodes: where this host's name resolves to loopback and
    GLOO_SOCKET_IFNAME is unset, gloo will give the other nodes an address they cannot reach."""
    env = os.environ if environ is None else environ
    if info.nodes < 2 or env.get(GLOO_IFNAME):
        return None
    name, address = hostname_address()
    if not _is_loopback(address):
        return None
    return (f"this host's name {name} resolves to {address} (loopback): gloo's other nodes will fail to connect; "
            f"set {GLOO_IFNAME} to the interface the nodes reach each other on (e.g. {GLOO_IFNAME}=eth0)")


def gloo_connect_error(exc: BaseException, environ: Mapping[str, str] | None = None) -> str | None:
    """One line for a process group whose ranks could not connect (gloo's "connectFullMesh ...
    Connection refused"), naming the usual cause: the host name resolving to a loopback address
    (containers, host networking, Debian's default /etc/hosts), so that gloo advertises 127.x to
    the other nodes. NCCL may still work there: it picks its interface itself. None for any other
    error."""
    text = str(exc)
    if not any(marker in text for marker in _GLOO_CONNECT):
        return None
    env = os.environ if environ is None else environ
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    name, address = hostname_address()
    if env.get(GLOO_IFNAME):
        cause = f"{GLOO_IFNAME}={env[GLOO_IFNAME]} is set: check that the nodes reach each other on that interface"
    elif _is_loopback(address):
        cause = (f"this host's name {name} resolves to {address}, a loopback address, which gloo gave the other ranks; "
                 f"set {GLOO_IFNAME} to the interface the nodes reach each other on (e.g. {GLOO_IFNAME}=eth0; "
                 "`ip -br addr` lists them) or map the name to a routable address in /etc/hosts")
    else:
        cause = (f"this host's name {name} resolves to {address or 'nothing'}; if the nodes cannot reach that address, "
                 f"set {GLOO_IFNAME} to the interface they share")
    return f"the ranks' gloo group could not connect ({first[:160]}): {cause}"


class JobBroken(BaseException):
    """A collective of the harness failed: a peer died or the job is being torn down. A
    BaseException, so that no case handler takes it for the case's own failure (the rank would
    then blame itself); the caller ends the rank through `Job.end_broken`, which names the rank
    that caused it."""


class PeerFailed(Exception):
    """Another rank could not run this case: `status` is its ("skipped", "failed", "oom"),
    `error` its reason prefixed "rank R: "."""

    def __init__(self, status: str, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def worst(statuses: list[tuple[int, str, str | None]]) -> tuple[int, str, str | None] | None:
    """The (rank, status, error) that decides a case agreed across ranks: the worst status
    (failed/oom > skipped), the lowest rank among equals; None when every rank is ok."""
    bad = [s for s in statuses if s[1] != "ok"]
    if not bad:
        return None
    return max(bad, key=lambda s: (SEVERITY.get(s[1], 3), -s[0]))


class Job:
    """This rank's part in a torchrun job (see the module docstring)."""

    def __init__(self, info: RankInfo, backend: str, pg_timeout_s: float = DEFAULT_PG_TIMEOUT_S,
                 hang_timeout_s: float = DEFAULT_HANG_TIMEOUT_S) -> None:
        self.info = info
        self.rank, self.world_size = info.rank, info.world_size
        self.backend = backend
        self.pg_timeout_s, self.hang_timeout_s = pg_timeout_s, hang_timeout_s
        self.step = 0  # sync points passed; the same sequence on every rank
        self.doing = "starting"
        self.control: Any = None
        self.store: Any = None
        self.on_end: Callable[[dict[str, Any] | None], None] | None = None  # set by the caller
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._ending = threading.Lock()

    @property
    def fail_setup(self) -> bool:
        """Test seam, kept until the runner calls `testing_hooks.before_setup()`: whether a
        `setup` fault armed the failure of the next case's set-up in this process."""
        return testing_hooks.setup_failure_armed()

    @fail_setup.setter
    def fail_setup(self, armed: bool) -> None:
        testing_hooks.arm_setup_failure(armed)

    # --- set-up and tear-down ---------------------------------------------------------------

    def start(self) -> None:
        """Join the process groups, publish a first heartbeat, wait for every rank, then start
        the heartbeat thread and take SIGTERM (main thread only). A gloo group that cannot
        connect its ranks is a UsageError naming the likely cause (`gloo_connect_error`)."""
        timeout = timedelta(seconds=self.pg_timeout_s)
        warning = loopback_warning(self.info)
        if warning and self.info.local_rank == 0:
            print(f"wattbench: {warning}", file=sys.stderr, flush=True)
        try:
            dist.init_process_group(self.backend, timeout=timeout)
            # Always a group of its own, even where the default group is gloo too: a workload's
            # collectives (the collective workload's) never interleave with the harness's.
            self.control = dist.new_group(backend="gloo", timeout=timeout)
        except RuntimeError as exc:
            why = gloo_connect_error(exc)
            if why is None:
                raise
            raise UsageError(why) from None
        self.store = dist.distributed_c10d._get_default_store()
        self._publish(0)
        dist.barrier(group=self.control)
        self._take_sigterm()
        self._thread = threading.Thread(target=self._beat, name="wattbench-heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Say this rank finished (so no watcher takes its silence for a death) and leave."""
        self._release_signals()
        with contextlib.suppress(Exception):
            self.store.set(f"{KEY}done/{self.rank}", "1")
        with contextlib.suppress(Exception):
            dist.barrier(group=self.control)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * HEARTBEAT_S)
        with contextlib.suppress(Exception):
            dist.destroy_process_group()

    def _take_sigterm(self) -> None:
        """SIGTERM (torchrun stopping the job) and SIGINT (Ctrl-C, which reaches every rank at a
        different point of its work) wake the heartbeat thread through the signal wakeup fd: a
        Python handler would wait for the main thread, which may sit in a collective, and an
        exception there would leave the ranks in different collectives."""
        if threading.current_thread() is not threading.main_thread():
            return
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._wake = (reader, writer)
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda signum, frame: None)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def _release_signals(self) -> None:
        if self._wake is None or threading.current_thread() is not threading.main_thread():
            return
        signal.set_wakeup_fd(-1)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)

    # --- agreement ----------------------------------------------------------------------------

    def _passing(self, what: str) -> None:
        self.step += 1
        self.doing = f"waiting at {what}"

    def sync(self, value: float, what: str) -> float:
        """A barrier that also returns the maximum of `value` over the ranks. +inf from another
        rank means its case failed: `PeerFailed` with its reason."""
        self._passing(what)
        out = torch.tensor([value], dtype=torch.float64)
        self._collective(dist.all_reduce, out, op=dist.ReduceOp.MAX, group=self.control)
        self.doing = what.replace("waiting at ", "")
        result = float(out.item())
        if math.isinf(result) and not math.isinf(value):
            rank, status, error = self._failure_reasons(None)
            raise PeerFailed(status, f"rank {rank}: {error}")
        return result

    def fail(self, status: str, error: str, what: str) -> None:
        """This rank's case failed after the ranks agreed on it: tell the others at the sync
        point they will reach next, so every rank leaves the case there."""
        self._passing(what)
        out = torch.tensor([math.inf], dtype=torch.float64)
        self._collective(dist.all_reduce, out, op=dist.ReduceOp.MAX, group=self.control)
        self._failure_reasons((status, error))

    def _failure_reasons(self, mine: tuple[str, str] | None) -> tuple[int, str, str]:
        found: list[Any] = [None] * self.world_size
        self._collective(dist.all_gather_object, found, mine, group=self.control)
        failed = [(r, s[0], s[1]) for r, s in enumerate(found) if s is not None]
        rank, status, error = worst(failed) or (-1, "failed", "a rank failed")
        return rank, status, error or status

    def agree(self, status: str, error: str | None, what: str) -> None:
        """Every rank says how its case went; returns when all are ok. Otherwise a rank that
        was ok raises `PeerFailed` with the worst rank's status and reason (the ranks that were
        not ok keep their own)."""
        self._passing(what)
        found: list[Any] = [None] * self.world_size
        self._collective(dist.all_gather_object, found, (status, error), group=self.control)
        decided = worst([(r, s, e) for r, (s, e) in enumerate(found)])
        if decided is not None and status == "ok":
            rank, why, text = decided
            raise PeerFailed(why, f"rank {rank}: {text or why}")

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        self._passing("a broadcast from rank 0")
        box = [obj]
        self._collective(dist.broadcast_object_list, box, src=0, group=self.control)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
        self._passing("the final gather")
        found: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
        self._collective(dist.gather_object, obj, found, dst=0, group=self.control)
        return found

    def _collective(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - gloo/NCCL errors come as RuntimeError subclasses
            raise JobBroken(f"{getattr(fn, '__name__', 'a collective')} failed: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None

    def end_broken(self, error: BaseException) -> None:
        """A harness collective failed (`JobBroken`): the peer that caused it is named as after
        SIGTERM (a recorded failure, else the rank that went silent), never this rank; then end.
        First a moment for the heartbeat thread: when the collective broke because the job is
        being stopped (Ctrl-C, SIGTERM), the signal is already on its way there, and it ends the
        rank as interrupted."""
        time.sleep(HEARTBEAT_S)
        self._end(self._culprit_after_sigterm(marker=False) or {
            "rank": self.rank, "kind": "unknown", "case": None,
            "why": f"rank {self.rank} lost the other ranks ({error}); no rank said why"})

    def end_with(self, failure: dict[str, Any]) -> None:
        """This rank failed outside any case: record it as the job's failure (the first recorded
        wins) and end."""
        try:
            failure = self.report_failure(failure)
        except Exception:  # noqa: BLE001 - the store is gone: this rank's shard still says it
            pass
        self._end(failure)

    # --- the store: shards, failures, heartbeats ----------------------------------------------

    def publish_shard(self, text: str) -> None:
        """This rank's latest shard, so rank 0 can merge it even when no collective works."""
        self.store.set(f"{KEY}shard/{self.rank}", text)

    def shards(self) -> list[dict[str, Any]]:
        """The latest shard every rank published (ranks that never published are absent)."""
        found = []
        for rank in range(self.world_size):
            key = f"{KEY}shard/{rank}"
            with contextlib.suppress(Exception):
                if self.store.check([key]):
                    found.append(json.loads(self.store.get(key)))
        return found

    def report_failure(self, failure: dict[str, Any]) -> dict[str, Any]:
        """Record the job's failure once (the first rank to report it wins); returns the one
        recorded."""
        key = f"{KEY}failure"
        text = json.dumps(failure)
        got = self.store.compare_set(key, "", text)
        return dict(json.loads(got)) if got else failure

    def recorded_failure(self) -> dict[str, Any] | None:
        key = f"{KEY}failure"
        with contextlib.suppress(Exception):
            if self.store.check([key]):
                return dict(json.loads(self.store.get(key)))
        return None

    def _publish(self, beat: int) -> None:
        self.store.set(f"{KEY}hb/{self.rank}", json.dumps({"beat": beat, "step": self.step, "doing": self.doing}))

    def _heartbeats(self) -> list[dict[str, Any] | None]:
        keys = [f"{KEY}hb/{r}" for r in range(self.world_size)]
        values = self.store.multi_get(keys)
        return [json.loads(v) for v in values]

    def _flags(self, name: str) -> set[int]:
        keys = [f"{KEY}{name}/{r}" for r in range(self.world_size)]
        return {r for r, k in enumerate(keys) if self.store.check([k])}

    # --- the heartbeat thread -----------------------------------------------------------------

    def _beat(self) -> None:
        beat, errors = 0, 0
        watch = _Watch(self.world_size, self.hang_timeout_s) if self.rank == 0 else None
        while not self._stop.is_set():
            if self._signalled():
                self._end(self._culprit_after_sigterm())
                return
            beat += 1
            try:
                self._publish(beat)
                recorded = self.recorded_failure()
                if recorded is not None and recorded.get("rank") != self.rank:  # told by another node
                    self._end(recorded)
                    return
                if watch is not None and not self._stop.is_set():
                    failure = watch.look(self._heartbeats(), self._flags("done"), time.monotonic())
                    if failure is not None:
                        self._end(self.report_failure(failure))
                        return
                errors = 0
            except Exception:  # noqa: BLE001 - the store went away: the agent is ending the job
                if self._stop.is_set():
                    return
                errors += 1
                if errors >= STORE_LOST_BEATS:
                    self._end({"rank": self.rank, "kind": "unknown", "case": None,
                               "why": "the rendezvous store is gone (torchrun's agent ended the job)"})
                    return
            self._stop.wait(0 if self._wake else HEARTBEAT_S)

    def _signalled(self) -> bool:
        """Wait up to HEARTBEAT_S for a signal on the wakeup fd; True for SIGTERM."""
        if self._wake is None:
            return False
        reader = self._wake[0]
        ready, _, _ = select.select([reader], [], [], HEARTBEAT_S)
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            received = reader.recv(64)
            return any(sig in received for sig in STOP_SIGNALS)
        return False

    def _culprit_after_sigterm(self, marker: bool = True) -> dict[str, Any] | None:
        """Why the job is ending: a failure a rank recorded, else the ranks that neither finished
        nor were told to stop (they ended on their own, without a word; among them the one whose
        heartbeat stopped), else None (the whole job was stopped: interrupted). `marker`: this
        rank was told to stop (SIGTERM, SIGINT) and says so."""
        if marker:
            with contextlib.suppress(Exception):
                self.store.set(f"{KEY}term/{self.rank}", "1")
        deadline = time.monotonic() + TERM_GRACE_S
        silent: list[int] = []
        beats_before: list[Any] = []
        with contextlib.suppress(Exception):
            beats_before = self._heartbeats()
        while time.monotonic() < deadline:
            recorded = self.recorded_failure()
            if recorded is not None:
                return recorded
            try:
                said = self._flags("term") | self._flags("done")
            except Exception:  # noqa: BLE001 - the store is gone
                return None
            silent = [r for r in range(self.world_size) if r not in said and r != self.rank]
            if not silent:
                return None
            time.sleep(0.1)
        rank = silent[0]
        doing = "its last step"
        with contextlib.suppress(Exception):
            beats = self._heartbeats()
            stopped = [r for r in silent if beats_before and (now := beats[r]) and (then := beats_before[r])
                       and now["beat"] == then["beat"]]
            rank = (stopped or silent)[0]
            last = beats[rank]
            doing = str(last.get("doing")) if last else doing
        return {"rank": rank, "kind": "exited", "case": None,
                "why": f"rank {rank} ended without a word while {doing} (it exited or was killed; "
                       f"torchrun's summary gives its exit code)"}

    def _end(self, failure: dict[str, Any] | None) -> None:
        """Write what this rank has (through `on_end`) and leave: the job is over."""
        with self._ending:
            if failure is not None:
                print(f"wattbench: rank {self.rank}: job failed: {failure['why']}", file=sys.stderr, flush=True)
            if self.on_end is not None:
                with contextlib.suppress(Exception):
                    self.on_end(failure)
            sys.stderr.flush()
            os._exit(1 if failure is not None else 130)

    # --- timing ---------------------------------------------------------------------------------

    def timer(self, inner: Any) -> SyncTimer:
        return SyncTimer(inner, self)


class _Watch:
    """Rank 0's view of the heartbeats: who stopped beating, who is stuck behind the others."""

    def __init__(self, world_size: int, hang_timeout_s: float) -> None:
        self.hang_timeout_s = hang_timeout_s
        self.beats: list[int] = [-1] * world_size
        self.beat_at: list[float | None] = [None] * world_size
        self.steps: list[int] = [-1] * world_size
        self.moved_at = 0.0

    def look(self, states: list[dict[str, Any] | None], done: set[int], now: float) -> dict[str, Any] | None:
        if not self.moved_at:
            self.moved_at = now
        for rank, state in enumerate(states):
            if state is None:
                continue
            if state["beat"] != self.beats[rank]:
                self.beats[rank], self.beat_at[rank] = state["beat"], now
            if state["step"] != self.steps[rank]:
                self.steps[rank], self.moved_at = state["step"], now
        live = [r for r in range(len(states)) if r not in done]
        for rank in live:
            last = self.beat_at[rank]
            if last is not None and now - last > STALE_S:
                doing = (states[rank] or {}).get("doing", "?")
                return {"rank": rank, "kind": "stopped", "case": None,
                        "why": f"rank {rank} stopped responding: no heartbeat for {now - last:.0f} s "
                               f"(it died or froze while {doing})"}
        steps = {r: self.steps[r] for r in live}
        if len(set(steps.values())) > 1 and now - self.moved_at > self.hang_timeout_s:
            low = min(steps.values())
            behind = [r for r, s in steps.items() if s == low]
            ahead = [r for r, s in steps.items() if s != low]
            rank = behind[0]
            doing = (states[rank] or {}).get("doing", "?")
            waiting = (states[ahead[0]] or {}).get("doing", "?")
            return {"rank": rank, "kind": "hung", "case": None,
                    "why": f"rank {rank} hung: no progress for {now - self.moved_at:.0f} s while {doing}; "
                           f"rank(s) {', '.join(map(str, ahead))} were {waiting}"}
        return None


class SyncTimer:
    """A timer whose every measurement is the job's: a barrier before the timed loop, the
    maximum of the ranks' times after it. Identical results on every rank make identical timing
    decisions; `enqueue` (the launch probe, host-side) stays this rank's own."""

    def __init__(self, inner: Any, job: Job) -> None:
        self.inner, self.job = inner, job
        if hasattr(inner, "enqueue"):
            self.enqueue = inner.enqueue

    def time(self, fn: Callable[[], object], iterations: int) -> float:
        self.job.sync(0.0, "the barrier before a timed loop")
        elapsed = self.inner.time(fn, iterations)
        return self.job.sync(elapsed, "the time of a timed loop")


def backend_for(device_kind: str) -> str:
    return "nccl" if device_kind == "cuda" else "gloo"
