"""The live streams' poller over stand-in clients (serve_apps/streams.py): one query per distinct
area whatever the number of streams, each stream's answer under its role's floor, an event only
when that answer changed, ids above any the client had, revoked keys ending their streams."""

import asyncio

import orjson

from engine.cells import to_str
from engine.geo import BBox
from serve_apps.streams import Subscription, last_event_id
from tests.unit.api_standins import COUNTS, api_context

EVERYWHERE = BBox(-180, -90, 180, 90)


def sub(role="admin", key="admin-key", k=0, spaces=("lab", "hall"), box=EVERYWHERE, last_id=0):
    return Subscription(key=key, role=role, k=k, spaces=spaces, box=box, res=9, last_id=last_id)


def event(data: bytes) -> tuple[int, dict]:
    lines = dict(line.split(": ", 1) for line in data.decode().strip().split("\n"))
    assert lines["event"] == "counts"
    return int(lines["id"]), orjson.loads(lines["data"])


def test_many_streams_over_one_area_cost_one_query_each_poll():
    api = api_context()
    subs = [sub() for _ in range(50)] + [sub(spaces=()) for _ in range(50)]
    asyncio.run(api.streams._refresh(subs))
    kinds = [call[0] for call in api.queries.calls]
    assert sorted(kinds) == ["heatmap", "space_counts"]
    _, body = event(subs[0].take())
    cells = [{"cell": to_str(c), "count": n} for c, n in sorted(COUNTS.items())]
    assert body["cells"] == cells and body["spaces"] == {"lab": 1, "hall": 7}


def test_a_viewer_gets_the_floor_of_the_polling_routes():
    api = api_context(k_min=2)
    viewer = sub(role="viewer", key="viewer-key", k=api.floor.k("viewer"))
    admin = sub()
    asyncio.run(api.streams._refresh([viewer, admin]))
    assert sorted(c[0] for c in api.queries.calls) == ["floored_heatmap", "heatmap", "space_counts"]
    _, seen = event(viewer.take())
    assert all(c["count"] >= 2 for c in seen["cells"]) and len(seen["cells"]) == 2
    assert seen["spaces"] == {"lab": 0, "hall": 7}  # lab's 1 is under the floor
    _, exact = event(admin.take())
    assert exact["spaces"] == {"lab": 1, "hall": 7} and len(exact["cells"]) == 3


def test_an_event_only_when_the_answer_changed_with_growing_ids():
    api = api_context()
    s = sub(last_id=5_000_000_000_000)  # a Last-Event-ID from a clock ahead of this one
    asyncio.run(api.streams._refresh([s]))
    first, _ = event(s.take())
    assert first > 5_000_000_000_000
    asyncio.run(api.streams._refresh([s]))
    assert not s.dirty  # the same counts: nothing to send
    api.queries.space_totals["hall"] = 8
    asyncio.run(api.streams._refresh([s]))
    assert s.dirty
    second, body = event(s.take())
    assert second > first and body["spaces"]["hall"] == 8


def test_last_event_id_is_ours_or_nothing():
    assert last_event_id("17") == 17
    assert last_event_id(None) == last_event_id("") == last_event_id("x1") == 0
    assert last_event_id("-4") == 0


def test_a_stream_whose_key_was_revoked_ends_with_401():
    api = api_context()
    kept, revoked = sub(), sub(key="a-key-no-longer-known")
    api.streams.subscriptions |= {kept, revoked}
    asyncio.run(api.streams.end_revoked())
    assert kept.ended is None
    assert revoked.ended is not None and revoked.ended.status == 401

    async def body() -> list[bytes]:
        return [part async for part in api.streams.events(revoked)]

    parts = asyncio.run(body())
    assert b"event: error" in parts[-1] and b"unauthenticated" in parts[-1]
    assert revoked not in api.streams.subscriptions  # its end unsubscribes it
