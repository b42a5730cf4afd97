"""CellShard: live counts of the cells placed on it, a view rebuilt from the user shards."""

from collections.abc import Coroutine
from typing import Any

import ray

from actors.view_shard import ViewShard
from clients.refs import ACTOR_OPTIONS
from clients.users import UserShards
from engine.geo import BBox
from engine.privacy import floored_part, floored_top, within
from engine.topn import area_counts, shard_top
from observability import telemetry
from observability.telemetry import rss_bytes
from state.topology import Topology


@ray.remote(**ACTOR_OPTIONS)
class CellShard(ViewShard):
    """Applies membership updates from user shards; answers top-N and heatmap parts.

    Holds no durable state: after a restart it asks every user shard for the devices present
    in its cells. Updates that arrive meanwhile are ordered by seq, so none is counted twice.
    """

    def __init__(self, name: str, topology: Topology):
        self._view(name, topology)
        self.spec = topology.engine_spec()
        self._observe()
        self._rebuild_if_restarted()

    def _observe(self) -> None:
        from opentelemetry.metrics import Observation

        m = telemetry.meter(self.name, self.topology.redis_url)
        labels = {"shard": self.name}
        m.create_observable_gauge(
            "occupancy_shard_devices",
            callbacks=[lambda _: [Observation(sum(self.members.counts().values()), labels)]],
            description="Devices a shard holds",  # summed in C: safe beside the actor's thread
        )
        m.create_observable_gauge(
            "occupancy_shard_cells",
            callbacks=[lambda _: [Observation(len(self.members.counts()), labels)]],
            description="Occupied cells a cell shard holds",
        )

    def _listings(self, users: UserShards) -> Coroutine[Any, Any, list[list]]:
        return users.cell_listings(self.name)  # not async: that would make the actor async

    def top(self, n: int, res: int, bbox: tuple | None) -> list[tuple[int, int]]:
        whole = res >= self.spec.placement_res
        return shard_top(self.members.counts(), n, res, BBox.from_tuple(bbox), whole)

    def heatmap(self, res: int, bbox: tuple | None) -> dict[int, int]:
        return area_counts(self.members.counts(), res, BBox.from_tuple(bbox))

    def count(self, cell: int) -> int:
        return self.members.count(cell)

    # Under the privacy floor `k` (engine/privacy.py). A cell at the placement resolution or
    # finer lives on one shard, which computes its released count; a coarser one is lifted
    # from the shards' pairs at the placement resolution by the caller.

    def floored(self, res: int, bbox: tuple | None, k: int, cell: int | None = None) -> dict:
        """Pairs (true, released) at max(res, placement) under the cells at `res` in `bbox`
        (or under the one `cell`)."""
        level = max(res, self.spec.placement_res)
        keep = within(BBox.from_tuple(bbox), cell)
        return floored_part(self.members.counts(), self.spec.res, res, level, k, keep)

    def floored_top(self, n: int, res: int, bbox: tuple | None, k: int) -> list:
        """The shard's top `n` by released count (res at or finer than the placement)."""
        return floored_top(
            self.members.counts(), n, self.spec.res, res, k, within(BBox.from_tuple(bbox))
        )

    def stats(self) -> dict:
        return {
            "shard": self.name,
            "devices": len(self.members),
            "cells": len(self.members.counts()),
            "tombstones": self.members.tombstones,
            "rss_bytes": rss_bytes(),
        }
