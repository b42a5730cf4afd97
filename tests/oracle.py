"""Brute-force reference implementation of docs/semantics.md over the raw event log."""

import itertools
import math
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from h3.api import basic_int as h3i

EARTH_RADIUS_M = 6_371_008.8
MINUTE = 60_000
DAY = 86_400_000


def _in_ring(lng: float, lat: float, ring: list) -> bool:
    inside = False
    for i in range(len(ring)):
        x1, y1 = ring[i - 1][0], ring[i - 1][1]
        x2, y2 = ring[i][0], ring[i][1]
        if (y2 > lat) != (y1 > lat) and lng < (x1 - x2) * (lat - y2) / (y1 - y2) + x2:
            inside = not inside
    return inside


def _inside(polygon: dict, lat: float, lng: float) -> bool:
    outer, *holes = polygon["coordinates"]
    return _in_ring(lng, lat, outer) and not any(_in_ring(lng, lat, h) for h in holes)


class Oracle:
    """Recomputes every answer from the whole log on each query; no incremental state."""

    def __init__(
        self,
        res: int = 9,
        ttl_ms: int = 120_000,
        max_skew_ms: int = 30_000,
        max_age_ms: int = 7 * DAY,
    ):
        self.res, self.ttl, self.skew, self.max_age = res, ttl_ms, max_skew_ms, max_age_ms
        self.pings: list[tuple[int, str, int, float, float]] = []  # valid pings, arrival order
        self._of: dict[str, list[tuple[int, str, int, float, float]]] = {}  # the same, per device
        self.doors: list[tuple[int, str, int, int]] = []
        self.polygons: dict[str, dict] = {}
        self.door_spaces: set[str] = set()
        self.doorways: dict[str, tuple[str, str | None]] = {}
        self.deleted_doorways: set[str] = set()  # kept in `doorways` to count the past
        self.installs: list[tuple[str, str | None, int, str]] = []
        self.resets: list[tuple[str, int]] = []
        self._space_cells: dict[str, set[int]] = {}
        self._cut: dict[str, int] = {}  # forgotten devices' past, by its new name: forgotten at
        self._attrs: dict[tuple[str, int], dict[str, str]] = {}  # applied pings' attributes
        self._log_lock = threading.Lock()

    # -- the log --------------------------------------------------------------------------------

    def ping(
        self,
        recv_ms: int,
        device: str,
        ts_ms: int,
        lat: float,
        lng: float,
        attributes: dict[str, str] | None = None,
    ) -> str:
        valid = (
            0 < len(device.encode()) <= 128
            and math.isfinite(lat)
            and math.isfinite(lng)
            and -90 <= lat <= 90
            and -180 <= lng <= 180
            and 0 < ts_ms <= recv_ms + self.skew
            and ts_ms >= recv_ms - self.max_age
        )
        if not valid:
            return "rejected"
        ping = (recv_ms, device, ts_ms, lat, lng)
        with self._log_lock:  # senders on several threads log into one oracle
            earlier = [p[2] for p in self._of.get(device, [])]
            self.pings.append(ping)
            self._of.setdefault(device, []).append(ping)
            applied = all(ts_ms > t for t in earlier)
            if applied and attributes:
                self._attrs[(device, ts_ms)] = dict(attributes)
        return "applied" if applied else "late"

    def door_event(self, recv_ms: int, sensor: str, ts_ms: int, direction: int) -> str:
        valid = (
            0 < len(sensor.encode()) <= 128
            and direction in (1, -1)
            and 0 < ts_ms <= recv_ms + self.skew
            and ts_ms >= recv_ms - self.max_age
        )
        if not valid:
            return "rejected"
        self.doors.append((recv_ms, sensor, ts_ms, direction))
        return "accepted"

    def forget(self, device: str, now: int) -> str | None:
        """The device is forgotten at `now`: its past goes on under a new name nobody asks
        about, its presence ending at `now` at the latest; the id itself starts afresh (its
        next ping is a new device's first). The new name, or None if the device sent nothing."""
        with self._log_lock:
            pings = self._of.pop(device, None)
            if not pings:
                return None
            self._attrs = {k: v for k, v in self._attrs.items() if k[0] != device}
            name = f"forgotten-{len(self._cut)}"
            self._cut[name] = now
            self.pings = [
                (r, name if d == device else d, ts, lat, lng) for r, d, ts, lat, lng in self.pings
            ]
            self._of[name] = [(r, name, ts, lat, lng) for r, _, ts, lat, lng in pings]
            return name

    def forgotten(self, name: str) -> bool:
        """Whether `name` is the past of a forgotten device (no raw id names it any more)."""
        return name in self._cut

    def forgotten_minutes(self, resolutions, now: int) -> set[tuple[int, int]]:
        """The (cell, minute) keys, cells at `resolutions`, whose minute aggregates count a
        forgotten device: what a replay of raw pings (its pings deleted) no longer counts."""
        out = set()
        for name in self._cut:
            for start, end, cell in self.intervals(name, now):
                for m in range(start - start % MINUTE, min(end, now + 1), MINUTE):
                    out.update((h3i.cell_to_parent(cell, r), m) for r in resolutions)
        return out

    def define_polygon_space(self, space: str, polygon: dict) -> None:
        self.polygons[space] = polygon

    def define_door_space(self, space: str) -> None:
        self.door_spaces.add(space)

    def define_doorway(self, doorway: str, inside: str, outside: str | None) -> None:
        self.doorways[doorway] = (inside, outside)
        self.deleted_doorways.discard(doorway)

    def install(
        self, sensor: str, doorway: str | None, from_ms: int, positive: str, now: int | None = None
    ) -> bool:
        """False (refused) for a new installation dated more than max_age before `now`, or at
        the `from` of another sensor's on the same doorway (the same one again is accepted and
        changes nothing)."""
        if (sensor, doorway, from_ms, positive) in self.installs:
            return True
        if now is not None and from_ms < now - self.max_age:
            return False
        if doorway is not None and any(
            i[1] == doorway and i[2] == from_ms and i[0] != sensor for i in self.installs
        ):
            return False  # a doorway holds one sensor at a time
        self.installs = [i for i in self.installs if not (i[0] == sensor and i[2] == from_ms)]
        self.installs.append((sensor, doorway, from_ms, positive))
        return True

    def delete_doorway(self, doorway: str, at_ms: int) -> list[str]:
        """Deleting a doorway at `at_ms`: each sensor counting there then is installed nowhere
        from `at_ms` (its crossings before still count). The sensors ended."""
        ended = []
        for sensor in sorted({i[0] for i in self.installs}):
            valid = [i for i in self.installs if i[0] == sensor and i[2] <= at_ms]
            if not valid:
                continue
            _, on, start, positive = max(valid, key=lambda i: i[2])
            taken = any(
                i[1] == doorway and i[0] != sensor and start < i[2] <= at_ms for i in self.installs
            )
            if on == doorway and not taken:
                self.install(sensor, None, at_ms, positive)
                ended.append(sensor)
        self.deleted_doorways.add(doorway)
        return ended

    def delete_door_space(self, space: str, at_ms: int) -> list[str]:
        """Deleting a door space: its doorways first. The doorways deleted."""
        doorways = sorted(
            d
            for d, sides in self.doorways.items()
            if space in sides and d not in self.deleted_doorways
        )
        for doorway in doorways:
            self.delete_doorway(doorway, at_ms)
        self.door_spaces.discard(space)
        return doorways

    def reset(self, space: str, at_ms: int, now: int | None = None) -> bool:
        if (space, at_ms) in self.resets:
            return True
        if now is not None and at_ms < now - self.max_age:
            return False
        self.resets.append((space, at_ms))
        return True

    # -- presence -------------------------------------------------------------------------------

    def cell_of(self, lat: float, lng: float) -> int:
        return h3i.latlng_to_cell(lat, lng, self.res)

    def devices(self, now: int) -> list[str]:
        return sorted({p[1] for p in self.pings if p[0] <= now})

    def applied_pings(self, device: str, now: int) -> list[tuple[int, int, float, float]]:
        out, latest = [], None
        for recv, _, ts, lat, lng in self._of.get(device, []):
            if recv <= now and (latest is None or ts > latest):
                latest = ts
                out.append((ts, self.cell_of(lat, lng), lat, lng))
        return sorted(out)

    def intervals(self, device: str, now: int) -> list[tuple[int, int, int]]:
        pings = self.applied_pings(device, now)
        out = []
        for i, (ts, cell, _, _) in enumerate(pings):
            end = ts + self.ttl
            if i + 1 < len(pings):
                end = min(end, pings[i + 1][0])
            end = min(end, self._cut.get(device, end))
            if end > ts:
                out.append((ts, end, cell))
        return out

    def cell_at(self, device: str, t: int, now: int) -> int | None:
        for start, end, cell in self.intervals(device, now):
            if start <= t < end:
                return cell
        return None

    # -- cells ----------------------------------------------------------------------------------

    def counts(self, res: int, t: int, now: int) -> dict[int, int]:
        out: dict[int, int] = {}
        for device in self.devices(now):
            cell = self.cell_at(device, t, now)
            if cell is not None:
                p = h3i.cell_to_parent(cell, res)
                out[p] = out.get(p, 0) + 1
        return out

    def occupancy(self, cell: int, t: int, now: int) -> int:
        return self.counts(h3i.get_resolution(cell), t, now).get(cell, 0)

    @staticmethod
    def _in_bbox(cell: int, bbox) -> bool:
        lat, lng = h3i.cell_to_latlng(cell)
        return bbox[0] <= lng <= bbox[2] and bbox[1] <= lat <= bbox[3]

    def top_n(self, n: int, res: int, t: int, now: int, bbox=None) -> list[tuple[int, int]]:
        items = [
            (c, k)
            for c, k in self.counts(res, t, now).items()
            if bbox is None or self._in_bbox(c, bbox)
        ]
        items.sort(key=lambda x: (-x[1], x[0]))
        return items[:n]

    def heatmap(self, res: int, bbox, t: int, now: int) -> dict[int, int]:
        return {c: k for c, k in self.counts(res, t, now).items() if self._in_bbox(c, bbox)}

    def _minute_sets(self, place_of, now: int) -> dict:
        sets: dict = {}
        for device in self.devices(now):
            for start, end, cell in self.intervals(device, now):
                hi = min(end, now + 1)
                m = start - start % MINUTE
                while m < hi:
                    if max(start, m) < min(hi, m + MINUTE):
                        for place in place_of(cell):
                            sets.setdefault((place, m), set()).add(device)
                    m += MINUTE
        return {k: len(v) for k, v in sets.items()}

    def minute_aggregates(self, res: int, now: int) -> dict[tuple[int, int], int]:
        return self._minute_sets(lambda c: [h3i.cell_to_parent(c, res)], now)

    # -- polygon spaces -------------------------------------------------------------------------

    def space_cells(self, space: str) -> set[int]:
        if space not in self._space_cells:
            polygon = self.polygons[space]
            lngs = [p[0] for p in polygon["coordinates"][0]]
            lats = [p[1] for p in polygon["coordinates"][0]]
            # every cell touched by a fine lattice over the bounding box, and its neighbours
            seeds = set()
            steps = 40
            for i in range(steps + 1):
                for j in range(steps + 1):
                    lat = min(lats) + (max(lats) - min(lats)) * i / steps
                    lng = min(lngs) + (max(lngs) - min(lngs)) * j / steps
                    seeds.add(self.cell_of(lat, lng))
            candidates = {n for s in seeds for n in h3i.grid_disk(s, 1)}
            self._space_cells[space] = {
                c for c in candidates if _inside(polygon, *h3i.cell_to_latlng(c))
            }
        return self._space_cells[space]

    def _spaces_of(self, cell: int) -> list[str]:
        return [s for s in self.polygons if cell in self.space_cells(s)]

    def space_occupancy(self, space: str, t: int, now: int) -> int:
        cells = self.space_cells(space)
        return sum(1 for d in self.devices(now) if self.cell_at(d, t, now) in cells)

    def space_minute_aggregates(self, now: int) -> dict[tuple[str, int], int]:
        return self._minute_sets(self._spaces_of, now)

    # -- door spaces ----------------------------------------------------------------------------

    def door_count(self, space: str, T: int, now: int) -> int:
        resets = [at for s, at in self.resets if s == space and at <= T]
        since = max(resets) if resets else -math.inf
        total = 0
        for recv, sensor, ts, direction in self.doors:
            if recv <= now and since <= ts <= T:
                total += self._signed(space, sensor, ts, direction)
        return max(0, total)

    def _signed(self, space: str, sensor: str, ts: int, direction: int) -> int:
        """The crossing a door event makes for `space` (0: none)."""
        valid = [i for i in self.installs if i[0] == sensor and i[2] <= ts]
        if not valid:
            return 0
        _, doorway, start, positive = max(valid, key=lambda i: i[2])
        if doorway is None:
            return 0
        # a doorway holds one sensor at a time: another installed there since ends this one
        if any(i[1] == doorway and i[0] != sensor and start < i[2] <= ts for i in self.installs):
            return 0
        inside, outside = self.doorways[doorway]
        signed = direction if positive == "in" else -direction
        return signed if space == inside else -signed if space == outside else 0

    # -- series ---------------------------------------------------------------------------------

    @staticmethod
    def series_edges(start: int, end: int, step: int, tz: str) -> list[int]:
        """Bucket edges by scanning every minute: for steps under a day, the instants whose
        wall time in `tz` is a multiple of the step after midnight; for a day, each first
        minute of a local date. The first edge at or before `start`, the last at or after
        `end` (zones whose offsets are whole minutes)."""
        zone = ZoneInfo(tz)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        found = []
        t = start - start % MINUTE - 2 * DAY
        previous = None
        while t <= end + 2 * DAY:
            wall = (epoch + timedelta(milliseconds=t)).astimezone(zone)
            if step == DAY:
                if previous is not None and wall.date() != previous:
                    found.append(t)
                previous = wall.date()
            elif wall.second == 0 and ((wall.hour * 60 + wall.minute) * MINUTE) % step == 0:
                found.append(t)
            t += MINUTE
        first = max(i for i, e in enumerate(found) if e <= start)
        last = min(i for i, e in enumerate(found) if e >= end)
        return found[first : last + 1]

    def _attribute(self, device: str, before: int, key: str, now: int) -> str | None:
        """`key` of the device's latest applied ping with ts < `before` (None: it has none)."""
        pings = [p for p in self.applied_pings(device, now) if p[0] < before]
        if not pings:
            return None
        return self._attrs.get((device, pings[-1][0]), {}).get(key)

    def series(
        self, place: str | int, edges: list[int], now: int, by: str | None = None
    ) -> dict[str | None, list[int]]:
        """{value: devices present in a polygon space or a cell at some instant of each bucket
        (up to `now`)}, the buckets that start at or before `now`; without `by` one value,
        None; with it each device under `key`'s value in its latest applied ping before the
        bucket's end (or now)."""
        if isinstance(place, str):
            inside = self.space_cells(place).__contains__
        else:
            res = h3i.get_resolution(place)
            inside = lambda c: h3i.cell_to_parent(c, res) == place  # noqa: E731
        n = sum(1 for e in edges[:-1] if e <= now)
        out: dict[str | None, list[int]] = {} if by else {None: [0] * n}
        for device in self.devices(now):
            stays = [(s, e) for s, e, c in self.intervals(device, now) if inside(c)]
            for i in range(n):
                a, b = edges[i], min(edges[i + 1], now + 1)
                if any(max(s, a) < min(e, b) for s, e in stays):
                    value = self._attribute(device, b, by, now) if by else None
                    out.setdefault(value, [0] * n)[i] += 1
        return out

    def door_series(self, space: str, edges: list[int], now: int) -> list[tuple[int, int, int]]:
        """(count at the bucket's end or now, entries, exits) of the buckets that start at or
        before `now`."""
        out = []
        for i in range(sum(1 for e in edges[:-1] if e <= now)):
            a, b = edges[i], min(edges[i + 1], now + 1)
            signs = [
                self._signed(space, sensor, ts, direction)
                for recv, sensor, ts, direction in self.doors
                if recv <= now and a <= ts < b
            ]
            count = self.door_count(space, b - 1, now)
            out.append((count, sum(1 for x in signs if x > 0), sum(1 for x in signs if x < 0)))
        return out

    # -- dwell, distance, path ------------------------------------------------------------------

    def dwell(self, device: str, day_ms: int, now: int) -> dict:
        out: dict = {"cells": {}, "spaces": {}}
        for start, end, cell in self.intervals(device, now):
            lo, hi = max(start, day_ms), min(end, now, day_ms + DAY)
            if hi > lo:
                out["cells"][cell] = out["cells"].get(cell, 0) + hi - lo
                for space in self._spaces_of(cell):
                    out["spaces"][space] = out["spaces"].get(space, 0) + hi - lo
        return out

    def distance(self, device: str, from_ms: int, to_ms: int, now: int) -> float:
        pings = self.applied_pings(device, now)
        total = 0.0
        for (t0, _, lat0, lng0), (t1, _, lat1, lng1) in itertools.pairwise(pings):
            if from_ms <= t0 < to_ms and from_ms <= t1 < to_ms:
                total += _haversine(lat0, lng0, lat1, lng1)
        return total

    def path(self, device: str, from_ms: int, to_ms: int, now: int) -> list[tuple]:
        return [
            (ts, lat, lng)
            for ts, _, lat, lng in self.applied_pings(device, now)
            if from_ms <= ts < to_ms
        ]


def _haversine(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))
