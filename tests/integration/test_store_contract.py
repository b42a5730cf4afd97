"""The history store's contract, on every backend that can run here: embedded chDB always, a
ClickHouse server when OCC_TEST_CLICKHOUSE_URL points at one (same SQL, same answers)."""

import csv
import io
import os
import time

import orjson
import pytest
from h3.api import basic_int as h3i

from clickhouse.backends import ChdbBackend, ServerBackend
from clickhouse.schema import MIGRATIONS, migrate, statements
from clickhouse.store import HistoryStore
from engine.audit import FIELDS, record
from engine.cells import cell_of, parent
from engine.geo import BBox, haversine_m
from engine.history import pieces
from engine.timeutil import DAY_MS, EARLIEST_MS, LATEST_MS, MINUTE_MS, day_of

pytestmark = pytest.mark.integration

SERVER = os.environ.get("OCC_TEST_CLICKHOUSE_URL", "")


@pytest.fixture(params=["chdb", "server"])
def store(request, tmp_path):
    if request.param == "server":
        if not SERVER:
            pytest.skip("no ClickHouse server (set OCC_TEST_CLICKHOUSE_URL)")
        backend = ServerBackend(SERVER)
        for view in ("cell_minutes", "space_minutes", "dwell_daily"):
            backend.execute(f"DROP VIEW IF EXISTS {view}")
        for table in (
            "raw_pings", "presence", "door_events", "query_audit", "audit", "schema_migrations"
        ):  # fmt: skip
            backend.execute(f"DROP TABLE IF EXISTS {table}")
    else:
        backend = ChdbBackend(tmp_path / "ch")
    s = HistoryStore(backend, raw_days=60, aggregate_days=400)
    yield s
    backend.close()


NOW = (int(time.time() * 1000) // MINUTE_MS) * MINUTE_MS
A = cell_of(52.66, -8.62, 9)
B = cell_of(52.67, -8.60, 9)


def _ping(device, ts, lat, lng, wal_ms, idx, attrs=None) -> dict:
    return {"device": device, "ts": ts, "received": wal_ms, "lat": lat, "lng": lng,
            "cell": cell_of(lat, lng, 9), "accuracy_m": 0.0, "region": "",
            "attributes": attrs or {}, "shard": "user-0", "wal_ms": wal_ms, "wal_seq": 0,
            "idx": idx}  # fmt: skip


def _columns(rows: list[dict]) -> dict[str, list]:
    return {name: [row[name] for row in rows] for name in rows[0]}


def _ddl(store, table: str) -> str:
    return store.backend.rows(
        "SELECT create_table_query FROM system.tables WHERE name = {t:String} "
        "AND database = currentDatabase()",
        {"t": table},
    )[0][0]


def test_migrations_apply_once_and_retention_follows_settings(store):
    assert migrate(store.backend, 30, 400, 90) == []  # nothing new the second time
    assert "toIntervalDay(30)" in _ddl(store, "raw_pings")
    assert "toIntervalDay(90)" in _ddl(store, "audit")
    assert "toIntervalDay(400)" in _ddl(store, "door_events")


def test_presence_pieces_give_minute_counts_dwell_and_latest_wins(store):
    noon = day_of(NOW) - DAY_MS // 2  # yesterday, 12:00 UTC
    rows = pieces(1, (A, "mall"), noon - 90_000, noon + 30_000) + pieces(2, (B,), noon, noon + 10)
    store.write_presence(rows, version=1)
    store.write_presence(rows, version=1)  # a retried snapshot
    assert store.minute_counts(9, noon + 5) == {A: 1, B: 1}
    coarse: dict[int, int] = {}
    for cell in (A, B):
        coarse[parent(cell, 7)] = coarse.get(parent(cell, 7), 0) + 1
    assert store.minute_counts(7, noon) == coarse
    assert store.space_count("mall", noon - MINUTE_MS) == 1
    assert store.top(1, 9, noon, BBox(-180, -90, 180, 90)) == [(A, 1)]  # a tie: lower id first
    # device 1's interval is cut short by a newer version: it left A before noon
    store.write_presence(pieces(1, (A, "mall"), noon - 90_000, noon - 1_000), version=2)
    assert store.minute_counts(9, noon) == {B: 1}
    assert store.dwell(1, day_of(noon)) == {"cells": {A: 89_000}, "spaces": {"mall": 89_000}}
    assert store.dwell(2, day_of(noon)) == {"cells": {B: 10}, "spaces": {}}


def test_aggregate_views_agree_with_the_store(store):
    noon = day_of(NOW) - DAY_MS // 2
    store.write_presence(
        pieces(1, (A, "mall"), noon - 90_000, noon + 30_000) + pieces(2, (B,), noon, noon + 10)
        + pieces(3, (A,), noon - DAY_MS // 2 - 30_000, noon - DAY_MS // 2 + 30_000),  # midnight
        version=1,
    )  # fmt: skip
    period = {"start": day_of(noon) - DAY_MS, "end": noon + DAY_MS}
    cells = store.backend.rows(
        "SELECT cell, minute, devices FROM cell_minutes(start = {start:Int64}, end = {end:Int64})",
        period,
    )
    by_minute: dict[int, dict[int, int]] = {}
    for cell, minute, devices in cells:
        by_minute.setdefault(int(minute), {})[int(cell)] = int(devices)
    assert set(by_minute) == {
        noon - 2 * MINUTE_MS, noon - MINUTE_MS, noon,
        noon - DAY_MS // 2 - MINUTE_MS, noon - DAY_MS // 2,
    }  # fmt: skip
    for minute, counts in by_minute.items():
        assert store.minute_counts(9, minute) == counts
    spaces = store.backend.rows(
        "SELECT space, minute, devices FROM space_minutes(start = {start:Int64}, end = {end:Int64})"
        " ORDER BY minute",
        period,
    )
    assert [(s, int(m), int(n)) for s, m, n in spaces] == [
        ("mall", noon - 2 * MINUTE_MS, 1), ("mall", noon - MINUTE_MS, 1), ("mall", noon, 1)
    ]  # fmt: skip
    dwell = store.backend.rows(
        "SELECT device, day, cell, space, ms FROM dwell_daily(start = {start:Int64}, "
        "end = {end:Int64}) ORDER BY device, day, space",
        period,
    )
    midnight = day_of(noon)
    assert [tuple(int(x) if not isinstance(x, str) else x for x in r) for r in dwell] == [
        (1, midnight, A, "", 120_000), (1, midnight, 0, "mall", 120_000),
        (2, midnight, B, "", 10),
        (3, midnight - DAY_MS, A, "", 30_000), (3, midnight, A, "", 30_000),
    ]  # fmt: skip
    # the exports read the same views, in every format
    for what in ("cells", "spaces", "dwell"):
        for fmt in ("csv", "json", "parquet", "arrow"):
            assert store.export(what, period["start"], period["end"], fmt)
    dwell_csv = store.export("dwell", period["start"], period["end"], "csv").decode()
    assert dwell_csv.splitlines()[1:3] == [
        f'"0000000000000001",{midnight},"{A:016x}",0,120',
        f'"0000000000000001",{midnight},"mall",1,120',
    ]


def test_raw_pings_dedup_path_distance_devices_and_export(store):
    t = NOW - 10 * MINUTE_MS
    rows = [
        _ping(7, t, 52.66, -8.62, t, 0, {"fleet": "bus"}),
        _ping(7, t + 60_000, 52.67, -8.60, t + 60_000, 0),
        _ping(7, t + 30_000, 52.60, -8.50, t + 70_000, 0),  # arrives after a newer one: late
        _ping(8, t + 5_000, 52.66, -8.62, t + 5_000, 0),
    ]
    store.write_pings(_columns(rows), "user-0:a:b")
    store.write_pings(_columns(rows), "user-0:a:b")  # retried: deduplicated by its token
    assert store.ping_count() == 4
    assert store.path(7, t, t + DAY_MS) == [(t, 52.66, -8.62), (t + 60_000, 52.67, -8.60)]
    meters = store.distance(t, t + DAY_MS)
    assert meters[7] == pytest.approx(haversine_m(52.66, -8.62, 52.67, -8.60), rel=1e-12)
    assert meters[8] == 0.0
    assert set(store.distance(t, t + DAY_MS, {"fleet": "bus"})) == {7}
    found, truncated = store.devices_in_area(t, t + DAY_MS, BBox(-8.63, 52.65, -8.61, 52.665))
    assert found == [(7, t, t), (8, t + 5_000, t + 5_000)] and not truncated
    found, truncated = store.devices_in_area(t, t + DAY_MS, BBox(-9, 52, -8, 53), limit=1)
    assert len(found) == 1 and truncated
    text = store.export("pings", t, t + DAY_MS, "csv").decode()
    table = list(csv.DictReader(io.StringIO(text)))
    assert {r["device"] for r in table} == {f"{7:016x}", f"{8:016x}"} and len(table) == 4
    assert store.export("pings", t, t + DAY_MS, "parquet")[:4] == b"PAR1"


def test_minute_levels_and_floored_answers(store):
    noon = day_of(NOW) - DAY_MS // 2
    c8 = parent(A, 8)
    a, b, c = h3i.cell_to_children(c8, 9)[:3]
    rows = pieces(1, (a,), noon, noon + 10_000) + pieces(1, (b,), noon + 10_000, noon + 20_000)
    rows += pieces(2, (a,), noon, noon + 5_000) + pieces(3, (c,), noon, noon + 5_000)
    rows += pieces(4, (B,), noon, noon + 5_000)
    store.write_presence(rows, version=1)
    levels = store.minute_levels(7, 9, noon)
    assert levels == {r: store.minute_counts(r, noon) for r in (7, 8, 9)}
    assert levels[9] == {a: 2, b: 1, c: 1, B: 1} and levels[8][c8] == 3
    assert store.minute_levels(8, 9, noon, c8) == {8: {c8: 3}, 9: {a: 2, b: 1, c: 1}}
    # k = 2: `a` shows 2; under c8, b and c hide 2 devices, but one of them is also in `a`
    everywhere = BBox(-180, -90, 180, 90)
    assert store.floored_heatmap(9, 9, noon, everywhere, 2) == {a: 2}
    assert store.floored_heatmap(8, 9, noon, everywhere, 2) == {c8: 2}
    assert store.floored_top(5, 8, 9, noon, everywhere, 2) == [(c8, 2)]
    assert store.floored_cell(c8, 9, noon, 2) == 2
    assert store.floored_cell(parent(c8, 7), 9, noon, 2) == 2
    assert store.floored_cell(B, 9, noon, 2) == 0
    # nothing hidden at k = 1, yet device 1 was in a and b during the minute: the parent
    # never reads less than its children shown (the API applies no floor below k = 2)
    assert store.minute_counts(8, noon)[c8] == 3 and store.floored_cell(c8, 9, noon, 1) == 4


def test_attribute_masks_group_devices_by_what_their_pings_carried(store):
    t = NOW - 10 * MINUTE_MS
    rows = [
        _ping(1, t, 52.66, -8.62, t, 0, {"fleet": "bus", "colour": "red"}),
        _ping(2, t, 52.66, -8.62, t, 0, {"fleet": "bus"}),
        _ping(2, t + 1_000, 52.66, -8.62, t + 1_000, 0, {"colour": "red"}),
        _ping(3, t, 52.66, -8.62, t, 0),
        _ping(4, t + 5_000, 52.66, -8.62, t + 5_000, 0, {"fleet": "bus"}),
        _ping(4, t + 1_000, 52.66, -8.62, t + 6_000, 0, {"colour": "red"}),  # late: not applied
    ]
    store.write_pings(_columns(rows), "user-0:m:n")
    attrs = {"fleet": "bus", "colour": "red"}  # bit 0: colour, bit 1: fleet (by key)
    masks = store.attribute_masks(t, t + MINUTE_MS, attrs)
    assert masks == {(3,): 1, (1, 2): 1, (0,): 1, (2,): 1}
    assert store.attribute_masks(t, t + MINUTE_MS, {}) == {(0,): 4}


def test_parameters_carry_user_input_as_values_only(store):
    hostile = "x' OR 1=1; DROP TABLE raw_pings; --"
    assert store.space_count(hostile, NOW) == 0
    assert store.distance(NOW, NOW + 1, {hostile: hostile}) == {}
    assert store.attribute_masks(NOW, NOW + 1, {hostile: hostile}) == {}
    assert store.backend.rows("SELECT count() FROM raw_pings")[0][0] == 0


# strings a query parameter carries as they are: escaped text would end one at a tab or a
# newline, read `\N` as empty, `\x41` as "A", and refuse a trailing backslash
AWKWARD = ["a\tb", "a\nb", "a\\b", "\\N", "\\x41", "a\\", "\x16\u009b\U000e661a"]


@pytest.mark.parametrize("text", AWKWARD)
def test_string_parameters_match_exactly_what_was_written(store, text):
    t = NOW - 10 * MINUTE_MS
    rows = [_ping(7, t, 52.66, -8.62, t, 0, {text: text}), _ping(8, t, 52.66, -8.62, t, 1)]
    store.write_pings(_columns(rows), "user-0:a:b")
    store.write_audit([_audit_row(t, "aaaaaaaaaaaa", text)], "audit:1-0:1-0")
    assert set(store.distance(t, t + 1, {text: text})) == {7}
    assert store.distance(t, t + 1, {text: text + "x"}) == {}
    assert store.attribute_masks(t, t + 1, {text: text}) == {(0,): 1, (1,): 1}
    assert [e["route"] for e in store.audit_entries(t, t + 1, route=text)] == [text]
    assert store.audit_entries(t, t + 1, route=text[:-1] + "?") == []
    assert store.space_count(text, t) == 0


def _months_back(n: int) -> list[int]:
    """One time in each of the `n` months before now's (30.5 days apart, mid-month)."""
    return [NOW - k * 30 * DAY_MS - k * DAY_MS // 2 for k in range(1, n + 1)]


def test_a_block_spanning_ten_years_of_months_is_written_whole_and_once(store):
    # ClickHouse refuses an insert block that spans more than 100 partitions (months here);
    # rows beyond the retention are dropped on insert, so keep eleven years here
    migrate(store.backend, 4_000, 4_000)
    times = _months_back(120)[::-1]
    rows = [_ping(9, t, 52.66, -8.62, NOW, i) for i, t in enumerate(times)]
    store.write_pings(_columns(rows), "user-0:poison:1")
    store.write_pings(_columns(rows), "user-0:poison:1")  # retried: each month's part once
    store.write_pings(_columns(rows[::-1]), "user-0:poison:2")
    assert store.ping_count() == 240
    assert len(store.path(9, 0, NOW + 1)) == 120
    events = [("s1", t, NOW, 1, "space-0", "1-0") for t in times]
    store.write_door_events(events, "space-0:poison")
    store.write_door_events(events, "space-0:poison")
    assert store.door_event_count() == 120
    old = [p for t in times for p in pieces(9, (A, "mall"), t, t + 60_000)]
    assert store.write_presence(old, version=1) == 240
    assert store.dwell(9, day_of(times[0])) == {"cells": {A: 60_000}, "spaces": {"mall": 60_000}}


def test_dwell_pieces_give_the_latest_version_of_each_piece(store):
    day = day_of(NOW) - DAY_MS
    store.write_presence(pieces(5, (A, "mall"), day + 1_000, day + 9_000), version=1)
    store.write_presence(pieces(5, (A, "mall"), day + 1_000, day + 4_000), version=2)
    store.write_presence(pieces(6, (B,), day + 1_000, day + 2_000), version=2)
    assert sorted(store.dwell_pieces(5, day), key=str) == sorted(
        [
            (A, day + 1_000, day + 1_000, day + 4_000),
            ("mall", day + 1_000, day + 1_000, day + 4_000),
        ],
        key=str,
    )
    assert store.dwell_pieces(5, day + DAY_MS) == []


def test_door_sums_over_sensor_ranges(store):
    t = NOW - 10 * MINUTE_MS
    events = [("s1", t + i, NOW, 1, "space-0", f"1-{i}") for i in range(10)]
    events += [("s2", t + i, NOW, -1 if i % 2 else 1, "space-0", f"2-{i}") for i in range(10)]
    events += [("x' OR 1=1 --", t, NOW, 1, "space-0", "3-0")]
    store.write_door_events(events, "space-0:doors")
    assert store.door_sum([]) == 0
    assert store.door_sum([("s1", t, t + 4, 1)]) == 5
    assert store.door_sum([("s1", t, t + 4, -1), ("s1", t + 5, t + 9, 1)]) == 0
    assert store.door_sum([("s2", t, t + 9, 1), ("s1", t + 9, t + 100, 1)]) == 1
    assert store.door_sum([("x' OR 1=1 --", 0, NOW, 1)]) == 1


def test_forgetting_a_device_deletes_its_pings_and_rekeys_its_presence(store):
    noon = day_of(NOW) - DAY_MS // 2
    rows = [_ping(1, noon + i * 1_000, 52.66, -8.62, noon + i * 1_000, 0) for i in range(3)]
    store.write_pings(_columns([*rows, _ping(2, noon, 52.67, -8.60, noon, 1)]), "user-0:1-0:3-0")
    rows = pieces(1, (A, "mall"), noon - 90_000, noon + 30_000) + pieces(2, (A,), noon, noon + 10)
    store.write_presence(rows, version=1)
    store.write_presence(pieces(1, (A, "mall"), noon - 90_000, noon - 1_000), version=2)
    before = (store.minute_counts(9, noon - 60_000), store.space_count("mall", noon - 60_000))
    for _ in range(2):  # repeated after a failure: the same outcome
        store.forget_device(1, 99)
    assert store.device_rows(1) == {"raw_pings": 0, "presence": 0}
    assert store.path(1, noon - DAY_MS, noon + DAY_MS) == []
    assert len(store.path(2, noon - DAY_MS, noon + DAY_MS)) == 1
    assert (
        store.minute_counts(9, noon - 60_000),
        store.space_count("mall", noon - 60_000),
    ) == before
    assert store.dwell(99, day_of(noon)) == {"cells": {A: 89_000}, "spaces": {"mall": 89_000}}
    assert store.dwell(1, day_of(noon)) == {"cells": {}, "spaces": {}}


def _audit_row(ts: int, key_id: str, route: str, **fields) -> tuple:
    r = record(ts, "http", route, key_id=key_id, role="admin", method="GET", **fields)
    return tuple(orjson.dumps(r["params"]).decode() if f == "params" else r[f] for f in FIELDS)


def test_audit_records_are_written_once_per_token_and_read_newest_first(store):
    rows = [
        _audit_row(NOW - 3_000, "aaaaaaaaaaaa", "/v1/top", params={"n": "5"}, status=200),
        _audit_row(NOW - 2_000, "bbbbbbbbbbbb", "/v1/history/path/{device_id}",
                   params={"device_id": "00000000000000ab"}, rows=4),
        _audit_row(NOW - 1_000, "aaaaaaaaaaaa", "/v1/history/distance", status=503),
        _audit_row(NOW - 410 * DAY_MS, "aaaaaaaaaaaa", "/v1/top"),  # another month
    ]  # fmt: skip
    store.write_audit(rows, "audit:1-0:4-0")
    store.write_audit(rows, "audit:1-0:4-0")  # retried after its trim failed: nothing new
    entries = store.audit_entries(NOW - DAY_MS, NOW + 1)
    assert [e["ts"] for e in entries] == [NOW - 1_000, NOW - 2_000, NOW - 3_000]
    assert entries[1]["params"] == {"device_id": "00000000000000ab"} and entries[1]["rows"] == 4
    assert set(entries[0]) == set(FIELDS)
    mine = store.audit_entries(NOW - DAY_MS, NOW + 1, key_id="aaaaaaaaaaaa", limit=1)
    assert [e["route"] for e in mine] == ["/v1/history/distance"]
    history = store.audit_entries(NOW - DAY_MS, NOW + 1, route="/v1/history/")
    assert {e["key_id"] for e in history} == {"aaaaaaaaaaaa", "bbbbbbbbbbbb"}
    assert len(store.audit_entries(0, NOW + 1)) == 3  # the oldest is past the 400 days


# queries that fail while they run, each after writing part of its answer, and their error
FAILING = {
    "timeout": (
        "SELECT count() FROM numbers(100000000000) SETTINGS max_execution_time = 0.001",
        "TIMEOUT_EXCEEDED",
    ),
    "throw": ("SELECT number, throwIf(number = 200000) FROM numbers(300000)", "throwIf"),
}


@pytest.mark.parametrize("failing", FAILING)
@pytest.mark.parametrize("fmt", ["JSONCompact", "CSVWithNames", "Parquet"])
def test_a_query_that_fails_midway_leaves_nothing_to_the_next(store, failing, fmt):
    """chDB handed what a failed query had written to the session's next query, ahead of its
    own answer: a search past its `timeout_s` (a 504) made the next one unreadable (a 503)."""
    sql, error = FAILING[failing]
    t = NOW - 10 * MINUTE_MS
    store.write_pings(_columns([_ping(7, t, 52.66, -8.62, t, 0)]), "user-0:a:b")
    store.write_audit([_audit_row(t, "aaaaaaaaaaaa", "/v1/top")], "audit:1-0:1-0")
    answers = [
        lambda: store.devices_in_area(t, t + 1, None) == ([(7, t, t)], False),
        lambda: store.distance(t, t + 1) == {7: 0.0},
        lambda: [e["ts"] for e in store.audit_entries(t, t + 1)] == [t],
        lambda: store.export("pings", t, t + 1, "csv").decode().startswith('"device","ts"'),
    ]
    for answer in answers:
        with pytest.raises(Exception, match=error):
            store.backend.raw(sql, {}, fmt)
        assert answer()


def test_raw_searches_answer_over_every_span_the_api_accepts(store):
    """From the year 1 to 9999 (engine.timeutil), whatever the partitions' DateTime can hold:
    the same answers as over the day that holds the rows."""
    t = NOW - 10 * MINUTE_MS
    rows = [_ping(7, t, 52.66, -8.62, t, 0), _ping(7, t + 60_000, 52.67, -8.60, t + 60_000, 0)]
    store.write_pings(_columns(rows), "user-0:a:b")
    store.write_audit([_audit_row(t, "aaaaaaaaaaaa", "/v1/top")], "audit:1-0:1-0")
    box = BBox(-9, 52, -8, 53)
    day = (t - DAY_MS, t + DAY_MS)
    spans = [(EARLIEST_MS, LATEST_MS), (EARLIEST_MS, t + 60_001), (t, LATEST_MS)]
    for start, end in [*spans, (-(10**13), 10**13)]:
        assert store.devices_in_area(start, end, box) == store.devices_in_area(*day, box)
        assert store.distance(start, end) == store.distance(*day) != {}
        assert store.path(7, start, end) == store.path(7, *day)
        assert store.attribute_masks(start, end, {}) == {(0,): 1}
        assert [e["ts"] for e in store.audit_entries(start, end)] == [t]
    assert store.devices_in_area(EARLIEST_MS, t, box) == ([], False)
    assert store.distance(t + 60_001, LATEST_MS) == {}


def test_query_audit_rows_move_into_the_audit_table(tmp_path):
    """A store made before the audit table: its history-query audit is copied over with each
    endpoint's route template, and the old table goes."""
    backend = ChdbBackend(tmp_path / "old")
    backend.execute(
        "CREATE TABLE schema_migrations (version String, applied Int64) "
        "ENGINE = MergeTree ORDER BY version"
    )
    for path in sorted(MIGRATIONS.glob("*.sql"))[:2]:
        text = path.read_text().replace("{raw_days}", "60").replace("{aggregate_days}", "400")
        for sql in statements(text):
            backend.execute(sql)
        backend.insert("schema_migrations", ("version", "applied"), [(path.stem, 0)])
    backend.insert(
        "query_audit",
        ("ts", "role", "endpoint", "params", "result_rows", "elapsed_ms"),
        [(NOW - 5_000, "admin", "path", '{"device":"00000000000000ab"}', 12, 3.5),
         (NOW - 4_000, "viewer", "heatmap", '{"res":9}', 40, 1.0)],
    )  # fmt: skip
    try:
        store = HistoryStore(backend, aggregate_days=400)
        entries = store.audit_entries(NOW - DAY_MS, NOW)
        assert [(e["route"], e["role"], e["rows"], e["status"]) for e in entries] == [
            ("/v1/heatmap", "viewer", 40, 200),
            ("/v1/history/path/{device_id}", "admin", 12, 200),
        ]
        assert entries[1]["params"] == {"device": "00000000000000ab"}
        tables = {r[0] for r in backend.rows("SELECT name FROM system.tables")}
        assert "query_audit" not in tables
    finally:
        backend.close()
