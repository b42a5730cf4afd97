"""Integration tier: one real engine per session (Ray, embedded Redis, gRPC over loopback)."""

import socket
import time

import grpc
import pytest

from clients.queries import LiveQueries
from occupancy.runtime import Engine
from occupancy.settings import Settings
from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg
from state.id_directory import IdDirectory
from tests.oracle import Oracle
from tests.workload import DOOR_SPACES, POLYGON_SPACES

pytestmark = pytest.mark.integration


class Live:
    """The running engine with a gRPC client and an oracle fed with everything it was sent."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.key = engine.create_key("ingest", "tests")
        self.admin = engine.create_key("admin", "tests")
        self.viewer = engine.create_key("viewer", "tests")
        self.http = f"http://127.0.0.1:{engine.http_port}"
        self.channel = grpc.insecure_channel(f"127.0.0.1:{engine.grpc_port}")
        self.stub = pbg.IngestServiceStub(self.channel)
        self.queries = LiveQueries(engine.topology)
        spec = engine.topology.engine_spec()
        self.oracle = Oracle(
            res=spec.res,
            ttl_ms=spec.ttl_ms,
            max_skew_ms=spec.limits.max_skew_ms,
            max_age_ms=spec.limits.max_age_ms,
        )

    @property
    def auth(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.key}")]

    def send(self, pings: list[pb.Ping], retries: int = 50, stub=None) -> pb.SendPingsResponse:
        """SendPings until it is acked (a restarting shard answers UNAVAILABLE); the oracle
        sees every attempt, as the engine may have logged part of a failed one. `stub`: a
        client on another connection than the shared one."""
        stub = stub or self.stub
        for _ in range(retries):
            now = int(time.time() * 1000)
            for p in pings:
                self.oracle.ping(now, p.device_id, p.ts_ms, p.lat, p.lng, dict(p.attributes))
            try:
                return stub.SendPings(
                    pb.SendPingsRequest(pings=pings), metadata=self.auth, timeout=30
                )
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                last = exc.details()
                time.sleep(0.2)
        raise AssertionError(f"the engine did not come back: {last}")

    def doors(self, events: list[pb.DoorEvent]) -> pb.SendDoorEventsResponse:
        ack = self.stub.SendDoorEvents(
            pb.SendDoorEventsRequest(events=events), metadata=self.auth, timeout=30
        )
        now = int(time.time() * 1000)
        rejected = {r.index for r in ack.rejections}
        for i, e in enumerate(events):
            if i not in rejected:
                self.oracle.door_event(now, e.sensor_id, e.ts_ms, e.direction)
        return ack

    def q(self, coro):
        return self.queries.sync(coro)

    def pseudonym(self, device_id: str) -> int | None:
        """The device's pseudonym, from the id directory (None: never seen, or forgotten)."""
        return IdDirectory(self.engine.client()).lookup(device_id)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("engine"),
        grpc_port=0,
        osmand_port=0,
        http_port=_free_port(),
        k_min=2,
        user_shards=2,
        cell_shards=2,
        space_shards=2,
        checkpoint_interval_s=1.0,
        # devices of earlier tests leave memory while later ones run: every check against the
        # oracle also checks answers that come from history for what live state evicted
        snapshot_interval_s=3.0,
        live_minutes=1,
        audit_window_s=2.0,  # refused requests and gRPC calls reach the audit log within seconds
        stream_heartbeat_s=2.0,  # an idle live stream's heartbeat is seen within seconds
    )
    engine = Engine(settings).start()
    try:
        yield Live(engine)
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def spaces(live):
    """The test spaces, doorways and sensors, defined once in the engine and the oracle."""
    start = int(time.time() * 1000) - 3_600_000
    for space, polygon in POLYGON_SPACES.items():
        live.engine.define_polygon_space(space, polygon)
        live.oracle.define_polygon_space(space, polygon)
    for target in (live.engine, live.oracle):
        for space in DOOR_SPACES:
            target.define_door_space(space)
        target.define_doorway("d-room", "room", "hall")
        target.define_doorway("d-front", "hall", None)
        target.install("s1", "d-front", start, "in")
        target.install("s2", "d-room", start, "out")
        target.install("s2", "d-front", start + 1_800_000, "in")  # moved half an hour ago
    return live
