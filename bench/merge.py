"""One run file from a multi-rank job's shards: schema "wattbench.run/2".

Under torchrun every rank measures its own device and writes its own shard ("wattbench.shard/1",
bench.results.shard_path) after every case. The job's figures are not any one rank's: the
job moved the work of all its ranks in the time of the slowest one, on the energy of all its
devices. So a merged case sums the ranks' work, takes the element-wise maximum of their raw
times (equal under the synchronised timer, which already records the slowest rank's time), and
sums energy over *distinct* devices: ranks that share one CPU package measured the same
package, which must count once, while GPUs (matched by UUID, not index) and other nodes' CPUs
each count.

Rank 0 calls `merge_shards` on the shards it gathered at the end of a job; `wattbench merge DIR`
calls it on a folder of shards when rank 0 died before it could. Both must name the rank that
failed: from a shard's `failure` (what a rank learned of the job's failure), else from the
shards themselves (a rank with no shard, or one still "running": it ended without a word).

What a case's status says in a job, and the job's (a missing record is never a failure of a rank
that did nothing wrong):

    what happened                    the case in flight                    later cases    the job
    the user stopped the job         interrupted, naming the ranks that    no record      interrupted
    (Ctrl-C, SIGTERM to every rank)  finished it and those that did not
    a rank raised, exited, was       failed, "rank R: why" (R the rank     no record      aborted, failed_rank R
    killed or hung                   the merge names); the others' part
                                     of it: interrupted
    a case failed on one rank        failed on all, "rank R: why"          run as usual   complete
    (agreed at a sync point)

Imported by the measuring side as well as the CLI, so neither torch nor pandas nor rich is
imported here.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bench.errors import ResultFileError, UsageError
from bench.record import (
    CaseRecord,
    DeviceRecord,
    Energy,
    Json,
    JsonObject,
    RankRecord,
    RecordError,
    Round,
    RunRecord,
    Summary,
    Verify,
    total,
)
from bench.results import SCHEMA_V2, SHARDS_SUFFIX, atomic_write_json, check_shard, is_shards_folder, read_json, shard_name

# An error a rank recorded for another rank's failure (the ranks agree on a case): "rank 1: ...".
_PEER_ERROR = re.compile(r"^rank \d+: ")
# How bad a case status is, for the job's status: the worst over ranks wins.
SEVERITY = {"ok": 0, "skipped": 1, "interrupted": 2, "oom": 3, "failed": 3}
NO_RESULT = "no result (the rank ended before this case)"
UNKNOWN = "unknown"  # failed_rank.kind when no shard says what happened (no shard, or no word from a rank)


def merged_path(shards_folder: Path) -> Path:
    """The run file a shards folder belongs to: `<dir>/<stem>.shards` -> `<dir>/<stem>.json`."""
    if not is_shards_folder(shards_folder):
        raise UsageError(f"{shards_folder}: not a folder of shards (its name ends in {SHARDS_SUFFIX})")
    return shards_folder.with_name(shards_folder.name[: -len(SHARDS_SUFFIX)] + ".json")


# --- reading shards ---------------------------------------------------------------------------


def read_shards(folder: Path, on_skip: Callable[[str], None] | None = None) -> list[JsonObject]:
    """The valid shards of one run in `folder` (rank-NNNNN.json), in rank order.

    A damaged shard (not JSON, another schema, a section missing) is skipped and `on_skip` gets
    one line naming it and why, as `load` does with result files: the other ranks' results are
    what a merge after a crash is for. So is a second shard of the same rank, and a shard of
    another run (a stale file from an earlier run written to the same name: the newest run,
    by started_at, is the one merged). A UsageError when `folder` is not a folder or holds no
    shard file; a ResultFileError when none of them could be read.
    """
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    files = sorted(p for p in folder.glob("rank-*.json") if not p.name.startswith("."))
    if not files:
        raise UsageError(f"{folder}: no shard (rank-NNNNN.json) in this folder")
    skip = on_skip or (lambda why: None)
    shards: list[tuple[Path, JsonObject, RunRecord]] = []
    for path in files:
        try:
            doc = read_json(path)
            shards.append((path, doc, check_shard(doc, path)))
        except ResultFileError as exc:
            skip(str(exc))
    if not shards:
        raise ResultFileError(f"{folder}: none of the {len(files)} shard files could be read")

    def started(shard: RunRecord) -> str:
        return str(shard.run.started_at if shard.run else "")

    newest = max((s[2] for s in shards), key=started).run
    newest_id = newest.id if newest else None
    kept: dict[int, JsonObject] = {}
    for path, doc, shard in shards:
        rank = int(_rank(shard).get("rank") or 0)  # type: ignore[arg-type]
        run_id = shard.run.id if shard.run else None
        if run_id != newest_id:
            skip(f"{path}: a shard of another run ({run_id}, not {newest_id})")
        elif rank in kept:
            skip(f"{path}: a second shard of rank {rank}")
        else:
            kept[rank] = doc
    return [kept[r] for r in sorted(kept)]


# --- small figures ----------------------------------------------------------------------------


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _times(value: Sequence[object] | None) -> list[float]:
    """A record's raw seconds as floats; [] unless they are all positive numbers."""
    times = [_number(v) for v in value or ()]
    return [t for t in times if t is not None] if times and all(t is not None and t > 0 for t in times) else []


def _summed_trace(traces: Sequence[Json]) -> Json:
    """The power over time of several devices measured in the same window, as one trace: the
    first device's sample times, the others' watts interpolated at them (their samplers do not
    tick together). Empty unless every device has a trace."""
    parsed: list[list[tuple[float, float]]] = []
    for trace in traces:
        if not isinstance(trace, list) or len(trace) < 1:
            return []
        pairs = [(_number(p[0]), _number(p[1])) for p in trace if isinstance(p, list) and len(p) == 2]
        points = [(t, w) for t, w in pairs if t is not None and w is not None]
        if len(points) != len(trace):
            return []
        parsed.append(points)

    def at(points: list[tuple[float, float]], t: float) -> float:
        if t <= points[0][0]:
            return points[0][1]
        for (t0, w0), (t1, w1) in zip(points, points[1:], strict=False):
            if t <= t1:
                return w0 if t1 == t0 else w0 + (w1 - w0) * (t - t0) / (t1 - t0)
        return points[-1][1]

    return [[t, w + sum(at(other, t) for other in parsed[1:])] for t, w in parsed[0]]


# --- devices and energy -----------------------------------------------------------------------


def _rank(shard: RunRecord) -> JsonObject:
    """The shard's `rank` section (checked when the shard was read)."""
    return shard.rank or {}


def _device_entry(shard: RunRecord) -> DeviceRecord:
    """The rank's device entry: the one its `rank.device` names, else its first."""
    devices = [d for d in shard.devices or () if isinstance(d, DeviceRecord)]
    wanted = _rank(shard).get("device")
    fallback = devices[0] if devices else DeviceRecord.parse({"id": wanted if isinstance(wanted, str) else "cpu"})
    return next((d for d in devices if d.id == wanted), fallback)


def _host(shard: RunRecord) -> str:
    return str(_rank(shard).get("host") or (shard.host.hostname if shard.host else None))


def device_key(shard: RunRecord) -> tuple[str, str]:
    """What a rank's energy measured: (host, GPU UUID) for a GPU, (host, "cpu") for the CPU
    package, which every rank on the host shares and measures alike (RAPL is per package).
    A GPU without a UUID falls back to its id on that host."""
    device = _device_entry(shard)
    if (device.kind or "cpu") == "cpu" or str(device.id or "cpu") == "cpu":
        return _host(shard), "cpu"
    uuid = _rank(shard).get("device_uuid") or device.uuid
    return _host(shard), str(uuid or device.id)


def _distinct(records: Mapping[int, CaseRecord], keys: Mapping[int, tuple[str, str]]) -> list[CaseRecord]:
    """One record per distinct device: the lowest rank's of each."""
    chosen: dict[tuple[str, str], CaseRecord] = {}
    for rank in sorted(records):
        chosen.setdefault(keys[rank], records[rank])
    return list(chosen.values())


def _job_energy(records: Mapping[int, CaseRecord], keys: Mapping[int, tuple[str, str]]) -> Energy | None:
    """The job's energy (`Energy.over_devices`): each distinct device's once (the lowest rank's
    reading of it). None when any rank has no energy: the job's figure would be a part presented
    as the whole; and when the devices' figures have different boundaries (they do not add)."""
    if not records or any(r.energy is None for r in records.values()):
        return None
    parts = [r.energy for r in _distinct(records, keys) if r.energy is not None]
    try:
        return Energy.over_devices(parts, _summed_trace)
    except RecordError:
        return None


def _job_node_energy(records: Mapping[int, CaseRecord], keys: Mapping[int, tuple[str, str]]) -> Energy | None:
    """The job's node energy: each node's once (its BMC is read by its local rank 0 alone), summed
    over the nodes. None unless every node of the job has one: some nodes' would read as all."""
    by_host: dict[str, Energy] = {}
    for rank in sorted(records):
        node = records[rank].node_energy
        if node is not None:
            by_host.setdefault(keys[rank][0], node)
    hosts = {host for host, _ in keys.values()}
    if not by_host or set(by_host) != hosts:
        return None
    parts = list(by_host.values())
    summed = Energy.over_devices(parts, _summed_trace)
    return summed.but(devices=None, scope=f"job: each node's once ({len(parts)} node{'s' if len(parts) > 1 else ''}), summed")


# --- one case ---------------------------------------------------------------------------------


def _ranks(ranks: Sequence[int]) -> str:
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"


def _worst(
    records: Mapping[int, CaseRecord], missing: Sequence[int], failed: Mapping[str, Json] | None, ended: str
) -> tuple[str, str | None]:
    """The job's status of a case and its error (the module docstring's table).

    A rank with no record of the case failed it only when it is the job's failed rank
    (`failed`, the rank the merge named): it ended before the case was done. Any other rank
    without a record was stopped from outside: by the user (`ended` "interrupted") or by the job
    ending after that failure. Such a case, and one a rank recorded "interrupted", is
    "interrupted", naming the ranks that finished it and those that did not. Otherwise the worst
    status over the ranks wins; among equally bad ones the failed rank's own record (it says why,
    its victims only that it failed), then the others in rank order. A rank that recorded another
    rank's failure (agreed across ranks, its error already "rank R: ...") comes after the rank it
    names, and its error is not prefixed twice."""
    culprit = failed.get("rank") if failed else None

    def own(r: int) -> bool:
        return not _PEER_ERROR.match(str(records[r].error or ""))

    candidates = [
        (str(records[r].status), r, records[r].error) for r in sorted(records, key=lambda r: (not own(r), r != culprit, r))
    ]
    candidates += [("failed" if r == culprit else "interrupted", r, NO_RESULT) for r in missing]
    worst = max(SEVERITY.get(status, 3) for status, _, _ in candidates)
    if worst == 0:
        return "ok", None
    status, rank, error = next(c for c in candidates if SEVERITY.get(c[0], 3) == worst)
    if status == "interrupted":
        finished = sorted(r for r, record in records.items() if record.status != "interrupted")
        stopped = sorted(set(missing) | {r for r, record in records.items() if record.status == "interrupted"})
        why = (
            "interrupted by the user"
            if ended == "interrupted" or culprit is None
            else f"interrupted: the job ended when rank {culprit} failed"
        )
        done = f"; {_ranks(finished)} finished it" if finished else ""
        return status, f"{why} before {_ranks(stopped)} finished it{done}"
    text = error or status
    return status, text if _PEER_ERROR.match(text) or text.startswith(f"rank {rank} ") else f"rank {rank}: {text}"


def _verify(records: Sequence[CaseRecord]) -> Verify | None:
    """The worst check over ranks: the largest error; passed only if every rank's passed."""
    checks = [r.verify for r in records if r.verify is not None]
    if not checks:
        return None
    errors = [e for c in checks if (e := _number(c.max_rel_error)) is not None]
    return (
        checks[0]
        .but(
            max_rel_error=max(errors) if errors else None,
            passed=all(c.passed is not False for c in checks) and len(checks) == len(records),
        )
        .with_keys("max_rel_error", "passed")
    )


def _rounds(
    base: CaseRecord, raw: list[float], records: Mapping[int, CaseRecord], keys: Mapping[int, tuple[str, str]]
) -> tuple[Round, ...] | None:
    """The base record's rounds with the job's figures: each round's median time from the
    merged raw times, its average watts summed over distinct devices (None unless all know)."""
    if base.rounds is None or not all(isinstance(r, Round) for r in base.rounds):
        return None
    merged = list(base.rounds)
    counts = [r.repeats for r in merged]
    whole = [c for c in counts if isinstance(c, int) and c > 0]
    if len(whole) == len(counts) and sum(whole) == len(raw):
        start = 0
        for i, count in enumerate(whole):
            merged[i] = merged[i].but(seconds_per_iter_median=statistics.median(raw[start : start + count]))
            start += count
    firsts = _distinct(records, keys)
    for i, entry in enumerate(merged):
        watts = [r.rounds[i].avg_watts if r.rounds and i < len(r.rounds) else None for r in firsts]
        merged[i] = entry.but(avg_watts=total(watts)).with_keys("avg_watts")
    return tuple(merged)


def _job_id(base: CaseRecord, device_id: str) -> str:
    own_device, case_id = base.device, str(base.id)
    if own_device and case_id.endswith(f"@{own_device}"):
        return case_id[: -len(own_device)] + device_id
    return case_id


def _work_terms(everyone: Sequence[CaseRecord]) -> JsonObject | None:
    terms = [r.work_terms for r in everyone if r.work_terms is not None]
    if not terms or len(terms) != len(everyone):
        return None
    return {k: total(t.get(k) for t in terms) for k in terms[0]}


def _figures(
    job: CaseRecord, records: Mapping[int, CaseRecord], everyone: Sequence[CaseRecord], keys: Mapping[int, tuple[str, str]]
) -> CaseRecord:
    """The job's times, throughput and energy when every rank measured the case, else none."""
    work = total(r.work_per_iter for r in everyone)
    job = job.but(work_per_iter=work, work_terms=_work_terms(everyone)).with_keys("work_per_iter", "work_terms")
    raws = [_times(r.raw_seconds) for r in everyone]
    if not (raws and all(raws) and work is not None):
        return (
            job.but(raw_seconds=(), repeats=None, seconds_per_iter=None, throughput=None, energy=None, efficiency=None)
            .with_keys("raw_seconds", "repeats", "seconds_per_iter", "throughput", "energy", "efficiency")
            .without("rounds", "node_energy")
        )  # the lowest rank's rounds are not the job's
    # Equal on every rank under the synchronised timer; the maximum is the job's time anyway.
    raw = [max(column) for column in zip(*raws, strict=False)]
    throughput = Summary.of([work / s for s in raw])
    energy = _job_energy(records, keys)
    return job.but(
        raw_seconds=tuple(raw),
        repeats=len(raw),
        seconds_per_iter=Summary.of(raw),
        throughput=throughput,
        energy=energy,
        efficiency=CaseRecord.efficiency_of(throughput, energy),
        rounds=_rounds(job, raw, records, keys),
        node_energy=_job_node_energy(records, keys),
    ).with_keys("raw_seconds", "repeats", "seconds_per_iter", "throughput", "energy", "efficiency", "rounds")


def merge_case(
    index: int,
    records: Mapping[int, CaseRecord],
    world_size: int,
    device_id: str,
    keys: Mapping[int, tuple[str, str]],
    failed: Mapping[str, Json] | None = None,
    ended: str = "complete",
) -> CaseRecord:
    """The job's record of the case at plan `index` from each rank's record (`records`: rank ->
    record; ranks absent from it have none), in v1 case format plus `index` and `ranks`.
    `failed` is the job's failed rank (or None), `ended` the job's status: they decide what a
    missing record means (`_worst`).

    The figures (work, times, throughput, energy, efficiency) are the job's only when every rank
    of the world measured the case: a sum over some ranks would read as the job's."""
    order = sorted(records)
    base = records[order[0]]
    missing = [r for r in range(world_size) if r not in records]
    status, error = _worst(records, missing, failed, ended)
    job = base.but(
        id=_job_id(base, device_id), index=index, device=device_id, ranks=len(records), status=status, error=error
    ).with_keys("index", "ranks", "error")
    everyone = [records[r] for r in range(world_size)] if not missing else []
    job = _figures(job, records, everyone, keys)
    ranked = [records[r] for r in order]
    memories = [r.memory for r in ranked if r.memory is not None]
    durations = [d for r in ranked if (d := _number(r.duration_s)) is not None]
    return job.but(
        flags=tuple(dict.fromkeys(f for r in ranked for f in (r.flags or ()))),
        verify=_verify(ranked),
        memory=max(memories, key=lambda m: _number(m.peak_bytes) or 0.0) if memories else None,
        duration_s=max(durations) if durations else None,
    ).with_keys("flags", "verify", "memory", "duration_s")


# The keys of a rank's case figures added after run/2 was first written (files before have none).
RANK_CASE_ADDED = ("energy_source", "energy_boundary", "sm_clock_mhz", "mean_temperature_c", "max_temperature_c", "flags")


def rank_case(record: CaseRecord, index: int) -> JsonObject:
    """One rank's figures of the case at plan `index`, as the `ranks` section keeps them (for
    `report --per-rank`)."""
    energy, memory = record.energy, record.memory
    return {
        "index": index,
        "id": record.id,
        "status": record.status,
        "error": record.error,
        "work_per_iter": record.work_per_iter,
        "seconds_per_iter": record.seconds_per_iter.median if record.seconds_per_iter else None,
        "throughput": record.throughput.median if record.throughput else None,
        "energy_j": energy.joules if energy else None,
        "avg_watts": energy.avg_watts if energy else None,
        "efficiency": record.efficiency,
        "peak_memory_bytes": memory.peak_bytes if memory else None,
        # what a fleet compares GPU against GPU (bench/store): where the energy came from, and
        # the clock, temperatures and throttle reasons ("throttled:..." flags) of the window
        "energy_source": energy.source if energy else None,
        "energy_boundary": energy.energy_boundary if energy else None,
        "sm_clock_mhz": energy.sm_clock_mhz if energy else None,
        "mean_temperature_c": energy.mean_temperature_c if energy else None,
        "max_temperature_c": energy.max_temperature_c if energy else None,
        "flags": list(record.flags or ()),
    }


# --- the run ----------------------------------------------------------------------------------


def _same_case(record: CaseRecord) -> str:
    """A case's id without its device: what identifies it on every rank (ids differ by device only)."""
    case_id, device = str(record.id), str(record.device)
    return case_id[: -len(device) - 1] if case_id.endswith(f"@{device}") else case_id


def _by_case(by_rank: Mapping[int, RunRecord]) -> dict[int, dict[int, CaseRecord]]:
    """Plan index -> rank -> that rank's record of the case. Records are matched by their plan
    `index`; shards whose records lack one (written before it was recorded) are matched by case
    id without the device, each case numbered by its first appearance in rank order."""
    records = [(rank, r) for rank in sorted(by_rank) for r in by_rank[rank].case_list()]
    cases: dict[int, dict[int, CaseRecord]] = {}
    if all(isinstance(r.index, int) for _, r in records):
        for rank, record in records:
            cases.setdefault(int(record.index or 0), {})[rank] = record
        return cases
    order: dict[str, int] = {}
    for rank, record in records:
        index = order.setdefault(_same_case(record), len(order))
        cases.setdefault(index, {})[rank] = record
    return cases


def _failure_line(failure: Mapping[str, Json]) -> str:
    why = failure.get("why") or "no reason given"
    case = f" (case {failure['case']})" if failure.get("case") else ""
    return f"rank {failure['rank']} {failure.get('kind') or UNKNOWN}: {why}{case}"


def _status(shard: RunRecord) -> str:
    return str(shard.run.status if shard.run else None)


def _named_failure(shards: Sequence[RunRecord], about_others: bool) -> JsonObject | None:
    """The failure the shards name, of one kind of evidence: with `about_others`, what ranks
    say of another rank (they saw it fail: its heartbeat stopped, it hung, it published an
    error); else what ranks say of themselves. Among several, the (rank, kind) most ranks name,
    then the lowest reporter's; the reason from the failed rank's own report where it made one
    of that kind (it knows why)."""
    # A shard still "running" never learned how the job ended (its rank ended without a word):
    # a failure in it was put there by another rank and is no evidence of its own.
    named = [(_rank(s).get("rank"), s.failure) for s in shards if s.failure is not None and _status(s) != "running"]
    named = [(reporter, f) for reporter, f in named if (f.get("rank") != reporter) == about_others]
    if not named:
        return None
    votes = Counter((f.get("rank"), f.get("kind")) for _, f in named)
    top = max(votes.values())
    chosen = next(f for _, f in named if votes[(f.get("rank"), f.get("kind"))] == top)
    return {"rank": chosen["rank"], "kind": chosen.get("kind") or UNKNOWN, "why": chosen.get("why"), "case": chosen.get("case")}


def _silent_ranks(
    shards: Mapping[int, RunRecord], world_size: int, cases: Mapping[int, Mapping[int, CaseRecord]]
) -> list[JsonObject]:
    """Ranks that said nothing of their end: no shard at all, or a shard still "running" (the
    process ended while measuring, with no time to say so). The case a running rank was on is
    the first, in plan order, that another rank has a record of and it has not."""
    silent: list[JsonObject] = []
    for rank in range(world_size):
        if rank not in shards:
            silent.append({"rank": rank, "kind": UNKNOWN, "why": "no shard", "case": None})
        elif _status(shards[rank]) == "running":
            lacking = [records for records in cases.values() if rank not in records]
            case = next(iter(lacking[0].values())).id if lacking else None
            why = f"ended while running case {case} (no word from it)" if case else "ended while running (no word from it)"
            silent.append({"rank": rank, "kind": UNKNOWN, "why": why, "case": case})
    return silent


def _run_status(
    shards: Mapping[int, RunRecord], world_size: int, cases: Mapping[int, Mapping[int, CaseRecord]]
) -> tuple[str, str | None, JsonObject | None]:
    """(status, abort_reason, failed_rank) of the job.

    "complete" only when every rank's shard is complete and none names a failure. Otherwise
    "aborted", naming the rank the best evidence points at, in this order:
    1. a failure ranks report of another rank (they saw it die or hang: not its victims);
    2. ranks that said nothing of their end: no shard ("rank 1: no shard"), or a shard still
       "running" ("rank 1 ended while running case X (no word from it)"): killed outright, so a
       survivor's own error (a connection reset by the dead peer) is the consequence;
    3. a failure a rank reports of itself (it raised);
    4. a shard that ended "aborted" (its own abort_reason).
    Where every rank wrote its shard and each is complete or interrupted, with no failure named,
    the job was interrupted (Ctrl-C reaches every rank): "interrupted", as a run/1 file says."""
    ordered = [shards[r] for r in sorted(shards)]
    named = _named_failure(ordered, about_others=True)
    if named is not None:
        return "aborted", _failure_line(named), named
    silent = _silent_ranks(shards, world_size, cases)
    if silent:
        reason = "; ".join(
            f"rank {s['rank']}: {s['why']}" if s["why"] == "no shard" else f"rank {s['rank']} {s['why']}" for s in silent
        )
        return "aborted", reason, silent[0]
    named = _named_failure(ordered, about_others=False)
    if named is not None:
        return "aborted", _failure_line(named), named
    statuses = {r: _status(s) for r, s in shards.items()}
    aborted = [r for r in sorted(statuses) if statuses[r] == "aborted"]
    if aborted:
        run = shards[aborted[0]].run
        why = (run.abort_reason if run else None) or "its run aborted"
        failed: JsonObject = {"rank": aborted[0], "kind": "stopped", "why": why, "case": None}
        return "aborted", _failure_line(failed), failed
    if any(s == "interrupted" for s in statuses.values()):
        return "interrupted", None, None
    return "complete", None, None


def _settings(settings: JsonObject | None, world_size: int, nodes: int, backend: Json) -> JsonObject:
    """The run's settings with the job's `distributed` section: world size, nodes, backend and
    the timeouts first, whatever else the ranks recorded after them."""
    settings = dict(settings or {})
    distributed = settings.get("distributed")
    distributed = distributed if isinstance(distributed, dict) else {}
    settings["distributed"] = {
        "world_size": world_size,
        "nodes": nodes,
        "backend": backend,
        "pg_timeout_s": distributed.get("pg_timeout_s"),
        "hang_timeout_s": distributed.get("hang_timeout_s"),
        **{k: v for k, v in distributed.items() if k not in ("world_size", "nodes", "backend")},
    }
    return settings


def _rank_entry(rank: int, shard: RunRecord, cases: Mapping[int, Mapping[int, CaseRecord]], stem: str | None) -> RankRecord:
    """Rank `rank`'s entry of the `ranks` section: where it ran, how it ended, its own figures."""
    info = _rank(shard)
    own = [rank_case(records[rank], i) for i, records in sorted(cases.items()) if rank in records]
    return RankRecord.parse(
        {
            "rank": rank,
            "local_rank": info.get("local_rank"),
            "node_rank": info.get("node_rank"),
            "host": _host(shard),
            "device": _device_entry(shard).to_json(),
            "threads": info.get("threads"),
            "status": _status(shard),
            "shard": f"{stem}{SHARDS_SUFFIX}/{shard_name(rank)}" if stem else None,
            "cases": own,
        }
    )


def _job_node_power(by_rank: Mapping[int, RunRecord]) -> Json:
    """The job's `node_power`: the first node's reader's description (its BMC, source, update
    period, GPUs), and where the job read more than one node's BMC, each node's under `nodes`
    (host -> its local rank 0's description), so no BMC read is left off the record."""
    readers: dict[str, Json] = {}
    for _, shard in sorted(by_rank.items()):
        described = shard.run.node_power if shard.run is not None else None
        if isinstance(described, dict):
            readers.setdefault(_host(shard), described)
    if not readers:
        return None
    first = next(iter(readers.values()))
    assert isinstance(first, dict)
    return first if len(readers) == 1 else {**first, "nodes": readers}


def merge_records(shards: Sequence[RunRecord], stem: str | None = None) -> RunRecord:
    """The job's run record ("wattbench.run/2") from its ranks' shard records (see merge_shards)."""
    if not shards:
        raise ValueError("no shards to merge")
    by_rank: dict[int, RunRecord] = {}
    for shard in shards:
        by_rank.setdefault(int(_rank(shard)["rank"]), shard)  # type: ignore[arg-type]
    first = by_rank[min(by_rank)]
    world_size = max(max(int(_rank(s)["world_size"]) for s in by_rank.values()), max(by_rank) + 1)  # type: ignore[arg-type]
    hosts = {_host(s) for s in by_rank.values()}
    nodes = int(max([_number(_rank(s).get("nodes")) or 0 for s in by_rank.values()] + [len(hosts)]))
    keys = {r: device_key(s) for r, s in by_rank.items()}
    for rank in range(world_size):  # a silent rank's device is unknown: its own key, so nothing is shared with it
        keys.setdefault(rank, (f"rank {rank}", "unknown"))

    cases = _by_case(by_rank)
    status, reason, failed = _run_status(by_rank, world_size, cases)
    assert first.run is not None
    finished = [str(s.run.finished_at) for s in by_rank.values() if s.run and s.run.finished_at]
    run = first.run.but(
        status=status,
        abort_reason=reason,
        failed_rank=failed,
        finished_at=max(finished) if finished else None,
        settings=_settings(first.run.settings, world_size, nodes, _rank(first).get("backend")),
        node_power=_job_node_power(by_rank),
    )
    device = _device_entry(first)
    names = Counter(str(_device_entry(s).name) for s in by_rank.values())
    workloads: JsonObject = {}
    for shard in by_rank.values():
        for name, schema in (shard.workloads or {}).items():
            workloads.setdefault(name, schema)
    return first.without("rank", "failure").but(
        schema=SCHEMA_V2,
        run=run.with_keys("abort_reason", "failed_rank"),
        devices=(device.but(ranks=world_size, nodes=nodes, names=dict(names)),),
        workloads=workloads,
        cases=tuple(merge_case(i, cases[i], world_size, str(device.id), keys, failed, status) for i in sorted(cases)),
        ranks=tuple(_rank_entry(rank, s, cases, stem) for rank, s in sorted(by_rank.items())),
    )


def merge_shards(shards: Sequence[Mapping[str, object]], stem: str | None = None) -> JsonObject:
    """The job's run file ("wattbench.run/2") from its ranks' shards (validated, one per rank,
    any order; ranks missing from them are named, and their cases fail).

    `stem`: the run file's name without .json, so that each rank's entry says where its shard
    is (`<stem>.shards/rank-00001.json`); None leaves `shard` null.

    The document is rank 0's (the lowest rank present when rank 0's shard is missing): its run
    and host sections, its device entry (plus ranks, nodes and how many ranks had each device
    name), then one job-level record per plan index (merge_case) and a `ranks` section with
    each rank's own figures."""
    return merge_records([RunRecord.from_json(s, shard=True) for s in shards], stem).to_json()


def summary(doc: Mapping[str, object]) -> str:
    """One line on a merged run: ranks found, status, the failed rank if any."""
    run = RunRecord.from_json(doc)
    assert run.run is not None
    settings = run.run.settings or {}
    distributed = settings.get("distributed")
    world = (distributed.get("world_size") if isinstance(distributed, dict) else None) or len(run.ranks or ())
    line = f"{len(run.ranks or ())} of {world} rank shard(s), {len(run.case_list())} case(s), {run.run.status}"
    if run.run.abort_reason:
        line += f": {run.run.abort_reason}"
    return line


def merge_folder(folder: Path, on_skip: Callable[[str], None] | None = None) -> tuple[Path, JsonObject]:
    """`wattbench merge DIR`: the run file of a folder of shards, written atomically beside it
    (`X.shards` -> `X.json`, replacing one rank 0 may have written). Returns its path and
    document. A UsageError (exit 2) when DIR is not a shards folder or holds no readable shard."""
    target = merged_path(folder)
    doc = merge_shards(read_shards(folder, on_skip), stem=target.stem)
    try:
        atomic_write_json(target, doc)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target, doc
