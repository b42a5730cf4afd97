"""Every `.remote()` call to a shard family goes through here: handles by name, fan-outs."""

import logging
import threading
import time

import ray

from state.topology import Topology

log = logging.getLogger(__name__)

# Every engine actor: restarted by Ray when it dies, calls never retried (they are not all
# idempotent), no CPU reserved (they share the node's cores), and no task events: Ray's GCS keeps
# an event for each of the last 100,000 actor calls (1-2 KB each, growing for an hour at this
# engine's rate of calls); the engine's own metrics and traces say what the calls did. Where
# each one runs: `on_node` below.
ACTOR_OPTIONS = {
    "max_restarts": -1,
    "max_task_retries": 0,
    "num_cpus": 0,
    "enable_task_events": False,
}


def alive_nodes() -> list[str]:
    """The ids of the cluster's alive nodes, in a fixed order (for `on_node`)."""
    return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))


def on_node(nodes: list[str], index: int) -> dict:
    """Options that place the `index`-th actor started together on `nodes[index % len]`.

    Shards and ingest handlers go round-robin over the alive nodes, so that each node runs a
    share of every family and the loss of one takes only its share. Ray does not do it by
    itself: an actor that asks for no resources goes to a node picked at random, under SPREAD
    and under a soft NodeAffinitySchedulingStrategy alike (ray-project/ray#23315; on three
    nodes here SPREAD put four of six shards on one worker node and none on the other, and a
    soft affinity missed its node four times in six). A label selector on the node's id is
    kept, and its fallback (any node) is what Ray uses when that node is gone: after a node's
    loss Ray restarts the actor on another. Shards hold their state in Redis and reach each
    other by name, so any node will do. One node: no options."""
    if len(nodes) <= 1:
        return {}
    return {
        "label_selector": {"ray.io/node-id": nodes[index % len(nodes)]},
        "fallback_strategy": [{"label_selector": {}}],
    }


class ShardNotFound(ValueError):
    """No actor has a shard's name: it is not started yet (a ValueError, as Ray's own lookup
    raises)."""


class Shards:
    """Looks shard actors up by name (cached) and sends them calls.

    Membership updates are fire-and-forget: receivers apply them idempotently by seq, and a
    restarted receiver rebuilds from the user shards, so a lost update is repaired
    (`rebuild_again_later` covers the updates lost while the restart was under way).
    """

    def __init__(self, topology: Topology):
        self._topology = topology
        self._handles: dict[str, ray.actor.ActorHandle] = {}

    @property
    def topology(self) -> Topology:
        return self._topology

    @topology.setter
    def topology(self, topology: Topology) -> None:
        """A new layout: handles are looked up again (a shard retired by one rebalance and
        started again by a later one is another actor)."""
        if topology.version != self._topology.version:
            self._handles.clear()
        self._topology = topology

    def handle(self, name: str) -> ray.actor.ActorHandle:
        """The actor named `name`; ShardNotFound while no actor has that name (not started
        yet: an engine starting again after its `occupancy up` was lost)."""
        h = self._handles.get(name)
        if h is None:
            try:
                h = ray.get_actor(name, namespace=self.topology.namespace)
            except ValueError as exc:
                raise ShardNotFound(f"no actor {name} runs (yet); retry") from exc
            self._handles[name] = h
        return h

    def send_updates(self, routed: dict[str, list]) -> None:
        for shard, updates in routed.items():
            if updates:
                self.handle(shard).update.remote(updates)

    def send_resync(self, owner: str, shards: tuple[str, ...], routed: dict[str, list]) -> None:
        """`owner`'s full listing to every shard of a family (empty lists included)."""
        for shard in shards:
            self.handle(shard).resync.remote(owner, routed.get(shard, []))

    def users(self) -> list[ray.actor.ActorHandle]:
        return [self.handle(n) for n in self.topology.user_shards]

    def cells(self) -> list[ray.actor.ActorHandle]:
        return [self.handle(n) for n in self.topology.cell_shards]

    def spaces(self) -> list[ray.actor.ActorHandle]:
        return [self.handle(n) for n in self.topology.space_shards]


REBUILD_AGAIN_S = (3.0, 15.0)


def rebuild_again_later(handle: ray.actor.ActorHandle) -> None:
    """Call `rebuild` on a restarted view shard again after each of REBUILD_AGAIN_S.

    A user shard that has not yet heard of the restart may send an update to the dead
    incarnation after the new one took its listing; that update is lost. A later listing
    repairs it. A rebuild is one task of a sync actor: updates that arrive meanwhile queue
    behind it and then apply in the order each user shard sent them, so none is undone.
    """

    def run() -> None:
        for delay in REBUILD_AGAIN_S:
            time.sleep(delay)
            try:
                ray.get(handle.rebuild.remote())
            except Exception:  # the actor is going away
                return

    threading.Thread(target=run, name="rebuild-again", daemon=True).start()


def start_ticker(handle: ray.actor.ActorHandle, interval_s: float, stop: threading.Event) -> None:
    """Call the actor's own `tick` every `interval_s` from a thread, so ticks queue with its
    other calls. A tick that fails (Redis unreachable for a checkpoint) is logged and the next
    one runs; only the actor going away ends the thread."""

    def run() -> None:
        while not stop.wait(interval_s):
            try:
                ray.get(handle.tick.remote())
            except ray.exceptions.RayActorError:
                return
            except Exception:
                log.exception("tick failed; the next one retries")

    threading.Thread(target=run, name="ticker", daemon=True).start()
