"""The shard layout: which shards each family has, versioned and committed in Redis.

A rebalance (cluster/rebalance.py) writes the target layout as pending, moves the devices, then
commits it. Every actor is created with a Topology; actors that outlive a rebalance (or are
restarted by Ray with their creation arguments) take the committed layout when it is newer.
"""

import dataclasses

import redis
import redis.asyncio

from state import redis_client
from state.topology import Topology
from state.wal import PREFIX, pack, unpack

COMMITTED = f"{PREFIX}:layout"
PENDING = f"{PREFIX}:layout:pending"
FAMILIES = ("user_shards", "cell_shards", "space_shards")


def layout_of(topology: Topology) -> dict:
    """The layout part of a topology as plain data (no secret: it is stored in Redis)."""
    out = {f: list(getattr(topology, f)) for f in FAMILIES}
    out["version"] = topology.version
    return out


def with_layout(topology: Topology, layout: dict) -> Topology:
    return dataclasses.replace(
        topology, version=layout["version"], **{f: tuple(layout[f]) for f in FAMILIES}
    )


def committed(client: redis.Redis) -> dict | None:
    raw = client.get(COMMITTED)
    return unpack(raw) if raw is not None else None


async def committed_async(client: redis.asyncio.Redis) -> dict | None:
    """`committed`, from an event loop."""
    raw = await client.get(COMMITTED)
    return unpack(raw) if raw is not None else None


def pending(client: redis.Redis) -> dict | None:
    raw = client.get(PENDING)
    return unpack(raw) if raw is not None else None


def current(topology: Topology, client: redis.Redis | None = None) -> Topology:
    """`topology` with the committed layout if that one is newer."""
    client = client or redis_client.connect(topology.redis_url)
    layout = committed(client)
    if layout is None or layout["version"] <= topology.version:
        return topology
    return with_layout(topology, layout)


def set_pending(client: redis.Redis, layout: dict) -> None:
    client.set(PENDING, pack(layout))


def commit(client: redis.Redis, layout: dict) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.set(COMMITTED, pack(layout))
    pipe.delete(PENDING)
    pipe.execute()


def target(topology: Topology, user_shards: int | None, cell_shards: int | None) -> dict:
    """The next layout: `user_shards`/`cell_shards` shards (None: as now), named `user-<i>` and
    `cell-<i>` so that growing keeps every existing shard and shrinking drops the last ones."""
    layout = layout_of(topology)
    for family, n in (("user_shards", user_shards), ("cell_shards", cell_shards)):
        if n is None:
            continue
        if n < 1:
            raise ValueError(f"{family.replace('_', ' ')} must be at least 1")
        names, prefix = layout[family], family.split("_")[0]
        layout[family] = names[:n] + [f"{prefix}-{i}" for i in range(len(names), n)]
    layout["version"] = topology.version + 1
    return layout


class StaleLayout(Exception):
    """A batch routed by another layout version than the shard's: nothing of it was applied;
    the sender loads the committed layout and routes it again."""

    def __init__(self, shard: str, version: int):
        super().__init__(f"{shard} is on layout {version}")
        self.shard = shard
        self.version = version

    def __reduce__(self):
        return StaleLayout, (self.shard, self.version)
