"""Deleting spaces and doorways over real HTTP: the live count and the definition go, the past
stays countable, and door counts equal the oracle's with the deletions in it."""

import time

import pytest
import requests

from protos.occupancy.v1 import occupancy_pb2 as pb
from tests.integration.checks import agree
from tests.workload import POLYGON_SPACES

pytestmark = pytest.mark.integration

HOUR = 3_600_000


def call(live, method: str, path: str, body=None, key=None, **params) -> requests.Response:
    key = key or live.admin
    headers = {"Authorization": f"Bearer {key}"}
    return requests.request(
        method, live.http + path, json=body, params=params, headers=headers, timeout=30
    )


def listed(live) -> set[str]:
    return {s["space"] for s in call(live, "GET", "/v1/spaces").json()["spaces"]}


def test_a_deleted_polygon_space_leaves_live_state_and_can_come_back(live):
    polygon = POLYGON_SPACES["sp-b"]
    assert call(live, "PUT", "/v1/spaces/del-poly", {"name": "P", "polygon": polygon}).ok
    live.oracle.define_polygon_space("del-poly", polygon)
    now = int(time.time() * 1000)
    live.send(
        [pb.Ping(device_id=f"del-{i}", ts_ms=now - i, lat=52.66, lng=-8.625) for i in range(5)]
    )

    def count() -> int:
        return call(live, "GET", "/v1/spaces/del-poly").json()["count"]

    agree(count, lambda t: live.oracle.space_occupancy("del-poly", t, t), "before")
    assert call(live, "DELETE", "/v1/spaces/del-poly", key=live.viewer).status_code == 403
    r = call(live, "DELETE", "/v1/spaces/del-poly")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["deleted"], body["kind"], body["doorways"]) == ("space", "polygon", [])
    assert body["at"] >= now
    r = call(live, "GET", "/v1/spaces/del-poly")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_space"
    assert "del-poly" not in listed(live)
    r = call(live, "DELETE", "/v1/spaces/del-poly")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_space"
    # a time after the deletion has no such space; one before it is asked of history
    assert call(live, "GET", "/v1/spaces/del-poly", at=str(body["at"] + 1)).status_code == 404
    past = call(live, "GET", "/v1/spaces/del-poly", at=str(body["at"] - 60_000))
    assert past.status_code == 200 and past.json()["kind"] == "polygon", past.text
    # defined again: the devices inside count at once (the user shards place them again)
    assert call(live, "PUT", "/v1/spaces/del-poly", {"name": "P", "polygon": polygon}).ok
    agree(count, lambda t: live.oracle.space_occupancy("del-poly", t, t), "again")
    assert "del-poly" in listed(live)


def test_deleting_doorways_and_door_spaces_ends_their_sensors(live):
    now = int(time.time() * 1000)
    start = now - HOUR
    for space in ("del-hall", "del-room"):
        assert call(live, "PUT", f"/v1/spaces/{space}", {"name": space}).ok
        live.oracle.define_door_space(space)
    doorways = {"del-front": ("del-hall", None), "del-inner": ("del-room", "del-hall")}
    for doorway, (inside, outside) in doorways.items():
        assert call(
            live, "PUT", f"/v1/doorways/{doorway}", {"inside": inside, "outside": outside}
        ).ok
        live.oracle.define_doorway(doorway, inside, outside)
    for sensor, doorway in (("del-s1", "del-front"), ("del-s2", "del-inner")):
        body = {"sensor_id": sensor, "from": start, "positive": "in"}
        assert call(live, "POST", f"/v1/doorways/{doorway}/installations", body).status_code == 201
        live.oracle.install(sensor, doorway, start, "in")
    live.doors(
        [pb.DoorEvent(sensor_id="del-s1", ts_ms=now - k * 1000, direction=1) for k in range(1, 6)]
        + [pb.DoorEvent(sensor_id="del-s2", ts_ms=now - k * 1000, direction=1) for k in (1, 2)]
    )

    r = call(live, "DELETE", "/v1/doorways/del-inner")
    assert r.status_code == 200, r.text
    deleted = r.json()
    at = deleted["at"]
    assert deleted["sensors"] == live.oracle.delete_doorway("del-inner", at) == ["del-s2"]
    names = [d["doorway"] for d in call(live, "GET", "/v1/doorways").json()["doorways"]]
    assert "del-inner" not in names and "del-front" in names
    body = {"sensor_id": "del-s3", "from": at + 1}
    r = call(live, "POST", "/v1/doorways/del-inner/installations", body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_installation"
    assert call(live, "DELETE", "/v1/doorways/del-inner").status_code == 404
    # del-s2's events after the deletion count nowhere; one before it, arriving late, counts
    time.sleep(0.05)
    live.doors(
        [
            pb.DoorEvent(sensor_id="del-s2", ts_ms=at + 10, direction=1),
            pb.DoorEvent(sensor_id="del-s2", ts_ms=at - 500, direction=-1),
        ]
    )
    known = int(time.time() * 1000)
    for space in ("del-hall", "del-room"):
        for t in (at - 1_500, at - 1, known):
            got = call(live, "GET", f"/v1/spaces/{space}", at=str(t)).json()["count"]
            assert got == live.oracle.door_count(space, t, known), (space, t)

    r = call(live, "DELETE", "/v1/spaces/del-hall")
    assert r.status_code == 200, r.text
    gone = r.json()
    assert gone["kind"] == "door"
    assert gone["doorways"] == live.oracle.delete_door_space("del-hall", gone["at"])
    assert gone["doorways"] == ["del-front"]
    assert call(live, "GET", "/v1/spaces/del-hall").status_code == 404
    assert "del-hall" not in listed(live) and "del-room" in listed(live)
    names = [d["doorway"] for d in call(live, "GET", "/v1/doorways").json()["doorways"]]
    assert not {"del-front", "del-inner"} & set(names)
    # del-s1 counts nowhere now; the hall's past is still its own, from the same events
    live.doors([pb.DoorEvent(sensor_id="del-s1", ts_ms=gone["at"] + 5, direction=1)])
    known = int(time.time() * 1000)
    for t in (at - 1_500, gone["at"] - 1):
        past = call(live, "GET", "/v1/spaces/del-hall", at=str(t))
        assert past.status_code == 200, past.text
        assert past.json()["count"] == live.oracle.door_count("del-hall", t, known), t
    assert call(live, "GET", "/v1/spaces/del-hall", at=str(gone["at"])).status_code == 404
    room = call(live, "GET", "/v1/spaces/del-room").json()["count"]
    assert room == live.oracle.door_count("del-room", known, known)
    # a door space's id stays a door space's; defined again, it counts from zero
    polygon = {"name": "x", "polygon": POLYGON_SPACES["sp-c"]}
    r = call(live, "PUT", "/v1/spaces/del-hall", polygon)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_space"
    assert call(live, "PUT", "/v1/spaces/del-hall", {"name": "again"}).ok
    assert call(live, "GET", "/v1/spaces/del-hall").json()["count"] == 0
