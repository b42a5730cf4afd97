"""SpaceShard: polygon-space counts (a view of the user shards) and door counters (with a WAL)."""

import logging
import threading
import time

import ray
import redis

from actors.layout import current, layout_of, with_layout
from actors.metadata import Metadata
from actors.refs import Shards, rebuild_again_later, start_ticker
from actors.topology import Clock, Topology
from actors.wal import Wal
from engine.membership import PlaceCounts

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class SpaceShard:
    """Polygon spaces placed here by id, and the door events of the sensors placed here.

    Door events are appended to this shard's WAL before they are applied; a checkpoint keeps the
    events with the WAL id. Door definitions come from Redis (Metadata) at start and by
    broadcast. Polygon memberships are rebuilt from the user shards after a restart.
    """

    def __init__(self, name: str, topology: Topology):
        self.name = name
        self.topology = current(topology)
        self.placement = self.topology.placement()
        client = redis.Redis.from_url(topology.redis_url)
        self.metadata = Metadata(client)
        self.wal = Wal(client, name)
        self.doors = self.metadata.door_counter()
        self.clock = Clock()
        state, self.wal_id = self.wal.load_checkpoint()
        for sensor, ts, direction in (state or {}).get("events", []):
            self.doors.add(sensor, ts, direction)
        for wal_id, entry in self.wal.entries_after(self.wal_id):
            self._apply(entry)
            self.wal_id = wal_id
        self._checkpointed_id = self.wal_id
        self._last_checkpoint = time.monotonic()
        self.members = PlaceCounts()
        handle = ray.get_runtime_context().current_actor
        if ray.get_runtime_context().was_current_actor_reconstructed:
            self.rebuild()
            rebuild_again_later(handle)
        self._stop = threading.Event()
        start_ticker(handle, 1.0, self._stop)

    def _apply(self, entry: dict) -> None:
        for sensor, ts, direction in zip(entry["sensor"], entry["ts"], entry["dir"], strict=True):
            self.doors.add(sensor, ts, direction)

    # -- door events and definitions ------------------------------------------------------------

    def door_events(self, batch: dict) -> int:
        batch["now"] = self.clock()
        self.wal_id = self.wal.append(batch)
        self._apply(batch)
        return len(batch["ts"])

    def define_door_space(self, space: str, name: str) -> None:
        self.doors.define_space(space, name)

    def define_doorway(self, doorway: str, inside: str, outside: str | None) -> None:
        self.doors.define_doorway(doorway, inside, outside)

    def install(self, sensor: str, doorway: str | None, start: int, positive: str) -> None:
        self.doors.install(sensor, doorway, start, positive)

    def reset(self, space: str, at: int) -> None:
        self.doors.reset(space, at)

    def tick(self) -> None:
        if (
            self.wal_id != self._checkpointed_id
            and time.monotonic() - self._last_checkpoint >= self.topology.checkpoint_interval_s
        ):
            self.checkpoint()

    def checkpoint(self) -> str:
        per_sensor = self.doors.snapshot()["events"]
        events = [[s, ev[i], ev[i + 1]] for s, ev in per_sensor for i in range(0, len(ev), 2)]
        self.wal.save_checkpoint({"events": events}, self.wal_id)
        self._checkpointed_id = self.wal_id
        self._last_checkpoint = time.monotonic()
        return self.wal_id

    # -- polygon memberships --------------------------------------------------------------------

    def rebuild(self) -> int:
        """Polygon memberships again from every user shard's listing (after a restart)."""
        self.set_layout(layout_of(current(self.topology)))  # restarted mid-rebalance
        shards = Shards(self.topology)
        listings = ray.get([u.space_listing.remote(self.name) for u in shards.users()])
        self.members.replace(u for listing in listings for u in listing)
        return len(self.members)

    def set_layout(self, layout: dict) -> None:
        """A rebalance's target layout: listings from the user shards are owned by its ring."""
        if layout["version"] > self.topology.version:
            self.topology = with_layout(self.topology, layout)
            self.placement = self.topology.placement()

    def update(self, updates: list) -> None:
        self.members.update_many((d, tuple(p), s) for d, p, s in updates)

    def resync(self, user_shard: str, updates: list) -> None:
        owner = self.placement.user_shard
        self.members.replace_where(
            lambda d: owner(d) == user_shard, ((d, tuple(p), s) for d, p, s in updates)
        )

    # -- queries --------------------------------------------------------------------------------

    def polygon_count(self, space: str) -> int:
        return self.members.count(space)

    def door_partial(self, space: str, at: int | None) -> int:
        return self.doors.partial_sum(space, self.clock() if at is None else at)

    def all_counts(self, at: int | None) -> tuple[dict[str, int], dict[str, int]]:
        """The live count of every polygon space placed here, and this shard's partial sum of
        every door space (at `at`, default now)."""
        t = self.clock() if at is None else at
        partials = {space: self.doors.partial_sum(space, t) for space in self.doors.spaces()}
        return self.members.counts(), partials

    def has_door_space(self, space: str) -> bool:
        return self.doors.has_space(space)

    def stats(self) -> dict:
        return {"shard": self.name, "devices": len(self.members), "wal_id": self.wal_id}

    def pid(self) -> int:
        import os

        return os.getpid()
