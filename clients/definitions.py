"""Space, doorway and installation definitions: validated, stored in Redis, broadcast to shards."""

import time

from clients.refs import Clients, clients_for
from engine.spaces import SpaceIndex
from state import redis_client
from state.layout import current, pending
from state.metadata import Metadata
from state.topology import Topology


class Definitions:
    """Every change is checked with the engine's own classes first (ValueError says what is
    wrong), then stored, then sent to every shard that needs it. Idempotent: the same
    definition twice changes nothing."""

    def __init__(self, topology: Topology, shards: Clients | None = None):
        self.topology = topology
        self.metadata = Metadata(redis_client.connect(topology.redis_url))
        self.shards = shards or clients_for(topology, follow=False)  # the layout: `_current`

    def kind(self, space: str) -> str | None:
        """ "polygon", "door" or None for an unknown space."""
        if space in self.metadata.polygon_spaces():
            return "polygon"
        if self.metadata.door_counter().has_space(space):
            return "door"
        return None

    def deleted(self, space: str, before: int | None = None) -> dict | None:
        """A deleted space's {kind, name, at} (deleted at `at`); with `before`, only if it was
        deleted after that time (so it existed then, for questions about the past)."""
        found = self.metadata.deleted_spaces().get(space)
        if found is None or (before is not None and found["at"] <= before):
            return None
        return found

    async def define_polygon_space(self, space: str, polygon: dict, name: str = "") -> int:
        """Returns the number of base cells the polygon covers."""
        if self.kind(space) == "door":
            raise ValueError(f"{space!r} is a door space")
        if (self.deleted(space) or {}).get("kind") == "door":
            raise ValueError(
                f"{space!r} was a door space: its doorways' past counts name it, so the id "
                "stays a door space's (define it again as one, or choose another id)"
            )
        cells = len(SpaceIndex(self.topology.engine_spec().res).define(space, polygon, name))
        self.metadata.put_polygon_space(space, name, polygon)
        self._current()
        # and to the user shards a rebalance under way has started: a new shard read the
        # definitions when it started, and is sent every one since
        starting = (pending(self.metadata.client) or {}).get("user_shards", ())
        await self.shards.users.define_space(space, polygon, name, starting)
        return cells

    async def define_door_space(self, space: str, name: str = "") -> None:
        if self.kind(space) == "polygon":
            raise ValueError(f"{space!r} is a polygon space")
        again = (self.deleted(space) or {}).get("kind") == "door"
        self.metadata.put_door_space(space, name)
        self._current()
        await self.shards.spaces.define_door_space(space, name)
        if again:  # counted from zero: its crossings before the deletion are not its own now
            await self.reset(space, _now())

    async def delete_space(self, space: str) -> tuple[str, int, list[str]] | None:
        """Delete a space now: (its kind, the time, the doorways deleted with it), None if
        there is none. Live state forgets it; what history holds of it stays. A door space's
        doorways go first (`delete_doorway`)."""
        kind = self.kind(space)
        if kind is None:
            return None
        at = _now()
        doorways = []
        if kind == "door":
            for doorway, sides in sorted(self.metadata.doorways().items()):
                if space in sides:
                    await self.delete_doorway(doorway, at)
                    doorways.append(doorway)
            name = self.metadata.door_spaces().get(space, "")
        else:
            name = self.metadata.polygon_spaces().get(space, {}).get("name", "")
        self.metadata.delete_space(space, kind, name, at)
        self._current()
        if kind == "door":
            await self.shards.spaces.delete_door_space(space)
        else:
            starting = (pending(self.metadata.client) or {}).get("user_shards", ())
            await self.shards.users.remove_space(space, starting)
        return kind, at, doorways

    async def delete_doorway(
        self, doorway: str, at: int | None = None
    ) -> tuple[int, list[str]] | None:
        """Delete a doorway at `at` (default now): each sensor counting there is installed
        nowhere from `at` (stored and sent as any installation), then the doorway goes.
        (the time, the sensors ended); None if there is no such doorway."""
        sides = self.metadata.doorways().get(doorway)
        if sides is None:
            return None
        at = _now() if at is None else at
        ending = self.metadata.door_counter().ending(doorway, at)
        for sensor, positive in ending:
            await self.install(sensor, None, at, positive)
        self.metadata.delete_doorway(doorway, *sides, at)
        self._current()
        await self.shards.spaces.delete_doorway(doorway)
        return at, [sensor for sensor, _ in ending]

    async def define_doorway(self, doorway: str, inside: str, outside: str | None) -> None:
        self.metadata.door_counter().define_doorway(doorway, inside, outside)
        self.metadata.put_doorway(doorway, inside, outside)
        self._current()
        await self.shards.spaces.define_doorway(doorway, inside, outside)

    async def install(self, sensor: str, doorway: str | None, start: int, positive: str) -> None:
        """Refused (ValueError) when new and dated before `now - max_age`: door events that old
        are folded in the space shards, and could not be attributed again."""
        self.metadata.door_counter().install(sensor, doorway, start, positive, self._horizon())
        self.metadata.add_installation(sensor, doorway, start, positive)
        self._current()
        await self.shards.spaces.install(sensor, doorway, start, positive)

    async def reset(self, space: str, at: int) -> None:
        self.metadata.door_counter().reset(space, at, self._horizon())
        self.metadata.add_reset(space, at)
        self._current()
        await self.shards.spaces.reset(space, at)

    def _horizon(self) -> int:
        return _now() - self.topology.engine_spec().limits.max_age_ms

    def _current(self) -> None:
        """The committed shard layout: a rebalance may have added shards since."""
        self.topology = current(self.topology, self.metadata.client)
        self.shards.layout.use(self.topology)


def _now() -> int:
    return int(time.time() * 1000)
