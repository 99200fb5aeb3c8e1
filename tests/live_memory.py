"""Bytes of live tensor storages while code runs, and their peak: a dispatch mode that looks at
every op's outputs. A storage seen for the first time adds its bytes; a weakref finalizer takes
them off when the storage dies (torch keeps one Python object per storage, so the finalizer
fires when the last tensor or view of it goes). Works on real tensors and on fake ones.

What it counts is what the code holds, not what an allocator reserves: no rounding to blocks, no
cached free blocks, no library workspaces. Storages made before the mode is entered are not
counted (the baseline).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveMemory(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._sizes: dict[int, int] = {}  # id(storage) -> bytes counted for it

    def reset_peak(self) -> None:
        self.peak_bytes = self.live_bytes

    def _gone(self, key: int) -> None:
        self.live_bytes -= self._sizes.pop(key, 0)

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, size = id(storage), storage.nbytes()
        known = self._sizes.get(key)
        if known is None:
            self._sizes[key] = size
            self.live_bytes += size
            weakref.finalize(storage, self._gone, key)
        elif known != size:  # an out= tensor resized
            self._sizes[key] = size
            self.live_bytes += size - known
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Mapping[str, Any] | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        return out
