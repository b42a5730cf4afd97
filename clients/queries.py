"""Live queries over the shard actors: one fan-out per shard family, merged by engine code."""

import asyncio

from clients.refs import Clients, clients_for
from engine.cells import check_res, resolution
from engine.doors import door_count
from engine.geo import BBox
from engine.history import dwell_of
from engine.privacy import floored, merge_floored
from engine.series import DoorPoint, door_series
from engine.topn import merge_counts, merge_top, ranked
from state import redis_client
from state.metadata import Metadata
from state.topology import Topology


class LiveQueries:
    """Answers from live actor state. Async (for Serve replicas and the ingest loop); `sync`
    runs one from synchronous code (drivers, tests). The clients (`clients_for`: one layout,
    followed in Redis) may be given, stand-ins included."""

    def __init__(self, topology: Topology, shards: Clients | None = None):
        self.spec = topology.engine_spec()
        self.shards = shards or clients_for(topology)
        self.users, self.cells = self.shards.users, self.shards.cells
        self.spaces, self.history = self.shards.spaces, self.shards.history
        self._metadata = Metadata(redis_client.connect(topology.redis_url))
        self._placement = (topology.version, topology.placement())

    @property
    def topology(self) -> Topology:
        """The layout the queries follow (the committed one, within a second)."""
        return self.shards.layout.topology

    @property
    def placement(self):
        t = self.topology
        if self._placement[0] != t.version:
            self._placement = (t.version, t.placement())
        return self._placement[1]

    def refresh(self) -> None:
        """Take the committed shard layout if a rebalance changed it."""
        self.shards.layout.refresh()

    def _fresh(self) -> None:
        # at most one Redis read a second: a rebalance shows within a second
        self.shards.layout.fresh()

    async def top(self, n: int, res: int, bbox: BBox | None = None) -> list[tuple[int, int]]:
        self._fresh()
        check_res(res, self.spec.res)
        return merge_top(await self.cells.top(n, res, BBox.to_tuple(bbox)), n)

    async def heatmap(self, res: int, bbox: BBox | None) -> dict[int, int]:
        self._fresh()
        check_res(res, self.spec.res)
        return merge_counts(await self.cells.heatmap(res, BBox.to_tuple(bbox)))

    async def cell_count(self, cell: int) -> int:
        self._fresh()
        res = check_res(resolution(cell), self.spec.res)
        if res == self.spec.res:
            return await self.cells.count(self.placement.cell_shard(cell), cell)
        return (await self.heatmap(res, None)).get(cell, 0)

    # Under the privacy floor `k` (engine/privacy.py): released counts, consistent across
    # resolutions and areas. Cells at the placement resolution or finer are computed whole by
    # their shard; coarser ones are lifted here from the shards' pairs at the placement res.

    async def floored_heatmap(self, res: int, bbox: BBox | None, k: int) -> dict[int, int]:
        self._fresh()
        check_res(res, self.spec.res)
        parts = await self.cells.floored(res, BBox.to_tuple(bbox), k)
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
        return merge_top(await self.cells.floored_top(n, res, BBox.to_tuple(bbox), k), n)

    async def floored_cell(self, cell: int, k: int) -> int:
        self._fresh()
        res = check_res(resolution(cell), self.spec.res)
        if res == self.spec.res:
            return floored(await self.cell_count(cell), k)
        level = max(res, self.spec.placement_res)
        shard = ""  # every shard's pairs
        if res >= self.spec.placement_res:  # the cell and all under it live on one shard
            shard = self.placement.cell_shard(cell)
        parts = await self.cells.floored(res, None, k, cell, shard)
        return merge_floored(parts, level, res, k).get(cell, 0)

    async def space_count(self, space: str, at: int | None = None) -> int | None:
        """A door space's count (at `at`, default now) or a polygon space's live count; None
        for an unknown space. A door count before the space shards' horizon (their events
        folded) comes from history's door events."""
        self._fresh()
        if await self.spaces.has_door_space(space):
            return await self.door_count(space, at)
        return await self.spaces.polygon_count(self.placement.space_shard(space), space)

    async def door_count(self, space: str, at: int | None = None) -> int:
        """A door space's count at `at` (default now), a deleted one's too (for a time before
        its deletion)."""
        self._fresh()
        parts = await self.spaces.door_partials(space, at)
        if None in parts:
            return await self.door_count_from_history(space, at)
        return door_count(parts)

    async def space_counts(self, at: int | None = None) -> dict[str, int]:
        """Every space's count: polygon spaces live, door spaces at `at` (default now). One
        call per space shard (and history's for door counts before the horizon)."""
        self._fresh()
        parts = await self.spaces.all_counts(at)
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
        total = await self.history.door_sum(counter.ranges(space, at))
        return door_count([total])

    async def door_series(self, space: str, edges: list[int], now: int) -> list[DoorPoint]:
        """A door space's series over `edges` (engine/series.py): the space shards' crossings
        from the latest of their horizons on, history's door events before it."""
        self._fresh()
        counter = self._metadata.door_counter()
        start, end = edges[0], min(edges[-1], now + 1)
        parts = await self.spaces.door_crossings(space, start, end)
        horizon = max(h for h, _, _ in parts)
        crossings = [c for _, _, found in parts for c in found if c[0] >= horizon]
        if any(partial is None for _, partial, _ in parts):
            base = await self.history.door_sum(counter.ranges(space, start - 1))
        else:
            base = sum(partial for _, partial, _ in parts)
        if start < horizon:
            older = counter.ranges(space, min(horizon, end) - 1, since=start)
            crossings += await self.history.door_crossings(older)
        return door_series(edges, now, base, crossings, counter.resets(space))

    async def dwell(self, key: int, day: int) -> dict:
        """Where the device (its pseudonym, from the id directory) spent `day`: from its user
        shard while live state holds the day, else history's pieces with what the shard still
        owes laid over them."""
        live = await self.dwell_live(key, day)
        if "dwell" in live:
            return live["dwell"]
        return dwell_of(await self.history.dwell_pieces(key, day), live["owed"])

    async def dwell_live(self, key: int, day: int) -> dict:
        """The user shard's answer: {"dwell": ...}, or {"owed": pieces} to lay over history's."""
        self._fresh()
        return await self.users.dwell(self.placement.user_shard(key), key, day)

    async def distance(self, key: int, day: int) -> float | None:
        """Metres on `day` while live state holds it (history: `/v1/history/distance`)."""
        self._fresh()
        return await self.users.distance(self.placement.user_shard(key), key, day)

    async def minute_counts(self, since: int = 0) -> tuple[int, dict]:
        """(first minute answered, {(place, minute): devices}) over every user shard: the live
        minute window (history holds the minutes before it)."""
        self._fresh()
        parts = await self.users.minute_counts(since)
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
        families = {"user_shards": self.users, "cell_shards": self.cells}
        families["space_shards"] = self.spaces
        out = {}
        for family, client in families.items():
            try:
                await asyncio.wait_for(client.pids(), timeout=1.0)
                out[family] = True
            except Exception:  # dead, restarting or slow: reported, not raised
                out[family] = False
        return out

    async def shard_stats(self, timeout_s: float = 2.0) -> list[dict]:
        """Every shard's own figures (devices, log length, epoch, ...); a shard that does not
        answer within `timeout_s` is listed as unavailable."""
        self._fresh()
        t = self.topology
        families = [(self.users, t.user_shards), (self.cells, t.cell_shards)]
        families.append((self.spaces, t.space_shards))

        async def one(client, name: str) -> dict:
            try:
                return await asyncio.wait_for(client.stats(name), timeout_s)
            except Exception as exc:  # dead, restarting or slow: reported, not raised
                return {"shard": name, "error": f"unavailable ({type(exc).__name__})"}

        return list(await asyncio.gather(*(one(c, n) for c, names in families for n in names)))

    def sync(self, coro):
        """Run one of the coroutines above from synchronous code (drivers, tests)."""
        return asyncio.run(coro)
