"""Test subprocesses only (PYTHONPATH=tests/fake_site:<repo>): make the process's admin rights the
simulated NVML's.

`bench.device.nvidia.permissions.may_change_settings` decides from the effective uid and CapEff;
a test cannot change those for a subprocess, and may run as root or not. When
WATTBENCH_FAKE_NVML_STATE names a state file, this replaces `effective_uid` and
`effective_capabilities` in bench.device.nvidia.permissions, as it is imported, by the file's
"privileged" flag (read at each call; absent: not privileged), so the up-front check and the
fake's setters agree. Without the variable it does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
from typing import Any

_ENV = "WATTBENCH_FAKE_NVML_STATE"
_TARGET = "bench.device.nvidia.permissions"


def _privileged() -> bool:
    try:
        with open(os.environ[_ENV], encoding="utf-8") as f:
            return bool(json.load(f).get("privileged", False))
    except (KeyError, OSError, ValueError):
        return False


def _patch(module: Any) -> None:
    module.effective_uid = lambda: 0 if _privileged() else 65534
    module.effective_capabilities = lambda: None if _privileged() else 0


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != _TARGET:
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
            _patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if os.environ.get(_ENV):
    if _TARGET in sys.modules:
        _patch(sys.modules[_TARGET])
    else:
        sys.meta_path.insert(0, _PatchOnImport())
