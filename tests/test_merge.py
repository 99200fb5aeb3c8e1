"""Multi-rank results, reading side: shards merged into one "wattbench.run/2" file (job figures,
distinct-device energy, the failed rank named), `wattbench merge`, and how reports show a job
(hardware label, per-rank table, collectives in the nccl-tests manner). Synthetic shards only:
the real torchrun runs are in tests/test_distributed.py."""

import io
import json

import pytest
from rich.console import Console

from bench import results
from bench.cli import main
from bench.errors import ResultFileError, UsageError
from bench.merge import NO_RESULT, merge_shards, merged_path, read_shards, summary
from bench.report.load import hardware_label, load
from bench.report.tables import NOTHING_PER_RANK, ReportOptions, render, render_to_text

WORKLOADS = {
    "matmul": {"params": {"m": {"kind": "int"}, "dtype": {"kind": "choice"}}, "shape": []},
    "collective": {"params": {"op": {"kind": "choice"}, "size": {"kind": "bytes"}, "dtype": {"kind": "choice"}}, "shape": []},
}


def record(
    index,
    raw=(1e-3, 1e-3, 1e-3),
    watts=100.0,
    work=1e9,
    status="ok",
    error=None,
    device="cpu",
    m=None,
    flags=(),
    verify=None,
    peak_bytes=None,
    source="rapl",
):
    """One rank's record of the matmul case at plan `index` (m = the index unless given)."""
    m = index if m is None else m
    ok = status == "ok" and raw
    median = sorted(raw)[len(raw) // 2] if raw else None
    return {
        "index": index,
        "id": f"matmul(m={m},dtype=float32)@{device}",
        "workload": "matmul",
        "params": {"m": m, "dtype": "float32"},
        "device": device,
        "status": status,
        "error": error,
        "work_unit": "FLOP",
        "work_per_iter": work,
        "work_terms": {"FLOP": work},
        "iterations": 10,
        "repeats": len(raw),
        "raw_seconds": list(raw),
        "seconds_per_iter": {"median": median, "cv": 0.01} if ok else None,
        "throughput": {"median": work / median} if ok else None,
        "energy": {
            "joules": watts * 0.03,
            "avg_watts": watts,
            "peak_watts": watts + 10,
            "source": source,
            "estimate": source == "nominal",
            "samples": 3,
            "duration_s": 0.03,
            "trace": [[0.0, watts], [0.03, watts]],
        }
        if ok and watts is not None
        else None,
        "efficiency": work / median / watts if ok and watts else None,
        "memory": {"peak_bytes": peak_bytes, "source": "torch"} if peak_bytes is not None else None,
        "verify": verify,
        "flags": list(flags),
        "details": {},
    }


def shard(
    rank,
    cases,
    world=2,
    host="node1",
    device="cpu",
    name="Test CPU",
    uuid=None,
    status="complete",
    failure=None,
    nodes=1,
    node_rank=0,
    run_id="job1",
    started="2026-11-24T10:00:00.000Z",
    backend="gloo",
):
    """Rank `rank`'s shard of a job of `world` ranks, holding `cases` (its records)."""
    return {
        "schema": results.SHARD_SCHEMA,
        "run": {
            "id": run_id,
            "started_at": started,
            "finished_at": "2026-11-24T10:01:00.000Z",
            "wattbench_version": "0",
            "command": "wattbench run",
            "status": status,
            "settings": {"distributed": {"pg_timeout_s": 300.0, "hang_timeout_s": 60.0}},
        },
        "host": {"hostname": host, "os": "Linux", "python": "3.11", "torch": "2.13", "driver": "560.35" if uuid else None},
        "devices": [{"id": device, "kind": device.split(":")[0], "name": name, "memory_bytes": 1, "uuid": uuid}],
        "workloads": WORKLOADS,
        "cases": cases,
        "rank": {
            "rank": rank,
            "local_rank": rank if nodes == 1 else 0,
            "node_rank": node_rank,
            "world_size": world,
            "local_world_size": world // nodes,
            "nodes": nodes,
            "host": host,
            "device": device,
            "device_uuid": uuid,
            "threads": 1,
            "backend": backend,
        },
        "failure": failure,
    }


def gpu_shard(rank, cases, host, uuid, nodes=1, **kw):
    device = f"cuda:{0 if nodes > 1 else rank}"
    return shard(
        rank,
        [dict(c, device=device, id=c["id"].replace("@cpu", f"@{device}")) for c in cases],
        host=host,
        device=device,
        name="NVIDIA H100 80GB HBM3",
        uuid=uuid,
        nodes=nodes,
        node_rank=rank if nodes > 1 else 0,
        backend="nccl",
        **kw,
    )


def write_shards(folder, shards):
    folder.mkdir(parents=True, exist_ok=True)
    for s in shards:
        (folder / results.shard_name(s["rank"]["rank"])).write_text(json.dumps(s))
    return folder


# --- merging ---------------------------------------------------------------------------------


def test_two_ranks_on_one_host_count_the_cpu_package_once():
    doc = merge_shards([shard(0, [record(0)]), shard(1, [record(0)])])
    assert doc["schema"] == "wattbench.run/2" and doc["run"]["status"] == "complete"
    assert doc["run"]["abort_reason"] is None and doc["run"]["failed_rank"] is None
    case = doc["cases"][0]
    assert case["status"] == "ok" and case["ranks"] == 2 and case["index"] == 0
    assert case["work_per_iter"] == 2e9 and case["work_terms"] == {"FLOP": 2e9}
    assert case["throughput"]["median"] == pytest.approx(2e12)
    assert case["energy"]["avg_watts"] == 100.0 and case["energy"]["devices"] == 1  # one package, not two
    assert case["energy"]["joules"] == pytest.approx(3.0)
    assert case["efficiency"] == pytest.approx(2e12 / 100.0)
    assert doc["devices"] == [
        {
            "id": "cpu",
            "kind": "cpu",
            "name": "Test CPU",
            "memory_bytes": 1,
            "uuid": None,
            "ranks": 2,
            "nodes": 1,
            "names": {"Test CPU": 2},
        }
    ]
    assert doc["run"]["settings"]["distributed"] == {
        "world_size": 2,
        "nodes": 1,
        "backend": "gloo",
        "pg_timeout_s": 300.0,
        "hang_timeout_s": 60.0,
    }


def test_gpus_on_two_hosts_add_up():
    doc = merge_shards(
        [
            gpu_shard(0, [record(0, watts=300.0)], "a", "GPU-a", nodes=2),
            gpu_shard(1, [record(0, watts=350.0)], "b", "GPU-b", nodes=2),
        ]
    )
    case = doc["cases"][0]
    assert case["energy"]["avg_watts"] == 650.0 and case["energy"]["devices"] == 2
    assert case["energy"]["peak_watts"] == 670.0  # an upper bound: the sum of the peaks
    assert case["energy"]["trace"] == [[0.0, 650.0], [0.03, 650.0]]
    assert case["device"] == "cuda:0" and case["id"] == "matmul(m=0,dtype=float32)@cuda:0"
    assert doc["devices"][0]["nodes"] == 2 and doc["devices"][0]["uuid"] == "GPU-a"
    assert [r["host"] for r in doc["ranks"]] == ["a", "b"]


def test_two_gpus_on_one_host_add_up_but_a_shared_uuid_counts_once():
    two = merge_shards(
        [gpu_shard(0, [record(0, watts=300.0)], "a", "GPU-a"), gpu_shard(1, [record(0, watts=300.0)], "a", "GPU-b")]
    )
    assert two["cases"][0]["energy"]["avg_watts"] == 600.0
    same = merge_shards(
        [gpu_shard(0, [record(0, watts=300.0)], "a", "GPU-a"), gpu_shard(1, [record(0, watts=300.0)], "a", "GPU-a")]
    )
    assert same["cases"][0]["energy"]["avg_watts"] == 300.0


def test_raw_times_are_the_element_wise_maximum():
    doc = merge_shards([shard(0, [record(0, raw=(1.0, 2.0, 3.0))]), shard(1, [record(0, raw=(1.5, 1.0, 3.5))])])
    case = doc["cases"][0]
    assert case["raw_seconds"] == [1.5, 2.0, 3.5]
    assert case["seconds_per_iter"]["median"] == 2.0 and case["repeats"] == 3
    assert case["throughput"]["median"] == pytest.approx(2e9 / 2.0)
    assert set(case["seconds_per_iter"]) >= {"median", "mean", "stdev", "min", "max", "cv", "q1", "q3", "iqr"}


def test_energy_is_unknown_when_a_rank_has_none_and_an_estimate_when_one_is_nominal():
    doc = merge_shards(
        [shard(0, [record(0), record(1)]), shard(1, [record(0, watts=None), record(1, source="nominal")], host="node2", nodes=2)]
    )
    assert doc["cases"][0]["energy"] is None and doc["cases"][0]["efficiency"] is None
    assert doc["cases"][1]["energy"]["source"] == "nominal" and doc["cases"][1]["energy"]["estimate"] is True


def test_the_worst_status_wins_with_its_rank_named():
    zero = [record(0), record(1), record(2, status="interrupted", error="interrupted by the user", raw=())]
    one = [
        record(0),
        record(1, status="skipped", error="float8 needs a GPU", raw=()),
        record(2, status="failed", error="RuntimeError: boom", raw=()),
    ]
    doc = merge_shards([shard(0, zero), shard(1, one)])
    assert [(c["status"], c["error"]) for c in doc["cases"]] == [
        ("ok", None),
        ("skipped", "rank 1: float8 needs a GPU"),
        ("failed", "rank 1: RuntimeError: boom"),
    ]
    assert doc["cases"][1]["throughput"] is None  # a rank did not measure it: no job figure


def test_flags_are_united_verify_is_the_worst_memory_the_largest():
    zero = record(0, flags=["unstable"], verify={"max_rel_error": 1e-6, "tolerance": 1e-3, "passed": True}, peak_bytes=10)
    one = record(
        0,
        flags=["throttled:sw_power_cap", "unstable"],
        verify={"max_rel_error": 2e-3, "tolerance": 1e-3, "passed": False},
        peak_bytes=30,
    )
    case = merge_shards([shard(0, [zero]), shard(1, [one])])["cases"][0]
    assert case["flags"] == ["unstable", "throttled:sw_power_cap"]
    assert case["verify"] == {"max_rel_error": 2e-3, "tolerance": 1e-3, "passed": False}
    assert case["memory"]["peak_bytes"] == 30


def test_a_missing_rank_is_named_and_its_cases_fail():
    doc = merge_shards([shard(0, [record(0), record(1)])])
    assert doc["run"]["status"] == "aborted"
    assert doc["run"]["abort_reason"] == "rank 1: no shard"
    assert doc["run"]["failed_rank"] == {"rank": 1, "kind": "unknown", "why": "no shard", "case": None}
    assert {(c["status"], c["error"]) for c in doc["cases"]} == {("failed", f"rank 1: {NO_RESULT}")}
    assert doc["cases"][0]["ranks"] == 1 and doc["cases"][0]["throughput"] is None
    assert [r["rank"] for r in doc["ranks"]] == [0]


def test_rank_0_missing_takes_the_lowest_rank_present():
    doc = merge_shards([shard(1, [record(0)], host="node2")])
    assert doc["host"]["hostname"] == "node2" and doc["run"]["failed_rank"]["rank"] == 0


def test_a_rank_still_running_is_named_with_its_case():
    doc = merge_shards([shard(0, [record(0), record(1)], status="complete"), shard(1, [record(0)], status="running")])
    assert doc["run"]["status"] == "aborted"
    assert doc["run"]["abort_reason"] == "rank 1 ended while running case matmul(m=1,dtype=float32)@cpu (no word from it)"
    assert doc["run"]["failed_rank"]["case"] == "matmul(m=1,dtype=float32)@cpu"
    assert doc["cases"][1]["status"] == "failed" and doc["cases"][1]["error"] == f"rank 1: {NO_RESULT}"


def test_a_shards_failure_names_the_hung_rank_not_its_victims():
    hung = {
        "rank": 1,
        "kind": "hung",
        "why": "no progress for 60 s while rank(s) 0 waited",
        "case": "matmul(m=1,dtype=float32)@cpu",
    }
    doc = merge_shards(
        [
            shard(0, [record(0)], status="aborted", failure=hung),
            shard(1, [record(0)], status="aborted", failure={"rank": 1, "kind": "stopped", "why": "terminated", "case": None}),
        ]
    )
    assert doc["run"]["failed_rank"] == hung
    assert doc["run"]["abort_reason"] == (
        "rank 1 hung: no progress for 60 s while rank(s) 0 waited (case matmul(m=1,dtype=float32)@cpu)"
    )


def test_a_killed_rank_is_named_before_its_survivors_own_error():
    """Rank 0 killed outright (its shard still "running"); rank 1 raised on the broken
    connection and blamed itself: the silent rank is the cause."""
    reset = {"rank": 1, "kind": "raised", "why": "RuntimeError: Connection reset by peer", "case": None}
    doc = merge_shards(
        [shard(0, [record(0)], status="running", failure=reset), shard(1, [record(0)], status="aborted", failure=reset)]
    )
    assert doc["run"]["failed_rank"]["rank"] == 0 and doc["run"]["abort_reason"].startswith("rank 0 ended while running")
    raised = merge_shards(
        [shard(0, [record(0)], status="aborted", failure=reset), shard(1, [record(0)], status="aborted", failure=reset)]
    )
    assert raised["run"]["failed_rank"] == reset  # every rank alive to say so: rank 1 raised


def test_every_rank_interrupted_is_an_interrupted_job():
    doc = merge_shards([shard(0, [record(0)], status="interrupted"), shard(1, [record(0)], status="interrupted")])
    assert doc["run"]["status"] == "interrupted" and doc["run"]["failed_rank"] is None


def test_the_ranks_section_keeps_each_ranks_figures():
    doc = merge_shards([shard(0, [record(0, raw=(1.0,) * 3)]), shard(1, [record(0, raw=(2.0,) * 3, peak_bytes=5)])], stem="job")
    assert [r["shard"] for r in doc["ranks"]] == ["job.shards/rank-00000.json", "job.shards/rank-00001.json"]
    entry = doc["ranks"][1]
    assert (entry["rank"], entry["local_rank"], entry["host"], entry["device"]["id"], entry["threads"], entry["status"]) == (
        1,
        1,
        "node1",
        "cpu",
        1,
        "complete",
    )
    assert entry["cases"] == [
        {
            "index": 0,
            "id": "matmul(m=0,dtype=float32)@cpu",
            "status": "ok",
            "error": None,
            "work_per_iter": 1e9,
            "seconds_per_iter": 2.0,
            "throughput": 5e8,
            "energy_j": 3.0,
            "avg_watts": 100.0,
            "efficiency": 5e6,
            "peak_memory_bytes": 5,
            "energy_source": "rapl",
            "energy_boundary": "device",
            "sm_clock_mhz": None,
            "mean_temperature_c": None,
            "max_temperature_c": None,
            "flags": [],
        }
    ]


def test_cases_without_a_plan_index_match_by_id():
    zero = [dict(record(0), index=None), dict(record(1), index=None)]
    one = [dict(record(1), index=None)]
    doc = merge_shards([shard(0, zero), shard(1, one)])
    assert [(c["index"], c["ranks"]) for c in doc["cases"]] == [(0, 1), (1, 2)]


def test_a_merged_file_reads_back_as_a_run(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(merge_shards([shard(0, [record(0)]), shard(1, [record(0)])])))
    assert results.read_run(path)["schema"] == "wattbench.run/2"
    doc = json.loads(path.read_text())
    doc["ranks"] = []
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultFileError, match="needs a non-empty `ranks` list"):
        results.read_run(path)


# --- shards on disk --------------------------------------------------------------------------


def test_shard_paths():
    assert results.shard_path(results.Path("out/run.json"), 3) == results.Path("out/run.shards/rank-00003.json")
    assert merged_path(results.Path("out/run.shards")) == results.Path("out/run.json")
    with pytest.raises(UsageError, match="not a folder of shards"):
        merged_path(results.Path("out/run"))


def test_read_run_refuses_a_shard(tmp_path):
    path = tmp_path / "rank-00000.json"
    path.write_text(json.dumps(shard(0, [record(0)])))
    with pytest.raises(ResultFileError) as err:
        results.read_run(path)
    assert str(err.value) == (f"{path}: a rank's shard of a multi-rank run, not a run: `wattbench merge DIR` builds the run file")


def test_result_files_skip_shards_folders(tmp_path):
    shards = write_shards(tmp_path / "job.shards", [shard(0, [record(0)]), shard(1, [record(0)])])
    with pytest.raises(UsageError, match=r"only shards of multi-rank runs: `wattbench merge .*job.shards`"):
        results.result_files([tmp_path])
    (tmp_path / "job.json").write_text(json.dumps(merge_shards(read_shards(shards))))
    assert results.result_files([tmp_path]) == [tmp_path / "job.json"]  # the job once, not three times
    assert len(load([tmp_path])) == 1
    with pytest.raises(UsageError, match="a folder of a multi-rank run's shards, not runs"):
        results.result_files([shards])


def test_read_shards_skips_damaged_and_stale_files(tmp_path):
    folder = write_shards(tmp_path / "job.shards", [shard(0, [record(0)]), shard(1, [record(0)])])
    (folder / "rank-00002.json").write_text("{")
    (folder / "rank-00003.json").write_text(json.dumps(shard(1, [record(0)], run_id="old", started="2026-01-01T00:00:00Z")))
    skipped = []
    found = read_shards(folder, skipped.append)
    assert [s["rank"]["rank"] for s in found] == [0, 1]
    assert len(skipped) == 2 and "rank-00002.json" in skipped[0] and "not valid JSON" in skipped[0]
    assert "a shard of another run (old, not job1)" in skipped[1]


def test_read_shards_errors_when_there_is_none(tmp_path):
    with pytest.raises(UsageError, match="no such folder"):
        read_shards(tmp_path / "x.shards")
    (tmp_path / "x.shards").mkdir()
    with pytest.raises(UsageError, match="no shard"):
        read_shards(tmp_path / "x.shards")
    (tmp_path / "x.shards" / "rank-00000.json").write_text("[]")
    with pytest.raises(ResultFileError, match="none of the 1 shard files could be read"):
        read_shards(tmp_path / "x.shards")


def test_merge_command_writes_the_run_file(tmp_path, capsys):
    folder = write_shards(tmp_path / "job.shards", [shard(0, [record(0), record(1)]), shard(1, [record(0)], status="running")])
    assert main(["merge", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(tmp_path / "job.json")
    assert out[1].startswith("2 of 2 rank shard(s), 2 case(s), aborted: rank 1 ended while running case matmul(m=1")
    doc = results.read_run(tmp_path / "job.json")
    assert doc["ranks"][1]["shard"] == "job.shards/rank-00001.json"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # written atomically
    assert summary(doc) == out[1]


@pytest.mark.parametrize(
    "name, message", [("plain", "not a folder of shards"), ("empty.shards", "no shard"), ("absent.shards", "no such folder")]
)
def test_merge_command_refuses_what_is_not_a_shards_folder(tmp_path, capsys, name, message):
    if name != "absent.shards":
        (tmp_path / name).mkdir()
    assert main(["merge", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_merge_command_never_imports_torch(tmp_path):
    from tests.test_reading_side import HEAVY, _loaded

    folder = write_shards(tmp_path / "job.shards", [shard(0, [record(0)]), shard(1, [record(0)])])
    code, loaded = _loaded("merge", str(folder))
    assert code == 0 and loaded == "", f"`wattbench merge` imported {loaded} (of {HEAVY})"


# --- reports ---------------------------------------------------------------------------------


def _merged(tmp_path, shards, name="job.json"):
    path = tmp_path / name
    path.write_text(json.dumps(merge_shards(shards)))
    return path


def test_hardware_labels_of_jobs():
    h100 = "NVIDIA H100 80GB HBM3"
    assert hardware_label(h100, "560.35", ranks=2) == f"2x {h100} (driver 560.35)"  # no power limit: an operating point
    assert hardware_label(h100, None, ranks=16, nodes=2) == f"2 nodes x 8x {h100}"
    assert hardware_label(h100, None, ranks=1) == h100
    assert hardware_label("Test CPU", None, ranks=2, kind="cpu") == "2 ranks on Test CPU"
    assert hardware_label("A", None, ranks=2, names={"A": 1, "B": 1}) == "1x A + 1x B"


def test_report_labels_a_job_as_hardware_of_its_own(tmp_path):
    one = _merged(tmp_path, [gpu_shard(0, [record(0)], "a", "GPU-a", world=1)], "one.json")
    two = _merged(tmp_path, [gpu_shard(0, [record(0)], "a", "GPU-a"), gpu_shard(1, [record(0)], "a", "GPU-b")], "two.json")
    df = load([one, two])
    assert list(df["hardware"]) == ["NVIDIA H100 80GB HBM3 (driver 560.35)", "2x NVIDIA H100 80GB HBM3 (driver 560.35)"]
    assert list(df["ranks"]) == [1, 2] and list(df["backend"]) == ["nccl", "nccl"]
    text = render_to_text(df, width=200)
    assert "2x NVIDIA H100 80GB HBM3" in text


def test_a_one_rank_job_compares_with_a_plain_run(tmp_path, capsys):
    from tests.test_compare import _doc

    job = _merged(tmp_path, [gpu_shard(0, [record(0, raw=(1e-3, 1.01e-3, 0.99e-3) * 3)], "a", "GPU-a", world=1)], "job.json")
    plain_case = {k: v for k, v in record(0, raw=(1e-3, 1.01e-3, 0.99e-3) * 3, device="cuda:0").items() if k != "index"}
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(_doc([plain_case], "NVIDIA H100 80GB HBM3", "cuda:0", workloads=WORKLOADS)))
    assert load([plain])["hardware"].iloc[0].startswith("NVIDIA H100 80GB HBM3")
    assert main(["compare", str(plain), str(job)]) == 0
    assert "1 unchanged" in capsys.readouterr().err


def test_a_two_rank_job_is_not_compared_with_one_gpu_unless_allowed(tmp_path, capsys):
    from tests.test_compare import _doc

    raw = (1e-3, 1.01e-3, 0.99e-3) * 3
    job = _merged(tmp_path, [gpu_shard(r, [record(0, raw=raw)], "a", f"GPU-{r}", world=2) for r in (0, 1)], "job.json")
    plain_case = {k: v for k, v in record(0, raw=raw, device="cuda:0").items() if k != "index"}
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(_doc([plain_case], "NVIDIA H100 80GB HBM3", "cuda:0", workloads=WORKLOADS)))
    assert main(["compare", str(plain), str(job)]) == 2
    assert "2 ranks of NVIDIA H100 80GB HBM3" in capsys.readouterr().err


def test_run_table_says_once_how_the_job_ran(tmp_path):
    path = _merged(tmp_path, [shard(0, [record(0)]), shard(1, [record(0)])])
    text = render_to_text(load([path]), width=200)
    assert "node1 | cpu Test CPU | 2026-11-24T10:00:00.000Z | complete | 2 ranks on 1 node (gloo)" in text
    assert text.count("2 ranks on 1 node") == 1
    assert "2 TFLOP/s" in text and "100.0 W" in text


def test_an_aborted_jobs_table_names_the_failed_rank(tmp_path):
    path = _merged(tmp_path, [shard(0, [record(0)])])
    text = render_to_text(load([path]), width=200)
    assert "aborted: rank 1: no shard" in text


def _table(text):
    """The first rich table in `text`: its header cells and its rows' cells."""
    header = next(line for line in text.splitlines() if "┃" in line)
    rows = [line for line in text.splitlines() if "│" in line]
    return [c.strip() for c in header.split("┃")[1:-1]], [[c.strip() for c in line.split("│")[1:-1]] for line in rows]


def test_per_rank_table(tmp_path):
    path = _merged(
        tmp_path,
        [
            shard(0, [record(0, raw=(1.0,) * 3), record(1, raw=(1.0,) * 3)]),
            shard(1, [record(0, raw=(2.0,) * 3, watts=90.0), record(1, status="failed", error="boom", raw=())]),
        ],
    )
    df = load([path])
    assert [e["rank"] for e in df.iloc[0]["per_rank"]] == [0, 1]
    text = render_to_text(df, width=200, options=ReportOptions(per_rank=True))
    head, _, per_rank = text.partition("per rank: node1 | 2026-11-24T10:00:00.000Z | 2 ranks on 1 node (gloo)")
    assert per_rank, text
    header, rows = _table(per_rank)
    assert header[:4] == ["Params", "Rank", "Host", "Device"] and "Status" in header
    by = {name: [r[header.index(name)] for r in rows] for name in header}
    assert by["Params"] == ["m=0", "", "m=1", ""] and by["Rank"] == ["0", "1", "0", "1"]
    assert by["Throughput"][:2] == ["1 GFLOP/s", "500 MFLOP/s"] and by["Power"][:2] == ["100.0 W", "90.0 W"]
    assert by["Status"] == ["ok", "ok", "ok", "failed: boom"]
    assert "rank 1: boom" in head  # the job's table names the rank


def test_per_rank_says_once_when_there_is_nothing_per_rank(tmp_path):
    from tests.test_compare import _case, _doc

    path = tmp_path / "plain.json"
    path.write_text(json.dumps(_doc([_case(1, [1e-3] * 3)])))
    text = render_to_text(load([path]), options=ReportOptions(per_rank=True))
    assert text.count(NOTHING_PER_RANK) == 1


def _collective(index, rank, op, size, world, seconds, factor):
    """Rank `rank`'s record of a collective: its share of the buffer and of the bus bytes."""
    share = size / world
    return dict(
        record(index, raw=(seconds,) * 3, work=share),
        id=f"collective(op={op},size={size})@cpu",
        workload="collective",
        params={"op": op, "size": size, "dtype": "float32"},
        work_unit="byte",
        work_terms={"byte": share, "bus_byte": share * factor},
    )


def test_collective_table_shows_algbw_and_busbw_as_nccl_tests(tmp_path):
    n = 2
    factors = {"all_reduce": 2 * (n - 1) / n, "all_gather": (n - 1) / n, "broadcast": 1.0}

    def cases(rank):
        return [_collective(i, rank, op, 1 << 20, n, 50e-6, f) for i, (op, f) in enumerate(factors.items())]

    path = _merged(tmp_path, [shard(0, cases(0)), shard(1, cases(1))])
    df = load([path])
    assert df.iloc[0]["work_per_iter"] == 1 << 20 and df.iloc[0]["throughput"] == pytest.approx((1 << 20) / 50e-6)
    buffer = io.StringIO()
    render(df, Console(file=buffer, width=200, color_system=None))
    text = buffer.getvalue()
    header, rows = _table(text)
    assert header[:5] == ["Size", "Op", "Time/iter (us)", "Algbw (GB/s)", "Busbw (GB/s)"], header
    algbw = (1 << 20) / 50e-6 / 1e9
    for row, (op, factor) in zip(rows, factors.items(), strict=True):
        assert row[:3] == ["1MiB", op, "50.0"]
        assert row[3] == f"{algbw:.2f}" and row[4] == f"{algbw * factor:.2f}"  # busbw = algbw x the op's factor
    assert "collective fp32 on cpu" not in text and "collective fp32" in text  # size and op have columns of their own


def test_collective_in_the_hardware_report_shows_busbw(tmp_path):
    cases = lambda rank: [_collective(0, rank, "all_reduce", 1 << 20, 2, 50e-6, 1.0)]  # noqa: E731
    a = _merged(tmp_path, [shard(0, cases(0)), shard(1, cases(1))], "a.json")
    b = _merged(tmp_path, [shard(0, cases(0), host="other"), shard(1, cases(1), host="other")], "b.json")
    text = render_to_text(load([a, b]), width=200)
    assert "algbw 20.97 GB/s" in text and "busbw 20.97 GB/s" in text


def test_other_workloads_tables_are_unchanged_by_collectives(tmp_path):
    from tests.test_compare import _case, _doc

    path = tmp_path / "plain.json"
    path.write_text(json.dumps(_doc([_case(1, [1e-3] * 3)])))
    text = render_to_text(load([path]), width=200)
    assert "Throughput" in text and "Algbw" not in text and "Busbw" not in text and "ranks on" not in text


def test_ctrl_c_before_every_rank_wrote_its_case_is_interrupted_not_failed():
    """The user's Ctrl-C reached rank 1 after it wrote case 0 and rank 0 before: the case is
    interrupted, naming who finished it, and no rank is blamed (this read 'failed: rank 0: no
    result' before)."""
    doc = merge_shards([shard(0, [], status="interrupted"), shard(1, [record(0)], status="interrupted")])
    assert doc["run"]["status"] == "interrupted" and doc["run"]["failed_rank"] is None
    (case,) = doc["cases"]
    assert case["status"] == "interrupted"
    assert case["error"] == "interrupted by the user before rank 0 finished it; rank 1 finished it"
    assert case["throughput"] is None  # one rank's figures are not the job's


def test_the_case_in_flight_on_every_rank_is_interrupted():
    stopped = dict(record(1, raw=()), status="interrupted", error="interrupted by the user")
    doc = merge_shards(
        [shard(0, [record(0), stopped], status="interrupted"), shard(1, [record(0), dict(stopped)], status="interrupted")]
    )
    assert [(c["status"], c["error"]) for c in doc["cases"]] == [
        ("ok", None),
        ("interrupted", "interrupted by the user before ranks 0, 1 finished it"),
    ]


def test_a_dead_peer_fails_its_case_and_the_others_part_is_interrupted():
    """Rank 1 was killed during case 1: case 1 fails naming rank 1; a case rank 0 alone never
    finished because the job ended is interrupted, not a failure of rank 0."""
    killed = {"rank": 1, "kind": "stopped", "why": "rank 1 stopped responding", "case": None}
    cut = dict(record(1, raw=()), status="interrupted", error="the job ended: rank 1 failed")
    doc = merge_shards([shard(0, [record(0), cut], status="aborted", failure=killed), shard(1, [record(0)], status="running")])
    assert doc["run"]["status"] == "aborted" and doc["run"]["failed_rank"]["rank"] == 1
    assert doc["cases"][0]["status"] == "ok"
    assert doc["cases"][1]["status"] == "failed" and doc["cases"][1]["error"] == f"rank 1: {NO_RESULT}"
    # a case only the failed rank lacks fails; one only a bystander lacks is interrupted
    late = merge_shards(
        [shard(0, [record(0)], status="aborted", failure=killed), shard(1, [record(0), record(1)], status="aborted")]
    )
    assert (late["cases"][1]["status"], late["cases"][1]["error"]) == (
        "interrupted",
        "interrupted: the job ended when rank 1 failed before rank 0 finished it; rank 1 finished it",
    )


def test_a_rank_that_raised_in_a_case_fails_it_on_its_own_record():
    raised = {"rank": 0, "kind": "raised", "why": "rank 0 raised RuntimeError: boom while running case 1", "case": None}
    own = dict(record(1, raw=()), status="failed", error=raised["why"])
    cut = dict(record(1, raw=()), status="interrupted", error="the job ended: rank 0 failed")
    doc = merge_shards(
        [
            shard(0, [record(0), own], status="aborted", failure=raised),
            shard(1, [record(0), cut], status="aborted", failure=raised),
        ]
    )
    assert doc["cases"][1]["status"] == "failed"
    assert doc["cases"][1]["error"] == "rank 0 raised RuntimeError: boom while running case 1"


def test_a_job_keeps_every_nodes_bmc_reader_on_record(tmp_path):
    described = {"url": "redfish://bmc-a", "source": "redfish_energy", "gpus_on_node": 8, "gpus_per_case": 1}
    a = gpu_shard(0, [record(0, watts=300.0)], "a", "GPU-a", nodes=2)
    b = gpu_shard(1, [record(0, watts=350.0)], "b", "GPU-b", nodes=2)
    a["run"]["node_power"] = described
    b["run"]["node_power"] = {**described, "url": "redfish://bmc-b"}
    doc = merge_shards([a, b])
    node_power = doc["run"]["node_power"]
    assert node_power["url"] == "redfish://bmc-a" and node_power["gpus_on_node"] == 8  # the first node's, as one node's run
    assert {host: d["url"] for host, d in node_power["nodes"].items()} == {"a": "redfish://bmc-a", "b": "redfish://bmc-b"}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(doc))
    assert load([path])["node_idle_gpus"].tolist() == [14]  # 8 - 1 on each of the two nodes
    del b["run"]["node_power"]
    assert merge_shards([a, b])["run"]["node_power"] == described  # one node read: as it is
    del a["run"]["node_power"]
    assert "node_power" not in merge_shards([a, b])["run"]
