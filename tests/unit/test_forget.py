"""Forgetting a device, in the engine against the oracle: the device leaves live state as if
its presence ended then, every count of the past stays, and its id starts afresh."""

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from engine.cells import cell_of
from engine.spec import EngineSpec
from engine.user import UserEngine
from tests.unit.test_engine_oracle import Runner, check_all, check_history
from tests.workload import DEVICES, POINTS, T0, Op, ops


class ForgettingRunner(Runner):
    """The oracle runner with `forget` steps; the history store it keeps re-keys the pieces of a
    forgotten device as the history actor does, and refuses any row of its old pseudonym."""

    def __init__(self) -> None:
        super().__init__()
        self.forgotten: set[int] = set()

    def op_forget(self, device: str) -> None:
        self.export_part(until_done=True)  # a shard forgets between exports, not within one
        old = self.cluster.directory.lookup(device)
        fresh = self.cluster.forget(device, self.now)
        renamed = self.oracle.forget(device, self.now)
        assert (fresh is None) == (old is None)
        if old is None:
            assert renamed is None
            return
        self.forgotten.add(old)
        for key in [k for k in self.pieces if k[0] == old]:
            self.pieces[(fresh, *key[1:])] = self.pieces.pop(key)
        assert self.cluster.directory.lookup(device) is None

    def write(self, rows: list) -> None:
        assert not self.forgotten & {row[0] for row in rows}
        super().write(rows)

    def op_snapshot(self) -> None:
        super().op_snapshot()
        for shard in self.cluster.users.values():
            held = _keys_in(shard.snapshot())
            assert not held & self.forgotten


def _keys_in(state) -> set[int]:
    """Every int anywhere in a snapshot: a device key held would be among them."""
    out: set[int] = set()
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, int):
            out.add(item)
    return out


forget = st.builds(lambda dev: Op("forget", 0, (dev,)), st.sampled_from(DEVICES))


@given(st.lists(st.one_of(ops(), forget, forget), min_size=10, max_size=80))
def test_forgetting_matches_oracle(workload):
    runner = ForgettingRunner()
    runner.run(workload)
    check_all(runner.cluster, runner.oracle, runner.now, runner.stored)
    check_history(runner)
    runner.now += runner.cluster.spec.ttl_ms + 60_000
    runner.cluster.advance(runner.now)
    check_history(runner, every_minute=True)
    for shard in runner.cluster.users.values():
        assert not _keys_in(shard.snapshot()) & runner.forgotten


def test_a_present_device_leaves_and_counts_of_the_past_stay():
    runner = ForgettingRunner()
    runner.run(
        [
            Op("ping", 0, ("dev-0", 0, 0)),
            Op("ping", 0, ("dev-1", 0, 0)),
            Op("ping", 30_000, ("dev-0", 0, 1)),
            Op("tick", 45_000),
        ]
    )
    before = runner.oracle.minute_aggregates(9, runner.now)
    minutes = runner.cluster.minute_counts(runner.now)
    assert sum(runner.cluster.heatmap(9, None).values()) == 2
    runner.op_forget("dev-0")
    assert sum(runner.cluster.heatmap(9, None).values()) == 1
    # the minutes so far keep their counts, under the forgotten device's new key
    assert runner.cluster.minute_counts(runner.now) == minutes
    assert runner.oracle.minute_aggregates(9, runner.now) == before
    assert runner.cluster.dwell("dev-0", T0 - T0 % 86_400_000, runner.now) == {
        "cells": {},
        "spaces": {},
    }
    # a new ping starts a new pseudonym
    old = next(iter(runner.forgotten))
    runner.run([Op("ping", 1_000, ("dev-0", 0, 2))])
    assert runner.cluster.directory.lookup("dev-0") not in (None, old)
    check_all(runner.cluster, runner.oracle, runner.now, runner.stored)


def test_forgetting_is_the_same_when_replayed_from_a_snapshot():
    """A user shard replays its log after a restart: the forget in it gives the same state."""
    spec = EngineSpec(res=9, ttl_ms=120_000)
    a = UserEngine(spec)
    cell = cell_of(*POINTS[0], 9)
    a.ingest([1, 2], [T0, T0], [cell, cell], [POINTS[0][0]] * 2, [POINTS[0][1]] * 2, T0)
    a.drain_moves()
    state = msgpack.unpackb(msgpack.packb(a.snapshot()), strict_map_key=False)
    b = UserEngine.restore(state)
    for engine in (a, b):
        assert engine.forget(1, 99, T0 + 10_000)
        moves, _ = engine.drain_moves()
        assert [(m.device, m.new) for m in moves] == [(1, 0)]
    assert msgpack.packb(a.snapshot()) == msgpack.packb(b.snapshot())
    assert 1 not in a and not a.forget(1, 98, T0 + 20_000)


def test_pings_in_flight_under_a_forgotten_pseudonym_leave_the_batch():
    from engine.record import PingRecord
    from state.forgetting import drop_forgotten

    batch = PingRecord(
        dev=[7, 8, 7, 9],
        ts=[1, 2, 3, 4],
        cell=[10, 20, 30, 40],
        lat=[0.1, 0.2, 0.3, 0.4],
        lng=[1.1, 1.2, 1.3, 1.4],
        region={0: "a", 1: "b", 3: "d"},
    )
    assert drop_forgotten(batch, {5: 0}) is None
    kept = drop_forgotten(batch, {7: 0})
    assert kept == [1, 3]
    left = batch.take(kept)
    assert left.dev == [8, 9] and left.ts == [2, 4] and left.lng == [1.2, 1.4]
    assert left.region == {0: "b", 1: "d"} and left.attributes == {}
