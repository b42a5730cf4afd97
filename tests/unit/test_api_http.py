"""The HTTP API's routes over ASGI with in-memory clients (no Ray, no Redis): keys and roles,
the privacy floor of viewers' answers, parameters, and the engine's errors as HTTP."""

import asyncio

import pytest
import redis

from clients.errors import StateUnavailable, Unavailable
from clients.history import HistoryTimeout, HistoryUnavailable
from cluster.fit import DoesNotFit
from cluster.rebalance import RebalanceError
from engine.cells import to_str
from engine.geo import BBox
from engine.pseudonym import pseudonym_str
from engine.timeutil import EARLIEST_MS, LATEST_MS
from serve_apps.context import ApiContext, context, install
from serve_apps.errors import ApiError, within
from serve_apps.guard import REDIS_DOWN, Guard
from serve_apps.policy import MAX_FLOORED_ATTRS
from tests.unit.api_standins import COUNTS, A, B, C, Client, api_context

EVERYWHERE = "-180,-90,180,90"
AT = "2026-01-01T00:00:00Z"
AT_MS = 1_767_225_600_000


@pytest.fixture(autouse=True)
def _door(monkeypatch):
    """The door checks keys with the context's look-up (as the deployment sets it)."""
    monkeypatch.setattr(Guard, "_who", [])
    monkeypatch.setattr(Guard, "_sender", [])


def client(k_min: int = 0, door: bool = True, **clients) -> Client:
    api = api_context(k_min, **clients)
    if door:
        Guard.use(api.credential)
    return Client(api)


def cells(*pairs) -> list[dict]:
    return [{"cell": to_str(c), "count": n} for c, n in pairs]


# -- keys and roles ----------------------------------------------------------------------------


@pytest.mark.parametrize("door", [True, False])  # the door (guard.py), else the route's check
def test_a_request_without_a_known_key_is_401(door):
    api = client(door=door)
    r = api.get("/v1/top")
    assert r.status == 401
    assert r.error == ("unauthenticated", "missing API key (Authorization: Bearer <key>)")
    if door:
        r = api.get("/v1/top", "no-such-key")
        assert r.status == 401 and r.error == ("unauthenticated", "unknown or revoked API key")


@pytest.mark.parametrize(
    ("path", "key", "params"),
    [
        ("/v1/top", "ingest-key", {}),
        ("/v1/admin/keys", "viewer-key", {}),
        ("/v1/users/phone-1/dwell", "viewer-key", {"day": "2026-01-01"}),
        ("/v1/export", "viewer-key", {"what": "pings", "from": "0", "to": "1"}),
    ],
)
def test_a_key_of_another_role_is_403(path, key, params):
    r = client().get(path, key, **params)
    assert r.status == 403 and r.error[0] == "forbidden"


def test_the_health_check_needs_no_key():
    r = client().get("/v1/health")
    assert r.status == 200 and r.json()["status"] == "ok", r.body
    assert r.json()["archive_lag_s"] == 1.5


def test_redis_down_at_the_door_is_503():
    api = client()

    def down(key):
        raise redis.ConnectionError("refused")

    Guard.use(down)
    r = api.get("/v1/top", "admin-key")
    assert r.status == 503 and r.error == REDIS_DOWN and r.headers["retry-after"]


def test_the_routes_take_the_installed_context():
    api = api_context()
    install(api)
    assert asyncio.run(context()) is api
    assert isinstance(api, ApiContext)


# -- routes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "key", "body"),
    [
        ("POST", "/v1/pings", "ingest-key", {"pings": []}),
        ("GET", "/v1/top", "viewer-key", None),
    ],
)
def test_revocations_are_followed_from_the_first_request_whichever_it_is(method, path, key, body):
    """A replica starts following revocations in its first request's loop; an ingest route
    first (a fleet sending before any front end asks) once failed there with a 500."""
    followed = []

    def follow(on_change):
        followed.append(on_change)
        return asyncio.sleep(0)

    api = api_context()
    api._follow = follow
    Guard.use(api.credential, api.sender)  # as the deployment sets the door
    answer = Client(api).send(method, path, key, body)
    assert answer.status == 200, answer.body
    assert followed == [api.streams.end_revoked]


def test_a_live_heatmap_is_every_cell_of_the_bbox():
    api = client()
    r = api.get("/v1/heatmap", "admin-key", bbox=EVERYWHERE)
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["res"] == 9 and body["cells"] == cells(*sorted(COUNTS.items()))
    assert api.api.queries.calls == [("heatmap", 9, BBox.parse(EVERYWHERE))]


def test_a_heatmap_as_geojson_has_one_feature_per_cell():
    r = client().get("/v1/heatmap", "admin-key", bbox=EVERYWHERE, format="geojson")
    body = r.json()
    assert body["type"] == "FeatureCollection" and len(body["features"]) == 3
    assert body["features"][0]["properties"] == cells(min(COUNTS.items()))[0]


def test_an_answer_at_a_past_minute_comes_from_history():
    api = client()
    r = api.get("/v1/heatmap", "admin-key", bbox=EVERYWHERE, at=AT, res=7)
    assert r.status == 200 and r.json() == {"res": 7, "as_of": AT_MS, "cells": cells((A, 4))}
    assert api.api.history.calls == [("heatmap", 7, AT_MS, BBox.to_tuple(BBox.parse(EVERYWHERE)))]
    assert api.api.queries.calls == []
    r = api.get("/v1/top", "admin-key", at=AT, n=3)
    assert r.json()["cells"] == cells((A, 4))
    assert api.api.history.calls[-1] == ("top", 3, 9, AT_MS, None)


def test_top_cells_and_spaces():
    api = client()
    assert api.get("/v1/top", "admin-key", n=2).json()["cells"] == cells((C, 5), (B, 2))
    r = api.get(f"/v1/cells/{to_str(C)}", "admin-key")
    assert r.json()["count"] == 5 and r.json()["cell"] == to_str(C)
    r = api.get("/v1/spaces", "admin-key", geometry="true")
    spaces = {s["space"]: s for s in r.json()["spaces"]}
    assert spaces["lab"]["kind"] == "polygon" and "polygon" in spaces["lab"]
    assert spaces["hall"] == {"space": "hall", "name": "Hall", "kind": "door", "count": 7}
    r = api.get("/v1/spaces/hall", "admin-key")
    assert r.json()["count"] == 7 and r.json()["kind"] == "door"
    assert r.json()["name"] == "Hall"  # as GET /v1/spaces names it


def test_doorways_are_listed_with_their_sensors():
    r = client().get("/v1/doorways", "viewer-key")
    assert r.status == 200
    assert r.json() == {
        "doorways": [
            {
                "doorway": "front",
                "inside": "hall",
                "outside": None,
                "installations": [{"sensor_id": "s1", "from": 1_000, "positive": "in"}],
            },
            {
                "doorway": "inner",
                "inside": "lobby",
                "outside": "hall",
                "installations": [{"sensor_id": "s2", "from": 2_000, "positive": "out"}],
            },
        ]
    }


def test_a_polygon_space_at_a_past_minute_comes_from_history():
    api = client()
    r = api.get("/v1/spaces/lab", "admin-key", at=AT)
    assert r.json() == {
        "space": "lab",
        "name": "Lab",
        "kind": "polygon",
        "count": 3,
        "as_of": AT_MS,
    }
    assert api.api.history.calls == [("space_count", "lab", AT_MS)]


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/v1/spaces/nowhere", {}, 404, "unknown_space"),
        ("/v1/nothing-here", {}, 404, "not_found"),
        ("/v1/heatmap", {"bbox": "1,2"}, 400, "bad_bbox"),
        ("/v1/heatmap", {"bbox": EVERYWHERE, "res": 12}, 400, "bad_resolution"),
        ("/v1/heatmap", {"bbox": EVERYWHERE, "at": "yesterday-ish"}, 400, "bad_time"),
        ("/v1/heatmap", {}, 400, "bad_request"),  # bbox is required
        ("/v1/top", {"n": 0}, 400, "bad_request"),
        ("/v1/cells/not-a-cell", {}, 400, "bad_cell"),
        ("/v1/history/path/phone-1", {"from": "5", "to": "1"}, 400, "bad_time"),
        ("/v1/history/path/phone-9", {"from": "0", "to": "1"}, 404, "unknown_device"),
        ("/v1/history/devices", {"from": "0", "to": "1"}, 400, "bad_area"),
        ("/v1/history/paths", {"from": "0", "to": "1"}, 400, "bad_area"),
        (
            "/v1/history/paths",
            {"from": "0", "to": "1", "space": "lab", "bbox": "1,1,2,2"},
            400,
            "bad_area",
        ),
        ("/v1/history/paths", {"from": "0", "to": "1", "space": "hall"}, 400, "bad_area"),
        ("/v1/history/paths", {"from": "0", "to": "1", "space": "nowhere"}, 404, "unknown_space"),
        ("/v1/history/paths", {"from": "0", "to": "1", "polygon": "[1]"}, 400, "bad_polygon"),
    ],
)
def test_a_bad_request_has_its_status_and_code(path, params, status, code):
    r = client().get(path, "admin-key", **params)
    assert r.status == status and r.error[0] == code, r.body


def test_a_method_a_route_does_not_have_is_405():
    r = client().send("DELETE", "/v1/heatmap", "admin-key")
    assert r.status == 405 and r.error[0] == "method_not_allowed"


def test_definitions_reach_the_definitions_client():
    api = client()
    body = {"name": "Lab", "polygon": {"type": "Polygon"}}
    r = api.send("PUT", "/v1/spaces/lab", "admin-key", body)
    assert r.status == 200 and r.json()["cells"] == 7
    r = api.send("PUT", "/v1/spaces/bad", "admin-key", {"name": "x"})
    assert r.status == 400 and r.error == ("bad_space", "door: refused")
    r = api.send("PUT", "/v1/spaces/" + "x" * 201, "admin-key", {"name": "x"})
    assert r.status == 400 and r.error[0] == "bad_id"
    r = api.send("PUT", "/v1/doorways/d1", "admin-key", {"inside": "hall"})
    assert r.json() == {"doorway": "d1", "inside": "hall", "outside": None}
    r = api.send(
        "POST", "/v1/doorways/d1/installations", "admin-key", {"sensor_id": "s1", "from": AT}
    )
    assert r.status == 201 and r.json()["from"] == AT_MS
    r = api.send("POST", "/v1/spaces/hall/resets", "admin-key", {"at": "never"})
    assert r.status == 400 and r.error[0] == "bad_time"
    assert [c[0] for c in api.api.definitions.calls] == ["polygon", "door", "doorway", "install"]


def test_dwell_from_live_state_or_from_history():
    api = client()
    r = api.get("/v1/users/phone-1/dwell", "admin-key", day="2026-01-01")
    assert r.json()["cells"] == [{"cell": to_str(A), "seconds": 60.0}]
    assert api.api.history.calls == []
    api.api.queries.live_dwell = {"owed": []}
    r = api.get("/v1/users/phone-1/dwell", "admin-key", day="2026-01-01")
    assert r.status == 200 and r.json()["cells"] == []
    assert api.api.history.calls == [("dwell_pieces", 101, AT_MS)]


def test_devices_in_an_area_are_named_by_raw_id_for_admins():
    api = client()
    r = api.get("/v1/history/devices", "admin-key", bbox=EVERYWHERE, **{"from": "0", "to": "9"})
    assert r.json()["devices"] == [{"device_id": "phone-1", "first_seen": 1, "last_seen": 2}]
    call = api.api.history.calls[0]
    assert call[:3] == ("devices_in_area", 0, 9) and call[-2:] == (1000, 30.0)


def test_paths_name_devices_by_pseudonym_and_come_as_geojson_line_strings():
    api = client()
    period = {"from": "0", "to": "9"}
    r = api.get("/v1/history/paths", "admin-key", bbox=EVERYWHERE, **period, **{"attr.a": "b"})
    assert r.json() == {
        "from": 0,
        "to": 9,
        "paths": [
            {"device": pseudonym_str(101), "points": [{"ts": 1, "lat": 52.66, "lng": -8.63}]},
            {
                "device": pseudonym_str(102),
                "points": [{"ts": 1, "lat": 1.0, "lng": 2.0}, {"ts": 3, "lat": 1.5, "lng": 2.5}],
            },
        ],
        "truncated": False,
    }
    assert "phone-1" not in r.body.decode()  # the id directory knows 101: never asked
    assert api.api.history.calls[-1] == (
        "paths_in_area", 0, 9, (-180.0, -90.0, 180.0, 90.0), None, None, {"a": "b"}, 100, 30.0,
    )  # fmt: skip
    r = api.get("/v1/history/paths", "admin-key", space="lab", format="geojson", **period)
    assert r.headers["content-type"] == "application/geo+json"
    one, two = r.json()["features"]
    assert one["geometry"] == {"type": "LineString", "coordinates": [[-8.63, 52.66]] * 2}
    assert one["properties"] == {"device": pseudonym_str(101), "times": [1]}
    assert two["geometry"]["coordinates"] == [[2.0, 1.0], [2.5, 1.5]]
    call = api.api.history.calls[-1]
    assert call[4] is None and call[5] and all(isinstance(c, int) for c in call[5])
    assert api.get("/v1/history/paths", "viewer-key", bbox=EVERYWHERE, **period).status == 403


def test_an_export_is_a_download():
    r = client().get("/v1/export", "admin-key", what="pings", **{"from": "0", "to": "9"})
    assert r.status == 200 and r.body == b"ts,cell\n"
    assert r.headers["content-disposition"] == 'attachment; filename="occupancy-pings-0-9.csv"'


def test_archive_controls_go_to_history():
    api = client()
    r = api.send("POST", "/v1/admin/archive", "admin-key", {"paused": True})
    assert r.status == 200 and r.json() == api.api.history.answers["status"]
    assert api.api.history.calls == [("pause", True), ("status",)]
    r = api.send("POST", "/v1/admin/archive", "admin-key", {})
    assert r.status == 400 and r.error[0] == "bad_request"


def test_keys_are_listed_and_revoked():
    api = client()
    assert len(api.get("/v1/admin/keys", "admin-key").json()["keys"]) == 3
    r = api.send("DELETE", "/v1/admin/keys/k-viewer", "admin-key")
    assert r.json() == {"revoked": "key", "id": "k-viewer"}
    r = api.send("DELETE", "/v1/admin/keys/k-other", "admin-key")
    assert r.status == 404 and r.error[0] == "not_found"


@pytest.mark.parametrize(
    ("fail", "status", "code"),
    [
        (None, 202, None),
        (RebalanceError("another rebalance runs"), 409, "rebalance_conflict"),
        (DoesNotFit("no room"), 409, "does_not_fit"),
        (Unavailable("a shard is restarting"), 503, "unavailable"),
    ],
)
def test_a_scale_is_accepted_or_refused_at_once(fail, status, code):
    api = client()
    api.api.scaler.fail = fail
    r = api.send("POST", "/v1/admin/scale", "admin-key", {"user_shards": 3})
    assert r.status == status
    if code is None:
        assert r.json()["target_version"] == 2 and r.headers["location"] == "/v1/admin/status"
    else:
        assert r.error[0] == code
    r = api.send("POST", "/v1/admin/scale", "admin-key", {})
    assert r.status == 400 and r.error[0] == "bad_request"


def test_health_is_degraded_while_redis_or_history_is_down():
    api = client()
    api.api.redis.down = redis.ConnectionError("refused")
    api.api.history.fail = Unavailable("restarting")
    r = api.get("/v1/health")
    assert r.status == 503 and r.headers["retry-after"]
    checks = r.json()["checks"]
    assert checks["redis"].startswith("error") and checks["clickhouse"] == "unavailable"


# -- the privacy floor -------------------------------------------------------------------------


def test_a_viewer_sees_released_counts_and_an_admin_exact_ones():
    api = client(k_min=2)
    viewer = api.get("/v1/heatmap", "viewer-key", bbox=EVERYWHERE).json()
    assert viewer["cells"] == cells(*sorted({B: 2, C: 5}.items()))  # A's 1 is under the floor
    admin = api.get("/v1/heatmap", "admin-key", bbox=EVERYWHERE).json()
    assert admin["cells"] == cells(*sorted(COUNTS.items()))
    k = [c[-1] for c in api.api.queries.calls]
    assert [c[0] for c in api.api.queries.calls] == ["floored_heatmap", "heatmap"] and k[0] == 2
    assert api.get(f"/v1/cells/{to_str(A)}", "viewer-key").json()["count"] == 0
    assert api.get(f"/v1/cells/{to_str(A)}", "admin-key").json()["count"] == 1
    assert api.get("/v1/top", "viewer-key", n=5).json()["cells"] == cells((C, 5), (B, 2))


def test_a_viewer_at_a_past_minute_gets_historys_floored_answer():
    api = client(k_min=3)
    r = api.get(f"/v1/cells/{to_str(A)}", "viewer-key", at=AT)
    assert r.json()["count"] == 0
    assert api.api.history.calls == [("floored_cell", A, 9, AT_MS, 3)]


def test_with_k_min_of_one_nothing_is_floored():
    api = client(k_min=1)
    r = api.get("/v1/heatmap", "viewer-key", bbox=EVERYWHERE)
    assert r.json()["cells"] == cells(*sorted(COUNTS.items()))
    assert api.api.queries.calls[0][0] == "heatmap"


def test_a_space_under_the_floor_is_zero_for_viewers():
    api = client(k_min=3)
    spaces = {s["space"]: s["count"] for s in api.get("/v1/spaces", "viewer-key").json()["spaces"]}
    assert spaces == {"lab": 0, "hall": 7, "lobby": 0}
    assert api.get("/v1/spaces/lobby", "admin-key").json()["count"] == 2


def test_the_cached_answers_of_viewers_and_admins_are_apart():
    api = client(k_min=2)

    async def both():
        return await asyncio.gather(
            api.request("GET", "/v1/top", "viewer-key", params={"n": 5}),
            api.request("GET", "/v1/top", "admin-key", params={"n": 5}),
            api.request("GET", "/v1/top", "admin-key", params={"n": 5}),
        )

    viewer, admin, again = asyncio.run(both())
    assert len(viewer.json()["cells"]) == 2 and len(admin.json()["cells"]) == 3
    assert again.body == admin.body
    assert sorted(c[0] for c in api.api.queries.calls) == ["floored_top", "top"]  # one each


def test_distance_per_device_is_for_admins():
    api = client(k_min=2)
    period = {"from": "0", "to": "9"}
    r = api.get("/v1/history/distance", "admin-key", **period)
    assert r.json()["devices"] == [
        {"device_id": "phone-1", "meters": 10.0},
        {"device_id": "phone-2", "meters": 30.0},
    ]
    r = api.get("/v1/history/distance", "viewer-key", **period)
    assert r.json() == {"average_meters": 20.0, "device_count": 2}
    r = api.get("/v1/history/distance", "viewer-key", device_id="phone-1", **period)
    assert r.status == 403 and r.error[0] == "forbidden"


def test_a_viewers_distance_over_too_few_devices_is_withheld():
    api = client(k_min=3)
    r = api.get("/v1/history/distance", "viewer-key", **{"from": "0", "to": "9"})
    assert r.json() == {"average_meters": 0.0, "device_count": 0}


@pytest.mark.parametrize(
    ("masks", "released"),
    [({(1,): 2}, True), ({(1,): 2, (0,): 1}, False)],  # a filter that hides one device
)
def test_a_viewers_attribute_filter_is_released_by_its_sub_filters(masks, released):
    api = client(k_min=2)
    api.api.history.answers["attribute_masks"] = masks
    r = api.get("/v1/history/distance", "viewer-key", **{"from": "0", "to": "9", "attr.a": "x"})
    assert (r.json()["device_count"] == 2) is released
    assert api.api.history.calls[-1][0] == "attribute_masks"


def test_viewers_filter_on_at_most_max_floored_attrs():
    api = client(k_min=2)
    params = {"from": "0", "to": "9"}
    params.update({f"attr.a{i}": "x" for i in range(MAX_FLOORED_ATTRS + 1)})
    r = api.get("/v1/history/distance", "viewer-key", **params)
    assert r.status == 400 and r.error[0] == "bad_attribute"
    assert api.get("/v1/history/distance", "admin-key", **params).status == 200


# the raw-history searches, with the parameters each needs beside its period, and their time
SEARCHES = [
    ("/v1/history/devices", {"bbox": EVERYWHERE, "timeout_s": 0.5}, "devices_in_area"),
    ("/v1/history/distance", {"timeout_s": 0.5}, "distance"),
    ("/v1/history/paths", {"bbox": EVERYWHERE, "timeout_s": 0.5}, "paths_in_area"),
    ("/v1/admin/audit", {}, "audit_entries"),
]
WIDEST = [
    (str(EARLIEST_MS), str(LATEST_MS)),
    ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999-23:59"),
]


@pytest.mark.parametrize(("path", "params", "method"), SEARCHES)
@pytest.mark.parametrize(("start", "end"), WIDEST)
def test_a_search_over_every_year_it_accepts_reaches_history(path, params, method, start, end):
    api = client()
    r = api.get(path, "admin-key", **params, **{"from": start, "to": end})
    assert r.status == 200, r.body
    assert [c[1:3] for c in api.api.history.calls if c[0] == method] == [(EARLIEST_MS, LATEST_MS)]


@pytest.mark.parametrize(("path", "params", "method"), SEARCHES)
@pytest.mark.parametrize(
    "period",
    [
        {"from": str(EARLIEST_MS - 1), "to": "0"},
        {"from": "0", "to": str(LATEST_MS + 1)},
        {"from": "0000-12-31", "to": "0"},
        {"from": "0", "to": "10000-01-01"},
        {"from": "5", "to": "5"},
    ],
)
def test_a_period_outside_the_years_1_to_9999_or_empty_is_400(path, params, method, period):
    api = client()
    r = api.get(path, "admin-key", **params, **period)
    assert r.status == 400 and r.error[0] == "bad_time", r.body
    assert not api.api.history.calls


@pytest.mark.parametrize(("path", "params", "method"), SEARCHES)
def test_a_search_past_its_time_is_504_whatever_its_span(path, params, method):
    api = client()
    api.api.history.fail = HistoryTimeout("Code: 159. TIMEOUT_EXCEEDED")
    r = api.get(path, "admin-key", **params, **{"from": str(EARLIEST_MS), "to": str(LATEST_MS)})
    took = f"{params.get('timeout_s', 60):g} s"  # the time the query was given, not the wait's
    assert (r.status, r.error) == (
        504,
        ("history_timeout", f"the history query took longer than {took}"),
    )


# -- the engine's errors as HTTP ---------------------------------------------------------------

REDIS_ERROR = ("redis_unavailable", REDIS_DOWN[1])
RESTARTING = ("unavailable", "a shard or the history store is restarting; retry")


@pytest.mark.parametrize(
    ("error", "status", "envelope"),
    [
        (HistoryUnavailable("Traceback...\nCode: 210. connection refused"), 503,
         ("history_unavailable", "Code: 210. connection refused")),
        (HistoryTimeout("Code: 159. TIMEOUT_EXCEEDED"), 504,
         ("history_timeout", "the history query took longer than 60 s")),
        (Unavailable("the history actor is restarting"), 503, RESTARTING),
        (StateUnavailable("Redis refused"), 503, REDIS_ERROR),
        (RuntimeError("a bug"), 500, ("internal", "RuntimeError: the engine failed to answer")),
    ],
)  # fmt: skip
def test_a_history_error_is_answered_with_its_status(error, status, envelope):
    api = client()
    api.api.history.fail = error
    r = api.get("/v1/heatmap", "admin-key", bbox=EVERYWHERE, at=AT)
    assert (r.status, r.error) == (status, envelope)
    assert ("retry-after" in r.headers) is (status == 503)


@pytest.mark.parametrize(
    ("error", "status", "envelope"),
    [
        (Unavailable("a cell shard is restarting"), 503, RESTARTING),
        (StateUnavailable("Redis refused"), 503, REDIS_ERROR),
        (redis.ConnectionError("refused"), 503, REDIS_ERROR),
    ],
)
def test_a_live_query_error_is_answered_with_its_status(error, status, envelope):
    api = client()
    api.api.queries.fail = error
    r = api.get("/v1/top", "admin-key")
    assert (r.status, r.error) == (status, envelope)


def test_a_history_answer_past_its_time_is_504():
    async def slow():
        await asyncio.sleep(1)

    with pytest.raises(ApiError) as raised:
        asyncio.run(within(slow(), 0.01))
    assert (raised.value.status, raised.value.code) == (504, "history_timeout")
    assert raised.value.message == "the history query took longer than 0.01 s"


def test_the_status_of_a_history_that_does_not_answer_is_an_error():
    api = api_context()
    api.history.fail = HistoryUnavailable("down")
    assert asyncio.run(api.history_status()) == {"error": "unavailable (HistoryUnavailable)"}
