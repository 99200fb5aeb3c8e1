"""The results store (bench/store): ingesting the same files twice changes nothing, a damaged file
is skipped with one warning line and the rest ingested, a run still running is refused, a more
complete version of a run replaces the older one (and a less complete one does not), one writer
at a time, compaction, and the rows of a single run and of a merged job."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.store.rows import COLUMNS
from bench.store.store import Store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "results" / "examples"
JOB = next(EXAMPLES.glob("*e3005acd.json"))  # a merged 2-rank job


def _fingerprint(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(store.rglob("*")) if p.is_file()
    }


def test_ingesting_the_same_files_twice_changes_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["ingest", str(EXAMPLES), "--store", str(store)]) == 0
    assert "5 run(s) added" in capsys.readouterr().out
    before = _fingerprint(store)
    assert main(["ingest", str(EXAMPLES), "--store", str(store)]) == 0
    assert "0 run(s) added, 0 replaced by a more complete version, 5 unchanged; 0 rows written" in capsys.readouterr().out
    assert _fingerprint(store) == before


def test_a_damaged_file_is_one_warning_line_and_the_rest_go_in(tmp_path, capsys):
    files = tmp_path / "files"
    files.mkdir()
    for path in EXAMPLES.glob("*.json"):
        (files / path.name).write_bytes(path.read_bytes())
    (files / "damaged.json").write_text('{"schema": "wattbench.run/1", "run": {')
    running = json.loads(next(EXAMPLES.glob("*ceb58970.json")).read_text())
    running["run"]["id"], running["run"]["status"] = "0" * 32, "running"
    (files / "running.json").write_text(json.dumps(running))
    assert main(["ingest", str(files), "--store", str(tmp_path / "store")]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("wattbench: warning: skipped ") for w in warnings)
    assert any("damaged.json: damaged result file: not JSON" in w for w in warnings)
    assert any("running.json: still running" in w for w in warnings)
    assert "5 run(s) added" in captured.out and "2 file(s) skipped" in captured.out
    assert main(["ingest", str(files), "--store", str(tmp_path / "store2"), "--strict"]) == 2


def test_a_more_complete_version_of_a_run_replaces_the_older_one(tmp_path, capsys):
    doc = json.loads(next(EXAMPLES.glob("*f42d899f.json")).read_text())
    partial = json.loads(json.dumps(doc))
    partial["run"]["status"] = "interrupted"
    for case in partial["cases"][5:]:
        case["status"], case["throughput"] = "interrupted", None
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    (tmp_path / "whole.json").write_text(json.dumps(doc))
    store = tmp_path / "store"
    assert main(["ingest", str(tmp_path / "partial.json"), "--store", str(store)]) == 0
    assert main(["ingest", str(tmp_path / "whole.json"), "--store", str(store)]) == 0
    assert "1 replaced by a more complete version" in capsys.readouterr().out
    rows = Store.open(store).read(["run_id", "status", "file"])
    assert (
        len(rows) == len(doc["cases"]) and set(rows["status"]) == {"ok"} and set(rows["file"]) == {str(tmp_path / "whole.json")}
    )
    assert len(Store.open(store).parts()) == 1  # the older version's part is gone
    assert main(["ingest", str(tmp_path / "partial.json"), "--store", str(store)]) == 0
    assert "1 kept (the stored version is as complete)" in capsys.readouterr().out


def test_a_merged_job_gives_a_row_per_case_and_rank(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    store.ingest([JOB], lambda line: None)
    rows = store.read()
    assert list(rows.columns) == list(COLUMNS)
    job = json.loads(JOB.read_text())
    assert len(rows) == sum(len(r["cases"]) for r in job["ranks"]) == 2 * len(job["cases"])
    assert sorted(set(rows["rank"])) == [0, 1] and set(rows["slot"]) == {0, 1} and set(rows["host"]) == {"vm"}
    first = rows[(rows["case_index"] == 0) & (rows["rank"] == 1)].iloc[0]
    assert first["throughput"] == pytest.approx(job["ranks"][1]["cases"][0]["throughput"])
    assert str(first["started_at"]).startswith("2026-11-30 05:51:00")


def test_one_writer_at_a_time(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    said: list[str] = []
    with store.writing(lambda line: None):
        other = threading.Thread(target=lambda: store.ingest([JOB], said.append))
        other.start()
        time.sleep(0.3)
        assert other.is_alive() and said and said[0].startswith("waiting for the store's lock (held by pid ")
    other.join(timeout=30)
    assert not other.is_alive() and len(store.index()) == 1


def test_compaction_rewrites_many_parts_into_one(tmp_path, capsys):
    store = tmp_path / "store"
    for path in sorted(EXAMPLES.glob("*.json")):
        assert main(["ingest", str(path), "--store", str(store)]) == 0
    assert len(Store.open(store).parts()) == 5
    rows = Store.open(store).read()
    assert main(["ingest", "--store", str(store), "--compact"]) == 0
    assert "compacted 5 part file(s) into 1" in capsys.readouterr().out
    after = Store.open(store).read()
    assert len(Store.open(store).parts()) == 1 and len(after) == len(rows) == 51
    assert sorted(after["case_id"]) == sorted(rows["case_id"])


def test_not_a_store_and_not_an_empty_folder_are_one_line(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert main(["ingest", str(JOB), "--store", str(tmp_path / "busy")]) == 2
    assert "is not an empty folder or a results store" in capsys.readouterr().err


def test_compare_takes_run_selectors_on_a_store(tmp_path, capsys):
    """STORE:run=ID picks a stored run; compare reads its result file (the raw repeat times the
    store leaves there). A selector that picks nothing, or a bad one, is one line."""
    store = tmp_path / "store"
    assert main(["ingest", str(EXAMPLES), "--store", str(store)]) == 0
    capsys.readouterr()
    run = json.loads(next(EXAMPLES.glob("*f42d899f.json")).read_text())["run"]["id"]
    assert main(["compare", f"{store}:run={run[:8]}", f"{store}:run={run[:8]};host=vm"]) == 0
    assert "no significant regression" in capsys.readouterr().err
    assert main(["compare", f"{store}:run=ffff", str(EXAMPLES)]) == 2
    assert "selects no run of the store" in capsys.readouterr().err
    assert main(["compare", f"{store}:colour=blue", str(EXAMPLES)]) == 2
    assert "valid: STORE:run=ID" in capsys.readouterr().err


def test_a_damaged_store_and_a_store_among_results_are_handled(tmp_path, capsys):
    """A store's own files are not runs (a store inside results/ is passed over); a damaged index
    is one line, exit 2, no traceback."""
    results = tmp_path / "results"
    results.mkdir()
    (results / JOB.name).write_bytes(JOB.read_bytes())
    assert main(["ingest", str(results), "--store", str(results / "store")]) == 0
    assert main(["ingest", str(results), "--store", str(tmp_path / "other"), "--strict"]) == 0
    assert main(["report", str(results)]) == 0
    capsys.readouterr()
    (results / "store" / "index.json").write_text("{not json")
    assert main(["fleet", str(results / "store")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "JSONDecodeError" in err and "Traceback" not in err


def test_compaction_never_splits_a_run_over_parts(tmp_path, monkeypatch):
    """Parts of at most 10 rows: a run of 24 rows stays whole in one part, and no row is lost."""
    from bench.store import store as store_module

    monkeypatch.setattr(store_module, "PART_ROWS", 10)
    store = Store.open(tmp_path / "store", create=True)
    for path in sorted(EXAMPLES.glob("*.json")):
        store.ingest([path], lambda line: None)
    before = store.read(["run_id", "case_index", "rank"])
    store.compact(lambda line: None)
    after = store.read(["run_id", "case_index", "rank"])
    assert len(after) == len(before) == 51 and len(store.parts()) >= 3
    assert sorted(map(tuple, after.astype(str).to_numpy())) == sorted(map(tuple, before.astype(str).to_numpy()))
