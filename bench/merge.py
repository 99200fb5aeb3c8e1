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

import copy
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.errors import ResultFileError, UsageError
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

def read_shards(folder: Path, on_skip: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
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
    shards: list[tuple[Path, dict[str, Any]]] = []
    for path in files:
        try:
            shards.append((path, check_shard(read_json(path), path)))
        except ResultFileError as exc:
            skip(str(exc))
    if not shards:
        raise ResultFileError(f"{folder}: none of the {len(files)} shard files could be read")
    newest = max(shards, key=lambda s: str(s[1]["run"].get("started_at") or ""))[1]["run"]["id"]
    kept: dict[int, dict[str, Any]] = {}
    for path, doc in shards:
        rank = doc["rank"]["rank"]
        if doc["run"]["id"] != newest:
            skip(f"{path}: a shard of another run ({doc['run']['id']}, not {newest})")
        elif rank in kept:
            skip(f"{path}: a second shard of rank {rank}")
        else:
            kept[rank] = doc
    return [kept[r] for r in sorted(kept)]


# --- small figures ----------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def stats(samples: Sequence[float]) -> dict[str, float]:
    """The summary a run file keeps of samples (bench.measure.timing.Stats.to_dict, which
    imports torch): n, median, mean, stdev, min, max, q1, q3, cv, iqr."""
    values = [float(x) for x in samples]
    mean = statistics.fmean(values)
    stdev = statistics.stdev(values) if len(values) > 1 else 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return {"n": len(values), "median": statistics.median(values), "mean": mean, "stdev": stdev, "min": min(values),
            "max": max(values), "q1": q1, "q3": q3, "cv": stdev / mean if mean else 0.0, "iqr": q3 - q1}


def _times(value: Any) -> list[float]:
    """A record's raw seconds as floats; [] unless it is a list of positive numbers."""
    if not isinstance(value, list):
        return []
    times = [_number(v) for v in value]
    return [t for t in times if t is not None] if all(t is not None and t > 0 for t in times) else []


def _section(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    """doc[key] when it is an object, else {} (absent, null or damaged alike)."""
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _median(section: Any) -> float | None:
    return _number(section.get("median")) if isinstance(section, dict) else None


def _total(values: Iterable[Any]) -> float | None:
    """The sum of figures, None when any is missing (a total over some would mislead)."""
    listed = [_number(v) for v in values]
    return None if not listed or any(v is None for v in listed) else float(sum(v for v in listed if v is not None))


def _summed_trace(traces: Sequence[Any]) -> list[list[float]]:
    """The power over time of several devices measured in the same window, as one trace: the
    first device's sample times, the others' watts interpolated at them (their samplers do not
    tick together). Empty unless every device has a trace."""
    parsed: list[list[tuple[float, float]]] = []
    for trace in traces:
        if not isinstance(trace, list) or len(trace) < 1:
            return []
        points = [(float(p[0]), float(p[1])) for p in trace if isinstance(p, list) and len(p) == 2
                  and all(_number(x) is not None for x in p)]
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

def _device_entry(shard: dict[str, Any]) -> dict[str, Any]:
    """The rank's device entry: the one its `rank.device` names, else its first."""
    devices = [d for d in shard["devices"] if isinstance(d, dict)]
    wanted = shard["rank"].get("device")
    return next((d for d in devices if d.get("id") == wanted), devices[0] if devices else {"id": wanted or "cpu"})


def _host(shard: dict[str, Any]) -> str:
    return str(shard["rank"].get("host") or shard["host"].get("hostname"))


def device_key(shard: dict[str, Any]) -> tuple[str, str]:
    """What a rank's energy measured: (host, GPU UUID) for a GPU, (host, "cpu") for the CPU
    package, which every rank on the host shares and measures alike (RAPL is per package).
    A GPU without a UUID falls back to its id on that host."""
    device = _device_entry(shard)
    if device.get("kind", "cpu") == "cpu" or str(device.get("id", "cpu")) == "cpu":
        return _host(shard), "cpu"
    uuid = shard["rank"].get("device_uuid") or device.get("uuid")
    return _host(shard), str(uuid or device.get("id"))


def _job_energy(records: Mapping[int, dict[str, Any]], keys: Mapping[int, tuple[str, str]]) -> dict[str, Any] | None:
    """The job's energy: each distinct device's once (the lowest rank's reading of it), joules
    and average watts summed, peak watts summed (an upper bound: the peaks need not coincide);
    the lowest rank's other keys as they are (one device: its reading unchanged, plus `devices`).
    None when any rank has no energy: the job's figure would be a part presented as the whole."""
    parts = [r.get("energy") for r in records.values()]
    if not parts or not all(isinstance(p, dict) for p in parts):
        return None
    distinct: dict[tuple[str, str], dict[str, Any]] = {}
    for rank in sorted(records):
        distinct.setdefault(keys[rank], records[rank]["energy"])
    chosen = list(distinct.values())
    sources = list(dict.fromkeys(str(p.get("source")) for p in chosen))
    estimate = any(p.get("source") == "nominal" or p.get("estimate") for p in chosen)
    mismatches = [m for p in chosen if (m := _number(p.get("mismatch"))) is not None]
    durations = [d for p in chosen if (d := _number(p.get("duration_s"))) is not None]
    energy = copy.deepcopy(chosen[0])  # what a reading says beyond the figures summed here (a sampler's notes) is kept
    energy |= {
        "joules": _total(p.get("joules") for p in chosen),
        "avg_watts": _total(p.get("avg_watts") for p in chosen),
        "peak_watts": _total(p.get("peak_watts") for p in chosen),
        # One source when all agree; "nominal" (an estimate) as soon as any part is one, so the
        # report marks the figure '~'; else the sources joined.
        "source": "nominal" if "nominal" in sources else sources[0] if len(sources) == 1 else "+".join(sources),
        "estimate": estimate,
        "samples": int(_total(p.get("samples") for p in chosen) or 0),
        "duration_s": max(durations) if durations else None,
        "devices": len(chosen),
        "scope": "job: energy of each distinct device, summed",
    }
    for key in ("counter_joules", "integral_joules", "dynamic_joules", "idle_watts"):
        energy[key] = _total(p.get(key) for p in chosen)
    energy["mismatch"] = max(mismatches) if mismatches else None
    energy["trace"] = _summed_trace([p.get("trace") for p in chosen])
    return energy


# --- one case ---------------------------------------------------------------------------------

def _ranks(ranks: Sequence[int]) -> str:
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"


def _worst(records: Mapping[int, dict[str, Any]], missing: Sequence[int], failed: Mapping[str, Any] | None,
           ended: str) -> tuple[str, str | None]:
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
        return not _PEER_ERROR.match(str(records[r].get("error") or ""))

    candidates = [(records[r]["status"], r, records[r].get("error"))
                  for r in sorted(records, key=lambda r: (not own(r), r != culprit, r))]
    candidates += [("failed" if r == culprit else "interrupted", r, NO_RESULT) for r in missing]
    worst = max(SEVERITY.get(status, 3) for status, _, _ in candidates)
    if worst == 0:
        return "ok", None
    status, rank, error = next(c for c in candidates if SEVERITY.get(c[0], 3) == worst)
    if status == "interrupted":
        finished = sorted(r for r, record in records.items() if record["status"] != "interrupted")
        stopped = sorted(set(missing) | {r for r, record in records.items() if record["status"] == "interrupted"})
        why = "interrupted by the user" if ended == "interrupted" or culprit is None else f"interrupted: the job ended when rank {culprit} failed"
        done = f"; {_ranks(finished)} finished it" if finished else ""
        return status, f"{why} before {_ranks(stopped)} finished it{done}"
    text = error or status
    return status, text if _PEER_ERROR.match(text) or text.startswith(f"rank {rank} ") else f"rank {rank}: {text}"


def _verify(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The worst check over ranks: the largest error; passed only if every rank's passed."""
    checks = [r["verify"] for r in records if isinstance(r.get("verify"), dict)]
    if not checks:
        return None
    errors = [e for c in checks if (e := _number(c.get("max_rel_error"))) is not None]
    worst = dict(checks[0])
    worst["max_rel_error"] = max(errors) if errors else None
    worst["passed"] = all(c.get("passed") is not False for c in checks) and len(checks) == len(records)
    return worst


def _rounds(base: dict[str, Any], raw: list[float], records: Mapping[int, dict[str, Any]],
            keys: Mapping[int, tuple[str, str]]) -> list[dict[str, Any]] | None:
    """The base record's rounds with the job's figures: each round's median time from the
    merged raw times, its average watts summed over distinct devices (None unless all know)."""
    rounds = base.get("rounds")
    if not isinstance(rounds, list) or not all(isinstance(r, dict) for r in rounds):
        return None
    merged = [dict(r) for r in rounds]
    counts = [r.get("repeats") for r in merged]
    whole = [c for c in counts if isinstance(c, int) and c > 0]
    if len(whole) == len(counts) and sum(whole) == len(raw):
        start = 0
        for entry, count in zip(merged, whole, strict=True):
            entry["seconds_per_iter_median"] = statistics.median(raw[start:start + count])
            start += count
    firsts: dict[tuple[str, str], dict[str, Any]] = {}
    for rank in sorted(records):
        firsts.setdefault(keys[rank], records[rank])
    for i, entry in enumerate(merged):
        watts = []
        for record in firsts.values():
            theirs = record.get("rounds")
            mine = theirs[i] if isinstance(theirs, list) and i < len(theirs) else None
            watts.append(mine.get("avg_watts") if isinstance(mine, dict) else None)
        entry["avg_watts"] = _total(watts)
    return merged


def merge_case(index: int, records: Mapping[int, dict[str, Any]], world_size: int, device_id: str,
               keys: Mapping[int, tuple[str, str]], failed: Mapping[str, Any] | None = None,
               ended: str = "complete") -> dict[str, Any]:
    """The job's record of the case at plan `index` from each rank's record (`records`: rank ->
    record; ranks absent from it have none), in v1 case format plus `index` and `ranks`.
    `failed` is the job's failed rank (or None), `ended` the job's status: they decide what a
    missing record means (`_worst`).

    The figures (work, times, throughput, energy, efficiency) are the job's only when every rank
    of the world measured the case: a sum over some ranks would read as the job's."""
    order = sorted(records)
    base = records[order[0]]
    job = copy.deepcopy(base)
    missing = [r for r in range(world_size) if r not in records]
    status, error = _worst(records, missing, failed, ended)
    own_device = base.get("device")
    case_id = str(base.get("id"))
    if own_device and case_id.endswith(f"@{own_device}"):
        case_id = case_id[: -len(own_device)] + device_id
    job.update(id=case_id, index=index, device=device_id, ranks=len(records), status=status, error=error)
    everyone = [records[r] for r in range(world_size)] if not missing else []
    work = _total(r.get("work_per_iter") for r in everyone)
    job["work_per_iter"] = work
    terms = [t for r in everyone if isinstance(t := r.get("work_terms"), dict)]
    job["work_terms"] = {k: _total(t.get(k) for t in terms) for k in terms[0]} if terms and len(terms) == len(everyone) else None
    raws = [_times(r.get("raw_seconds")) for r in everyone]
    if raws and all(raws) and work is not None:
        # Equal on every rank under the synchronised timer; the maximum is the job's time anyway.
        raw = [max(column) for column in zip(*raws, strict=False)]
        throughput = stats([work / s for s in raw])
        energy = _job_energy(records, keys)
        job.update(
            raw_seconds=raw, repeats=len(raw), seconds_per_iter=stats(raw), throughput=throughput, energy=energy,
            efficiency=throughput["median"] / energy["avg_watts"] if energy and energy.get("avg_watts") else None,
            rounds=_rounds(base, raw, records, keys),
        )
    else:
        job.update(raw_seconds=[], repeats=None, seconds_per_iter=None, throughput=None, energy=None, efficiency=None)
        job.pop("rounds", None)  # the lowest rank's rounds are not the job's
    ranked = [records[r] for r in order]
    job["flags"] = list(dict.fromkeys(f for r in ranked for f in (r.get("flags") or []) if isinstance(f, str)))
    job["verify"] = _verify(ranked)
    memories = [r["memory"] for r in ranked if isinstance(r.get("memory"), dict)]
    job["memory"] = max(memories, key=lambda m: _number(m.get("peak_bytes")) or 0.0) if memories else None
    durations = [d for r in ranked if (d := _number(r.get("duration_s"))) is not None]
    job["duration_s"] = max(durations) if durations else None
    return job


def rank_case(record: dict[str, Any], index: int) -> dict[str, Any]:
    """One rank's figures of the case at plan `index`, as the `ranks` section keeps them (for
    `report --per-rank`)."""
    energy = _section(record, "energy")
    memory = _section(record, "memory")
    return {
        "index": index, "id": record.get("id"), "status": record.get("status"), "error": record.get("error"),
        "work_per_iter": record.get("work_per_iter"), "seconds_per_iter": _median(record.get("seconds_per_iter")),
        "throughput": _median(record.get("throughput")), "energy_j": energy.get("joules"),
        "avg_watts": energy.get("avg_watts"), "efficiency": record.get("efficiency"), "peak_memory_bytes": memory.get("peak_bytes"),
    }


# --- the run ----------------------------------------------------------------------------------

def _same_case(record: dict[str, Any]) -> str:
    """A case's id without its device: what identifies it on every rank (ids differ by device only)."""
    case_id, device = str(record.get("id")), str(record.get("device"))
    return case_id[: -len(device) - 1] if case_id.endswith(f"@{device}") else case_id


def _by_case(by_rank: Mapping[int, dict[str, Any]]) -> dict[int, dict[int, dict[str, Any]]]:
    """Plan index -> rank -> that rank's record of the case. Records are matched by their plan
    `index`; shards whose records lack one (written before it was recorded) are matched by case
    id without the device, each case numbered by its first appearance in rank order."""
    records = [(rank, r) for rank in sorted(by_rank) for r in by_rank[rank]["cases"]]
    cases: dict[int, dict[int, dict[str, Any]]] = {}
    if all(isinstance(r.get("index"), int) for _, r in records):
        for rank, record in records:
            cases.setdefault(record["index"], {})[rank] = record
        return cases
    order: dict[str, int] = {}
    for rank, record in records:
        index = order.setdefault(_same_case(record), len(order))
        cases.setdefault(index, {})[rank] = record
    return cases


def _failure_line(failure: Mapping[str, Any]) -> str:
    why = failure.get("why") or "no reason given"
    case = f" (case {failure['case']})" if failure.get("case") else ""
    return f"rank {failure['rank']} {failure.get('kind') or UNKNOWN}: {why}{case}"


def _named_failure(shards: Sequence[dict[str, Any]], about_others: bool) -> dict[str, Any] | None:
    """The failure the shards name, of one kind of evidence: with `about_others`, what ranks
    say of another rank (they saw it fail: its heartbeat stopped, it hung, it published an
    error); else what ranks say of themselves. Among several, the (rank, kind) most ranks name,
    then the lowest reporter's; the reason from the failed rank's own report where it made one
    of that kind (it knows why)."""
    # A shard still "running" never learned how the job ended (its rank ended without a word):
    # a failure in it was put there by another rank and is no evidence of its own.
    named = [(s["rank"]["rank"], s["failure"]) for s in shards
             if isinstance(s.get("failure"), dict) and s["run"]["status"] != "running"]
    named = [(reporter, f) for reporter, f in named if (f.get("rank") != reporter) == about_others]
    if not named:
        return None
    votes = Counter((f.get("rank"), f.get("kind")) for _, f in named)
    top = max(votes.values())
    chosen = next(f for _, f in named if votes[(f.get("rank"), f.get("kind"))] == top)
    return {"rank": chosen["rank"], "kind": chosen.get("kind") or UNKNOWN, "why": chosen.get("why"), "case": chosen.get("case")}


def _silent_ranks(shards: Mapping[int, dict[str, Any]], world_size: int,
                  cases: Mapping[int, Mapping[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Ranks that said nothing of their end: no shard at all, or a shard still "running" (the
    process ended while measuring, with no time to say so). The case a running rank was on is
    the first, in plan order, that another rank has a record of and it has not."""
    silent: list[dict[str, Any]] = []
    for rank in range(world_size):
        if rank not in shards:
            silent.append({"rank": rank, "kind": UNKNOWN, "why": "no shard", "case": None})
        elif shards[rank]["run"]["status"] == "running":
            lacking = [records for records in cases.values() if rank not in records]
            case = next(iter(lacking[0].values())).get("id") if lacking else None
            why = f"ended while running case {case} (no word from it)" if case else "ended while running (no word from it)"
            silent.append({"rank": rank, "kind": UNKNOWN, "why": why, "case": case})
    return silent


def _run_status(shards: Mapping[int, dict[str, Any]], world_size: int,
                cases: Mapping[int, Mapping[int, dict[str, Any]]]) -> tuple[str, str | None, dict[str, Any] | None]:
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
        reason = "; ".join(f"rank {s['rank']}: {s['why']}" if s["why"] == "no shard" else f"rank {s['rank']} {s['why']}"
                           for s in silent)
        return "aborted", reason, silent[0]
    named = _named_failure(ordered, about_others=False)
    if named is not None:
        return "aborted", _failure_line(named), named
    statuses = {r: s["run"]["status"] for r, s in shards.items()}
    aborted = [r for r in sorted(statuses) if statuses[r] == "aborted"]
    if aborted:
        why = shards[aborted[0]]["run"].get("abort_reason") or "its run aborted"
        failed = {"rank": aborted[0], "kind": "stopped", "why": why, "case": None}
        return "aborted", _failure_line(failed), failed
    if any(s == "interrupted" for s in statuses.values()):
        return "interrupted", None, None
    return "complete", None, None


def merge_shards(shards: Sequence[dict[str, Any]], stem: str | None = None) -> dict[str, Any]:
    """The job's run file ("wattbench.run/2") from its ranks' shards (validated, one per rank,
    any order; ranks missing from them are named, and their cases fail).

    `stem`: the run file's name without .json, so that each rank's entry says where its shard
    is (`<stem>.shards/rank-00001.json`); None leaves `shard` null.

    The document is rank 0's (the lowest rank present when rank 0's shard is missing): its run
    and host sections, its device entry (plus ranks, nodes and how many ranks had each device
    name), then one job-level record per plan index (merge_case) and a `ranks` section with
    each rank's own figures."""
    if not shards:
        raise ValueError("no shards to merge")
    by_rank: dict[int, dict[str, Any]] = {}
    for shard in shards:
        by_rank.setdefault(shard["rank"]["rank"], shard)
    first = by_rank[min(by_rank)]
    world_size = max(max(s["rank"]["world_size"] for s in by_rank.values()), max(by_rank) + 1)
    hosts = {_host(s) for s in by_rank.values()}
    nodes = max([_number(s["rank"].get("nodes")) or 0 for s in by_rank.values()] + [len(hosts)])
    backend = first["rank"].get("backend")
    keys = {r: device_key(s) for r, s in by_rank.items()}
    for rank in range(world_size):  # a silent rank's device is unknown: its own key, so nothing is shared with it
        keys.setdefault(rank, (f"rank {rank}", "unknown"))

    cases = _by_case(by_rank)
    status, reason, failed = _run_status(by_rank, world_size, cases)

    doc = {k: copy.deepcopy(v) for k, v in first.items() if k not in ("rank", "failure")}
    doc["schema"] = SCHEMA_V2
    run = doc["run"]
    finished = [str(s["run"]["finished_at"]) for s in by_rank.values() if s["run"].get("finished_at")]
    run.update(status=status, abort_reason=reason, failed_rank=failed, finished_at=max(finished) if finished else None)
    settings = run.setdefault("settings", {})
    if isinstance(settings, dict):
        distributed = _section(settings, "distributed")
        settings["distributed"] = {"world_size": world_size, "nodes": int(nodes), "backend": backend,
                                   "pg_timeout_s": distributed.get("pg_timeout_s"),
                                   "hang_timeout_s": distributed.get("hang_timeout_s"),
                                   **{k: v for k, v in distributed.items() if k not in ("world_size", "nodes", "backend")}}
    device = dict(_device_entry(first))
    device_id = str(device.get("id"))
    names = Counter(str(_device_entry(s).get("name")) for s in by_rank.values())
    device.update(ranks=world_size, nodes=int(nodes), names=dict(names))
    doc["devices"] = [device]
    workloads: dict[str, Any] = {}
    for shard in by_rank.values():
        if isinstance(shard.get("workloads"), dict):
            for name, schema in shard["workloads"].items():
                workloads.setdefault(name, schema)
    doc["workloads"] = workloads
    doc["cases"] = [merge_case(i, cases[i], world_size, device_id, keys, failed, status) for i in sorted(cases)]
    doc["ranks"] = [
        {
            "rank": rank, "local_rank": s["rank"].get("local_rank"), "node_rank": s["rank"].get("node_rank"), "host": _host(s),
            "device": copy.deepcopy(_device_entry(s)), "threads": s["rank"].get("threads"), "status": s["run"]["status"],
            "shard": f"{stem}{SHARDS_SUFFIX}/{shard_name(rank)}" if stem else None,
            "cases": sorted((rank_case(records[rank], i) for i, records in cases.items() if rank in records),
                            key=lambda c: c["index"]),
        }
        for rank, s in sorted(by_rank.items())
    ]
    return doc


def summary(doc: dict[str, Any]) -> str:
    """One line on a merged run: ranks found, status, the failed rank if any."""
    run = doc["run"]
    world = run.get("settings", {}).get("distributed", {}).get("world_size") or len(doc["ranks"])
    found = len(doc["ranks"])
    line = f"{found} of {world} rank shard(s), {len(doc['cases'])} case(s), {run['status']}"
    if run.get("abort_reason"):
        line += f": {run['abort_reason']}"
    return line


def merge_folder(folder: Path, on_skip: Callable[[str], None] | None = None) -> tuple[Path, dict[str, Any]]:
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
