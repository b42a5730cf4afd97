"""Devices handed from one user engine to another answer exactly as if they had always lived in
the second one."""

from collections import Counter, defaultdict

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cells import cell_of
from engine.dwell import DwellLedger
from engine.history import PresenceHistory, pieces
from engine.minutes import MinuteAggregator
from engine.presence import NOWHERE, Move, PresenceTracker
from engine.spec import EngineSpec
from engine.user import UserEngine
from tests.workload import DAY0, DAY_MS, POINTS, POLYGON_SPACES, T0

SPEC = EngineSpec(res=9, ttl_ms=120_000, placement_res=6, minute_levels=3)
TTL = SPEC.ttl_ms
SKEW = SPEC.limits.max_skew_ms
CELLS = [cell_of(lat, lng, SPEC.res) for lat, lng in POINTS]
CELL_A, CELL_B = CELLS[0], CELLS[1]
DEVICES = list(range(1, 7))
DAYS = (DAY0, DAY0 + DAY_MS)
START = DAY0 + DAY_MS - 30_000  # open intervals reach past midnight, late pings cut them back
NOTHING = {"cells": {}, "spaces": {}}


def wire(state: dict) -> dict:
    """The state as another process receives it."""
    return msgpack.unpackb(msgpack.packb(state, use_bin_type=True), raw=False, strict_map_key=False)


def packed(engine: UserEngine) -> bytes:
    return msgpack.packb(engine.snapshot(), use_bin_type=True)


def new_engine() -> UserEngine:
    engine = UserEngine(SPEC)
    for space, polygon in POLYGON_SPACES.items():
        engine.define_space(space, polygon)
    engine.drain_moves()
    return engine


# -- the engines against a reference that never hands off ---------------------------------------

_dt = st.one_of(
    st.just(0),
    st.integers(0, 2_000),
    st.integers(0, 150_000),
    st.sampled_from([5_000, 20_000, 45_000, 60_000, TTL]),
)
_offset = st.one_of(
    st.just(0),
    st.integers(-200_000, SKEW),
    st.integers(-3, 3),
    st.sampled_from([-150_000, -60_000, -40_000, -25_000, -10_000, 10_000, SKEW]),
)
_op = st.one_of(
    st.tuples(st.just("ping"), _dt, st.sampled_from(DEVICES), _offset, st.integers(0, 19)),
    st.tuples(st.just("ping"), _dt, st.sampled_from(DEVICES), _offset, st.integers(0, 19)),
    st.tuples(st.just("ping"), _dt, st.sampled_from(DEVICES), _offset, st.integers(0, 19)),
    st.tuples(st.just("advance"), _dt),
    st.tuples(st.just("export"), st.sampled_from(["now", "later", "never"])),
    st.tuples(st.just("respace"), st.sampled_from(sorted(POLYGON_SPACES))),
    st.tuples(st.just("handoff"), st.booleans(), st.sets(st.sampled_from(DEVICES))),
)


class Trial:
    """A reference engine and engines A and B fed the same stream; every device starts in A,
    some move to B at the cut, and handoff ops in the stream move devices either way. History
    stores keep the latest value of each piece."""

    def __init__(self) -> None:
        self.ref, self.a, self.b = new_engine(), new_engine(), new_engine()
        self.owner = dict.fromkeys(DEVICES, self.a)
        self.now = START
        self.cell_moves = {"ref": defaultdict(list), "ab": defaultdict(list)}
        self.space_moves = {"ref": defaultdict(list), "ab": defaultdict(list)}
        self.space_seqs: dict[int, list[int]] = defaultdict(list)
        self.stores: dict[str, dict] = {"ref": {}, "ab": {}}
        self.marks: tuple[int, int, int] | None = None
        self.defined = set(POLYGON_SPACES)

    def run(self, ops: list, cut: int, moving: set[int], export_before: str) -> None:
        for i, op in enumerate(ops):
            if i == cut:
                self.export(export_before)
                self.handoff(self.a, self.b, moving)
            getattr(self, f"op_{op[0]}")(*op[1:])
        if cut >= len(ops):
            self.export(export_before)
            self.handoff(self.a, self.b, moving)

    def engines(self) -> tuple[UserEngine, UserEngine, UserEngine]:
        return self.ref, self.a, self.b

    def drain(self) -> None:
        for side, engine in (("ref", self.ref), ("ab", self.a), ("ab", self.b)):
            moves, space_moves = engine.drain_moves()
            for m in moves:
                self.cell_moves[side][m.device].append(m)
            for m in space_moves:
                self.space_moves[side][m.device].append((m.old, m.new))
                if side == "ab":
                    self.space_seqs[m.device].append(m.seq)

    def op_ping(self, dt: int, device: int, offset: int, point: int) -> None:
        self.now += dt
        lat, lng = POINTS[point]
        ping = ([device], [max(1, self.now + offset)], [CELLS[point]], [lat], [lng], self.now)
        assert self.owner[device].ingest(*ping) == self.ref.ingest(*ping)
        self.drain()

    def op_advance(self, dt: int) -> None:
        self.now += dt
        for engine in self.engines():
            engine.advance(self.now)
        self.drain()

    def op_respace(self, space: str) -> None:
        for engine in self.engines():
            if space in self.defined:
                engine.remove_space(space)
            else:
                engine.define_space(space, POLYGON_SPACES[space])
        self.defined ^= {space}
        self.drain()

    def op_handoff(self, to_b: bool, moving: set[int]) -> None:
        src, dst = (self.a, self.b) if to_b else (self.b, self.a)
        self.handoff(src, dst, moving)

    def op_export(self, confirm: str) -> None:
        self.export(confirm)

    def export(self, confirm: str) -> None:
        """Export from all three and confirm at once, "later" (just before the next export,
        so pings, expiries and a handoff may come between) or "never"."""
        if confirm == "none":
            return
        self.confirm()
        (ref_mark, ref_rows), (a_mark, a_rows), (b_mark, b_rows) = (
            e.history_export(self.now) for e in self.engines()
        )
        ref, ab = Counter(ref_rows), Counter(a_rows + b_rows)
        assert not ref - ab
        # more only when a mark crossed the handoff: the receiver sends those pieces again
        for device, day, place, start, lo, hi in (ab - ref).elements():
            assert self.stores["ab"][(device, day, place, start)] == (lo, hi)
        for side, rows in (("ref", ref_rows), ("ab", a_rows + b_rows)):
            for device, day, place, start, lo, hi in rows:
                self.stores[side][(device, day, place, start)] = (lo, hi)
        assert self.stores["ref"] == self.stores["ab"]
        if confirm != "never":
            self.marks = (ref_mark, a_mark, b_mark)
        if confirm == "now":
            self.confirm()

    def confirm(self) -> None:
        if self.marks is not None:
            for engine, mark in zip(self.engines(), self.marks, strict=True):
                engine.history_confirm(mark)
            self.marks = None

    def handoff(self, src: UserEngine, dst: UserEngine, moving: set[int]) -> None:
        held = set(src.devices())
        state = src.extract(sorted(moving))
        assert set(src.devices()) == held - moving
        assert dst.absorb(wire(state)) == sorted(held & moving)
        assert dst.drain_moves() == ([], [])
        before = packed(dst)
        assert dst.absorb(wire(state)) == []
        assert packed(dst) == before
        for device in moving:
            if self.owner[device] is src:
                self.owner[device] = dst

    def check(self) -> None:
        for engine in self.engines():
            engine.advance(self.now)
        self.drain()
        ref, a, b = self.engines()
        assert sorted(a.present_cells() + b.present_cells()) == sorted(ref.present_cells())
        spaces = sorted((d, s) for e in (a, b) for d, s, _ in e.present_spaces())
        assert spaces == sorted((d, s) for d, s, _ in ref.present_spaces())
        assert not set(a.devices()) & set(b.devices())
        assert set(a.devices()) | set(b.devices()) == set(ref.devices())
        for device in DEVICES:
            owner = self.owner[device]
            other = b if owner is a else a
            for day in DAYS:
                assert owner.dwell(device, day, self.now) == ref.dwell(device, day, self.now)
                assert other.dwell(device, day, self.now) is None  # not held there
                assert owner.distance(device, day) == ref.distance(device, day)
                assert other.distance(device, day) is None
        minutes = Counter(a.minute_counts(self.now))
        minutes.update(b.minute_counts(self.now))
        assert dict(minutes) == ref.minute_counts(self.now)
        assert 0 not in a.minute_counts(self.now).values()
        assert 0 not in b.minute_counts(self.now).values()
        self.export("now")
        assert self.cell_moves["ab"] == self.cell_moves["ref"]
        assert self.space_moves["ab"] == self.space_moves["ref"]
        for seqs in self.space_seqs.values():
            assert seqs == sorted(set(seqs))


@st.composite
def trials(draw) -> tuple[list, int, set[int], str]:
    """(ops, index of the op before which the handoff happens, devices handed off, how the
    history export right before it is confirmed)."""
    ops = draw(st.lists(_op, min_size=10, max_size=50))
    cut = draw(st.integers(len(ops) // 4, len(ops)))
    moving = draw(st.lists(st.booleans(), min_size=len(DEVICES), max_size=len(DEVICES)))
    handed = {device for device, moves in zip(DEVICES, moving, strict=True) if moves}
    return ops, cut, handed, draw(st.sampled_from(["later", "now", "later", "never", "none"]))


@settings(max_examples=50, deadline=None)
@given(trials())
def test_handed_off_devices_answer_as_if_they_had_always_lived_there(case):
    trial = Trial()
    trial.run(*case)
    trial.check()
    trial.now += TTL + 60_000  # every interval has ended
    trial.check()


# -- the tracker --------------------------------------------------------------------------------


def drained(tracker: PresenceTracker) -> PresenceTracker:
    tracker.moves.clear()
    tracker.settled.clear()
    tracker.drain_segments()
    return tracker


def two_devices() -> PresenceTracker:
    tracker = PresenceTracker(TTL)
    tracker.apply(1, T0, CELL_A, 52.66, -8.63, T0)
    tracker.apply(2, T0 + 1_000, CELL_B, 52.662, -8.63, T0 + 1_000)
    return drained(tracker)


def test_tracker_extract_takes_the_device_off_the_wheel():
    tracker = two_devices()
    state = tracker.extract([1, 99])
    assert [row[0] for row in state["devices"]] == [1]
    assert 1 not in tracker and 2 in tracker
    assert all(1 not in due for due in tracker._wheel.values())
    tracker.advance(T0 + TTL + 1_000)
    assert tracker.moves == [Move(2, CELL_B, NOWHERE, 2, T0 + 1_000 + TTL)]


def test_tracker_absorb_keeps_the_deadline_and_emits_no_move():
    sender, receiver = two_devices(), PresenceTracker(TTL)
    state = wire(sender.extract([1]))
    receiver.absorb(state)
    assert not receiver.moves
    assert list(receiver.present()) == [(1, CELL_A, 1)]
    receiver.absorb(state)
    snapshot = wire(receiver.snapshot())
    assert snapshot["devices"] == state["devices"] and snapshot["gone"] == []
    receiver.advance(T0 + TTL)
    assert receiver.moves == [Move(1, CELL_A, NOWHERE, 2, T0 + TTL)]


def test_tracker_absorb_keeps_a_device_it_holds():
    sender, receiver = two_devices(), PresenceTracker(TTL)
    receiver.apply(1, T0 + 5_000, CELL_B, 52.662, -8.63, T0 + 5_000)
    drained(receiver)
    receiver.absorb(sender.extract([1]))
    assert list(receiver.present()) == [(1, CELL_B, 1)]


def test_tracker_extract_refuses_undrained_outboxes():
    tracker = PresenceTracker(TTL)
    tracker.apply(1, T0, CELL_A, 52.66, -8.63, T0)
    with pytest.raises(RuntimeError):
        tracker.extract([1])
    assert 1 in tracker


# -- the ledger, the minute sets and history ----------------------------------------------------


def test_ledger_moves_dwell_and_distance():
    sender, receiver = DwellLedger(), DwellLedger()
    for device in (1, 2):
        sender.add_interval(device, (CELL_A, "sp-a"), DAY0 + 1_000, DAY0 + 5_000)
        sender.add_segment(device, DAY0 + 1_000, DAY0 + 5_000, 12.5 * device)
    state = wire(sender.extract([1]))
    receiver.absorb(state)
    receiver.absorb(state)
    assert receiver.dwell(1, DAY0) == {CELL_A: 4_000, "sp-a": 4_000}
    assert receiver.distance(1, DAY0) == 12.5
    assert sender.dwell(1, DAY0) == {} and sender.distance(1, DAY0) == 0.0
    assert sender.distance(2, DAY0) == 25.0
    assert receiver.snapshot() == {**state, "horizon": 0}


def test_ledger_absorb_skips_a_device_it_has_data_for():
    sender, receiver = DwellLedger(), DwellLedger()
    sender.add_interval(1, (CELL_A,), DAY0, DAY0 + 5_000)
    receiver.add_interval(1, (CELL_B,), DAY0, DAY0 + 1_000)
    receiver.absorb(sender.extract([1]))
    assert receiver.dwell(1, DAY0) == {CELL_B: 1_000}


def test_minutes_extract_drops_sets_left_empty():
    sender, receiver = MinuteAggregator(), MinuteAggregator()
    sender.add(1, (CELL_A,), DAY0, DAY0 + 120_000)
    sender.add(2, (CELL_A,), DAY0 + 60_000, DAY0 + 120_000)
    before = sender.counts()
    state = wire(sender.extract([1, 3]))
    assert sender.counts() == {(CELL_A, DAY0 + 60_000): 1}
    receiver.absorb(state)
    receiver.absorb(state)
    assert receiver.counts() == {(CELL_A, DAY0): 1, (CELL_A, DAY0 + 60_000): 1}
    assert Counter(sender.counts()) + Counter(receiver.counts()) == Counter(before)


def test_minutes_absorb_skips_a_device_it_has_data_for():
    sender, receiver = MinuteAggregator(), MinuteAggregator()
    sender.add(1, (CELL_A,), DAY0, DAY0 + 120_000)
    receiver.add(1, (CELL_B,), DAY0, DAY0 + 1_000)
    receiver.absorb(sender.extract([1]))
    assert receiver.counts() == {(CELL_B, DAY0): 1}


def test_history_mark_handed_out_before_an_extract_confirms_what_it_sent():
    sender, receiver = PresenceHistory(), PresenceHistory()
    sender.settled(1, (CELL_A,), DAY0, DAY0 + 1_000)
    sender.settled(2, (CELL_A,), DAY0, DAY0 + 2_000)
    mark, _ = sender.export([])
    sender.settled(2, (CELL_B,), DAY0 + 2_000, DAY0 + 3_000)
    receiver.absorb(wire(sender.extract([1])))
    sender.confirm(mark)
    assert sender.export([])[1] == pieces(2, (CELL_B,), DAY0 + 2_000, DAY0 + 3_000)
    assert receiver.export([])[1] == pieces(1, (CELL_A,), DAY0, DAY0 + 1_000)


def test_history_mark_handed_out_before_an_absorb_leaves_the_absorbed_owed():
    sender, receiver = PresenceHistory(), PresenceHistory()
    sender.settled(1, (CELL_A,), DAY0, DAY0 + 1_000)
    receiver.settled(2, (CELL_A,), DAY0, DAY0 + 2_000)
    mark, _ = receiver.export([])
    state = wire(sender.extract([1]))
    receiver.absorb(state)
    receiver.absorb(state)
    receiver.confirm(mark)
    assert receiver.export([])[1] == pieces(1, (CELL_A,), DAY0, DAY0 + 1_000)
    assert sender.export([])[1] == []


def test_history_moves_the_open_books_that_bury_days():
    sender, receiver = PresenceHistory(), PresenceHistory()
    start = DAY0 + DAY_MS - 1_000
    sender.export([(1, (CELL_A,), start, DAY0 + DAY_MS + 5_000)])  # reaches the next day
    receiver.absorb(wire(sender.extract([1])))
    _, rows = receiver.export([(1, (CELL_A,), start, DAY0 + DAY_MS - 500)])
    assert (1, DAY0 + DAY_MS, CELL_A, start, 0, 0) in rows
    assert sender.export([(1, (CELL_A,), start, DAY0 + DAY_MS - 500)])[1] == pieces(
        1, (CELL_A,), start, DAY0 + DAY_MS - 500
    )


# -- the user engine ----------------------------------------------------------------------------


def test_engine_extract_refuses_moves_not_routed():
    engine = new_engine()
    engine.ingest([1], [T0], [CELL_A], [52.66], [-8.63], T0)
    with pytest.raises(RuntimeError):
        engine.extract([1])
    engine.drain_moves()
    assert engine.extract([1])["devices"] == [1]


def test_engine_extract_of_devices_it_does_not_hold_absorbs_to_nothing():
    sender, receiver = new_engine(), new_engine()
    sender.ingest([1], [T0], [CELL_A], [52.66], [-8.63], T0)
    sender.drain_moves()
    before = packed(sender)
    state = wire(sender.extract([2, 3]))
    assert packed(sender) == before
    assert state["devices"] == [] and state["tracker"]["devices"] == []
    assert receiver.absorb(state) == []
    assert packed(receiver) == packed(new_engine())


def test_engine_absorb_ignores_a_device_it_holds_in_every_component():
    sender, receiver = new_engine(), new_engine()
    sender.ingest([1, 1], [T0, T0 + 10_000], [CELL_A, CELL_B], [52.66] * 2, [-8.63] * 2, T0)
    receiver.ingest([1], [T0], [CELL_B], [52.66], [-8.63], T0)
    sender.advance(T0 + 30_000)
    for engine in (sender, receiver):
        engine.drain_moves()
    before = packed(receiver)
    assert receiver.absorb(wire(sender.extract([1]))) == []
    assert packed(receiver) == before


def test_engine_later_space_moves_outnumber_the_senders():
    sender, receiver = new_engine(), new_engine()
    lat, lng = POINTS[2]  # in sp-a and sp-b
    for device in (1, 2, 3):
        sender.ingest([device], [T0], [CELLS[2]], [lat], [lng], T0)
    sender.remove_space("sp-b")
    sender.define_space("sp-b", POLYGON_SPACES["sp-b"])
    sender.drain_moves()
    seen = max(seq for _, _, seq in sender.present_spaces())
    receiver.absorb(wire(sender.extract([1])))
    receiver.remove_space("sp-b")
    _, space_moves = receiver.drain_moves()
    assert [m.device for m in space_moves] == [1]
    assert space_moves[0].seq > seen
