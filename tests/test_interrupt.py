"""Ctrl-C sent to a real `wattbench run` leaves a valid file and exits 130; so does SIGTERM."""

import json
import signal
import subprocess
import sys
import time

import pytest

from bench import results
from bench.report.load import load


def _start(out, *extra):
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "matmul",
        "-p",
        "size=64,65,66,67,68,69",
        "-p",
        "dtype=float32",
        "--device",
        "cpu",
        "--min-time",
        "1.0",
        "--repeats",
        "2",
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_cases(path, count, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"wattbench exited early with {proc.returncode}: {proc.stderr.read()}")
        try:
            if len(json.loads(path.read_text())["cases"]) >= count:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    pytest.fail("no case finished in time")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_valid_file_and_exits_130(tmp_path, sig):
    out = tmp_path / "run.json"
    proc = _start(out)
    _wait_for_cases(out, 1, proc)
    time.sleep(0.3)  # well inside the second case (each lasts > 1 s)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr
    doc = results.read_run(out)  # valid and of our schema
    assert doc["run"]["status"] == "interrupted"
    assert doc["run"]["finished_at"]
    statuses = [c["status"] for c in doc["cases"]]
    assert statuses[0] == "ok"
    assert statuses[-1] == "interrupted"
    assert len(statuses) < 6
    assert "matmul" in stdout  # the report of what was saved is still printed
    assert len(load([out])) == len(statuses)
