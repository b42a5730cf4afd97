"""UserShards: every call to the user shards (the devices' live state, with their logs).

Coroutines awaited from async code, or run by `clients.family.blocking` from a thread;
errors mapped as `clients.family` says."""

from collections.abc import Iterable

from clients.family import Shards
from engine.record import PingRecord
from state.wal import unpack


class UserShards(Shards):
    """The user shards of the layout followed; calls to one shard take its name."""

    def names(self) -> tuple[str, ...]:
        return self.layout.fresh().user_shards

    # -- ingest and rebalancing -----------------------------------------------------------------

    async def ingest(self, shard: str, batch: PingRecord) -> bytes:
        """b"\\x01" per applied ping, b"\\x00" per late one; StaleLayout when the batch was
        routed by another layout version than the shard's."""
        return await self._one(shard, lambda u: u.ingest.remote(batch))

    async def adopt(self, shard: str, source: str, state: dict) -> int:
        return await self._one(shard, lambda u: u.adopt.remote(source, state))

    async def handoff(self, shard: str, layout: dict) -> dict:
        return await self._one(shard, lambda u: u.handoff.remote(layout))

    async def relist(self, shard: str) -> None:
        await self._one(shard, lambda u: u.relist.remote())

    async def checkpoint(self, shard: str) -> str:
        return await self._one(shard, lambda u: u.checkpoint.remote())

    async def checkpoint_all(self) -> list[str]:
        return await self._each(self.names(), lambda u: u.checkpoint.remote())

    # -- definitions and forgetting -------------------------------------------------------------

    async def define_space(
        self, space: str, polygon: dict, name: str, starting: Iterable[str] = ()
    ) -> list[int]:
        """To every shard of the layout, and to those of `starting` (a rebalance under way)
        that run already (one not started yet reads every definition when it starts)."""
        names = self.names()
        names = [*names, *self.running(n for n in starting if n not in names)]
        return await self._each(names, lambda u: u.define_space.remote(space, polygon, name))

    async def remove_space(self, space: str, starting: Iterable[str] = ()) -> None:
        """A polygon space deleted: to the same shards as `define_space`."""
        names = self.names()
        names = [*names, *self.running(n for n in starting if n not in names)]
        await self._each(names, lambda u: u.remove_space.remote(space))

    async def reload_hooks(self) -> None:
        """Every shard of the layout reads the webhook definitions again (a hook changed): a
        PUT's answer means its events are written from then on."""
        await self._each(self.names(), lambda u: u.reload_hooks.remote())

    async def forget(self, shard: str, old: int, fresh: int) -> str:
        """`shard` (state.forgetting.owner) forgets the device `old` now; its log id."""
        return await self._one(shard, lambda u: u.forget.remote(old, fresh))

    # -- views and history ----------------------------------------------------------------------

    async def cell_listings(self, cell_shard: str) -> list[list]:
        """Every user shard's present devices in `cell_shard`'s cells."""
        return await self._each(self.names(), lambda u: u.cell_listing.remote(cell_shard))

    async def space_listings(self, space_shard: str) -> list[list]:
        return await self._each(self.names(), lambda u: u.space_listing.remote(space_shard))

    async def history_exports(self) -> list[tuple[tuple, list]]:
        """Every shard's (mark, pieces) owed to history, in `names()` order."""
        exports = await self._each(self.names(), lambda u: u.history_export.remote())
        return [(mark, [r for part in parts for r in unpack(part)]) for mark, parts in exports]

    async def history_confirm(self, shard: str, mark: tuple) -> None:
        await self._one(shard, lambda u: u.history_confirm.remote(mark))

    # -- queries --------------------------------------------------------------------------------

    async def dwell(self, shard: str, device: int, day: int) -> dict:
        return await self._one(shard, lambda u: u.dwell.remote(device, day))

    async def distance(self, shard: str, device: int, day: int) -> float | None:
        return await self._one(shard, lambda u: u.distance.remote(device, day))

    async def minute_counts(self, since: int) -> list[dict]:
        return await self._each(self.names(), lambda u: u.minute_counts.remote(since))
