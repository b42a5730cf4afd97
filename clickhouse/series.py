"""Series from the presence pieces: the distinct devices present in a place at some instant of
each bucket (docs/semantics.md, *Series*), optionally split by an attribute of each device's
latest applied ping; and a door space's signed crossings. Mixed into `HistoryStore`.

Buckets come as their edges (engine/series.py); SQL turns a time into its bucket with the
edges' `segments`, whose numbers are the engine's integers. A piece `[lo, hi)` clipped to the
window counts in every bucket from that of `lo` to that of `hi - 1`.

Presence pieces are rewritten at every snapshot while a ping can still change them, so no view
over them stays exact. Once an hour is final (no ping old enough to change it is accepted any
more), `roll_up` keeps each polygon space's devices of that hour as an exact distinct-count
state (migration 0004), and of each whole UTC day; a space's series merges those states for its
buckets made of whole final hours and reads the pieces only for the rest (the recent days)."""

from collections.abc import Sequence

from clickhouse.backends import Backend
from engine.cells import resolution
from engine.privacy import floored, released_by_levels
from engine.series import bucket_sql, segments
from engine.timeutil import DAY_MS, day_of

HOUR_MS = 3_600_000
ROLLUP_HOURS = 24  # hours written per round at most (a store catching up takes several)

Place = str | int  # a polygon space's id, or a cell at any resolution up to the base one


def door_ranges_sql(ranges) -> tuple[dict, str, str]:
    """(params, WHERE condition, signed crossing expression) of the door events that
    `DoorCounter.ranges` names: each (sensor, first ts, last ts, sign) range."""
    params: dict = {}
    conditions, signs = [], []
    for i, (sensor, lo, hi, sign) in enumerate(ranges):
        params |= {f"s{i}": sensor, f"lo{i}": int(lo), f"hi{i}": int(hi)}
        condition = f"(sensor = {{s{i}:String}} AND ts BETWEEN {{lo{i}:Int64}} AND {{hi{i}:Int64}})"
        conditions.append(condition)
        signs += [condition, str(int(sign))]
    return params, " OR ".join(conditions), f"direction * multiIf({', '.join(signs)}, 0)"


def _place_sql(place: Place, base_res: int, params: dict) -> str:
    if isinstance(place, str):
        params["space"] = place
        return "space = {space:String}"
    params["cell"] = place
    res = resolution(place)
    if res == base_res:
        return "space = '' AND cell = {cell:UInt64}"
    params["res"] = res
    return "space = '' AND h3ToParent(cell, {res:UInt8}) = {cell:UInt64}"


def _pairs_sql(place: Place, base_res: int, edges: Sequence[int], end: int, params: dict) -> str:
    """(device, cell, b): each device present in the place during bucket b (before `end`)."""
    where = _place_sql(place, base_res, params)
    params |= {"e0": edges[0], "d0": day_of(edges[0]), "end": end}
    parts = segments(edges)
    first, last = bucket_sql("lo2", parts), bucket_sql("hi2 - 1", parts)
    return (
        f"SELECT device, cell, arrayJoin(range(toInt64({first}), toInt64({last}) + 1)) AS b "
        "FROM (SELECT device, cell, greatest(lo, {e0:Int64}) AS lo2, least(hi, {end:Int64}) AS hi2"
        " FROM presence FINAL WHERE day >= {d0:Int64} AND day < {end:Int64} AND hi > lo"
        f" AND lo < {{end:Int64}} AND hi > {{e0:Int64}} AND {where}) WHERE hi2 > lo2"
    )


# each paired device's latest applied ping before its bucket's end (or `end`): applied as the
# engine has it (newer than every ping of the device that arrived before), among the pings
# from `since` on, which is all it takes to judge those that can be the latest
_BY_SQL = """
WITH pairs AS (
    SELECT device, b, least(arrayElement({edges:Array(Int64)}, toUInt64(b + 2)), {end:Int64})
        AS bend
    FROM (PAIRS)
)
SELECT p.b, if(v.found AND v.has, v.val, NULL) AS value, uniqExact(p.device)
FROM pairs AS p
ASOF LEFT JOIN (
    SELECT device, ts, toUInt8(1) AS found, mapContains(attributes, {key:String}) AS has,
        attributes[{key:String}] AS val
    FROM (
        SELECT device, ts, attributes, ts > max(ts) OVER (
            PARTITION BY device ORDER BY wal_ms, wal_seq, idx
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS applied
        FROM raw_pings
        WHERE ts >= {since:Int64} AND device IN (SELECT device FROM pairs)
    ) WHERE applied AND ts < {end:Int64}
) AS v ON p.device = v.device AND p.bend > v.ts
GROUP BY p.b, value
"""


class SeriesQueries:
    backend: Backend

    def place_series(
        self, place: Place, base_res: int, edges: Sequence[int], end: int
    ) -> list[int]:
        """Devices present in `place` at some instant of each bucket before `end` (one count
        per bucket of `edges`)."""
        params: dict = {}
        pairs = _pairs_sql(place, base_res, edges, end, params)
        out = [0] * (len(edges) - 1)
        for b, n in self.backend.rows(
            f"SELECT b, uniqExact(device) FROM ({pairs}) GROUP BY b", params
        ):
            if 0 <= int(b) < len(out):
                out[int(b)] = int(n)
        return out

    def place_series_by(
        self,
        place: Place,
        base_res: int,
        edges: Sequence[int],
        end: int,
        key: str,
        since: int,
    ) -> dict[str | None, list[int]]:
        """{value: counts per bucket}: each device present in a bucket under the value of
        attribute `key` in its latest applied ping before the bucket's end (None: that ping
        lacks it, or raw pings no longer have it). `since`: the earliest such ping can be
        (the first edge less the presence TTL)."""
        params: dict = {"edges": list(edges), "key": key, "since": since}
        sql = _BY_SQL.replace("PAIRS", _pairs_sql(place, base_res, edges, end, params))
        out: dict[str | None, list[int]] = {}
        for b, value, n in self.backend.rows(sql, params):
            if 0 <= int(b) < len(edges) - 1:
                out.setdefault(value, [0] * (len(edges) - 1))[int(b)] = int(n)
        return out

    def space_series(self, space: str, base_res: int, edges: Sequence[int], end: int) -> list[int]:
        """`place_series` of a polygon space: its leading buckets made of whole UTC hours (or
        days) that are rolled up already from their states, the rest from the pieces."""
        upto, n = min(self.rolled_up(), end), len(edges) - 1
        j = 0
        while j < n and edges[j] % HOUR_MS == 0 and edges[j + 1] % HOUR_MS == 0:
            if edges[j + 1] > upto:
                break
            j += 1
        out = [0] * n
        if j:
            daily = all(e % DAY_MS == 0 for e in edges[: j + 1])
            table, column = ("space_days", "day") if daily else ("space_hours", "hour")
            index = bucket_sql(column, segments(edges[: j + 1]))
            for b, count in self.backend.rows(
                f"SELECT {index} AS b, uniqExactMerge(devices) FROM {table} "
                f"WHERE space = {{space:String}} AND {column} >= {{lo:Int64}} "
                f"AND {column} < {{hi:Int64}} GROUP BY b",
                {"space": space, "lo": edges[0], "hi": edges[j]},
            ):
                if 0 <= int(b) < j:
                    out[int(b)] = int(count)
        if j < n:
            out[j:] = self.place_series(space, base_res, edges[j:], end)
        return out

    def rolled_up(self) -> int:
        """Every hour before this (ms) is in `space_hours` (0: none yet)."""
        rows = self.backend.rows("SELECT upto FROM series_rollup FINAL WHERE id = 0")
        return int(rows[0][0]) if rows else 0

    def roll_up(self, final_before: int) -> int:
        """Keep the hours of every polygon space that end by `final_before` (the whole UTC
        days among them too), at most ROLLUP_HOURS of them past the mark; the new mark.
        Safe to repeat: a state written again merges into itself."""
        limit = final_before - final_before % HOUR_MS
        start = self.rolled_up()
        if not start:  # the first hour with a space's piece, or nothing to keep yet
            rows = self.backend.rows("SELECT min(day) FROM presence WHERE space != ''")
            first = int(rows[0][0]) if rows and rows[0][0] else 0
            start = first or limit
        if start >= limit:
            if start > self.rolled_up():
                self._mark(start)
            return start
        end = min(limit, start + ROLLUP_HOURS * HOUR_MS)
        params = {"start": start, "end": end, "d0": day_of(start)}
        self.backend.execute(
            "INSERT INTO space_hours SELECT space, h, uniqExactState(device) FROM ("
            "SELECT space, device, arrayJoin(range(lo - lo % 3600000, hi, 3600000)) AS h "
            "FROM presence FINAL WHERE space != '' AND hi > lo AND day >= {d0:Int64} "
            "AND day < {end:Int64} AND lo < {end:Int64} AND hi > {start:Int64}"
            ") WHERE h >= {start:Int64} AND h < {end:Int64} GROUP BY space, h",
            params,
        )
        days = {"lo": day_of(start), "hi": day_of(end)}
        if days["hi"] > days["lo"]:  # days whose last hour this round wrote
            self.backend.execute(
                "INSERT INTO space_days SELECT space, hour - hour % 86400000 AS d, "
                "uniqExactMergeState(devices) FROM space_hours "
                "WHERE hour >= {lo:Int64} AND hour < {hi:Int64} GROUP BY space, d",
                days,
            )
        self._mark(end)
        return end

    def _mark(self, upto: int) -> None:
        self.backend.insert("series_rollup", ("id", "upto", "version"), [(0, upto, upto)])

    def released_cell_series(
        self, cell: int, base_res: int, edges: Sequence[int], end: int, k: int
    ) -> list[int]:
        """A cell's series under the privacy floor `k`: each bucket's count released from its
        distinct counts at every resolution down to the base one (engine/privacy.py), as a
        minute aggregate is."""
        res = resolution(cell)
        if res == base_res:
            return [floored(n, k) for n in self.place_series(cell, base_res, edges, end)]
        params: dict = {"lo_res": res, "top": base_res + 1}
        pairs = _pairs_sql(cell, base_res, edges, end, params)
        levels: list[dict[int, dict[int, int]]] = [
            {r: {} for r in range(res, base_res + 1)} for _ in range(len(edges) - 1)
        ]
        for b, r, c, n in self.backend.rows(
            f"SELECT b, r, h3ToParent(cell, r) AS c, uniqExact(device) FROM ({pairs}) "
            "ARRAY JOIN range({lo_res:UInt8}, {top:UInt8}) AS r GROUP BY b, r, c",
            params,
        ):
            if 0 <= int(b) < len(levels):
                levels[int(b)][int(r)][int(c)] = int(n)
        return [
            released_by_levels(by_res, base_res, res, k).get(cell, (0, 0))[1] for by_res in levels
        ]

    def door_crossings(self, ranges: Sequence[tuple[str, int, int, int]]) -> list[list[int]]:
        """[ts, sign × direction] of the door events of each (sensor, first ts, last ts, sign)
        range (`DoorCounter.ranges`), in ts order."""
        if not ranges:
            return []
        params, where, signed = door_ranges_sql(ranges)
        rows = self.backend.rows(
            f"SELECT ts, {signed} AS signed FROM door_events WHERE {where} ORDER BY ts",
            params,
        )
        return [[int(ts), int(signed)] for ts, signed in rows if int(signed)]
