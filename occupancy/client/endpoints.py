"""The HTTP API's routes as methods with typed answers, built once for both query clients
(occupancy/client/query.py): each method builds its request and names its result type, and
the client's `_call` sends it over its own transport (requests, or aiohttp) and decodes it."""

import datetime
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import quote

import orjson

from occupancy.client import results as r
from occupancy.client.http import TIMEOUT_S

Time = int | str | datetime.datetime


def _time(t: Time | None) -> int | str | None:
    if isinstance(t, datetime.datetime):
        if t.tzinfo is None:
            raise ValueError("a datetime with its time zone, please")
        return int(t.timestamp() * 1000)
    return t


def _attrs(attrs: Mapping[str, str] | None) -> dict[str, str]:
    return {f"attr.{k}": v for k, v in (attrs or {}).items()}


def _seg(value: str) -> str:
    return quote(value, safe="")


def period(from_: Time, to: Time) -> dict:
    return {"from": _time(from_), "to": _time(to)}


def _area(bbox: str | None, polygon: dict | str | None) -> dict:
    if isinstance(polygon, dict):
        polygon = orjson.dumps(polygon).decode()
    return {"bbox": bbox, "polygon": polygon}


class Endpoints:
    """The routes; `_call` sends one and decodes its answer as a result type."""

    def _call(self, method: str, path: str, cls, *, params=None, json=None, timeout=None):
        raise NotImplementedError

    # -- live counts, and counts at a past minute (`at=`) -------------------------------------

    def top(
        self, n: int = 10, res: int | None = None, bbox: str | None = None, at: Time | None = None
    ) -> r.Cells:
        """The `n` busiest cells (of `bbox`, "minLng,minLat,maxLng,maxLat"), most first."""
        return self._call(
            "GET", "/v1/top", r.Cells, params={"n": n, "res": res, "bbox": bbox, "at": _time(at)}
        )

    def heatmap(self, bbox: str, res: int | None = None, at: Time | None = None) -> r.Cells:
        """Every occupied cell of `bbox` with its count."""
        params = {"bbox": bbox, "res": res, "at": _time(at)}
        return self._call("GET", "/v1/heatmap", r.Cells, params=params)

    def heatmap_geojson(self, bbox: str, res: int | None = None, at: Time | None = None) -> dict:
        """The heatmap as a GeoJSON FeatureCollection of hexagons."""
        params = {"bbox": bbox, "res": res, "at": _time(at), "format": "geojson"}
        return self._call("GET", "/v1/heatmap", dict, params=params)

    def cell(self, cell: str, at: Time | None = None) -> r.CellAnswer:
        return self._call("GET", f"/v1/cells/{_seg(cell)}", r.CellAnswer, params={"at": _time(at)})

    def spaces(self, at: Time | None = None, geometry: bool = False) -> r.SpaceList:
        params = {"at": _time(at), "geometry": geometry or None}
        return self._call("GET", "/v1/spaces", r.SpaceList, params=params)

    def space(self, space_id: str, at: Time | None = None) -> r.SpaceCount:
        path = f"/v1/spaces/{_seg(space_id)}"
        return self._call("GET", path, r.SpaceCount, params={"at": _time(at)})

    def series(
        self,
        from_: Time,
        to: Time,
        step: Literal["1m", "5m", "15m", "1h", "1d"],
        *,
        space: str | None = None,
        cell: str | None = None,
        by: str | None = None,
        tz: str = "UTC",
    ) -> r.Series:
        """Counts of a space or a cell (give one) per bucket of `step`, aligned to the wall
        clock of `tz`; `by="attr.K"`: one series per value of ping attribute K."""
        params = {**period(from_, to), "step": step, "space": space, "cell": cell, "by": by}
        return self._call("GET", "/v1/series", r.Series, params=params | {"tz": tz})

    def doorways(self) -> r.DoorwayList:
        """Every doorway, with the sensors installed on it over time."""
        return self._call("GET", "/v1/doorways", r.DoorwayList)

    # -- ingest over HTTP (an ingest or admin key, or a device token) ---------------------------

    def send_pings(self, pings: Iterable[Mapping[str, Any]]) -> r.Ack:
        """`POST /v1/pings`: each ping a mapping of `device_id`, `lat`, `lng` and optionally
        `ts_ms` (now when left out), `accuracy_m`, `region`, `attributes`. Accepted pings are
        durable; a bad one is rejected with its index and reason, the rest go on."""
        now = int(time.time() * 1000)
        items = [{"ts_ms": now, **p} for p in pings]
        return self._call("POST", "/v1/pings", r.Ack, json={"pings": items})

    def send_door_events(self, events: Iterable[Mapping[str, Any]]) -> r.Ack:
        """`POST /v1/door-events`: each a mapping of `sensor_id`, `direction` (1 or -1) and
        optionally `ts_ms` (now when left out)."""
        now = int(time.time() * 1000)
        items = [{"ts_ms": now, **e} for e in events]
        return self._call("POST", "/v1/door-events", r.Ack, json={"events": items})

    # -- devices and history (admin) ------------------------------------------------------------

    def dwell(self, device_id: str, day: str) -> r.Dwell:
        """Seconds `device_id` spent per cell and space on a UTC day (YYYY-MM-DD)."""
        path = f"/v1/users/{_seg(device_id)}/dwell"
        return self._call("GET", path, r.Dwell, params={"day": day})

    def devices(
        self,
        from_: Time,
        to: Time,
        *,
        bbox: str | None = None,
        polygon: dict | str | None = None,
        attrs: Mapping[str, str] | None = None,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> r.Devices:
        """Devices with an applied ping in the area (a bbox or a GeoJSON polygon) in [from, to)."""
        params = {
            **period(from_, to),
            **_area(bbox, polygon),
            **_attrs(attrs),
            "limit": limit,
            "timeout_s": timeout_s,
        }
        return self._call(
            "GET", "/v1/history/devices", r.Devices, params=params, timeout=_wait(timeout_s)
        )

    def path(self, device_id: str, from_: Time, to: Time) -> r.DevicePath:
        """A device's applied pings in [from, to)."""
        path = f"/v1/history/path/{_seg(device_id)}"
        return self._call("GET", path, r.DevicePath, params=period(from_, to))

    def paths(
        self,
        from_: Time,
        to: Time,
        *,
        bbox: str | None = None,
        polygon: dict | str | None = None,
        space: str | None = None,
        attrs: Mapping[str, str] | None = None,
        limit: int | None = None,
        timeout_s: float | None = None,
        geojson: bool = False,
    ) -> r.Paths:
        """The paths in [from, to) of the devices with an applied ping in the area (a bbox, a
        GeoJSON polygon or a polygon space) during it, by pseudonym; with `geojson`, a
        FeatureCollection of LineStrings (a dict)."""
        params = {**period(from_, to), **_area(bbox, polygon), "space": space, **_attrs(attrs)}
        params |= {"limit": limit, "timeout_s": timeout_s, "format": "geojson" if geojson else None}
        cls = dict if geojson else r.Paths
        return self._call("GET", "/v1/history/paths", cls, params=params, timeout=_wait(timeout_s))

    def distance(
        self,
        from_: Time,
        to: Time,
        *,
        device_id: str | None = None,
        attrs: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> r.Distance:
        """Metres travelled in [from, to): the average, and per device for admins."""
        params = {
            **period(from_, to),
            **_attrs(attrs),
            "device_id": device_id,
            "timeout_s": timeout_s,
        }
        return self._call(
            "GET", "/v1/history/distance", r.Distance, params=params, timeout=_wait(timeout_s)
        )

    # -- definitions (admin) --------------------------------------------------------------------

    def define_space(
        self, space_id: str, polygon: dict | None = None, name: str = ""
    ) -> r.SpaceDefined:
        """A polygon space (with a GeoJSON `polygon`) or a door space (without)."""
        body = {"name": name, "polygon": polygon}
        return self._call("PUT", f"/v1/spaces/{_seg(space_id)}", r.SpaceDefined, json=body)

    def define_doorway(
        self, doorway_id: str, inside: str, outside: str | None = None
    ) -> r.DoorwayDefined:
        body = {"inside": inside, "outside": outside}
        return self._call("PUT", f"/v1/doorways/{_seg(doorway_id)}", r.DoorwayDefined, json=body)

    def install(
        self,
        doorway_id: str,
        sensor_id: str,
        from_: Time,
        positive: Literal["in", "out"] = "in",
        doorway_removed: bool = False,
    ) -> r.Installed:
        body = {
            "sensor_id": sensor_id,
            "from": _time(from_),
            "positive": positive,
            "doorway_removed": doorway_removed,
        }
        path = f"/v1/doorways/{_seg(doorway_id)}/installations"
        return self._call("POST", path, r.Installed, json=body)

    def reset(self, space_id: str, at: Time) -> r.ResetDone:
        path = f"/v1/spaces/{_seg(space_id)}/resets"
        return self._call("POST", path, r.ResetDone, json={"at": _time(at)})

    def delete_space(self, space_id: str) -> r.SpaceDeleted:
        """Delete a space now (a door space's doorways with it); its past stays countable."""
        return self._call("DELETE", f"/v1/spaces/{_seg(space_id)}", r.SpaceDeleted)

    def delete_doorway(self, doorway_id: str) -> r.DoorwayDeleted:
        """Delete a doorway now: the sensors on it count nowhere from now."""
        return self._call("DELETE", f"/v1/doorways/{_seg(doorway_id)}", r.DoorwayDeleted)

    # -- operations (admin; health needs no key) ------------------------------------------------

    def health(self) -> r.Health:
        """The engine's health; a degraded one is an answer too, not an error."""
        return self._call("GET", "/v1/health", r.Health)

    def status(self) -> r.Status:
        return self._call("GET", "/v1/admin/status", r.Status)

    def deadletter(self, limit: int = 20) -> r.DeadLetters:
        return self._call("GET", "/v1/admin/deadletter", r.DeadLetters, params={"limit": limit})

    def audit(
        self,
        from_: Time | None = None,
        to: Time | None = None,
        *,
        key_id: str | None = None,
        route: str | None = None,
        limit: int = 100,
    ) -> r.AuditLog:
        params = {**period(from_, to), "key": key_id, "route": route, "limit": limit}
        return self._call("GET", "/v1/admin/audit", r.AuditLog, params=params)

    def keys(self) -> r.Keys:
        return self._call("GET", "/v1/admin/keys", r.Keys)

    def revoke_key(self, key_id: str) -> r.Revoked:
        return self._call("DELETE", f"/v1/admin/keys/{_seg(key_id)}", r.Revoked)

    def revoke_token(self, token_id: str, device: bool = False) -> r.Revoked:
        path = f"/v1/admin/tokens/{_seg(token_id)}"
        return self._call("DELETE", path, r.Revoked, params={"device": device or None})

    def forget(self, device_id: str) -> r.Forgotten:
        path = f"/v1/admin/devices/{_seg(device_id)}"
        return self._call("DELETE", path, r.Forgotten, timeout=90)

    def scale(
        self,
        user_shards: int | None = None,
        cell_shards: int | None = None,
        ingest_handlers: int | None = None,
    ) -> r.ScaleAccepted:
        body = {
            "user_shards": user_shards,
            "cell_shards": cell_shards,
            "ingest_handlers": ingest_handlers,
        }
        return self._call("POST", "/v1/admin/scale", r.ScaleAccepted, json=body, timeout=120)


def answers_of(cls) -> tuple[int, ...]:
    """Error statuses whose body is the route's answer: a degraded health check's 503."""
    return (503,) if cls is r.Health else ()


def _wait(timeout_s: float | None) -> float | None:
    """The HTTP timeout of a history query given `timeout_s`: longer, so the engine's own 504
    comes first."""
    return None if timeout_s is None else max(TIMEOUT_S, timeout_s + 10)
