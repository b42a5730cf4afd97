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
