"""Presence tracking by hand-worked cases: late pings, TTL expiry, future-dated pings."""

import msgpack

from engine.presence import NOWHERE, Interval, Move, PresenceTracker

TTL = 120_000
A, B = 617700170065510399, 617700170065510400  # any distinct ints serve as cells here
T = 1_700_000_000_000


def drain(tr: PresenceTracker):
    out = (list(tr.moves), list(tr.settled))
    tr.moves.clear(), tr.settled.clear(), tr.drain_segments()
    return out


def test_in_order_late_and_duplicate():
    tr = PresenceTracker(TTL)
    assert tr.apply(1, T, A, 0.0, 0.0, T)
    assert not tr.apply(1, T, B, 0.0, 0.0, T)  # duplicate ts is late
    assert not tr.apply(1, T - 1, B, 0.0, 0.0, T)
    assert tr.cell(1) == A
    assert tr.apply(1, T + 1000, B, 0.0, 0.0, T + 1000)
    moves, settled = drain(tr)
    assert moves == [Move(1, NOWHERE, A, 1, T), Move(1, A, B, 2, T + 1000)]  # at: when
    assert settled == [Interval(1, A, T, T + 1000)]


def test_expiry_by_the_clock_only():
    tr = PresenceTracker(TTL)
    tr.apply(1, T, A, 0, 0, T)
    drain(tr)
    tr.advance(T + TTL - 1)
    assert tr.cell(1) == A and not tr.moves
    tr.advance(T + TTL)
    assert tr.cell(1) == NOWHERE
    assert drain(tr)[0] == [Move(1, A, NOWHERE, 2, T + TTL)]  # when the TTL ran out
    tr.advance(T + TTL + 5000)  # idempotent
    assert drain(tr) == ([], [])
    # the expired interval settles when the next ping comes, cut at the TTL
    tr.apply(1, T + 10 * TTL, B, 0, 0, T + 10 * TTL)
    moves, settled = drain(tr)
    assert settled == [Interval(1, A, T, T + TTL)]
    assert moves == [Move(1, NOWHERE, B, 3, T + 10 * TTL)]


def test_future_dated_ping_takes_effect_at_its_ts():
    tr = PresenceTracker(TTL)
    tr.apply(1, T, A, 0, 0, T)
    tr.apply(1, T + 20_000, B, 0, 0, T + 5_000)  # 15 s in the future
    assert tr.cell(1) == A
    assert drain(tr)[1] == []  # A's interval ends in the future: not settled yet
    assert tr.unsettled(1, T + 5_000) == [Interval(1, A, T, T + 5_000)]
    tr.advance(T + 19_999)
    assert tr.cell(1) == A
    tr.advance(T + 20_000)
    assert tr.cell(1) == B
    moves, settled = drain(tr)
    assert settled == [Interval(1, A, T, T + 20_000)]
    assert moves == [Move(1, A, B, 2, T + 20_000)]  # at its ts, not at the clock's


def test_first_ping_in_the_future_is_absent_until_due():
    tr = PresenceTracker(TTL)
    tr.apply(7, T + 10_000, A, 0, 0, T)
    assert tr.cell(7) == NOWHERE and not tr.moves
    tr.advance(T + 10_000)
    assert tr.cell(7) == A


def test_late_ping_after_expiry_changes_nothing():
    tr = PresenceTracker(TTL)
    tr.apply(1, T, A, 0, 0, T)
    tr.advance(T + TTL)
    drain(tr)
    assert not tr.apply(1, T - 50_000, B, 0, 0, T + TTL)
    assert drain(tr) == ([], []) and tr.cell(1) == NOWHERE


def test_snapshot_round_trip_through_msgpack_behaves_the_same():
    tr = PresenceTracker(TTL)
    tr.apply(1, T, A, 52.0, -8.0, T)
    tr.apply(2, T + 1_000, B, 52.1, -8.1, T + 1_000)
    tr.apply(1, T + 25_000, B, 52.2, -8.2, T + 2_000)  # pending future ping
    drain(tr)
    state = msgpack.unpackb(msgpack.packb(tr.snapshot()), strict_map_key=False)
    copy = PresenceTracker.restore(state)
    for t in (T + 20_000, T + 25_000, T + 200_000):
        tr.advance(t)
        copy.advance(t)
        assert drain(tr) == drain(copy)
        assert sorted(tr.present()) == sorted(copy.present())
    assert copy.apply(1, T + 300_000, A, 0, 0, T + 300_000)
    assert not copy.apply(2, T + 1_000, A, 0, 0, T + 300_000)


def test_a_stay_in_one_cell_settles_as_one_interval():
    tr = PresenceTracker(TTL)
    for k in range(5):
        tr.apply(1, T + k * 10_000, A, 0, 0, T + k * 10_000)
    tr.apply(1, T + 50_000, B, 0, 0, T + 50_000)
    assert drain(tr)[1] == [Interval(1, A, T, T + 50_000)]
    # a gap longer than the TTL breaks the stay even in the same cell
    tr.apply(1, T + 400_000, B, 0, 0, T + 400_000)
    tr.apply(1, T + 410_000, A, 0, 0, T + 410_000)
    assert drain(tr)[1] == [
        Interval(1, B, T + 50_000, T + 170_000),
        Interval(1, B, T + 400_000, T + 410_000),
    ]
    assert tr.unsettled(1, T + 415_000) == [Interval(1, A, T + 410_000, T + 415_000)]


def test_a_ping_that_extends_the_ttl_costs_no_wheel_move_and_still_expires_on_time():
    tr = PresenceTracker(TTL)
    tr.apply(1, T, A, 0, 0, T)
    tr.apply(1, T + 60_000, A, 0, 0, T + 60_000)
    tr.advance(T + TTL)  # the first wake-up finds the device still present
    assert tr.cell(1) == A
    tr.advance(T + 60_000 + TTL - 1)
    assert tr.cell(1) == A
    tr.advance(T + 60_000 + TTL)
    assert tr.cell(1) == NOWHERE
