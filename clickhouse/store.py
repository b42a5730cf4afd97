"""The history store: what the snapshotter writes and what history queries read.

All SQL of the engine's history lives here, with values passed as query parameters.
"""

from collections.abc import Iterable, Sequence

import orjson

from clickhouse.backends import Backend
from clickhouse.partitions import by_month, part_token
from clickhouse.schema import migrate
from engine.audit import FIELDS as AUDIT_COLUMNS
from engine.cells import resolution
from engine.geo import EARTH_RADIUS_M, BBox, polygon_contains
from engine.privacy import released, released_by_levels
from engine.timeutil import MINUTE_MS, day_of, minute_of
from engine.topn import area_counts, ranked

PING_COLUMNS = (
    "device",
    "ts",
    "received",
    "lat",
    "lng",
    "cell",
    "accuracy_m",
    "region",
    "attributes",
    "shard",
    "wal_ms",
    "wal_seq",
    "idx",
)
PRESENCE_COLUMNS = ("device", "day", "cell", "space", "start", "lo", "hi", "version")
DOOR_COLUMNS = ("sensor", "ts", "received", "direction", "shard", "wal_id")


# -- raw-ping answers (docs/semantics.md: applied pings, paths, devices in an area, distance) ---

# A ping is applied iff its ts is newer than every earlier-arrived ping of its device: the same
# rule as the engine's, evaluated over the archive in arrival order. `WHERE_RAW` is filled in by
# the callers with fixed SQL and query parameters only.
_APPLIED = """
SELECT device, ts, lat, lng, attributes FROM (
    SELECT device, ts, lat, lng, attributes,
        ts > max(ts) OVER (
            PARTITION BY device ORDER BY wal_ms, wal_seq, idx
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS applied
    FROM raw_pings
    WHERE WHERE_RAW
) WHERE applied"""

_HAVERSINE = (
    "2 * {radius:Float64} * asin(least(1., sqrt("
    "pow(sin((radians(lat) - radians(plat)) / 2), 2) + "
    "cos(radians(plat)) * cos(radians(lat)) * pow(sin(radians(lng - plng) / 2), 2))))"
)


def _attr_sql(attrs: dict[str, str], params: dict) -> str:
    """` AND attributes[k] = v ...` with both as parameters."""
    sql = ""
    for i, (k, v) in enumerate(sorted(attrs.items())):
        params[f"ak{i}"], params[f"av{i}"] = k, v
        sql += f" AND attributes[{{ak{i}:String}}] = {{av{i}:String}}"
    return sql


def _settings(timeout_s: float | None) -> str:
    # at least a millisecond: 0 would mean no limit at all
    return f" SETTINGS max_execution_time = {max(0.001, float(timeout_s)):.3f}" if timeout_s else ""


EXPORT_FORMATS = {
    "csv": ("CSVWithNames", "text/csv"),
    "json": ("JSONEachRow", "application/x-ndjson"),
    "parquet": ("Parquet", "application/vnd.apache.parquet"),
    "arrow": ("Arrow", "application/vnd.apache.arrow.file"),
}
_HEX64 = "leftPad(lower(hex({col})), 16, '0')"
EXPORTS = {
    # raw pings with their arrival order: what `occupancy replay` reads back
    "pings": f"""
        SELECT {_HEX64.format(col="device")} AS device, ts, received, lat, lng,
            lower(hex(cell)) AS cell, accuracy_m, region, attributes, shard, wal_ms, wal_seq, idx
        FROM raw_pings WHERE ts >= {{start:Int64}} AND ts < {{end:Int64}}
        ORDER BY shard, wal_ms, wal_seq, idx""",
    # the aggregate views of migration 0002, over the presence pieces
    "cells": """
        SELECT lower(hex(cell)) AS cell, minute, devices
        FROM cell_minutes(start = {start:Int64}, end = {end:Int64}) ORDER BY minute, cell""",
    "spaces": """
        SELECT space, minute, devices
        FROM space_minutes(start = {start:Int64}, end = {end:Int64}) ORDER BY minute, space""",
    # dwell straight from the pieces: the same query over the dwell_daily view sends chDB's
    # planner into a loop (TOO_MANY_QUERY_PLAN_OPTIMIZATIONS) once hex ids and ORDER BY join
    "dwell": f"""
        SELECT {_HEX64.format(col="device")} AS device, day,
            if(space = '', lower(hex(cell)), space) AS place, space != '' AS is_space,
            sum(hi - lo) / 1000 AS seconds
        FROM presence FINAL WHERE day >= {{start:Int64}} AND day < {{end:Int64}}
        GROUP BY device, day, place, is_space HAVING seconds > 0
        ORDER BY device, day, place""",
    "doors": """
        SELECT sensor, ts, received, direction FROM door_events
        WHERE ts >= {start:Int64} AND ts < {end:Int64} ORDER BY ts, sensor""",
}


class RawQueries:
    """History answers from the raw archive; mixed into HistoryStore."""

    backend: Backend

    def path(self, device: int, start: int, end: int) -> list[tuple[int, float, float]]:
        """The device's applied pings with ts in [start, end), by ts."""
        sql = _APPLIED.replace("WHERE_RAW", "device = {device:UInt64} AND ts < {end:Int64}")
        rows = self.backend.rows(
            f"SELECT ts, lat, lng FROM ({sql}) WHERE ts >= {{start:Int64}} ORDER BY ts",
            {"device": device, "start": start, "end": end},
        )
        return [(int(ts), float(lat), float(lng)) for ts, lat, lng in rows]

    def _candidates(self, start: int, end: int, box: BBox | None, attrs, params) -> str:
        """SQL for the applied pings with ts in [start, end) (inside `box`, with `attrs`)."""
        params |= {"start": start, "end": end}
        inner = "ts >= {start:Int64} AND ts < {end:Int64}"
        if box is not None:
            params |= {
                "min_lat": box.min_lat,
                "max_lat": box.max_lat,
                "min_lng": box.min_lng,
                "max_lng": box.max_lng,
            }
            inner += (
                " AND lat BETWEEN {min_lat:Float64} AND {max_lat:Float64}"
                " AND lng BETWEEN {min_lng:Float64} AND {max_lng:Float64}"
            )
        where_attrs = _attr_sql(attrs, params)
        # only devices with a ping in the period (and area) matter, and only their pings
        # before `end` decide which of those are applied
        raw = (
            f"device IN (SELECT device FROM raw_pings WHERE {inner}{where_attrs}) "
            "AND ts < {end:Int64}"
        )
        return f"SELECT * FROM ({_APPLIED.replace('WHERE_RAW', raw)}) WHERE {inner}{where_attrs}"

    def devices_in_area(
        self,
        start: int,
        end: int,
        box: BBox | None,
        polygon: dict | None = None,
        attrs: dict[str, str] | None = None,
        limit: int = 1000,
        timeout_s: float | None = None,
    ) -> tuple[list[tuple[int, int, int]], bool]:
        """([(device, first_seen, last_seen)], truncated): devices with an applied ping in
        [start, end) inside `box` (and `polygon`, holes respected), by device."""
        params: dict = {}
        sql = self._candidates(start, end, box, attrs or {}, params)
        if polygon is None:
            rows = self.backend.rows(
                f"SELECT device, min(ts), max(ts) FROM ({sql}) GROUP BY device ORDER BY device "
                f"LIMIT {int(limit) + 1}" + _settings(timeout_s),
                params,
            )
            found = [(int(d), int(a), int(b)) for d, a, b in rows]
        else:
            seen: dict[int, list[int]] = {}
            for d, ts, lat, lng in self.backend.rows(
                f"SELECT device, ts, lat, lng FROM ({sql})" + _settings(timeout_s), params
            ):
                if polygon_contains(polygon, lat, lng):
                    span = seen.setdefault(int(d), [int(ts), int(ts)])
                    span[0], span[1] = min(span[0], ts), max(span[1], ts)
            found = sorted((d, a, b) for d, (a, b) in seen.items())
        return found[:limit], len(found) > limit

    def export(self, what: str, start: int, end: int, fmt: str) -> bytes:
        """Rows of `what` (EXPORTS) with their time in [start, end), in `fmt` (EXPORT_FORMATS).
        Devices appear as pseudonyms only."""
        return self.backend.raw(EXPORTS[what], {"start": start, "end": end}, EXPORT_FORMATS[fmt][0])

    def distance(
        self,
        start: int,
        end: int,
        attrs: dict[str, str] | None = None,
        device: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[int, float]:
        """{device: metres} between consecutive applied pings with ts in [start, end), for the
        devices with an applied ping in the period (that has `attrs`, if given)."""
        params: dict = {"radius": EARTH_RADIUS_M}
        sql = self._candidates(start, end, None, attrs or {}, params)
        if device is not None:
            params["device"] = device
            sql = f"SELECT * FROM ({sql}) WHERE device = {{device:UInt64}}"
        if attrs:
            # the filter picks devices; their distance counts all their applied pings
            params_all: dict = {}
            everything = self._candidates(start, end, None, {}, params_all)
            params |= params_all
            sql = f"SELECT * FROM ({everything}) WHERE device IN (SELECT device FROM ({sql}))"
        rows = self.backend.rows(
            f"""
            SELECT device, sum(if(n = 1, 0., {_HAVERSINE})) FROM (
                SELECT device, ts, lat, lng,
                    lagInFrame(lat) OVER w AS plat, lagInFrame(lng) OVER w AS plng,
                    row_number() OVER w AS n
                FROM ({sql})
                WINDOW w AS (PARTITION BY device ORDER BY ts
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
            ) GROUP BY device ORDER BY device"""
            + _settings(timeout_s),
            params,
        )
        return {int(d): float(m) for d, m in rows}

    def attribute_masks(
        self, start: int, end: int, attrs: dict[str, str], timeout_s: float | None = None
    ) -> dict[tuple[int, ...], int]:
        """Devices with an applied ping in [start, end), grouped by which of `attrs` their
        pings carried: {the sorted set of masks (bit i: the i-th attribute by key) one
        device's pings matched: devices with that set} (`engine.privacy.subset_counts`)."""
        params: dict = {}
        sql = self._candidates(start, end, None, {}, params)
        bits = []
        for i, (k, v) in enumerate(sorted(attrs.items())):
            params[f"mk{i}"], params[f"mv{i}"] = k, v
            bits.append(f"(attributes[{{mk{i}:String}}] = {{mv{i}:String}}) * {1 << i}")
        mask = " + ".join(bits) or "0"
        rows = self.backend.rows(
            "SELECT masks, count() FROM ("
            f"SELECT device, arraySort(groupUniqArray(toUInt32({mask}))) AS masks FROM ({sql}) "
            "GROUP BY device) GROUP BY masks" + _settings(timeout_s),
            params,
        )
        return {tuple(int(m) for m in masks): int(n) for masks, n in rows}


class HistoryStore(RawQueries):
    def __init__(
        self,
        backend: Backend,
        raw_days: int = 60,
        aggregate_days: int = 2557,
        audit_days: int = 400,
    ):
        self.backend = backend
        migrate(backend, raw_days, aggregate_days, audit_days)

    # -- writes (idempotent) --------------------------------------------------------------------

    # Every table is partitioned by month: a block spanning many months (a device's backlog of
    # a year, say) is written as one insert per month, each with its own dedup token.

    def write_pings(self, rows: Sequence[Sequence], token: str) -> None:
        """Raw pings in PING_COLUMNS order; `token` names the WAL range they come from."""
        self._insert_rows("raw_pings", PING_COLUMNS, rows, 1, token)

    def write_ping_columns(self, data: Sequence[Sequence], token: str) -> None:
        """`write_pings` with one sequence per column of PING_COLUMNS."""
        parts = by_month(data[1]) if data else None
        if parts is None:
            self.backend.insert_columns("raw_pings", PING_COLUMNS, data, token)
            return
        for month, idx in parts:
            columns = [[column[i] for i in idx] for column in data]
            self.backend.insert_columns(
                "raw_pings", PING_COLUMNS, columns, part_token(token, month)
            )

    def write_door_events(self, rows: Sequence[Sequence], token: str) -> None:
        self._insert_rows("door_events", DOOR_COLUMNS, rows, 1, token)

    def write_audit(self, rows: Sequence[Sequence], token: str) -> None:
        """Audit records in AUDIT_COLUMNS order; `token` names the stream range they come
        from."""
        self._insert_rows("audit", AUDIT_COLUMNS, rows, 0, token)

    def write_presence(self, rows: Iterable[tuple], version: int) -> int:
        """Pieces (device, day, place, start, lo, hi) of `engine.history`; `version` orders
        writes of the same piece (the latest wins)."""
        out = [
            (dev, day, 0, place, start, lo, hi, version)
            if isinstance(place, str)
            else (dev, day, place, "", start, lo, hi, version)
            for dev, day, place, start, lo, hi in rows
        ]
        self._insert_rows("presence", PRESENCE_COLUMNS, out, 1)
        return len(out)

    def _insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence], at: int, token=""
    ) -> None:
        """Rows whose column `at` is the partition time, one insert per month they span."""
        parts = by_month([r[at] for r in rows])
        if parts is None:
            self.backend.insert(table, columns, rows, token)
            return
        for month, idx in parts:
            self.backend.insert(table, columns, [rows[i] for i in idx], part_token(token, month))

    def forget_device(self, device: int, fresh: int) -> None:
        """A forgotten device: its raw pings deleted, its presence pieces re-keyed to `fresh`
        (a key nothing links to it), so that every count of the past stays as it was. Safe to
        repeat after a failure at any point (the copy of a piece replaces itself; deleting
        nothing deletes nothing). Mutations run synchronously: the rows are gone from disk
        when this returns (ClickHouse keeps the replaced parts a few minutes before removing
        them). Between the copy and the delete, a query may see the device's past twice."""
        params = {"device": device, "fresh": fresh}
        sync = " SETTINGS mutations_sync = 2"
        self.backend.execute(
            "ALTER TABLE raw_pings DELETE WHERE device = {device:UInt64}" + sync, params
        )
        # no alias for the new key: an alias named `device` would be what WHERE compares
        self.backend.execute(
            "INSERT INTO presence (device, day, cell, space, start, lo, hi, version) "
            "SELECT {fresh:UInt64}, day, cell, space, start, lo, hi, version FROM presence "
            "FINAL WHERE device = {device:UInt64}",
            params,
        )
        self.backend.execute(
            "ALTER TABLE presence DELETE WHERE device = {device:UInt64}" + sync, params
        )

    def device_rows(self, device: int) -> dict[str, int]:
        """Rows of `device` left in each table that keys rows by device (checks)."""
        return {
            table: int(
                self.backend.rows(
                    f"SELECT count() FROM {table} WHERE device = {{device:UInt64}}",
                    {"device": device},
                )[0][0]
            )
            for table in ("raw_pings", "presence")
        }

    def dwell(self, device: int, day: int) -> dict[str, dict]:
        """{"cells": {cell: ms}, "spaces": {space: ms}} of `device` on `day` (its UTC start)."""
        out: dict[str, dict] = {"cells": {}, "spaces": {}}
        for cell, space, ms in self.backend.rows(
            "SELECT cell, space, sum(hi - lo) FROM presence FINAL "
            "WHERE device = {device:UInt64} AND day = {day:Int64} GROUP BY cell, space",
            {"device": device, "day": day},
        ):
            if int(ms) > 0:
                if space:
                    out["spaces"][space] = int(ms)
                else:
                    out["cells"][int(cell)] = int(ms)
        return out

    def dwell_pieces(self, device: int, day: int) -> list[tuple[int | str, int, int, int]]:
        """The latest version of every piece of `device` on `day`, as (place, start, lo, hi):
        what live state lays its owed pieces over (`engine.history.dwell_of`)."""
        rows = self.backend.rows(
            "SELECT cell, space, start, lo, hi FROM presence FINAL "
            "WHERE device = {device:UInt64} AND day = {day:Int64}",
            {"device": device, "day": day},
        )
        return [
            (space if space else int(cell), int(start), int(lo), int(hi))
            for cell, space, start, lo, hi in rows
        ]

    def door_sum(self, ranges: Sequence[tuple[str, int, int, int]]) -> int:
        """Σ sign × direction of the door events of each (sensor, first ts, last ts, sign)
        range (`DoorCounter.ranges`): a door count before the live horizon, unclamped."""
        if not ranges:
            return 0
        params: dict = {}
        conditions, signs = [], []
        for i, (sensor, lo, hi, sign) in enumerate(ranges):
            params |= {f"s{i}": sensor, f"lo{i}": int(lo), f"hi{i}": int(hi)}
            condition = (
                f"(sensor = {{s{i}:String}} AND ts BETWEEN {{lo{i}:Int64}} AND {{hi{i}:Int64}})"
            )
            conditions.append(condition)
            signs += [condition, str(int(sign))]
        rows = self.backend.rows(
            f"SELECT sum(direction * multiIf({', '.join(signs)}, 0)) FROM door_events "
            f"WHERE {' OR '.join(conditions)}",
            params,
        )
        return int(rows[0][0] or 0) if rows else 0

    # -- reads ----------------------------------------------------------------------------------

    def minute_counts(self, res: int, at: int) -> dict[int, int]:
        """{cell at `res`: devices present during the minute containing `at`}."""
        m = minute_of(at)
        rows = self.backend.rows(
            "SELECT h3ToParent(cell, {res:UInt8}) AS c, uniqExact(device) FROM presence FINAL "
            "WHERE day = {day:Int64} AND space = '' AND lo < {m_end:Int64} AND hi > {m:Int64} "
            "GROUP BY c",
            {"res": res, "day": day_of(m), "m": m, "m_end": m + MINUTE_MS},
        )
        return {int(cell): int(n) for cell, n in rows}

    def heatmap(self, res: int, at: int, bbox: BBox | None) -> dict[int, int]:
        return area_counts(self.minute_counts(res, at), res, bbox)

    def top(self, n: int, res: int, at: int, bbox: BBox | None) -> list[tuple[int, int]]:
        return ranked(self.heatmap(res, at, bbox), n)

    def cell_count(self, cell: int, at: int) -> int:
        return self.minute_counts(resolution(cell), at).get(cell, 0)

    def minute_levels(
        self, res: int, base_res: int, at: int, cell: int | None = None
    ) -> dict[int, dict[int, int]]:
        """{r: minute_counts(r, at)} for every r from `res` to `base_res`, in one scan; with
        `cell` (at `res`), only the cells under it."""
        m = minute_of(at)
        params = {"res": res, "base": base_res + 1, "day": day_of(m), "m": m}
        params["m_end"] = m + MINUTE_MS
        under = ""
        if cell is not None:
            params["cell"] = cell
            under = " AND h3ToParent(cell, {res:UInt8}) = {cell:UInt64}"
        rows = self.backend.rows(
            "SELECT r, h3ToParent(cell, r) AS c, uniqExact(device) FROM presence FINAL "
            "ARRAY JOIN range({res:UInt8}, {base:UInt8}) AS r "
            "WHERE day = {day:Int64} AND space = '' AND lo < {m_end:Int64} AND hi > {m:Int64}"
            f"{under} GROUP BY r, c",
            params,
        )
        out: dict[int, dict[int, int]] = {r: {} for r in range(res, base_res + 1)}
        for r, c, n in rows:
            out[int(r)][int(c)] = int(n)
        return out

    # Under the privacy floor `k` (engine/privacy.py): released minute aggregates, lifted from
    # the base resolution through every resolution down to the one asked for.

    def floored_heatmap(
        self, res: int, base_res: int, at: int, bbox: BBox | None, k: int
    ) -> dict[int, int]:
        levels = self.minute_levels(res, base_res, at)
        counts = released(released_by_levels(levels, base_res, res, k))
        return area_counts(counts, res, bbox)

    def floored_top(
        self, n: int, res: int, base_res: int, at: int, bbox: BBox | None, k: int
    ) -> list[tuple[int, int]]:
        return ranked(self.floored_heatmap(res, base_res, at, bbox, k), n)

    def floored_cell(self, cell: int, base_res: int, at: int, k: int) -> int:
        res = resolution(cell)
        levels = self.minute_levels(res, base_res, at, cell)
        return released(released_by_levels(levels, base_res, res, k)).get(cell, 0)

    def space_count(self, space: str, at: int) -> int:
        m = minute_of(at)
        rows = self.backend.rows(
            "SELECT uniqExact(device) FROM presence FINAL WHERE day = {day:Int64} "
            "AND space = {space:String} AND lo < {m_end:Int64} AND hi > {m:Int64}",
            {"space": space, "day": day_of(m), "m": m, "m_end": m + MINUTE_MS},
        )
        return int(rows[0][0]) if rows else 0

    def space_counts(self, at: int) -> dict[str, int]:
        """Every polygon space's minute aggregate for `at`'s minute (spaces with nobody are
        absent)."""
        m = minute_of(at)
        rows = self.backend.rows(
            "SELECT space, uniqExact(device) FROM presence FINAL WHERE day = {day:Int64} "
            "AND space != '' AND lo < {m_end:Int64} AND hi > {m:Int64} GROUP BY space",
            {"day": day_of(m), "m": m, "m_end": m + MINUTE_MS},
        )
        return {str(space): int(n) for space, n in rows}

    def all_minute_counts(self, resolutions: Sequence[int]) -> dict[tuple[int | str, int], int]:
        """Every (place, minute) → devices, cells at `resolutions` (tests, replay checks)."""
        out: dict[tuple[int | str, int], int] = {}
        for res in resolutions:
            for cell, minute, n in self.backend.rows(
                "SELECT h3ToParent(cell, {res:UInt8}) AS c, m, uniqExact(device) FROM ("
                "SELECT device, cell, arrayJoin(range(lo - lo % 60000, hi, 60000)) AS m "
                "FROM presence FINAL WHERE space = '' AND hi > lo) GROUP BY c, m",
                {"res": res},
            ):
                out[(int(cell), int(minute))] = int(n)
        for space, minute, n in self.backend.rows(
            "SELECT space, m, uniqExact(device) FROM ("
            "SELECT device, space, arrayJoin(range(lo - lo % 60000, hi, 60000)) AS m "
            "FROM presence FINAL WHERE space != '' AND hi > lo) GROUP BY space, m"
        ):
            out[(space, int(minute))] = int(n)
        return out

    def audit_entries(
        self,
        start: int,
        end: int,
        key_id: str | None = None,
        route: str | None = None,
        limit: int = 100,
    ) -> list[dict]:
        """Audit records with ts in [start, end), newest first, of one key id and of routes
        starting with `route` if given; `params` parsed."""
        params: dict = {"start": start, "end": end}
        where = "ts >= {start:Int64} AND ts < {end:Int64}"
        if key_id is not None:
            params["key_id"] = key_id
            where += " AND key_id = {key_id:String}"
        if route is not None:
            params["route"] = route
            where += " AND startsWith(route, {route:String})"
        rows = self.backend.rows(
            f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit WHERE {where} "
            f"ORDER BY ts DESC LIMIT {int(limit)}",
            params,
        )
        out = []
        for row in rows:
            entry = dict(zip(AUDIT_COLUMNS, row, strict=True))
            try:
                entry["params"] = orjson.loads(entry["params"])
            except orjson.JSONDecodeError:  # kept as stored
                pass
            out.append(entry)
        return out

    def ping_count(self) -> int:
        return int(self.backend.rows("SELECT count() FROM raw_pings")[0][0])

    def door_event_count(self) -> int:
        return int(self.backend.rows("SELECT count() FROM door_events")[0][0])
