"""The shards' exchange through the rendezvous store.

Each rank writes its shard to disk after every case (bench.measure.ranks.ShardFile) and publishes
the same text here, under `shard/R`. At a normal end rank 0 gathers the shards through a
collective; when the job ends early no collective may work any more, but the store usually still
does, so rank 0 merges the run file from what the ranks last published.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from bench.measure.groups import KEY, ProcessGroups


class ShardExchange:
    """This rank's latest shard out, every rank's latest shard in, through the store."""

    def __init__(self, groups: ProcessGroups) -> None:
        self.groups = groups
        self.rank, self.world_size = groups.info.rank, groups.info.world_size

    def publish(self, text: str) -> None:
        """This rank's latest shard (its JSON text), so rank 0 can merge it even when no
        collective works."""
        self.groups.store.set(f"{KEY}shard/{self.rank}", text)

    def latest(self) -> list[dict[str, Any]]:
        """The latest shard every rank published (ranks that never published are absent, and so
        is every shard when the store is gone)."""
        found = []
        for rank in range(self.world_size):
            key = f"{KEY}shard/{rank}"
            with contextlib.suppress(Exception):
                store = self.groups.store
                if store.check([key]):
                    found.append(json.loads(store.get(key)))
        return found
