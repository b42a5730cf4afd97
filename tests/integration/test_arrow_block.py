"""The Arrow insert path of chDB against the JSON one it shadows: the same rows stored, the same
blocks refused, and blocks it cannot write exactly left to JSON."""

import math
import threading
import time

import pytest

from clickhouse import arrow_block as ab
from clickhouse.backends import ChdbBackend
from clickhouse.store import HistoryStore
from engine.record import PingRecord

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
COLUMNS = PingRecord.archive_columns()


def _pings(n: int) -> dict[str, list]:
    rows = {
        "device": [(2**64 - 1 - i * 7_919) if i % 2 else i for i in range(n)],
        "ts": [NOW - 1_000 * i for i in range(n)],
        "cell": [617_700_169_958_293_503 + i for i in range(n)],
        "lat": [52.6 + i * 1e-5 for i in range(n)],
        "lng": [-8.7 - i * 1e-5 for i in range(n)],
        "accuracy_m": [0.0 if i % 3 else 4.5 for i in range(n)],
        "region": ["" if i % 5 else "eu-west é" for i in range(n)],
        "attributes": [{} if i % 4 else {"k": "v", "ü": "\"x'"} for i in range(n)],
        "received": [NOW] * n,
        "shard": ["user-0"] * n,
        "wal_ms": [NOW] * n,
        "wal_seq": [i // 100 for i in range(n)],
        "idx": [i % 100 for i in range(n)],
    }
    return {name: rows[name] for name in COLUMNS}


def _json_only(monkeypatch) -> None:
    monkeypatch.setattr("clickhouse.backends.arrow_block", lambda *args: None)


def _stored(backend) -> list[tuple]:
    return backend.rows(f"SELECT {', '.join(COLUMNS)} FROM raw_pings ORDER BY wal_seq, idx")


def _write(tmp_path, name: str, columns: dict, token: str = "t") -> tuple[list, str]:
    backend = ChdbBackend(tmp_path / name)
    try:
        HistoryStore(backend).write_pings(columns, token)
        return _stored(backend), ""
    except Exception as exc:
        return [], str(exc).split("Code: ")[1].split(".")[0] if "Code: " in str(exc) else "?"
    finally:
        backend.close()


def test_raw_pings_are_stored_the_same_as_from_json(tmp_path, monkeypatch):
    columns = _pings(2_000)
    types = ChdbBackend(tmp_path / "types")
    HistoryStore(types)
    assert ab.arrow_block(COLUMNS, list(columns.values()), [
        types._column_types("raw_pings")[c] for c in COLUMNS
    ]) is not None  # fmt: skip  # the path under test is taken
    types.close()
    arrow, _ = _write(tmp_path, "arrow", columns)
    _json_only(monkeypatch)
    json, _ = _write(tmp_path, "json", columns)
    assert len(arrow) == 2_000
    assert arrow == json


def test_a_retried_block_is_deduplicated_by_its_token(tmp_path):
    backend = ChdbBackend(tmp_path / "ch")
    store = HistoryStore(backend)
    store.write_pings(_pings(100), "shard:1-0:2-0")
    store.write_pings(_pings(100), "shard:1-0:2-0")
    assert backend.rows("SELECT count() FROM raw_pings") == [(100,)]
    backend.close()


@pytest.mark.parametrize(
    "column, value",
    [
        ("ts", True),  # a bool in an integer column
        ("ts", 1.5),  # a float in an integer column
        ("ts", "12"),  # text in an integer column
        ("device", -1),  # out of range for UInt64
        ("device", 2**64),
        ("idx", 2**32),
        ("lat", math.nan),  # JSON writes null
        ("lat", "52.6"),
        ("attributes", {"k": 1}),  # a map of non-strings
        ("region", 7),
    ],
)
def test_a_block_arrow_cannot_write_exactly_goes_as_json(tmp_path, monkeypatch, column, value):
    columns = _pings(10)
    columns[column][3] = value
    types = ChdbBackend(tmp_path / "types")
    HistoryStore(types)
    t = types._column_types("raw_pings")
    assert ab.arrow_block(COLUMNS, list(columns.values()), [t[c] for c in COLUMNS]) is None
    types.close()
    arrow = _write(tmp_path, "arrow", columns)
    _json_only(monkeypatch)
    assert arrow == _write(tmp_path, "json", columns)


def test_known_clickhouse_types():
    assert ab.arrow_type("UInt64") == ab.pa.uint64()
    assert ab.arrow_type("LowCardinality(String)") == ab.pa.string()
    assert ab.arrow_type("Map(String, String)") == ab.pa.map_(ab.pa.string(), ab.pa.string())
    assert ab.arrow_type("Float32") == ab.pa.float32()
    assert ab.arrow_type("DateTime64(3)") is None
    assert ab.arrow_type("Nullable(Int64)") is None


def test_queries_and_inserts_from_several_threads_all_answer(tmp_path):
    """History inserts from its archive thread while queries run in others: every call must
    answer, with its own parameters (a chDB session shared by threads loses them, and an Arrow
    insert beside a query could hang both for good)."""
    backend = ChdbBackend(tmp_path)
    backend.execute("CREATE TABLE t (a UInt64, b Float64, s String) ENGINE = MergeTree ORDER BY a")
    inserts, queries, n = 150, 300, 500
    errors: list[BaseException] = []
    answers: list[int] = []

    def insert() -> None:
        for k in range(inserts):
            backend.insert_columns(
                "t", ["a", "b", "s"], [list(range(k * n, (k + 1) * n)), [0.5] * n, ["x"] * n]
            )

    def query(floor: int) -> None:
        for _ in range(queries):
            [(below,)] = backend.rows("SELECT count() FROM t WHERE a < {x:UInt64}", {"x": floor})
            answers.append(below)

    def guarded(work, *args) -> None:
        try:
            work(*args)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(insert,), daemon=True)]
    threads += [threading.Thread(target=guarded, args=(query, f), daemon=True) for f in (7, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)  # only a hang gets near this
    assert not any(t.is_alive() for t in threads), "a chDB call never returned"
    assert not errors, errors
    assert len(answers) == 2 * queries and set(answers) <= {0, 7, 9}
    assert backend.rows("SELECT count(), uniqExact(a) FROM t") == [(inserts * n, inserts * n)]


def test_the_archive_block_is_the_one_chdb_reads(tmp_path, monkeypatch):
    """The archive builds raw pings as Arrow once (`lake.exact_block`) for the lake and the
    store: it has the table's types, so chDB takes it as given, and stores what it would
    have built itself."""
    from clickhouse.lake import exact_block

    store = HistoryStore(ChdbBackend(tmp_path))
    columns = _pings(300)
    block = exact_block("pings", columns)
    assert block is not None
    built = []
    real = ab.arrow_block
    monkeypatch.setattr("clickhouse.backends.arrow_block", lambda *a: built.append(1) or real(*a))
    store.write_pings(columns, "t1", block)
    assert built == []  # the given block, not a second one
    store.write_pings(columns, "t2")
    assert built == [1]
    rows = store.backend.rows("SELECT * FROM raw_pings ORDER BY ALL")
    assert len(rows) == 600 and rows[0::2] == rows[1::2]  # each row twice, the same
    store.backend.close()
