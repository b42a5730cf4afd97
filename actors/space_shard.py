"""SpaceShard: polygon-space counts (a view of the user shards) and door counters (with a WAL)."""

import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any

import ray

from actors.view_shard import ViewShard
from clients.refs import ACTOR_OPTIONS, start_ticker
from clients.users import UserShards
from engine.doors import BeyondHorizon
from state import redis_client
from state.instance import InstanceWatch
from state.metadata import Metadata
from state.topology import Clock, Topology
from state.wal import Wal

log = logging.getLogger(__name__)

FOLD_EVERY_S = 60.0
# events are folded this long after max_age has passed: an ingest handler's clock may be ahead
FOLD_MARGIN_MS = 120_000


@ray.remote(**ACTOR_OPTIONS)
class SpaceShard(ViewShard):
    """Polygon spaces placed here by id, and the door events of the sensors placed here.

    Door events are appended to this shard's WAL before they are applied; a checkpoint keeps the
    events with the WAL id. Door definitions come from Redis (Metadata) at start and by
    broadcast. Polygon memberships are rebuilt from the user shards after a restart.
    """

    def __init__(self, name: str, topology: Topology):
        self._view(name, topology)
        client = redis_client.connect(topology.redis_url)
        self.metadata = Metadata(client)
        self.wal = Wal(client, name)
        self.doors = self.metadata.door_counter()
        self.max_age_ms = self.topology.engine_spec().limits.max_age_ms
        self.clock = Clock()
        state, self.wal_id = self.wal.load_checkpoint()
        if state is not None:
            self.doors.load_events(state)
        for wal_id, entry in self.wal.entries_after(self.wal_id):
            self._apply(entry)
            self.wal_id = wal_id
        self._checkpointed_id = self.wal_id
        self._last_checkpoint = time.monotonic()
        self._archiving = self.wal.archiving()
        self.instance = InstanceWatch(client, name)
        self._folded = 0.0
        self._rebuild_if_restarted()
        self._stop = threading.Event()
        start_ticker(ray.get_runtime_context().current_actor, 1.0, self._stop)

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

    def delete_door_space(self, space: str) -> None:
        self.doors.delete_space(space)

    def delete_doorway(self, doorway: str) -> None:
        self.doors.delete_doorway(doorway)

    def install(self, sensor: str, doorway: str | None, start: int, positive: str) -> None:
        self.doors.install(sensor, doorway, start, positive)

    def reset(self, space: str, at: int) -> None:
        self.doors.reset(space, at)

    def tick(self) -> None:
        if self.instance.due():
            self._archiving = self._archiving or self.wal.archiving()
            if self.instance.lost():  # Redis emptied: the door events again from memory
                self.checkpoint()
        if time.monotonic() - self._folded >= FOLD_EVERY_S:
            self.fold()
        if (
            self.wal_id != self._checkpointed_id
            and time.monotonic() - self._last_checkpoint >= self.topology.checkpoint_interval_s
        ):
            self.checkpoint()

    def fold(self) -> int:
        """Door events older than max_age (and a margin for clocks) into each space's base:
        no event that old is accepted any more (`ts_too_old`)."""
        self._folded = time.monotonic()
        folded = self.doors.fold(self.clock() - self.max_age_ms - FOLD_MARGIN_MS)
        if folded:
            self.checkpoint()  # the log behind it goes once archived; memory is smaller now
        return folded

    def checkpoint(self) -> str:
        self.wal.save_checkpoint(self.doors.events_state(), self.wal_id, self._archiving)
        self._checkpointed_id = self.wal_id
        self._last_checkpoint = time.monotonic()
        return self.wal_id

    # -- polygon memberships --------------------------------------------------------------------

    def _listings(self, users: UserShards) -> Coroutine[Any, Any, list[list]]:
        return users.space_listings(self.name)  # not async: that would make the actor async

    # -- queries --------------------------------------------------------------------------------

    def polygon_count(self, space: str) -> int:
        return self.members.count(space)

    def door_partial(self, space: str, at: int | None) -> int | None:
        """This shard's partial sum of a door space at `at` (default now); None before its
        horizon, where history answers."""
        try:
            return self.doors.partial_sum(space, self.clock() if at is None else at)
        except BeyondHorizon:
            return None

    def door_crossings(self, space: str, start: int, end: int) -> tuple[int, int | None, list]:
        """(this shard's horizon, its partial sum at `start - 1` or None before the horizon,
        the signed crossings [ts, ±1] with ts in `[start, end)` from the horizon on): its part
        of a door space's series."""
        horizon = self.doors.horizon
        return horizon, self.door_partial(space, start - 1), self.doors.crossings(space, start, end)

    def all_counts(self, at: int | None) -> tuple[dict[str, int], dict[str, int] | None]:
        """The live count of every polygon space placed here, and this shard's partial sum of
        every door space (at `at`, default now; None before its horizon)."""
        t = self.clock() if at is None else at
        if t < self.doors.horizon:
            return self.members.counts(), None
        partials = {space: self.doors.partial_sum(space, t) for space in self.doors.spaces()}
        return self.members.counts(), partials

    def has_door_space(self, space: str) -> bool:
        return self.doors.has_space(space)

    def stats(self) -> dict:
        return {
            "shard": self.name,
            "devices": len(self.members),
            "tombstones": self.members.tombstones,
            "door_events": self.doors.event_count(),
            "door_horizon": self.doors.horizon,
            "wal_id": self.wal_id,
            "wal_length": self.wal.length(),
        }
