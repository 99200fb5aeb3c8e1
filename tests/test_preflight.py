"""`make gpu-check` first checks that its python3 can import the dependencies, and names what is
missing in one line (bench/preflight.py). Imports are blocked with None in sys.modules."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

from bench import preflight

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_nothing_missing_here():
    assert preflight.problems() == {}
    assert preflight.message({}) is None


@pytest.mark.parametrize(
    "module, package",
    [("rich", "rich"), ("pandas", "pandas"), ("psutil", "psutil"), ("pytest", "pytest"), ("pynvml", "nvidia-ml-py")],
)
def test_a_blocked_import_is_named_with_its_pip_package(monkeypatch, module, package):
    monkeypatch.setitem(sys.modules, module, None)
    found = preflight.problems()
    assert found == {module: "not installed"}
    line = preflight.message(found)
    assert line is not None and "\n" not in line
    assert f"lacks {module} (pip install {package})" in line and "installs nothing" in line


def test_a_broken_install_says_why(tmp_path, monkeypatch):
    (tmp_path / "brokenmod.py").write_text("raise ImportError('libfoo.so.1: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = preflight.problems({"brokenmod": "brokenmod"})
    assert found == {"brokenmod": "ImportError: libfoo.so.1: cannot open shared object file"}


def test_an_old_python_is_named():
    line = preflight.message({}, version=(3, 10, 12))
    assert line is not None and "Python 3.11+ (this is 3.10.12)" in line


def test_run_as_gpu_check_does_one_line_and_exit_1():
    """As make runs it: a fresh python with rich and pandas blocked."""
    code = (
        "import runpy, sys\nsys.modules['rich'] = None\nsys.modules['pandas'] = None\nsys.argv = ['preflight']\n"
        "runpy.run_module('bench.preflight', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "lacks pandas, rich (pip install pandas rich)" in lines[0]
    assert done.stdout == ""


def test_gpu_check_runs_the_preflight_first():
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^gpu-check:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe is not None
    first = recipe.group(1).splitlines()[0]
    assert "-m bench.preflight" in first and "$(PYTHON)" in first
    assert "pip" not in recipe.group(1)  # it installs nothing
