"""CellShards and SpaceShards: every call to the view shards (counts by cell and by space).

Coroutines awaited from async code, or run by `clients.family.blocking` from a thread;
errors mapped as `clients.family` says. Membership updates are sent without waiting: their
receivers apply them idempotently by seq, and a restarted receiver rebuilds from the user
shards, so a lost update is repaired.
"""

from clients.family import Shards


class ViewShards(Shards):
    """What cell and space shards both answer: updates, listings, layout, figures."""

    def send_updates(self, routed: dict[str, list]) -> None:
        for shard, updates in routed.items():
            if updates:
                self._send(shard, lambda v, u=updates: v.update.remote(u))

    def send_resync(self, owner: str, routed: dict[str, list]) -> None:
        """`owner`'s full listing to every shard of the family (empty lists included)."""
        for shard in self.names():
            self._send(shard, lambda v, s=shard: v.resync.remote(owner, routed.get(s, [])))

    async def set_layout(self, shard: str, layout: dict) -> None:
        await self._one(shard, lambda v: v.set_layout.remote(layout))

    async def rebuild(self, shard: str) -> int:
        return await self._one(shard, lambda v: v.rebuild.remote())


class CellShards(ViewShards):
    """Cell counts: each shard's part of an answer, merged by the caller (engine code)."""

    def names(self) -> tuple[str, ...]:
        return self.layout.fresh().cell_shards

    async def top(self, n: int, res: int, bbox: tuple | None) -> list[list]:
        return await self._each(self.names(), lambda c: c.top.remote(n, res, bbox))

    async def heatmap(self, res: int, bbox: tuple | None) -> list[dict]:
        return await self._each(self.names(), lambda c: c.heatmap.remote(res, bbox))

    async def count(self, shard: str, cell: int) -> int:
        return await self._one(shard, lambda c: c.count.remote(cell))

    async def floored(
        self, res: int, bbox: tuple | None, k: int, cell: int | None = None, shard: str = ""
    ) -> list[dict]:
        """Every shard's pairs, or the one `shard`'s."""
        names = [shard] if shard else self.names()
        return await self._each(names, lambda c: c.floored.remote(res, bbox, k, cell))

    async def floored_top(self, n: int, res: int, bbox: tuple | None, k: int) -> list[list]:
        return await self._each(self.names(), lambda c: c.floored_top.remote(n, res, bbox, k))


class SpaceShards(ViewShards):
    """Polygon-space counts and door counters."""

    def names(self) -> tuple[str, ...]:
        return self.layout.fresh().space_shards

    async def door_events(self, shard: str, batch: dict) -> int:
        return await self._one(shard, lambda s: s.door_events.remote(batch))

    async def has_door_space(self, space: str) -> bool:
        return await self._one(self.names()[0], lambda s: s.has_door_space.remote(space))

    async def door_partials(self, space: str, at: int | None) -> list[int | None]:
        return await self._each(self.names(), lambda s: s.door_partial.remote(space, at))

    async def door_crossings(self, space: str, start: int, end: int) -> list[tuple]:
        return await self._each(self.names(), lambda s: s.door_crossings.remote(space, start, end))

    async def polygon_count(self, shard: str, space: str) -> int:
        return await self._one(shard, lambda s: s.polygon_count.remote(space))

    async def all_counts(self, at: int | None) -> list[tuple[dict, dict | None]]:
        return await self._each(self.names(), lambda s: s.all_counts.remote(at))

    # definitions: every shard holds every door definition

    async def define_door_space(self, space: str, name: str) -> None:
        await self._each(self.names(), lambda s: s.define_door_space.remote(space, name))

    async def define_doorway(self, doorway: str, inside: str, outside: str | None) -> None:
        await self._each(self.names(), lambda s: s.define_doorway.remote(doorway, inside, outside))

    async def delete_door_space(self, space: str) -> None:
        await self._each(self.names(), lambda s: s.delete_door_space.remote(space))

    async def delete_doorway(self, doorway: str) -> None:
        await self._each(self.names(), lambda s: s.delete_doorway.remote(doorway))

    async def install(self, sensor: str, doorway: str | None, start: int, positive: str) -> None:
        await self._each(self.names(), lambda s: s.install.remote(sensor, doorway, start, positive))

    async def reset(self, space: str, at: int) -> None:
        await self._each(self.names(), lambda s: s.reset.remote(space, at))
