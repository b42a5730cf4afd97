"""Live state forgets what history holds, and every answer stays exact: devices leave memory
but for a watermark, a delayed ping still cuts an evicted stay short, watermarks and door
events pass the horizon."""

import msgpack
import pytest

from engine.cells import cell_of
from engine.doors import BeyondHorizon, DoorCounter
from engine.history import dwell_of
from engine.membership import PlaceCounts
from engine.spec import EngineSpec
from engine.timeutil import DAY_MS, MINUTE_MS
from engine.user import WATERMARK_MARGIN_MS, UserEngine
from engine.validation import Limits
from tests.oracle import Oracle

DAY = 1_710_028_800_000  # 2024-03-10 00:00 UTC
TTL = 120_000
MAX_AGE = 3_600_000
SPEC = EngineSpec(ttl_ms=TTL, live_minutes=2, dwell_days=1, limits=Limits(max_age_ms=MAX_AGE))
A = (52.660, -8.630)
B = (52.662, -8.628)


class Shard:
    """One user engine, an in-memory history (the latest version of each piece) and the
    oracle, fed the same pings."""

    def __init__(self) -> None:
        self.engine = UserEngine(SPEC)
        self.store: dict = {}
        self.oracle = Oracle(ttl_ms=TTL, max_age_ms=MAX_AGE)
        self.keys: dict[str, int] = {}

    def key(self, device: str) -> int:
        return self.keys.setdefault(device, len(self.keys) + 1)

    def ping(self, device: str, ts: int, point, now: int) -> bool:
        self.oracle.ping(now, device, ts, *point)
        cell = cell_of(*point, 9)
        [applied] = self.engine.ingest(
            [self.key(device)], [ts], [cell], [point[0]], [point[1]], now
        )
        self.engine.drain_moves()
        return applied

    def snapshot(self, now: int) -> tuple[int, int]:
        """An export written and confirmed, then eviction (what the snapshotter causes)."""
        self.engine.advance(now)
        self.engine.drain_moves()
        mark, rows = self.engine.history_export(now)
        for device, day, place, start, lo, hi in rows:
            self.store[(device, day, place, start)] = (lo, hi)
        self.engine.history_confirm(mark)
        return self.engine.evict(now)

    def departed(self, device: str, t: int) -> int:
        """`device` pings once at `t` and is gone: by the time returned, it is evicted."""
        self.ping(device, t, A, t)
        now = t + TTL + 3 * MINUTE_MS
        self.snapshot(now)
        assert (
            self.key(device) in self.engine and self.engine.dwell(self.key(device), t, now) is None
        )
        return now

    def dwell(self, device: str, day: int, now: int) -> dict:
        key = self.key(device)
        found = self.engine.dwell(key, day, now)
        if found is None:
            stored = [(p, s, lo, hi) for (d, dd, p, s), (lo, hi) in self.store.items()
                      if d == key and dd == day]  # fmt: skip
            found = dwell_of(stored, self.engine.owed_pieces(key, day, now))
        return found

    def check(self, now: int, *devices: str) -> None:
        for device in devices:
            for day in (DAY - DAY_MS, DAY, DAY + DAY_MS):
                expected = self.oracle.dwell(device, day, now)
                assert self.dwell(device, day, now) == expected, (device, day)


def test_a_device_that_left_leaves_memory_but_a_watermark_and_answers_from_history():
    s = Shard()
    t = DAY + 3_600_000
    s.ping("a", t, A, t)
    s.ping("a", t + 30_000, B, t + 30_000)
    assert s.snapshot(t + 60_000) == (0, 0)  # present: held
    gone = t + 30_000 + TTL  # its presence ended then
    assert s.snapshot(gone + MINUTE_MS) == (0, 0)  # still within the live minute window
    later = gone + 3 * MINUTE_MS
    assert s.snapshot(later) == (1, 0)  # its last stay, exported and confirmed: it goes
    assert len(s.engine) == 0 and s.engine.watermarks == 1 and s.key("a") in s.engine
    assert s.engine.dwell(s.key("a"), DAY, later) is None
    s.check(later + 10_000, "a")
    # nothing of it is exported again
    assert s.engine.history_export(later + 20_000)[1] == []
    state = msgpack.packb(s.engine.snapshot())
    assert len(state) < 400  # the whole shard: a watermark, the spec, empty books


def test_a_late_ping_of_an_evicted_device_is_still_late():
    s = Shard()
    t = DAY + 3_600_000
    now = s.departed("a", t) + 2 * MINUTE_MS
    assert len(s.engine) == 0
    assert not s.ping("a", t, B, now)  # a duplicate
    assert not s.ping("a", t - 5_000, B, now)
    assert len(s.engine) == 0 and s.engine.watermarks == 1
    s.check(now, "a")


def test_a_delayed_ping_cuts_an_evicted_stay_short_across_midnight():
    s = Shard()
    t = DAY - 60_000  # a stay from a minute before midnight to a minute after
    s.ping("a", t, A, t)
    now = t + TTL + 3 * MINUTE_MS
    assert s.snapshot(now) == (1, 0)
    assert s.store[(s.key("a"), DAY, cell_of(*A, 9), t)] == (DAY, t + TTL)
    # a ping dated 20 s after the first arrives five minutes late: the stay ended then
    now += 2 * MINUTE_MS
    assert s.ping("a", t + 20_000, B, now)
    assert len(s.engine) == 1 and s.engine.watermarks == 0
    s.check(now, "a")  # live and owed pieces over history's, before the next snapshot
    s.snapshot(now + 1_000)
    assert s.store[(s.key("a"), DAY, cell_of(*A, 9), t)] == (0, 0)  # the next day: buried
    assert s.store[(s.key("a"), DAY - DAY_MS, cell_of(*A, 9), t)] == (t, t + 20_000)
    s.check(now + 1_000, "a")


def test_watermarks_go_after_max_age_and_a_device_back_then_counts_anew():
    s = Shard()
    t = DAY + 3_600_000
    s.departed("a", t)
    assert s.engine.watermarks == 1
    just_kept = t + MAX_AGE + TTL + WATERMARK_MARGIN_MS
    assert s.snapshot(just_kept)[1] == 0
    assert s.snapshot(just_kept + 1)[1] == 1
    assert s.engine.watermarks == 0 and s.key("a") not in s.engine
    now = just_kept + 10_000
    assert s.ping("a", now - 1_000, B, now)
    moves = s.engine.tracker.present()
    [(_, _, new_seq)] = list(moves)
    assert new_seq > 2  # above every seq the device had: a view's tombstone never hides it
    s.check(now, "a")


def test_evicted_devices_move_with_a_handoff():
    s = Shard()
    t = DAY + 3_600_000
    s.departed("a", t)
    other = UserEngine(SPEC)
    key = s.key("a")
    state = msgpack.unpackb(msgpack.packb(s.engine.extract([key])), strict_map_key=False)
    assert key not in s.engine
    assert other.absorb(state) == [key] and key in other and len(other) == 0
    now = t + TTL + 5 * MINUTE_MS
    assert other.ingest([key], [t], [cell_of(*B, 9)], [B[0]], [B[1]], now) == [False]


def test_minutes_and_days_leave_memory_and_are_answered_from_their_horizon():
    s = Shard()
    t = DAY - 10 * MINUTE_MS
    for i in range(30):
        s.ping(f"d{i}", t + i * 1_000, A, t + i * 1_000)
    s.snapshot(t + 40_000)
    s.snapshot(DAY + 30 * MINUTE_MS)
    assert s.engine.minute_horizon == DAY + 28 * MINUTE_MS
    assert s.engine.minute_counts(DAY + 30 * MINUTE_MS) == {}
    assert s.engine.ledger.horizon == DAY
    s.check(DAY + 30 * MINUTE_MS, *(f"d{i}" for i in range(30)))


def test_door_events_fold_into_a_base_and_counts_stay_exact_from_the_horizon():
    c = DoorCounter()
    c.define_space("hall")
    c.define_space("room")
    c.define_doorway("front", "hall", None)
    c.define_doorway("inner", "room", "hall")
    c.install("s1", "front", DAY, "in")
    c.install("s2", "inner", DAY, "in")
    c.reset("hall", DAY + 50_000)
    events = [("s1", DAY + 10_000 * k, 1) for k in range(10)]
    events += [("s2", DAY + 15_000 * k, 1 if k % 3 else -1) for k in range(10)]
    for e in events:
        c.add(*e)
    counts = {
        (sp, at): c.count(sp, at)
        for sp in ("hall", "room")
        for at in range(DAY, DAY + 200_000, 5_000)
    }
    assert c.fold(DAY + 70_000) == sum(1 for e in events if e[1] < DAY + 70_000)
    for (space, at), n in counts.items():
        if at >= DAY + 70_000:
            assert c.count(space, at) == n, (space, at)
        else:
            with pytest.raises(BeyondHorizon):
                c.count(space, at)
    restored = DoorCounter.restore(msgpack.unpackb(msgpack.packb(c.snapshot())))
    assert restored.count("hall", DAY + 150_000) == counts[("hall", DAY + 150_000)]
    c.add("s1", DAY + 60_000, 1)  # a replayed event before the horizon goes into the base
    assert c.count("hall", DAY + 150_000) == counts[("hall", DAY + 150_000)] + 1
    with pytest.raises(BeyondHorizon):
        c.install("s1", "inner", DAY + 69_999, "in")
    with pytest.raises(BeyondHorizon):
        c.reset("room", DAY)
    with pytest.raises(ValueError, match="never change"):
        c.define_doorway("front", "room", None)
    c.define_doorway("front", "hall", None)  # the same definition again is fine


def test_view_tombstones_and_devices_that_left_do_not_stay():
    counts = PlaceCounts(grace_ms=60_000)
    for minute in range(30):
        for d in range(minute * 10, minute * 10 + 10):
            counts.update(d, (1,), 1)
        for d in range(minute * 10 - 50, minute * 10 - 40):
            counts.update(d, (), 2)
        counts.age(minute * 60_000)
    assert len(counts) == 50 and counts.tombstones <= 20


def test_a_space_shard_checkpoint_from_before_loads():
    c = DoorCounter()
    c.define_space("hall")
    c.define_doorway("front", "hall", None)
    c.install("s1", "front", DAY, "in")
    c.load_events({"events": [["s1", DAY + 1_000, 1], ["s1", DAY + 2_000, 1]]})
    assert c.count("hall", DAY + 5_000) == 2
