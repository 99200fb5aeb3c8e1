"""Workload registry and the built-in suites (TOML files beside this module).

Third-party workloads register through the entry-point group `wattbench.workloads`, each entry
naming a `bench.measure.workload.Workload` subclass.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from bench.errors import UsageError
from bench.measure.workload import Workload
from workloads.attention import Attention
from workloads.collective import Collective
from workloads.llm import LLM
from workloads.matmul import MatMul
from workloads.membw import MemoryBandwidth

SUITE_DIR = Path(__file__).parent
BUILTIN: dict[str, type[Workload]] = {w.name: w for w in (MatMul, Attention, MemoryBandwidth, LLM, Collective)}
_registry: dict[str, type[Workload]] | None = None


def registry() -> dict[str, type[Workload]]:
    """Name -> workload class: the built-ins plus entry-point plugins (loaded once)."""
    global _registry
    if _registry is None:
        found = dict(BUILTIN)
        for entry in metadata.entry_points(group="wattbench.workloads"):
            cls = entry.load()
            found[cls.name] = cls
        _registry = found
    return _registry


def get(name: str) -> type[Workload]:
    try:
        return registry()[name]
    except KeyError:
        raise UsageError(f"unknown workload {name!r}; valid: {', '.join(sorted(registry()))}") from None


def builtin_suites() -> dict[str, Path]:
    return {path.stem: path for path in sorted(SUITE_DIR.glob("*.toml"))}
