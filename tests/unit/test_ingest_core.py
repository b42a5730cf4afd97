"""The ingest core over stand-in shards (no Ray, no Redis): validation, routing to the owning
user shard, re-routing after a rebalance, and what a shard's failure becomes."""

import asyncio
import re
import time

import pytest
import redis
from opentelemetry.metrics import NoOpMeter

from access import keyring
from actors.ingest_core import IngestCore, ShardUnavailable
from engine.record import PingRecord
from engine.routing import door_shard
from observability import telemetry
from protos.occupancy.v1 import occupancy_pb2 as pb
from state import redis_client
from state.layout import StaleLayout, layout_of, target
from state.topology import Topology
from tests.unit.standins import Cluster, Dead, MemoryRedis

T = Topology(redis_url="redis://unused", space_shards=("space-0", "space-1"))


class UserShard:
    """Applies what is routed by its layout version; refuses other versions as a shard does."""

    def __init__(self, name: str, version: int = 0):
        self.name, self.version = name, version
        self.devices: list[int] = []
        self.late: set[int] = set()
        self.fail: Exception | None = None

    def ingest(self, batch: PingRecord) -> bytes:
        if self.fail is not None:
            raise self.fail
        if batch.version != self.version:
            raise StaleLayout(self.name, self.version)
        assert len(batch.ts) == len(batch.cell) == len(batch.lat) == len(batch.dev)
        self.devices += batch.dev
        return bytes(0 if d in self.late else 1 for d in batch.dev)


class SpaceShard:
    def __init__(self):
        self.sensors: list[str] = []

    def door_events(self, batch: dict) -> int:
        self.sensors += batch["sensor"]
        return len(batch["ts"])


def _key(i: int) -> int:
    """Device `d-<i>`'s pseudonym: spread over 63 bits, as random ones are."""
    return (i + 1) * 0x9E3779B97F4A7C15 % 2**63


class Directory:
    """The id directory: a pseudonym for every raw id."""

    async def keys(self, device_ids: list[str]) -> dict[str, int]:
        return {d: _key(int(d.split("-")[1])) for d in device_ids}


@pytest.fixture
def memory(monkeypatch) -> MemoryRedis:
    memory = MemoryRedis()
    monkeypatch.setattr(redis_client, "connect", lambda url, **_: memory)
    monkeypatch.setattr(telemetry, "meter", lambda process, url: NoOpMeter("test"))
    monkeypatch.setattr(keyring, "process_secret", lambda: b"s" * 32)
    return memory


def _cluster(monkeypatch, version: int = 0, users: int = 3) -> Cluster:
    shards = {f"user-{i}": UserShard(f"user-{i}", version) for i in range(users)}
    shards |= {"space-0": SpaceShard(), "space-1": SpaceShard()}
    return Cluster(**shards).install(monkeypatch)


def _core() -> IngestCore:
    core = IngestCore(T, process="test")
    core._ids = Directory()
    return core


def _pings(n: int) -> list[pb.Ping]:
    now = int(time.time() * 1000)
    return [pb.Ping(device_id=f"d-{i}", ts_ms=now, lat=52.66, lng=-8.63) for i in range(n)]


def _sent(cluster: Cluster) -> dict[str, list[int]]:
    return {n: a.devices for n, a in cluster.actors.items() if isinstance(a, UserShard)}


def test_valid_pings_go_to_their_user_shard_and_bad_ones_are_rejected(memory, monkeypatch):
    cluster = _cluster(monkeypatch)
    core = _core()
    pings = _pings(40)
    pings[3].lat = 200.0
    ack = asyncio.run(core.ingest_pings(pings, None, base=10))
    assert (ack.accepted, ack.late, ack.rejected) == (39, 0, 1)
    assert [(r.index, r.reason) for r in ack.rejections] == [(13, "lat_out_of_range")]
    sent = _sent(cluster)
    assert sorted(d for devices in sent.values() for d in devices) == sorted(
        _key(i) for i in range(40) if i != 3
    )
    for shard, devices in sent.items():
        assert all(core.placement.user_shard(d) == shard for d in devices)
    assert len([s for s, devices in sent.items() if devices]) == 2  # the layout's two shards


def test_pings_a_shard_calls_late_are_acked_as_late(memory, monkeypatch):
    cluster = _cluster(monkeypatch)
    for shard in cluster.actors.values():
        if isinstance(shard, UserShard):
            shard.late = {_key(0), _key(1)}
    ack = asyncio.run(_core().ingest_pings(_pings(5), None))
    assert (ack.accepted, ack.late) == (3, 2)


def test_a_batch_refused_for_a_stale_layout_is_routed_again_by_the_committed_one(
    memory, monkeypatch
):
    cluster = _cluster(monkeypatch, version=1)  # every shard is on the next layout already
    core = _core()
    goal = target(T, 3, None)
    memory.commit_layout(goal)
    ack = asyncio.run(core.ingest_pings(_pings(60), None))
    assert ack.accepted == 60
    assert core.topology.version == 1 and core.users.topology.version == 1
    sent = _sent(cluster)
    assert sorted(d for devices in sent.values() for d in devices) == sorted(map(_key, range(60)))
    for shard, devices in sent.items():
        assert all(core.placement.user_shard(d) == shard for d in devices)
    assert sent["user-2"], "the shard the rebalance added gets its devices"
    assert layout_of(core.topology)["user_shards"] == goal["user_shards"]


def test_a_shard_that_is_gone_while_a_newer_layout_is_committed_is_routed_around(
    memory, monkeypatch
):
    cluster = _cluster(monkeypatch, version=1)
    core = _core()
    memory.commit_layout(target(T, 1, None))  # user-1 retired
    cluster.actors["user-1"].fail = Dead()
    ack = asyncio.run(core.ingest_pings(_pings(30), None))
    assert ack.accepted == 30
    assert sorted(_sent(cluster)["user-0"]) == sorted(map(_key, range(30)))


@pytest.mark.parametrize(
    "fail, message",
    [
        (Dead(), "a shard is restarting"),
        (redis.ConnectionError("down"), "write-ahead log (Redis) refused the batch"),
        (None, "the engine is starting"),
    ],
)
def test_a_shard_that_fails_makes_the_batch_retryable(memory, monkeypatch, fail, message):
    cluster = _cluster(monkeypatch)
    if fail is None:
        del cluster.actors["user-1"]
    else:
        cluster.actors["user-1"].fail = fail
    core = _core()
    with pytest.raises(ShardUnavailable, match=re.escape(message)):
        asyncio.run(core.ingest_pings(_pings(30), None))
    assert core.in_flight == 0


def test_door_events_go_to_their_sensors_space_shard(memory, monkeypatch):
    cluster = _cluster(monkeypatch)
    core = _core()
    now = int(time.time() * 1000)
    events = [pb.DoorEvent(sensor_id=f"s-{i}", ts_ms=now, direction=1) for i in range(20)]
    events.append(pb.DoorEvent(sensor_id="s-x", ts_ms=now, direction=3))
    ack = asyncio.run(core.ingest_doors(events, None))
    assert (ack.accepted, ack.rejected) == (20, 1)
    for shard in ("space-0", "space-1"):
        sensors = cluster.actors[shard].sensors
        assert sensors and all(door_shard(s, core.placement) == shard for s in sensors)
    assert sorted(cluster.actors["space-0"].sensors + cluster.actors["space-1"].sensors) == sorted(
        f"s-{i}" for i in range(20)
    )
