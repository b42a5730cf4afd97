"""PlaceCounts: idempotent, order-insensitive membership updates."""

import itertools

from engine.membership import PlaceCounts

UPDATES = [(1, ("a",), 1), (1, ("b",), 2), (2, ("a", "x"), 1), (1, (), 3), (2, ("a",), 2)]


def test_any_order_and_duplicates_give_the_same_counts():
    for order in itertools.permutations(UPDATES):
        counts = PlaceCounts()
        counts.update_many(order + order)
        assert counts.counts() == {"a": 1}
        assert sorted(counts.members()) == [(2, ("a",), 2)]


def test_tombstone_blocks_a_stale_enter():
    counts = PlaceCounts()
    counts.update(1, ("a",), 5)
    counts.update(1, (), 6)
    counts.update(1, ("a",), 4)
    assert counts.count("a") == 0 and len(counts) == 0


def test_replace_where_resyncs_one_senders_devices():
    counts = PlaceCounts()
    counts.update_many([(1, ("a",), 9), (2, ("a",), 9), (3, ("b",), 1)])
    counts.replace_where(lambda d: d in (1, 2), [(1, ("b",), 1)])
    assert counts.counts() == {"b": 2}
    counts.update(2, ("a",), 1)  # the restarted sender's low seqs are accepted again
    assert counts.counts() == {"a": 1, "b": 2}


def test_tombstones_age_out_after_one_to_two_grace_periods():
    counts = PlaceCounts(grace_ms=1_000)
    counts.update(1, ("a",), 5)
    counts.update(1, (), 6)
    counts.age(500)  # less than a grace period since the last turn (at 0): nothing changes
    counts.update(1, ("a",), 4)
    assert counts.count("a") == 0 and counts.tombstones == 1
    counts.age(1_000)  # the first turn: the tombstone is in the older generation, still kept
    counts.update(1, ("a",), 4)
    assert counts.count("a") == 0 and counts.tombstones == 1
    counts.age(2_000)  # the second: gone; memory holds nothing of device 1
    assert counts.tombstones == 0 and len(counts) == 0
    counts.update(1, ("b",), 1)  # a device back after its tombstone went counts again
    assert counts.counts() == {"b": 1}


def test_many_departed_devices_leave_nothing_behind():
    counts = PlaceCounts(grace_ms=1_000)
    for t in range(10):
        for d in range(t * 100, t * 100 + 100):
            counts.update(d, ("a",), 1)
            counts.update(d, (), 2)
        counts.age(t * 1_000)
        assert counts.tombstones <= 200
    assert counts.counts() == {} and len(counts) == 0
