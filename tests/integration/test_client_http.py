"""The client library's HTTP ingest, series, doorways, deletes and live stream against the real
engine, sync and asyncio: typed answers equal the oracle, and a stream whose connection breaks
comes back with its Last-Event-ID (a real TCP relay on loopback cuts the first connection)."""

import asyncio
import socket
import threading
import time
from contextlib import aclosing

import pytest

from engine.cells import to_str
from engine.series import STEPS
from occupancy.client import ApiError, AsyncQueryClient, Counts, QueryClient
from occupancy.client import results as r
from protos.occupancy.v1 import occupancy_pb2 as pb
from tests.integration.checks import agree

pytestmark = pytest.mark.integration

GALWAY = (53.2707, -9.0568)  # an area no other test sends to
GALWAY_BBOX = "-9.07,53.26,-9.04,53.28"
ALONE = (53.2765, -9.045)  # in it, far from the others sent there


def _door_points(live, space: str, step: str, t0: int, t1: int, now: int) -> list[tuple]:
    cuts = live.oracle.series_edges(t0, t1, STEPS[step], "UTC")
    return [(cuts[i], *p) for i, p in enumerate(live.oracle.door_series(space, cuts, now))]


def test_http_ingest_series_doorways_and_deletes(spaces):
    live = spaces
    api = QueryClient(live.http, live.admin)
    now = int(time.time() * 1000)
    pings = [
        {"device_id": f"cli-http-{i}", "lat": GALWAY[0] + i * 1e-4, "lng": GALWAY[1], "ts_ms": now}
        for i in range(6)
    ]
    pings.append({"device_id": "cli-http-bad", "lat": 95.0, "lng": GALWAY[1], "ts_ms": now})
    ack = api.send_pings(pings)
    for p in pings[:-1]:
        live.oracle.ping(now, p["device_id"], p["ts_ms"], p["lat"], p["lng"])
    assert isinstance(ack, r.Ack) and (ack.accepted, ack.rejected) == (6, 1)
    assert ack.rejections == [r.Rejection(6, "lat_out_of_range")]
    box = tuple(map(float, GALWAY_BBOX.split(",")))
    agree(
        lambda: {c.cell: c.count for c in api.heatmap(GALWAY_BBOX).cells},
        lambda t: {to_str(c): n for c, n in live.oracle.heatmap(9, box, t, t).items()},
        "galway",
    )

    live.doors([pb.DoorEvent(sensor_id="s1", ts_ms=now - k * 1000, direction=1) for k in (1, 2)])
    known = int(time.time() * 1000)
    t0, t1 = now - 3_600_000, now + 60_000
    series = api.series(t0, t1, "5m", space="hall")
    assert isinstance(series, r.Series) and series.kind == "door" and series.points
    got = [(p.t, p.count, p.in_, p.out) for p in series.points]
    assert got == _door_points(live, "hall", "5m", t0, t1, known)
    with pytest.raises(ApiError) as err:
        api.series(t0, t1, "5m", space="no-such-space")
    assert (err.value.status, err.value.code) == (404, "unknown_space")

    doorways = {d.doorway: d for d in api.doorways().doorways}
    assert (doorways["d-room"].inside, doorways["d-room"].outside) == ("room", "hall")
    front = [(i.sensor_id, i.positive) for i in doorways["d-front"].installations]
    assert front == [("s1", "in"), ("s2", "in")]

    api.define_space("cli-door")
    api.define_doorway("cli-way", "cli-door")
    api.install("cli-way", "cli-s", now - 60_000)
    gone = api.delete_doorway("cli-way")
    assert isinstance(gone, r.DoorwayDeleted) and gone.sensors == ["cli-s"]
    assert "cli-way" not in {d.doorway for d in api.doorways().doorways}
    deleted = api.delete_space("cli-door")
    assert (deleted.kind, deleted.doorways) == ("door", [])
    with pytest.raises(ApiError) as err:
        api.delete_space("cli-door")
    assert err.value.code == "unknown_space"

    async def asynchronously():
        async with AsyncQueryClient(live.http, live.admin) as aapi:
            return await asyncio.gather(
                aapi.series(t0, t1, "5m", space="hall"), aapi.doorways(), aapi.send_pings([])
            )

    aseries, adoorways, empty = asyncio.run(asynchronously())
    assert aseries == series and {d.doorway for d in adoorways.doorways} == set(doorways)
    assert (empty.accepted, empty.rejected) == (0, 0)
    api.close()


def _cells(counts: Counts) -> dict[str, int]:
    return {c.cell: c.count for c in counts.cells}


def _known(api: QueryClient) -> bool:
    try:
        return _first(api, spaces=["sp-a"]) is not None
    except ApiError as exc:
        if exc.code != "unauthenticated":
            raise
        return False


def _first(api: QueryClient, **kw) -> Counts:
    return next(iter(api.stream(limit=1, **kw)))


def _logged(live, device: str) -> dict:
    """A ping at ALONE now, in the oracle's log too (the engine the tests share is checked
    against it as a whole)."""
    now = int(time.time() * 1000)
    assert live.oracle.ping(now, device, now, *ALONE) == "applied"
    return {"device_id": device, "lat": ALONE[0], "lng": ALONE[1], "ts_ms": now}


def test_stream_sync_and_async_equal_the_polling_answers(spaces):
    live = spaces
    api = QueryClient(live.http, live.admin)
    agree(
        lambda: _first(api, spaces=["sp-a", "hall"]).spaces,
        lambda t: {"sp-a": api.space("sp-a").count, "hall": api.space("hall").count},
        "stream",
    )
    # the state at once, then the next change: a device more in a cell of its own
    alone = to_str(live.oracle.cell_of(*ALONE))
    events = api.stream(["sp-a"], bbox=GALWAY_BBOX, limit=2)
    first = next(events)
    api.send_pings([_logged(live, "cli-stream-1")])
    second = next(events)
    assert first.id < second.id and list(events) == []
    assert alone not in _cells(first) and _cells(second)[alone] == 1
    assert all(isinstance(c, r.CellCount) for c in second.cells)

    async def two():
        aapi = AsyncQueryClient(live.http, live.admin)
        async with aapi, aclosing(aapi.stream(bbox=GALWAY_BBOX, limit=2)) as events:
            got = [await anext(events)]
            await aapi.send_pings([_logged(live, "cli-stream-2")])
            got += [c async for c in events]
            return got

    afirst, asecond = asyncio.run(two())
    assert afirst.id < asecond.id and afirst.spaces == {}
    assert _cells(afirst)[alone] == 1 and _cells(asecond)[alone] == 2
    with pytest.raises(ApiError) as err:
        _first(api, spaces=["no-such-space"])
    assert (err.value.status, err.value.code) == (404, "unknown_space")
    api.close()


class Relay:
    """A TCP relay to the engine's HTTP port that cuts its first connection once the engine
    has sent a `counts` event on it, and keeps every request head it relayed."""

    def __init__(self, port: int):
        self.upstream = port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            cut = not self.requests
            threading.Thread(target=self._relay, args=(client, cut), daemon=True).start()

    def _relay(self, client: socket.socket, cut: bool) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream))
        head = client.recv(65536)
        self.requests.append(head)
        upstream.sendall(head)
        seen = b""
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
                seen += data
                at = seen.find(b"event: counts")  # the body is chunked: framing between
                if cut and at >= 0 and b"\n\n" in seen[at:]:
                    break
        except OSError:
            pass
        client.close()
        upstream.close()

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_broken_stream_reconnects_with_its_last_event_id(spaces, flavour):
    live = spaces
    with QueryClient(live.http, live.admin) as api:  # the stream replicas know the key
        agree(lambda: _known(api), lambda t: True, "the key at the stream replicas")
    relay = Relay(live.engine.http_port)
    url = f"http://127.0.0.1:{relay.port}"
    try:
        if flavour == "sync":
            with QueryClient(url, live.admin) as api:
                got = list(api.stream(["sp-a"], limit=2))
        else:

            async def two():
                async with AsyncQueryClient(url, live.admin) as aapi:
                    return [c async for c in aapi.stream(["sp-a"], limit=2)]

            got = asyncio.run(two())
    finally:
        relay.close()
    assert len(relay.requests) == 2, relay.requests
    first, again = relay.requests
    assert b"last-event-id" not in first.lower()
    assert f"last-event-id: {got[0].id}".encode() in again.lower()
    assert b"limit=1" in again.split(b"\r\n")[0]  # what is still wanted
    assert got[1].id > got[0].id
