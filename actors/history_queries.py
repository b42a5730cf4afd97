"""History's queries: the history actor's methods that read the store, each answering in its own
thread group ("query") with a failure that says whether it ran out of time or the store failed."""

import functools
import logging

import ray

from clickhouse.store import HistoryStore
from clients.history import HistoryTimeout, HistoryUnavailable
from engine.geo import BBox

log = logging.getLogger(__name__)


def _answer(query):
    """A history query whose failure says which kind it is: out of time, or the store."""

    @functools.wraps(query)
    def run(self, *args):
        try:
            return query(self, *args)
        except (HistoryUnavailable, HistoryTimeout):
            raise
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:500]
            if "TIMEOUT_EXCEEDED" in str(exc) or "Code: 159." in str(exc):
                raise HistoryTimeout(first) from exc
            log.warning("history query %s failed: %s", query.__name__, first)
            raise HistoryUnavailable(first) from exc

    return run


class HistoryQueries:
    """Mixed into the `History` actor, which holds the store (`_connect`) and `paused`."""

    paused: bool

    def _connect(self) -> HistoryStore:
        raise NotImplementedError

    def _reader(self) -> HistoryStore:
        if self.paused:
            raise HistoryUnavailable("history is paused")
        return self._connect()

    @ray.method(concurrency_group="query")
    @_answer
    def heatmap(self, res: int, at: int, bbox: tuple | None) -> dict[int, int]:
        return self._reader().heatmap(res, at, BBox.from_tuple(bbox))

    @ray.method(concurrency_group="query")
    @_answer
    def top(self, n: int, res: int, at: int, bbox: tuple | None) -> list[tuple[int, int]]:
        return self._reader().top(n, res, at, BBox.from_tuple(bbox))

    @ray.method(concurrency_group="query")
    @_answer
    def cell_count(self, cell: int, at: int) -> int:
        return self._reader().cell_count(cell, at)

    @ray.method(concurrency_group="query")
    @_answer
    def floored_heatmap(self, res: int, base_res: int, at: int, bbox, k: int) -> dict:
        return self._reader().floored_heatmap(res, base_res, at, BBox.from_tuple(bbox), k)

    @ray.method(concurrency_group="query")
    @_answer
    def floored_top(self, n: int, res: int, base_res: int, at: int, bbox, k: int) -> list:
        return self._reader().floored_top(n, res, base_res, at, BBox.from_tuple(bbox), k)

    @ray.method(concurrency_group="query")
    @_answer
    def floored_cell(self, cell: int, base_res: int, at: int, k: int) -> int:
        return self._reader().floored_cell(cell, base_res, at, k)

    @ray.method(concurrency_group="query")
    @_answer
    def space_count(self, space: str, at: int) -> int:
        return self._reader().space_count(space, at)

    @ray.method(concurrency_group="query")
    @_answer
    def space_counts(self, at: int) -> dict[str, int]:
        return self._reader().space_counts(at)

    @ray.method(concurrency_group="query")
    @_answer
    def dwell(self, device: int, day: int) -> dict:
        return self._reader().dwell(device, day)

    @ray.method(concurrency_group="query")
    @_answer
    def dwell_pieces(self, device: int, day: int) -> list:
        return self._reader().dwell_pieces(device, day)

    @ray.method(concurrency_group="query")
    @_answer
    def door_sum(self, ranges: list) -> int:
        return self._reader().door_sum(ranges)

    @ray.method(concurrency_group="query")
    @_answer
    def door_crossings(self, ranges: list) -> list:
        return self._reader().door_crossings(ranges)

    @ray.method(concurrency_group="query")
    @_answer
    def series(self, place, base_res: int, edges: list, end: int, by, since, k) -> dict:
        """{value: counts per bucket} of a polygon space or a cell (value None alone without
        `by`, the attribute); a cell's under the privacy floor `k` when given (not with `by`)."""
        store = self._reader()
        if by is not None:
            return store.place_series_by(place, base_res, edges, end, by, since)
        if k and not isinstance(place, str):
            return {None: store.released_cell_series(place, base_res, edges, end, k)}
        if isinstance(place, str):
            return {None: store.space_series(place, base_res, edges, end)}
        return {None: store.place_series(place, base_res, edges, end)}

    @ray.method(concurrency_group="query")
    @_answer
    def path(self, device: int, start: int, end: int) -> list:
        return self._reader().path(device, start, end)

    @ray.method(concurrency_group="query")
    @_answer
    def devices_in_area(self, start, end, bbox, polygon, attrs, limit, timeout_s) -> tuple:
        return self._reader().devices_in_area(
            start, end, BBox.from_tuple(bbox), polygon, attrs, limit, timeout_s
        )

    @ray.method(concurrency_group="query")
    @_answer
    def paths_in_area(self, start, end, bbox, polygon, cells, attrs, limit, timeout_s) -> tuple:
        return self._reader().paths_in_area(
            start, end, BBox.from_tuple(bbox), polygon, cells, attrs, limit, timeout_s
        )

    @ray.method(concurrency_group="query")
    @_answer
    def distance(self, start: int, end: int, attrs: dict, device, timeout_s) -> dict:
        return self._reader().distance(start, end, attrs, device, timeout_s)

    @ray.method(concurrency_group="query")
    @_answer
    def attribute_masks(self, start: int, end: int, attrs: dict, timeout_s) -> dict:
        return self._reader().attribute_masks(start, end, attrs, timeout_s)

    @ray.method(concurrency_group="query")
    @_answer
    def export(self, what: str, start: int, end: int, fmt: str) -> bytes:
        return self._reader().export(what, start, end, fmt)

    @ray.method(concurrency_group="query")
    @_answer
    def all_minute_counts(self, resolutions: list[int]) -> dict:
        return self._reader().all_minute_counts(resolutions)

    @ray.method(concurrency_group="query")
    @_answer
    def counts(self) -> dict[str, int]:
        store = self._reader()
        return {"pings": store.ping_count(), "door_events": store.door_event_count()}

    @ray.method(concurrency_group="query")
    @_answer
    def period_rows(self, start: int, end: int) -> dict[str, list[tuple]]:
        return self._reader().period_rows(start, end)

    @ray.method(concurrency_group="query")
    @_answer
    def audit_entries(self, start: int, end: int, key_id, route, limit: int) -> list[dict]:
        return self._reader().audit_entries(start, end, key_id, route, limit)
