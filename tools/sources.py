"""The first-party source files the checks read: where they are and their module names."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES: tuple[str, ...] = ("bench", "workloads")


@dataclass(frozen=True)
class Source:
    """One module's file: `module` is its dotted name (`bench.measure.runner`; a package's
    `__init__.py` is the package itself), `path` is relative to the root it was found under."""

    module: str
    path: Path
    is_package: bool

    def parse(self, root: Path) -> ast.Module:
        return ast.parse((root / self.path).read_text(encoding="utf-8"), filename=str(self.path))


def module_name(relative: Path) -> tuple[str, bool]:
    """`bench/measure/runner.py` -> ("bench.measure.runner", False); `bench/__init__.py` ->
    ("bench", True)."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def find_sources(root: Path, packages: Sequence[str] = PACKAGES) -> list[Source]:
    """Every `.py` file under each of `packages` (folders of `root`), sorted by module name.
    Caches (`__pycache__`) and hidden folders are skipped; a package missing from `root` is
    simply absent."""
    found: list[Source] = []
    for package in packages:
        top = root / package
        if not top.is_dir():
            continue
        for path in _walk(top):
            relative = path.relative_to(root)
            name, is_package = module_name(relative)
            found.append(Source(name, relative, is_package))
    return sorted(found, key=lambda s: s.module)


def _walk(folder: Path) -> Iterator[Path]:
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            if entry.name == "__pycache__" or entry.name.startswith("."):
                continue
            yield from _walk(entry)
        elif entry.suffix == ".py":
            yield entry
