"""Deleting spaces and doorways: the door counter keeps their past and hides their present;
the API's DELETE routes, and counts of a deleted space for times before its deletion."""

from engine.cells import cell_of
from engine.doors import DoorCounter
from engine.spec import EngineSpec
from engine.user import UserEngine
from tests.unit.api_standins import DELETED_AT
from tests.unit.test_api_http import AT, AT_MS, client
from tests.workload import POLYGON_SPACES

T = 1_700_000_000_000


def counter() -> DoorCounter:
    c = DoorCounter()
    for space in ("hall", "room"):
        c.define_space(space)
    c.define_doorway("d-room", inside="room", outside="hall")
    c.define_doorway("d-front", inside="hall", outside=None)
    c.install("s1", "d-front", T, "in")
    c.install("s2", "d-room", T, "in")
    return c


def delete_doorway(c: DoorCounter, doorway: str, at: int) -> list[str]:
    """What `Definitions.delete_doorway` does to a counter."""
    ending = c.ending(doorway, at)
    for sensor, positive in ending:
        c.install(sensor, None, at, positive)
    c.delete_doorway(doorway)
    return [sensor for sensor, _ in ending]


def test_a_deleted_doorway_ends_its_sensor_and_keeps_its_past():
    c = counter()
    for ts in (T + 1, T + 2, T + 3):
        c.add("s1", ts, +1)
    c.add("s2", T + 4, +1)  # hall -> room
    assert delete_doorway(c, "d-room", T + 10) == ["s2"]
    c.add("s2", T + 20, +1)  # after the deletion: counts nowhere
    c.add("s2", T + 8, +1)  # before it, arriving late: counts
    assert c.count("room", T + 30) == 2 and c.count("hall", T + 30) == 1
    assert c.count("room", T + 5) == 1  # the past as it was
    # no sensor may go on it now; the doorway's sides cannot change either
    try:
        c.install("s3", "d-room", T + 40, "in")
        raise AssertionError("installed on a deleted doorway")
    except ValueError as exc:
        assert "unknown doorway" in str(exc)
    assert c.ending("d-room", T + 50) == []


def test_a_sensor_moved_away_before_the_deletion_is_not_ended():
    c = counter()
    c.install("s2", "d-front", T + 5, "out")  # moved: ends s1 there too
    assert c.ending("d-room", T + 10) == []
    assert c.ending("d-front", T + 10) == [("s2", "out")]


def test_a_deleted_space_is_hidden_but_counts_its_past():
    c = counter()
    c.add("s2", T + 4, +1)
    delete_doorway(c, "d-room", T + 10)
    c.delete_space("room")
    assert not c.has_space("room") and "room" not in c.spaces()
    assert c.count("room", T + 9) == 1  # history's question, answered the same way
    try:
        c.reset("room", T + 20)
        raise AssertionError("reset a deleted space")
    except ValueError:
        pass
    try:
        c.define_doorway("d-new", inside="room", outside=None)
        raise AssertionError("a doorway into a deleted space")
    except ValueError:
        pass
    # defined again: listed, and counting again once a doorway and a sensor say so
    c.define_space("room")
    c.reset("room", T + 30)
    c.define_doorway("d-new", inside="room", outside=None)
    c.install("s4", "d-new", T + 30, "in")
    c.add("s4", T + 31, +1)
    assert c.has_space("room") and c.count("room", T + 40) == 1


def test_deletions_survive_a_snapshot():
    c = counter()
    delete_doorway(c, "d-room", T + 10)
    c.delete_space("room")
    back = DoorCounter.restore(c.snapshot())
    assert not back.has_space("room") and back.spaces() == {"hall": ""}
    assert back.ending("d-room", T + 20) == []
    assert back.installations("s2")[-1].doorway is None


def test_delete_a_space_and_a_doorway_over_http():
    api = client()
    r = api.send("DELETE", "/v1/spaces/hall", "admin-key")
    assert r.status == 200, r.body
    assert r.json() == {
        "deleted": "space",
        "space": "hall",
        "kind": "door",
        "at": DELETED_AT,
        "doorways": ["front", "inner"],
    }
    r = api.send("DELETE", "/v1/doorways/inner", "admin-key")
    body = {"deleted": "doorway", "doorway": "inner", "at": DELETED_AT, "sensors": ["s2"]}
    assert r.json() == body
    assert api.api.definitions.calls == [("delete_space", "hall"), ("delete_doorway", "inner")]


def test_deleting_is_for_admins_and_an_unknown_id_is_404():
    api = client()
    for path in ("/v1/spaces/lab", "/v1/doorways/front"):
        assert api.send("DELETE", path, "viewer-key").status == 403
        assert api.send("DELETE", path, "ingest-key").status == 403
    r = api.send("DELETE", "/v1/spaces/nowhere", "admin-key")
    assert r.status == 404 and r.error[0] == "unknown_space"
    r = api.send("DELETE", "/v1/doorways/nowhere", "admin-key")
    assert r.status == 404 and r.error[0] == "unknown_doorway"
    r = api.send("DELETE", "/v1/spaces/a%3Fb", "admin-key")
    assert r.status in (400, 404)
    assert api.api.definitions.calls == []


def test_a_deleted_space_answers_for_times_before_its_deletion_only():
    api = client()
    r = api.get("/v1/spaces/gone", "admin-key", at=AT)  # AT is before DELETED_AT
    assert r.status == 200, r.body
    assert r.json() == {"space": "gone", "name": "Gone", "kind": "polygon", "count": 3,
                        "as_of": AT_MS}  # fmt: skip
    assert api.api.history.calls == [("space_count", "gone", AT_MS)]
    assert api.get("/v1/spaces/gone", "admin-key").status == 404  # live: gone
    r = api.get("/v1/spaces/gone", "admin-key", at="2026-01-03T00:00:00Z")
    assert r.status == 404 and r.error[0] == "unknown_space"
    names = [s["space"] for s in api.get("/v1/spaces", "admin-key").json()["spaces"]]
    assert "gone" not in names


def test_a_checkpoint_with_a_space_deleted_since_restores_without_it():
    """A user shard restarts from a checkpoint older than a deletion: the space goes, and the
    devices in it leave it (a move the space shards get)."""
    spec = EngineSpec(res=9, ttl_ms=120_000, placement_res=6, minute_levels=3)
    engine = UserEngine(spec)
    stored = {s: {"polygon": p, "name": s} for s, p in POLYGON_SPACES.items()}
    engine.use_spaces(stored)
    lat, lng = 52.66, -8.625  # in sp-a and sp-b
    engine.ingest([7], [T], [cell_of(lat, lng, 9)], [lat], [lng], T)
    assert engine.present_spaces()[0][:2] == (7, ("sp-a", "sp-b"))
    checkpoint = engine.snapshot()
    del stored["sp-b"]  # deleted after the checkpoint was written
    restored = UserEngine(spec, checkpoint)
    restored.use_spaces(stored)
    assert restored.spaces.spaces() == sorted(stored)
    assert restored.present_spaces()[0][:2] == (7, ("sp-a",))
    _, space_moves = restored.drain_moves()
    assert [(m.device, m.old, m.new) for m in space_moves] == [(7, ("sp-a", "sp-b"), ("sp-a",))]
