"""Test subprocesses only (PYTHONPATH=tests/fake_site:<repo>): make the process's admin rights the
simulated vendor library's.

The vendors decide whether this process may change settings from the effective uid (and, for
NVIDIA, CapEff): bench.device.nvidia.permissions and bench.device.amd.control. A test cannot change
those for a subprocess, and may run as root or not. When WATTBENCH_FAKE_NVML_STATE (or
WATTBENCH_FAKE_AMDSMI_STATE) names a state file, this replaces `effective_uid` (and
`effective_capabilities`) in that module, as it is imported, by the file's "privileged" flag (read
at each call; absent: not privileged), so the up-front check and the fake's setters agree. Without
the variables it does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from typing import Any

# module whose rights are simulated -> the variable naming its simulated library's state file
_TARGETS = {
    "bench.device.nvidia.permissions": "WATTBENCH_FAKE_NVML_STATE",
    "bench.device.amd.control": "WATTBENCH_FAKE_AMDSMI_STATE",
}


def _privileged(variable: str) -> bool:
    try:
        with open(os.environ[variable], encoding="utf-8") as f:
            return bool(json.load(f).get("privileged", False))
    except (KeyError, OSError, ValueError):
        return False


def _patcher(variable: str) -> Callable[[Any], None]:
    def patch(module: Any) -> None:
        module.effective_uid = lambda: 0 if _privileged(variable) else 65534
        if hasattr(module, "effective_capabilities"):
            module.effective_capabilities = lambda: None if _privileged(variable) else 0

    return patch


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def __init__(self, patches: dict[str, Callable[[Any], None]]) -> None:
        self.patches = patches

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        patch = self.patches.get(name)
        if patch is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        real_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            real_exec(module)
            patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_pending = {}
for _target, _variable in _TARGETS.items():
    if os.environ.get(_variable):
        if _target in sys.modules:
            _patcher(_variable)(sys.modules[_target])
        else:
            _pending[_target] = _patcher(_variable)
if _pending:
    sys.meta_path.insert(0, _PatchOnImport(_pending))
