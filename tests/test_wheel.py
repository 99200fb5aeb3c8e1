"""The built wheel works apart from the checkout: what `pip install wattbench` users get.

Editable installs (what `make` uses) import the checkout, which hides a wheel that lacks a package
or a data file (a hand-written package list once left bench.control out: every `run` failed with
ModuleNotFoundError). So: build the wheel from a copy of the tracked sources without isolation
(no network), install it into a fresh virtual environment that borrows only the dependencies from
this one (a .pth file naming its site-packages; .pth files there, such as the editable install's,
are not processed), and run list, info, a tiny run and report from a folder outside the source
tree, after checking that `bench` is imported from the fresh environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "bench", "workloads")


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(the fresh environment's python, an environment for subprocesses, the wheel)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    _run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(root / "dist"), str(source)], root, env, 180
    )
    (wheel,) = (root / "dist").glob("wattbench-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, env)
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)], root, env
    )
    fresh_site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, env).stdout.strip()
    )
    (fresh_site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, env, wheel


def test_the_wheel_holds_every_package_and_the_suites(installed):
    _, _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(REPO)) for p in REPO.glob("bench/**/__init__.py")} | {"workloads"}
    for package in packages:
        assert f"{package}/__init__.py" in names, package
    for suite in (REPO / "workloads").glob("*.toml"):
        assert f"workloads/{suite.name}" in names


def test_the_installed_wheel_lists_runs_and_reports_outside_the_checkout(installed, tmp_path):
    python, env, _ = installed
    where = _run([str(python), "-c", "import bench, workloads; print(bench.__file__); print(workloads.__file__)"], tmp_path, env)
    for path in where.stdout.split():
        assert Path(path).is_relative_to(python.parent.parent), path  # the fresh environment's copy
        assert not Path(path).is_relative_to(REPO)
    wattbench = str(python.parent / "wattbench")
    listed = _run([wattbench, "list"], tmp_path, env).stdout
    assert "matmul" in listed and "llm" in listed and "quick" in listed
    info = json.loads(_run([wattbench, "info", "--json"], tmp_path, env).stdout)
    assert info["devices"][0]["id"] == "cpu"
    out = tmp_path / "tiny.json"
    _run(
        [
            wattbench,
            "run",
            "matmul",
            "-p",
            "size=128",
            "--min-time",
            "0",
            "--repeats",
            "2",
            "--repeat-time",
            "0.01",
            "--no-monitor",
            "--out",
            str(out),
        ],
        tmp_path,
        env,
    )
    doc = json.loads(out.read_text())
    assert doc["run"]["status"] == "complete" and doc["cases"][0]["status"] == "ok"
    report = _run([wattbench, "report", str(out), "--format", "csv"], tmp_path, env).stdout
    assert "matmul" in report
