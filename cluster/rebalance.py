"""Changing shard counts while ingest goes on: new shards, devices handed over, new layout.

The steps, each safe to run again (a rebalance interrupted anywhere is finished by running the
same one again):
1. the target layout is stored as pending; new cell shards, then new user shards, are started;
2. every cell and space shard learns the target ring (whose devices each user shard lists);
3. every user shard of the current layout hands the devices the target places elsewhere to
   their new shards (`UserShard.handoff`). From then on it refuses batches routed by the old
   layout: ingest handlers wait for the commit and route those batches again, so no ping is
   applied by a shard that no longer owns its device;
4. the target is committed; ingest, queries and history take it;
5. every user shard lists its devices to every cell and space shard again, checkpoints (so no
   handoff is replayed later), and shards the target no longer has are stopped.

One rebalance runs at a time (`Lock`); each step is reported to a `progress` object as it
begins (cluster/progress.py records them in Redis for `GET /v1/admin/status`).
"""

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial

from actors.cell_shard import CellShard
from actors.ingest import start_handler
from actors.user_shard import UserShard
from clients import cluster
from clients.errors import StateUnavailable, Unavailable
from clients.family import blocking
from clients.refs import alive_nodes, clients_for, on_node
from cluster import fit
from cluster.plan import plan_of, price
from state import layout as layouts
from state import redis_client
from state.topology import Topology
from state.wal import PREFIX, Wal

log = logging.getLogger(__name__)

LOCK = f"{PREFIX}:rebalance:lock"
LOCK_TTL_S = 60  # a holder that died frees the lock within this; a live one renews it
RETRY_S = 60.0  # how long a step retries a shard that is restarting
QUERY_GRACE_S = 1.5  # queries take a new layout within a second; then retired shards stop
# what a rebalance reports as it goes, in order (a rebalance with nothing to change skips them)
STEPS = (
    "store target",
    "start cell shards",
    "start user shards",
    "views take the ring",
    "handoff",
    "commit",
    "list and checkpoint",
    "retire shards",
)


class RebalanceError(Exception):
    pass


class Quiet:
    """Progress that goes nowhere: a rebalance run from code (tests, the benchmark)."""

    def step(self, name: str) -> None:
        pass

    def handed_off(self, shard: str, moved: dict[str, int]) -> None:
        pass


class Lock:
    """The one rebalance or scale under way: a Redis key holding its id. Its holder renews it
    from a thread every third of LOCK_TTL_S, so a long rebalance keeps it and a process that
    died while holding it frees it within LOCK_TTL_S."""

    _IF_HELD = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call("
    _RENEW = _IF_HELD + "'expire', KEYS[1], ARGV[2]) end return 0"
    _RELEASE = _IF_HELD + "'del', KEYS[1]) end return 0"

    def __init__(self, client):
        self.client = client
        self.id = uuid.uuid4().hex
        self._stop = threading.Event()

    def acquire(self) -> None:
        """Takes the lock and starts renewing it; RebalanceError when another holds it."""
        if not self.client.set(LOCK, self.id, nx=True, ex=LOCK_TTL_S):
            raise RebalanceError("another rebalance is under way")
        threading.Thread(target=self._renew, name="rebalance-lock", daemon=True).start()

    def _renew(self) -> None:
        while not self._stop.wait(LOCK_TTL_S / 3):
            try:
                if not self.client.eval(self._RENEW, 1, LOCK, self.id, LOCK_TTL_S):
                    log.warning("the rebalance lock %s was lost (expired or taken)", self.id)
                    return
            except Exception as exc:  # Redis unreachable: the rebalance's own calls fail too
                log.warning("renewing the rebalance lock failed: %s", exc)

    def release(self) -> None:
        self._stop.set()
        self.client.eval(self._RELEASE, 1, LOCK, self.id)

    @staticmethod
    def holder(client) -> str | None:
        """The id of the lock's holder, None when no rebalance is under way."""
        raw = client.get(LOCK)
        return raw.decode() if raw is not None else None


def rebalance(
    topology: Topology,
    user_shards: int | None,
    cell_shards: int | None,
    progress=None,
) -> dict:
    """Move to `user_shards` user shards and `cell_shards` cell shards (None: as now)."""
    client = redis_client.connect(topology.redis_url)
    lock = Lock(client)
    lock.acquire()
    try:
        return run(client, topology, user_shards, cell_shards, progress or Quiet())
    finally:
        lock.release()


def plan(client, topology: Topology, user_shards: int | None, cell_shards: int | None):
    """(the committed topology, the layout to move to): the unfinished rebalance's target if
    there is one (RebalanceError when it aims at other counts), else the counts asked for
    (the committed layout itself, same version, when they are the counts it has)."""
    now = layouts.current(topology, client)
    goal = layouts.target(now, user_shards, cell_shards)
    unfinished = layouts.pending(client)
    if unfinished is None:
        same = all(goal[f] == layouts.layout_of(now)[f] for f in layouts.FAMILIES)
        return now, layouts.layout_of(now) if same else goal
    if any(unfinished[f] != goal[f] for f in layouts.FAMILIES):
        raise RebalanceError(
            f"a rebalance to {len(unfinished['user_shards'])} user and "
            f"{len(unfinished['cell_shards'])} cell shards did not finish; "
            "run that one again first"
        )
    return now, unfinished


def run(client, topology: Topology, user_shards: int | None, cell_shards: int | None, progress):
    """The rebalance itself, by a holder of the lock; each step is told to `progress` (a
    `Quiet`-like object) as it begins."""
    started = time.monotonic()
    now, goal = plan(client, topology, user_shards, cell_shards)
    if goal["version"] == now.version:
        return {"version": now.version, "changed": False, **_counts(goal)}
    steps: dict[str, float] = {}

    def step(name: str) -> None:
        steps[name] = round(time.monotonic() - started - sum(steps.values()), 3)

    progress.step("store target")
    layouts.set_pending(client, goal)
    target = layouts.with_layout(topology, goal)
    todo = plan_of(now, goal)
    c = clients_for(target, follow=False)

    archiving = any(client.exists(Wal(client, n).archived_key) for n in now.user_shards)
    for name in todo.start_users:
        if archiving:
            Wal(client, name).start_archive()  # history gets the new log from its first entry
    nodes = alive_nodes()
    # placed as `occupancy up` places them: users, then cells, round-robin over the nodes
    index = {n: i for i, n in enumerate([*goal["user_shards"], *goal["cell_shards"]])}
    for family, cls, names in (
        ("cell shards", CellShard, todo.start_cells),
        ("user shards", UserShard, todo.start_users),
    ):
        progress.step(f"start {family}")
        cluster.ready(
            [
                cls.options(
                    name=name,
                    namespace=topology.namespace,
                    get_if_exists=True,
                    lifetime="detached",
                    **on_node(nodes, index[name]),
                ).remote(name, target)
                for name in names
            ]
        )
    step("start shards")

    def views_take_the_ring() -> None:
        _each(
            {
                **{n: partial(c.cells.set_layout, n, goal) for n in todo.view_cells},
                **{n: partial(c.spaces.set_layout, n, goal) for n in todo.view_spaces},
            }
        )

    progress.step("views take the ring")
    views_take_the_ring()
    step("views take the ring")
    progress.step("handoff")
    moved: dict[str, dict] = {}

    def handed_off(name: str, report: dict) -> None:
        moved[report["shard"]] = report["moved"]
        progress.handed_off(report["shard"], report["moved"])

    _each({n: partial(c.users.handoff, n, goal) for n in todo.hand_off}, handed_off)
    progress.step("commit")
    layouts.commit(client, goal)
    step("hand off and commit")  # the time batches wait

    progress.step("list and checkpoint")
    views_take_the_ring()  # any view restarted meanwhile
    _each({n: partial(c.users.relist, n) for n in todo.relist})
    _each({n: partial(c.users.checkpoint, n) for n in todo.checkpoint})
    step("list and checkpoint")
    retired = list(todo.retired)
    progress.step("retire shards")
    if retired:
        time.sleep(QUERY_GRACE_S)
        for name in todo.retire_users:
            c.users.kill(name)
        for name in todo.retire_cells:
            c.cells.kill(name)
        step("retire shards")
    seconds = round(time.monotonic() - started, 2)
    log.info("layout %d: %s in %.2f s, moved %s", goal["version"], _counts(goal), seconds, moved)
    return {
        "version": goal["version"],
        "changed": True,
        **_counts(goal),
        "moved": moved,
        "retired": retired,
        "seconds": seconds,
        "steps_s": steps,
    }


def _counts(layout: dict) -> dict:
    return {f: len(layout[f]) for f in ("user_shards", "cell_shards")}


def _each(calls: dict[str, Callable[[], Awaitable]], each_done=None) -> None:
    """Every shard's call at once; the calls of shards that are restarting are sent again
    until RETRY_S has passed. `each_done(name, result)` is called as each shard's result
    arrives."""
    deadline = time.monotonic() + RETRY_S

    async def attempt(names: list[str]) -> list[str]:
        tasks = {name: asyncio.ensure_future(calls[name]()) for name in names}
        again = []
        for name, task in tasks.items():
            try:
                result = await task
            except StateUnavailable:
                raise
            except Unavailable as exc:
                if time.monotonic() > deadline:
                    raise RebalanceError(f"{name} did not answer: {exc}") from exc
                again.append(name)
                continue
            if each_done is not None:
                each_done(name, result)
        return again

    todo = list(calls)
    while todo:
        todo = blocking(attempt(todo))
        if todo:
            time.sleep(0.5)


def check_scale(
    topology: Topology,
    user_shards: int | None,
    cell_shards: int | None,
    ingest_handlers: int | None,
) -> None:
    """Raises fit.DoesNotFit when the actors a scale would start (each priced at the largest
    resident memory of its kind now) do not fit in the nodes' available memory."""
    now = layouts.current(topology, redis_client.connect(topology.redis_url))
    c = clients_for(now, follow=False)
    handlers = cluster.IngestHandlers(topology.namespace)
    adding = price(c.users, c.cells, handlers, user_shards, cell_shards, ingest_handlers)
    if adding:
        fit.check(adding, fit.available_bytes())


def scale_ingest(topology: Topology, handlers: int) -> dict:
    """Run `handlers` gRPC ingest handlers (they share one port; new connections spread over
    them). Handlers stopped here let their calls finish first."""
    if handlers < 1:
        raise ValueError("at least one ingest handler")
    running = cluster.IngestHandlers(topology.namespace)
    names = running.names()
    if not names:
        raise RebalanceError("no ingest handler runs")
    options = running.options(names[0])
    port = options.pop("port")
    for i in range(len(names), handlers):
        start_handler(topology, i, port, detached=True, **options)
    for name in names[handlers:]:
        running.stop(name)
    return {"ingest_handlers": handlers, "port": port}
