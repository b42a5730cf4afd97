"""The history actor as its callers see it: its name, the errors its answers raise, and
`History`, the client every call to it goes through.

`History`'s methods have the names and positional arguments of the actor's public methods
(actors/history.py). They are coroutines, awaited from async code or run by
`clients.family.blocking` from a thread, and raise the engine's errors only
(`clients.errors.mapped`): `Unavailable` while the actor is restarting or not started,
`StateUnavailable` when Redis did not answer it, `HistoryUnavailable` and `HistoryTimeout` as
the actor raised them.
"""

from typing import Any

from clients.family import Family, Layout
from state.topology import Topology

NAME = "history"


class HistoryUnavailable(Exception):
    """The store cannot be written or read now; snapshots wait in Redis."""


class HistoryTimeout(Exception):
    """A history query ran out of its time (ClickHouse's max_execution_time)."""


class History(Family):
    """The one history actor, by its name."""

    def __init__(self, layout: Layout | Topology, handle=None):
        """`handle`: the actor's own handle (its calls to itself), else looked up by name."""
        super().__init__(layout)
        self._own = handle

    async def _ask(self, call) -> Any:
        if self._own is not None:
            self._handles[NAME] = self._own
        return await self._one(NAME, call)

    # -- snapshots and control ------------------------------------------------------------------

    async def snapshot(self) -> dict:
        return await self._ask(lambda h: h.snapshot.remote())

    async def forget_pending(self) -> dict[str, str]:
        return await self._ask(lambda h: h.forget_pending.remote())

    async def drill_outage(self, down: bool) -> None:
        await self._ask(lambda h: h.drill_outage.remote(down))

    async def pause(self, paused: bool) -> None:
        await self._ask(lambda h: h.pause.remote(paused))

    async def status(self) -> dict:
        return await self._ask(lambda h: h.status.remote())

    async def pid(self) -> int:
        return await self._ask(lambda h: h.pid.remote())

    # -- queries --------------------------------------------------------------------------------

    async def heatmap(self, res: int, at: int, bbox: tuple | None) -> dict[int, int]:
        return await self._ask(lambda h: h.heatmap.remote(res, at, bbox))

    async def top(self, n: int, res: int, at: int, bbox: tuple | None) -> list[tuple[int, int]]:
        return await self._ask(lambda h: h.top.remote(n, res, at, bbox))

    async def cell_count(self, cell: int, at: int) -> int:
        return await self._ask(lambda h: h.cell_count.remote(cell, at))

    async def floored_heatmap(self, res: int, base_res: int, at: int, bbox, k: int) -> dict:
        return await self._ask(lambda h: h.floored_heatmap.remote(res, base_res, at, bbox, k))

    async def floored_top(self, n: int, res: int, base_res: int, at: int, bbox, k: int) -> list:
        return await self._ask(lambda h: h.floored_top.remote(n, res, base_res, at, bbox, k))

    async def floored_cell(self, cell: int, base_res: int, at: int, k: int) -> int:
        return await self._ask(lambda h: h.floored_cell.remote(cell, base_res, at, k))

    async def space_count(self, space: str, at: int) -> int:
        return await self._ask(lambda h: h.space_count.remote(space, at))

    async def space_counts(self, at: int) -> dict[str, int]:
        return await self._ask(lambda h: h.space_counts.remote(at))

    async def dwell(self, device: int, day: int) -> dict:
        return await self._ask(lambda h: h.dwell.remote(device, day))

    async def dwell_pieces(self, device: int, day: int) -> list:
        return await self._ask(lambda h: h.dwell_pieces.remote(device, day))

    async def door_sum(self, ranges: list) -> int:
        return await self._ask(lambda h: h.door_sum.remote(ranges))

    async def door_crossings(self, ranges: list) -> list:
        return await self._ask(lambda h: h.door_crossings.remote(ranges))

    async def series(self, place, base_res: int, edges: list, end: int, by, since, k) -> dict:
        return await self._ask(lambda h: h.series.remote(place, base_res, edges, end, by, since, k))

    async def path(self, device: int, start: int, end: int) -> list:
        return await self._ask(lambda h: h.path.remote(device, start, end))

    async def devices_in_area(self, start, end, bbox, polygon, attrs, limit, timeout_s) -> tuple:
        return await self._ask(
            lambda h: h.devices_in_area.remote(start, end, bbox, polygon, attrs, limit, timeout_s)
        )

    async def paths_in_area(
        self, start, end, bbox, polygon, cells, attrs, limit, timeout_s
    ) -> tuple:
        return await self._ask(
            lambda h: h.paths_in_area.remote(
                start, end, bbox, polygon, cells, attrs, limit, timeout_s
            )
        )

    async def distance(self, start: int, end: int, attrs: dict, device, timeout_s) -> dict:
        return await self._ask(lambda h: h.distance.remote(start, end, attrs, device, timeout_s))

    async def attribute_masks(self, start: int, end: int, attrs: dict, timeout_s) -> dict:
        return await self._ask(lambda h: h.attribute_masks.remote(start, end, attrs, timeout_s))

    async def export(self, what: str, start: int, end: int, fmt: str) -> bytes:
        return await self._ask(lambda h: h.export.remote(what, start, end, fmt))

    async def all_minute_counts(self, resolutions: list[int]) -> dict:
        return await self._ask(lambda h: h.all_minute_counts.remote(resolutions))

    async def counts(self) -> dict[str, int]:
        return await self._ask(lambda h: h.counts.remote())

    async def audit_entries(self, start: int, end: int, key_id, route, limit: int) -> list[dict]:
        return await self._ask(lambda h: h.audit_entries.remote(start, end, key_id, route, limit))
