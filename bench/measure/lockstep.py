"""Lockstep: every decision that changes what runs is the same on every rank of a torchrun job.

Rank 0's run id (`broadcast`) seeds the case order of every round. The timing plan is made
identical by construction rather than by message: the synchronised timer (`SyncTimer`) puts a
barrier before every timed loop and returns the maximum of the ranks' times (an all_reduce MAX),
so each rank calibrates, warms up and times from the same figures and takes the same decisions
(iterations per repeat, repeats, when warm-up ends); the time recorded is the job's, the slowest
rank's. After set-up and the output check the ranks agree on the case (`agree`): one that one
rank must skip, or that failed there, is skipped or failed on all, with that rank's reason. A rank
whose case fails later (in the timed loop) says so at the next sync point (`fail`: it contributes
+inf), where every rank leaves the case together.

Every message goes over the control group of bench.measure.groups. Each sync point bumps this
rank's `Progress`, which the heartbeat (bench.measure.heartbeat) publishes: that is how a hung
rank is told from its victims.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from bench.measure.groups import ProcessGroups
from bench.measure.timing import Timer
from bench.merge import SEVERITY


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


@dataclass
class Progress:
    """How far this rank has got: `step` counts the sync points passed (the same sequence on
    every rank) and `doing` says what it does now. Written by the agreement and the runner, read
    by the heartbeat."""

    step: int = 0
    doing: str = "starting"


class Agreement:
    """This rank's side of the agreements over the control group (see the module docstring)."""

    def __init__(self, groups: ProcessGroups, progress: Progress) -> None:
        self.groups = groups
        self.progress = progress
        self.rank, self.world_size = groups.info.rank, groups.info.world_size

    def _passing(self, what: str) -> None:
        self.progress.step += 1
        self.progress.doing = f"waiting at {what}"

    def sync(self, value: float, what: str) -> float:
        """A barrier that also returns the maximum of `value` over the ranks. +inf from another
        rank means its case failed: `PeerFailed` with its reason."""
        self._passing(what)
        out = torch.tensor([value], dtype=torch.float64)
        self._collective(dist.all_reduce, out, op=dist.ReduceOp.MAX, group=self.groups.control)
        self.progress.doing = what.replace("waiting at ", "")
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
        self._collective(dist.all_reduce, out, op=dist.ReduceOp.MAX, group=self.groups.control)
        self._failure_reasons((status, error))

    def _failure_reasons(self, mine: tuple[str, str] | None) -> tuple[int, str, str]:
        """After a failure was announced (+inf): every rank's (status, error) or None, gathered;
        the worst decides."""
        found: list[Any] = [None] * self.world_size
        self._collective(dist.all_gather_object, found, mine, group=self.groups.control)
        failed = [(r, s[0], s[1]) for r, s in enumerate(found) if s is not None]
        rank, status, error = worst(failed) or (-1, "failed", "a rank failed")
        return rank, status, error or status

    def agree(self, status: str, error: str | None, what: str) -> None:
        """Every rank says how its case went; returns when all are ok. Otherwise a rank that
        was ok raises `PeerFailed` with the worst rank's status and reason (the ranks that were
        not ok keep their own)."""
        self._passing(what)
        found: list[Any] = [None] * self.world_size
        self._collective(dist.all_gather_object, found, (status, error), group=self.groups.control)
        decided = worst([(r, s, e) for r, (s, e) in enumerate(found)])
        if decided is not None and status == "ok":
            rank, why, text = decided
            raise PeerFailed(why, f"rank {rank}: {text or why}")

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        self._passing("a broadcast from rank 0")
        box = [obj]
        self._collective(dist.broadcast_object_list, box, src=0, group=self.groups.control)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
        self._passing("the final gather")
        found: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
        self._collective(dist.gather_object, obj, found, dst=0, group=self.groups.control)
        return found

    def timer(self, inner: Timer) -> SyncTimer:
        """`inner` made the job's: see `SyncTimer`."""
        return SyncTimer(inner, self)

    def _collective(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run one collective; any failure of it is `JobBroken` (a peer died or the job ends)."""
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - gloo/NCCL errors come as RuntimeError subclasses
            raise JobBroken(
                f"{getattr(fn, '__name__', 'a collective')} failed: {str(exc).splitlines()[0] if str(exc) else exc!r}"
            ) from None


class SyncTimer:
    """A timer whose every measurement is the job's: a barrier before the timed loop, the
    maximum of the ranks' times after it. Identical results on every rank make identical timing
    decisions; `enqueue` (the launch probe, host-side) stays this rank's own."""

    def __init__(self, inner: Timer, agreement: Agreement) -> None:
        self.inner, self.agreement = inner, agreement
        if hasattr(inner, "enqueue"):
            self.enqueue = inner.enqueue

    def time(self, fn: Callable[[], object], iterations: int) -> float:
        self.agreement.sync(0.0, "the barrier before a timed loop")
        elapsed = self.inner.time(fn, iterations)
        return self.agreement.sync(elapsed, "the time of a timed loop")
