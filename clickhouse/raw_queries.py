"""History answers from the raw pings (paths, devices in an area, distance, attribute masks) and
the exports; mixed into `HistoryStore`. Values are passed as query parameters."""

import time

from clickhouse.backends import Backend
from engine.geo import EARTH_RADIUS_M, BBox, polygon_contains

# -- raw-ping answers (docs/semantics.md: applied pings, paths, devices in an area, distance) ---

# A ping is applied iff its ts is newer than every earlier-arrived ping of its device: the same
# rule as the engine's, evaluated over the archive in arrival order. `WHERE_RAW` is filled in by
# the callers with fixed SQL and query parameters only. Whether a ping of [start, end) was
# applied depends on the device's earlier-arrived pings of `start` and later, those after `end`
# included (one that arrived first makes it late); those before `start` cannot outrank it.
_APPLIED = """
SELECT device, ts, lat, lng, cell, attributes FROM (
    SELECT device, ts, lat, lng, cell, attributes,
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
    # raw pings, every column the table has, with their arrival order: what `occupancy replay`
    # reads back
    "pings": f"""
        SELECT * REPLACE ({_HEX64.format(col="device")} AS device, lower(hex(cell)) AS cell)
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
        sql = _APPLIED.replace("WHERE_RAW", "device = {device:UInt64} AND ts >= {start:Int64}")
        rows = self.backend.rows(
            f"SELECT ts, lat, lng FROM ({sql}) WHERE ts < {{end:Int64}} ORDER BY ts",
            {"device": device, "start": start, "end": end},
        )
        return [(int(ts), float(lat), float(lng)) for ts, lat, lng in rows]

    def _candidates(self, start: int, end: int, box: BBox | None, attrs, params, cells=None) -> str:
        """SQL for the applied pings with ts in [start, end) (inside `box`, in one of `cells`
        (base cells), with `attrs`)."""
        params |= {"start": start, "end": end}
        inner = "ts >= {start:Int64} AND ts < {end:Int64}"
        if cells is not None:
            params["cells"] = sorted(cells)
            inner += " AND has({cells:Array(UInt64)}, cell)"
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
        # only devices with a ping in the period (and area) matter, and only their pings of
        # `start` and later decide which of those are applied
        raw = (
            f"device IN (SELECT device FROM raw_pings WHERE {inner}{where_attrs}) "
            "AND ts >= {start:Int64}"
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

    def paths_in_area(
        self,
        start: int,
        end: int,
        box: BBox | None,
        polygon: dict | None = None,
        cells=None,
        attrs: dict[str, str] | None = None,
        limit: int = 100,
        timeout_s: float | None = None,
    ) -> tuple[list[tuple[int, list[tuple[int, float, float]]]], bool]:
        """([(device, [(ts, lat, lng)])], truncated): the paths in [start, end) (every applied
        ping of the period, by ts) of the devices `devices_in_area` finds, or, given `cells`,
        of the devices with an applied ping in the period in one of those base cells (a
        polygon space's, as its counts have them); the first `limit` devices by pseudonym."""
        deadline = time.monotonic() + timeout_s if timeout_s else None
        if cells is None:
            found, truncated = self.devices_in_area(
                start, end, box, polygon, attrs, limit, timeout_s
            )
            devices = [d for d, _, _ in found]
        else:
            params: dict = {}
            sql = self._candidates(start, end, box, attrs or {}, params, cells)
            rows = self.backend.rows(
                f"SELECT DISTINCT device FROM ({sql}) ORDER BY device LIMIT {int(limit) + 1}"
                + _settings(timeout_s),
                params,
            )
            devices = [int(d) for (d,) in rows]
            truncated, devices = len(devices) > limit, devices[:limit]
        if not devices:
            return [], truncated
        raw = "has({devices:Array(UInt64)}, device) AND ts >= {start:Int64}"
        left = None if deadline is None else max(0.001, deadline - time.monotonic())
        rows = self.backend.rows(
            f"SELECT device, ts, lat, lng FROM ({_APPLIED.replace('WHERE_RAW', raw)}) "
            "WHERE ts < {end:Int64} ORDER BY device, ts" + _settings(left),
            {"devices": devices, "start": start, "end": end},
        )
        paths: dict[int, list] = {}
        for d, ts, lat, lng in rows:
            paths.setdefault(int(d), []).append((int(ts), float(lat), float(lng)))
        return sorted(paths.items()), truncated

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
