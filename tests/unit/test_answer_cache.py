"""The live answer cache: one computation per key while fresh, stale answers while one refresh
runs, failures never kept (a fake clock, no Ray)."""

import asyncio

import pytest

from serve_apps.cache import MAX_KEYS, AnswerCache


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


class Maker:
    """Bodies b"1", b"2", ... in the order computed; `gate` holds each until it is set."""

    def __init__(self):
        self.made = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def __call__(self) -> bytes:
        self.made += 1
        made = self.made
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return str(made).encode()


def run(scenario):
    return asyncio.run(scenario())


def test_concurrent_requests_share_one_computation():
    async def scenario():
        cache, make = AnswerCache(clock=Clock()), Maker()
        make.gate.clear()
        waiting = [asyncio.ensure_future(cache.shared(("k",), make)) for _ in range(5)]
        await asyncio.sleep(0)
        make.gate.set()
        return await asyncio.gather(*waiting), make.made

    bodies, made = run(scenario)
    assert bodies == [b"1"] * 5 and made == 1


def test_keys_are_apart():
    async def scenario():
        cache, make = AnswerCache(clock=Clock()), Maker()
        return [await cache.shared(key, make) for key in (("a",), ("b",), ("a",))]

    assert run(scenario) == [b"1", b"2", b"1"]


def test_a_stale_body_is_answered_at_once_while_one_refresh_runs():
    async def scenario():
        clock, make = Clock(), Maker()
        cache = AnswerCache(fresh_s=0.2, stale_s=0.6, clock=clock)
        assert await cache.shared(("k",), make) == b"1"
        clock.advance(0.3)
        make.gate.clear()
        stale = [await cache.shared(("k",), make) for _ in range(3)]  # one refresh started
        make.gate.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return stale, await cache.shared(("k",), make), make.made

    stale, refreshed, made = run(scenario)
    assert stale == [b"1"] * 3 and refreshed == b"2" and made == 2


def test_past_stale_s_the_body_is_computed_again():
    async def scenario():
        clock, make = Clock(), Maker()
        cache = AnswerCache(fresh_s=0.2, stale_s=0.6, clock=clock)
        await cache.shared(("k",), make)
        clock.advance(0.7)
        return await cache.shared(("k",), make)

    assert run(scenario) == b"2"


def test_a_failure_is_not_kept():
    async def scenario():
        cache, make = AnswerCache(clock=Clock()), Maker()
        make.fail = RuntimeError("a shard failed")
        with pytest.raises(RuntimeError):
            await cache.shared(("k",), make)
        make.fail = None
        return await cache.shared(("k",), make), len(cache)

    assert run(scenario) == (b"2", 1)


def test_a_failed_refresh_drops_the_stale_body():
    async def scenario():
        clock, make = Clock(), Maker()
        cache = AnswerCache(fresh_s=0.2, stale_s=0.6, clock=clock)
        await cache.shared(("k",), make)
        clock.advance(0.3)
        make.fail = RuntimeError("a shard failed")
        assert await cache.shared(("k",), make) == b"1"  # stale; the refresh fails
        await asyncio.sleep(0)
        make.fail = None
        return await cache.shared(("k",), make)

    assert run(scenario) == b"3"


def test_the_cache_starts_over_beyond_max_keys():
    async def scenario():
        cache, make = AnswerCache(clock=Clock()), Maker()
        for i in range(MAX_KEYS + 2):
            await cache.shared((i,), make)
        return len(cache)

    assert run(scenario) == 1
