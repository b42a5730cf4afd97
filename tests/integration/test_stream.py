"""`GET /v1/stream` over real HTTP (HAProxy, the stream app's replica): counts equal the
oracle's, the viewer's floor, event ids, Last-Event-ID, heartbeats, a revoked key ending its
stream, errors, and open streams leaving the query replicas' slots alone."""

import queue
import threading
import time

import orjson
import pytest
import requests

from access.auth import KeyStore
from engine.cells import to_str
from protos.occupancy.v1 import occupancy_pb2 as pb
from serve_apps.api import QueryApi
from tests.workload import POLYGON_SPACES

pytestmark = pytest.mark.integration

BBOX = "-8.64,52.65,-8.62,52.67"
WAIT_S = 30  # how long an awaited event may take before the test fails (the engine is shared)


class Stream:
    """An SSE client: a thread reads the stream and queues each event (a dict of its fields,
    `comment` for a comment line); None once the stream ended."""

    def __init__(self, live, key: str | None, headers: dict | None = None, **params):
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.response = requests.get(
            live.http + "/v1/stream",
            params=params,
            headers={**auth, **(headers or {})},
            stream=True,
            timeout=(10, 120),
        )
        self.events: queue.Queue = queue.Queue()
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event: dict = {}
        try:
            for line in self.response.iter_lines(chunk_size=None, decode_unicode=True):
                if line == "":
                    if event:
                        self.events.put(event)
                    event = {}
                elif line.startswith(":"):
                    self.events.put({"comment": line[1:].strip()})
                else:
                    name, _, value = line.partition(":")
                    event[name] = value[1:] if value.startswith(" ") else value
        except (requests.RequestException, OSError, AttributeError):
            pass  # closed by the test
        self.events.put(None)

    def next(self, kind: str = "counts") -> dict | None:
        """The next event of `kind` (None: the stream ended first)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            if (
                event is None
                or event.get("event") == kind
                or (kind == "comment" and "comment" in event)
            ):
                return event

    def until(self, wanted) -> dict:
        """The first `counts` event whose data satisfies `wanted(data)`."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            event = self.next()
            assert event is not None, "the stream ended"
            if wanted(orjson.loads(event["data"])):
                return event
        raise AssertionError("no such event")

    def close(self) -> None:
        self.response.close()


def _get(live, path, key, **params):
    return requests.get(
        live.http + path, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _oracle_cells(live, res: int) -> list[dict]:
    t = int(time.time() * 1000)
    box = tuple(float(x) for x in BBOX.split(","))
    counts = live.oracle.heatmap(res, box, t, t)
    return [{"cell": to_str(c), "count": n} for c, n in sorted(counts.items()) if n]


@pytest.fixture(scope="module")
def defined(live):
    for space, polygon in POLYGON_SPACES.items():
        live.engine.define_polygon_space(space, polygon)
        live.oracle.define_polygon_space(space, polygon)
    return live


def test_a_stream_gives_the_current_counts_then_each_change(defined):
    live = defined
    res = live.engine.topology.engine_spec().res
    stream = Stream(live, live.admin, spaces="sp-a,sp-b", bbox=BBOX, res=res)
    try:
        assert stream.response.status_code == 200, stream.response.text
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        first = stream.next()
        body = orjson.loads(first["data"])
        assert set(body) == {"as_of", "spaces", "cells"} and set(body["spaces"]) == {"sp-a", "sp-b"}
        ids = [int(first["id"])]
        # two devices walk into sp-b (outside sp-a's hole): the stream shows them, as the oracle
        now = int(time.time() * 1000)
        live.send(
            [pb.Ping(device_id=f"sse-{i}", ts_ms=now, lat=52.6600, lng=-8.6250) for i in range(2)]
        )

        def settled(data) -> bool:
            t = int(time.time() * 1000)
            spaces = {s: live.oracle.space_occupancy(s, t, t) for s in ("sp-a", "sp-b")}
            return data["spaces"] == spaces and data["cells"] == _oracle_cells(live, res)

        event = stream.until(settled)
        ids.append(int(event["id"]))
        assert orjson.loads(event["data"])["spaces"]["sp-b"] >= 2
        assert ids == sorted(set(ids))  # ids grow
    finally:
        stream.close()


def test_a_viewer_gets_the_floor_of_the_polling_endpoints(defined):
    live = defined
    now = int(time.time() * 1000)
    live.send([pb.Ping(device_id="sse-alone", ts_ms=now, lat=52.6620, lng=-8.1300)])  # sp-c
    stream = Stream(live, live.viewer, spaces="sp-c", bbox=BBOX, res=8)
    try:
        assert stream.response.status_code == 200, stream.response.text

        def as_polled(data) -> bool:
            heatmap = _get(live, "/v1/heatmap", live.viewer, bbox=BBOX, res=8).json()
            space = _get(live, "/v1/spaces/sp-c", live.viewer).json()
            return data["cells"] == heatmap["cells"] and data["spaces"]["sp-c"] == space["count"]

        data = orjson.loads(stream.until(as_polled)["data"])
        assert all(c["count"] >= live.engine.settings.k_min for c in data["cells"])
    finally:
        stream.close()


def test_a_reconnecting_client_gets_the_state_at_once_with_a_later_id(defined):
    live = defined
    first = Stream(live, live.admin, spaces="sp-a")
    event = first.next()
    first.close()
    last = int(event["id"]) + 10_000_000  # even an id from a clock ahead of this one
    again = Stream(live, live.admin, headers={"Last-Event-ID": str(last)}, spaces="sp-a")
    try:
        assert again.response.status_code == 200
        event = again.next()
        assert int(event["id"]) > last
        assert orjson.loads(event["data"])["spaces"].keys() == {"sp-a"}
    finally:
        again.close()


def test_an_idle_stream_gets_heartbeats_and_limit_ends_it(defined):
    live = defined
    stream = Stream(live, live.admin, spaces="sp-c")
    try:
        assert stream.next() is not None
        assert stream.next("comment") == {"comment": "heartbeat"}  # every OCC_STREAM_HEARTBEAT_S
    finally:
        stream.close()
    once = Stream(live, live.admin, spaces="sp-c", limit=1)
    assert once.next() is not None and once.next() is None  # one event, then the end


def test_a_revoked_key_ends_its_stream(defined):
    live = defined
    key = live.engine.create_key("viewer", "stream-revoke-test")
    stream = Stream(live, key, spaces="sp-a")
    try:
        assert stream.next() is not None
        KeyStore(live.engine.client()).revoke(key)
        event = stream.next("error")
        assert event is not None, "the stream ended without saying why"
        assert orjson.loads(event["data"])["error"]["code"] == "unauthenticated"
        assert stream.next() is None  # and then it is closed
    finally:
        stream.close()


@pytest.mark.parametrize(
    "key, params, status, code",
    [
        (None, {"spaces": "sp-a"}, 401, "unauthenticated"),
        ("ingest", {"spaces": "sp-a"}, 403, "forbidden"),
        ("admin", {"spaces": "sp-a,nowhere"}, 404, "unknown_space"),
        ("admin", {}, 400, "bad_stream"),
        ("admin", {"bbox": "1,2,3"}, 400, "bad_bbox"),
        ("admin", {"bbox": BBOX, "res": 99}, 400, "bad_resolution"),
        (
            "admin",
            {"spaces": ",".join(["sp-a"] * 5 + [f"s{i}" for i in range(101)])},
            400,
            "too_many_spaces",
        ),
    ],
)
def test_a_bad_stream_request_is_a_4xx_with_a_reason(defined, key, params, status, code):
    keys = {"admin": defined.admin, "ingest": defined.key}
    stream = Stream(defined, keys.get(key), **params)
    assert stream.response.status_code == status, stream.response.text
    assert stream.response.json()["error"]["code"] == code


def test_open_streams_leave_the_query_replicas_slots_free(defined):
    """More streams than the query replicas have slots, however many they scale to: queries
    still answer (on the query replicas a stream would hold a slot for its life, and these
    queries would wait)."""
    live = defined
    replicas = QueryApi._deployment_config.autoscaling_config.max_replicas
    n = QueryApi.max_ongoing_requests * replicas + 6  # more than every query replica's slots
    streams = [Stream(live, live.viewer, spaces="sp-a") for _ in range(n)]
    try:
        assert all(s.response.status_code == 200 for s in streams)
        assert all(s.next() is not None for s in streams)  # every one open and answered
        for _ in range(5):
            r = _get(live, "/v1/top", live.viewer, n=3)
            assert r.status_code == 200, r.text
    finally:
        for s in streams:
            s.close()
