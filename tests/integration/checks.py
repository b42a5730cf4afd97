"""Checks shared by the integration tests: random workloads and live state against the oracle."""

import random
import time

from engine.cells import resolution
from engine.geo import BBox
from engine.timeutil import MINUTE_MS, day_of, minute_of
from protos.occupancy.v1 import occupancy_pb2 as pb
from tests.workload import BBOX_C0, DOOR_SPACES, POINTS, POLYGON_SPACES

TTL = 120_000
DWELL_SAMPLE = 40  # devices whose dwell is compared in each check (a new sample each time)


def random_pings(rng: random.Random, prefix: str, n: int, now: int) -> list[pb.Ping]:
    """Pings whose presence does not change for a minute after `now`: fresh ones (present for
    at least 60 s more), stale ones (already expired), late ones and duplicates."""
    last: dict[str, int] = {}
    out = []
    devices = [f"{prefix}-{i}" for i in range(max(3, n // 6))]
    for _ in range(n):
        device = rng.choice(devices)
        lat, lng = rng.choice(POINTS)
        kind = rng.random()
        if device in last and kind < 0.15:
            ts = last[device] - rng.randint(0, 5_000)  # late or duplicate
        elif kind < 0.35:
            ts = now - rng.randint(TTL + 5_000, 6 * TTL)  # stale
        else:
            ts = now - rng.randint(0, 60_000)  # fresh
        last[device] = max(ts, last.get(device, 0))
        out.append(pb.Ping(device_id=device, ts_ms=ts, lat=lat, lng=lng))
    return out


def send_in_batches(live, rng: random.Random, pings: list[pb.Ping], on_batch=None) -> None:
    i = 0
    while i < len(pings):
        size = rng.randint(1, 120)
        live.send(pings[i : i + size])
        i += size
        if on_batch:
            on_batch(i)


def _views_match(live, now: int) -> bool:
    o, q = live.oracle, live.queries
    if live.q(q.heatmap(9, None)) != o.counts(9, now, now):
        return False
    return all(
        live.q(q.space_count(space)) == o.space_occupancy(space, now, now)
        for space in POLYGON_SPACES
    )


def converge(live, timeout_s: float = 15.0) -> int:
    """Wait until the cell and space views equal the oracle: membership updates travel to
    cell and space shards asynchronously, each at its own pace."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = int(time.time() * 1000)
        if _views_match(live, now) or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def agree(live_answer, oracle_answer, what, timeout_s: float = 15.0) -> None:
    """`live_answer()` equals `oracle_answer(now)` for a `now` read just before the engine
    answered. Devices keep expiring (those of earlier tests too) and the engine learns of an
    expiry a tick later, so an answer read across an expiry is read again; a real difference
    persists until the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = int(time.time() * 1000)
        engine = live_answer()
        expected = oracle_answer(now)
        if engine == expected:
            return
        if time.monotonic() > deadline:
            diff = _diff(engine, expected) if isinstance(engine, dict) else (engine, expected)
            raise AssertionError((what, diff))
        time.sleep(0.1)


def assert_live_equals_oracle(live) -> None:
    now = converge(live)
    o, q = live.oracle, live.queries
    for res in (9, 7, 5):
        agree(lambda r=res: live.q(q.heatmap(r, None)), lambda t, r=res: o.counts(r, t, t), res)
    agree(lambda: live.q(q.top(5, 9)), lambda t: o.top_n(5, 9, t, t), "top 5 at 9")
    agree(lambda: live.q(q.top(3, 5)), lambda t: o.top_n(3, 5, t, t), "top 3 at 5")
    agree(
        lambda: live.q(q.top(4, 9, BBox(*BBOX_C0))),
        lambda t: o.top_n(4, 9, t, t, BBOX_C0),
        "top 4 in a bbox",
    )
    for cell in list(o.counts(9, now, now))[:5]:
        agree(lambda c=cell: live.q(q.cell_count(c)), lambda t, c=cell: o.occupancy(c, t, t), cell)
    for space in POLYGON_SPACES:
        agree(
            lambda s=space: live.q(q.space_count(s)),
            lambda t, s=space: o.space_occupancy(s, t, t),
            space,
        )
    for space in DOOR_SPACES:
        assert live.q(q.space_count(space)) == o.door_count(space, now, now), space
        for back in (60_000, 300_000, 900_000):
            t = now - back
            assert live.q(q.space_count(space, t)) == o.door_count(space, t, now), (space, t)
    # dwell of devices no longer present is fixed; minute aggregates two minutes back are too
    day = day_of(now)
    gone = [
        d
        for d in o.devices(now)
        if not o.forgotten(d) and (iv := o.intervals(d, now)) and iv[-1][1] <= now
    ]
    for device in random.Random(now).sample(gone, min(len(gone), DWELL_SAMPLE)):
        assert live.q(q.dwell(live.pseudonym(device), day)) == o.dwell(device, day, now), device
    # live state holds the minutes of its live window (history the ones before)
    horizon = minute_of(now) - 2 * MINUTE_MS
    since, minutes = live.q(q.minute_counts())
    engine_cells = {
        k: v
        for k, v in minutes.items()
        if isinstance(k[0], int) and resolution(k[0]) == 9 and k[1] < horizon
    }
    expected = {k: v for k, v in o.minute_aggregates(9, now).items() if since <= k[1] < horizon}
    assert engine_cells == expected


def _diff(engine: dict, oracle: dict) -> dict:
    """{key: (engine's value, oracle's value)} where they differ."""
    return {
        k: (engine.get(k), oracle.get(k))
        for k in engine.keys() | oracle.keys()
        if engine.get(k) != oracle.get(k)
    }
