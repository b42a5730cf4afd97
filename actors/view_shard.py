"""ViewShard: what cell and space shards share, a view of the user shards' devices by place."""

import logging
import os
import time
from collections.abc import Coroutine
from typing import Any

import ray

from clients.family import Layout, blocking
from clients.refs import rebuild_again_later
from clients.users import UserShards
from engine.membership import PlaceCounts
from state.layout import current, layout_of, with_layout
from state.topology import Topology

log = logging.getLogger(__name__)


class ViewShard:
    """Devices by place (`members`), kept by the user shards' membership updates.

    Holds no durable state of them: after a restart it asks every user shard for the devices
    present in its places (`rebuild`). Updates are ordered by seq, so those that arrive
    meanwhile are counted once; `resync` replaces one user shard's devices with its listing.
    A rebalance's target layout comes by `set_layout`: listings are owned by its ring.
    """

    def _view(self, name: str, topology: Topology) -> None:
        self.name = name
        self.topology = current(topology)
        self.placement = self.topology.placement()
        self.members = PlaceCounts()

    def _rebuild_if_restarted(self) -> None:
        """After a restart by Ray: the listings now, and again a little later (an update sent
        to the dead incarnation after the new one took its listing is lost)."""
        context = ray.get_runtime_context()
        if context.was_current_actor_reconstructed:
            self.rebuild()
            rebuild_again_later(context.current_actor)

    def _listings(self, users: UserShards) -> Coroutine[Any, Any, list[list]]:
        """Every user shard's listing of this shard's places (a call to await)."""
        raise NotImplementedError

    def rebuild(self) -> int:
        self.set_layout(layout_of(current(self.topology)))  # restarted mid-rebalance
        listings = blocking(self._listings(UserShards(Layout(self.topology, follow=False))))
        self.members.replace(update for listing in listings for update in listing)
        log.info("%s rebuilt from the user shards: %d devices", self.name, len(self.members))
        return len(self.members)

    def set_layout(self, layout: dict) -> None:
        """A rebalance's target layout: listings from the user shards are owned by its ring."""
        if layout["version"] > self.topology.version:
            self.topology = with_layout(self.topology, layout)
            self.placement = self.topology.placement()

    def update(self, updates: list) -> None:
        self.members.update_many((d, tuple(p), s) for d, p, s in updates)
        self.members.age(_monotonic_ms())

    def resync(self, user_shard: str, updates: list) -> None:
        owner = self.placement.user_shard
        self.members.replace_where(
            lambda d: owner(d) == user_shard, ((d, tuple(p), s) for d, p, s in updates)
        )
        self.members.age(_monotonic_ms())

    def pid(self) -> int:
        return os.getpid()


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)
