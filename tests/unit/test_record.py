"""The log record of pings: its log entries (both forms), its parts, its archive columns."""

from actors.archive import ping_columns
from engine.record import ARRIVAL, PingRecord
from state.wal import pack, unpack


def _record(**optional) -> PingRecord:
    return PingRecord([7, 8, 9], [10, 20, 30], [1, 2, 3], [0.1, 0.2, 0.3], [1.1, 1.2, 1.3],
                      **optional, now=99)  # fmt: skip


def test_a_log_entry_holds_the_optional_attributes_of_the_pings_that_carry_them():
    pings = _record(region={1: "eu"}, attributes={2: {"fleet": "bus"}}, trace={"tp": "x"})
    pings.version = 4
    entry = pings.to_log()
    assert "accuracy_m" not in entry and "version" not in entry and entry["now"] == 99
    back = PingRecord.from_log(unpack(pack(entry)))
    pings.version = None  # routing, not logged
    assert back == pings


def test_an_entry_of_the_earlier_form_reads_the_same():
    earlier = {"dev": [7, 8, 9], "ts": [10, 20, 30], "cell": [1, 2, 3], "lat": [0.1, 0.2, 0.3],
               "lng": [1.1, 1.2, 1.3], "now": 99,
               "extra": {1: [{}, 0.0, "eu"], 2: [{"fleet": "bus"}, 5.0, ""]}}  # fmt: skip
    want = _record(region={1: "eu"}, attributes={2: {"fleet": "bus"}}, accuracy_m={2: 5.0})
    assert PingRecord.from_log(unpack(pack(earlier))) == want


def test_a_part_keeps_each_pings_attributes():
    part = _record(region={0: "a", 2: "c"}).take([2, 1])
    assert part.dev == [9, 8] and part.ts == [30, 20] and part.region == {0: "c"}
    assert part.now == 99 and len(part) == 2


def test_the_archive_columns_are_the_records_then_the_arrival_columns():
    names = [c.clickhouse for c in PingRecord.columns()]
    assert PingRecord.archive_columns() == (*names, *(name for name, _ in ARRIVAL))
    entries = [
        ("5-0", _record(accuracy_m={0: 3.5}).to_log()),
        ("6-1", {"control": "forget", "device": 7, "fresh": 1, "now": 100}),
        ("6-2", _record().take([2]).to_log()),
    ]
    columns, n = ping_columns("user-3", entries)
    assert n == 4 and list(columns) == list(PingRecord.archive_columns())
    assert columns["device"] == [7, 8, 9, 9] and columns["accuracy_m"] == [3.5, 0.0, 0.0, 0.0]
    assert columns["attributes"] == [{}] * 4 and columns["region"] == [""] * 4
    assert columns["wal_ms"] == [5, 5, 5, 6] and columns["wal_seq"] == [0, 0, 0, 2]
    assert columns["idx"] == [0, 1, 2, 0] and columns["shard"] == ["user-3"] * 4
    assert columns["received"] == [99] * 4
