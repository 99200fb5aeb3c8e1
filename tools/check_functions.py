"""No function over 80 lines: `python -m tools.check_functions`.

Reads every module under bench/ and workloads/ with `ast` and measures each function and method
(nested ones too, each on its own) from its `def` line to its last line, `end_lineno - lineno + 1`:
decorators are not counted, its docstring, comments and blank lines inside are. Each one over the
limit is printed as `path:line:qualified.name: N lines (limit 80)` and the exit status is 1; with
none it prints one summary line and exits 0.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tools.sources import PACKAGES, REPO_ROOT, find_sources

MAX_LINES = 80


@dataclass(frozen=True)
class Function:
    """One function or method: where it starts (`path:line`), its qualified name
    (`Class.method`, `outer.inner`) and its length in lines."""

    path: Path
    line: int
    name: str
    lines: int

    def __str__(self) -> str:
        return f"{self.path.as_posix()}:{self.line}:{self.name}"


def functions(tree: ast.AST, path: Path, prefix: str = "") -> Iterator[Function]:
    """Every function and method in `tree`, outermost first, named by where it is defined."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            end = node.end_lineno if node.end_lineno is not None else node.lineno
            yield Function(path, node.lineno, name, end - node.lineno + 1)
            yield from functions(node, path, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, path, f"{prefix}{node.name}.")
        else:  # a def under `if`, `try` or `with` keeps the enclosing name
            yield from functions(node, path, prefix)


def all_functions(root: Path, packages: Sequence[str] = PACKAGES) -> list[Function]:
    """Every function and method of every module under `packages` in `root`."""
    return [f for source in find_sources(root, packages) for f in functions(source.parse(root), source.path)]


def main(
    argv: Sequence[str] | None = None, root: Path = REPO_ROOT, packages: Sequence[str] = PACKAGES, limit: int = MAX_LINES
) -> int:
    """Print the functions over `limit` lines, longest first (exit 1), or a summary (exit 0)."""
    parser = argparse.ArgumentParser(prog="python -m tools.check_functions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=root, help="folder holding the packages (default: this checkout)")
    parser.add_argument("--max-lines", type=int, default=limit, help=f"the limit (default {limit})")
    args = parser.parse_args(argv)
    found = all_functions(args.root, packages)
    over = sorted((f for f in found if f.lines > args.max_lines), key=lambda f: (-f.lines, str(f)))
    for function in over:
        print(f"{function}: {function.lines} lines (limit {args.max_lines})")
    if over:
        print(f"check_functions: {len(over)} of {len(found)} functions over {args.max_lines} lines", file=sys.stderr)
        return 1
    longest = max(found, key=lambda f: f.lines, default=None)
    tail = f"; the longest, {longest}, has {longest.lines}" if longest else ""
    print(f"check_functions: {len(found)} functions, none over {args.max_lines} lines{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
