"""The client library against the real engine: IngestClient and AsyncIngestClient batch by size
and by time, retry across UNAVAILABLE and RESOURCE_EXHAUSTED (a real gRPC server on loopback
refuses the first calls, then forwards to the engine), speak TLS, and name their rejections;
QueryClient and AsyncQueryClient answer with typed results equal to the oracle."""

import asyncio
import random
import time

import grpc
import pytest
import ray

from clients.history import NAME as HISTORY
from engine.cells import to_str
from occupancy.client import (
    ApiError,
    AsyncIngestClient,
    AsyncQueryClient,
    Backoff,
    IngestClient,
    IngestError,
    QueryClient,
)
from occupancy.client import results as r
from occupancy.client.batching import ping
from tests.grpc_gate import Gate
from tests.integration.checks import agree
from tests.tls_certs import client_pair, make_ca, server_pair
from tests.workload import POLYGON_SPACES

pytestmark = pytest.mark.integration

CORK = (51.8985, -8.4756)  # an area no other test sends to
CORK_BBOX = (-8.49, 51.89, -8.46, 51.91)
QUICK = Backoff(initial_s=0.01, multiplier=2.0, jitter=0.0, attempts=5)


def _bbox(box) -> str:
    return ",".join(map(str, box))


def _pings(
    live, rng: random.Random, prefix: str, n: int, bad: set[int] = frozenset(), refused=False
) -> list:
    """n fresh pings of a few devices around Cork (those of `bad` at latitude 95: rejected);
    the oracle sees each as it is handed to the client, unless the call will be `refused`."""
    out = []
    for i in range(n):
        lat = 95.0 if i in bad else CORK[0] + rng.uniform(-0.004, 0.004)
        p = ping(f"{prefix}-{i % 4}", lat, CORK[1] + rng.uniform(-0.006, 0.006))
        if not refused:
            live.oracle.ping(int(time.time() * 1000), p.device_id, p.ts_ms, p.lat, p.lng)
        out.append(p)
    return out


def _ingest(live, **kw) -> IngestClient:
    kw.setdefault("tls_ca", False)
    return IngestClient(kw.pop("target", f"127.0.0.1:{live.engine.grpc_port}"), live.key, **kw)


def _until(condition, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_batches_by_size_acks_add_up_and_rejections_name_their_pings(live):
    pings = _pings(live, random.Random(1), "cli-size", 30, bad={4, 17})
    with _ingest(live, batch_size=7, linger_s=3600) as ingest:
        for p in pings[:28]:
            ingest.send(p.device_id, p.lat, p.lng, p.ts_ms)
        assert ingest.totals.calls == 4  # four full batches went out as they filled
        ingest.send_pings(pings[28:])
        flushed = ingest.flush()
    assert (flushed.calls, flushed.accepted + flushed.late) == (1, 2)
    totals = ingest.totals
    assert (totals.calls, totals.retries, totals.rejected) == (5, 0, 2)
    assert totals.accepted + totals.late == 28
    assert [(x.item, x.reason) for x in ingest.rejections] == [
        (pings[4], "lat_out_of_range"),
        (pings[17], "lat_out_of_range"),
    ]
    with QueryClient(live.http, live.admin) as api:
        agree(
            lambda: {c.cell: c.count for c in api.heatmap(_bbox(CORK_BBOX), res=9).cells},
            lambda t: {to_str(c): k for c, k in live.oracle.heatmap(9, CORK_BBOX, t, t).items()},
            "heatmap of the client's pings",
        )
        agree(
            lambda: [(c.cell, c.count) for c in api.top(3, 8, _bbox(CORK_BBOX)).cells],
            lambda t: [(to_str(c), k) for c, k in live.oracle.top_n(3, 8, t, t, CORK_BBOX)],
            "top 3",
        )


def test_a_batch_goes_out_when_its_oldest_ping_has_waited_linger_s(live):
    pings = _pings(live, random.Random(2), "cli-time", 3)
    with _ingest(live, batch_size=1000, linger_s=0.3) as ingest:
        ingest.send_pings(pings)
        _until(lambda: ingest.totals.calls == 1, "the background flush never sent the batch")
        assert ingest.totals.accepted + ingest.totals.late == 3

    async def run() -> tuple[int, int]:
        more = _pings(live, random.Random(3), "cli-time-async", 3)
        async with AsyncIngestClient(
            f"127.0.0.1:{live.engine.grpc_port}", live.key, tls_ca=False, linger_s=0.3
        ) as ingest:
            await ingest.send_pings(more)
            deadline = time.monotonic() + 30
            while ingest.totals.calls == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return ingest.totals.calls, ingest.totals.accepted + ingest.totals.late

    assert asyncio.run(run()) == (1, 3)


def test_unavailable_and_resource_exhausted_are_retried_with_the_servers_hint(live):
    unavailable, exhausted = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED
    refusals = [(unavailable, None), (unavailable, None), (exhausted, "1")]
    for flavour in ("sync", "async"):
        gate = Gate(f"127.0.0.1:{live.engine.grpc_port}", refusals)
        waits = []
        pings = _pings(live, random.Random(4), f"cli-retry-{flavour}", 5)
        kw = {"tls_ca": False, "backoff": QUICK, "on_retry": lambda *a, w=waits: w.append(a)}
        try:
            if flavour == "sync":
                with IngestClient(gate.target, live.key, **kw) as ingest:
                    ingest.send_pings(pings)
                    ack = ingest.flush()
            else:

                async def run(kw=kw, gate=gate, pings=pings):
                    async with AsyncIngestClient(gate.target, live.key, **kw) as ingest:
                        await ingest.send_pings(pings)
                        return await ingest.flush()

                ack = asyncio.run(run())
        finally:
            gate.stop()
        assert (ack.accepted + ack.late, ack.calls, ack.retries) == (5, 4, 3), flavour
        assert [c for _, c in gate.calls] == [
            "UNAVAILABLE", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "OK",
        ]  # fmt: skip
        assert [(code, retry) for code, retry, _ in waits] == [
            (unavailable, 1), (unavailable, 2), (exhausted, 3),
        ]  # fmt: skip
        assert [w for _, _, w in waits[:2]] == [0.01, 0.02]  # exponential, no jitter asked
        assert waits[2][2] >= 1.0  # the server's retry-after, longer than the backoff's 0.04


def test_final_statuses_and_the_last_attempt_raise_with_the_batch(live):
    upstream = f"127.0.0.1:{live.engine.grpc_port}"
    gate = Gate(upstream)
    try:
        pings = _pings(live, random.Random(5), "cli-final", 2, refused=True)
        ingest = IngestClient(gate.target, "occ_not_a_key", tls_ca=False, backoff=QUICK)
        ingest.send_pings(pings)
        with pytest.raises(IngestError) as err:
            ingest.flush()
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert err.value.items == pings and gate.calls == [("SendPings", "UNAUTHENTICATED")]
        ingest.close()
    finally:
        gate.stop()
    refusals = [(grpc.StatusCode.UNAVAILABLE, None)] * 3
    gate = Gate(upstream, refusals)
    try:
        ingest = IngestClient(
            gate.target, live.key, tls_ca=False, backoff=Backoff(0.01, attempts=2), linger_s=0.05
        )
        ingest.door_event("s-none", 1)  # sent by the background thread: raised by the next call
        _until(lambda: len(gate.calls) == 2, "the background thread did not try twice")
        with pytest.raises(IngestError, match="after 2 attempts") as err:
            ingest.door_event("s-none", -1)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert [e.direction for e in err.value.items] == [1]
        ingest.close()  # the call that raised took nothing of its own: nothing to send
        assert [c for _, c in gate.calls] == ["UNAVAILABLE"] * 2
    finally:
        gate.stop()


def test_tls_with_the_clients_ca_and_certificate(live, tmp_path):
    ca, ca_key = make_ca(tmp_path)
    server = server_pair(tmp_path, ca, ca_key)
    cert, key = client_pair(tmp_path, ca, ca_key, "gateway-1")
    gate = Gate(f"127.0.0.1:{live.engine.grpc_port}", tls=server, client_ca=ca)
    try:
        pings = _pings(live, random.Random(6), "cli-tls", 3)
        with IngestClient(
            gate.target, live.key, tls_ca=str(ca), tls_cert=str(cert), tls_key=str(key)
        ) as ingest:
            ingest.send_pings(pings)
            assert ingest.flush().accepted + ingest.totals.late == 3
        without = IngestClient(gate.target, live.key, tls_ca=str(ca), backoff=Backoff(attempts=1))
        without.send_pings(_pings(live, random.Random(7), "cli-tls-refused", 1, refused=True))
        with pytest.raises(IngestError) as err:
            without.flush()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE  # the handshake fails
        without.channel.close()
    finally:
        gate.stop()


def test_query_answers_are_typed_and_equal_the_oracle(spaces):
    live = spaces
    rng = random.Random(8)
    now = int(time.time() * 1000)
    trips = [
        ping("cli-trip", CORK[0] + i * 0.0005, CORK[1], now - 300_000 + i * 20_000)
        for i in range(10)
    ]
    for p in trips:
        live.oracle.ping(now, p.device_id, p.ts_ms, p.lat, p.lng)
    with _ingest(live) as ingest:
        ingest.send_pings(trips)
        ingest.send_pings(_pings(live, rng, "cli-query", 8))
    history = ray.get_actor(HISTORY, namespace=live.engine.topology.namespace)
    api = QueryClient(live.http, live.admin)
    agree(
        lambda: {c.cell: c.count for c in api.heatmap(_bbox(CORK_BBOX)).cells},
        lambda t: {to_str(c): k for c, k in live.oracle.heatmap(9, CORK_BBOX, t, t).items()},
        "heatmap",
    )
    ray.get(history.snapshot.remote())
    later = int(time.time() * 1000)
    t0, t1 = now - 400_000, now + 1

    spaces_list = api.spaces(geometry=True)
    assert isinstance(spaces_list, r.SpaceList)
    kinds = {s.space: (s.kind, s.polygon is not None) for s in spaces_list.spaces}
    assert {s: kinds[s] for s in POLYGON_SPACES} == {s: ("polygon", True) for s in POLYGON_SPACES}
    assert kinds["hall"] == ("door", False)
    for space in POLYGON_SPACES:
        agree(
            lambda s=space: api.space(s).count,
            lambda t, s=space: live.oracle.space_occupancy(s, t, t),
            space,
        )
    assert api.space("hall").count == live.oracle.door_count("hall", later, later)
    cell = api.top(1, bbox=_bbox(CORK_BBOX)).cells[0]
    assert isinstance(cell, r.CellCount) and api.cell(cell.cell).cell == cell.cell

    path = api.path("cli-trip", t0, t1)
    assert isinstance(path.points[0], r.PathPoint)
    assert [(p.ts, p.lat, p.lng) for p in path.points] == live.oracle.path(
        "cli-trip", t0, t1, later
    )
    distance = api.distance(t0, t1, device_id="cli-trip")
    assert [d.device_id for d in distance.devices] == ["cli-trip"]
    assert distance.devices[0].meters == pytest.approx(
        live.oracle.distance("cli-trip", t0, t1, later), rel=1e-9
    )
    found = api.devices(t0, t1, bbox=_bbox(CORK_BBOX), limit=100_000)
    assert "cli-trip" in {d.device_id for d in found.devices} and not found.truncated
    assert api.health().checks["redis"] == "ok"
    assert "tests" in {k.label for k in api.keys().keys}
    status = api.status()
    assert isinstance(status, r.Status) and status.layout["user_shards"] == ["user-0", "user-1"]
    with pytest.raises(ApiError) as err:
        api.space("no-such-space")
    assert (err.value.status, err.value.code) == (404, "unknown_space")
    with pytest.raises(ApiError) as err:
        api.path("cli-trip", t1, t0)
    assert (err.value.status, err.value.code) == (400, "bad_time")

    async def the_same_asynchronously():
        async with AsyncQueryClient(live.http, live.admin) as aapi:
            return await asyncio.gather(
                aapi.path("cli-trip", t0, t1),
                aapi.spaces(),
                aapi.distance(t0, t1, device_id="cli-trip"),
                aapi.keys(),
            )

    apath, aspaces, adistance, akeys = asyncio.run(the_same_asynchronously())
    assert apath == path and adistance == distance
    assert [(s.space, s.kind) for s in aspaces.spaces] == [
        (s.space, s.kind) for s in spaces_list.spaces
    ]
    assert {k.id for k in akeys.keys} >= {k.id for k in api.keys().keys}
    api.close()
