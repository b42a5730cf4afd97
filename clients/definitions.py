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

    async def define_polygon_space(self, space: str, polygon: dict, name: str = "") -> int:
        """Returns the number of base cells the polygon covers."""
        if self.kind(space) == "door":
            raise ValueError(f"{space!r} is a door space")
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
        self.metadata.put_door_space(space, name)
        self._current()
        await self.shards.spaces.define_door_space(space, name)

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
        return int(time.time() * 1000) - self.topology.engine_spec().limits.max_age_ms

    def _current(self) -> None:
        """The committed shard layout: a rebalance may have added shards since."""
        self.topology = current(self.topology, self.metadata.client)
        self.shards.layout.use(self.topology)
