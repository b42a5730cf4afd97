"""Forgetting a device in the running engine (real Ray, Redis, ClickHouse, gRPC and HTTP): its
id leaves the directory, every per-device answer is 404, nothing of it stays in ClickHouse's
raw pings, live state or the latest checkpoints, counts of the past stay exactly as they were,
and its next ping starts a new pseudonym. The id directory's get-or-create agrees across
handlers."""

import asyncio
import time
from urllib.parse import quote

import grpc
import msgpack
import orjson
import pytest
import ray
import redis
import requests

from clients.history import NAME as HISTORY
from engine.cells import cell_of, parent, to_str
from engine.pseudonym import pseudonym_str
from engine.timeutil import MINUTE_MS, day_of, minute_of
from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg
from state import forgetting, id_directory, redis_client
from tests.integration.checks import assert_live_equals_oracle

pytestmark = pytest.mark.integration

PERSON = "+15145550123"
NEIGHBOUR = "forget-neighbour"
# far from every other test's points: the cells here hold only this module's devices
A, B = (52.400, -8.450), (52.404, -8.452)


def _call(live, method: str, path: str, **params) -> requests.Response:
    return requests.request(
        method,
        live.http + path,
        params=params,
        headers={"Authorization": f"Bearer {live.admin}"},
        timeout=120,
    )


def _history(live):
    return ray.get_actor(HISTORY, namespace=live.engine.topology.namespace)


def _ints(data) -> set[int]:
    """Every int anywhere in unpacked msgpack data (keys included)."""
    out, stack = set(), [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple):
            stack += item
        elif isinstance(item, int) and not isinstance(item, bool):
            out.add(item)
    return out


def _traces_in_redis(client: redis.Redis, key: int) -> list[str]:
    """The checkpoints and log entries that hold the pseudonym `key`."""
    found = []
    for name in client.scan_iter(match="occ:ckpt:*"):
        if name.decode().startswith("occ:ckpt_id"):
            continue
        if key in _ints(msgpack.unpackb(client.get(name), raw=False, strict_map_key=False)):
            found.append(name.decode())
    for name in client.scan_iter(match="occ:wal:*"):
        for stream_id, fields in client.xrange(name):
            entry = msgpack.unpackb(fields[b"d"], raw=False, strict_map_key=False)
            if key in _ints(entry):
                found.append(f"{name.decode()} {stream_id.decode()}")
    return found


def _export(live, what: str, t0: int, t1: int) -> list[dict]:
    r = _call(live, "GET", "/v1/export", what=what, format="json", **{"from": t0, "to": t1})
    assert r.status_code == 200, r.text
    return [orjson.loads(line) for line in r.text.splitlines() if line]


def _minutes_here(live, cells: set[int]) -> dict:
    """History's minute aggregates of this module's cells (and their parents at res 7)."""
    counts = ray.get(_history(live).all_minute_counts.remote([9, 7]))
    return {k: v for k, v in counts.items() if k[0] in cells}


def _settled(live) -> None:
    """History has archived every log entry and written presence as it stands."""
    history = _history(live)
    deadline = time.monotonic() + 60
    while any(ray.get(history.status.remote())["archive_lag_ms"].values()):
        assert time.monotonic() < deadline, "history did not catch up"
        ray.get(history.snapshot.remote())
    ray.get(history.snapshot.remote())


def test_forgetting_a_device_leaves_no_trace_and_keeps_the_past_counts(spaces):
    live = spaces
    now = int(time.time() * 1000)
    pings = []
    for device in (PERSON, NEIGHBOUR):
        for back, (lat, lng) in ((300_000, A), (240_000, A), (150_000, B), (30_000, B)):
            pings.append(pb.Ping(device_id=device, ts_ms=now - back, lat=lat, lng=lng))
    # over several connections: both ingest handlers may hold the id in their caches
    for ping in pings:
        with grpc.insecure_channel(f"127.0.0.1:{live.engine.grpc_port}") as channel:
            live.send([ping], stub=pbg.IngestServiceStub(channel))
    old = live.pseudonym(PERSON)
    assert old is not None and live.pseudonym(NEIGHBOUR) not in (None, old)
    _settled(live)
    base = {cell_of(*p, 9) for p in (A, B)}
    cells = base | {parent(c, 7) for c in base}
    day = time.strftime("%Y-%m-%d", time.gmtime(now / 1000))
    assert _call(live, "GET", f"/v1/users/{PERSON}/dwell", day=day).status_code == 200
    t0, t1 = now - 600_000, now + 600_000
    dwell_before = _export(live, "dwell", day_of(now), t1)
    mine = {r["place"]: r["seconds"] for r in dwell_before if r["device"] == pseudonym_str(old)}
    assert set(mine) == {f"{c:016x}" for c in base}  # the export's hex of a cell
    assert any(r["device"] == pseudonym_str(old) for r in _export(live, "pings", t0, t1))
    # the forget, not within a few seconds of a minute's end (the oracle cuts at this instant)
    while not 1_000 < int(time.time() * 1000) % MINUTE_MS < 45_000:
        time.sleep(0.5)
    minutes_before = _minutes_here(live, cells)
    client = redis_client.connect(live.engine.redis_url)
    assert _traces_in_redis(client, old)  # what is checked below is not empty to begin with
    at = [minute_of(now - back) + 30_000 for back in (300_000, 240_000, 150_000, 30_000)]
    at_before = {(c, t): _call(live, "GET", f"/v1/cells/{to_str(c)}", at=t).json()["count"]
                 for c in base for t in at}  # fmt: skip
    t_forget = int(time.time() * 1000)
    r = _call(live, "DELETE", f"/v1/admin/devices/{quote(PERSON, safe='')}")
    assert r.status_code == 200, r.text
    assert r.json() == {"device_id": PERSON, "live": "done", "history": "done"}
    live.oracle.forget(PERSON, t_forget)

    # every per-device question about it, by raw id or old pseudonym, is a 404
    for device in (quote(PERSON, safe=""), pseudonym_str(old)):
        for path, params in (
            (f"/v1/users/{device}/dwell", {"day": day}),
            (f"/v1/history/path/{device}", {"from": t0, "to": t1}),
            ("/v1/history/distance", {"from": t0, "to": t1, "device_id": device}),
        ):
            got = _call(live, "GET", path, **params)
            assert got.status_code == 404, (path, got.text)
            assert got.json()["error"]["code"] == "unknown_device"
        assert _call(live, "DELETE", f"/v1/admin/devices/{device}").status_code == 404
    assert live.pseudonym(PERSON) is None
    assert _call(live, "GET", f"/v1/users/{NEIGHBOUR}/dwell", day=day).status_code == 200

    # ClickHouse: no raw ping of it; its presence re-keyed whole to one fresh key (its stay
    # in B, open until the forget, now ends there)
    assert not [r for r in _export(live, "pings", t0, t1) if r["device"] == pseudonym_str(old)]
    dwell_after = _export(live, "dwell", day_of(now), t1)
    [fresh] = {r["device"] for r in dwell_after} - {r["device"] for r in dwell_before}
    theirs = {r["place"]: r["seconds"] for r in dwell_after if r["device"] == fresh}
    assert pseudonym_str(old) not in {r["device"] for r in dwell_after}
    in_a, in_b = (f"{cell_of(*p, 9):016x}" for p in (A, B))
    assert theirs[in_a] == mine[in_a] and theirs[in_b] >= mine[in_b]
    assert set(theirs) == set(mine)
    # the past counts are what they were: minute aggregates and `at=` answers
    minutes_after = _minutes_here(live, cells)
    cut = minute_of(t_forget)
    assert {k: v for k, v in minutes_after.items() if k[1] < cut} == {
        k: v for k, v in minutes_before.items() if k[1] < cut
    }
    for (c, t), count in at_before.items():
        assert _call(live, "GET", f"/v1/cells/{to_str(c)}", at=t).json()["count"] == count
    # live state: it left (the oracle agrees everywhere)
    assert_live_equals_oracle(live)
    # Redis: no raw id anywhere; the latest checkpoints and the logs hold nothing of it
    assert not _holding_raw(client, PERSON.encode())
    assert _traces_in_redis(client, old) == []
    assert not client.hlen(forgetting.JOBS)

    # a ping from the same raw id, to any handler once each has looked (a second), is a new
    # device's first
    time.sleep(forgetting.CHECK_EVERY_S + 0.2)
    later = int(time.time() * 1000)
    for i in range(4):
        with grpc.insecure_channel(f"127.0.0.1:{live.engine.grpc_port}") as channel:
            ack = live.send(
                [pb.Ping(device_id=PERSON, ts_ms=later + i, lat=A[0], lng=A[1])],
                stub=pbg.IngestServiceStub(channel),
            )
        assert (ack.accepted, ack.late) == (1, 0)
    renewed = live.pseudonym(PERSON)
    assert renewed not in (None, old)
    assert _call(live, "GET", f"/v1/users/{PERSON}/dwell", day=day).status_code == 200
    assert_live_equals_oracle(live)


def _holding_raw(client: redis.Redis, needle: bytes) -> list[str]:
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "hash":
            values = [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == "string":
            values = [client.get(key)]
        elif kind == "stream":
            values = [v for _, f in client.xrange(key) for v in f.values()]
        else:
            values = []
        if any(needle in v for v in values):
            out.append(key.decode())
    return out


def test_two_handlers_creating_the_same_new_ids_at_once_agree(live):
    ids = [f"race-{i}" for i in range(3_000)]

    async def race() -> list[dict[str, int]]:
        creators = [
            id_directory.Creator(redis_client.connect_async(live.engine.redis_url))
            for _ in range(4)
        ]
        # in opposite orders: each handler meets ids another is creating at that moment
        return await asyncio.gather(
            *(c.keys(ids[::-1] if k % 2 else ids) for k, c in enumerate(creators))
        )

    results = asyncio.run(race())
    assert all(r == results[0] for r in results)
    assert len(set(results[0].values())) == len(ids)
    client = redis_client.connect(live.engine.redis_url)
    directory = id_directory.IdDirectory(client)
    assert {d: directory.lookup(d) for d in ids} == results[0]
    assert all(directory.resolve(k) == d for d, k in results[0].items())
    # from synchronous code (a replay) the same pseudonyms again
    assert id_directory.keys_for(client, ids[:100]) == {d: results[0][d] for d in ids[:100]}


def test_pseudonyms_recorded_before_they_were_random_are_kept(live):
    """A directory written when pseudonyms were HMACs of the raw id: the raw -> pseudonym side
    is filled from it once, and the device's pings go on under the pseudonym it had."""
    client = redis_client.connect(live.engine.redis_url)
    legacy = {"legacy-0": 0x0123_4567_89AB_CDEF, "legacy-1": 0x0FED_CBA9_8765_4321}
    for raw, key in legacy.items():
        client.hset(id_directory.IDS, pseudonym_str(key), raw)
    client.delete(id_directory.MIGRATED)
    assert id_directory.migrate(client) == len(legacy)
    assert id_directory.migrate(client) == 0  # once
    now = int(time.time() * 1000)
    live.send([pb.Ping(device_id=raw, ts_ms=now, lat=B[0], lng=B[1]) for raw in legacy])
    assert {raw: live.pseudonym(raw) for raw in legacy} == legacy
