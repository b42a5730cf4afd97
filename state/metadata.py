"""Space and doorway definitions, kept in Redis as the source of truth for every shard."""

import redis

from engine.doors import DoorCounter
from state.wal import PREFIX, pack, unpack

SPACES = f"{PREFIX}:meta:spaces"
DOOR_SPACES = f"{PREFIX}:meta:door_spaces"
DOORWAYS = f"{PREFIX}:meta:doorways"
INSTALLS = f"{PREFIX}:meta:installs"
RESETS = f"{PREFIX}:meta:resets"


class Metadata:
    """Definitions are validated by the engine before they are stored here; shards load them
    at start and receive each change by broadcast."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def put_polygon_space(self, space: str, name: str, polygon: dict) -> None:
        self.client.hset(SPACES, space, pack({"name": name, "polygon": polygon}))

    def delete_space(self, space: str) -> None:
        self.client.hdel(SPACES, space)
        self.client.hdel(DOOR_SPACES, space)

    def polygon_spaces(self) -> dict[str, dict]:
        return {k.decode(): unpack(v) for k, v in self.client.hgetall(SPACES).items()}

    def put_door_space(self, space: str, name: str) -> None:
        self.client.hset(DOOR_SPACES, space, pack(name))

    def door_spaces(self) -> dict[str, str]:
        return {k.decode(): unpack(v) for k, v in self.client.hgetall(DOOR_SPACES).items()}

    def put_doorway(self, doorway: str, inside: str, outside: str | None) -> None:
        self.client.hset(DOORWAYS, doorway, pack([inside, outside]))

    def doorways(self) -> dict[str, tuple[str, str | None]]:
        """Every doorway: its inside and outside spaces."""
        return {k.decode(): tuple(unpack(v)) for k, v in self.client.hgetall(DOORWAYS).items()}

    def installations(self) -> list[tuple[str, str | None, int, str]]:
        """Every installation as stored: (sensor, doorway, from, positive), in the order made."""
        return [tuple(unpack(raw)) for raw in self.client.lrange(INSTALLS, 0, -1)]

    def add_installation(self, sensor: str, doorway: str | None, start: int, positive: str) -> None:
        self.client.rpush(INSTALLS, pack([sensor, doorway, start, positive]))

    def add_reset(self, space: str, at: int) -> None:
        self.client.rpush(RESETS, pack([space, at]))

    def door_counter(self) -> DoorCounter:
        """A DoorCounter with every definition and no events."""
        counter = DoorCounter()
        for space, name in self.door_spaces().items():
            counter.define_space(space, name)
        for doorway, sides in self.client.hgetall(DOORWAYS).items():
            counter.define_doorway(doorway.decode(), *unpack(sides))
        for raw in self.client.lrange(INSTALLS, 0, -1):
            counter.install(*unpack(raw), exclusive=False)
        for raw in self.client.lrange(RESETS, 0, -1):
            counter.reset(*unpack(raw))
        return counter
