"""Series buckets (engine/series.py): edges aligned to a zone's wall clock, DST days of 23 and
25 hours, the segments SQL reads them by, and a door space's series, against the oracle."""

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.doors import DoorCounter
from engine.series import (
    MAX_BUCKETS,
    STEPS,
    bucket_of,
    door_series,
    edges,
    segments,
    shown,
    step_ms,
    zone,
)
from engine.timeutil import DAY_MS, MINUTE_MS
from tests.oracle import Oracle

HOUR = 3_600_000
ZONES = [
    "UTC",
    "Europe/Dublin",
    "America/New_York",
    "Australia/Lord_Howe",  # a change of 30 minutes
    "Asia/Kathmandu",  # +05:45
    "America/St_Johns",  # -03:30 / -02:30
    "Pacific/Chatham",  # +12:45 / +13:45
]
# the changes of 2026 in Dublin (UTC): 29 March 01:00 forward, 25 October 01:00 back
SPRING = 1_774_746_000_000
AUTUMN = 1_792_890_000_000


def local(ms: int, tz: str) -> datetime:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz))


def test_days_of_23_and_25_hours():
    tz = zone("Europe/Dublin")
    spring = edges(SPRING - DAY_MS, SPRING + DAY_MS, DAY_MS, tz)
    assert [b - a for a, b in itertools.pairwise(spring)] == [
        24 * HOUR,
        23 * HOUR,
        24 * HOUR,
    ]
    assert all(local(e, "Europe/Dublin").hour == 0 for e in spring)
    autumn = edges(AUTUMN - DAY_MS, AUTUMN + DAY_MS, DAY_MS, tz)
    assert [b - a for a, b in itertools.pairwise(autumn)] == [
        24 * HOUR,
        25 * HOUR,
        24 * HOUR,
    ]


def test_hours_across_the_changes():
    tz = zone("Europe/Dublin")
    # clocks back: 01:00 local comes twice, each its own hour; every bucket is an hour
    back = edges(AUTUMN - 2 * HOUR, AUTUMN + 2 * HOUR, HOUR, tz)
    assert [b - a for a, b in itertools.pairwise(back)] == [HOUR] * 4
    assert [local(e, "Europe/Dublin").hour for e in back] == [0, 1, 1, 2, 3]
    # clocks forward: 01:00 local never happens, so 00:00 is followed by 02:00
    fwd = edges(SPRING - 2 * HOUR, SPRING + 2 * HOUR, HOUR, tz)
    assert [local(e, "Europe/Dublin").hour for e in fwd] == [23, 0, 2, 3, 4]
    # in a zone of half-hour changes an hour's bucket lasts 30 or 90 minutes across one
    lord_howe = edges(1_775_315_000_000, 1_775_340_000_000, HOUR, zone("Australia/Lord_Howe"))
    widths = {b - a for a, b in itertools.pairwise(lord_howe)}
    assert widths == {HOUR, HOUR + 30 * MINUTE_MS}


def test_utc_is_arithmetic_and_kathmandu_quarter_hours():
    assert edges(10 * HOUR + 5, 12 * HOUR, HOUR, zone("UTC")) == [10 * HOUR, 11 * HOUR, 12 * HOUR]
    kathmandu = edges(SPRING, SPRING + DAY_MS, DAY_MS, zone("Asia/Kathmandu"))
    assert [e % HOUR for e in kathmandu] == [15 * MINUTE_MS] * len(kathmandu)  # 00:00 +05:45


def test_bad_parameters():
    with pytest.raises(ValueError, match="time zone"):
        zone("Mars/Olympus")
    with pytest.raises(ValueError, match="time zone"):
        zone("../../etc/passwd")
    with pytest.raises(ValueError, match="step"):
        step_ms("2h")
    with pytest.raises(ValueError, match="buckets"):
        edges(0, (MAX_BUCKETS + 1) * MINUTE_MS, MINUTE_MS, zone("UTC"))
    with pytest.raises(ValueError, match="buckets"):
        edges(0, 30 * DAY_MS, MINUTE_MS, zone("Europe/Dublin"))
    with pytest.raises(ValueError):
        edges(5, 5, MINUTE_MS, zone("UTC"))
    assert len(edges(0, MAX_BUCKETS * MINUTE_MS, MINUTE_MS, zone("UTC"))) == MAX_BUCKETS + 1


def _sql_bucket(t: int, parts) -> int:
    """What `bucket_sql` computes: the last segment starting at or before t."""
    s = [p for p in parts if p.start <= t][-1] if parts[0].start <= t else parts[0]
    return s.first + (t - s.start) // s.width


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(ZONES),
    st.sampled_from(list(STEPS)),
    st.sampled_from([SPRING, AUTUMN, 1_775_320_000_000, 1_790_000_000_000]),
    st.integers(-2 * DAY_MS, 2 * DAY_MS),
    st.integers(1, 2 * DAY_MS),
)
def test_edges_equal_the_oracle(tz, step, around, offset, length):
    start = around + offset
    width = STEPS[step]
    if step == "1d":
        length *= 2
    got = edges(start, start + length, width, zone(tz))
    assert got == Oracle.series_edges(start, start + length, width, tz)
    assert got[0] <= start < got[1] and got[-2] < start + length <= got[-1]
    parts = segments(got)
    assert sum(p.count for p in parts) == len(got) - 1
    for t in {start, start + length - 1, *got[:-1], *(e - 1 for e in got[1:])}:
        assert _sql_bucket(t, parts) == bucket_of(t, got)


def test_shown_buckets_stop_at_now():
    cuts = [0, 10, 20, 30]
    assert [shown(cuts, now) for now in (-1, 0, 9, 10, 29, 30, 99)] == [0, 1, 1, 2, 3, 3, 3]


# -- door spaces --------------------------------------------------------------------------------

T = 1_800_000_000_000
EVENT = st.tuples(
    st.sampled_from(["s1", "s2"]), st.integers(0, 40), st.sampled_from([1, -1])
)  # (sensor, ts in tens of seconds, direction)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(EVENT, max_size=40),
    st.lists(st.integers(0, 40), max_size=3),
    st.integers(0, 40),
    st.integers(1, 40),
    st.integers(0, 45),
)
def test_door_series_equals_the_oracle(events, resets, first, length, now_at):
    oracle, counter = Oracle(), DoorCounter()
    for target in (oracle, counter):
        for space in ("hall", "room"):
            target.define_space(space) if target is counter else target.define_door_space(space)
        target.define_doorway("d-room", "room", "hall")
        target.define_doorway("d-front", "hall", None)
        target.install("s1", "d-front", T, "in")
        target.install("s2", "d-room", T, "out")
        target.install("s2", "d-front", T + 200_000, "in")
    for at in resets:
        counter.reset("hall", T + at * 10_000)
        oracle.reset("hall", T + at * 10_000)
    now = T + now_at * 10_000
    for sensor, ts, direction in events:
        counter.add(sensor, T + ts * 10_000, direction)
        oracle.door_event(now, sensor, T + ts * 10_000, direction)
    cuts = [T + (first + i) * 30_000 for i in range(length + 1)]
    for space in ("hall", "room"):
        base = counter.partial_sum(space, cuts[0] - 1)
        got = door_series(
            cuts, now, base, counter.crossings(space, cuts[0], now + 1), counter.resets(space)
        )
        assert [tuple(p) for p in got] == oracle.door_series(space, cuts, now)


def test_door_series_counts_at_the_end_of_each_bucket():
    # a reset at 15 inside the second bucket: its count starts again there
    got = door_series([0, 10, 20, 30], 25, 3, [(5, 1), (12, -1), (15, 1), (21, 1)], [15])
    assert [tuple(p) for p in got] == [(4, 1, 0), (1, 1, 1), (2, 1, 0)]
    assert door_series([0, 10], -1, 0, [], []) == []
