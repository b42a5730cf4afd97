"""The typed clients over stand-in actors (no Ray): what their calls raise, from async code
and from threads, and handles looked up again under a new layout."""

import asyncio

import pytest
import ray
import redis

from clients.errors import NotStarted, StateUnavailable, Unavailable
from clients.family import Layout, blocking
from clients.history import History, HistoryTimeout, HistoryUnavailable
from clients.users import UserShards
from state.layout import StaleLayout
from state.topology import Topology
from tests.unit.standins import Cluster, Dead

T = Topology(redis_url="redis://unused")


class HistoryActor:
    def __init__(self):
        self.raise_next: Exception | None = None

    def heatmap(self, res, at, bbox):
        if self.raise_next is not None:
            raise self.raise_next
        return {1: res, 2: at}

    def status(self):
        return {"paused": False}


@pytest.mark.parametrize(
    "raised, expected",
    [
        (HistoryUnavailable("store down"), HistoryUnavailable),
        (HistoryTimeout("too slow"), HistoryTimeout),
        (ValueError("bad bbox"), ValueError),
        (redis.ConnectionError("down"), StateUnavailable),
        (Dead(), Unavailable),
    ],
)
def test_history_raises_the_engines_errors_only(monkeypatch, raised, expected):
    actor = HistoryActor()
    Cluster(history=actor).install(monkeypatch)
    history = History(T)
    assert asyncio.run(history.heatmap(9, 5, None)) == {1: 9, 2: 5}
    actor.raise_next = raised
    with pytest.raises(expected) as caught:
        asyncio.run(history.heatmap(9, 5, None))
    assert not isinstance(caught.value, ray.exceptions.RayError)
    if expected is HistoryUnavailable:
        assert str(caught.value) == "store down"


def test_a_thread_runs_a_call_with_blocking(monkeypatch):
    Cluster(history=HistoryActor()).install(monkeypatch)
    assert blocking(History(T).status(), timeout_s=5) == {"paused": False}


def test_history_not_started_is_unavailable(monkeypatch):
    Cluster().install(monkeypatch)
    with pytest.raises(NotStarted):
        asyncio.run(History(T).status())


class User:
    def __init__(self, name: str):
        self.name = name

    def ingest(self, batch):
        raise StaleLayout(self.name, 4)

    def forget(self, old, fresh):
        return f"{self.name}:{old}->{fresh}"


def test_user_shards_pass_stale_layout_through_and_find_a_new_layout_s_actors(monkeypatch):
    cluster = Cluster(**{"user-0": User("user-0"), "user-1": User("user-1")})
    cluster.install(monkeypatch)
    layout = Layout(T, follow=False)
    users = UserShards(layout)
    with pytest.raises(StaleLayout) as caught:
        asyncio.run(users.ingest("user-0", {}))
    assert caught.value.version == 4
    assert asyncio.run(users.forget("user-1", 7, 8)) == "user-1:7->8"
    cluster.actors["user-1"] = User("user-1 again")  # retired, then started again
    assert asyncio.run(users.forget("user-1", 7, 8)) == "user-1:7->8"  # the cached handle
    layout.use(Topology(redis_url="redis://unused", version=1))
    assert asyncio.run(users.forget("user-1", 7, 8)) == "user-1 again:7->8"
