"""`GET /v1/series` over HTTP against the oracle: polygon spaces, cells (base and coarse), door
spaces, every step, `by=attr.K`, time zones other than UTC; the privacy floor for viewers; bad
parameters answered 400/403/404."""

import random
import time

import pytest
import ray
import requests

from clients.history import NAME as HISTORY
from engine.cells import parent, to_str
from engine.series import STEPS
from protos.occupancy.v1 import occupancy_pb2 as pb
from tests.integration.checks import agree, converge
from tests.workload import POINTS

pytestmark = pytest.mark.integration

# a key of their own: other tests of the session count the devices with `fleet` pings
ROUTES = ["304", "305", None]  # None: a ping without the attribute


@pytest.fixture(scope="module")
def traffic(spaces):
    """Pings with attributes and door events over the last 50 minutes, archived."""
    live, rng = spaces, random.Random(18)
    now = int(time.time() * 1000)
    pings = []
    for _ in range(400):
        route = rng.choice(ROUTES)
        lat, lng = rng.choice(POINTS[:10])  # clusters 0 and 1: in and near sp-a, sp-b
        pings.append(
            pb.Ping(
                device_id=f"ser-{rng.randrange(30)}",
                ts_ms=now - rng.randint(0, 3_000_000),
                lat=lat,
                lng=lng,
                attributes={"route": route} if route else {},
            )
        )
    for i in range(0, len(pings), 50):
        live.send(pings[i : i + 50])
    events = [
        pb.DoorEvent(
            sensor_id=rng.choice(["s1", "s2"]),
            ts_ms=now - rng.randint(0, 3_000_000),
            direction=rng.choice([1, 1, -1]),
        )
        for _ in range(120)
    ]
    assert live.doors(events).accepted == len(events)
    converge(live)
    history = ray.get_actor(HISTORY, namespace=live.engine.topology.namespace)
    ray.get(history.snapshot.remote())
    return live, history


def _get(live, key: str, **params) -> requests.Response:
    return requests.get(
        live.http + "/v1/series",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def _series(live, history, key: str, **params):
    """The answer after a fresh snapshot (history then holds every ping sent so far)."""
    ray.get(history.snapshot.remote())
    r = _get(live, key, **params)
    assert r.status_code == 200, r.text
    body = r.json()
    return body.get("points", body.get("series"))


def _expected(live, place, step: str, tz: str, t0: int, t1: int, now: int, by=None, door=False):
    o = live.oracle
    cuts = o.series_edges(t0, t1, STEPS[step], tz)
    if door:
        return [
            {"t": cuts[i], "count": n, "in": a, "out": b}
            for i, (n, a, b) in enumerate(o.door_series(place, cuts, now))
        ]
    counts = o.series(place, cuts, now, by)

    def points(values):
        return [{"t": cuts[i], "count": n} for i, n in enumerate(values)]

    if by is None:
        return points(counts[None])
    ordered = sorted(counts.items(), key=lambda x: (x[0] is None, x[0] or ""))
    return [{"value": v, "points": points(c)} for v, c in ordered]


def test_polygon_spaces_and_cells_equal_the_oracle(traffic):
    live, history = traffic
    now = int(time.time() * 1000)
    t0, t1 = now - 3_300_000, now + 600_000  # the last 55 minutes and a little ahead
    base = live.oracle.cell_of(*POINTS[0])
    places = [("space", "sp-a"), ("space", "sp-b"), ("cell", base), ("cell", parent(base, 7))]
    zones = ["UTC", "Asia/Kathmandu", "America/St_Johns", "Europe/Dublin", "Australia/Lord_Howe"]
    for i, step in enumerate(STEPS):
        for j, (kind, place) in enumerate(places):
            tz = zones[(i + j) % len(zones)]
            name = place if kind == "space" else to_str(place)
            agree(
                lambda k=kind, n=name, s=step, z=tz: _series(
                    live, history, live.admin, **{k: n}, step=s, tz=z, **{"from": t0, "to": t1}
                ),
                lambda t, p=place, s=step, z=tz: _expected(live, p, s, z, t0, t1, t),
                (step, kind, name, tz),
            )
    # not an empty answer that happens to agree
    busy = _series(live, history, live.admin, space="sp-a", step="1h", **{"from": t0, "to": t1})
    assert sum(p["count"] for p in busy) > 0


def test_by_attribute_equals_the_oracle(traffic):
    live, history = traffic
    now = int(time.time() * 1000)
    t0, t1 = now - 3_000_000, now
    base = live.oracle.cell_of(*POINTS[0])
    for step, tz, kind, place in [
        ("5m", "Europe/Dublin", "space", "sp-a"),
        ("15m", "Asia/Kathmandu", "cell", parent(base, 8)),
        ("1d", "America/New_York", "space", "sp-b"),
    ]:
        name = place if kind == "space" else to_str(place)
        agree(
            lambda k=kind, n=name, s=step, z=tz: _series(
                live, history, live.admin, **{k: n}, step=s, tz=z, by="attr.route",
                **{"from": t0, "to": t1},
            ),
            lambda t, p=place, s=step, z=tz: _expected(live, p, s, z, t0, t1, t, by="route"),
            (step, kind, name, "by"),
        )  # fmt: skip
    split = _series(live, history, live.admin, space="sp-a", step="1h", by="attr.route",
                    **{"from": t0, "to": t1})  # fmt: skip
    assert {s["value"] for s in split} == {"304", "305", None}


def test_door_spaces_equal_the_oracle(traffic):
    live, history = traffic
    now = int(time.time() * 1000)
    t0, t1 = now - 3_300_000, now + 60_000
    for step, tz in [("1m", "UTC"), ("5m", "Asia/Kathmandu"), ("1h", "America/St_Johns")]:
        for space in ("hall", "room"):
            agree(
                lambda s=step, z=tz, sp=space: _series(
                    live, history, live.admin, space=sp, step=s, tz=z, **{"from": t0, "to": t1}
                ),
                lambda t, s=step, z=tz, sp=space: _expected(live, sp, s, z, t0, t1, t, door=True),
                (step, space, tz),
            )
    # daily footfall: today's entries and exits, in Dublin's day
    agree(
        lambda: _series(live, history, live.admin, space="hall", step="1d", tz="Europe/Dublin",
                        **{"from": now - 1, "to": now})[-1],
        lambda t: _expected(live, "hall", "1d", "Europe/Dublin", now - 1, now, t, door=True)[-1],
        "footfall",
    )  # fmt: skip


def test_viewers_get_the_floor(traffic):
    live, history = traffic
    k = 2  # the session's k_min
    now = int(time.time() * 1000)
    t0, t1 = now - 3_000_000, now
    base = live.oracle.cell_of(*POINTS[0])

    def floored(points):
        return [p | {"count": p["count"] if p["count"] >= k else 0} for p in points]

    agree(
        lambda: _series(live, history, live.viewer, space="sp-a", step="5m",
                        **{"from": t0, "to": t1}),
        lambda t: floored(_expected(live, "sp-a", "5m", "UTC", t0, t1, t)),
        "viewer space",
    )  # fmt: skip
    agree(
        lambda: _series(live, history, live.viewer, cell=to_str(base), step="15m",
                        **{"from": t0, "to": t1}),
        lambda t: floored(_expected(live, base, "15m", "UTC", t0, t1, t)),
        "viewer base cell",
    )  # fmt: skip
    # a coarse cell is released from the counts under it: never a count under k
    coarse = _series(live, history, live.viewer, cell=to_str(parent(base, 6)), step="1h",
                     **{"from": t0, "to": t1})  # fmt: skip
    assert all(p["count"] == 0 or p["count"] >= k for p in coarse)
    r = _get(live, live.viewer, space="sp-a", step="1h", by="attr.route", **{"from": t0, "to": t1})
    assert r.status_code == 403, r.text


@pytest.mark.parametrize(
    "params, status, code",
    [
        ({"space": "sp-a", "step": "1h", "from": "2026-01-02", "to": "2026-01-01"}, 400,
         "bad_time"),
        ({"space": "sp-a", "step": "1m", "from": "2026-01-01", "to": "2026-02-01"}, 400,
         "too_many_points"),
        ({"space": "sp-a", "step": "1h", "tz": "Mars/Olympus", "from": "2026-01-01",
          "to": "2026-01-02"}, 400, "bad_tz"),
        ({"space": "nowhere", "step": "1h", "from": "2026-01-01", "to": "2026-01-02"}, 404,
         "unknown_space"),
        ({"space": "sp-a", "cell": "89195da49b7ffff", "step": "1h", "from": "2026-01-01",
          "to": "2026-01-02"}, 400, "bad_place"),
        ({"space": "hall", "step": "1h", "by": "attr.fleet", "from": "2026-01-01",
          "to": "2026-01-02"}, 400, "bad_by"),
        ({"cell": "zz", "step": "1h", "from": "2026-01-01", "to": "2026-01-02"}, 400, None),
        ({"space": "sp-a", "step": "2h", "from": "2026-01-01", "to": "2026-01-02"}, 400, None),
    ],
)  # fmt: skip
def test_bad_parameters(spaces, params, status, code):
    r = _get(spaces, spaces.admin, **params)
    assert r.status_code == status, r.text
    if code:
        assert r.json()["error"]["code"] == code
