"""No import cycle between first-party modules: `python -m tools.check_imports`.

Reads every module under bench/ and workloads/ with `ast` (nothing is imported, so this runs
without torch), builds the graph "module A imports first-party module B", and prints each
elementary cycle as one line, `a -> b -> a`, exiting 1; with no cycle it prints one summary line
(modules, edges) and exits 0.

Which imports count: every `import` and `from ... import` statement anywhere in a module: at its
top, inside functions and methods, and under `if TYPE_CHECKING:`. A cycle closed by an import
deferred into a function still works at run time, but it is still a cycle in the design: the two
modules cannot be understood, tested or moved apart, and the deferral is a workaround for it.
An annotation-only import is the same dependency, seen by the type checker instead of the
interpreter.

How an import is resolved to a module:
- `import bench.measure.runner` -> bench.measure.runner (not also its parent packages: every
  module would then depend on each package `__init__` above it, which says nothing about design).
- `from bench.measure import runtime` -> bench.measure.runtime when that submodule exists (it is a
  module import), otherwise bench.measure (a name the package defines or re-exports).
- `from bench.record import Case` -> bench.record; `from X import *` -> X.
- Relative imports are resolved against the importing module's package (`from . import x` in
  bench/measure/runner.py is bench.measure.x or bench.measure).
- A name with no module file of its own resolves to its longest prefix that has one; imports of
  anything outside the checked packages (the standard library, torch) are not edges, nor is a
  module's import of itself.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.sources import PACKAGES, REPO_ROOT, Source, find_sources

MAX_CYCLES = 200  # printed per strongly connected component; more means a tangle, not a cycle


@dataclass
class Graph:
    """First-party modules and their imports; `where[(a, b)]` holds the `path:line` of each
    statement by which a imports b (for `--where`)."""

    modules: set[str] = field(default_factory=set)
    edges: dict[str, set[str]] = field(default_factory=dict)
    where: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, source: str, target: str, location: str) -> None:
        if source == target:
            return
        self.edges.setdefault(source, set()).add(target)
        locations = self.where.setdefault((source, target), [])
        if location not in locations:  # `from m import a, b` is one statement
            locations.append(location)

    @property
    def edge_count(self) -> int:
        return sum(len(targets) for targets in self.edges.values())


def resolve(name: str, modules: set[str]) -> str | None:
    """The first-party module that dotted `name` stands for: itself, or its longest prefix that
    is a module; None when no prefix is first-party."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imported_modules(node: ast.Import | ast.ImportFrom, source: Source, modules: set[str]) -> list[str]:
    """The first-party modules one import statement in `source` imports (see the module
    docstring for the rules)."""
    if isinstance(node, ast.Import):
        return [m for alias in node.names if (m := resolve(alias.name, modules)) is not None]
    if node.level:
        package = source.module.split(".") if source.is_package else source.module.split(".")[:-1]
        up = node.level - 1
        if up >= len(package):
            return []  # beyond the top-level package: an error at run time, no edge here
        base = package[: len(package) - up]
        if node.module:
            base = base + node.module.split(".")
        origin = ".".join(base)
    else:
        origin = node.module or ""
    found: list[str] = []
    for alias in node.names:
        submodule = f"{origin}.{alias.name}" if origin else alias.name
        if alias.name != "*" and submodule in modules:
            found.append(submodule)
        elif (m := resolve(origin, modules)) is not None:
            found.append(m)
    return found


def build_graph(root: Path, packages: Sequence[str] = PACKAGES) -> Graph:
    """The import graph of every module under `packages` in `root`."""
    sources = find_sources(root, packages)
    graph = Graph(modules={s.module for s in sources})
    for source in sources:
        for node in ast.walk(source.parse(root)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in imported_modules(node, source, graph.modules):
                    graph.add(source.module, target, f"{source.path.as_posix()}:{node.lineno}")
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """The components of more than one module (Tarjan's algorithm, iterative), each sorted,
    in sorted order: every cycle lies inside one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph.modules):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(iter(children), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def cycles(graph: Graph, limit: int = MAX_CYCLES) -> list[list[str]]:
    """Every elementary cycle, each starting at its smallest module and closed by repeating it
    (`[a, b, a]`), shortest first; at most `limit` per component."""
    found: list[list[str]] = []
    for component in strongly_connected(graph):
        members = set(component)
        mine: list[list[str]] = []
        for start in component:  # a cycle is found once: from its smallest member
            allowed = {m for m in members if m > start}
            path = [start]
            work: list[Iterator[str]] = [iter(sorted(graph.edges.get(start, set()) & (allowed | {start})))]
            while work and len(mine) < limit:
                step = next(iter(work[-1]), None)
                if step is None:
                    work.pop()
                    path.pop()
                elif step == start:
                    mine.append([*path, start])
                elif step not in path:
                    path.append(step)
                    work.append(iter(sorted(graph.edges.get(step, set()) & (allowed | {start}))))
        found.extend(sorted(mine, key=lambda c: (len(c), c)))
    return found


def main(argv: Sequence[str] | None = None, root: Path = REPO_ROOT, packages: Sequence[str] = PACKAGES) -> int:
    """Print the cycles (exit 1) or a summary (exit 0). `root` holds the `packages` folders."""
    parser = argparse.ArgumentParser(prog="python -m tools.check_imports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=root, help="folder holding the packages (default: this checkout)")
    parser.add_argument("--where", action="store_true", help="under each cycle, the file:line of each of its imports")
    args = parser.parse_args(argv)
    graph = build_graph(args.root, packages)
    found = cycles(graph)
    for cycle in found:
        print(" -> ".join(cycle))
        if args.where:
            for a, b in zip(cycle, cycle[1:], strict=False):
                print(f"    {a} -> {b}: {', '.join(graph.where[(a, b)])}")
    if found:
        print(f"check_imports: {len(found)} import cycle(s) among {len(graph.modules)} modules", file=sys.stderr)
        return 1
    print(f"check_imports: no import cycle ({len(graph.modules)} modules, {graph.edge_count} first-party imports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
