"""Space and doorway definitions, kept in Redis as the source of truth for every shard."""

import redis

from engine.doors import DoorCounter
from state.wal import PREFIX, pack, unpack

SPACES = f"{PREFIX}:meta:spaces"
DOOR_SPACES = f"{PREFIX}:meta:door_spaces"
DOORWAYS = f"{PREFIX}:meta:doorways"
INSTALLS = f"{PREFIX}:meta:installs"
RESETS = f"{PREFIX}:meta:resets"
# what was deleted, and when: kept to count the past (space -> {kind, name, at};
# doorway -> [inside, outside, at])
DELETED_SPACES = f"{PREFIX}:meta:deleted_spaces"
DELETED_DOORWAYS = f"{PREFIX}:meta:deleted_doorways"


class Metadata:
    """Definitions are validated by the engine before they are stored here; shards load them
    at start and receive each change by broadcast."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def put_polygon_space(self, space: str, name: str, polygon: dict) -> None:
        self.client.hset(SPACES, space, pack({"name": name, "polygon": polygon}))
        self.client.hdel(DELETED_SPACES, space)

    def delete_space(self, space: str, kind: str, name: str, at: int) -> None:
        """The space leaves the definitions; its kind, name and deletion time are kept."""
        with self.client.pipeline() as pipe:  # MULTI: never both, never neither
            pipe.hset(DELETED_SPACES, space, pack({"kind": kind, "name": name, "at": at}))
            pipe.hdel(SPACES, space)
            pipe.hdel(DOOR_SPACES, space)
            pipe.execute()

    def deleted_spaces(self) -> dict[str, dict]:
        """Every deleted space (but those defined again): {kind, name, at}."""
        return {k.decode(): unpack(v) for k, v in self.client.hgetall(DELETED_SPACES).items()}

    def delete_doorway(self, doorway: str, inside: str, outside: str | None, at: int) -> None:
        with self.client.pipeline() as pipe:
            pipe.hset(DELETED_DOORWAYS, doorway, pack([inside, outside, at]))
            pipe.hdel(DOORWAYS, doorway)
            pipe.execute()

    def deleted_doorways(self) -> dict[str, tuple[str, str | None, int]]:
        """Every deleted doorway (but those defined again): (inside, outside, deleted at)."""
        raw = self.client.hgetall(DELETED_DOORWAYS)
        return {k.decode(): tuple(unpack(v)) for k, v in raw.items()}

    def polygon_spaces(self) -> dict[str, dict]:
        return {k.decode(): unpack(v) for k, v in self.client.hgetall(SPACES).items()}

    def put_door_space(self, space: str, name: str) -> None:
        self.client.hset(DOOR_SPACES, space, pack(name))
        self.client.hdel(DELETED_SPACES, space)

    def door_spaces(self) -> dict[str, str]:
        return {k.decode(): unpack(v) for k, v in self.client.hgetall(DOOR_SPACES).items()}

    def put_doorway(self, doorway: str, inside: str, outside: str | None) -> None:
        self.client.hset(DOORWAYS, doorway, pack([inside, outside]))
        self.client.hdel(DELETED_DOORWAYS, doorway)

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
        """A DoorCounter with every definition and no events: the deleted door spaces and
        doorways too (their installations and resets count the past), marked deleted last."""
        counter = DoorCounter()
        gone = {s: d for s, d in self.deleted_spaces().items() if d["kind"] == "door"}
        for space, name in self.door_spaces().items():
            counter.define_space(space, name)
        for space, deleted in gone.items():
            counter.define_space(space, deleted["name"])
        gone_doorways = self.deleted_doorways()
        for doorway, (inside, outside, _) in gone_doorways.items():
            counter.define_doorway(doorway, inside, outside)
        for doorway, sides in self.client.hgetall(DOORWAYS).items():
            counter.define_doorway(doorway.decode(), *unpack(sides))
        for raw in self.client.lrange(INSTALLS, 0, -1):
            counter.install(*unpack(raw), exclusive=False)
        for raw in self.client.lrange(RESETS, 0, -1):
            counter.reset(*unpack(raw))
        for doorway in gone_doorways:
            counter.delete_doorway(doorway)
        for space in gone:
            counter.delete_space(space)
        return counter
