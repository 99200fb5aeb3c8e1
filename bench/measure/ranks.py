"""One rank's run under torchrun: its device, its shard file, and the job's run file at the end.

Each rank measures its own device (cuda:LOCAL_RANK, or the CPU) and writes its own shard after
every case, atomically, into `<run file stem>.shards/` beside the run file (each node writes the
shards of its own ranks: no shared filesystem is assumed) and publishes the same text to the
rendezvous store. At the end rank 0 gathers every rank's shard through torch.distributed and
writes the job's run file (`bench.merge.merge_shards`). When the job fails, the rank that learns
it first (rank 0's heartbeat watch, or a survivor told by torchrun's SIGTERM) writes its shard
with the failure, and rank 0 the run file from the shards in the store; `wattbench merge DIR`
rebuilds the run file from a shards folder when rank 0 could not.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench import results
from bench.errors import UsageError
from bench.measure.distributed import Job, RankInfo, backend_for
from bench.measure.hardware import DeviceInfo, cpu_device, cuda_devices
from bench.measure.runner import utc_now
from bench.merge import merge_shards
from bench.record import CaseRecord

SETTLE_S = 2.0  # how long rank 0 waits for the survivors' final shards before merging


def check_options(isolate: bool | None, case_timeout_s: float | None, hang_timeout_s: float, pg_timeout_s: float) -> None:
    """Options that make no sense under torchrun: one line, exit 2, before any rank measures."""
    if isolate or case_timeout_s is not None:
        raise UsageError(
            "--isolate and --case-timeout do not apply under torchrun: each rank runs its cases in its own "
            "process (a failed rank ends the job, named); valid: --no-isolate or neither"
        )
    if hang_timeout_s >= pg_timeout_s:
        raise UsageError(
            f"--hang-timeout {hang_timeout_s:g} must be shorter than --pg-timeout {pg_timeout_s:g}, "
            "so that a hung rank is named before a collective times out on its victims"
        )


def rank_device(spec: str | None, info: RankInfo) -> DeviceInfo:
    """This rank's device: cuda:LOCAL_RANK for `cuda` (the default when GPUs are visible), the CPU
    for `cpu`. A node with fewer GPUs than local ranks is an error before anything starts."""
    wanted = (spec or "").strip().lower()
    if wanted in ("all",) or wanted.startswith("cuda:"):
        raise UsageError(f"--device {spec} under torchrun: each rank uses the GPU of its LOCAL_RANK; valid: cuda, cpu")
    if wanted not in ("", "cuda", "cpu"):
        raise UsageError(f"--device {spec!r} is not a device; valid under torchrun: cuda, cpu")
    gpus = cuda_devices() if wanted != "cpu" else []
    if wanted == "cpu" or (not wanted and not gpus):
        return cpu_device()
    if info.local_world_size > len(gpus):
        raise UsageError(
            f"this node has {len(gpus)} GPU(s) visible to torch but torchrun started {info.local_world_size} "
            f"local ranks; valid: --nproc-per-node 1 to {len(gpus)} (or --device cpu)"
            if gpus
            else "--device cuda: no CUDA GPU is visible on this node; valid: --device cpu"
        )
    torch.cuda.set_device(info.local_rank)
    return gpus[info.local_rank]


def start_job(info: RankInfo, device: DeviceInfo, pg_timeout_s: float, hang_timeout_s: float) -> Job:
    """This rank's part of the job, its process groups up (`Job.start`)."""
    job = Job(info, backend_for(device.kind), pg_timeout_s, hang_timeout_s)
    job.start()
    return job


def share_run(job: Job, doc: dict[str, Any], run_path: Path) -> Path:
    """Rank 0's run id, start time and run file path on every rank (one run, one file name)."""
    ours = {"id": doc["run"]["id"], "started_at": doc["run"]["started_at"], "path": str(run_path)}
    theirs = job.broadcast(ours)
    doc["run"]["id"], doc["run"]["started_at"] = theirs["id"], theirs["started_at"]
    return Path(theirs["path"])


def check_same_plan(job: Job, cases: list[Any], device: DeviceInfo) -> None:
    """Every rank must run rank 0's cases on the same kind of device (a node without GPUs would
    plan CPU cases with other defaults): one line on every rank, exit 2, before anything runs."""
    from bench.measure.distributed import PeerFailed

    mine = {"kind": device.kind, "cases": [(c.workload, c.params) for c in cases]}
    theirs = job.broadcast(mine)
    same = theirs == mine
    why = (
        None
        if same
        else (f"rank {job.rank} planned {len(cases)} case(s) on {device.kind}, rank 0 {len(theirs['cases'])} on {theirs['kind']}")
    )
    try:
        job.agree("ok" if same else "failed", why, "the check that every rank planned the same cases")
    except PeerFailed as exc:
        raise UsageError(
            f"the ranks do not plan the same run ({exc.error}); valid: the same arguments and the same "
            "kind of device on every node"
        ) from None
    if not same:
        raise UsageError(
            f"the ranks do not plan the same run ({why}); valid: the same arguments and the same kind of device on every node"
        )


def rank_section(job: Job, device: DeviceInfo, host: str) -> dict[str, Any]:
    info = job.info
    return {
        "rank": info.rank,
        "local_rank": info.local_rank,
        "node_rank": info.node_rank,
        "world_size": info.world_size,
        "local_world_size": info.local_world_size,
        "nodes": info.nodes,
        "host": host,
        "device": device.id,
        "device_uuid": device.uuid,
        "threads": torch.get_num_threads(),
        "backend": job.backend,
    }


class ShardFile(results.RunFile):
    """This rank's shard: a run document of schema wattbench.shard/1 with a `rank` section,
    written atomically after every case and published to the rendezvous store."""

    def __init__(self, job: Job, run_path: Path, doc: dict[str, Any], device: DeviceInfo) -> None:
        self.job, self.run_path = job, run_path
        doc["schema"] = results.SHARD_SCHEMA
        doc["rank"] = rank_section(job, device, doc["host"]["hostname"])
        doc["failure"] = None
        doc["run"].setdefault("settings", {})["distributed"] = {
            "world_size": job.world_size,
            "nodes": job.info.nodes,
            "backend": job.backend,
            "pg_timeout_s": job.pg_timeout_s,
            "hang_timeout_s": job.hang_timeout_s,
        }
        self.text = ""
        self.in_flight: tuple[int, dict[str, Any]] | None = None  # (plan index, record) of the case running now
        super().__init__(results.shard_path(run_path, job.rank), doc)
        job.on_end = self.end

    def start_case(self, slot: int, record: CaseRecord) -> None:
        self.in_flight = (slot, record.but(index=slot).to_json())

    def put_case(self, slot: int, record: CaseRecord, save: bool = True) -> None:
        """As a run file's, with the plan index in the record: the merge matches ranks' cases by it."""
        self.in_flight = None
        super().put_case(slot, record.but(index=slot), save)

    def save(self) -> None:
        super().save()
        self.text = json.dumps(self.doc, allow_nan=False)
        self.job.publish_shard(self.text)

    def end(self, failure: dict[str, Any] | None) -> None:
        """The job is over before its end (called from the heartbeat thread): this rank's shard
        with the failure, and on rank 0 the run file from the shards in the store."""
        doc = json.loads(self.text) if self.text else dict(self.doc)
        doc["failure"] = failure
        doc["run"]["status"] = "aborted" if failure is not None else "interrupted"
        self._record_in_flight(doc, failure)
        results.atomic_write_json(self.path, doc)
        self.job.publish_shard(json.dumps(doc))
        if self.job.rank == 0:
            write_merged(self.run_path, self._settled_shards(doc), failure)

    def _record_in_flight(self, doc: dict[str, Any], failure: dict[str, Any] | None) -> None:
        """The case this rank was running when the job ended, unless it has a record already (a
        round of it ended): "interrupted" when the user stopped the job or another rank failed,
        "failed" with the reason when this rank is the one that failed."""
        if self.in_flight is None:
            return
        slot, record = self.in_flight
        if any(c.get("index") == slot for c in doc["cases"]):
            return
        if failure is None:
            record |= {"status": "interrupted", "error": "interrupted by the user"}
        elif failure.get("rank") == self.job.rank:
            record |= {"status": "failed", "error": str(failure.get("why") or "this rank failed")}
        else:
            record |= {"status": "interrupted", "error": f"the job ended: rank {failure.get('rank')} failed"}
        doc["cases"].append(record)
        doc["cases"].sort(key=lambda c: c.get("index", -1))

    def _settled_shards(self, mine: dict[str, Any]) -> list[dict[str, Any]]:
        """The other ranks' shards from the store, given up to SETTLE_S to leave "running" (the
        survivors are writing theirs with the failure as rank 0 is), and this rank's own."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            others = [s for s in self.job.shards() if s.get("rank", {}).get("rank") != self.job.rank]
            if all(s["run"]["status"] != "running" for s in others) or time.monotonic() > deadline:
                return [*others, mine]
            time.sleep(0.1)

    def fail_here(self, failure: dict[str, Any]) -> None:
        """This rank failed outside any case: record the job's failure, write as `end`, exit."""
        self.job.end_with(failure)


def write_merged(run_path: Path, shards: list[dict[str, Any]], failure: dict[str, Any] | None = None) -> None:
    for shard in shards:
        if failure is not None and shard.get("failure") is None:
            shard["failure"] = failure
    results.atomic_write_json(run_path, merge_shards(shards, stem=run_path.stem))  # any order: merged by rank
    print(f"wattbench: job run file {run_path}", file=sys.stderr, flush=True)


def finish(job: Job, shard: ShardFile, status: str) -> Path | None:
    """Normal end: every rank's shard gathered on rank 0, which writes the run file and returns
    its path (None on the other ranks)."""
    shard.finish(status, utc_now())
    gathered = job.gather(shard.doc)
    path = None
    if gathered is not None:
        results.atomic_write_json(shard.run_path, merge_shards(gathered, stem=shard.run_path.stem))
        path = shard.run_path
    job.close()
    return path
