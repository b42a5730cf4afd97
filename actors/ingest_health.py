"""An ingest handler's gRPC health (`grpc.health.v1`): SERVING while it can take pings."""

import asyncio
import logging
from collections.abc import Iterable

import redis
import redis.asyncio
from grpc_health.v1 import health, health_pb2

from clients.errors import Unavailable
from clients.family import Layout
from clients.users import UserShards
from state import redis_client
from state.layout import committed_async, with_layout
from state.topology import Topology

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
PROBE_TIMEOUT_S = 1.0  # a dependency slower than this to answer a trivial call is down
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class IngestHealth:
    """The health status of the server ("") and of each ingest service name, kept together.

    SERVING while a ping sent now could be acked: Redis (every shard's log) answers, and every
    user shard of the committed layout answers within PROBE_TIMEOUT_S (the same checks as the
    HTTP API's /v1/health makes of them). NOT_SERVING otherwise, and SERVING again once both
    answer. Checked every CHECK_EVERY_S, at once after a call failed with UNAVAILABLE
    (`suspect`), never per ping. Once `drain` is called (the handler stops), NOT_SERVING for
    good. Space shards (door events only) are not part of it: a door counter's call to one that
    is down gets UNAVAILABLE.
    """

    def __init__(
        self,
        topology: Topology,
        services: Iterable[str],
        servicer: health.aio.HealthServicer | None = None,
        users: UserShards | None = None,
        store: redis.asyncio.Redis | None = None,
    ):
        self.topology = topology
        self.names = ("", *services)
        self.servicer = servicer or health.aio.HealthServicer()
        self.users = users or UserShards(Layout(topology, follow=False))
        self.store = store or redis_client.connect_async(topology.redis_url, PROBE_TIMEOUT_S)
        self.serving: bool | None = None  # None: not checked yet
        self.draining = False
        self._wake = asyncio.Event()

    async def problems(self) -> list[str]:
        """What keeps a ping from being acked now (none: SERVING)."""
        try:
            await self._follow_layout()
            for _ in range(2):
                probed = self.topology.version
                try:
                    await asyncio.wait_for(self.users.pids(), PROBE_TIMEOUT_S)
                    return []
                except (Unavailable, TimeoutError) as exc:
                    found = [f"a user shard does not answer ({type(exc).__name__}: {exc})"]
                # a rebalance that committed meanwhile may have retired the shard that failed:
                # the shards of its layout are asked before NOT_SERVING is said
                await self._follow_layout()
                if self.topology.version == probed:
                    break
            return found
        except (redis.RedisError, TimeoutError) as exc:
            return [f"Redis does not answer ({type(exc).__name__}: {exc})"]

    async def _follow_layout(self) -> None:
        """The user shards to ask are those of the committed layout (one Redis read)."""
        layout = await asyncio.wait_for(committed_async(self.store), PROBE_TIMEOUT_S)
        if layout is not None and layout["version"] > self.topology.version:
            self.topology = with_layout(self.topology, layout)
            self.users.topology = self.topology

    async def check(self) -> bool:
        """Check now and set the status; whether it is SERVING."""
        found = await self.problems()
        await self._set(not found, "; ".join(found))
        return bool(self.serving)

    async def follow(self) -> None:
        """Check every CHECK_EVERY_S (sooner when suspected) until cancelled."""
        while not self.draining:
            try:
                await self.check()
            except Exception:  # a bug here must not end the following
                log.exception("health check failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), CHECK_EVERY_S)
            except TimeoutError:
                pass

    def suspect(self) -> None:
        """A call failed as a lost dependency does: check now, not at the next round."""
        self._wake.set()

    async def drain(self) -> None:
        """NOT_SERVING for good, on every name: clients and balancers watching go elsewhere
        while the handler finishes its calls."""
        self.draining = True
        self.serving = False
        await self.servicer.enter_graceful_shutdown()
        log.warning("ingest handler draining: health NOT_SERVING")

    async def _set(self, serving: bool, why: str) -> None:
        if serving == self.serving or self.draining:
            return
        first = self.serving is None
        self.serving = serving
        for name in self.names:
            await self.servicer.set(name, SERVING if serving else NOT_SERVING)
        if not serving:
            log.warning("ingest health NOT_SERVING: %s", why)
        elif not first:
            log.warning("ingest health SERVING again")
