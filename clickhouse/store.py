"""The history store: what the snapshotter writes and what history queries read.

All SQL of the engine's history lives here, with values passed as query parameters.
"""

import time
from collections.abc import Iterable, Sequence

from clickhouse.backends import Backend
from clickhouse.schema import migrate
from engine.cells import resolution
from engine.geo import BBox
from engine.timeutil import minute_of
from engine.topn import area_counts, ranked

PING_COLUMNS = ("device", "ts", "received", "lat", "lng", "cell", "shard", "wal_id")
DOOR_COLUMNS = ("sensor", "ts", "received", "direction", "shard", "wal_id")


class HistoryStore:
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
