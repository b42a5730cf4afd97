"""A rebalance's plan and a scale's price, decided without Ray: which shards start, hand off,
list again and retire, what the new actors would cost, and which calls are sent again."""

import asyncio

import pytest

from clients.errors import StateUnavailable, Unavailable
from cluster import fit, rebalance
from cluster.plan import plan_of, price
from state.layout import target
from state.topology import Topology


def _topology(users: int, cells: int, version: int = 3) -> Topology:
    return Topology(
        redis_url="redis://unused",
        user_shards=tuple(f"user-{i}" for i in range(users)),
        cell_shards=tuple(f"cell-{i}" for i in range(cells)),
        version=version,
    )


def test_growing_starts_the_new_shards_and_hands_off_from_the_old_ones():
    now = _topology(2, 2)
    todo = plan_of(now, target(now, 4, 3))
    assert todo.goal["version"] == 4
    assert todo.start_cells == ("cell-2",)
    assert todo.start_users == ("user-2", "user-3")
    assert todo.view_cells == ("cell-0", "cell-1", "cell-2")
    assert todo.view_spaces == ("space-0",)
    assert todo.hand_off == ("user-0", "user-1")
    assert todo.relist == todo.checkpoint == ("user-0", "user-1", "user-2", "user-3")
    assert todo.retired == ()


def test_shrinking_hands_off_from_every_shard_and_retires_the_last_ones():
    now = _topology(3, 3)
    todo = plan_of(now, target(now, 1, 2))
    assert todo.start_cells == todo.start_users == ()
    assert todo.view_cells == ("cell-0", "cell-1", "cell-2")  # a retired view takes it too
    assert todo.hand_off == ("user-0", "user-1", "user-2")
    assert todo.relist == ("user-0",)
    assert todo.checkpoint == ("user-0", "user-1", "user-2")  # retired ones log their handoff
    assert todo.retired == ("user-1", "user-2", "cell-2")


class Family:
    """A shard family's client: its names and every shard's figures."""

    def __init__(self, rss: list[int], fail: Exception | None = None):
        self.rss, self.fail = rss, fail

    def names(self) -> tuple[str, ...]:
        return tuple(f"s-{i}" for i in range(len(self.rss)))

    async def stats_all(self) -> list[dict]:
        if self.fail is not None:
            raise self.fail
        return [{"rss_bytes": r} for r in self.rss]


class Handlers:
    def __init__(self, rss: list[int]):
        self.sizes = rss
        self.asked: list[str] = []

    def names(self) -> list[str]:
        return [f"ingest-{i}" for i in range(len(self.sizes))]

    def rss(self, names: list[str], timeout_s: float) -> list[int]:
        self.asked = names
        return self.sizes


MIB = 2**20


def test_new_actors_are_priced_at_the_largest_of_their_kind():
    users, cells = Family([100 * MIB, 300 * MIB]), Family([50 * MIB])
    handlers = Handlers([80 * MIB])
    adding = price(users, cells, handlers, 5, 1, 3)
    assert adding == {"user shards": (3, 300 * MIB), "ingest handlers": (2, 80 * MIB)}
    assert handlers.asked == ["ingest-0"]
    fit.check(adding, 2_000 * MIB)  # 1,060 MiB of 1,600 usable
    with pytest.raises(fit.DoesNotFit, match="3 user shards × 300 MiB, 2 ingest handlers"):
        fit.check(adding, 1_000 * MIB)


def test_nothing_to_start_prices_nothing_and_asks_no_shard():
    dead = Family([MIB], fail=AssertionError("asked"))
    assert price(dead, dead, Handlers([MIB]), 1, None, None) == {}


def test_a_shard_that_does_not_answer_the_pricing_is_unavailable():
    class Slow(Family):
        async def stats_all(self):
            raise TimeoutError

    with pytest.raises(Unavailable):
        price(Slow([MIB]), Family([MIB]), Handlers([]), 2, None, None)


def test_calls_of_restarting_shards_are_sent_again_and_each_result_reported(monkeypatch):
    monkeypatch.setattr(rebalance.time, "sleep", lambda s: None)
    attempts = {"user-0": 0, "user-1": 0}

    def call(name: str, fails: int):
        async def run():
            await asyncio.sleep(0)
            attempts[name] += 1
            if attempts[name] <= fails:
                raise Unavailable(f"{name} restarting")
            return {"shard": name}

        return run

    done = []
    calls = {"user-0": call("user-0", 0), "user-1": call("user-1", 2)}
    rebalance._each(calls, lambda name, result: done.append((name, result["shard"])))
    assert attempts == {"user-0": 1, "user-1": 3}
    assert done == [("user-0", "user-0"), ("user-1", "user-1")]


def test_a_shard_whose_redis_is_down_fails_the_step_at_once(monkeypatch):
    async def down():
        raise StateUnavailable("Redis did not answer a shard")

    with pytest.raises(StateUnavailable):
        rebalance._each({"user-0": down})


def test_a_shard_restarting_past_the_deadline_fails_the_rebalance(monkeypatch):
    monkeypatch.setattr(rebalance, "RETRY_S", -1.0)

    async def gone():
        raise Unavailable("restarting")

    with pytest.raises(rebalance.RebalanceError, match="user-0 did not answer"):
        rebalance._each({"user-0": gone})
