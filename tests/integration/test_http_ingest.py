"""HTTP ingest against the live engine: fleets sent through `POST /v1/pings` (JSON and NDJSON)
and through the OsmAnd protocol (both request shapes of the Traccar Client app, on `/v1/osmand`
and on the handlers' own OsmAnd port) are in `/v1/top` as the oracle has them; door events over
HTTP count as over gRPC; bad requests get their 4xx and lose nothing else."""

import random
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson
import pytest
import requests

from engine.cells import parse_cell
from tests.integration.checks import agree, assert_live_equals_oracle, random_pings
from tests.workload import POINTS

pytestmark = pytest.mark.integration

NDJSON = "application/x-ndjson"


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _top(live, n: int, res: int) -> list[tuple[int, int]]:
    r = requests.get(f"{live.http}/v1/top", params={"n": n, "res": res}, headers=_auth(live.admin))
    assert r.status_code == 200, r.text
    return [(parse_cell(c["cell"]), c["count"]) for c in r.json()["cells"]]


def _top_agrees(live) -> None:
    for n, res in ((10, 9), (5, 7)):
        agree(
            lambda n=n, r=res: _top(live, n, r),
            lambda t, n=n, r=res: live.oracle.top_n(n, r, t, t),
            f"/v1/top n={n} res={res}",
        )


def _outcomes(live, pings: list[dict]) -> tuple[int, int, int]:
    """The oracle's (applied, late, rejected) of pings about to be sent (it logs them)."""
    now = int(time.time() * 1000)
    out = [live.oracle.ping(now, p["device_id"], p["ts_ms"], p["lat"], p["lng"]) for p in pings]
    return out.count("applied"), out.count("late"), out.count("rejected")


def test_a_fleet_through_v1_pings_is_in_top_as_the_oracle_has_it(spaces):
    live = spaces
    rng = random.Random(31)
    now = int(time.time() * 1000)
    fleet = [
        {"device_id": p.device_id, "ts_ms": p.ts_ms, "lat": p.lat, "lng": p.lng}
        for p in random_pings(rng, "http", 300, now)
    ]
    fleet[5]["accuracy_m"] = 12.5
    fleet[6]["attributes"] = {"stroller": "yes"}
    fleet[7]["region"] = "mall"
    i = 0
    while i < len(fleet):
        batch = fleet[i : i + rng.randint(1, 60)]
        i += len(batch)
        applied, late, rejected = _outcomes(live, batch)
        if rng.random() < 0.5:
            r = requests.post(
                f"{live.http}/v1/pings", json={"pings": batch}, headers=_auth(live.key)
            )
        else:
            body = b"\n".join(orjson.dumps(p) for p in batch) + b"\n"
            headers = {**_auth(live.key), "Content-Type": NDJSON}
            r = requests.post(f"{live.http}/v1/pings", data=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "accepted": applied,
            "late": late,
            "rejected": rejected,
            "rejections": [],
        }
    _top_agrees(live)


def _app_query(device: str, ts_ms: int, lat: float, lng: float) -> dict:
    """The parameters the original Traccar Client app sends (ProtocolFormatter: seconds)."""
    return {
        "id": device,
        "timestamp": str(ts_ms // 1000),
        "lat": str(lat),
        "lon": str(lng),
        "speed": "0.0",
        "bearing": "0.0",
        "altitude": "12.0",
        "accuracy": "8.5",
        "batt": "87.0",
    }


def _app_json(device: str, ts_ms: int, lat: float, lng: float) -> bytes:
    """The body the newer Traccar Client app sends (its location template, device_id in
    `params`)."""
    stamp = datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")
    location = {
        "timestamp": stamp.replace("+00:00", "Z"),
        "coords": {
            "latitude": lat,
            "longitude": lng,
            "accuracy": 5.0,
            "speed": -1,
            "heading": -1,
            "altitude": 31.2,
        },
        "is_moving": True,
        "odometer": 1234,
        "event": "",
        "battery": {"level": 0.81, "is_charging": False},
        "activity": {"type": "walking"},
        "extras": {},
        "_": f"&id={device}&lat={lat}&lon={lng}&timestamp={stamp}&",
    }
    return orjson.dumps({"location": location, "device_id": device})


def test_a_fleet_through_osmand_in_both_shapes_is_in_top_as_the_oracle_has_it(spaces):
    live = spaces
    engine = live.engine
    assert engine.osmand_port > 0
    port = f"http://127.0.0.1:{engine.osmand_port}"
    rng = random.Random(32)
    devices = [f"osm-{i}" for i in range(24)]
    tokens = {d: engine.device_token(d) for d in devices}
    now = int(time.time() * 1000)
    for round_ in range(3):
        for k, device in enumerate(devices):
            lat, lng = rng.choice(POINTS)
            ts = now - 50_000 + round_ * 10_000 + k  # whole seconds for the query form
            shape = (k + round_) % 4
            if shape < 2:
                ts -= ts % 1000
            outcome = live.oracle.ping(int(time.time() * 1000), device, ts, lat, lng)
            assert outcome == "applied"
            token = tokens[device]
            if shape == 0:  # the original app: POST, every parameter in the URL
                query = urlencode({"token": token, **_app_query(device, ts, lat, lng)})
                r = requests.post(f"{port}/?{query}")
            elif shape == 1:  # GET on the API, a form body's twin in the URL
                query = urlencode(_app_query(device, ts, lat, lng))
                r = requests.get(f"{live.http}/v1/osmand?{query}", headers=_auth(token))
            elif shape == 2:  # the newer app: JSON, the token in the server URL
                r = requests.post(
                    f"{port}/?token={token}",
                    data=_app_json(device, ts, lat, lng),
                    headers={"Content-Type": "application/json"},
                )
            else:  # the newer app through the API
                r = requests.post(
                    f"{live.http}/v1/osmand?token={token}",
                    data=_app_json(device, ts, lat, lng),
                    headers={"Content-Type": "application/json"},
                )
            assert r.status_code == 200, (shape, r.text)
            assert r.json()["accepted"] == 1, (shape, r.text)
    # a form-encoded body on the OsmAnd port, the token in the Authorization header
    lat, lng = POINTS[0]
    ts = int(time.time() * 1000) // 1000 * 1000
    live.oracle.ping(int(time.time() * 1000), devices[0], ts, lat, lng)
    r = requests.post(
        f"{port}/",
        data=_app_query(devices[0], ts, lat, lng),
        headers=_auth(tokens[devices[0]]),
    )
    assert r.status_code == 200, r.text
    _top_agrees(live)


def test_bad_http_ingest_requests_get_their_4xx_and_lose_nothing_else(spaces):
    live = spaces
    url = f"{live.http}/v1/pings"
    now = int(time.time() * 1000)
    lat, lng = POINTS[1]
    good = {"device_id": "http-bad-0", "ts_ms": now, "lat": lat, "lng": lng}

    def post(data, content_type="application/json", key=None, path="/v1/pings"):
        headers = {**_auth(key or live.key), "Content-Type": content_type}
        return requests.post(live.http + path, data=data, headers=headers)

    assert post(b"{not json").json()["error"]["code"] == "bad_json"
    assert post(b'{"pings": 5}').status_code == 400
    assert post(b'{"pings": []}', "text/plain").status_code == 415
    r = post(orjson.dumps({"pings": [good] * 50_001}))
    assert r.status_code == 413 and r.json()["error"]["code"] == "batch_too_large"
    assert post(b"x" * (17 << 20)).status_code == 413
    assert requests.post(url, json={"pings": [good]}).status_code == 401
    assert post(orjson.dumps({"pings": [good]}), key=live.viewer).status_code == 403
    # malformed items are rejected by index; the valid ones are taken
    applied, _, _ = _outcomes(live, [good])
    r = post(orjson.dumps({"pings": [good, {"device_id": 5}, "x", {**good, "lat": "52"}]}))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "accepted": applied,
        "late": 0,
        "rejected": 3,
        "rejections": [{"index": i, "reason": "malformed"} for i in (1, 2, 3)],
    }
    # a device token sends for its own device only; an invalid ping is refused with a reason
    token = live.engine.device_token("http-bad-1")
    r = post(orjson.dumps({"pings": [{**good, "device_id": "http-bad-2"}]}), key=token)
    assert r.json()["rejections"] == [{"index": 0, "reason": "not_authorized_for_device"}]
    r = post(orjson.dumps({"pings": [{**good, "device_id": "http-bad-1", "lat": 91}]}), key=token)
    assert r.json()["rejections"] == [{"index": 0, "reason": "lat_out_of_range"}]
    # OsmAnd: a request refused is a 4xx (the app keeps the position and sends it again)
    osm = f"{live.http}/v1/osmand"
    query = {"id": "http-bad-1", "lat": "52.6", "lon": "-8.6", "token": token}
    assert requests.get(osm, params={**query, "token": "nope"}).status_code == 401
    assert requests.get(osm, params={**query, "id": "http-bad-2"}).status_code == 403
    assert requests.get(osm, params={**query, "lat": "north"}).status_code == 400
    assert (
        requests.get(osm, params={k: v for k, v in query.items() if k != "lon"}).json()["error"][
            "code"
        ]
        == "missing_position"
    )
    # a position rejected for what it holds is dropped with its reason, and the next one
    # (the app sends them oldest first) is taken
    r = requests.get(osm, params={**query, "timestamp": "86400"})  # 1970: too old
    assert r.status_code == 200, r.text
    assert r.json()["rejections"] == [{"index": 0, "reason": "ts_too_old"}]
    ts = int(time.time() * 1000)
    taken = {"device_id": "http-bad-1", "ts_ms": ts, "lat": 52.6, "lng": -8.6}
    assert _outcomes(live, [taken]) == (1, 0, 0)
    r = requests.get(osm, params={**query, "timestamp": str(ts)})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert requests.post(osm, params={"token": token}, data=b"{").status_code == 400
    _top_agrees(live)


def test_door_events_over_http_count_as_over_grpc(spaces):
    live = spaces
    rng = random.Random(33)
    now = int(time.time() * 1000)
    events = [
        {
            "sensor_id": rng.choice(["s1", "s2", "s3"]),
            "ts_ms": now - rng.randint(0, 600_000),
            "direction": rng.choice([1, 1, -1]),
        }
        for _ in range(40)
    ]
    events.append({"sensor_id": "s1", "ts_ms": now, "direction": 0})  # direction_invalid
    events.append({"sensor_id": "s1"})  # malformed
    headers = {**_auth(live.key), "Content-Type": NDJSON}
    body = b"\n".join(orjson.dumps(e) for e in events)
    r = requests.post(f"{live.http}/v1/door-events", data=body, headers=headers)
    assert r.status_code == 200, r.text
    ack = r.json()
    assert ack["accepted"] == 40 and ack["rejected"] == 2
    assert ack["rejections"] == [
        {"index": 40, "reason": "direction_invalid"},
        {"index": 41, "reason": "malformed"},
    ]
    received = int(time.time() * 1000)
    for e in events[:40]:
        live.oracle.door_event(received, e["sensor_id"], e["ts_ms"], e["direction"])
    assert_live_equals_oracle(live)
