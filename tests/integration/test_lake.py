"""The lake in the running engine (real Ray, Redis, chDB, gRPC and HTTP): the archive writes
raw pings and door events to Parquet files; `occupancy replay --lake` rebuilds a period's
history tables from them, row for row; forgetting a device leaves its key in no lake file."""

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import requests

from clickhouse.backends import CHDB_SUBDIR, ChdbBackend
from clickhouse.lake import Lake
from clickhouse.store import HistoryStore
from clients.history import NAME as HISTORY
from engine.pseudonym import pseudonym_str
from protos.occupancy.v1 import occupancy_pb2 as pb
from tests.workload import POINTS

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
DEVICES = [f"lake-dev-{i}" for i in range(8)]
SENSORS = ["lake-s1", "lake-s2"]
# far from every space and every other module's points: a forgotten device's presence stays
# (re-keyed) where a replay of raw pings has none, which other modules' checks do not expect
FAR = [(52.300, -8.300), (52.302, -8.301), (52.304, -8.302)]


def _history(live):
    return ray.get_actor(HISTORY, namespace=live.engine.topology.namespace)


def _settled(live) -> None:
    """History has archived every log entry (to the store and the lake)."""
    history = _history(live)
    deadline = time.monotonic() + 120
    while any(ray.get(history.status.remote())["archive_lag_ms"].values()):
        assert time.monotonic() < deadline, "history did not catch up"
        ray.get(history.snapshot.remote())
    ray.get(history.snapshot.remote())


def _lake(live) -> Lake:
    return Lake(live.engine.settings.lake())


def _replay(live, data_dir: Path, start: int, end: int) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OCC_DATA_DIR": str(data_dir),
        "OCC_REDIS_URL": live.engine.redis_url,  # the space definitions
        "OCC_LAKE_URL": live.engine.settings.lake(),
    }
    cmd = ["replay", "--lake", "--from", str(start), "--to", str(end)]
    return subprocess.run(
        [sys.executable, "-m", "occupancy.cli", *cmd],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _mine(rows: dict, devices: set[int]) -> dict:
    """The period's rows, presence restricted to `devices` (other modules' devices may have
    presence reaching into the period from pings before it)."""
    return {**rows, "presence": [r for r in rows["presence"] if r[0] in devices]}


def test_replay_from_the_lake_rebuilds_identical_history_rows(spaces, tmp_path):
    live = spaces
    rng = random.Random(18)
    now = int(time.time() * 1000)
    # a period six days back (within the pings' age limit) that no other module sends into
    start = now - 6 * 86_400_000
    start -= start % HOUR_MS
    end = start + 2 * HOUR_MS
    pings = [
        pb.Ping(device_id=d, ts_ms=start + rng.randint(0, 80 * 60_000), lat=lat, lng=lng)
        for d in DEVICES
        for lat, lng in rng.sample(POINTS, 6)
    ]
    rng.shuffle(pings)  # out of order: some arrive late
    for i in range(0, len(pings), 12):
        assert not live.send(pings[i : i + 12]).rejected
    events = [
        pb.DoorEvent(
            sensor_id=rng.choice(SENSORS),
            ts_ms=start + rng.randint(0, 119 * 60_000),
            direction=rng.choice([1, -1]),
        )
        for _ in range(30)
    ]
    assert not live.doors(events).rejections
    _settled(live)
    mine = {live.pseudonym(d) for d in DEVICES}
    recorded = _mine(ray.get(_history(live).period_rows.remote(start, end)), mine)
    assert len(recorded["raw_pings"]) >= len(pings)
    assert len(recorded["door_events"]) >= len(events)
    assert {r[0] for r in recorded["presence"]} == mine
    # the oracle: every ping sent is a raw row, each device's at the times it was sent
    sent = sorted((live.pseudonym(p.device_id), p.ts_ms) for p in pings)
    assert sorted((r[0], r[1]) for r in recorded["raw_pings"] if r[0] in mine) == sent
    lake = _lake(live)
    assert lake.files("pings", start, end) and lake.files("door_events", start, end)

    # an empty store (the history tables dropped), replayed twice: the second replay deletes
    # the period's raw rows and writes them again, and presence replaces itself
    for _ in range(2):
        out = _replay(live, tmp_path / "empty", start, end)
        assert out.returncode == 0, out.stderr
        store = HistoryStore(ChdbBackend(tmp_path / "empty" / CHDB_SUBDIR))
        try:
            rebuilt = _mine(store.period_rows(start, end), mine)
        finally:
            store.backend.close()
        assert rebuilt == recorded


def test_replay_refuses_a_period_without_bounds(live, tmp_path):
    env = {**os.environ, "OCC_DATA_DIR": str(tmp_path)}
    for args in (["--lake", "--from", "1"], ["--lake", "--from", "9", "--to", "5"], []):
        out = subprocess.run(
            [sys.executable, "-m", "occupancy.cli", "replay", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2, (args, out.stderr)


def test_forgetting_a_device_rewrites_the_lake_files_that_hold_it(live):
    person, neighbour = "lake-forget-me", "lake-neighbour"
    now = int(time.time() * 1000)
    pings = [
        pb.Ping(device_id=d, ts_ms=now - back, lat=lat, lng=lng)
        for d in (person, neighbour)
        for back, (lat, lng) in zip((240_000, 120_000, 10_000), FAR, strict=True)
    ]
    assert not live.send(pings).rejected
    old, other = live.pseudonym(person), live.pseudonym(neighbour)
    _settled(live)
    lake = _lake(live)

    def holding(device: int) -> list[str]:
        found = []
        for path in lake.files("pings"):
            devices = pq.read_table(path, columns=["device"], filesystem=lake.fs)
            if device in devices.column("device").to_pylist():
                found.append(path)
        return found

    assert holding(old) and holding(other)  # what is checked below is not empty to begin with
    r = requests.delete(
        f"{live.http}/v1/admin/devices/{quote(person, safe='')}",
        headers={"Authorization": f"Bearer {live.admin}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.json()["history"] == "done"
    live.oracle.forget(person, int(time.time() * 1000))
    # every value of every lake file: no trace of the key (nor of the raw id, never stored)
    for kind in ("pings", "door_events"):
        for path in lake.files(kind):
            table = pq.read_table(path, filesystem=lake.fs)
            for name in table.column_names:
                column = table.column(name)
                if pa.types.is_integer(column.type):
                    assert old not in column.to_pylist(), (path, name)
                elif pa.types.is_string(column.type):
                    text = " ".join(column.to_pylist())
                    assert pseudonym_str(old) not in text and person not in text, (path, name)
    assert holding(other)  # the neighbour's pings stay
