"""The base of the typed clients: actors looked up by name, the layout followed, errors mapped.

Every client method that waits for an answer is a coroutine: async code (the HTTP API's
replicas, the ingest core's loop, an async actor) awaits it; a thread (the history actor, a
rebalance, the runtime) runs it with `blocking(coro, timeout_s)`, on an event loop of its own.
Sends that wait for no answer (membership updates) are plain methods. Whatever the way, a call
raises the engine's errors only (`clients.errors.mapped`): `Unavailable` when the actor is
dead, restarting or not started, `StateUnavailable` when Redis did not answer, and the
actor's own exceptions (`StaleLayout`, `HistoryUnavailable`, `ValueError`, ...) as themselves.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import ray
import redis

from clients.errors import NotStarted, mapped
from state import redis_client
from state.layout import current
from state.topology import Topology

LAYOUT_CHECK_S = 1.0
T = TypeVar("T")


def blocking(coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
    """Run one client call to its end from a thread that runs no event loop; TimeoutError
    after `timeout_s`."""
    if timeout_s is not None:
        return asyncio.run(asyncio.wait_for(coro, timeout_s))
    return asyncio.run(coro)


def _raise_mapped(exc: BaseException):
    engine = mapped(exc)
    if engine is exc:
        raise exc
    raise engine from exc


class Layout:
    """The shard layout a process routes by. `follow=True` (queries, definitions): the
    committed layout in Redis, read at most once every LAYOUT_CHECK_S, so a rebalance shows
    within a second. `follow=False` (shards, ingest, history): the layout its owner sets with
    `use`, as the owner's own protocol decides. Clients built together share one."""

    def __init__(self, topology: Topology, follow: bool = True, client: redis.Redis | None = None):
        self.topology = topology
        self.follow = follow
        self._client = client
        self._checked = 0.0

    def fresh(self) -> Topology:
        if self.follow and time.monotonic() - self._checked > LAYOUT_CHECK_S:
            try:
                self.refresh()
            except redis.RedisError:  # no rebalance commits while Redis is down: live
                self._checked = time.monotonic()  # answers go on from the shards' memory
        return self.topology

    def refresh(self) -> Topology:
        """The committed layout now, if a rebalance changed it (RedisError when Redis is
        down)."""
        self._checked = time.monotonic()
        if self._client is None:
            self._client = redis_client.connect(self.topology.redis_url)
        self.topology = current(self.topology, self._client)
        return self.topology

    def use(self, topology: Topology) -> None:
        self.topology = topology


class Family:
    """Actors of one kind, by name. Handles are cached, and looked up again under a new
    layout version (a shard retired by one rebalance and started again by a later one is
    another actor)."""

    def __init__(self, layout: Layout | Topology):
        self.layout = layout if isinstance(layout, Layout) else Layout(layout)
        self._handles: dict[str, ray.actor.ActorHandle] = {}
        self._version = self.layout.topology.version

    @property
    def topology(self) -> Topology:
        return self.layout.topology

    @topology.setter
    def topology(self, topology: Topology) -> None:
        self.layout.use(topology)

    def handle(self, name: str) -> ray.actor.ActorHandle:
        """The actor named `name`; NotStarted while no actor has that name (an engine
        starting again after its `occupancy up` was lost, a shard a rebalance starts)."""
        topology = self.layout.topology
        if topology.version != self._version:
            self._handles.clear()
            self._version = topology.version
        h = self._handles.get(name)
        if h is None:
            try:
                h = ray.get_actor(name, namespace=topology.namespace)
            except ValueError as exc:
                raise NotStarted(f"no actor {name} runs (yet); retry") from exc
            self._handles[name] = h
        return h

    def running(self, names: Iterable[str]) -> list[str]:
        """Those of `names` an actor has."""
        out = []
        for name in names:
            try:
                self.handle(name)
            except NotStarted:
                continue
            out.append(name)
        return out

    def kill(self, name: str) -> None:
        """Stop the actor for good (a retired shard): Ray does not restart it."""
        ray.kill(self.handle(name), no_restart=True)

    async def _one(self, name: str, call: Callable[[Any], Awaitable[T]]) -> T:
        try:
            return await call(self.handle(name))
        except Exception as exc:
            _raise_mapped(exc)

    async def _each(self, names: Iterable[str], call: Callable[[Any], Awaitable[T]]) -> list[T]:
        """`call` on every actor of `names` at once; their answers in that order."""
        try:
            return list(await asyncio.gather(*(call(self.handle(n)) for n in names)))
        except Exception as exc:
            _raise_mapped(exc)

    def _send(self, name: str, call: Callable[[Any], object]) -> None:
        """A call whose answer nobody waits for (its receiver repairs a lost one)."""
        try:
            call(self.handle(name))
        except Exception as exc:
            _raise_mapped(exc)


class Shards(Family):
    """A shard family of the layout: what every shard answers (its figures, its pid)."""

    def names(self) -> tuple[str, ...]:
        raise NotImplementedError

    async def stats(self, shard: str) -> dict:
        return await self._one(shard, lambda s: s.stats.remote())

    async def stats_all(self) -> list[dict]:
        return await self._each(self.names(), lambda s: s.stats.remote())

    async def pids(self) -> list[int]:
        return await self._each(self.names(), lambda s: s.pid.remote())
