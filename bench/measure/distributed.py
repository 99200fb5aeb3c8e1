"""Runs under torchrun: every rank measures the same cases at the same moment, and a failure is
named after the rank that caused it.

wattbench has no launcher of its own: torchrun (or `wattbench launch`, which only wraps it)
starts one process per rank; `RankInfo.from_env` reads where this one sits, and without
torchrun's environment a run is a single process as before.

A `Job` is this rank's membership of the run. It is a thin object over one part per concern,
each in its own module:

- bench.measure.groups: `RankInfo`, the process groups (`ProcessGroups`: the workloads' default
  group, the harness's gloo control group, the rendezvous store) and the gloo connection hints.
- bench.measure.lockstep: the agreements that keep every rank's decisions the same (`Agreement`:
  sync, agree, fail, broadcast, gather) and the job's timer (`SyncTimer`).
- bench.measure.heartbeat: liveness and its end (`Heartbeat`: heartbeats in the store, rank 0's
  hang and death `Watch`, SIGTERM/SIGINT through the wakeup fd, the job's one `FailureRecord`,
  naming the culprit and ending this rank).
- bench.measure.shards: each rank's latest shard through the store (`ShardExchange`), for a merge
  when no collective works.

Test switches (fault injection) live in bench.testing_hooks, called by the execution mode
(`bench.measure.modes.Ranked`), never here.
"""

from __future__ import annotations

import contextlib
from typing import Any, NoReturn

from bench.measure.groups import DEFAULT_PG_TIMEOUT_S, ProcessGroups, RankInfo, backend_for
from bench.measure.heartbeat import DEFAULT_HANG_TIMEOUT_S, EndHandler, Failure, Heartbeat
from bench.measure.lockstep import Agreement, JobBroken, PeerFailed, Progress, SyncTimer
from bench.measure.shards import ShardExchange
from bench.measure.timing import Timer

# Names callers import from here: the Job, its own exceptions, where a rank sits.
__all__ = ["Job", "JobBroken", "PeerFailed", "RankInfo", "backend_for"]


class Job:
    """This rank's part in a torchrun job: the process groups, the agreement, the heartbeat and the
    shards' exchange of one rank, composed (see the module docstring). Its methods only delegate,
    so that the runner and ranks.py speak to one object."""

    def __init__(
        self,
        info: RankInfo,
        backend: str,
        pg_timeout_s: float = DEFAULT_PG_TIMEOUT_S,
        hang_timeout_s: float = DEFAULT_HANG_TIMEOUT_S,
    ) -> None:
        self.info = info
        self.rank, self.world_size = info.rank, info.world_size
        self.backend = backend
        self.pg_timeout_s, self.hang_timeout_s = pg_timeout_s, hang_timeout_s
        self.progress = Progress()
        self.groups = ProcessGroups(info, backend, pg_timeout_s)
        self.agreement = Agreement(self.groups, self.progress)
        self.heartbeat = Heartbeat(self.groups, self.progress, hang_timeout_s)
        self.shard_exchange = ShardExchange(self.groups)

    # --- set-up and tear-down ---------------------------------------------------------------

    def start(self) -> None:
        """Join the process groups, publish a first heartbeat, wait for every rank, then start
        the heartbeat thread and take SIGTERM (main thread only). A gloo group that cannot
        connect its ranks is a UsageError naming the likely cause (`gloo_connect_error`)."""
        self.groups.join()
        self.heartbeat.liveness.publish(0)
        self.groups.barrier()
        self.heartbeat.start()

    def close(self) -> None:
        """Say this rank finished (so no watcher takes its silence for a death) and leave."""
        self.heartbeat.finish()
        with contextlib.suppress(Exception):
            self.groups.barrier()
        self.heartbeat.stop()
        self.groups.leave()

    # --- what the runner reads and sets -------------------------------------------------------

    @property
    def doing(self) -> str:
        """What this rank is doing now, as its heartbeat says it."""
        return self.progress.doing

    @doing.setter
    def doing(self, value: str) -> None:
        self.progress.doing = value

    @property
    def step(self) -> int:
        """Sync points passed; the same sequence on every rank."""
        return self.progress.step

    @property
    def on_end(self) -> EndHandler | None:
        """Called with the job's failure (None: stopped) before the process exits early; set by
        the owner of this rank's shard."""
        return self.heartbeat.on_end

    @on_end.setter
    def on_end(self, handler: EndHandler | None) -> None:
        self.heartbeat.on_end = handler

    # --- lockstep -----------------------------------------------------------------------------

    def sync(self, value: float, what: str) -> float:
        """`Agreement.sync`: a barrier returning the ranks' maximum of `value`."""
        return self.agreement.sync(value, what)

    def agree(self, status: str, error: str | None, what: str) -> None:
        """`Agreement.agree`: every rank's case status, the worst raised as `PeerFailed`."""
        self.agreement.agree(status, error, what)

    def fail(self, status: str, error: str, what: str) -> None:
        """`Agreement.fail`: this rank's case failed; the others hear it at their next sync."""
        self.agreement.fail(status, error, what)

    def broadcast(self, obj: Any) -> Any:
        """`Agreement.broadcast`: rank 0's `obj` on every rank."""
        return self.agreement.broadcast(obj)

    def gather(self, obj: Any) -> list[Any] | None:
        """`Agreement.gather`: every rank's `obj` on rank 0."""
        return self.agreement.gather(obj)

    def timer(self, inner: Timer) -> SyncTimer:
        """`Agreement.timer`: `inner` made the job's (the slowest rank's time)."""
        return self.agreement.timer(inner)

    # --- ending, failures, shards -------------------------------------------------------------

    def end_broken(self, error: BaseException) -> NoReturn:
        """`Heartbeat.end_broken`: a harness collective failed; name the peer that caused it, end."""
        self.heartbeat.end_broken(error)

    def end_with(self, failure: Failure) -> NoReturn:
        """`Heartbeat.end_with`: this rank failed outside any case; record it, end."""
        self.heartbeat.end_with(failure)

    def report_failure(self, failure: Failure) -> Failure:
        """`FailureRecord.report`: the job's failure, recorded once (the first wins)."""
        return self.heartbeat.failures.report(failure)

    def recorded_failure(self) -> Failure | None:
        """`FailureRecord.recorded`: the job's failure, if a rank recorded one."""
        return self.heartbeat.failures.recorded()

    def publish_shard(self, text: str) -> None:
        """`ShardExchange.publish`: this rank's latest shard, to the store."""
        self.shard_exchange.publish(text)

    def shards(self) -> list[dict[str, Any]]:
        """`ShardExchange.latest`: every rank's latest shard from the store."""
        return self.shard_exchange.latest()
