"""RecentCache: what is in use stays, what is not goes within two turns, size is bounded."""

from engine.recent import RecentCache


def test_entries_in_use_stay_and_others_go_within_two_turns():
    cache: RecentCache[str, int] = RecentCache(ttl_ms=1_000, max_size=100)
    cache.put("a", 1, 0)
    cache.put("b", 2, 0)
    assert cache.get("a", 999) == 1
    cache.put("c", 3, 1_000)  # a turn: a and b are older now
    assert cache.get("a", 1_500) == 1  # used: back in the newer generation
    cache.put("d", 4, 2_000)  # another turn: b was not used since the first
    assert cache.get("b", 2_000) is None
    assert cache.get("a", 2_000) == 1 and cache.get("c", 2_000) == 3


def test_size_is_bounded_whatever_the_clock():
    cache: RecentCache[int, int] = RecentCache(ttl_ms=10**9, max_size=50)
    for i in range(10_000):
        cache.put(i, i, 0)
    assert len(cache) <= 100
    assert cache.get(9_999, 0) == 9_999


def test_entries_go_by_value_from_both_generations():
    cache: RecentCache[str, int] = RecentCache(ttl_ms=1_000, max_size=100)
    cache.put("a", 1, 0)
    cache.put("b", 2, 0)
    cache.put("c", 3, 1_000)  # a turn: a and b in the older generation
    assert sorted(cache.items()) == [("a", 1), ("b", 2), ("c", 3)]
    assert cache.drop_values({1, 3, 99}) == 2
    assert cache.get("a", 1_000) is None and cache.get("c", 1_000) is None
    assert cache.get("b", 1_000) == 2
