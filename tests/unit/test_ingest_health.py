"""An ingest handler's gRPC health follows whether it can take pings: Redis answering and every
user shard of the committed layout answering; NOT_SERVING for good once it drains. The real
health servicer and user-shard client, over stand-in shards (tests/unit/standins.py) and a
stand-in Redis."""

import asyncio

import pytest
import redis
from grpc_health.v1 import health_pb2

from actors import ingest_health
from actors.ingest_health import IngestHealth
from actors.ingest_rpc import DEPRECATED, SERVICE
from clients.family import Layout
from clients.users import UserShards
from state.layout import COMMITTED
from state.topology import Topology
from state.wal import pack
from tests.unit.standins import Cluster, Dead

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NAMES = ("", SERVICE, DEPRECATED)


class Shard:
    def __init__(self):
        self.dead = False

    def pid(self) -> int:
        if self.dead:
            raise Dead()
        return 1


class Store:
    """The one read the health makes of Redis: the committed layout."""

    def __init__(self):
        self.data: dict[str, bytes] = {}
        self.down = False

    async def get(self, key):
        if self.down:
            raise redis.ConnectionError("Connection refused")
        return self.data.get(key)


@pytest.fixture
def cluster(monkeypatch) -> Cluster:
    return Cluster(**{"user-0": Shard(), "user-1": Shard()}).install(monkeypatch)


@pytest.fixture
def store() -> Store:
    return Store()


def _health(store: Store) -> IngestHealth:
    topology = Topology(redis_url="redis://unused")
    users = UserShards(Layout(topology, follow=False))
    return IngestHealth(topology, (SERVICE, DEPRECATED), users=users, store=store)


async def _statuses(health: IngestHealth) -> set[int]:
    replies = [
        await health.servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
        for name in NAMES
    ]
    return {r.status for r in replies}


def test_serving_while_redis_and_every_user_shard_answer(cluster, store):
    async def run():
        health = _health(store)
        assert await health.check()
        assert await _statuses(health) == {SERVING}
        store.down = True
        assert not await health.check()
        assert await _statuses(health) == {NOT_SERVING}
        assert "Redis" in (await health.problems())[0]
        store.down = False
        assert await health.check()
        cluster.actors["user-1"].dead = True
        assert not await health.check()
        assert await _statuses(health) == {NOT_SERVING}
        assert "user shard" in (await health.problems())[0]
        cluster.actors["user-1"].dead = False
        assert await health.check()
        assert await _statuses(health) == {SERVING}

    asyncio.run(run())


def test_the_user_shards_are_those_of_the_committed_layout(cluster, store):
    async def run():
        health = _health(store)
        assert await health.check()
        # a rebalance committed a third shard: not running yet, then running
        layout = {"version": 1, "user_shards": ["user-0", "user-1", "user-2"]}
        store.data[COMMITTED] = pack(
            {**layout, "cell_shards": ["cell-0", "cell-1"], "space_shards": ["space-0"]}
        )
        assert not await health.check()
        cluster.actors["user-2"] = Shard()
        assert await health.check()
        assert health.users.names() == ("user-0", "user-1", "user-2")

    asyncio.run(run())


class RetiredShard:
    """A shard a rebalance retires while the health asks it: the layout without it is
    committed, then the shard is gone."""

    def __init__(self, store: Store):
        self.store = store

    def pid(self) -> int:
        self.store.data[COMMITTED] = pack(
            {
                "version": 1,
                "user_shards": ["user-0", "user-2"],
                "cell_shards": ["cell-0", "cell-1"],
                "space_shards": ["space-0"],
            }
        )
        raise Dead()


def test_a_shard_retired_under_the_check_is_not_a_failure(cluster, store):
    async def run():
        health = _health(store)
        cluster.actors["user-1"] = RetiredShard(store)
        cluster.actors["user-2"] = Shard()
        assert await health.check()
        assert health.users.names() == ("user-0", "user-2")

    asyncio.run(run())


def test_a_draining_handler_is_not_serving_for_good(cluster, store):
    async def run():
        health = _health(store)
        assert await health.check()
        await health.drain()
        assert await _statuses(health) == {NOT_SERVING}
        assert not await health.check()  # its dependencies answer; it is leaving all the same
        assert await _statuses(health) == {NOT_SERVING}

    asyncio.run(run())


def test_a_failed_call_has_the_health_checked_at_once(cluster, store, monkeypatch):
    monkeypatch.setattr(ingest_health, "CHECK_EVERY_S", 3600.0)  # no round would come

    async def run():
        health = _health(store)
        follower = asyncio.ensure_future(health.follow())
        try:
            await asyncio.sleep(0.05)
            assert await _statuses(health) == {SERVING}
            cluster.actors["user-0"].dead = True
            await asyncio.sleep(0.05)
            assert await _statuses(health) == {SERVING}  # not checked again yet
            health.suspect()
            await asyncio.sleep(0.05)
            assert await _statuses(health) == {NOT_SERVING}
        finally:
            follower.cancel()

    asyncio.run(run())
