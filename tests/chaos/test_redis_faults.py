"""Redis killed and stalled under a streaming fleet, against `occupancy up` as an operator runs
it: the engine comes back by itself, answers UNAVAILABLE and 503 (never UNKNOWN or a bare 500)
meanwhile, and every acked ping is in its live counts afterwards."""

import os
import signal
import time

import grpc
import h3.api.basic_int as h3i
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.chaos.fleet import Fleet
from tests.chaos.processes import actors, redis_of, redis_server
from tests.engine_process import EngineProcess
from tests.oracle import Oracle

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

WORLD = "-180,-90,180,90"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = EngineProcess(tmp_path_factory.mktemp("chaos-redis"))
    e.oracle = Oracle()  # of every fleet sent at this engine
    yield e
    e.stop()


def _heatmap(engine: EngineProcess) -> tuple[int, dict]:
    r = requests.get(
        f"http://127.0.0.1:{engine.http_port}/v1/heatmap",
        params={"bbox": WORLD, "res": 9},
        headers={"authorization": f"Bearer {engine.keys['viewer']}"},
        timeout=30,
    )
    if r.status_code != 200:
        return r.status_code, r.json()
    return 200, {h3i.str_to_int(c["cell"]): c["count"] for c in r.json()["cells"]}


def _agrees_with_oracle(engine: EngineProcess, fleet: Fleet, timeout_s: float = 30) -> None:
    """The live heatmap equals the oracle's counts of everything the fleet had acked (and
    tried): membership travels to the cell shards asynchronously, so it is read until equal."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = int(time.time() * 1000)
        status, cells = _heatmap(engine)
        expected = fleet.oracle.counts(9, now, now)
        if status == 200 and cells == expected:
            return
        if time.monotonic() > deadline:
            diff = {c: (cells.get(c), expected.get(c)) for c in cells.keys() | expected.keys()
                    if status == 200 and cells.get(c) != expected.get(c)}  # fmt: skip
            raise AssertionError((status, diff if status == 200 else cells))
        time.sleep(0.2)


def _grpc_health(engine: EngineProcess) -> int | None:
    """The gRPC health status of the server and of both ingest service names, when they agree
    (they are set together); None when the check itself got no answer in time (a handler whose
    event loop waits on a stalled Redis for up to its command timeout)."""
    with grpc.insecure_channel(f"127.0.0.1:{engine.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            statuses = {
                stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
                for name in ("", "occupancy.v1.IngestService", "occupancy.v1.Ingest")
            }
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            return None
    assert len(statuses) == 1, statuses
    return statuses.pop()


def test_redis_killed_under_a_fleet_comes_back_by_itself_with_every_acked_ping(engine):
    fleet = Fleet(engine.grpc_port, engine.keys["ingest"], seed=1, oracle=engine.oracle)
    fleet.start()
    time.sleep(3)
    victim = redis_server(engine)
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    victim.wait(10)
    back = fleet.await_ack_after(killed)
    time.sleep(2)
    fleet.stop()
    assert back, fleet.codes
    restarted = redis_server(engine)
    assert restarted.pid != victim.pid
    # refused calls said "retry" (UNAVAILABLE), never UNKNOWN
    assert set(fleet.codes) <= {"OK", "UNAVAILABLE"}, fleet.codes
    _agrees_with_oracle(engine, fleet)
    health = requests.get(f"http://127.0.0.1:{engine.http_port}/v1/health", timeout=30)
    assert health.status_code == 200, health.text
    assert _grpc_health(engine) == health_pb2.HealthCheckResponse.SERVING


def test_a_stalled_redis_fails_calls_fast_and_everything_resumes_after(engine):
    fleet = Fleet(engine.grpc_port, engine.keys["ingest"], seed=2, oracle=engine.oracle)
    fleet.start()
    time.sleep(2)
    server = redis_server(engine)
    server.send_signal(signal.SIGSTOP)
    stalled = time.monotonic()
    try:
        # ingest refuses with UNAVAILABLE (the log's command timeout), it does not hang
        while not fleet.failed_at and time.monotonic() - stalled < 15:
            time.sleep(0.1)
        assert fleet.failed_at, fleet.codes
        # health says which dependency is down; load balancers see NOT_SERVING
        health = requests.get(f"http://127.0.0.1:{engine.http_port}/v1/health", timeout=30)
        assert health.status_code == 503 and health.headers["retry-after"]
        assert health.json()["checks"]["redis"].startswith("error"), health.json()
        while _grpc_health(engine) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() - stalled < 40, "gRPC health never said NOT_SERVING"
            time.sleep(0.2)
        # a query answers from the shards' memory, or 503 with the envelope: never a 500
        status, body = _heatmap(engine)
        assert status == 200 or (status == 503 and body["error"]["code"]), (status, body)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    resumed = time.monotonic()
    back = fleet.await_ack_after(resumed)
    time.sleep(1)
    fleet.stop()
    assert back, fleet.codes
    assert set(fleet.codes) <= {"OK", "UNAVAILABLE"}, fleet.codes
    _agrees_with_oracle(engine, fleet)
    while _grpc_health(engine) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() - resumed < 40, "gRPC health stayed NOT_SERVING"
        time.sleep(0.2)


def test_a_flushed_redis_is_noticed_and_every_acked_ping_survives_a_restart_after(engine):
    client = redis_of(engine)
    keys_before = client.hlen("occ:keys")
    fleet = Fleet(engine.grpc_port, engine.keys["ingest"], seed=3, oracle=engine.oracle)
    fleet.start()
    time.sleep(2)
    client.flushall()
    flushed = time.monotonic()
    # the shards notice within seconds and write their checkpoints again from memory
    while not all(client.exists(f"occ:ckpt:user-{i}") for i in range(2)):
        assert time.monotonic() - flushed < 30, "no checkpoint written after the flush"
        time.sleep(0.2)
    time.sleep(2)
    fleet.stop()
    assert set(fleet.codes) <= {"OK", "UNAVAILABLE"}, fleet.codes
    assert fleet.acked_since(flushed)
    assert client.hlen("occ:keys") == keys_before  # written back from history's copy
    _agrees_with_oracle(engine, fleet)
    while _redis_losses_counted(engine) < 1:  # the loss is counted (alert OccupancyRedisLost)
        assert time.monotonic() - flushed < 60, "no process counted the loss"
        time.sleep(1)
    # what was written after the flush is enough: every user shard restarts from it
    victims = actors(engine, "UserShard")
    assert len(victims) == 2, victims
    for p in victims:
        p.send_signal(signal.SIGKILL)
    _agrees_with_oracle(engine, fleet, timeout_s=90)


def _redis_losses_counted(engine: EngineProcess) -> float:
    """occupancy_redis_lost_total summed over the processes, as /metrics shows it (each
    process exports its counters every few seconds)."""
    text = requests.get(f"http://127.0.0.1:{engine.http_port}/metrics", timeout=30).text
    lines = [line for line in text.splitlines() if line.startswith("occupancy_redis_lost_total")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)
