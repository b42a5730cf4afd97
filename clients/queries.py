"""Live queries over the shard actors: one fan-out per shard family, merged by engine code."""

import asyncio
import time

import redis

from clients.history import NAME as HISTORY
from clients.refs import Shards
from engine.cells import check_res, resolution
from engine.doors import door_count
from engine.geo import BBox
from engine.history import dwell_of
from engine.privacy import floored, merge_floored
from engine.topn import merge_counts, merge_top, ranked
from state import redis_client
from state.layout import current
from state.metadata import Metadata
from state.topology import Topology

LAYOUT_CHECK_S = 1.0


class LiveQueries:
    """Answers from live actor state. Async (for Serve replicas and the ingest loop); the
    `*_sync` forms wrap them for drivers and tests."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.spec = topology.engine_spec()
        self.placement = topology.placement()
        self.shards = Shards(topology)
        self._redis = redis_client.connect(topology.redis_url)
        self._metadata = Metadata(self._redis)
        self._checked = 0.0

    def refresh(self) -> None:
        """Take the committed shard layout if a rebalance changed it."""
        self._checked = time.monotonic()
        t = current(self.topology, self._redis)
        if t is not self.topology:
            self.topology, self.placement = t, t.placement()
            self.shards.topology = t

    def _fresh(self) -> None:
        # at most one Redis read a second: a rebalance shows within a second
        if time.monotonic() - self._checked > LAYOUT_CHECK_S:
            try:
                self.refresh()
            except redis.RedisError:  # no rebalance commits while Redis is down: live
                self._checked = time.monotonic()  # answers go on from the shards' memory

    async def top(self, n: int, res: int, bbox: BBox | None = None) -> list[tuple[int, int]]:
        self._fresh()
        check_res(res, self.spec.res)
        parts = await asyncio.gather(
            *(c.top.remote(n, res, BBox.to_tuple(bbox)) for c in self.shards.cells())
        )
        return merge_top(parts, n)

    async def heatmap(self, res: int, bbox: BBox | None) -> dict[int, int]:
        self._fresh()
        check_res(res, self.spec.res)
        parts = await asyncio.gather(
            *(c.heatmap.remote(res, BBox.to_tuple(bbox)) for c in self.shards.cells())
        )
        return merge_counts(parts)

    async def cell_count(self, cell: int) -> int:
        self._fresh()
        res = check_res(resolution(cell), self.spec.res)
        if res == self.spec.res:
            return await self.shards.handle(self.placement.cell_shard(cell)).count.remote(cell)
        return (await self.heatmap(res, None)).get(cell, 0)

    # Under the privacy floor `k` (engine/privacy.py): released counts, consistent across
    # resolutions and areas. Cells at the placement resolution or finer are computed whole by
    # their shard; coarser ones are lifted here from the shards' pairs at the placement res.

    async def floored_heatmap(self, res: int, bbox: BBox | None, k: int) -> dict[int, int]:
        self._fresh()
        check_res(res, self.spec.res)
        parts = await asyncio.gather(
            *(c.floored.remote(res, BBox.to_tuple(bbox), k) for c in self.shards.cells())
        )
        return merge_floored(parts, max(res, self.spec.placement_res), res, k)

    async def floored_top(
        self, n: int, res: int, bbox: BBox | None, k: int
    ) -> list[tuple[int, int]]:
        """Top-N by released count, ties by cell id: exact, since every released count of the
        area is computed (no more than the exact top costs, see BENCHMARKS.md)."""
        if res < self.spec.placement_res:
            return ranked(await self.floored_heatmap(res, bbox, k), n)
        self._fresh()
        check_res(res, self.spec.res)
        parts = await asyncio.gather(
            *(c.floored_top.remote(n, res, BBox.to_tuple(bbox), k) for c in self.shards.cells())
        )
        return merge_top(parts, n)

    async def floored_cell(self, cell: int, k: int) -> int:
        self._fresh()
        res = check_res(resolution(cell), self.spec.res)
        if res == self.spec.res:
            return floored(await self.cell_count(cell), k)
        level = max(res, self.spec.placement_res)
        if res >= self.spec.placement_res:  # the cell and all under it live on one shard
            shards = [self.shards.handle(self.placement.cell_shard(cell))]
        else:
            shards = self.shards.cells()
        parts = await asyncio.gather(*(c.floored.remote(res, None, k, cell) for c in shards))
        return merge_floored(parts, level, res, k).get(cell, 0)

    async def space_count(self, space: str, at: int | None = None) -> int | None:
        """A door space's count (at `at`, default now) or a polygon space's live count; None
        for an unknown space. A door count before the space shards' horizon (their events
        folded) comes from history's door events."""
        self._fresh()
        spaces = self.shards.spaces()
        if await spaces[0].has_door_space.remote(space):
            parts = await asyncio.gather(*(s.door_partial.remote(space, at) for s in spaces))
            if None in parts:
                return await self.door_count_from_history(space, at)
            return door_count(list(parts))
        shard = self.shards.handle(self.placement.space_shard(space))
        return await shard.polygon_count.remote(space)

    async def space_counts(self, at: int | None = None) -> dict[str, int]:
        """Every space's count: polygon spaces live, door spaces at `at` (default now). One
        call per space shard (and history's for door counts before the horizon)."""
        self._fresh()
        parts = await asyncio.gather(*(s.all_counts.remote(at) for s in self.shards.spaces()))
        counts: dict[str, int] = {}
        partials: dict[str, list[int]] = {}
        beyond = False
        for polygon, doors in parts:
            counts.update(polygon)
            beyond |= doors is None
            for space, partial in (doors or {}).items():
                partials.setdefault(space, []).append(partial)
        if beyond:
            counter = self._metadata.door_counter()
            for space in counter.spaces():
                counts[space] = await self.door_count_from_history(space, at, counter)
        else:
            counts.update({space: door_count(p) for space, p in partials.items()})
        return counts

    async def door_count_from_history(self, space: str, at: int, counter=None) -> int:
        counter = counter or self._metadata.door_counter()
        total = await self.history().door_sum.remote(counter.ranges(space, at))
        return door_count([total])

    def history(self):
        """The history actor (it owns the store)."""
        return self.shards.handle(HISTORY)

    async def dwell(self, key: int, day: int) -> dict:
        """Where the device (its pseudonym, from the id directory) spent `day`: from its user
        shard while live state holds the day, else history's pieces with what the shard still
        owes laid over them."""
        live = await self.dwell_live(key, day)
        if "dwell" in live:
            return live["dwell"]
        return dwell_of(await self.history().dwell_pieces.remote(key, day), live["owed"])

    async def dwell_live(self, key: int, day: int) -> dict:
        """The user shard's answer: {"dwell": ...}, or {"owed": pieces} to lay over history's."""
        self._fresh()
        return await self.shards.handle(self.placement.user_shard(key)).dwell.remote(key, day)

    async def distance(self, key: int, day: int) -> float | None:
        """Metres on `day` while live state holds it (history: `/v1/history/distance`)."""
        self._fresh()
        return await self.shards.handle(self.placement.user_shard(key)).distance.remote(key, day)

    async def minute_counts(self, since: int = 0) -> tuple[int, dict]:
        """(first minute answered, {(place, minute): devices}) over every user shard: the live
        minute window (history holds the minutes before it)."""
        self._fresh()
        parts = await asyncio.gather(*(u.minute_counts.remote(since) for u in self.shards.users()))
        first = max((p["since"] for p in parts), default=since)
        total: dict = {}
        for part in parts:
            for k, v in part["counts"].items():
                if k[1] >= first:
                    total[k] = total.get(k, 0) + v
        return first, total

    async def stats(self) -> dict[str, bool]:
        """Whether every actor of each family answers within a second."""
        self._fresh()
        families = {
            "user_shards": self.shards.users(),
            "cell_shards": self.shards.cells(),
            "space_shards": self.shards.spaces(),
        }
        out = {}
        for family, handles in families.items():
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(h.pid.remote() for h in handles)), timeout=1.0
                )
                out[family] = True
            except Exception:  # dead, restarting or slow: reported, not raised
                out[family] = False
        return out

    async def shard_stats(self, timeout_s: float = 2.0) -> list[dict]:
        """Every shard's own figures (devices, log length, epoch, ...); a shard that does not
        answer within `timeout_s` is listed as unavailable."""
        self._fresh()
        names = [*self.topology.user_shards, *self.topology.cell_shards]
        names += self.topology.space_shards

        async def one(name: str) -> dict:
            try:
                return await asyncio.wait_for(self.shards.handle(name).stats.remote(), timeout_s)
            except Exception as exc:  # dead, restarting or slow: reported, not raised
                return {"shard": name, "error": f"unavailable ({type(exc).__name__})"}

        return list(await asyncio.gather(*(one(n) for n in names)))

    def sync(self, coro):
        """Run one of the coroutines above from synchronous code (drivers, tests)."""
        return asyncio.run(coro)
