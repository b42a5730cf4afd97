"""Series of polygon spaces from the final hours and days the snapshotter keeps (migration 0004)
equal the series from the presence pieces alone, and a brute-force count over the intervals,
before, during and after the roll-up, in UTC and in zones whose buckets are (Dublin) and are
not (Kathmandu, +05:45) whole UTC hours."""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickhouse.backends import ChdbBackend
from clickhouse.series import HOUR_MS, ROLLUP_HOURS
from clickhouse.store import HistoryStore
from engine.history import pieces
from engine.series import STEPS, edges, zone
from engine.timeutil import DAY_MS, day_of

pytestmark = pytest.mark.integration

BASE = day_of(1_790_000_000_000)  # 2026-09-21, inside the aggregate retention
SPAN = 5 * DAY_MS


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    backend = ChdbBackend(tmp_path_factory.mktemp("rollups") / "ch")
    yield HistoryStore(backend, raw_days=60, aggregate_days=3650)
    backend.close()


def brute(intervals, space, cuts, end) -> list[int]:
    out = []
    for a, b in itertools.pairwise(cuts):
        b = min(b, end)
        out.append(len({d for d, s, lo, hi in intervals if s == space and lo < b and hi > a}))
    return out


rounds = iter(range(10_000))


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(["UTC", "Europe/Dublin", "Asia/Kathmandu"]))
def test_rolled_up_series_equal_the_pieces(store, seed, tz):
    # each example lives in its own later period: an hour once kept never gets new pieces
    start = BASE + next(rounds) * 2 * SPAN
    rng = random.Random(seed)
    intervals = []
    for _ in range(300):
        lo = start + rng.randrange(SPAN)
        hi = lo + rng.choice([1, 60_000, 120_000, 3 * HOUR_MS, 30 * HOUR_MS])
        intervals.append((rng.randrange(40), rng.choice(["mall", "court"]), lo, hi))
    rows = [p for d, s, lo, hi in intervals for p in pieces(d, (s,), lo, hi)]
    store.write_presence(rows, version=1)
    now = start + SPAN + DAY_MS
    end = now + 1

    def check():
        for step in ("15m", "1h", "1d"):
            cuts = edges(start + HOUR_MS, start + SPAN - HOUR_MS, STEPS[step], zone(tz))
            want = brute(intervals, "mall", cuts, end)
            assert store.space_series("mall", 9, cuts, end) == want, (step, tz)
            assert store.place_series("mall", 9, cuts, end) == want

    check()
    mark = store.rolled_up()
    final = start + SPAN // 2 + rng.randrange(DAY_MS)  # half of the period is final
    while True:
        new = store.roll_up(final)
        assert not mark or new - mark <= ROLLUP_HOURS * HOUR_MS
        check()  # mid-way too: part of the buckets from states, the rest from pieces
        if new == mark:
            break
        mark = new
    assert mark == final - final % HOUR_MS
    assert store.roll_up(final) == mark  # nothing more to keep
