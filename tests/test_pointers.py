"""Every module a docstring or comment points to exists.

A docstring that still names a module by the path it had before it moved under bench/measure/
sends a reader to nothing. This scans the docstrings (every bare string statement: module,
class, function and attribute docstrings) and `#` comments of bench/, workloads/ and tests/, and
the whole of README.md, for
- dotted references, `bench.<dotted>` / `workloads.<dotted>`: the longest prefix that is a module
  must exist, and what follows it must be a name that module defines (a function, class,
  assignment or import at its top level), then an attribute of that class where the name is a
  class; further parts are not followed;
- paths, `bench/...` / `workloads/...`: the file or folder must exist (`bench/measure/runner`
  may leave out `.py`).
Modules are read with `ast`, never imported (importing the measuring side would load torch).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tools.sources import REPO_ROOT, Source, find_sources

SCANNED = ("bench", "workloads")
DOTTED = re.compile(r"(?<![\w./-])((?:bench|workloads)(?:\.[A-Za-z_]\w*)+)")
PATH = re.compile(r"(?<![\w./-])((?:bench|workloads)/[\w./-]*)")
HINT = re.compile(r"(?:bench|workloads)[./]")
COMMENT_HINT = re.compile(r"#[^\n]*(?:bench|workloads)[./]")
FILE_SUFFIXES = (".py", ".toml", ".json", ".md", ".csv", ".txt")

# References known to be wrong in files under refactoring by another change (issue 18), as
# (file, reference): each is fixed there, and then its entry removed from here. An entry whose
# reference is no longer in its file fails test_pending_pointers_are_still_pending, so the list
# only shrinks.
PENDING: set[tuple[str, str]] = set()


@cache
def sources() -> dict[str, Source]:
    return {s.module: s for s in find_sources(REPO_ROOT, SCANNED)}


def documentation(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of each comment and each line of each bare string statement of a Python
    file; every line of any other file. A file, or its comments, with no reference at all is
    skipped unread (tokenizing every file would make this the slowest test)."""
    text = path.read_text(encoding="utf-8")
    if not HINT.search(text):
        return
    if path.suffix != ".py":
        yield from enumerate(text.splitlines(), 1)
        return
    if COMMENT_HINT.search(text):
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT:
                yield token.start[0], token.string
    for node in _statements(ast.parse(text).body):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for offset, line in enumerate(node.value.value.splitlines()):
                yield node.lineno + offset, line


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, nested ones too (a bare string can only be a statement: no need to
    visit expressions)."""
    for node in body:
        yield node
        for block in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(node, block, None)
            if isinstance(inner, list):
                yield from _statements(inner)


@cache
def defined_names(module: str) -> dict[str, ast.AST]:
    """What a module defines at its top level (under `if`/`try` too): name -> its node."""
    tree = sources()[module].parse(REPO_ROOT)
    return _names(tree.body)


def _names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = node
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for part in getattr(node, block, []):
                    names.update(_names(part.body) if isinstance(part, ast.ExceptHandler) else _names([part]))
    return names


def broken(reference: str) -> str | None:
    """Why a dotted reference or a path points nowhere; None when it points somewhere."""
    if "/" in reference:
        path = reference.rstrip(".")
        if (REPO_ROOT / path).exists() or (REPO_ROOT / f"{path.rstrip('/')}.py").exists():
            return None
        return "no such file or folder"
    parts = reference.split(".")
    if reference.endswith(FILE_SUFFIXES):
        parts = parts[:-1]  # `bench.py`-like: a file name, checked as its module
    modules = sources()
    for end in range(len(parts), 0, -1):
        module = ".".join(parts[:end])
        if module in modules:
            break
    else:
        return "no such module"
    rest = parts[end:]
    if not rest:
        return None
    names = defined_names(module)
    if "__getattr__" in names:
        return None
    node = names.get(rest[0])
    if node is None:
        return f"{module} defines no {rest[0]}"
    if len(rest) > 1 and isinstance(node, ast.ClassDef) and not _has_attribute(node, rest[1], names):
        return f"{module}.{rest[0]} has no attribute {rest[1]}"
    return None


def _has_attribute(cls: ast.ClassDef, name: str, module_names: dict[str, ast.AST]) -> bool:
    """Whether `cls` or a base class defines `name`; a base not defined in the same module
    (imported, or an expression) is taken to define it: it is not followed."""
    if name in _names(cls.body):
        return True
    for base in cls.bases:
        found = module_names.get(base.id) if isinstance(base, ast.Name) else None
        if not isinstance(found, ast.ClassDef) or _has_attribute(found, name, module_names):
            return True
    return False


def scanned_files() -> list[Path]:
    tests = sorted(p for p in (REPO_ROOT / "tests").rglob("*.py") if "__pycache__" not in p.parts)
    return [REPO_ROOT / s.path for s in sources().values()] + tests + [REPO_ROOT / "README.md"]


@cache
def references() -> tuple[tuple[str, int, str], ...]:
    """(file, line, reference) for every module reference in the scanned documentation (read
    once for the tests of this module: parsing every file takes about a second)."""
    return tuple(
        (path.relative_to(REPO_ROOT).as_posix(), line, match.group(1))
        for path in scanned_files()
        for line, text in documentation(path)
        for pattern in (DOTTED, PATH)
        for match in pattern.finditer(text)
    )


def test_every_module_reference_exists():
    wrong = [
        f"{file}:{line}: {reference}: {why}"
        for file, line, reference in references()
        if (file, reference) not in PENDING and (why := broken(reference)) is not None
    ]
    assert not wrong, "docstrings and comments that point nowhere:\n" + "\n".join(wrong)


def test_pending_pointers_are_still_pending():
    """Each PENDING entry is still in its file and still wrong: once fixed, it leaves the list."""
    present = {(file, reference) for file, _, reference in references()}
    fixed = sorted(entry for entry in PENDING if entry not in present or broken(entry[1]) is None)
    assert not fixed, f"fixed: remove from PENDING in {Path(__file__).name}: {fixed}"


@pytest.mark.parametrize(
    ("reference", "wrong"),
    [
        ("bench.measure.timing", False),
        ("bench.measure.timing.TimingConfig", False),
        ("bench.record.RunRecord.from_json", False),
        ("bench.record.CaseRecord.layout", False),  # defined by its base class, Section
        ("bench/measure/timing.py", False),
        ("bench/device/", False),
        ("bench.timing", True),
        ("bench.measure.timing.NoSuchThing", True),
        ("bench.record.CaseRecord.from_json", True),
        ("bench/timing.py", True),
    ],
)
def test_the_checker_tells_a_real_reference_from_a_stale_one(reference, wrong):
    assert (broken(reference) is not None) == wrong
