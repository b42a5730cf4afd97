"""Randomized pings and door events over real gRPC; live state read back equals the oracle."""

import os
import random
import signal
import time

import pytest
import ray

from engine.cells import resolution
from engine.geo import BBox
from engine.pseudonym import pseudonym
from engine.timeutil import MINUTE_MS, day_of, minute_of
from protos import occupancy_pb2 as pb
from tests.workload import BBOX_C0, DOOR_SPACES, POINTS, POLYGON_SPACES

pytestmark = pytest.mark.integration

TTL = 120_000


@pytest.fixture(scope="module")
def spaces(live):
    start = int(time.time() * 1000) - 3_600_000
    for space, polygon in POLYGON_SPACES.items():
        live.engine.define_polygon_space(space, polygon)
        live.oracle.define_polygon_space(space, polygon)
    for target in (live.engine, live.oracle):
        for space in DOOR_SPACES:
            target.define_door_space(space)
        target.define_doorway("d-room", "room", "hall")
        target.define_doorway("d-front", "hall", None)
        target.install("s1", "d-front", start, "in")
        target.install("s2", "d-room", start, "out")
        target.install("s2", "d-front", start + 1_800_000, "in")  # moved half an hour ago
    return live


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


def assert_live_equals_oracle(live) -> None:
    now = converge(live)
    o, q = live.oracle, live.queries
    for res in (9, 7, 5):
        assert live.q(q.heatmap(res, None)) == o.counts(res, now, now), res
    assert live.q(q.top(5, 9)) == o.top_n(5, 9, now, now)
    assert live.q(q.top(3, 5)) == o.top_n(3, 5, now, now)
    assert live.q(q.top(4, 9, BBox(*BBOX_C0))) == o.top_n(4, 9, now, now, BBOX_C0)
    for cell in list(o.counts(9, now, now))[:5]:
        assert live.q(q.cell_count(cell)) == o.occupancy(cell, now, now)
    for space in POLYGON_SPACES:
        assert live.q(q.space_count(space)) == o.space_occupancy(space, now, now), space
    for space in DOOR_SPACES:
        assert live.q(q.space_count(space)) == o.door_count(space, now, now), space
        for back in (60_000, 300_000, 900_000):
            t = now - back
            assert live.q(q.space_count(space, t)) == o.door_count(space, t, now), (space, t)
    # dwell of devices no longer present is fixed; minute aggregates two minutes back are too
    day = day_of(now)
    for device in o.devices(now):
        if o.intervals(device, now)[-1][1] <= now:
            assert live.q(q.dwell(device, day)) == o.dwell(device, day, now), device
    horizon = minute_of(now) - 2 * MINUTE_MS
    minutes = live.q(q.minute_counts())
    engine_cells = {
        k: v
        for k, v in minutes.items()
        if isinstance(k[0], int) and resolution(k[0]) == 9 and k[1] < horizon
    }
    expected = {k: v for k, v in o.minute_aggregates(9, now).items() if k[1] < horizon}
    assert engine_cells == expected


@pytest.mark.parametrize("seed", [1, 2])
def test_random_pings_and_door_events(spaces, seed):
    live = spaces
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    pings = random_pings(rng, f"seed{seed}", 400, now)
    send_in_batches(live, rng, pings)
    events = [
        pb.DoorEvent(
            sensor_id=rng.choice(["s1", "s2", "s3"]),
            ts_ms=now - rng.randint(0, 900_000),
            direction=rng.choice([1, 1, -1]),
        )
        for _ in range(60)
    ]
    for i in range(0, len(events), 25):
        live.doors(events[i : i + 25])
    assert_live_equals_oracle(live)


def _kill(handle) -> int:
    pid = ray.get(handle.pid.remote())
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.parametrize("family", ["user", "cell"])
def test_sigkilled_shard_comes_back_with_every_acked_ping(spaces, family):
    live = spaces
    rng = random.Random(7 if family == "user" else 8)
    now = int(time.time() * 1000)
    pings = random_pings(rng, f"kill-{family}", 600, now)
    victim = live.queries.shards.handle(f"{family}-0")
    before = ray.get(victim.pid.remote())
    killed = []

    def maybe_kill(sent: int) -> None:
        if not killed and sent >= 200:
            time.sleep(1.2)  # let a checkpoint happen, so recovery replays only part of the WAL
            killed.append(_kill(victim))

    send_in_batches(live, rng, pings, maybe_kill)
    assert killed
    deadline = time.monotonic() + 30
    while True:
        try:
            after = ray.get(victim.pid.remote(), timeout=5)
            break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            assert time.monotonic() < deadline
    assert after != before
    if family == "user":
        assert ray.get(victim.stats.remote())["epoch"] >= 2
    assert_live_equals_oracle(live)


def test_a_restarted_cell_shard_lists_again_and_repairs_an_update_lost_meanwhile(spaces):
    live = spaces
    now = int(time.time() * 1000)
    send_in_batches(live, random.Random(9), random_pings(random.Random(9), "relist", 200, now))
    converge(live)
    victim = live.queries.shards.handle("cell-1")
    before = _kill(victim)
    deadline = time.monotonic() + 30
    while True:
        try:
            if ray.get(victim.pid.remote(), timeout=5) != before:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            assert time.monotonic() < deadline
    # what a user shard that had not heard of the restart sent to the dead incarnation after
    # the new one took its listing is lost; here the view loses a present device instead
    t = int(time.time() * 1000)
    placement = live.engine.topology.placement()
    secret = live.engine.topology.secret
    device = next(
        d
        for d in live.oracle.devices(t)
        if (c := live.oracle.cell_at(d, t, t)) is not None and placement.cell_shard(c) == "cell-1"
    )
    ray.get(victim.update.remote([(pseudonym(secret, device), (), 2**62)]))
    t = int(time.time() * 1000)
    assert live.q(live.queries.heatmap(9, None)) != live.oracle.counts(9, t, t)
    assert_live_equals_oracle(live)  # the second listing, 3 s after the restart, repairs it
