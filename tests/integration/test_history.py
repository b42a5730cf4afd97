"""History in ClickHouse (chDB) written by the snapshotter: minute aggregates equal the oracle,
raw pings are archived once, and an outage of the store loses and doubles nothing."""

import asyncio
import os
import random
import subprocess
import sys
import time

import orjson
import pytest
import ray
import requests

from clickhouse.backends import CHDB_SUBDIR, ChdbBackend
from clickhouse.store import HistoryStore
from clients.history import NAME as HISTORY
from engine.cells import resolution, to_str
from engine.pseudonym import pseudonym_str
from engine.timeutil import DAY_MS, MINUTE_MS, day_of, minute_of
from protos.occupancy.v1 import occupancy_pb2 as pb
from tests.workload import POINTS, POLYGON_SPACES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def history(live):
    for space, polygon in POLYGON_SPACES.items():
        if space not in live.oracle.polygons:
            definitions = live.engine.definitions()
            asyncio.run(definitions.define_polygon_space(space, polygon, space))
            live.oracle.define_polygon_space(space, polygon)
    return ray.get_actor(HISTORY, namespace=live.engine.topology.namespace)


def _settle(live) -> None:
    """Until the user shards have applied everything sent (live counts equal the oracle)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = int(time.time() * 1000)
        if live.q(live.queries.heatmap(9, None)) == live.oracle.counts(9, now, now):
            return
        time.sleep(0.2)


def _send_shuffled(live, rng: random.Random, prefix: str, n: int) -> int:
    """n pings of 25 devices over the last few minutes, arriving shuffled (so some are late),
    in batches; the number the engine accepted."""
    now = int(time.time() * 1000)
    pings = [
        pb.Ping(
            device_id=f"{prefix}-{rng.randrange(25)}",
            ts_ms=now - rng.randint(0, 300_000),
            lat=(p := rng.choice(POINTS))[0],
            lng=p[1],
        )
        for _ in range(n)
    ]
    rng.shuffle(pings)
    accepted = 0
    for i in range(0, n, 40):
        ack = live.send(pings[i : i + 40])
        accepted += ack.accepted + ack.late
    return accepted


def _check_minutes(live, history, upto: int) -> None:
    """History's minute aggregates equal the oracle's for every minute before `upto`."""
    resolutions = [9, 8, 7, 5]
    stored = ray.get(history.all_minute_counts.remote(resolutions))
    now = int(time.time() * 1000)
    o = live.oracle
    for res in resolutions:
        want = {k: v for k, v in o.minute_aggregates(res, now).items() if k[1] < upto}
        got = {
            k: v
            for k, v in stored.items()
            if isinstance(k[0], int) and resolution(k[0]) == res and k[1] < upto
        }
        assert got == want, res
    want = {k: v for k, v in o.space_minute_aggregates(now).items() if k[1] < upto}
    got = {k: v for k, v in stored.items() if isinstance(k[0], str) and k[1] < upto}
    assert got == want


def test_snapshots_equal_the_oracle_and_are_idempotent(live, history):
    rng = random.Random(7)
    ray.get(history.snapshot.remote())
    before = ray.get(history.counts.remote())
    accepted = _send_shuffled(live, rng, "hist", 300)
    _settle(live)
    ray.get(history.snapshot.remote())
    # then pings stamped before that snapshot, for the same devices: some are applied (newer
    # than a device's latest) and cut intervals history already has; door events likewise late
    accepted += _send_shuffled(live, rng, "hist", 200)
    now = int(time.time() * 1000)
    doors = [
        pb.DoorEvent(sensor_id=f"hist-sensor-{i % 3}", ts_ms=now - rng.randint(0, 600_000),
                     direction=rng.choice((1, -1)))
        for i in range(30)
    ]  # fmt: skip
    door_ack = live.doors(doors)
    _settle(live)
    ray.get(history.snapshot.remote())
    upto = minute_of(int(time.time() * 1000))
    # a retried snapshot changes nothing
    ray.get(history.snapshot.remote())
    ray.get(history.snapshot.remote())
    after = ray.get(history.counts.remote())
    assert after["pings"] - before["pings"] == accepted
    assert after["door_events"] - before["door_events"] == door_ack.accepted == len(doors)
    _check_minutes(live, history, upto)


def test_history_answers_over_http(live, history):
    ray.get(history.snapshot.remote())
    now = int(time.time() * 1000)
    at = minute_of(now) - MINUTE_MS  # a whole minute in the past
    headers = {"Authorization": f"Bearer {live.admin}"}
    o = live.oracle
    minutes = o.minute_aggregates(9, now)
    want = sorted((c, n) for (c, m), n in minutes.items() if m == at)
    r = requests.get(
        live.http + "/v1/heatmap",
        params={"bbox": "-180,-90,180,90", "res": 9, "at": str(at + 30_000)},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["cells"] == [{"cell": to_str(c), "count": n} for c, n in want]
    top = requests.get(
        live.http + "/v1/top", params={"n": 3, "res": 9, "at": str(at)}, headers=headers, timeout=30
    ).json()
    ranked = sorted(want, key=lambda x: (-x[1], x[0]))[:3]
    assert top["cells"] == [{"cell": to_str(c), "count": n} for c, n in ranked]
    assert top["as_of"] == at
    if want:
        cell, n = want[0]
        body = requests.get(
            live.http + f"/v1/cells/{to_str(cell)}", params={"at": str(at)}, headers=headers
        ).json()
        assert body["count"] == n
    # a resolution finer than the engine's, and a malformed time: 400 with the envelope
    bad = requests.get(
        live.http + "/v1/top", params={"res": 10, "at": str(at)}, headers=headers, timeout=30
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_resolution"
    bad = requests.get(live.http + "/v1/top", params={"at": "yesterday"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_time"


def test_store_outage_loses_and_doubles_nothing(live, history):
    rng = random.Random(11)
    ray.get(history.snapshot.remote())
    before = ray.get(history.counts.remote())["pings"]
    ray.get(history.pause.remote(True))
    try:
        accepted = 0
        for _ in range(3):  # several snapshot rounds fail meanwhile
            accepted += _send_shuffled(live, rng, "outage", 150)
            with pytest.raises(Exception, match="paused"):
                ray.get(history.snapshot.remote())
        health = requests.get(live.http + "/v1/health", timeout=30).json()
        assert health["checks"]["clickhouse"] == "paused"
        r = requests.get(
            live.http + "/v1/top", params={"at": str(int(time.time() * 1000))},
            headers={"Authorization": f"Bearer {live.admin}"}, timeout=30,
        )  # fmt: skip
        assert r.status_code == 503 and r.json()["error"]["code"] == "history_unavailable"
        assert int(r.headers["Retry-After"]) > 0
        # user shards checkpoint meanwhile: the log keeps what history has not archived
        for user in map(live.queries.users.handle, live.queries.users.names()):
            ray.get(user.checkpoint.remote())
        backlog = ray.get(history.status.remote())["wal_backlog"]
        assert sum(backlog[name] for name in live.engine.topology.user_shards) > 0
    finally:
        ray.get(history.pause.remote(False))
    _settle(live)
    ray.get(history.snapshot.remote())
    upto = minute_of(int(time.time() * 1000))
    ray.get(history.snapshot.remote())
    assert ray.get(history.counts.remote())["pings"] - before == accepted
    _check_minutes(live, history, upto)


REYKJAVIK = (64.1466, -21.9426)


def _trip_pings(rng: random.Random, now: int) -> tuple[list[pb.Ping], dict[str, dict]]:
    """Pings of 6 devices wandering around Reykjavik over the last 10 minutes, and 2 devices
    three days ago; devices 0-2 carry {"fleet": "bus"}. Arrival is shuffled: some are late."""
    pings, attrs = [], {}
    for d in range(8):
        device = f"trip-{d}"
        attrs[device] = {"fleet": "bus"} if d < 3 else {}
        base = now - 600_000 if d < 6 else now - 3 * DAY_MS
        for _ in range(12):
            pings.append(
                pb.Ping(
                    device_id=device,
                    ts_ms=base + rng.randint(0, 590_000),
                    lat=REYKJAVIK[0] + rng.uniform(-0.01, 0.01),
                    lng=REYKJAVIK[1] + rng.uniform(-0.02, 0.02),
                    attributes=attrs[device],
                )
            )
    rng.shuffle(pings)
    return pings, attrs


def test_raw_history_answers_equal_the_oracle(live, history):
    rng = random.Random(5)
    now = int(time.time() * 1000)
    pings, _ = _trip_pings(rng, now)
    for i in range(0, len(pings), 10):
        live.send(pings[i : i + 10])
    _settle(live)
    ray.get(history.snapshot.remote())
    o, headers = live.oracle, {"Authorization": f"Bearer {live.admin}"}
    t0, t1 = now - 500_000, now + 1
    later = int(time.time() * 1000)  # the oracle's view: everything sent
    http = live.http

    def get(path: str, **params):
        r = requests.get(http + path, params=params, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        return r

    # paths and per-device distance
    for d in range(6):
        device = f"trip-{d}"
        body = get(f"/v1/history/path/{device}", **{"from": t0, "to": t1}).json()
        assert [(p["ts"], p["lat"], p["lng"]) for p in body["points"]] == o.path(
            device, t0, t1, later
        )
        body = get("/v1/history/distance", device_id=device, **{"from": t0, "to": t1}).json()
        [entry] = body["devices"]
        assert entry["device_id"] == device
        assert entry["meters"] == pytest.approx(o.distance(device, t0, t1, later), rel=1e-9)
    # distance of the devices with a bus ping in the period
    body = get("/v1/history/distance", **{"from": t0, "to": t1, "attr.fleet": "bus"}).json()
    got = {e["device_id"]: e["meters"] for e in body["devices"]}
    want = {
        f"trip-{d}": o.distance(f"trip-{d}", t0, t1, later)
        for d in range(3)
        if o.path(f"trip-{d}", t0, t1, later)
    }
    assert got == pytest.approx(want, rel=1e-9)
    assert body["average_meters"] == pytest.approx(sum(want.values()) / len(want), rel=1e-9)

    # devices inside a polygon with a hole, during the period
    lat0, lng0 = REYKJAVIK
    outer = [[lng0 - 0.02, lat0 - 0.01], [lng0 + 0.005, lat0 - 0.01], [lng0 + 0.005, lat0 + 0.01],
             [lng0 - 0.02, lat0 + 0.01], [lng0 - 0.02, lat0 - 0.01]]  # fmt: skip
    hole = [[lng0 - 0.01, lat0 - 0.004], [lng0 - 0.01, lat0 + 0.004], [lng0 - 0.005, lat0 + 0.004],
            [lng0 - 0.005, lat0 - 0.004], [lng0 - 0.01, lat0 - 0.004]]  # fmt: skip
    polygon = {"type": "Polygon", "coordinates": [outer, hole]}

    def inside(lat: float, lng: float) -> bool:
        in_outer = lng0 - 0.02 <= lng <= lng0 + 0.005 and lat0 - 0.01 <= lat <= lat0 + 0.01
        in_hole = lng0 - 0.01 <= lng <= lng0 - 0.005 and lat0 - 0.004 <= lat <= lat0 + 0.004
        return in_outer and not in_hole

    want_devices = {}
    for d in range(8):
        device = f"trip-{d}"
        seen = [ts for ts, lat, lng in o.path(device, t0, t1, later) if inside(lat, lng)]
        if seen:
            want_devices[device] = (min(seen), max(seen))
    body = get(
        "/v1/history/devices", polygon=orjson.dumps(polygon).decode(), **{"from": t0, "to": t1}
    ).json()
    got = {e["device_id"]: (e["first_seen"], e["last_seen"]) for e in body["devices"]}
    assert got == want_devices and not body["truncated"]
    body = get(
        "/v1/history/devices",
        bbox=f"{lng0 - 0.05},{lat0 - 0.05},{lng0 + 0.05},{lat0 + 0.05}",
        limit=2,
        **{"from": t0, "to": t1, "attr.fleet": "bus"},
    ).json()
    assert len(body["devices"]) == 2 and body["truncated"]

    # dwell of a day that live state no longer keeps comes from history
    day = day_of(now - 3 * DAY_MS)
    for device in ("trip-6", "trip-7"):
        body = get(
            f"/v1/users/{device}/dwell", day=time.strftime("%Y-%m-%d", time.gmtime(day / 1000))
        ).json()
        want = o.dwell(device, day, later)
        assert {c["cell"]: c["seconds"] for c in body["cells"]} == {
            to_str(c): ms / 1000 for c, ms in want["cells"].items()
        }

    # exports: pseudonyms only, in each format
    csv = get("/v1/export", what="pings", format="csv", **{"from": t0, "to": t1}).text
    assert csv.startswith('"device","ts"') and "trip-" not in csv
    key = pseudonym_str(live.pseudonym("trip-0"))
    assert key in csv
    assert (
        get("/v1/export", what="cells", format="parquet", **{"from": t0, "to": t1}).content[:4]
        == b"PAR1"
    )
    assert (
        get("/v1/export", what="pings", format="arrow", **{"from": t0, "to": t1}).content[:6]
        == b"ARROW1"
    )
    lines = get(
        "/v1/export", what="dwell", format="json", **{"from": day, "to": t1}
    ).text.splitlines()
    assert lines and all(orjson.loads(line)["device"] != "trip-6" for line in lines)

    # viewers get no per-device history
    viewer = {"Authorization": f"Bearer {live.viewer}"}
    r = requests.get(
        http + "/v1/history/path/trip-0", params={"from": t0, "to": t1}, headers=viewer
    )
    assert r.status_code == 403
    r = requests.get(
        http + "/v1/export", params={"what": "pings", "from": t0, "to": t1}, headers=viewer
    )
    assert r.status_code == 403
    bad = requests.get(
        http + "/v1/history/devices",
        params={"from": t1, "to": t0, "bbox": "0,0,1,1"},
        headers=headers,
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_time"


def test_replay_of_an_export_reproduces_the_minute_aggregates(live, history, tmp_path):
    ray.get(history.snapshot.remote())
    until = int(time.time() * 1000)
    headers = {"Authorization": f"Bearer {live.admin}"}
    r = requests.get(
        live.http + "/v1/export",
        params={"what": "pings", "from": 1, "to": until + 1, "format": "parquet"},
        headers=headers,
        timeout=120,
    )
    assert r.status_code == 200, r.text
    archive = tmp_path / "pings.parquet"
    archive.write_bytes(r.content)
    env = {
        **os.environ,
        "OCC_DATA_DIR": str(tmp_path / "empty"),
        "OCC_REDIS_URL": live.engine.redis_url,  # the space definitions
    }
    for _ in range(2):  # a second replay of the same file doubles nothing
        out = subprocess.run(
            [sys.executable, "-m", "occupancy.cli", "replay", str(archive), "--until", str(until)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
    summary = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert summary["pings"] == ray.get(history.counts.remote())["pings"]
    store = HistoryStore(ChdbBackend(tmp_path / "empty" / CHDB_SUBDIR))
    try:
        replayed = store.all_minute_counts([9, 6])
        assert store.ping_count() == summary["pings"]
    finally:
        store.backend.close()
    live_minutes = ray.get(history.all_minute_counts.remote([9, 6]))
    cutoff = minute_of(until)
    # a forgotten device's presence stays in history, its raw pings do not: a replay rebuilds
    # the past without it (docs/semantics.md, *Forgetting a device*)
    theirs = live.oracle.forgotten_minutes([9, 6], until)
    assert {k: v for k, v in replayed.items() if k[1] < cutoff and k not in theirs} == {
        k: v for k, v in live_minutes.items() if k[1] < cutoff and k not in theirs
    }
    assert all(replayed.get(k, 0) < live_minutes[k] for k in theirs if k[1] < cutoff)


def test_door_counts_from_history_equal_the_oracle(spaces, history):
    """The form door counts take before the space shards' horizon (events folded there): every
    archived door event summed over the installation ranges of the space."""
    live = spaces
    rng = random.Random(31)
    now = int(time.time() * 1000)
    events = [
        pb.DoorEvent(
            sensor_id=rng.choice(["s1", "s2", "s3"]),
            ts_ms=now - rng.randint(0, 1_800_000),
            direction=rng.choice([1, 1, -1]),
        )
        for _ in range(80)
    ]
    live.doors(events)
    ray.get(history.snapshot.remote())
    now = int(time.time() * 1000)
    for space in ("hall", "room"):
        for back in (0, 60_000, 600_000, 1_700_000):
            t = now - back
            got = live.q(live.queries.door_count_from_history(space, t))
            assert got == live.oracle.door_count(space, t, now), (space, back)
