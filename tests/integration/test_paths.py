"""`GET /v1/history/paths` against the oracle: the paths of the devices that were inside a
bbox, a polygon with a hole, or a polygon space during a period, clipped to it, filtered by
attributes, limited, as JSON and GeoJSON, named by pseudonym only."""

import random
import time

import pytest
import ray

from clients.history import NAME as HISTORY
from engine.pseudonym import pseudonym_str
from engine.timeutil import DAY_MS
from occupancy.client import ApiError, QueryClient
from protos.occupancy.v1 import occupancy_pb2 as pb
from tests.oracle import _inside

pytestmark = pytest.mark.integration

GALWAY = (53.2707, -9.0568)  # an area no other test sends to
LAT0, LNG0 = GALWAY


def _rect(w: float, s: float, e: float, n: float) -> list[list[float]]:
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


# west half of the area, with a hole in it
POLYGON = {
    "type": "Polygon",
    "coordinates": [
        _rect(LNG0 - 0.02, LAT0 - 0.01, LNG0 + 0.002, LAT0 + 0.01),
        _rect(LNG0 - 0.012, LAT0 - 0.004, LNG0 - 0.006, LAT0 + 0.004),
    ],
}
SPACE = "galway-east"
SPACE_POLYGON = {"type": "Polygon", "coordinates": [_rect(LNG0, LAT0 - 0.006, LNG0 + 0.02, LAT0)]}
BBOX = (LNG0 - 0.005, LAT0 - 0.005, LNG0 + 0.005, LAT0 + 0.005)
STROLLER = {"kit": "stroller"}


def _walks(rng: random.Random, now: int) -> tuple[list[pb.Ping], dict[str, dict]]:
    """10 devices walking around Galway over the last 10 minutes and 2 three days ago, 14
    pings each, arriving shuffled (some late); walks 0-3 carry a stroller, walks 0 and 4
    stay in the space."""
    pings, attrs = [], {}
    for d in range(12):
        device = f"walk-{d}"
        attrs[device] = STROLLER if d < 4 else {}
        base = now - 600_000 if d < 10 else now - 3 * DAY_MS
        lat, lng = LAT0 + rng.uniform(-0.01, 0.01), LNG0 + rng.uniform(-0.02, 0.02)
        step = 1.0
        if d in (0, 4):  # a walk with a stroller and one without dawdle in the space
            lat, lng, step = LAT0 - 0.003, LNG0 + 0.01, 0.2
        for _ in range(14):
            lat += rng.uniform(-0.002, 0.002) * step
            lng += rng.uniform(-0.003, 0.003) * step
            ts = base + rng.randint(0, 590_000)
            pings.append(
                pb.Ping(device_id=device, ts_ms=ts, lat=lat, lng=lng, attributes=attrs[device])
            )
    rng.shuffle(pings)
    return pings, attrs


@pytest.fixture(scope="module")
def walks(live):
    live.engine.define_polygon_space(SPACE, SPACE_POLYGON, "Galway east")
    live.oracle.define_polygon_space(SPACE, SPACE_POLYGON)
    now = int(time.time() * 1000)
    pings, attrs = _walks(random.Random(18), now)
    for i in range(0, len(pings), 15):
        live.send(pings[i : i + 15])
    history = ray.get_actor(HISTORY, namespace=live.engine.topology.namespace)
    # the snapshot archives what the shards logged: every batch was acked, so all of it
    ray.get(history.snapshot.remote())
    return now, attrs


def _expected(live, attrs, t0, t1, inside, want: dict | None = None) -> list[tuple[str, list]]:
    """(pseudonym, [(ts, lat, lng)]) of the devices with an applied ping in [t0, t1) for which
    `inside(lat, lng)` (with the attributes `want`), their paths clipped to the period, by key."""
    later = int(time.time() * 1000)
    out = []
    for device, given in attrs.items():
        if want and any(given.get(k) != v for k, v in want.items()):
            continue
        path = live.oracle.path(device, t0, t1, later)
        if any(inside(lat, lng) for _, lat, lng in path):
            out.append((live.pseudonym(device), path))
    return [(pseudonym_str(key), path) for key, path in sorted(out)]


def _got(answer) -> list[tuple[str, list]]:
    return [(p.device, [(x.ts, x.lat, x.lng) for x in p.points]) for p in answer.paths]


def test_paths_in_an_area_equal_the_oracle(live, walks):
    now, attrs = walks
    t0, t1 = now - 400_000, now - 100_000  # the walks' paths begin before and end after it
    api = QueryClient(live.http, live.admin)
    o = live.oracle

    def in_bbox(lat, lng):
        return BBOX[0] <= lng <= BBOX[2] and BBOX[1] <= lat <= BBOX[3]

    def in_space(lat, lng):
        return o.cell_of(lat, lng) in o.space_cells(SPACE)

    def in_polygon(lat, lng):
        return _inside(POLYGON, lat, lng)

    cases = [
        ({"bbox": ",".join(map(str, BBOX))}, in_bbox, None),
        ({"polygon": POLYGON}, in_polygon, None),
        ({"space": SPACE}, in_space, None),
        ({"polygon": POLYGON, "attrs": STROLLER}, in_polygon, STROLLER),
        ({"space": SPACE, "attrs": STROLLER}, in_space, STROLLER),
    ]
    for area, inside, want in cases:
        expected = _expected(live, attrs, t0, t1, inside, want)
        answer = api.paths(t0, t1, **area)
        assert (answer.from_, answer.to, answer.truncated) == (t0, t1, False)
        assert _got(answer) == expected, area
        assert all(ts >= t0 and ts < t1 for _, path in expected for ts, _, _ in path)
        assert not any(p.device.startswith("walk-") for p in answer.paths)
    # every area above holds some walks, and the filters leave some out
    assert (
        len(_expected(live, attrs, t0, t1, in_space))
        > len(_expected(live, attrs, t0, t1, in_space, STROLLER))
        > 0
    )

    # the limit: the first devices by pseudonym, and the answer says more were inside
    everything = {"bbox": f"{LNG0 - 0.05},{LAT0 - 0.05},{LNG0 + 0.05},{LAT0 + 0.05}"}
    expected = _expected(live, attrs, t0, t1, lambda lat, lng: True)
    assert len(expected) == 10  # the ten walks of the last ten minutes, not those of days ago
    answer = api.paths(t0, t1, limit=3, **everything)
    assert _got(answer) == expected[:3] and answer.truncated

    # GeoJSON: a LineString per device, [lng, lat], with its times and pseudonym
    collection = api.paths(t0, t1, geojson=True, space=SPACE)
    expected = _expected(live, attrs, t0, t1, in_space)
    assert collection["type"] == "FeatureCollection" and not collection["truncated"]
    got = []
    for f in collection["features"]:
        times, coordinates = f["properties"]["times"], f["geometry"]["coordinates"]
        points = [(ts, lat, lng) for ts, (lng, lat) in zip(times, coordinates, strict=False)]
        got.append((f["properties"]["device"], points))
    assert got == expected
    assert all(f["geometry"]["type"] == "LineString" for f in collection["features"])
    assert all(len(f["geometry"]["coordinates"]) >= 2 for f in collection["features"])

    # refusals: two areas, a door space, a viewer
    with pytest.raises(ApiError) as err:
        api.paths(t0, t1, space=SPACE, bbox="1,1,2,2")
    assert (err.value.status, err.value.code) == (400, "bad_area")
    with pytest.raises(ApiError) as err:
        QueryClient(live.http, live.viewer).paths(t0, t1, space=SPACE)
    assert err.value.status == 403
    api.close()
