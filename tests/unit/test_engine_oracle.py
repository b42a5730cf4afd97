"""The sharded engine against the brute-force oracle on random workloads."""

import msgpack
import pytest
from hypothesis import given

from engine.cells import parent, resolution
from engine.doors import BeyondHorizon
from engine.geo import BBox
from engine.local import LocalCluster, RawPing
from engine.spec import EngineSpec
from engine.validation import Limits
from tests.oracle import Oracle
from tests.workload import (
    BBOX_C0,
    DAY0,
    DAY_MS,
    DEVICES,
    DOOR_SPACES,
    GRID_MS,
    POINTS,
    POLYGON_SPACES,
    T0,
    Op,
    initial_installations,
    workloads,
)

# short windows, so that workloads see everything leave memory: devices (after the live minute
# window), dwell days (yesterday is in history only), watermarks and door events (max_age)
SPEC = EngineSpec(
    res=9,
    ttl_ms=120_000,
    placement_res=6,
    minute_levels=3,
    dwell_days=1,
    live_minutes=2,
    limits=Limits(max_age_ms=1_800_000),
)
MAX_AGE = SPEC.limits.max_age_ms


def new_cluster() -> LocalCluster:
    return LocalCluster(SPEC, user_shards=3, cell_shards=3, space_shards=2)


def setup(cluster: LocalCluster, oracle: Oracle) -> None:
    for space, polygon in POLYGON_SPACES.items():
        cluster.define_space(space, polygon)
        oracle.define_polygon_space(space, polygon)
    for target in (cluster, oracle):
        for space in DOOR_SPACES:
            target.define_door_space(space)
        target.define_doorway("d-room", "room", "hall")
        target.define_doorway("d-side", "room", "hall")
        target.define_doorway("d-front", "hall", None)
        for sensor, doorway, start, positive in initial_installations():
            target.install(sensor, doorway, start, positive)


class Runner:
    """Feeds one workload to the engine and the oracle, batching pings that arrive together."""

    def __init__(self) -> None:
        self.cluster = new_cluster()
        self.oracle = Oracle(
            res=SPEC.res, ttl_ms=SPEC.ttl_ms, max_skew_ms=30_000, max_age_ms=MAX_AGE
        )
        setup(self.cluster, self.oracle)
        self.now = T0
        self.last_ts: dict[str, int] = {}
        self.batch: list[RawPing] = []
        # what a history store holds: the latest (lo, hi) of each presence piece
        self.pieces: dict[tuple, tuple[int, int]] = {}
        self.exports = 0
        # an export in parts, as a user shard walks it, with the ops after it run in between:
        # [(user engine, its parts, whether to confirm it)]
        self.in_parts: list = []
        self.step_parts = True  # False: the ops run between two parts of it

    def run(self, workload: list[Op]) -> None:
        for i, op in enumerate(workload):
            if op.dt or op.kind not in ("ping", "dup", "delayed"):
                self.flush()
            self.now += op.dt
            getattr(self, f"op_{op.kind}")(*op.args)
            if self.in_parts and i % 2 and self.step_parts:  # the ticker runs in between too
                self.flush()
                self.cluster.advance(self.now)
                self.export_part()
        self.flush()
        self.cluster.advance(self.now)

    def flush(self) -> None:
        if not self.batch:
            return
        statuses = self.cluster.ingest(self.batch, self.now)
        expected = [self.oracle.ping(self.now, *p) for p in self.batch]
        assert [s if s in ("applied", "late") else "rejected" for s in statuses] == expected
        self.batch = []

    def op_ping(self, device: str, offset: int, point: int) -> None:
        ts = self.now + offset
        self.batch.append(RawPing(device, ts, *POINTS[point]))
        if ts <= self.now + 30_000:
            self.last_ts[device] = max(ts, self.last_ts.get(device, 0))

    def op_dup(self, device: str, point: int) -> None:
        if device in self.last_ts:
            self.batch.append(RawPing(device, self.last_ts[device], *POINTS[point]))

    def op_delayed(self, device: str, within: int, point: int) -> None:
        if device in self.last_ts:
            ts = self.last_ts[device] + within
            self.batch.append(RawPing(device, ts, *POINTS[point]))
            if ts <= self.now + 30_000:
                self.last_ts[device] = max(ts, self.last_ts[device])

    def op_door(self, sensor: str, offset: int, direction: int) -> None:
        ts = self.now + offset
        ts -= (ts - T0) % GRID_MS
        [status] = self.cluster.door_events([(sensor, ts, direction)], self.now)
        expected = self.oracle.door_event(self.now, sensor, ts, direction)
        assert (status if status == "accepted" else "rejected") == expected

    def op_install(self, sensor: str, doorway: str | None, start: int, positive: str) -> None:
        accepted = self.oracle.install(sensor, doorway, T0 + start, positive, self.now)
        try:
            self.cluster.install(sensor, doorway, T0 + start, positive, self.now)
        except ValueError:  # BeyondHorizon, or a doorway's other sensor from the same time
            assert not accepted
        else:
            assert accepted

    def op_reset(self, space: str, at: int) -> None:
        accepted = self.oracle.reset(space, T0 + at, self.now)
        try:
            self.cluster.reset(space, T0 + at, self.now)
        except BeyondHorizon:
            assert not accepted
        else:
            assert accepted

    def op_tick(self) -> None:
        self.cluster.advance(self.now)
        self.cluster.fold_doors(self.now)
        self.export(in_parts=self.exports % 4 < 2)

    def export(self, in_parts: bool = False, confirm: bool | None = None) -> None:
        """Export presence pieces to `pieces`; every other export is left unconfirmed, as when
        a write fails, so the next one sends those pieces again. Confirmed ones let live state
        evict what history holds. `in_parts`: one device a part, a part after every other op
        that follows."""
        self.export_part(until_done=True)
        self.exports += 1
        confirm = bool(self.exports % 2) if confirm is None else confirm
        if not in_parts:
            self.cluster.export_history(self.now, self.write, confirm)
            return
        for user in self.cluster.users.values():
            mark, parts = user.history_export_parts(self.now, 1)
            rows = next(parts)  # what the export owes is decided here, before any op in between
            self.in_parts.append((user, mark, rows, parts, confirm))

    def export_part(self, until_done: bool = False) -> None:
        """The next part of the export in parts (all of them, `until_done`)."""
        left = []
        for user, mark, rows, parts, confirm in self.in_parts:
            for part in parts:
                rows += part
                if not until_done:
                    left.append((user, mark, rows, parts, confirm))
                    break
            else:
                self.write(rows)
                if confirm:
                    user.history_confirm(mark)
                    user.evict(self.now)
        self.in_parts = left

    def write(self, rows: list) -> None:
        for device, day, place, start, lo, hi in rows:
            self.pieces[(device, day, place, start)] = (lo, hi)

    def stored(self, key: int, day: int) -> list[tuple]:
        """What history holds of a device on a day, as `HistoryStore.dwell_pieces` gives it."""
        return [
            (place, start, lo, hi)
            for (device, d, place, start), (lo, hi) in self.pieces.items()
            if device == key and d == day
        ]

    def history_minutes(self, res: int) -> dict[tuple, int]:
        """Minute aggregates as history derives them from the pieces (cells at `res`)."""
        sets: dict[tuple, set[int]] = {}
        for (device, _, place, _), (lo, hi) in self.pieces.items():
            key = place if isinstance(place, str) else parent(place, res)
            for m in range(lo - lo % 60_000, hi, 60_000):
                sets.setdefault((key, m), set()).add(device)
        return {k: len(v) for k, v in sets.items()}

    def history_dwell(self, key: int, day: int) -> dict:
        out: dict = {"cells": {}, "spaces": {}}
        for (device, d, place, _), (lo, hi) in self.pieces.items():
            if device == key and d == day and hi > lo:
                side = out["spaces" if isinstance(place, str) else "cells"]
                side[place] = side.get(place, 0) + hi - lo
        return out

    def op_snapshot(self) -> None:
        self.in_parts = []  # a restarted shard answers no export it had begun
        state = msgpack.unpackb(msgpack.packb(self.cluster.snapshot()), strict_map_key=False)
        self.cluster = new_cluster()
        self.cluster.restore(state)

    def op_rebuild(self) -> None:
        self.cluster.rebuild_views()

    def op_check(self) -> None:
        self.cluster.advance(self.now)
        self.cluster.fold_doors(self.now)
        check_live(self.cluster, self.oracle, self.now)


def check_live(cluster: LocalCluster, oracle: Oracle, now: int) -> None:
    for res in (9, 7, 6, 5, 2):
        assert cluster.heatmap(res, None) == oracle.counts(res, now, now), res
    box = BBox(*BBOX_C0)
    assert cluster.heatmap(9, box) == oracle.heatmap(9, BBOX_C0, now, now)
    for n, res in ((1, 9), (3, 9), (10, 7), (2, 5), (3, 3)):
        assert cluster.top(n, res) == oracle.top_n(n, res, now, now), (n, res)
    assert cluster.top(2, 9, box) == oracle.top_n(2, 9, now, now, BBOX_C0)
    for space in POLYGON_SPACES:
        assert cluster.space_count(space, now) == oracle.space_occupancy(space, now, now), space
    for space in DOOR_SPACES:
        assert cluster.space_count(space, now) == oracle.door_count(space, now, now), space


def check_all(cluster: LocalCluster, oracle: Oracle, now: int, stored=None) -> None:
    check_live(cluster, oracle, now)
    for cell in {c for res in (9, 5) for c in oracle.counts(res, now, now)}:
        assert cluster.cell_count(cell) == oracle.occupancy(cell, now, now)
    counter = next(iter(cluster.doors.values()))
    for space in DOOR_SPACES:
        for t in range(T0 - 1_200_000, now + 60_000, GRID_MS):
            expected = oracle.door_count(space, t, now)
            try:
                assert cluster.door_count_at(space, t) == expected, (space, t)
            except BeyondHorizon:  # folded: history answers, summing these ranges
                assert history_door_count(counter, oracle, space, t) == expected, (space, t)
    for device in DEVICES:
        for day in (DAY0, DAY0 + DAY_MS):
            assert cluster.dwell(device, day, now, stored) == oracle.dwell(device, day, now)
            meters = cluster.distance(device, day)
            if meters is not None:  # live state holds the day (history's distance is SQL)
                assert meters == pytest.approx(
                    oracle.distance(device, day, day + DAY_MS, now), rel=1e-9, abs=1e-6
                )
    minutes, since = cluster.minute_counts(now), cluster.minute_horizon()
    for res in SPEC.minute_res:
        engine_res = {
            k: v for k, v in minutes.items() if isinstance(k[0], int) and resolution(k[0]) == res
        }
        expected = {k: v for k, v in oracle.minute_aggregates(res, now).items() if k[1] >= since}
        assert engine_res == expected, res
    engine_spaces = {k: v for k, v in minutes.items() if isinstance(k[0], str)}
    expected = {k: v for k, v in oracle.space_minute_aggregates(now).items() if k[1] >= since}
    assert engine_spaces == expected


def history_door_count(counter, oracle: Oracle, space: str, t: int) -> int:
    """A door count before the horizon as history computes it: every archived event summed
    over the ranges the counter names."""
    total = 0
    for sensor, lo, hi, sign in counter.ranges(space, t):
        total += sum(d * sign for _, s, ts, d in oracle.doors if s == sensor and lo <= ts <= hi)
    return max(0, total)


@given(workloads())
def test_engine_matches_oracle(workload):
    runner = Runner()
    runner.run(workload)
    check_all(runner.cluster, runner.oracle, runner.now, runner.stored)
    check_history(runner)
    # once every interval has ended, history holds all of presence: every minute agrees
    runner.now += SPEC.ttl_ms + 60_000
    runner.cluster.advance(runner.now)
    check_history(runner, every_minute=True)


def check_history(runner: Runner, every_minute: bool = False) -> None:
    runner.export()
    now, o = runner.now, runner.oracle
    # an open interval is exported up to `now` (not the instant `now` itself)
    upto = now + 60_000 if every_minute else now - now % 60_000
    for res in (*SPEC.minute_res, 8):
        got = {k: v for k, v in runner.history_minutes(res).items() if isinstance(k[0], int)}
        want = o.minute_aggregates(res, now)
        assert {k: v for k, v in got.items() if k[1] < upto} == {
            k: v for k, v in want.items() if k[1] < upto
        }, res
    got = {k: v for k, v in runner.history_minutes(9).items() if isinstance(k[0], str)}
    want = o.space_minute_aggregates(now)
    assert {k: v for k, v in got.items() if k[1] < upto} == {
        k: v for k, v in want.items() if k[1] < upto
    }
    for device in DEVICES:
        for day in (DAY0, DAY0 + DAY_MS):
            assert runner.history_dwell(runner.cluster.key(device), day) == o.dwell(
                device, day, now
            )


@given(workloads(max_size=50))
def test_snapshot_restore_gives_identical_answers(workload):
    runner = Runner()
    runner.run(workload)
    state = msgpack.packb(runner.cluster.snapshot())
    restored = new_cluster()
    restored.restore(msgpack.unpackb(state, strict_map_key=False))
    for later in (0, 45_000, 200_000):
        now = runner.now + later
        runner.cluster.advance(now)
        restored.advance(now)
        check_all(restored, runner.oracle, now, runner.stored)
        assert msgpack.packb(restored.snapshot()) == msgpack.packb(runner.cluster.snapshot())


def test_points_span_several_shards():
    cluster = new_cluster()
    from engine.cells import cell_of

    shards = {cluster.placement.cell_shard(cell_of(lat, lng, 9)) for lat, lng in POINTS}
    assert len(shards) >= 2
