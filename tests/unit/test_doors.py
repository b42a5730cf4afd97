"""Door spaces: orientation, moved sensors, resets, out-of-order events, partial sums."""

import msgpack

from engine.doors import DoorCounter, door_count

T = 1_700_000_000_000


def counter() -> DoorCounter:
    c = DoorCounter()
    c.define_space("hall")
    c.define_space("room")
    c.define_doorway("d-room", inside="room", outside="hall")
    c.define_doorway("d-front", inside="hall", outside=None)
    c.install("s1", "d-front", T, "in")
    return c


def test_orientation_and_other_side():
    c = counter()
    c.install("s2", "d-room", T, "out")
    for ts in (T + 1, T + 2, T + 3):
        c.add("s1", ts, +1)  # three enter the hall
    c.add("s2", T + 4, -1)  # "out"-oriented: -1 enters the room, leaves the hall
    assert c.count("hall", T + 10) == 2
    assert c.count("room", T + 10) == 1
    assert c.count("hall", T + 3) == 3


def test_out_of_order_events_and_clamp():
    c = counter()
    c.add("s1", T + 50, -1)
    c.add("s1", T + 10, +1)
    c.add("s1", T + 60, -1)
    assert c.count("hall", T + 20) == 1
    assert c.count("hall", T + 55) == 0
    assert c.count("hall", T + 70) == 0  # -1 clamps to 0
    c.add("s1", T + 5, +1)  # arrives last, counts as of its time
    assert c.count("hall", T + 70) == 0
    assert c.count("hall", T + 20) == 2


def test_moved_sensor_counts_where_it_was():
    c = counter()
    c.install("s1", "d-room", T + 100, "in")  # moved from the front door to the room
    c.add("s1", T + 150, +1)
    c.add("s1", T + 50, +1)
    assert c.count("hall", T + 200) == 0  # +1 hall (front) then -1 hall (into room)
    assert c.count("room", T + 200) == 1
    # an installation added after the fact re-attributes the events
    c.install("s1", None, T + 140, "in")
    assert c.count("room", T + 200) == 0
    assert c.count("hall", T + 200) == 1


def test_reset_and_partial_sums():
    a, b = counter(), counter()
    b.define_doorway("d-back", inside="hall", outside=None)
    b.install("s9", "d-back", T, "in")
    a.add("s1", T + 1, +1)
    a.add("s1", T + 2, +1)
    b.add("s9", T + 3, -1)
    assert door_count([a.partial_sum("hall", T + 5), b.partial_sum("hall", T + 5)]) == 1
    for c in (a, b):
        c.reset("hall", T + 4)
    a.add("s1", T + 4, +1)  # at the reset instant: counts after it
    assert door_count([a.partial_sum("hall", T + 5), b.partial_sum("hall", T + 5)]) == 1
    assert door_count([a.partial_sum("hall", T + 3), b.partial_sum("hall", T + 3)]) == 1


def test_events_without_installation_count_nowhere():
    c = counter()
    c.add("s1", T - 1, +1)
    c.add("unknown", T + 1, +1)
    assert c.count("hall", T + 10) == 0


def test_snapshot_round_trip():
    c = counter()
    c.install("s2", "d-room", T, "out")
    c.add("s1", T + 1, 1)
    c.add("s2", T + 2, -1)
    c.reset("room", T + 3)
    c.add("s2", T + 4, -1)
    state = msgpack.unpackb(msgpack.packb(c.snapshot()), strict_map_key=False)
    d = DoorCounter.restore(state)
    for space in ("hall", "room"):
        for t in range(T, T + 6):
            assert c.count(space, t) == d.count(space, t)
    d.add("s2", T + 5, -1)
    assert d.count("room", T + 6) == 2


def test_a_doorway_holds_one_sensor_at_a_time():
    c = counter()
    c.add("s1", T + 10, +1)
    c.add("s1", T + 30, +1)  # after s2 took the doorway: counts nowhere
    c.add("s2", T + 30, +1)
    c.install("s2", "d-front", T + 20, "in")  # ends s1's installation there at T + 20
    assert c.count("hall", T + 40) == 2
    c.install("s1", "d-front", T + 25, "in")  # s1 back: s2's ends in turn
    assert c.count("hall", T + 40) == 2  # s1's event at T + 30 counts, s2's does not
    c.add("s2", T + 24, +1)
    assert c.count("hall", T + 40) == 3
    try:
        c.install("s3", "d-front", T + 25, "in")
    except ValueError as exc:
        assert "one sensor at a time" in str(exc)
    else:
        raise AssertionError("two sensors on one doorway from the same time")
    c.install("s1", "d-front", T + 25, "in")  # the same installation again: nothing changes
    # a stored pair from before the rule loads, and both keep counting
    old = DoorCounter()
    old.define_space("hall")
    old.define_doorway("d-front", inside="hall", outside=None)
    old.install("a", "d-front", T, "in", exclusive=False)
    old.install("b", "d-front", T, "out", exclusive=False)
    old.add("a", T + 1, +1)
    old.add("b", T + 2, -1)
    assert old.count("hall", T + 3) == 2


def test_history_ranges_end_where_another_sensor_took_the_doorway():
    """`ranges` (what history sums before the horizon) give every count `count` gives."""
    c = counter()
    events = [("s1", T + 10, +1), ("s1", T + 30, +1), ("s2", T + 24, +1), ("s2", T + 30, +1)]
    for sensor, ts, direction in events:
        c.add(sensor, ts, direction)
    c.install("s2", "d-front", T + 20, "in")
    c.install("s1", "d-front", T + 25, "in")
    assert c.ranges("hall", T + 40) == [
        ("s1", T, T + 19, 1),
        ("s1", T + 25, T + 40, 1),
        ("s2", T + 20, T + 24, 1),
    ]
    for at in range(T, T + 41):
        summed = sum(
            d * sign
            for sensor, lo, hi, sign in c.ranges("hall", at)
            for s, ts, d in events
            if s == sensor and lo <= ts <= hi
        )
        assert door_count([summed]) == c.count("hall", at), at
