"""The reading side starts like a command-line tool: `report`, `compare`, `ingest` and `fleet`
never import torch, the workloads or the measuring side, and the modules of bench/report,
bench/store and bench/cli_fleet.py never name them."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

from tests.test_compare import _doc as run_doc

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEAVY = ("torch", "workloads", "bench.measure", "pynvml")
PROBE = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: sys.stderr.write('LOADED:' + ','.join(m for m in {heavy!r} if m in sys.modules) + '\\n'))\n"
    "sys.argv = ['wattbench', *{args!r}]\n"
    "runpy.run_module('bench', run_name='__main__')\n"
)


def _doc(throughput):
    return run_doc(
        workloads={"membw": {"params": {"op": {"kind": "choice"}, "size": {"kind": "bytes"}}, "shape": []}},
        cases=[
            {
                "id": f"membw(op={op},size=1MiB)@cpu",
                "workload": "membw",
                "params": {"op": op, "size": 1048576},
                "device": "cpu",
                "status": "ok",
                "work_unit": "byte",
                "work_per_iter": 1e6,
                "raw_seconds": [1e6 / throughput * (1 + i / 100) for i in range(5)],
                "seconds_per_iter": {"median": 1e6 / throughput, "cv": 0.01},
                "throughput": {"median": throughput},
                "flags": [],
            }
            for op in ("copy", "triad", "dot", "add")
        ],
    )


def _loaded(*args):
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY, args=list(args))], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("LOADED:")]
    return done.returncode, line.removeprefix("LOADED:")


@pytest.mark.parametrize("command", ["report", "compare"])
def test_report_and_compare_never_import_torch(tmp_path, command):
    for name, throughput in (("a.json", 2e10), ("b.json", 2.01e10)):
        (tmp_path / name).write_text(json.dumps(_doc(throughput)))
    args = [str(tmp_path)] if command == "report" else [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    code, loaded = _loaded(command, *args)
    assert code == 0
    assert loaded == "", f"`wattbench {command}` imported {loaded}"


def test_ingest_and_fleet_never_import_torch(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_doc(2e10)))
    code, loaded = _loaded("ingest", str(tmp_path / "a.json"), "--store", str(tmp_path / "store"))
    assert code == 0 and loaded == "", f"`wattbench ingest` imported {loaded}"
    code, loaded = _loaded("fleet", str(tmp_path / "store"))
    assert code == 0 and loaded == "", f"`wattbench fleet` imported {loaded}"


def test_reading_side_modules_name_no_measuring_module():
    """A static guard beside the run-time one: no module under bench/report or bench/store (nor
    bench/cli_fleet.py) imports torch, the workloads, the measuring side or pynvml, not even
    lazily inside a function."""
    reading = [
        *(ROOT / "bench" / "report").glob("*.py"),
        *(ROOT / "bench" / "store").glob("*.py"),
        ROOT / "bench" / "cli_fleet.py",
    ]
    for path in sorted(reading):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not any(name == h or name.startswith(h + ".") for h in HEAVY), f"{path.name} imports {name}"
