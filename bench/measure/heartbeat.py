"""Liveness of a torchrun job's ranks, and naming the rank that made the job fail.

- Heartbeats (`Liveness`): a thread publishes this rank's progress (the lockstep's step counter,
  bumped at every sync point, and what it is doing) to the rendezvous store torch.distributed
  already runs, every `HEARTBEAT_S`, so it works across nodes.
- Hang detection (`Watch`): rank 0 reads them. A rank whose heartbeat stops for `STALE_S` has died
  or frozen; when no rank has moved for `hang_timeout_s` while some wait at a later sync point than
  others, the ranks furthest behind are the hung ones (their victims are ahead of them, waiting),
  and the job is ended at once, before any process-group timeout blames the victims.
- The failure record (`FailureRecord`): the job's one failure in the store; the first rank to
  report one wins, and every other rank ends with it.
- Termination (`StopSignals`, `Heartbeat`): when torchrun stops the job (a rank exited or raised),
  each survivor learns of it through SIGTERM even while blocked in a collective: the signal's
  wakeup file descriptor wakes the heartbeat thread, which marks this rank as terminated in the
  store, finds the culprit (the rank that published a failure, else the one that neither finished
  nor was terminated), hands it to the owner's `on_end` (which writes this rank's shard and, on
  rank 0, the merged run file), and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

from bench.measure.groups import KEY, ProcessGroups
from bench.measure.lockstep import Progress

HEARTBEAT_S = 0.5
STALE_S = 5.0  # no heartbeat for this long: the rank died or froze
TERM_GRACE_S = 1.5  # after SIGTERM, how long to wait for the other survivors to say so
STORE_LOST_BEATS = 6  # heartbeats in a row the store refused: the job is over
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DEFAULT_HANG_TIMEOUT_S = 120.0

Failure = dict[str, Any]  # {"rank", "kind", "case", "why"}: as the shards and the run file keep it
EndHandler = Callable[[Failure | None], None]


class Liveness:
    """This job's heartbeats and flags in the rendezvous store: `hb/R` (beat, step, doing),
    `done/R` (rank R finished) and `term/R` (rank R was told to stop)."""

    def __init__(self, groups: ProcessGroups, progress: Progress) -> None:
        self.groups, self.progress = groups, progress
        self.rank, self.world_size = groups.info.rank, groups.info.world_size

    def publish(self, beat: int) -> None:
        """This rank's heartbeat number `beat` with its progress now."""
        state = {"beat": beat, "step": self.progress.step, "doing": self.progress.doing}
        self.groups.store.set(f"{KEY}hb/{self.rank}", json.dumps(state))

    def heartbeats(self) -> list[dict[str, Any] | None]:
        """Every rank's latest heartbeat, in rank order (each has published one by `start`)."""
        keys = [f"{KEY}hb/{r}" for r in range(self.world_size)]
        values = self.groups.store.multi_get(keys)
        return [json.loads(v) for v in values]

    def flags(self, name: str) -> set[int]:
        """The ranks that set flag `name` ("done" or "term")."""
        keys = [f"{KEY}{name}/{r}" for r in range(self.world_size)]
        return {r for r, k in enumerate(keys) if self.groups.store.check([k])}

    def mark(self, name: str) -> None:
        """Set this rank's flag `name`."""
        self.groups.store.set(f"{KEY}{name}/{self.rank}", "1")


class FailureRecord:
    """The job's one failure, kept in the rendezvous store: the first rank to report wins."""

    STORE_KEY = f"{KEY}failure"

    def __init__(self, groups: ProcessGroups) -> None:
        self.groups = groups

    def report(self, failure: Failure) -> Failure:
        """Record `failure` unless one is recorded already; returns the one recorded."""
        got = self.groups.store.compare_set(self.STORE_KEY, "", json.dumps(failure))
        return dict(json.loads(got)) if got else failure

    def recorded(self) -> Failure | None:
        """The failure recorded, or None (none yet, or the store is gone)."""
        with contextlib.suppress(Exception):
            store = self.groups.store
            if store.check([self.STORE_KEY]):
                return dict(json.loads(store.get(self.STORE_KEY)))
        return None


class Watch:
    """Rank 0's view of the heartbeats: who stopped beating, who is stuck behind the others."""

    def __init__(self, world_size: int, hang_timeout_s: float) -> None:
        self.hang_timeout_s = hang_timeout_s
        self.beats: list[int] = [-1] * world_size
        self.beat_at: list[float | None] = [None] * world_size
        self.steps: list[int] = [-1] * world_size
        self.moved_at = 0.0

    def look(self, states: list[dict[str, Any] | None], done: set[int], now: float) -> Failure | None:
        """The heartbeats read at `now` (`done`: ranks that finished): the failure they show (a
        rank "stopped" beating, or "hung" behind the others), or None."""
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
                return {
                    "rank": rank,
                    "kind": "stopped",
                    "case": None,
                    "why": f"rank {rank} stopped responding: no heartbeat for {now - last:.0f} s "
                    f"(it died or froze while {doing})",
                }
        steps = {r: self.steps[r] for r in live}
        if len(set(steps.values())) > 1 and now - self.moved_at > self.hang_timeout_s:
            low = min(steps.values())
            behind = [r for r, s in steps.items() if s == low]
            ahead = [r for r, s in steps.items() if s != low]
            rank = behind[0]
            doing = (states[rank] or {}).get("doing", "?")
            waiting = (states[ahead[0]] or {}).get("doing", "?")
            return {
                "rank": rank,
                "kind": "hung",
                "case": None,
                "why": f"rank {rank} hung: no progress for {now - self.moved_at:.0f} s while {doing}; "
                f"rank(s) {', '.join(map(str, ahead))} were {waiting}",
            }
        return None


class StopSignals:
    """SIGTERM (torchrun stopping the job) and SIGINT (Ctrl-C, which reaches every rank at a
    different point of its work) delivered to the heartbeat thread through the signal wakeup fd: a
    Python handler would wait for the main thread, which may sit in a collective, and an exception
    there would leave the ranks in different collectives."""

    def __init__(self) -> None:
        self._wake: tuple[socket.socket, socket.socket] | None = None

    @property
    def taken(self) -> bool:
        """Whether the signals come here (`take` ran on the main thread)."""
        return self._wake is not None

    def take(self) -> None:
        """Route the stop signals to the wakeup fd (main thread only; elsewhere nothing)."""
        if threading.current_thread() is not threading.main_thread():
            return
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._wake = (reader, writer)
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda signum, frame: None)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def release(self) -> None:
        """Give the stop signals back their default handling (main thread only)."""
        if self._wake is None or threading.current_thread() is not threading.main_thread():
            return
        signal.set_wakeup_fd(-1)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for a signal on the wakeup fd; True for a stop signal."""
        if self._wake is None:
            return False
        reader = self._wake[0]
        ready, _, _ = select.select([reader], [], [], timeout_s)
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            received = reader.recv(64)
            return any(sig in received for sig in STOP_SIGNALS)
        return False


class Heartbeat:
    """The heartbeat thread and the end of this rank: it beats, watches (rank 0), listens for the
    stop signals and for a failure another rank recorded, and when the job is over names why and
    ends the process (see the module docstring). `on_end` is set by the owner: it writes what this
    rank has before the process exits."""

    def __init__(self, groups: ProcessGroups, progress: Progress, hang_timeout_s: float = DEFAULT_HANG_TIMEOUT_S) -> None:
        self.rank, self.world_size = groups.info.rank, groups.info.world_size
        self.hang_timeout_s = hang_timeout_s
        self.liveness = Liveness(groups, progress)
        self.failures = FailureRecord(groups)
        self.signals = StopSignals()
        self.on_end: EndHandler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ending = threading.Lock()

    def start(self) -> None:
        """Take the stop signals and start the thread (after a first heartbeat and a barrier)."""
        self.signals.take()
        self._thread = threading.Thread(target=self._run, name="wattbench-heartbeat", daemon=True)
        self._thread.start()

    def finish(self) -> None:
        """This rank finished: signals back to their defaults, and the `done` flag, so that no
        watcher takes its silence for a death."""
        self.signals.release()
        with contextlib.suppress(Exception):
            self.liveness.mark("done")

    def stop(self) -> None:
        """Stop the thread (after `finish` and the last barrier)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * HEARTBEAT_S)

    def _run(self) -> None:
        beat, errors = 0, 0
        watch = Watch(self.world_size, self.hang_timeout_s) if self.rank == 0 else None
        while not self._stop.is_set():
            if self.signals.wait(HEARTBEAT_S):
                self.end(self.culprit())
                return
            beat += 1
            try:
                self.liveness.publish(beat)
                recorded = self.failures.recorded()
                if recorded is not None and recorded.get("rank") != self.rank:  # told by another node
                    self.end(recorded)
                    return
                if watch is not None and not self._stop.is_set():
                    failure = watch.look(self.liveness.heartbeats(), self.liveness.flags("done"), time.monotonic())
                    if failure is not None:
                        self.end(self.failures.report(failure))
                        return
                errors = 0
            except Exception:  # noqa: BLE001 - the store went away: the agent is ending the job
                if self._stop.is_set():
                    return
                errors += 1
                if errors >= STORE_LOST_BEATS:
                    self.end(
                        {
                            "rank": self.rank,
                            "kind": "unknown",
                            "case": None,
                            "why": "the rendezvous store is gone (torchrun's agent ended the job)",
                        }
                    )
                    return
            self._stop.wait(0 if self.signals.taken else HEARTBEAT_S)

    def culprit(self, marker: bool = True) -> Failure | None:
        """Why the job is ending: a failure a rank recorded, else the ranks that neither finished
        nor were told to stop (they ended on their own, without a word; among them the one whose
        heartbeat stopped), else None (the whole job was stopped: interrupted). `marker`: this
        rank was told to stop (SIGTERM, SIGINT) and says so."""
        if marker:
            with contextlib.suppress(Exception):
                self.liveness.mark("term")
        deadline = time.monotonic() + TERM_GRACE_S
        silent: list[int] = []
        beats_before: list[Any] = []
        with contextlib.suppress(Exception):
            beats_before = self.liveness.heartbeats()
        while time.monotonic() < deadline:
            recorded = self.failures.recorded()
            if recorded is not None:
                return recorded
            try:
                said = self.liveness.flags("term") | self.liveness.flags("done")
            except Exception:  # noqa: BLE001 - the store is gone
                return None
            silent = [r for r in range(self.world_size) if r not in said and r != self.rank]
            if not silent:
                return None
            time.sleep(0.1)
        rank = silent[0]
        doing = "its last step"
        with contextlib.suppress(Exception):
            beats = self.liveness.heartbeats()
            stopped = [
                r
                for r in silent
                if beats_before and (now := beats[r]) and (then := beats_before[r]) and now["beat"] == then["beat"]
            ]
            rank = (stopped or silent)[0]
            last = beats[rank]
            doing = str(last.get("doing")) if last else doing
        return {
            "rank": rank,
            "kind": "exited",
            "case": None,
            "why": f"rank {rank} ended without a word while {doing} (it exited or was killed; "
            f"torchrun's summary gives its exit code)",
        }

    def end_broken(self, error: BaseException) -> NoReturn:
        """A harness collective failed (`JobBroken`): the peer that caused it is named as after
        SIGTERM (a recorded failure, else the rank that went silent), never this rank; then end.
        First a moment for the heartbeat thread: when the collective broke because the job is
        being stopped (Ctrl-C, SIGTERM), the signal is already on its way there, and it ends the
        rank as interrupted."""
        time.sleep(HEARTBEAT_S)
        self.end(
            self.culprit(marker=False)
            or {
                "rank": self.rank,
                "kind": "unknown",
                "case": None,
                "why": f"rank {self.rank} lost the other ranks ({error}); no rank said why",
            }
        )

    def end_with(self, failure: Failure) -> NoReturn:
        """This rank failed outside any case: record it as the job's failure (the first recorded
        wins) and end."""
        try:
            failure = self.failures.report(failure)
        except Exception:  # noqa: BLE001 - the store is gone: this rank's shard still says it
            pass
        self.end(failure)

    def end(self, failure: Failure | None) -> NoReturn:
        """Write what this rank has (through `on_end`) and leave: the job is over (exit 1 for a
        failure, 130 when the job was stopped)."""
        with self._ending:
            if failure is not None:
                print(f"wattbench: rank {self.rank}: job failed: {failure['why']}", file=sys.stderr, flush=True)
            if self.on_end is not None:
                with contextlib.suppress(Exception):
                    self.on_end(failure)
            sys.stderr.flush()
            os._exit(1 if failure is not None else 130)
