"""The engine spread over three Ray nodes, and the loss of a node under a streaming fleet: its
raylet and every process on it killed at once, as when a machine goes.

A worker node: the shards it ran come back on the nodes left, from Redis; clients connected to
its ingest handler reconnect to another on the shared port; every acked ping is in the live
counts, none twice. Then the head, with `occupancy up` on it: the runbook's restart (the head
again with GCS fault tolerance, `occupancy up` again) brings every shard back from Redis.
The tests run in this order on one cluster."""

import time
from collections import Counter

import grpc
import h3.api.basic_int as h3i
import psutil
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.chaos.fleet import Fleet
from tests.multinode.conftest import SHARDS, MultiNode

pytestmark = [pytest.mark.integration, pytest.mark.multinode]

WORLD = "-180,-90,180,90"
# generous bounds on polling, not timing targets: Ray takes ~15 s to declare a node dead (its
# health checks) and others may be running Ray on this machine's two cores meanwhile
RECOVERY_WAIT_S = 300
SETTLE_WAIT_S = 180


def test_shards_and_ingest_handlers_go_round_robin_over_the_nodes(multinode: MultiNode):
    placement = multinode.placement()
    started = ", ".join(f"{k} {v:.0f} s" for k, v in multinode.started_s.items())
    print(f"\nplacement: {placement}; started: {started}; memory of the deployment: "
          f"{multinode.memory_bytes() / 2**30:.2f} GiB")  # fmt: skip
    for kind, n in SHARDS.items():
        assert sum(p[kind] for p in placement.values()) == n, (kind, placement)
    # six shards and three handlers over three nodes: each runs a user shard, a cell or space
    # shard and a handler
    for p in placement.values():
        assert p["UserShard"] == 1 and p["CellShard"] + p["SpaceShard"] == 1, placement
        assert p["IngestServer"] == 1, placement
    # embedded ClickHouse: history stays with the data dir, on the node of `occupancy up`
    assert placement["head"]["History"] == 1, placement


def test_a_worker_node_lost_under_a_fleet_loses_no_acked_ping(multinode: MultiNode):
    m, e = multinode, multinode.engine
    placement = m.placement()
    victim = _victim(placement)
    epochs = {s["shard"]: s["epoch"] for s in _status(m)["shards"] if "epoch" in s}
    assert len(epochs) == SHARDS["UserShard"], epochs
    handler = m.cluster.node(victim).actors("IngestServer")[0]
    # one fleet is connected to the victim's handler, one wherever the kernel put it
    fleets = [_fleet_on(handler, m, seed=11), Fleet(
        e.grpc_port, e.keys["ingest"], seed=12, oracle=m.oracle, own_connection=True
    )]  # fmt: skip
    for fleet in fleets:
        fleet.start()
    time.sleep(3)
    killed_pids = m.cluster.kill(victim)
    killed = time.monotonic()
    back = [f.await_ack_after(killed, timeout_s=RECOVERY_WAIT_S) for f in fleets]
    recovery = _recovery_s(fleets, killed) if all(back) else float("nan")
    time.sleep(5)  # ingest goes on after the recovery
    for fleet in fleets:
        fleet.stop()
    codes = sum((f.codes for f in fleets), start=Counter())
    print(
        f"\nkilled {victim} ({len(killed_pids)} processes; it ran {placement[victim]}): "
        f"ingest back after {recovery:.1f} s; calls {dict(codes)}; "
        f"{sum(len(f.acked_pings) for f in fleets):,} pings acked"
    )
    assert all(back), [f.codes for f in fleets]
    assert fleets[0].acked_since(killed)  # the victim's client reconnected to another handler
    # refused calls said "retry" (UNAVAILABLE), never UNKNOWN or INTERNAL
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes

    # every shard and handler the node ran runs again on the nodes left
    _wait_for(
        lambda: _restarted(m),
        "the lost node's actors running again elsewhere",
        state=lambda: {"expected": SHARDS, "by node": m.placement()},
    )
    restarted = time.monotonic() - killed
    # the user shards it ran came back from Redis: a new epoch, holding their devices again
    lost_users = placement[victim]["UserShard"]

    def users_back() -> bool:
        shards = [s for s in _status(m)["shards"] if s["shard"] in epochs]
        rose = [s for s in shards if s.get("epoch", -1) > epochs[s["shard"]]]
        return len(rose) == lost_users and all(s.get("devices", 0) > 0 for s in shards)

    _wait_for(users_back, f"{lost_users} user shard(s) restarted with their devices")
    _agrees_with_oracle(m)
    exact = time.monotonic() - killed
    # and it takes new clients: health SERVING, a fresh connection acked
    with grpc.insecure_channel(f"127.0.0.1:{e.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    late = Fleet(e.grpc_port, e.keys["ingest"], seed=13, oracle=m.oracle, own_connection=True)
    late.start()
    assert late.await_ack_after(time.monotonic() - 1, timeout_s=RECOVERY_WAIT_S), late.codes
    late.stop()
    _agrees_with_oracle(m)
    print(
        f"every actor running again by {restarted:.1f} s after the kill, live counts exact "
        f"by {exact:.1f} s; memory of the deployment on the two nodes left: "
        f"{m.memory_bytes() / 2**30:.2f} GiB"
    )


def test_the_head_lost_and_started_again_takes_every_acked_ping_back(multinode: MultiNode):
    """The runbook's head loss: the head's Ray processes and `occupancy up` (which owns the
    actors) killed at once; `ray start --head` again on the same port with the same GCS Redis
    (the worker nodes left reconnect), then `occupancy up` again on the same Redis and data
    dir. Every shard comes back from Redis; the fleet's client reconnects on the same port.

    Before the loss `occupancy scale` adds user shards and handlers: those are detached (the
    cluster owns them, not `occupancy up`), so the ones on the worker node outlive the head
    with handles to actors that are gone; the new `occupancy up` stops them first."""
    m, old = multinode, multinode.engine
    scaled = requests.post(
        f"http://127.0.0.1:{old.http_port}/v1/admin/scale",
        json={"user_shards": 5, "ingest_handlers": 5},
        headers={"authorization": f"Bearer {old.keys['admin']}"},
        timeout=600,
    )
    assert scaled.status_code == 202, scaled.text
    _wait_for(lambda: _status(m).get("rebalance", {}).get("state") == "done", "the scale done")
    expected = SHARDS | {"UserShard": 5, "IngestServer": 5}
    _wait_for(
        lambda: _restarted(m, expected),
        "the scaled shards and handlers running",
        state=lambda: {"expected": expected, "by node": m.placement()},
    )
    epochs = {s["shard"]: s["epoch"] for s in _status(m)["shards"] if "epoch" in s}
    assert len(epochs) == expected["UserShard"], epochs
    fleet = Fleet(old.grpc_port, old.keys["ingest"], seed=21, oracle=m.oracle,
                  own_connection=True)  # fmt: skip
    fleet.start()
    time.sleep(3)
    old.proc.kill()
    m.cluster.kill("head")
    killed = time.monotonic()
    workers = [n for n in m.cluster.workers if not n.killed]
    m.cluster.restart_head()
    m.cluster.wait_alive(1 + len(workers))
    head_s = time.monotonic() - killed
    m.start_engine(OCC_GRPC_PORT=str(old.grpc_port), OCC_HTTP_PORT=str(old.http_port))
    engine_s = time.monotonic() - killed
    back = fleet.await_ack_after(killed, timeout_s=RECOVERY_WAIT_S)
    recovery = _recovery_s([fleet], killed) if back else float("nan")
    time.sleep(3)
    fleet.stop()
    print(
        f"\nhead killed: Ray's head up again after {head_s:.1f} s, `occupancy up` done after "
        f"{engine_s:.1f} s, ingest back after {recovery:.1f} s; calls {dict(fleet.codes)}"
    )
    assert back, fleet.codes
    assert set(fleet.codes) <= {"OK", "UNAVAILABLE"}, fleet.codes
    # the shard layout is in Redis (5 user shards); the handler count is OCC_INGEST_HANDLERS
    # again, the detached handlers having been stopped with the rest
    after = expected | {"IngestServer": SHARDS["IngestServer"]}
    _wait_for(
        lambda: _restarted(m, after),
        f"every shard and handler running again: {after}",
        state=lambda: {"by node": m.placement()},
    )

    # every user shard is a new one, from Redis: those `occupancy up` started went with it, and
    # the detached ones were started again with them
    def all_new() -> bool:
        after = {s["shard"]: s.get("epoch", -1) for s in _status(m)["shards"]}
        return all(after.get(n, -1) > e for n, e in epochs.items())

    _wait_for(all_new, "every user shard started again from Redis (a new epoch)")
    # every handler takes batches: none routes them to a shard that is gone
    for node in m.cluster.nodes:
        for handler in [] if node.killed else node.actors("IngestServer"):
            client = _fleet_on(handler, m, seed=22)
            client.start()
            assert client.await_ack_after(time.monotonic(), SETTLE_WAIT_S), client.codes
            client.stop()
    _agrees_with_oracle(m)
    print(f"placement after: {m.placement()}")


def _victim(placement: dict[str, dict[str, int]]) -> str:
    """The worker node to kill: one running a user shard and an ingest handler (the ingest
    path), preferring one that also runs a cell shard (a view rebuilt elsewhere)."""
    candidates = [
        (p["CellShard"], p["SpaceShard"], name)
        for name, p in placement.items()
        if name != "head" and p["UserShard"] and p["IngestServer"]
    ]
    assert candidates, f"no worker node runs a user shard and an ingest handler: {placement}"
    return max(candidates)[-1]


def _fleet_on(handler: psutil.Process, m: MultiNode, seed: int) -> Fleet:
    """A fleet whose connection the kernel gave to `handler` (SO_REUSEPORT spreads new
    connections over the handlers on the port: new ones are opened until one lands there)."""
    e = m.engine
    for _ in range(200):
        fleet = Fleet(e.grpc_port, e.keys["ingest"], seed=seed, oracle=m.oracle,
                      own_connection=True)  # fmt: skip
        mine = _client_ports(e.grpc_port)
        grpc.channel_ready_future(fleet.channel).result(timeout=30)
        mine = _client_ports(e.grpc_port) - mine
        served = {
            c.raddr.port
            for c in handler.net_connections(kind="tcp")
            if c.laddr.port == e.grpc_port and c.raddr
        }
        if mine & served:
            return fleet
        fleet.channel.close()
    raise AssertionError("no connection reached the handler on the node to kill")


def _client_ports(port: int) -> set[int]:
    """The local ports of this process's connections to `port`."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }


def _recovery_s(fleets: list[Fleet], killed: float) -> float:
    """Seconds from the kill to the first ack after the first call it refused (to the first
    ack after the kill if none was refused)."""
    failed = [t for f in fleets for t in f.failed_at if t > killed]
    since = min(failed, default=killed)
    acked = [t for f in fleets for t in f.acked_at if t > since]
    return min(acked) - killed


def _restarted(m: MultiNode, expected: dict[str, int] = SHARDS) -> bool:
    """Whether every actor of `expected` (kind → count) runs, on the nodes alive."""
    placement = m.placement()
    return all(sum(p[kind] for p in placement.values()) == n for kind, n in expected.items())


def _status(m: MultiNode) -> dict:
    r = _get(m, "/v1/admin/status", "admin")
    return r.json() if r.status_code == 200 else {"shards": []}


def _get(m: MultiNode, path: str, role: str, **params) -> requests.Response:
    """A query to the HTTP API; a connection refused or reset (the Serve replica or proxy
    that served it was on the lost node) is answered like a 503."""
    url = f"http://127.0.0.1:{m.engine.http_port}{path}"
    headers = {"authorization": f"Bearer {m.engine.keys[role]}"}
    try:
        return requests.get(url, params=params, headers=headers, timeout=30)
    except requests.ConnectionError:
        r = requests.Response()
        r.status_code = 503
        return r


def _wait_for(check, what: str, timeout_s: float = SETTLE_WAIT_S, state=None) -> None:
    """Wait for `check()`; on a timeout the message carries `state()` (what was seen)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            seen = f"; seen: {state()}" if state is not None else ""
            raise AssertionError(f"not seen within {timeout_s:.0f} s: {what}{seen}")
        time.sleep(1)


def _agrees_with_oracle(m: MultiNode, timeout_s: float = SETTLE_WAIT_S) -> None:
    """The live heatmap equals the oracle's counts of every ping the fleets had acked (and
    tried): 0 lost, 0 counted twice. Read until equal: the views rebuild from the user shards
    asynchronously."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = int(time.time() * 1000)
        r = _get(m, "/v1/heatmap", "viewer", bbox=WORLD, res=9)
        expected = m.oracle.counts(9, now, now)
        if r.status_code == 200:
            cells = {h3i.str_to_int(c["cell"]): c["count"] for c in r.json()["cells"]}
            if cells == expected:
                return
        if time.monotonic() > deadline:
            if r.status_code != 200:
                raise AssertionError((r.status_code, r.text))
            keys = cells.keys() | expected.keys()
            lost = sum(max(0, expected.get(c, 0) - cells.get(c, 0)) for c in keys)
            twice = sum(max(0, cells.get(c, 0) - expected.get(c, 0)) for c in keys)
            raise AssertionError(f"{lost} lost, {twice} counted twice")
        time.sleep(0.5)
