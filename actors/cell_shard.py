"""CellShard: live counts of the cells placed on it, a view rebuilt from the user shards."""

import logging
import time

import ray

from clients.refs import ACTOR_OPTIONS, Shards, rebuild_again_later
from engine.geo import BBox
from engine.membership import PlaceCounts
from engine.privacy import floored_part, floored_top, within
from engine.topn import area_counts, shard_top
from observability import telemetry
from observability.telemetry import rss_bytes
from state.layout import current, layout_of, with_layout
from state.topology import Topology

log = logging.getLogger(__name__)


@ray.remote(**ACTOR_OPTIONS)
class CellShard:
    """Applies membership updates from user shards; answers top-N and heatmap parts.

    Holds no durable state: after a restart it asks every user shard for the devices present
    in its cells. Updates that arrive meanwhile are ordered by seq, so none is counted twice.
    """

    def __init__(self, name: str, topology: Topology):
        self.name = name
        self.topology = current(topology)
        self.placement = self.topology.placement()
        self.spec = topology.engine_spec()
        self.counts = PlaceCounts()
        self._observe()
        context = ray.get_runtime_context()
        if context.was_current_actor_reconstructed:
            self.rebuild()
            rebuild_again_later(context.current_actor)

    def _observe(self) -> None:
        from opentelemetry.metrics import Observation

        m = telemetry.meter(self.name, self.topology.redis_url)
        labels = {"shard": self.name}
        m.create_observable_gauge(
            "occupancy_shard_devices",
            callbacks=[lambda _: [Observation(sum(self.counts.counts().values()), labels)]],
            description="Devices a shard holds",  # summed in C: safe beside the actor's thread
        )
        m.create_observable_gauge(
            "occupancy_shard_cells",
            callbacks=[lambda _: [Observation(len(self.counts.counts()), labels)]],
            description="Occupied cells a cell shard holds",
        )

    def rebuild(self) -> int:
        self.set_layout(layout_of(current(self.topology)))  # restarted mid-rebalance
        shards = Shards(self.topology)
        listings = ray.get([u.cell_listing.remote(self.name) for u in shards.users()])
        self.counts.replace(update for listing in listings for update in listing)
        log.info("%s rebuilt from the user shards: %d devices", self.name, len(self.counts))
        return len(self.counts)

    def set_layout(self, layout: dict) -> None:
        """A rebalance's target layout: listings from the user shards are owned by its ring."""
        if layout["version"] > self.topology.version:
            self.topology = with_layout(self.topology, layout)
            self.placement = self.topology.placement()

    def update(self, updates: list) -> None:
        self.counts.update_many((d, tuple(p), s) for d, p, s in updates)
        self.counts.age(_monotonic_ms())

    def resync(self, user_shard: str, updates: list) -> None:
        owner = self.placement.user_shard
        self.counts.replace_where(
            lambda d: owner(d) == user_shard, ((d, tuple(p), s) for d, p, s in updates)
        )
        self.counts.age(_monotonic_ms())

    def top(self, n: int, res: int, bbox: tuple | None) -> list[tuple[int, int]]:
        whole = res >= self.spec.placement_res
        return shard_top(self.counts.counts(), n, res, BBox.from_tuple(bbox), whole)

    def heatmap(self, res: int, bbox: tuple | None) -> dict[int, int]:
        return area_counts(self.counts.counts(), res, BBox.from_tuple(bbox))

    def count(self, cell: int) -> int:
        return self.counts.count(cell)

    # Under the privacy floor `k` (engine/privacy.py). A cell at the placement resolution or
    # finer lives on one shard, which computes its released count; a coarser one is lifted
    # from the shards' pairs at the placement resolution by the caller.

    def floored(self, res: int, bbox: tuple | None, k: int, cell: int | None = None) -> dict:
        """Pairs (true, released) at max(res, placement) under the cells at `res` in `bbox`
        (or under the one `cell`)."""
        level = max(res, self.spec.placement_res)
        keep = within(BBox.from_tuple(bbox), cell)
        return floored_part(self.counts.counts(), self.spec.res, res, level, k, keep)

    def floored_top(self, n: int, res: int, bbox: tuple | None, k: int) -> list:
        """The shard's top `n` by released count (res at or finer than the placement)."""
        return floored_top(
            self.counts.counts(), n, self.spec.res, res, k, within(BBox.from_tuple(bbox))
        )

    def stats(self) -> dict:
        return {
            "shard": self.name,
            "devices": len(self.counts),
            "cells": len(self.counts.counts()),
            "tombstones": self.counts.tombstones,
            "rss_bytes": rss_bytes(),
        }

    def pid(self) -> int:
        import os

        return os.getpid()


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)
