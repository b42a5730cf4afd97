"""History in ClickHouse (chDB) written by the snapshotter: minute aggregates equal the oracle,
raw pings are archived once, and an outage of the store loses and doubles nothing."""

import asyncio
import random
import time

import pytest
import ray
import requests

from actors.history import NAME as HISTORY
from engine.cells import resolution, to_str
from engine.timeutil import MINUTE_MS, minute_of
from protos import occupancy_pb2 as pb
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
    stored = ray.get(history.all_minute_counts.remote())
    now = int(time.time() * 1000)
    o = live.oracle
    for res in live.engine.topology.engine_spec().minute_res:
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
    before = ray.get(history.counts.remote())["pings"]
    accepted = _send_shuffled(live, rng, "hist", 400)
    _settle(live)
    ray.get(history.snapshot.remote())
    upto = minute_of(int(time.time() * 1000))
    # a retried snapshot changes nothing
    ray.get(history.snapshot.remote())
    ray.get(history.snapshot.remote())
    assert ray.get(history.counts.remote())["pings"] - before == accepted
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
    # a resolution history does not keep, and a malformed time: 400 with the envelope
    bad = requests.get(
        live.http + "/v1/top", params={"res": 8, "at": str(at)}, headers=headers, timeout=30
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
        # user shards checkpoint meanwhile: the log keeps what history has not archived
        for user in live.queries.shards.users():
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
