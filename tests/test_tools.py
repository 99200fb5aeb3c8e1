"""The structure checks of `make lint` (tools/check_imports.py, tools/check_functions.py) over a
tiny package built in tmp_path: they find what they exist to find, and pass a clean tree."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tools import check_functions, check_imports


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def run_imports(root: Path, capsys, *args: str) -> tuple[int, list[str]]:
    status = check_imports.main(["--root", str(root), *args], packages=("pkg",))
    return status, capsys.readouterr().out.splitlines()


def test_a_cycle_is_printed_and_fails(tmp_path, capsys):
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import thing\n",
            "pkg/b.py": "import pkg.a\nthing = 1\n",
            "pkg/c.py": "import os\nfrom pkg import a\n",
        },
    )
    assert run_imports(tmp_path, capsys) == (1, ["pkg.a -> pkg.b -> pkg.a"])


def test_a_cycle_through_a_function_or_type_checking_import_counts(tmp_path, capsys):
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg.b import B
            """,
            "pkg/b.py": """\
            class B:
                def go(self):
                    from pkg.c import run
                    return run()
            """,
            "pkg/c.py": "from pkg.a import x\n",
        },
    )
    status, out = run_imports(tmp_path, capsys, "--where")
    assert status == 1
    assert out[0] == "pkg.a -> pkg.b -> pkg.c -> pkg.a"
    assert "    pkg.b -> pkg.c: pkg/b.py:3" in out


def test_relative_and_package_imports_resolve_to_the_submodule(tmp_path, capsys):
    """`from . import runtime` and `from pkg.sub import runtime` import the module runtime,
    not the package: the cycle runs through the submodule, and the package itself is not in it."""
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from .runner import run\n",
            "pkg/sub/runner.py": "from . import runtime\n\ndef run():\n    pass\n",
            "pkg/sub/runtime.py": "from ..sub.runner import run\n",
            "pkg/other.py": "from pkg.sub import run\n",
        },
    )
    assert run_imports(tmp_path, capsys) == (1, ["pkg.sub.runner -> pkg.sub.runtime -> pkg.sub.runner"])
    graph = check_imports.build_graph(tmp_path, ("pkg",))
    assert graph.edges["pkg.other"] == {"pkg.sub"}  # a name the package re-exports
    assert graph.edges["pkg.sub"] == {"pkg.sub.runner"}


def test_every_cycle_of_a_tangle_is_listed_once(tmp_path, capsys):
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.b\nimport pkg.c\n",
            "pkg/b.py": "import pkg.a\nimport pkg.c\n",
            "pkg/c.py": "import pkg.a\n",
        },
    )
    status, out = run_imports(tmp_path, capsys)
    assert status == 1
    assert out == ["pkg.a -> pkg.b -> pkg.a", "pkg.a -> pkg.c -> pkg.a", "pkg.a -> pkg.b -> pkg.c -> pkg.a"]


def test_no_cycle_prints_a_summary(tmp_path, capsys):
    write(
        tmp_path,
        {
            "pkg/__init__.py": "import pkg.a\n",  # a package importing its own module is no cycle
            "pkg/a.py": "import json\nimport pkg.b\nfrom pkg import b as _\n",
            "pkg/b.py": "from . import b\n",  # itself: not an edge
        },
    )
    status, out = run_imports(tmp_path, capsys)
    assert status == 0
    assert out == ["check_imports: no import cycle (3 modules, 2 first-party imports)"]


def run_functions(root: Path, capsys, *args: str) -> tuple[int, list[str]]:
    status = check_functions.main(["--root", str(root), *args], packages=("pkg",))
    return status, capsys.readouterr().out.splitlines()


def body(lines: int) -> str:
    return "".join(f"    x{i} = {i}\n" for i in range(lines))


def test_a_long_function_or_method_is_named_with_file_and_line(tmp_path, capsys):
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/mod.py": (
                "import functools\n\n\n"
                "@functools.cache\n"  # decorators are not counted
                "def just_fits():\n"
                + body(79)
                + "\n\nclass Thing:\n    def method(self):\n"
                + textwrap.indent(body(80), "    ")
                + "\n\nif True:\n    async def hidden():\n"
                + textwrap.indent(body(85), "    ")
            ),
        },
    )
    status, out = run_functions(tmp_path, capsys)
    assert status == 1
    assert out == [
        "pkg/mod.py:172:hidden: 86 lines (limit 80)",
        "pkg/mod.py:88:Thing.method: 81 lines (limit 80)",
    ]


def test_nested_functions_are_measured_on_their_own(tmp_path, capsys):
    write(
        tmp_path,
        {
            "pkg/mod.py": "def outer():\n    def inner():\n" + textwrap.indent(body(90), "    ") + "    return inner\n",
        },
    )
    status, out = run_functions(tmp_path, capsys)
    assert status == 1
    assert out == ["pkg/mod.py:1:outer: 93 lines (limit 80)", "pkg/mod.py:2:outer.inner: 91 lines (limit 80)"]


def test_short_functions_pass_with_a_summary(tmp_path, capsys):
    write(tmp_path, {"pkg/__init__.py": "def a():\n" + body(10), "pkg/b.py": "def b():\n" + body(3)})
    status, out = run_functions(tmp_path, capsys)
    assert status == 0
    assert out == ["check_functions: 2 functions, none over 80 lines; the longest, pkg/__init__.py:1:a, has 11"]
    assert run_functions(tmp_path, capsys, "--max-lines", "5") == (1, ["pkg/__init__.py:1:a: 11 lines (limit 5)"])
