"""The lake's files (clickhouse/lake.py) on a local disk: partitions by kind, date and hour of
event time, a retried range written over itself, periods read back exactly, a forgotten device
gone from every file, partitions past the retention swept."""

from datetime import UTC, datetime

import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from clickhouse.lake import HOUR_MS, Lake, block
from engine.record import PingRecord

T0 = int(datetime(2026, 3, 1, 22, 0, tzinfo=UTC).timestamp() * 1000)


def _pings(rows: list[tuple[int, int]]) -> dict[str, list]:
    """Ping columns as the archive makes them, of (device, ts) rows."""
    n = len(rows)
    return {
        "device": [d for d, _ in rows],
        "ts": [t for _, t in rows],
        "cell": [0x89195DA49A3FFFF] * n,
        "lat": [52.66] * n,
        "lng": [-8.63] * n,
        "accuracy_m": [5.0] * n,
        "region": ["ie"] * n,
        "attributes": [{"kind": "bus"} if i % 2 else {} for i in range(n)],
        "received": [t + 5 for _, t in rows],
        "shard": ["user-0"] * n,
        "wal_ms": [T0] * n,
        "wal_seq": [0] * n,
        "idx": list(range(n)),
    }


def test_block_has_the_raw_pings_columns_and_types():
    table = block("pings", _pings([(1, T0)]))
    assert tuple(table.column_names) == PingRecord.archive_columns()
    assert str(table.schema.field("device").type) == "uint64"
    assert str(table.schema.field("accuracy_m").type) == "float"
    # a value the Arrow path of the store leaves to JSON still makes a block
    odd = _pings([(1, T0)]) | {"lat": [float("nan")]}
    assert block("pings", odd).num_rows == 1


def test_files_are_partitioned_by_kind_date_and_hour_and_a_retry_overwrites(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    rows = [(1, T0 + 10), (2, T0 + HOUR_MS + 10), (3, T0 + 2 * HOUR_MS + 10)]  # 22h, 23h, 00h
    table = block("pings", _pings(rows))
    files, size = lake.write("pings", "user-0:1-0:9-0", table)
    assert files == 3 and size > 0
    assert lake.write("pings", "user-0:1-0:9-0", table) == (files, size)  # the same files
    names = [p.split("/lake/")[1] for p in lake.files("pings")]
    assert names == [
        "kind=pings/date=2026-03-01/hour=22/user-0_1-0_9-0.parquet",
        "kind=pings/date=2026-03-01/hour=23/user-0_1-0_9-0.parquet",
        "kind=pings/date=2026-03-02/hour=00/user-0_1-0_9-0.parquet",
    ]
    assert not list((tmp_path / "lake").rglob("*.tmp"))
    assert lake.read("pings", T0, T0 + 3 * HOUR_MS).num_rows == 3  # not doubled
    doors = {"sensor": ["s1"], "ts": [T0], "received": [T0], "direction": [-1],
             "shard": ["space-0"], "wal_id": [f"{T0}-0"]}  # fmt: skip
    lake.write("door_events", "space-0:1-0:1-0", block("door_events", doors))
    assert lake.read("door_events", T0, T0 + 1).to_pydict() == doors


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 5 * HOUR_MS), min_size=1, max_size=30),
    st.integers(0, 5 * HOUR_MS),
    st.integers(1, 5 * HOUR_MS),
)
def test_a_period_reads_exactly_its_rows(tmp_path_factory, offsets, lo, length):
    lake = Lake(str(tmp_path_factory.mktemp("lake")))
    half = len(offsets) // 2
    for token, part in (("u:1-0:2-0", offsets[:half]), ("u:3-0:4-0", offsets[half:])):
        if part:
            lake.write("pings", token, block("pings", _pings([(7, T0 + o) for o in part])))
    start, end = T0 + lo, T0 + lo + length
    table = lake.read("pings", start, end)
    got = sorted(table.column("ts").to_pylist()) if table is not None else []
    assert got == sorted(T0 + o for o in offsets if start <= T0 + o < end)


def test_forget_rewrites_the_files_that_hold_the_device(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("pings", "u:1-0:1-0", block("pings", _pings([(5, T0), (6, T0 + 1)])))
    lake.write("pings", "u:2-0:2-0", block("pings", _pings([(5, T0 + HOUR_MS)])))
    lake.write("pings", "u:3-0:3-0", block("pings", _pings([(6, T0 + 2)])))
    assert lake.forget(5) == 2
    devices = [
        d for p in lake.files("pings") for d in pq.read_table(p).column("device").to_pylist()
    ]
    assert sorted(devices) == [6, 6]
    assert len(lake.files("pings")) == 2  # the file that held only device 5 is gone
    assert lake.forget(5) == 0  # safe to repeat


def test_sweep_deletes_the_dates_past_retention(tmp_path):
    lake = Lake(str(tmp_path), retention_days=2)
    for day in range(5):
        t = T0 + day * 86_400_000
        lake.write("pings", f"u:{day}-0:{day}-0", block("pings", _pings([(1, t)])))
    now = T0 + 4 * 86_400_000
    assert lake.sweep(now) == 2  # 2026-03-01 and -02: older than 2 days before 2026-03-05 22h
    left = sorted({p.split("date=")[1][:10] for p in lake.files("pings")})
    assert left == ["2026-03-03", "2026-03-04", "2026-03-05"]
    assert lake.sweep(now) == 0
