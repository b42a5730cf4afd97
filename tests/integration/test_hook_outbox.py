"""A user shard's side of webhooks on a real Redis: the enters and exits of watched spaces go to
the outboxes of the hooks that want them, replayed moves append the same ids, and a forgotten
device's undelivered events leave every outbox."""

import pytest
import redis

from actors.hook_events import HookEvents
from engine.hooks import HookSpec
from engine.pseudonym import pseudonym_str
from engine.user import SpaceMove
from state.hooks import HookStore, outbox
from state.redis_server import EmbeddedRedis

pytestmark = pytest.mark.integration

T = 1_767_225_600_000


@pytest.fixture
def client(tmp_path):
    server = EmbeddedRedis(tmp_path)
    try:
        yield redis.Redis.from_url(server.start())
    finally:
        server.stop()


def _outbox(client, hook: str) -> list[dict]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in client.xrange(outbox(hook))
    ]


def test_events_reach_the_hooks_that_watch_and_a_forget_takes_the_device_out(client):
    store = HookStore(client)
    secret = "s" * 16
    store.put("both", HookSpec("http://127.0.0.1:9/", secret, ("hall",), ("enter", "exit")))
    store.put("exits", HookSpec("http://127.0.0.1:9/", secret, ("hall", "yard"), ("exit",)))
    store.put("counts", HookSpec("http://127.0.0.1:9/", secret, ("hall",), ("above",), 3))
    events = HookEvents(client, maxlen=1000)
    moves = [
        SpaceMove(1, (), ("hall",), 1, T),
        SpaceMove(2, (), ("hall", "yard"), 2, T + 1),
        SpaceMove(1, ("hall",), ("lobby",), 3, T + 2),
        SpaceMove(2, ("hall", "yard"), (), 4, T + 3),
    ]
    assert events.emit(moves, T + 10) == 7
    both, exits = _outbox(client, "both"), _outbox(client, "exits")
    one, two = pseudonym_str(1), pseudonym_str(2)
    assert [(e["event"], e["device"], e["ts"]) for e in both] == [
        ("enter", one, str(T)),  # at the time of each change, not at the call's
        ("enter", two, str(T + 1)),
        ("exit", one, str(T + 2)),
        ("exit", two, str(T + 3)),
    ]
    assert sorted((e["space"], e["device"]) for e in exits) == [
        ("hall", one),
        ("hall", two),
        ("yard", two),
    ]
    assert _outbox(client, "counts") == []  # above/below are history's, not the shards'
    # the same moves again (a replay of the log after a restart): the same ids
    ids = sorted(e["id"] for e in both)
    events.emit(moves, T + 99)
    again = _outbox(client, "both")
    assert len(again) == 8 and sorted({e["id"] for e in again}) == ids
    # a forgotten device: nothing of it left to deliver, the other's events kept
    events.forget(1)
    for hook in ("both", "exits"):
        assert all(e["device"] != one for e in _outbox(client, hook))
    assert {e["device"] for e in _outbox(client, "both")} == {two}
    assert sorted(e["space"] for e in _outbox(client, "exits")) == ["hall", "hall", "yard", "yard"]
