"""The archive against a real Redis and real ClickHouse (chDB): a backlog of ten years is written
whole; a row ClickHouse refuses goes to the dead-letter stream while every other row of its
block is archived; an outage's backlog spills to files and is archived once, in bounded rounds."""

import time

import pytest
import redis

from actors.archive import (
    DEADLETTER,
    MAX_ENTRIES,
    ROUND_ENTRIES,
    Archiver,
    ArchiveUnavailable,
    DeadLetter,
    intent_key,
    ping_columns,
    reconcile_spill,
    spill_range,
)
from actors.spill import Spill
from clickhouse.backends import ChdbBackend, Unreachable
from clickhouse.lake import Lake
from clickhouse.store import HistoryStore
from engine.cells import cell_of
from engine.record import PingRecord
from engine.timeutil import DAY_MS
from state.redis_server import EmbeddedRedis
from state.wal import PREFIX, Wal

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
LAT, LNG = 52.66, -8.62


@pytest.fixture
def parts(tmp_path):
    server = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(server.start())
    backend = ChdbBackend(tmp_path / "ch")
    store = HistoryStore(backend, raw_days=4_000, aggregate_days=4_000)
    dead = []
    archiver = Archiver(client, store, lambda kind, rows: dead.append((kind, rows)))
    wal = Wal(client, "user-0")
    wal.start_archive()
    yield client, store, archiver, wal, dead
    backend.close()
    server.stop()


def _entry(devices: list[int], times: list[int], region: dict[int, str] | None = None) -> dict:
    n = len(times)
    cells, lats, lngs = [cell_of(LAT, LNG, 9)] * n, [LAT] * n, [LNG] * n
    return PingRecord(devices, times, cells, lats, lngs, region=region or {}, now=NOW).to_log()


def test_ten_years_of_one_device_beside_other_devices_is_archived_whole(parts):
    client, store, archiver, wal, dead = parts
    decade = [NOW - k * 31 * DAY_MS for k in range(120, 0, -1)]
    wal.append(_entry([1, 2, 3], [NOW - 5_000, NOW - 4_000, NOW - 3_000]))
    wal.append(_entry([9] * 120, decade))
    wal.append(_entry([1, 2, 3], [NOW - 2_000, NOW - 1_000, NOW]))
    assert archiver.archive_log(wal, "user-0", "pings", ping_columns) == (126, False)
    assert store.ping_count() == 126
    assert len(store.path(9, 0, NOW + 1)) == 120
    assert wal.archived() == wal.entries_between("-", "+")[-1][0]
    assert dead == [] and len(DeadLetter(client)) == 0
    assert client.get(f"{PREFIX}:archiving:user-0") is None


def test_a_row_clickhouse_refuses_is_dead_lettered_and_the_rest_archived(parts):
    client, store, archiver, wal, dead = parts
    store.backend.execute("ALTER TABLE raw_pings ADD CONSTRAINT no_poison CHECK region != 'poison'")
    devices = list(range(100, 150))
    times = [NOW - 60_000 + i for i in range(50)]
    wal.append(_entry(devices, times, {17: "poison"}))
    wal.append(_entry([7, 8], [NOW - 1_000, NOW]))
    assert archiver.archive_log(wal, "user-0", "pings", ping_columns) == (52, False)
    assert store.ping_count() == 51
    archived = {d for (d,) in store.backend.rows("SELECT device FROM raw_pings")}
    assert archived == (set(devices) - {117}) | {7, 8}
    [entry] = DeadLetter(client).entries()
    assert entry["kind"] == "pings" and entry["shard"] == "user-0" and entry["rows"] == 1
    assert "VIOLATED_CONSTRAINT" in entry["error"]
    [row] = entry["data"]
    assert row["device"] == 117 and row["region"] == "poison"
    assert dead == [("pings", 1)]
    # a retry of the same range after a crash mid-way writes nothing twice
    first, last = wal.entries_between("-", "+")[0][0], wal.archived()
    client.set(f"{PREFIX}:archived:user-0", "0-0")
    client.set(f"{PREFIX}:archiving:user-0", f"{first} {last} halved")
    archiver.archive_log(wal, "user-0", "pings", ping_columns)
    assert store.ping_count() == 51
    assert client.xlen(DEADLETTER) == 2  # the refused row is reported again, nothing else


def test_presence_pieces_clickhouse_refuses_are_dead_lettered(parts):
    _, store, archiver, _, dead = parts
    store.backend.execute("ALTER TABLE presence ADD CONSTRAINT sane CHECK hi >= lo")
    day = NOW - NOW % DAY_MS
    good = [(1, day, 5, day + 10, day + 10, day + 20), (2, day, "mall", day, day, day + 5)]
    bad = [(3, day, 5, day + 30, day + 40, day + 35)]
    assert archiver.write_presence("user-0", good + bad, version=1) == 3
    assert store.dwell(1, day) == {"cells": {5: 10}, "spaces": {}}
    assert store.dwell(2, day) == {"cells": {}, "spaces": {"mall": 5}}
    assert store.dwell(3, day) == {"cells": {}, "spaces": {}}
    assert dead == [("presence", 1)]


def _archived_rows(store) -> tuple[int, int]:
    """Rows, and distinct log positions among them: equal when nothing was written twice."""
    [(rows, distinct)] = store.backend.rows(
        "SELECT count(), uniqExact(shard, wal_ms, wal_seq, idx) FROM raw_pings"
    )
    return rows, distinct


def test_an_outage_spills_the_backlog_to_files_and_catch_up_writes_every_row_once(parts, tmp_path):
    client, store, archiver, wal, _ = parts
    spill = Spill(tmp_path / "spill")
    real = store.backend
    store.backend = Unreachable(real)
    for k in range(MAX_ENTRIES + 50):
        wal.append(_entry([k, k + 1], [NOW - 10_000 + k, NOW - 10_000 + k]))
    with pytest.raises(ArchiveUnavailable):
        archiver.archive_log(wal, "user-0", "pings", ping_columns, spill=spill)
    begun = client.get(intent_key("user-0")).decode().split(" ")
    # the range being archived is spilled as it is, then the next one
    assert spill_range(client, wal, "user-0", spill) > 0
    assert [(r.first, r.last) for r in spill.ranges("user-0")] == [tuple(begun)]
    assert client.get(intent_key("user-0")) is None and wal.archived() == begun[1]
    assert spill_range(client, wal, "user-0", spill) > 0
    assert spill_range(client, wal, "user-0", spill) == 0  # nothing left in Redis
    assert wal.archived() == wal.entries_between("-", "+")[-1][0]
    # a crash after a file was written, before the mark moved: the mark is moved again
    wal.append(_entry([900], [NOW]))
    [(newest, entry)] = wal.entries_after(wal.archived())
    spill.write("user-0", [(newest, entry)])
    reconcile_spill(client, wal, "user-0", spill)
    assert wal.archived() == newest
    with pytest.raises(ArchiveUnavailable):  # still down: the files wait
        archiver.archive_log(wal, "user-0", "pings", ping_columns, spill=spill)
    store.backend = real
    wal.append(_entry([901], [NOW]))
    written, more = 0, True
    while more:
        n, more = archiver.archive_log(wal, "user-0", "pings", ping_columns, spill=spill)
        written += n
    assert written == 2 * (MAX_ENTRIES + 50) + 2
    assert _archived_rows(store) == (written, written)
    assert spill.ranges() == [] and wal.archived() == wal.entries_between("-", "+")[-1][0]


def test_a_spilled_range_archived_twice_is_written_once(parts, tmp_path):
    client, store, archiver, wal, _ = parts
    spill = Spill(tmp_path / "spill")
    wal.append(_entry([1, 2, 3], [NOW - 3, NOW - 2, NOW - 1]))
    spill_range(client, wal, "user-0", spill)
    [spilled] = spill.ranges()
    copy = spilled.path.read_bytes()
    assert archiver.archive_log(wal, "user-0", "pings", ping_columns, spill=spill) == (3, False)
    spilled.path.write_bytes(copy)  # a crash after the write, before the file went
    archiver.archive_log(wal, "user-0", "pings", ping_columns, spill=spill)
    assert _archived_rows(store) == (3, 3) and spill.ranges() == []


def test_catch_up_goes_in_bounded_rounds(parts):
    _, store, archiver, wal, _ = parts
    for k in range(ROUND_ENTRIES + 10):
        wal.append(_entry([k], [NOW - 20_000 + k]))
    assert archiver.archive_log(wal, "user-0", "pings", ping_columns) == (ROUND_ENTRIES, True)
    assert archiver.archive_log(wal, "user-0", "pings", ping_columns) == (10, False)
    assert _archived_rows(store) == (ROUND_ENTRIES + 10, ROUND_ENTRIES + 10)


def test_the_lake_gets_every_archived_range_once_and_a_failed_write_waits(parts, tmp_path):
    """Each range goes to the lake after the store; a retried range writes its files over
    themselves; a lake that cannot be written keeps the range waiting in Redis (the store's
    token drops what it already took on the retry)."""
    client, store, _, wal, _ = parts
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    lake = Lake(str(tmp_path / "lake"))
    written = []
    archiver = Archiver(client, store, lake=lake, on_lake=lambda *a: written.append(a))
    wal.append(_entry([1, 2, 3], [NOW - 3 * 3_600_000, NOW - 1_000, NOW]))  # two hours
    wal.append(_entry([4], [NOW - 500]))
    assert archiver.archive_log(wal, "user-0", "pings", ping_columns) == (4, False)
    assert [kind for kind, *_ in written] == ["pings"] and written[0][1] == 2  # files
    lake_rows = lake.read("pings", 0, NOW + 1)
    names = ", ".join(lake_rows.column_names)
    stored = store.backend.rows(f"SELECT {names} FROM raw_pings")
    assert sorted(tuple(r.values()) for r in lake_rows.to_pylist()) == sorted(
        tuple(list(v.items()) if isinstance(v, dict) else v for v in row) for row in stored
    )
    # a crash after the write: the same range again
    first, last = wal.entries_between("-", "+")[0][0], wal.archived()
    client.set(f"{PREFIX}:archived:user-0", "0-0")
    client.set(intent_key("user-0"), f"{first} {last}")
    archiver.archive_log(wal, "user-0", "pings", ping_columns)
    assert lake.read("pings", 0, NOW + 1).num_rows == 4 and store.ping_count() == 4
    # a lake that cannot be written: the next range waits, and is archived once it can be
    archiver.lake = Lake(str(tmp_path / "lake-2"))
    archiver.lake.root = str(blocked)  # a file where its directories should be
    wal.append(_entry([5], [NOW]))
    mark = wal.archived()
    with pytest.raises(ArchiveUnavailable, match="lake"):
        archiver.archive_log(wal, "user-0", "pings", ping_columns)
    assert wal.archived() == mark and client.get(intent_key("user-0")) is not None
    archiver.lake = lake
    assert archiver.archive_log(wal, "user-0", "pings", ping_columns) == (1, False)
    assert lake.read("pings", 0, NOW + 1).num_rows == 5 and store.ping_count() == 5
