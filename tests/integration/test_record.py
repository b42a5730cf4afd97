"""A new ping attribute through the real log and the real archive: the record class, a check and
a migration are all it takes; the archive, the dead-letter rows and exports follow the record."""

import functools
import shutil
import time
from dataclasses import dataclass

import orjson
import pytest
import redis

from actors.archive import Archiver, DeadLetter, ping_columns
from clickhouse import schema
from clickhouse.backends import ChdbBackend
from clickhouse.store import HistoryStore
from engine.cells import cell_of
from engine.record import ARRIVAL, PingRecord, column
from state.redis_server import EmbeddedRedis
from state.wal import Wal

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
LAT, LNG = 52.66, -8.62


@dataclass(slots=True)
class WithAltitude(PingRecord):
    """The record with one more optional attribute, as a release adding it would have it."""

    altitude_m: dict[int, float] = column("altitude_m", "Float32", 0.0)


ALTITUDE = WithAltitude.columns()[-1]


@pytest.fixture
def parts(tmp_path, monkeypatch):
    # the shipped migrations, and the one a release adding the attribute would ship
    migrations = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, migrations)
    (migrations / "0100_altitude.sql").write_text(
        f"ALTER TABLE raw_pings ADD COLUMN IF NOT EXISTS {ALTITUDE.clickhouse} {ALTITUDE.type};\n"
    )
    monkeypatch.setattr(schema, "MIGRATIONS", migrations)
    server = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(server.start())
    backend = ChdbBackend(tmp_path / "ch")
    store = HistoryStore(backend, raw_days=400, aggregate_days=400)
    archiver = Archiver(client, store)
    wal = Wal(client, "user-0")
    wal.start_archive()
    yield client, store, archiver, wal
    backend.close()
    server.stop()


def _pings(record, devices: list[int], **optional) -> PingRecord:
    n = len(devices)
    times = [NOW - 1_000 * (n - i) for i in range(n)]
    cells = [cell_of(LAT, LNG, 9)] * n
    return record(devices, times, cells, [LAT] * n, [LNG] * n, **optional, now=NOW)


def test_the_raw_pings_table_has_every_column_of_the_record_with_its_type(parts):
    _, store, _, _ = parts
    table = dict(
        store.backend.rows(
            "SELECT name, type FROM system.columns WHERE table = 'raw_pings' "
            "AND database = currentDatabase()"
        )
    )
    wanted = {c.clickhouse: c.type for c in WithAltitude.columns()} | dict(ARRIVAL)
    assert table == wanted


def test_a_new_attribute_goes_from_the_log_into_history_and_its_exports(parts):
    _, store, archiver, wal = parts
    first = _pings(WithAltitude, [1, 2, 3], altitude_m={0: 12.5, 2: 40.0}, region={1: "eu"})
    wal.append(first.to_log())
    wal.append(_pings(WithAltitude, [4]).to_log())  # nobody carries it: not in the entry
    wal.append(_pings(PingRecord, [5], region={0: "us"}).to_log())  # logged before the release
    [(_, entry), *_] = wal.entries_after("0-0")
    assert WithAltitude.from_log(entry) == first
    convert = functools.partial(ping_columns, record=WithAltitude)
    assert archiver.archive_log(wal, "user-0", "pings", convert) == (5, False)
    rows = store.backend.rows("SELECT device, altitude_m, region FROM raw_pings ORDER BY device")
    assert rows == [(1, 12.5, ""), (2, 0.0, "eu"), (3, 40.0, ""), (4, 0.0, ""), (5, 0.0, "us")]
    exported = store.export("pings", NOW - 60_000, NOW + 1, "json").decode().splitlines()
    altitudes = {int(r["device"], 16): r["altitude_m"] for r in map(orjson.loads, exported)}
    assert altitudes == {1: 12.5, 2: 0.0, 3: 40.0, 4: 0.0, 5: 0.0}


def test_a_refused_row_is_dead_lettered_with_the_new_attribute_by_name(parts):
    client, store, archiver, wal = parts
    store.backend.execute("ALTER TABLE raw_pings ADD CONSTRAINT sane CHECK altitude_m < 9000")
    wal.append(_pings(WithAltitude, [1, 2], altitude_m={1: 10_000.0}).to_log())
    convert = functools.partial(ping_columns, record=WithAltitude)
    archiver.archive_log(wal, "user-0", "pings", convert)
    assert [d for (d,) in store.backend.rows("SELECT device FROM raw_pings")] == [1]
    [dead] = DeadLetter(client).entries()
    [row] = dead["data"]
    assert row["device"] == 2 and row["altitude_m"] == 10_000.0
