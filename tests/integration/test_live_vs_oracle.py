"""Randomized pings and door events over real gRPC; live state read back equals the oracle."""

import os
import random
import signal
import time

import pytest
import ray

from engine.timeutil import day_of
from protos.occupancy.v1 import occupancy_pb2 as pb
from tests.integration.checks import (
    assert_live_equals_oracle,
    converge,
    random_pings,
    send_in_batches,
)

pytestmark = pytest.mark.integration


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
    victim = {"user": live.queries.users, "cell": live.queries.cells}[family].handle(f"{family}-0")
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
    victim = live.queries.cells.handle("cell-1")
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
    device = next(
        d
        for d in live.oracle.devices(t)
        if (c := live.oracle.cell_at(d, t, t)) is not None and placement.cell_shard(c) == "cell-1"
    )
    ray.get(victim.update.remote([(live.pseudonym(device), (), 2**62)]))
    t = int(time.time() * 1000)
    assert live.q(live.queries.heatmap(9, None)) != live.oracle.counts(9, t, t)
    assert_live_equals_oracle(live)  # the second listing, 3 s after the restart, repairs it


def test_devices_that_left_leave_memory_and_every_answer_stays_exact(spaces):
    """Devices whose presence ended before the live minute window are evicted once history
    holds them: their dwell comes from history, a late ping stays late and a delayed one
    still cuts their last stay short, against the oracle."""
    live = spaces
    now = int(time.time() * 1000)
    gone = [f"gone-{i}" for i in range(30)]
    lat, lng = 52.660, -8.630
    # present from 5 min ago for 2 min (TTL), then nothing: past the 1-minute live window
    first = [
        pb.Ping(device_id=d, ts_ms=now - 300_000 + i, lat=lat, lng=lng) for i, d in enumerate(gone)
    ]
    shards = [live.queries.users.handle(n) for n in live.queries.users.names()]

    def watermarks() -> int:
        return sum(ray.get(s.stats.remote())["watermarks"] for s in shards)

    before = watermarks()
    live.send(first)
    deadline = time.monotonic() + 60
    while watermarks() < before + len(gone):
        assert time.monotonic() < deadline, "the departed devices were never evicted"
        time.sleep(0.5)
    day = day_of(now - 300_000)
    for d in gone[:10]:
        t = int(time.time() * 1000)
        assert live.q(live.queries.dwell(live.pseudonym(d), day)) == live.oracle.dwell(d, day, t), d
    # a duplicate of an evicted device is late; a delayed ping dated 30 s after its first cuts
    # its stay short (it left the cell then), from a device that was in memory no more
    ack = live.send([pb.Ping(device_id=gone[0], ts_ms=now - 300_000, lat=lat, lng=lng)])
    assert (ack.accepted, ack.late) == (0, 1)
    ack = live.send([pb.Ping(device_id=gone[1], ts_ms=now - 270_000, lat=52.67, lng=-8.60)])
    assert ack.accepted == 1
    t = int(time.time() * 1000)
    assert live.q(live.queries.dwell(live.pseudonym(gone[1]), day)) == live.oracle.dwell(
        gone[1], day, t
    )
    assert_live_equals_oracle(live)
