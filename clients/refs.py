"""Where engine actors run, how they tick, and `clients_for`, which builds the typed clients.

Every call to an engine actor goes through a client of this package: `UserShards`
(clients/users.py), `CellShards` and `SpaceShards` (clients/views.py), `History`
(clients/history.py), and the cluster's own actors (clients/cluster.py). Here: the actors'
calls to themselves.
"""

import logging
import threading
import time
from typing import NamedTuple

import ray

from clients.family import Layout
from clients.history import History
from clients.users import UserShards
from clients.views import CellShards, SpaceShards
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


class Clients(NamedTuple):
    """The clients of one process, following one layout."""

    users: UserShards
    cells: CellShards
    spaces: SpaceShards
    history: History

    @property
    def layout(self) -> Layout:
        return self.users.layout


def clients_for(topology: Topology, follow: bool = True) -> Clients:
    """Clients sharing one `Layout` (see clients/family.py for `follow`)."""
    layout = Layout(topology, follow)
    return Clients(UserShards(layout), CellShards(layout), SpaceShards(layout), History(layout))


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
