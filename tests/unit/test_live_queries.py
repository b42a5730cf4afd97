"""LiveQueries over stand-in shards (no Ray): each family's answers fanned out by the real
clients, merged by engine code, routed to the owning shard, and failures mapped."""

import asyncio

import h3.api.basic_int as h3
import pytest
import redis

from clients.errors import StateUnavailable, Unavailable
from clients.queries import LiveQueries
from clients.refs import clients_for
from state.topology import Topology
from tests.unit.standins import Cluster, Dead

T = Topology(redis_url="redis://unused", space_shards=("space-0", "space-1"))
RES = T.engine_spec().res
A = h3.latlng_to_cell(52.660, -8.630, RES)
B = h3.latlng_to_cell(52.661, -8.620, RES)
C = h3.latlng_to_cell(53.350, -6.260, RES)


class CellShard:
    def __init__(self, counts: dict[int, int]):
        self.counts = counts
        self.asked: list = []

    def heatmap(self, res, bbox):
        self.asked.append(("heatmap", res, bbox))
        return {h3.cell_to_parent(c, res): n for c, n in self.counts.items()}

    def top(self, n, res, bbox):
        return sorted(self.heatmap(res, bbox).items(), key=lambda x: -x[1])[:n]

    def count(self, cell):
        self.asked.append(("count", cell))
        return self.counts.get(cell, 0)

    def pid(self):
        return 1

    def stats(self):
        return {"devices": sum(self.counts.values())}


class SpaceShard:
    def __init__(self, polygons: dict, doors: dict | None, shard: str):
        self.polygons, self.doors, self.shard = polygons, doors, shard

    def all_counts(self, at):
        return self.polygons, self.doors

    def has_door_space(self, space):
        return self.doors is not None and space in self.doors

    def door_partial(self, space, at):
        return None if self.doors is None else self.doors[space]

    def polygon_count(self, space):
        return self.polygons[space]

    def pid(self):
        raise Dead()

    def stats(self):
        raise Dead()


class UserShard:
    def __init__(self, since: int, counts: dict):
        self.since, self.counts = since, counts

    def minute_counts(self, since):
        return {"since": max(since, self.since), "counts": self.counts}

    def dwell(self, device, day):
        return {"owed": [("place", 1, 2, 3)]}

    def distance(self, device, day):
        raise redis.ConnectionError("Redis is down")

    def pid(self):
        return 2

    def stats(self):
        return {"shard": "user"}


class History:
    def __init__(self):
        self.ranges = None

    def door_sum(self, ranges):
        self.ranges = ranges
        return 5


@pytest.fixture
def cluster(monkeypatch):
    return Cluster(
        **{
            "cell-0": CellShard({A: 2, C: 1}),
            "cell-1": CellShard({B: 3}),
            "space-0": SpaceShard({"park": 4}, {"hall": 7}, "space-0"),
            "space-1": SpaceShard({"yard": 1}, {"hall": -2}, "space-1"),
            "user-0": UserShard(100, {("p", 100): 1, ("p", 101): 2}),
            "user-1": UserShard(101, {("p", 101): 3, ("q", 102): 1}),
            "history": History(),
        }
    ).install(monkeypatch)


def _queries() -> LiveQueries:
    return LiveQueries(T, clients_for(T, follow=False))


def _run(coro):
    return asyncio.run(coro)


def test_heatmap_and_top_merge_every_cell_shard(cluster):
    q = _queries()
    assert _run(q.heatmap(RES, None)) == {A: 2, B: 3, C: 1}
    assert _run(q.top(2, RES, None)) == [(B, 3), (A, 2)]
    coarse = h3.cell_to_parent(A, RES - 4)
    assert _run(q.heatmap(RES - 4, None))[coarse] == sum(
        n for c, n in {A: 2, B: 3, C: 1}.items() if h3.cell_to_parent(c, RES - 4) == coarse
    )


def test_a_cell_count_asks_only_the_shard_that_holds_the_cell(cluster):
    q = _queries()
    owner = q.placement.cell_shard(A)
    other = "cell-1" if owner == "cell-0" else "cell-0"
    cluster.actors[owner].counts[A] = 9
    assert _run(q.cell_count(A)) == 9
    assert ("count", A) in cluster.actors[owner].asked
    assert not cluster.actors[other].asked


def test_space_counts_add_door_partials_and_take_polygons_as_they_are(cluster):
    q = _queries()
    assert _run(q.space_counts()) == {"park": 4, "yard": 1, "hall": 5}
    assert _run(q.space_count("hall")) == 5
    shard = q.placement.space_shard("park")
    cluster.actors[shard].polygons["park"] = 4
    assert _run(q.space_count("park")) == 4


def test_minute_counts_start_at_the_latest_first_minute(cluster):
    first, total = _run(_queries().minute_counts(0))
    assert first == 101
    assert total == {("p", 101): 5, ("q", 102): 1}


def test_a_door_count_before_the_horizon_comes_from_history(cluster, monkeypatch):
    q = _queries()
    cluster.actors["space-1"].doors = {"hall": None}

    class Counter:
        def ranges(self, space, at):
            return [(space, at)]

    monkeypatch.setattr(q._metadata, "door_counter", Counter)
    assert _run(q.space_count("hall", 1_000)) == 5
    assert cluster.actors["history"].ranges == [("hall", 1_000)]


def test_failures_come_as_the_engines_errors(cluster):
    q = _queries()
    with pytest.raises(StateUnavailable):  # Redis down inside the shard
        _run(q.distance(1, 0))
    del cluster.actors["cell-1"]
    with pytest.raises(Unavailable):  # not started
        _run(q.heatmap(RES, None))


def test_health_and_figures_report_a_family_that_does_not_answer(cluster):
    q = _queries()
    assert _run(q.stats()) == {"user_shards": True, "cell_shards": True, "space_shards": False}
    stats = _run(q.shard_stats(timeout_s=1))
    assert {s["shard"] for s in stats if "error" in s} == {"space-0", "space-1"}
    assert all(s["error"] == "unavailable (Unavailable)" for s in stats if "error" in s)
