"""The history store: what the snapshotter writes and what history queries read.

All SQL of the engine's history lives here and in `raw_queries.py` (answers from raw pings,
exports), with values passed as query parameters.
"""

from collections.abc import Iterable, Mapping, Sequence

import orjson
import pyarrow as pa

from clickhouse.backends import Backend
from clickhouse.partitions import by_month, part_token
from clickhouse.raw_queries import RawQueries
from clickhouse.schema import migrate
from clickhouse.series import SeriesQueries, door_ranges_sql
from engine.audit import FIELDS as AUDIT_COLUMNS
from engine.cells import resolution
from engine.geo import BBox
from engine.privacy import released, released_by_levels
from engine.timeutil import MINUTE_MS, day_of, minute_of
from engine.topn import area_counts, ranked

PRESENCE_COLUMNS = ("device", "day", "cell", "space", "start", "lo", "hi", "version")
DOOR_COLUMNS = ("sensor", "ts", "received", "direction", "shard", "wal_id")


class HistoryStore(RawQueries, SeriesQueries):
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

    def write_pings(
        self, columns: Mapping[str, Sequence], token: str, block: pa.Table | None = None
    ) -> None:
        """Raw pings as columns by name (`PingRecord.archive_columns`, as
        `archive.ping_columns` makes them); `token` names the WAL range they come from;
        `block`, the same as Arrow if the caller has it (`lake.exact_block`)."""
        names, data = list(columns), list(columns.values())
        parts = by_month(columns["ts"]) if data else None
        if parts is None:
            self.backend.insert_columns("raw_pings", names, data, token, block)
            return
        for month, idx in parts:
            part = [[values[i] for i in idx] for values in data]
            arrow = block.take(idx) if block is not None else None
            self.backend.insert_columns("raw_pings", names, part, part_token(token, month), arrow)

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

    def delete_raw(self, start: int, end: int) -> None:
        """Raw pings and door events with event time in [start, end) deleted (a rebuild of the
        period from the lake writes them again). Synchronous, as `forget_device`."""
        for table in ("raw_pings", "door_events"):
            self.backend.execute(
                f"ALTER TABLE {table} DELETE WHERE ts >= {{start:Int64}} AND ts < {{end:Int64}}"
                " SETTINGS mutations_sync = 2",
                {"start": start, "end": end},
            )

    def period_rows(self, start: int, end: int) -> dict[str, list[tuple]]:
        """Every row of the history tables in [start, end), in a fixed order: raw pings and door
        events by event time, presence pieces (their latest version, without it) overlapping
        the period. What a rebuild from the lake is checked against."""
        params = {"start": start, "end": end}
        raw = "WHERE ts >= {start:Int64} AND ts < {end:Int64}"
        pieces = ", ".join(PRESENCE_COLUMNS[:-1])
        return {
            "raw_pings": self.backend.rows(f"SELECT * FROM raw_pings {raw} ORDER BY ALL", params),
            "door_events": self.backend.rows(
                f"SELECT * FROM door_events {raw} ORDER BY ALL", params
            ),
            "presence": self.backend.rows(
                f"SELECT {pieces} FROM presence FINAL WHERE hi > lo AND lo < {{end:Int64}} "
                "AND hi > {start:Int64} ORDER BY ALL",
                params,
            ),
        }

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
        params, where, signed = door_ranges_sql(ranges)
        rows = self.backend.rows(
            f"SELECT sum({signed}) FROM door_events WHERE {where}",
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
