"""Hand-worked answers that pin the oracle itself to docs/semantics.md."""

import pytest

from tests.oracle import Oracle
from tests.workload import SQUARE_WITH_HOLE

T = 1_710_115_080_000  # 2024-03-10 23:58:00 UTC
MIDNIGHT = 1_710_115_200_000
P, Q = (52.66, -8.63), (52.67, -8.63)


def test_late_duplicate_and_rejected_pings():
    o = Oracle()
    assert o.ping(T, "a", T, *P) == "applied"
    assert o.ping(T, "a", T, *Q) == "late"
    assert o.ping(T, "a", T - 1, *Q) == "late"
    assert o.ping(T, "a", T + 30_001, *Q) == "rejected"
    assert o.ping(T, "", T, *Q) == "rejected"
    assert o.ping(T, "a", T, 91.0, 0.0) == "rejected"
    assert o.applied_pings("a", T) == [(T, o.cell_of(*P), *P)]


def test_ttl_expiry_and_future_ping():
    o = Oracle(ttl_ms=120_000)
    cp, cq = o.cell_of(*P), o.cell_of(*Q)
    o.ping(T, "a", T, *P)
    assert o.occupancy(cp, T + 119_999, T + 119_999) == 1
    assert o.occupancy(cp, T + 120_000, T + 120_000) == 0
    o.ping(T + 1_000, "a", T + 20_000, *Q)  # dated 19 s ahead
    assert o.occupancy(cp, T + 19_999, T + 19_999) == 1
    assert o.occupancy(cq, T + 20_000, T + 20_000) == 1
    assert o.intervals("a", T + 20_000) == [(T, T + 20_000, cp), (T + 20_000, T + 140_000, cq)]


def test_minute_aggregate_boundaries():
    o = Oracle()
    cp = o.cell_of(*P)
    m = T - T % 60_000
    o.ping(m + 59_999, "a", m + 59_999, *P)
    o.ping(m + 60_000, "b", m + 60_000, *P)
    agg = o.minute_aggregates(9, m + 60_000)
    assert agg[(cp, m)] == 1  # only a was there during minute m
    assert agg[(cp, m + 60_000)] == 2
    # instants after now do not count
    assert (cp, m + 60_000) not in o.minute_aggregates(9, m + 59_999)


def test_dwell_splits_at_midnight_and_stops_at_now():
    o = Oracle()
    cp, cq = o.cell_of(*P), o.cell_of(*Q)
    o.ping(MIDNIGHT - 30_000, "a", MIDNIGHT - 30_000, *P)
    o.ping(MIDNIGHT + 10_000, "a", MIDNIGHT + 10_000, *Q)
    now = MIDNIGHT + 40_000
    assert o.dwell("a", MIDNIGHT - 86_400_000, now) == {"cells": {cp: 30_000}, "spaces": {}}
    assert o.dwell("a", MIDNIGHT, now) == {"cells": {cp: 10_000, cq: 30_000}, "spaces": {}}


def test_distance_of_consecutive_applied_pings_in_the_period():
    o = Oracle()
    o.ping(T, "a", T, 52.0, -8.0)
    o.ping(T, "a", T + 1, 52.01, -8.0)
    o.ping(T, "a", T + 2, 52.02, -8.0)
    assert o.distance("a", T, T + 3, T) == pytest.approx(2 * 1111.95, abs=0.02)
    assert o.distance("a", T + 1, T + 3, T) == pytest.approx(1111.95, abs=0.01)
    assert o.distance("a", T, T + 1, T) == 0.0


def test_door_count_moved_sensor_reset_and_clamp():
    o = Oracle()
    o.define_door_space("hall")
    o.define_door_space("room")
    o.define_doorway("front", "hall", None)
    o.define_doorway("inner", "room", "hall")
    o.install("s", "front", T, "in")
    o.door_event(T, "s", T + 10, 1)
    o.door_event(T, "s", T + 30, 1)
    o.door_event(T, "s", T + 20, 1)  # out of order
    o.install("s", "inner", T + 25, "out")  # moved before the event at T + 30
    # T+30 with "out": +1 leaves the room (clamped at 0) and enters the hall
    assert o.door_count("hall", T + 40, T) == 3
    assert o.door_count("room", T + 40, T) == 0
    o.reset("hall", T + 20)
    assert o.door_count("hall", T + 40, T) == 2  # the event at the reset instant counts
    assert o.door_count("hall", T + 15, T) == 1  # before the reset: unaffected


def test_polygon_space_with_a_hole():
    o = Oracle()
    o.define_polygon_space("s", SQUARE_WITH_HOLE)
    o.ping(T, "in-hole", T, 52.66, -8.63)
    o.ping(T, "inside", T, 52.656, -8.638)
    assert o.cell_of(52.66, -8.63) not in o.space_cells("s")
    assert o.space_occupancy("s", T, T) == 1
