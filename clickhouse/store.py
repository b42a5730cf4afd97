"""The history store: what the snapshotter writes and what history queries read.

All SQL of the engine's history lives here, with values passed as query parameters.
"""

import time
from collections.abc import Iterable, Sequence

from clickhouse.backends import Backend
from clickhouse.schema import migrate
from engine.cells import parse_cell, resolution, to_str
from engine.geo import EARTH_RADIUS_M, BBox, polygon_contains
from engine.timeutil import minute_of
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
DWELL_COLUMNS = ("device", "day", "place", "is_space", "start", "ms", "version")
DOOR_COLUMNS = ("sensor", "ts", "received", "direction", "shard", "wal_id")


# -- raw-ping answers (DESIGN §3: applied pings, paths, devices in an area, distance) -----------

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
    return f" SETTINGS max_execution_time = {float(timeout_s):.3f}" if timeout_s else ""


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
    "cells": """
        SELECT res, lower(hex(cell)) AS cell, minute, uniqExactMerge(devices) AS devices
        FROM cell_minutes WHERE minute >= {start:Int64} AND minute < {end:Int64}
        GROUP BY res, cell, minute ORDER BY minute, res, cell""",
    "spaces": """
        SELECT space, minute, uniqExactMerge(devices) AS devices
        FROM space_minutes WHERE minute >= {start:Int64} AND minute < {end:Int64}
        GROUP BY space, minute ORDER BY minute, space""",
    "dwell": f"""
        SELECT {_HEX64.format(col="device")} AS device, day, place, is_space,
            sum(ms) / 1000 AS seconds
        FROM dwell_daily FINAL WHERE day >= {{start:Int64}} AND day < {{end:Int64}}
        GROUP BY device, day, place, is_space ORDER BY device, day, place""",
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


class HistoryStore(RawQueries):
    def __init__(self, backend: Backend, raw_days: int = 60, aggregate_days: int = 2557):
        self.backend = backend
        migrate(backend, raw_days, aggregate_days)

    # -- writes (idempotent) --------------------------------------------------------------------

    def write_pings(self, rows: Sequence[Sequence], token: str) -> None:
        """Raw pings in PING_COLUMNS order; `token` names the WAL range they come from."""
        self.backend.insert("raw_pings", PING_COLUMNS, rows, token)

    def write_door_events(self, rows: Sequence[Sequence], token: str) -> None:
        self.backend.insert("door_events", DOOR_COLUMNS, rows, token)

    def write_memberships(self, rows: Iterable[tuple[int | str, int, int]]) -> int:
        """(place, minute, device) rows: cells (ints, any resolution) and spaces (strings)."""
        cells, spaces = [], []
        for place, minute, device in rows:
            if isinstance(place, str):
                spaces.append((place, minute, device))
            else:
                cells.append((resolution(place), place, minute, device))
        self.backend.insert("cell_minute_members", ("res", "cell", "minute", "device"), cells)
        self.backend.insert("space_minute_members", ("space", "minute", "device"), spaces)
        return len(cells) + len(spaces)

    def write_dwell(
        self, rows: Iterable[tuple[int, int, int | str, int, int]], version: int
    ) -> int:
        """(device, day, place, start, ms) pieces; `version` orders writes of the same piece."""
        out = [
            (
                dev,
                day,
                place if isinstance(place, str) else to_str(place),
                isinstance(place, str),
                start,
                ms,
                version,
            )
            for dev, day, place, start, ms in rows
        ]
        self.backend.insert("dwell_daily", DWELL_COLUMNS, out)
        return len(out)

    def dwell(self, device: int, day: int) -> dict[str, dict]:
        """{"cells": {cell: ms}, "spaces": {space: ms}} of `device` on `day` (its UTC start)."""
        out: dict[str, dict] = {"cells": {}, "spaces": {}}
        for place, is_space, ms in self.backend.rows(
            "SELECT place, is_space, sum(ms) FROM dwell_daily FINAL "
            "WHERE device = {device:UInt64} AND day = {day:Int64} GROUP BY place, is_space",
            {"device": device, "day": day},
        ):
            if int(ms):
                if is_space:
                    out["spaces"][place] = int(ms)
                else:
                    out["cells"][parse_cell(place)] = int(ms)
        return out

    def audit(self, role: str, endpoint: str, params: str, rows: int, elapsed_ms: float) -> None:
        self.backend.insert(
            "query_audit",
            ("ts", "role", "endpoint", "params", "result_rows", "elapsed_ms"),
            [(int(time.time() * 1000), role, endpoint, params[:2000], rows, elapsed_ms)],
        )

    # -- reads ----------------------------------------------------------------------------------

    def minute_counts(self, res: int, at: int) -> dict[int, int]:
        """{cell: devices} at `res` for the minute containing `at`."""
        rows = self.backend.rows(
            "SELECT cell, uniqExactMerge(devices) FROM cell_minutes "
            "WHERE res = {res:UInt8} AND minute = {minute:Int64} GROUP BY cell",
            {"res": res, "minute": minute_of(at)},
        )
        return {int(cell): int(n) for cell, n in rows}

    def heatmap(self, res: int, at: int, bbox: BBox | None) -> dict[int, int]:
        return area_counts(self.minute_counts(res, at), res, bbox)

    def top(self, n: int, res: int, at: int, bbox: BBox | None) -> list[tuple[int, int]]:
        return ranked(self.heatmap(res, at, bbox), n)

    def cell_count(self, cell: int, at: int) -> int:
        rows = self.backend.rows(
            "SELECT uniqExactMerge(devices) FROM cell_minutes WHERE res = {res:UInt8} "
            "AND minute = {minute:Int64} AND cell = {cell:UInt64}",
            {"res": resolution(cell), "minute": minute_of(at), "cell": cell},
        )
        return int(rows[0][0]) if rows else 0

    def space_count(self, space: str, at: int) -> int:
        rows = self.backend.rows(
            "SELECT uniqExactMerge(devices) FROM space_minutes "
            "WHERE space = {space:String} AND minute = {minute:Int64}",
            {"space": space, "minute": minute_of(at)},
        )
        return int(rows[0][0]) if rows else 0

    def all_minute_counts(self) -> dict[tuple[int | str, int], int]:
        """Every (place, minute) → devices (tests, replay checks)."""
        out: dict[tuple[int | str, int], int] = {}
        for cell, minute, n in self.backend.rows(
            "SELECT cell, minute, uniqExactMerge(devices) FROM cell_minutes GROUP BY cell, minute"
        ):
            out[(int(cell), int(minute))] = int(n)
        for space, minute, n in self.backend.rows(
            "SELECT space, minute, uniqExactMerge(devices) FROM space_minutes "
            "GROUP BY space, minute"
        ):
            out[(space, int(minute))] = int(n)
        return out

    def ping_count(self) -> int:
        return int(self.backend.rows("SELECT count() FROM raw_pings")[0][0])

    def door_event_count(self) -> int:
        return int(self.backend.rows("SELECT count() FROM door_events")[0][0])
