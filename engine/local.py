"""The whole engine in one process, sharded and routed exactly as the actors are (for the tests
and the benchmarks)."""

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from engine.cells import check_res, index_batch, resolution
from engine.doors import DoorCounter, door_count
from engine.geo import BBox
from engine.history import dwell_of
from engine.membership import PlaceCounts
from engine.pseudonym import Directory
from engine.ring import Placement
from engine.routing import door_shard, group_by_user_shard, route_cell_moves, route_space_moves
from engine.spec import EngineSpec
from engine.topn import merge_counts, merge_top, shard_top
from engine.user import UserEngine
from engine.validation import check_door_event, check_ping


class RawPing(NamedTuple):
    device_id: str
    ts: int
    lat: float
    lng: float


class LocalCluster:
    """User shards, cell shards and space shards as plain objects, with the same placement,
    routing and two-stage merges as the live system. Used by the tests (which compare it with
    the oracle) and the benchmarks. Calls must come with a non-decreasing `now`.

    With a history store beside it (`export_history`, then `evict`), live state stays bounded
    as in the actors, and answers that left memory come from the store (`dwell(stored=...)`).
    """

    def __init__(
        self,
        spec: EngineSpec | None = None,
        user_shards: int = 2,
        cell_shards: int = 2,
        space_shards: int = 2,
        seed: int = 0,
    ):
        self.spec = spec or EngineSpec()
        self.directory = Directory(seed)
        self.placement = Placement(
            [f"user-{i}" for i in range(user_shards)],
            [f"cell-{i}" for i in range(cell_shards)],
            [f"space-{i}" for i in range(space_shards)],
            self.spec.placement_res,
        )
        self.users = {name: UserEngine(self.spec) for name in self.placement.users.nodes}
        self.cells = {name: PlaceCounts() for name in self.placement.cells.nodes}
        self.spaces = {name: PlaceCounts() for name in self.placement.spaces.nodes}
        self.doors = {name: DoorCounter() for name in self.placement.spaces.nodes}

    def key(self, device_id: str) -> int:
        """The device's pseudonym (drawn on first sight, as ingest does)."""
        return self.directory.key(device_id)

    def forget(self, device_id: str, now: int) -> int | None:
        """Forget the device at `now` (as `DELETE /v1/admin/devices/{id}` does): the id leaves
        the directory, the device leaves live state, and what counts keep of it moves to a
        fresh key; that key, or None for an id the directory does not have. Its next ping
        starts a new pseudonym."""
        key = self.directory.forget(device_id)
        if key is None:
            return None
        fresh = self.directory.fresh()
        self.users[self.placement.user_shard(key)].forget(key, fresh, now)
        self._route()
        return fresh

    # -- input ----------------------------------------------------------------------------------

    def ingest(self, pings: Sequence[RawPing], now: int) -> list[str]:
        """Validate, index and apply pings in order; per ping "applied", "late" or the reason
        it was rejected."""
        status: list[str] = [""] * len(pings)
        valid = []
        for i, p in enumerate(pings):
            reason = check_ping(p.device_id, p.ts, p.lat, p.lng, now, self.spec.limits)
            if reason:
                status[i] = reason.value
            else:
                valid.append(i)
        if valid:
            lats = [pings[i].lat for i in valid]
            lngs = [pings[i].lng for i in valid]
            cells = index_batch(lats, lngs, self.spec.res).tolist()
            keys = [self.key(pings[i].device_id) for i in valid]
            for shard, idx in group_by_user_shard(keys, self.placement).items():
                applied = self.users[shard].ingest(
                    [keys[j] for j in idx],
                    [pings[valid[j]].ts for j in idx],
                    [cells[j] for j in idx],
                    [lats[j] for j in idx],
                    [lngs[j] for j in idx],
                    now,
                )
                for j, ok in zip(idx, applied, strict=True):
                    status[valid[j]] = "applied" if ok else "late"
        self._route()
        return status

    def door_events(self, events: Iterable[tuple[str, int, int]], now: int) -> list[str]:
        """(sensor, ts, direction) events; per event "accepted" or the rejection reason."""
        status = []
        for sensor, ts, direction in events:
            reason = check_door_event(sensor, ts, direction, now, self.spec.limits)
            if reason:
                status.append(reason.value)
            else:
                self.doors[door_shard(sensor, self.placement)].add(sensor, ts, direction)
                status.append("accepted")
        return status

    def advance(self, now: int) -> None:
        for user in self.users.values():
            user.advance(now)
        self._route()

    def define_space(self, space: str, polygon: dict, name: str = "") -> int:
        n = 0
        for user in self.users.values():
            n = user.define_space(space, polygon, name)
        self._route()
        return n

    def define_door_space(self, space: str, name: str = "") -> None:
        for counter in self.doors.values():
            counter.define_space(space, name)

    def define_doorway(self, doorway: str, inside: str, outside: str | None) -> None:
        for counter in self.doors.values():
            counter.define_doorway(doorway, inside, outside)

    def install(
        self, sensor: str, doorway: str | None, start: int, positive: str, now: int = 0
    ) -> None:
        """BeyondHorizon for a new one dated before `now - max_age` (as the live system's
        definitions)."""
        for counter in self.doors.values():
            counter.install(sensor, doorway, start, positive, self._horizon(now))

    def reset(self, space: str, at: int, now: int = 0) -> None:
        for counter in self.doors.values():
            counter.reset(space, at, self._horizon(now))

    def _horizon(self, now: int) -> int:
        return now - self.spec.limits.max_age_ms if now else 0

    def fold_doors(self, now: int) -> None:
        """Fold door events older than `max_age` into each counter's base."""
        for counter in self.doors.values():
            counter.fold(now - self.spec.limits.max_age_ms)

    def export_history(self, now: int, write, confirm: bool = True) -> None:
        """Every user engine's presence pieces to `write(rows)`; then, if `confirm`, confirmed
        and what history now holds evicted (as the snapshotter and user shards do)."""
        for user in self.users.values():
            mark, rows = user.history_export(now)
            write(rows)
            if confirm:
                user.history_confirm(mark)
                user.evict(now)

    def _route(self) -> None:
        for user in self.users.values():
            moves, space_moves = user.drain_moves()
            for shard, updates in route_cell_moves(moves, self.placement).items():
                self.cells[shard].update_many(updates)
            for shard, updates in route_space_moves(space_moves, self.placement).items():
                self.spaces[shard].update_many(updates)

    # -- queries --------------------------------------------------------------------------------

    def cell_count(self, cell: int) -> int:
        """Live count of a base cell or of a coarser one (the sum over its descendants)."""
        res = check_res(resolution(cell), self.spec.res)
        return self.heatmap(res, None).get(cell, 0)

    def top(self, n: int, res: int, bbox: BBox | None = None) -> list[tuple[int, int]]:
        check_res(res, self.spec.res)
        whole = res >= self.spec.placement_res
        parts = [shard_top(c.counts(), n, res, bbox, whole) for c in self.cells.values()]
        return merge_top(parts, n)

    def heatmap(self, res: int, bbox: BBox | None) -> dict[int, int]:
        check_res(res, self.spec.res)
        parts = [dict(shard_top(c.counts(), 0, res, bbox, False)) for c in self.cells.values()]
        return merge_counts(parts)

    def space_count(self, space: str, now: int) -> int:
        """Live count of a polygon space, or of a door space at `now`."""
        door = next(iter(self.doors.values()))
        if door.has_space(space):
            return door_count([d.partial_sum(space, now) for d in self.doors.values()])
        return self.spaces[self.placement.space_shard(space)].count(space)

    def door_count_at(self, space: str, at: int) -> int:
        """BeyondHorizon for `at` before the folded horizon (history answers those)."""
        return door_count([d.partial_sum(space, at) for d in self.doors.values()])

    def dwell(self, device_id: str, day: int, now: int, stored=None) -> dict[str, dict]:
        """Live, or where live state no longer holds the day, history's pieces of the device
        and day, `stored(key, day) -> [(place, start, lo, hi)]`, with what live state still
        owes laid over them. Nothing for an id the directory does not have."""
        key = self.directory.lookup(device_id)
        if key is None:
            return {"cells": {}, "spaces": {}}
        user = self.users[self.placement.user_shard(key)]
        found = user.dwell(key, day, now)
        if found is None:
            held = stored(key, day) if stored is not None else []
            found = dwell_of(held, user.owed_pieces(key, day, now))
        return found

    def distance(self, device_id: str, day: int) -> float | None:
        """Metres on `day`; None when live state no longer holds it (history does)."""
        key = self.directory.lookup(device_id)
        if key is None:
            return 0.0
        return self.users[self.placement.user_shard(key)].distance(key, day)

    def minute_counts(self, now: int) -> dict[tuple[int | str, int], int]:
        """Distinct devices per (place, minute) over all shards, for the minutes from
        `minute_horizon()` on: shards hold disjoint devices, so their counts add up."""
        since = self.minute_horizon()
        total: dict[tuple[int | str, int], int] = {}
        for user in self.users.values():
            for key, n in user.minute_counts(now, since).items():
                total[key] = total.get(key, 0) + n
        return total

    def minute_horizon(self) -> int:
        """The first minute every user engine still holds."""
        return max(u.minute_horizon for u in self.users.values())

    # -- rebuild and snapshot -------------------------------------------------------------------

    def rebuild_views(self) -> None:
        """Rebuild every cell and space shard from the user shards, as after their restart."""
        for shard in self.cells.values():
            shard.replace(())
        for shard in self.spaces.values():
            shard.replace(())
        for user in self.users.values():
            cells = route_cell_moves(
                ((d, 0, c[0], s) for d, c, s in user.present_cells()), self.placement
            )
            for shard, updates in cells.items():
                self.cells[shard].update_many(updates)
            spaces = route_space_moves(
                ((d, (), sp, s) for d, sp, s in user.present_spaces()), self.placement
            )
            for shard, updates in spaces.items():
                self.spaces[shard].update_many(updates)

    def snapshot(self) -> dict:
        return {
            "users": {name: u.snapshot() for name, u in self.users.items()},
            "cells": {name: c.snapshot() for name, c in self.cells.items()},
            "spaces": {name: s.snapshot() for name, s in self.spaces.items()},
            "doors": {name: d.snapshot() for name, d in self.doors.items()},
            "directory": self.directory.snapshot(),
        }

    def restore(self, state: dict) -> None:
        self.users = {name: UserEngine.restore(s) for name, s in state["users"].items()}
        self.cells = {name: PlaceCounts.restore(s) for name, s in state["cells"].items()}
        self.spaces = {name: PlaceCounts.restore(s) for name, s in state["spaces"].items()}
        self.doors = {name: DoorCounter.restore(s) for name, s in state["doors"].items()}
        self.directory = Directory.restore(state["directory"])
