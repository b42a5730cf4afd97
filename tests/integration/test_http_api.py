"""The HTTP API over real HTTP: answers equal the oracle; auth, privacy floor, error envelope."""

import random
import secrets
import socket
import time
from urllib.parse import quote

import grpc
import pytest
import ray
import redis
import requests
from h3.api import basic_int as h3i
from prometheus_client.parser import text_string_to_metric_families

from clients.history import NAME as HISTORY
from engine.cells import cell_of, parent, to_str
from engine.privacy import area_pairs, released, released_by_levels
from engine.timeutil import DAY_MS, MINUTE_MS, day_of, minute_of
from observability import tracing
from protos.occupancy.v1 import occupancy_pb2 as pb
from tests.metric_names import lacks_unit
from tests.workload import BBOX_C0, POINTS, POLYGON_SPACES

pytestmark = pytest.mark.integration


def get(live, path: str, key: str | None = None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.get(live.http + path, params=params, headers=headers, timeout=30)


def put(live, path: str, body: dict, key: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.put(live.http + path, json=body, headers=headers, timeout=30)


def cells_json(pairs) -> list[dict]:
    return [{"cell": to_str(c), "count": n} for c, n in pairs]


@pytest.fixture(scope="module")
def api(live):
    for space, polygon in POLYGON_SPACES.items():
        r = put(live, f"/v1/spaces/{space}", {"name": space, "polygon": polygon}, live.admin)
        assert r.status_code == 200, r.text
        live.oracle.define_polygon_space(space, polygon)
    rng = random.Random(42)
    now = int(time.time() * 1000)
    pings = []
    for i in range(150):
        lat, lng = rng.choice(POINTS)
        pings.append(
            pb.Ping(
                device_id=f"http-{i % 40}", ts_ms=now - rng.randint(0, 50_000), lat=lat, lng=lng
            )
        )
    live.send(pings)
    # a device that crossed midnight a day ago: two pings, long expired, split over two days
    midnight = day_of(now) - DAY_MS
    live.send(
        [
            pb.Ping(device_id="night-owl", ts_ms=midnight - 60_000, lat=52.66, lng=-8.63),
            pb.Ping(device_id="night-owl", ts_ms=midnight + 30_000, lat=52.66, lng=-8.63),
        ]
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        t = int(time.time() * 1000)
        body = get(live, "/v1/heatmap", live.admin, bbox="-180,-90,180,90", res=9).json()
        if body["cells"] == cells_json(sorted(live.oracle.counts(9, t, t).items())):
            break
        time.sleep(0.2)
    return live


def test_health(api):
    r = get(api, "/v1/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert body["checks"]["redis"] == body["checks"]["user_shards"] == "ok"


def test_heatmap_top_cells_and_spaces_equal_the_oracle(api):
    o, now = api.oracle, int(time.time() * 1000)
    for res in (9, 7, 5):
        body = get(api, "/v1/heatmap", api.admin, bbox="-180,-90,180,90", res=res).json()
        assert body["res"] == res
        assert body["cells"] == cells_json(sorted(o.counts(res, now, now).items())), res
    box = ",".join(str(v) for v in BBOX_C0)
    body = get(api, "/v1/heatmap", api.admin, bbox=box, res=9).json()
    assert body["cells"] == cells_json(sorted(o.heatmap(9, BBOX_C0, now, now).items()))
    geo = get(api, "/v1/heatmap", api.admin, bbox=box, res=9, format="geojson").json()
    assert geo["type"] == "FeatureCollection"
    assert [f["properties"] for f in geo["features"]] == body["cells"]
    assert all(len(f["geometry"]["coordinates"][0]) == 7 for f in geo["features"])
    for n, res in ((5, 9), (3, 7), (2, 5)):
        body = get(api, "/v1/top", api.admin, n=n, res=res).json()
        assert body["cells"] == cells_json(o.top_n(n, res, now, now)), (n, res)
    for cell, count in list(o.counts(9, now, now).items())[:5]:
        body = get(api, f"/v1/cells/{to_str(cell)}", api.admin).json()
        assert body == {"cell": to_str(cell), "count": count, "as_of": body["as_of"]}
    for space in POLYGON_SPACES:
        body = get(api, f"/v1/spaces/{space}", api.admin).json()
        assert body["count"] == o.space_occupancy(space, now, now), space


def test_dwell_across_midnight_for_admins(api):
    # days before the live window (OCC dwell_days) come from history: snapshot first
    history = ray.get_actor(HISTORY, namespace=api.engine.topology.namespace)
    ray.get(history.snapshot.remote())
    now = int(time.time() * 1000)
    yesterday = day_of(now) - DAY_MS
    for day_ms in (yesterday - DAY_MS, yesterday):
        day = time.strftime("%Y-%m-%d", time.gmtime(day_ms / 1000))
        body = get(api, "/v1/users/night-owl/dwell", api.admin, day=day).json()
        expected = api.oracle.dwell("night-owl", day_ms, now)
        assert body["device_id"] == "night-owl" and body["day"] == day
        assert {c["cell"]: c["seconds"] for c in body["cells"]} == {
            to_str(c): ms / 1000 for c, ms in expected["cells"].items()
        }
        assert {s["space"]: s["seconds"] for s in body["spaces"]} == {
            s: ms / 1000 for s, ms in expected["spaces"].items()
        }
    # after midnight: 30 s until the second ping, then its full 120 s TTL
    assert sum(c["seconds"] for c in body["cells"]) == 150.0


def test_privacy_floor_hides_small_counts_from_viewers_only(api):
    now = int(time.time() * 1000)
    counts = api.oracle.counts(9, now, now)
    assert any(n < 2 for n in counts.values()) and any(n >= 2 for n in counts.values())
    viewer = get(api, "/v1/heatmap", api.viewer, bbox="-180,-90,180,90", res=9).json()
    assert viewer["cells"] == cells_json(sorted((c, n) for c, n in counts.items() if n >= 2))
    small = next(c for c, n in counts.items() if n < 2)
    assert get(api, f"/v1/cells/{to_str(small)}", api.viewer).json()["count"] == 0
    assert get(api, f"/v1/cells/{to_str(small)}", api.admin).json()["count"] == counts[small]


# -- the floor across resolutions: the integration engine runs with k_min = 2 ----------------

K = 2
LYON = cell_of(45.76, 4.84, 7)  # far from every other test's pings
FLOOR_RES = (9, 8, 7, 6, 5)  # down past the placement resolution (6): lifted across shards


# under LYON: q1 with base cells a (2 devices) and b (1), q2 with c (3), d (1), e (1); the old
# floor showed a = 2 at res 9 and q1 = 3 at res 8: b's one device
Q1, Q2 = h3i.cell_to_children(LYON, 8)[:2]
A, B = h3i.cell_to_children(Q1, 9)[:2]
C, D, E = h3i.cell_to_children(Q2, 9)[:3]
LAYOUT = {A: 2, B: 1, C: 3, D: 1, E: 1}


def _ping(device: str, cell: int, ts: int) -> pb.Ping:
    lat, lng = h3i.cell_to_latlng(cell)
    return pb.Ping(device_id=device, ts_ms=ts, lat=lat, lng=lng)


def _around(cell: int) -> str:
    lats, lngs = zip(*h3i.cell_to_boundary(cell), strict=True)
    return f"{min(lngs) - 0.05},{min(lats) - 0.05},{max(lngs) + 0.05},{max(lats) + 0.05}"


LYON_BOX = _around(parent(LYON, 5))  # holds the centres of LYON's ancestors to res 5


def _lyon(counts: dict[int, int]) -> dict[int, int]:
    return {c: n for c, n in counts.items() if parent(c, 5) == parent(LYON, 5)}


def _answers(live, key: str, **params) -> dict[int, dict[int, int]]:
    out = {}
    for res in FLOOR_RES:
        body = get(live, "/v1/heatmap", key, bbox=LYON_BOX, res=res, **params).json()
        out[res] = {int(c["cell"], 16): c["count"] for c in body["cells"]}
    return out


def _check_rule(answers: dict[int, dict[int, int]]) -> None:
    """For any two of the answers: a parent's count minus its children's shown is 0 or >= K."""
    for fine in FLOOR_RES:
        for coarse in (r for r in FLOOR_RES if r < fine):
            below: dict[int, int] = {}
            for c, n in answers[fine].items():
                below[parent(c, coarse)] = below.get(parent(c, coarse), 0) + n
            for p, n in answers[coarse].items():
                gap = n - below.get(p, 0)
                assert gap == 0 or gap >= K, (coarse, fine, to_str(p), n, gap)


def _check_tops_and_cells(live, want: dict[int, dict[int, int]], exact, **params) -> None:
    """Top-N and single cells as a viewer equal the released counts (admins: `exact`)."""
    for res in FLOOR_RES:
        ranked = sorted(want[res].items(), key=lambda x: (-x[1], x[0]))
        for n in (1, 2, 10):
            body = get(live, "/v1/top", live.viewer, n=n, res=res, bbox=LYON_BOX, **params)
            assert body.json()["cells"] == cells_json(ranked[:n]), (res, n)
    for cell, n in exact.items():
        res = h3i.get_resolution(cell)
        viewer = get(live, f"/v1/cells/{to_str(cell)}", live.viewer, **params).json()
        admin = get(live, f"/v1/cells/{to_str(cell)}", live.admin, **params).json()
        assert (viewer["count"], admin["count"]) == (want[res].get(cell, 0), n), to_str(cell)


def test_privacy_floor_holds_across_resolutions_live(api):
    now = int(time.time() * 1000)
    pings = [
        _ping(f"floor-live-{to_str(cell)}-{i}", cell, now)
        for cell, n in LAYOUT.items() for i in range(n)
    ]  # fmt: skip
    api.send(pings)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        exact = _answers(api, api.admin)
        if exact[9] == LAYOUT:
            break
        time.sleep(0.2)
    assert exact[9] == LAYOUT and exact[8] == {Q1: 3, Q2: 5} and exact[5] == {parent(A, 5): 8}
    viewer = _answers(api, api.viewer)
    _check_rule(viewer)
    # the attack: 2 at res 9, 2 (not 3) at res 8; q2's hidden d and e (2 >= K) are shown
    assert viewer[9] == {A: 2, C: 3} and viewer[8] == {Q1: 2, Q2: 5}
    assert all(viewer[r] == {parent(A, r): 7} for r in (7, 6, 5))
    want = {r: released(area_pairs(_lyon(exact[9]), 9, r, r, K)) for r in FLOOR_RES}
    assert viewer == want
    cells = {Q1: 3, Q2: 5, B: 1, D: 1, LYON: 8, parent(LYON, 5): 8}
    _check_tops_and_cells(api, want, cells)


def test_privacy_floor_holds_across_resolutions_at_a_past_minute(api):
    m = minute_of(int(time.time() * 1000)) - 10 * MINUTE_MS
    at = {"at": str(m + 30_000)}
    pings = [
        _ping(f"floor-past-{to_str(cell)}-{i}", cell, m + 10_000)
        for cell, n in LAYOUT.items() for i in range(n)
    ]  # fmt: skip
    # one device moves from a to c during the minute: counted in both, once in LYON
    pings += [_ping("floor-past-mover", A, m + 5_000), _ping("floor-past-mover", C, m + 20_000)]
    api.send(pings)
    history = ray.get_actor(HISTORY, namespace=api.engine.topology.namespace)
    true = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ray.get(history.snapshot.remote())
        now = int(time.time() * 1000)
        true = {
            r: _lyon({cell: n for (cell, minute), n in
                      api.oracle.minute_aggregates(r, now).items() if minute == m})
            for r in FLOOR_RES
        }  # fmt: skip
        if _answers(api, api.admin, **at) == true:
            break
        time.sleep(0.5)
    assert _answers(api, api.admin, **at) == true
    assert true[9] == {A: 3, B: 1, C: 4, D: 1, E: 1}
    assert true[8] == {Q1: 4, Q2: 6} and true[7] == {LYON: 9}
    viewer = _answers(api, api.viewer, **at)
    _check_rule(viewer)
    want = {r: released(released_by_levels(true, 9, r, K)) for r in FLOOR_RES}
    assert viewer == want
    assert viewer[9] == {A: 3, C: 4} and viewer[8] == {Q1: 3, Q2: 6}
    assert viewer[7] == {LYON: 9}
    cells = {Q1: 4, Q2: 6, B: 1, LYON: 9, parent(LYON, 5): 9}
    _check_tops_and_cells(api, want, cells, **at)


def test_privacy_floor_withholds_an_attribute_filter_whose_complement_is_small(api):
    """Ten minutes of four days ago hold only these pings: in the first window three of four
    devices are buses (the filter would reveal the fourth), in the second three of five."""
    start = minute_of(int(time.time() * 1000)) - 4 * DAY_MS
    lat, lng = h3i.cell_to_latlng(LYON)
    windows = []
    for w, others in enumerate((1, 2)):
        t0 = start + w * 5 * MINUTE_MS
        pings = [
            pb.Ping(device_id=f"floor-attr-{w}-{i}", ts_ms=t0 + i * 1_000 + j * 10_000,
                    lat=lat + j * 1e-3, lng=lng, attributes={"fleet": "bus"} if i < 3 else {})
            for i in range(3 + others) for j in range(2)
        ]  # fmt: skip
        api.send(pings)
        windows.append((t0, t0 + MINUTE_MS, 3 + others))
    history = ray.get_actor(HISTORY, namespace=api.engine.topology.namespace)
    for t0, t1, n in windows:
        period = {"from": str(t0), "to": str(t1)}
        deadline = time.monotonic() + 30
        while get(api, "/v1/history/distance", api.admin, **period).json()["device_count"] < n:
            assert time.monotonic() < deadline, "the pings did not reach history"
            ray.get(history.snapshot.remote())
            time.sleep(0.5)
    (a0, a1, _), (b0, b1, _) = windows

    def count(key: str, t0: int, t1: int, **attrs) -> int:
        params = {"from": str(t0), "to": str(t1), **{f"attr.{k}": v for k, v in attrs.items()}}
        return get(api, "/v1/history/distance", key, **params).json()["device_count"]

    assert count(api.admin, a0, a1, fleet="bus") == 3 and count(api.viewer, a0, a1) == 4
    assert count(api.viewer, a0, a1, fleet="bus") == 0  # 4 - 3 = 1 device would show
    assert count(api.viewer, b0, b1) == 5 and count(api.viewer, b0, b1, fleet="bus") == 3
    many = {f"k{i}": "v" for i in range(9)}
    r = get(api, "/v1/history/distance", api.viewer, **{"from": str(b0), "to": str(b1)},
            **{f"attr.{k}": v for k, v in many.items()})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_attribute"


def test_roles(api):
    assert get(api, "/v1/top").status_code == 401
    assert get(api, "/v1/top", "occ_viewer_not-a-key").status_code == 401
    assert get(api, "/v1/top", api.key).status_code == 403  # an ingest key cannot read
    day = time.strftime("%Y-%m-%d", time.gmtime())
    r = get(api, "/v1/users/night-owl/dwell", api.viewer, day=day)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = put(api, "/v1/spaces/nope", {"name": "x"}, api.viewer)
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/v1/heatmap", {"bbox": "1,2,3"}, "bad_bbox"),
        ("/v1/heatmap", {"bbox": "10,0,5,1"}, "bad_bbox"),
        ("/v1/heatmap", {"bbox": "a,b,c,d"}, "bad_bbox"),
        ("/v1/heatmap", {"bbox": "-1,-1,1,1", "res": 16}, "bad_resolution"),
        ("/v1/heatmap", {"bbox": "-1,-1,1,1", "res": "nine"}, "bad_request"),
        ("/v1/heatmap", {}, "bad_request"),
        ("/v1/top", {"n": 0}, "bad_request"),
        ("/v1/top", {"res": -1}, "bad_resolution"),
        ("/v1/cells/zzzz", {}, "bad_cell"),
        ("/v1/cells/ffffffffffffffff", {}, "bad_cell"),
        ("/v1/cells/8f283082e73ffff", {}, "bad_cell"),  # res 15 > base res
        ("/v1/cells/" + "9" * 40, {}, "bad_cell"),  # beyond 64 bits (found by bench/fuzz.py)
        ("/v1/cells/-9999999999999999999999999", {}, "bad_cell"),
        ("/v1/users/x/dwell", {"day": "2024-02-30"}, "bad_day"),
        ("/v1/users/x/dwell", {}, "bad_request"),
        ("/v1/top", {"at": "not-a-time"}, "bad_time"),
        # beyond Int64 (a bare 500 before), and beyond the years ISO 8601 can write
        ("/v1/top", {"at": str(2**63)}, "bad_time"),
        ("/v1/top", {"at": "-" + "9" * 25}, "bad_time"),
        ("/v1/cells/89182e6c453ffff", {"at": str(10**22)}, "bad_time"),
        ("/v1/heatmap", {"bbox": "-1,-1,1,1", "at": str(2**64)}, "bad_time"),
        ("/v1/history/distance", {"from": "0", "to": str(2**63)}, "bad_time"),
        ("/v1/history/distance", {"from": "0", "to": "99999-01-01"}, "bad_time"),
        (
            "/v1/history/devices",
            {"from": "0", "to": "1", "bbox": "0,0,1,1", "limit": 0},
            "bad_request",
        ),
    ],
)
def test_bad_input_gets_a_4xx_envelope(api, path, params, code):
    r = get(api, path, api.admin, **params)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


def test_the_key_is_checked_before_a_body_is_read_and_bodies_are_bounded(api):
    eight_mb = b"[" * (8 << 20)
    r = requests.put(api.http + "/v1/spaces/x", data=eight_mb, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    r = requests.put(
        api.http + "/v1/spaces/x", data=eight_mb, headers={"Authorization": "Bearer nope"},
        timeout=30,
    )  # fmt: skip
    assert r.status_code == 401
    auth = {"Authorization": f"Bearer {api.admin}"}
    r = requests.put(api.http + "/v1/spaces/x", data=eight_mb, headers=auth, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the body is counted as it comes
        for _ in range(40):
            yield b" " * 65_536

    r = requests.put(api.http + "/v1/spaces/x", data=chunks(), headers=auth, timeout=30)
    assert r.status_code == 413, r.text


def test_a_traceparent_that_is_not_utf8_is_ignored(api):
    r = requests.get(
        api.http + "/v1/top",
        headers={"Authorization": f"Bearer {api.admin}", "traceparent": "00-\xff\xfe-01"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def test_a_history_query_past_its_time_is_504(api):
    # ClickHouse stops the query at max_execution_time: a millisecond is too little for this
    pings = [
        pb.Ping(device_id=f"slow-{i}", ts_ms=int(time.time() * 1000) - i, lat=52.66, lng=-8.63)
        for i in range(2_000)
    ]
    api.send(pings)
    ray.get(ray.get_actor(HISTORY, namespace="occupancy").snapshot.remote())
    r = get(
        api,
        "/v1/history/distance",
        api.admin,
        **{"from": "0", "to": "9999-12-31", "timeout_s": 0.000001},
    )
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "history_timeout"


def test_unknown_space_and_route_are_404(api):
    r = get(api, "/v1/spaces/no-such-space", api.admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_space"
    r = get(api, "/v1/nothing-here", api.admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_bad_definitions_are_400(api):
    bad_polygon = {"name": "x", "polygon": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}
    r = put(api, "/v1/spaces/bad", bad_polygon, api.admin)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_space"
    r = put(api, "/v1/doorways/d-x", {"inside": "no-such-space"}, api.admin)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_doorway"
    r = requests.put(
        api.http + "/v1/spaces/x",
        data=b"{not json",
        headers={"Authorization": f"Bearer {api.admin}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"


def test_door_space_via_http_exact_at_past_times(api):
    admin = api.admin
    now = int(time.time() * 1000)
    assert put(api, "/v1/spaces/lobby", {"name": "Lobby"}, admin).status_code == 200
    assert put(api, "/v1/doorways/lobby-door", {"inside": "lobby"}, admin).status_code == 200
    r = requests.post(
        api.http + "/v1/doorways/lobby-door/installations",
        json={"sensor_id": "lobby-s", "from": now - 3_600_000, "positive": "in"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    api.oracle.define_door_space("lobby")
    api.oracle.define_doorway("lobby-door", "lobby", None)
    api.oracle.install("lobby-s", "lobby-door", now - 3_600_000, "in")
    events = [
        pb.DoorEvent(sensor_id="lobby-s", ts_ms=now - k * 60_000, direction=d)
        for k, d in ((5, 1), (1, 1), (3, -1), (4, 1), (2, 1))
    ]
    api.doors(events)
    known = int(time.time() * 1000)  # the oracle counts what had arrived by then
    for back in (0, 90_000, 150_000, 270_000, 400_000):
        t = now - back
        body = get(api, "/v1/spaces/lobby", admin, at=str(t)).json()
        assert body["count"] == api.oracle.door_count("lobby", t, known), back


def test_space_listing_holds_every_space_with_the_count_of_its_own_endpoint(api):
    now = int(time.time() * 1000)
    body = get(api, "/v1/spaces", api.admin, geometry="true").json()
    listed = {s["space"]: s for s in body["spaces"]}
    for space, polygon in POLYGON_SPACES.items():
        assert listed[space]["kind"] == "polygon" and listed[space]["polygon"] == polygon
        assert listed[space]["count"] == api.oracle.space_occupancy(space, now, now), space
    assert any(s["kind"] == "door" for s in body["spaces"])
    for space, item in listed.items():
        assert item["count"] == get(api, f"/v1/spaces/{space}", api.admin).json()["count"]
    plain = get(api, "/v1/spaces", api.viewer).json()["spaces"]
    assert all("polygon" not in s for s in plain)
    assert {s["space"] for s in plain} == set(listed)
    # a minute ago, from history: the polygon spaces' minute aggregates, as one space answers
    past = get(api, "/v1/spaces", api.admin, at=str(now - 60_000)).json()["spaces"]
    for item in past:
        one = get(api, f"/v1/spaces/{item['space']}", api.admin, at=str(now - 60_000)).json()
        assert item["count"] == one["count"], item
    assert get(api, "/v1/spaces", api.admin, at="yesterday").status_code == 400


def test_admin_status_lists_every_shard_and_the_snapshotter(api):
    assert get(api, "/v1/admin/status", api.viewer).status_code == 403
    body = get(api, "/v1/admin/status", api.admin).json()
    t = api.engine.topology
    shards = {s["shard"]: s for s in body["shards"]}
    assert set(shards) == {*t.user_shards, *t.cell_shards, *t.space_shards}
    assert all("error" not in s for s in shards.values())
    users = [shards[n] for n in t.user_shards]
    assert sum(u["devices"] for u in users) > 0
    assert all(u["epoch"] >= 1 and u["checkpoint_age_s"] >= 0 for u in users)
    history = body["history"]
    assert history["connected"] and not history["paused"]
    assert set(history["archive_lag_ms"]) >= set(t.user_shards)


def _scrape(api) -> dict[str, list[tuple[dict, float]]]:
    """/metrics parsed by prometheus_client: sample name -> [(labels, value)]; every family's
    name says its unit."""
    out: dict[str, list[tuple[dict, float]]] = {}
    text = requests.get(api.http + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        exposed = family.name + "_total" if family.type == "counter" else family.name
        assert not lacks_unit(exposed, family.type), exposed
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_metrics_endpoint_shows_every_process_with_plausible_values(api):
    now = int(time.time() * 1000)
    bad = [pb.Ping(device_id="metrics-nan", ts_ms=now, lat=float("nan"), lng=1.0)]
    api.stub.SendPings(pb.SendPingsRequest(pings=bad), metadata=api.auth, timeout=30)
    with pytest.raises(grpc.RpcError):  # no credential: a failed call
        api.stub.SendPings(pb.SendPingsRequest(pings=bad), timeout=30)
    get(api, "/v1/top", api.admin, n=3)
    wanted = {
        "occupancy_pings_total",
        "occupancy_rejections_total",
        "occupancy_ingest_batch_pings_count",
        "occupancy_shard_devices",
        "occupancy_wal_entries",
        "occupancy_checkpoint_age_seconds",
        "occupancy_archive_lag_seconds",
        "occupancy_snapshot_seconds_count",
        "occupancy_query_seconds_count",
        "occupancy_layout_version",
        "occupancy_layout_shard_info",
        "occupancy_grpc_calls_total",
    }
    deadline = time.monotonic() + 30
    while True:
        metrics = _scrape(api)
        rejected = [
            v
            for lab, v in metrics.get("occupancy_rejections_total", [])
            if lab.get("reason") == "lat_not_finite"
        ]
        queried = [
            v
            for lab, v in metrics.get("occupancy_query_seconds_count", [])
            if lab.get("endpoint") == "/v1/top"
        ]
        refused = [
            v
            for lab, v in metrics.get("occupancy_grpc_calls_total", [])
            if (lab.get("method"), lab.get("code")) == ("SendPings", "UNAUTHENTICATED")
        ]
        if wanted <= set(metrics) and rejected and queried and refused:
            break
        assert time.monotonic() < deadline, sorted(wanted - set(metrics))
        time.sleep(1)
    outcomes: dict[str, float] = {}
    for lab, v in metrics["occupancy_pings_total"]:
        outcomes[lab["outcome"]] = outcomes.get(lab["outcome"], 0) + v
    assert outcomes["accepted"] + outcomes["late"] >= 152  # the module's valid pings, at least
    assert outcomes["rejected"] >= 1
    t = api.engine.topology
    devices = {lab["process"]: v for lab, v in metrics["occupancy_shard_devices"]}
    assert set(devices) >= {*t.user_shards, *t.cell_shards}
    assert sum(devices[n] for n in t.user_shards) > 0
    assert all(v >= 0 for _, v in metrics["occupancy_checkpoint_age_seconds"])
    assert all(0 <= v < 600 for _, v in metrics["occupancy_archive_lag_seconds"])
    assert sum(v for _, v in metrics["occupancy_snapshot_seconds_count"]) >= 1
    shards = {lab["shard"] for lab, _ in metrics["occupancy_layout_shard_info"]}
    assert shards == {*t.user_shards, *t.cell_shards}
    layouts = {lab["state"]: v for lab, v in metrics["occupancy_layout_version"]}
    assert layouts == {"committed": t.version}  # no rebalance under way
    buckets = [v for lab, v in metrics["occupancy_query_seconds_bucket"] if lab["le"] == "+Inf"]
    assert sum(buckets) == sum(v for _, v in metrics["occupancy_query_seconds_count"])


def test_a_traced_batch_has_spans_from_ingest_through_its_shard_to_the_snapshot(api):
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = f"00-{trace_id}-{caller}-01"
    now = int(time.time() * 1000)
    pings = [pb.Ping(device_id=f"traced-{i}", ts_ms=now, lat=52.66, lng=-8.63) for i in range(5)]
    ack = api.stub.SendPings(
        pb.SendPingsRequest(pings=pings),
        metadata=[*api.auth, ("traceparent", traceparent)],
        timeout=30,
    )
    assert ack.accepted == 5
    for p in pings:
        api.oracle.ping(now, p.device_id, p.ts_ms, p.lat, p.lng)
    r = requests.get(
        api.http + "/v1/top",
        params={"n": 2},
        headers={"Authorization": f"Bearer {api.admin}", "traceparent": traceparent},
        timeout=10,
    )
    assert r.status_code == 200
    history = ray.get_actor(HISTORY, namespace=api.engine.topology.namespace)
    ray.get(history.snapshot.remote())
    client = api.engine.client()
    deadline = time.monotonic() + 20
    while True:
        spans: dict[str, list[dict]] = {}
        for span in tracing.spans_of(client, trace_id):
            spans.setdefault(span["name"], []).append(span)
        # the batch's devices may live on both user shards: a shard span (and an archive span)
        # for each shard it reached
        shards = {sp["span_id"]: sp for sp in spans.get("shard apply", [])}
        archives = spans.get("snapshot archive", [])
        if (
            {"ingest pings", "query /v1/top"} <= set(spans)
            and shards
            and {a["parent_id"] for a in archives} == set(shards)
        ):
            break
        assert time.monotonic() < deadline, sorted(spans)
        time.sleep(0.5)
    [ingest] = spans["ingest pings"]
    assert ingest["parent_id"] == caller and ingest["process"].startswith("ingest-")
    for shard in shards.values():
        assert shard["parent_id"] == ingest["span_id"] and shard["process"].startswith("user-")
        assert ingest["start_ns"] <= shard["start_ns"] <= shard["end_ns"]
    for archive in archives:
        shard = shards[archive["parent_id"]]  # each archive continues its shard's span
        assert archive["process"] == "history" and shard["end_ns"] <= archive["end_ns"]
    assert {shards[a["parent_id"]]["process"] for a in archives} == {
        sp["process"] for sp in shards.values()
    }
    [query] = spans["query /v1/top"]
    assert query["parent_id"] == caller
    # an untraced batch leaves no spans (sampling follows the caller)
    before = client.llen(tracing.SPANS)
    api.send([pb.Ping(device_id="untraced", ts_ms=now, lat=52.66, lng=-8.63)])
    time.sleep(1.5)
    assert client.llen(tracing.SPANS) == before


def test_live_page_and_its_assets_come_from_the_api_and_nowhere_else(api):
    page = requests.get(api.http + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="/static/app.js"' in page.text and 'href="/static/style.css"' in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        asset = requests.get(f"{api.http}/static/{name}", timeout=10)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        # no CDN, no tiles; SVG's namespace is a name, never fetched
        text = asset.text.replace('"http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text
    assert "https://" not in page.text and "http://" not in page.text
    for name in ("nope.js", "..%2Fapi.py", "page.py"):
        missing = requests.get(f"{api.http}/static/{name}", timeout=10)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def _holding(client: redis.Redis, needle: bytes) -> list[str]:
    """The Redis keys whose names, fields or values hold `needle`."""
    holders = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "stream":
            values = [v for _, f in client.xrange(key) for v in f.values()]
        else:
            values = []
        if any(needle in v for v in values):
            holders.append(key.decode())
    return sorted(holders)


def test_raw_ids_live_only_in_the_id_directory_and_forget_removes_them(api):
    raw = "+353-87-555-0199"
    now = int(time.time() * 1000)
    api.send([pb.Ping(device_id=raw, ts_ms=now, lat=52.66, lng=-8.63)])
    for shard in api.engine.topology.user_shards:
        api.queries.users.handle(shard).checkpoint.remote()
    time.sleep(1.0)
    client = redis.Redis.from_url(api.engine.redis_url)
    assert _holding(client, raw.encode()) == ["occ:ids", "occ:ids:raw"]
    t = int(time.time() * 1000)
    r = requests.delete(
        f"{api.http}/v1/admin/devices/{quote(raw, safe='')}",
        headers={"Authorization": f"Bearer {api.admin}"},
        timeout=120,
    )
    assert r.status_code == 200 and r.json() == {
        "device_id": raw,
        "live": "done",
        "history": "done",
    }, r.text
    api.oracle.forget(raw, t)
    assert _holding(client, raw.encode()) == []


def _trickle(port: int, data: bytes, every_s: float = 0.5) -> int | None:
    """Send `data` a byte at a time; how many bytes went before the server ended the
    connection (None: it never did)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(every_s)
        for i, byte in enumerate(data):
            try:
                s.send(bytes([byte]))
                while s.recv(4096):  # answers (a 408, the server's HTTP/2 settings) are read
                    pass
                return i  # closed
            except TimeoutError:
                continue
            except OSError:
                return i
    return None


def test_a_client_sending_its_request_head_a_byte_at_a_time_is_cut_off(api):
    # the head must arrive within 10 s (HAProxy `timeout http-request`): cut off long before
    # these 80 bytes have trickled in (40 s)
    head = b"GET /v1/health HTTP/1.1\r\nHost: engine\r\nX-Slow: " + b"a" * 40
    sent = _trickle(int(api.http.rsplit(":", 1)[1]), head)
    assert sent is not None and sent < len(head) - 10, sent
    # the same for a gRPC connection's HTTP/2 preface (its handshake must finish in 10 s)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 60
    sent = _trickle(api.engine.grpc_port, preface)
    assert sent is not None and sent < len(preface) - 10, sent
