"""`QueryClient` and `AsyncQueryClient`: the HTTP API's query, history, definition and operator
routes as methods with typed answers (occupancy/client/results.py).

    with QueryClient() as api:                       # OCC_API_KEY, OCC_HTTP_PORT, OCC_TLS_CA
        for c in api.top(n=5).cells:
            print(c.cell, c.count)

    async with AsyncQueryClient() as api:
        print((await api.space("mall-food-court")).count)

Each method of AsyncQueryClient is the same as QueryClient's and returns an awaitable of the
same answer. Errors are ApiError (`status`, `code`, `retry_after`), Unreachable when nothing
answers. Times are ms since the epoch, ISO 8601 text or datetimes; `attrs` filters by ping
attributes (`attr.K=V`). Routes without a method here: `get`, `post`, `delete` (decoded JSON).
"""

import datetime
from collections.abc import Mapping
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import orjson

from occupancy.client import config
from occupancy.client import results as r
from occupancy.client.http import TIMEOUT_S, AsyncTransport, Transport
from occupancy.settings import Settings

T = TypeVar("T")
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


def _period(from_: Time, to: Time) -> dict:
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
            **_period(from_, to),
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
        return self._call("GET", path, r.DevicePath, params=_period(from_, to))

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
        params = {**_period(from_, to), **_area(bbox, polygon), "space": space, **_attrs(attrs)}
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
            **_period(from_, to),
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
        params = {**_period(from_, to), "key": key_id, "route": route, "limit": limit}
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


def _answers(cls) -> tuple[int, ...]:
    """Error statuses whose body is the route's answer: a degraded health check's 503."""
    return (503,) if cls is r.Health else ()


def _wait(timeout_s: float | None) -> float | None:
    """The HTTP timeout of a history query given `timeout_s`: longer, so the engine's own 504
    comes first."""
    return None if timeout_s is None else max(TIMEOUT_S, timeout_s + 10)


class QueryClient(Endpoints):
    """The HTTP API over one kept-alive connection pool, with one key.

    `url` defaults to `http(s)://127.0.0.1:OCC_HTTP_PORT` (https while the data dir's engine
    runs with TLS), `key` to OCC_API_KEY or the data dir's admin key, `tls_ca` (a CA file, or
    True / "system") to OCC_TLS_CA or the CA the data dir's engine recorded
    (occupancy/client/config.py)."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        tls_ca: config.Trust = None,
        timeout_s: float = TIMEOUT_S,
        settings: Settings | None = None,
    ):
        s = config.settings(settings)
        base, verify = config.http_base(url, tls_ca, s)
        self.transport = Transport(base, config.key(key, config.API_KEY, s), verify, timeout_s)

    @property
    def url(self) -> str:
        return self.transport.url

    @property
    def verify(self) -> str | bool:
        return self.transport.verify

    @property
    def headers(self) -> dict[str, str]:
        return self.transport.headers

    def request(
        self, method: str, path: str, *, params=None, json=None, timeout=None, answers=()
    ) -> Any:
        """The decoded answer of any route; ApiError for an error status (but `answers`)."""
        return self.transport.request(
            method, path, params=params, json=json, timeout=timeout, answers=answers
        )

    def get(self, path: str, timeout: float | None = None, **params) -> Any:
        """GET `path`; parameters that are None are left out."""
        return self.request("GET", path, params=params, timeout=timeout)

    def post(self, path: str, body: dict, timeout: float | None = None) -> Any:
        return self.request("POST", path, json=body, timeout=timeout)

    def delete(self, path: str, timeout: float = 90) -> Any:
        return self.request("DELETE", path, timeout=timeout)

    def download(self, path: str, params: dict, timeout: float = 600):
        """A context manager of the streamed answer (`requests.Response`, `iter_content`)."""
        return self.transport.download(path, params, timeout)

    def export(self, what: str, from_: Time, to: Time, format: str = "parquet") -> bytes:
        """History rows of [from, to) as a file's bytes (`what`: pings, cells, spaces, dwell,
        doors; `format`: csv, json, parquet, arrow)."""
        params = {"what": what, **_period(from_, to), "format": format}
        with self.download("/v1/export", params) as answer:
            return answer.content

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "QueryClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _call(self, method, path, cls, *, params=None, json=None, timeout=None):
        body = self.request(
            method, path, params=params, json=json, timeout=timeout, answers=_answers(cls)
        )
        return r.decode(cls, body)


class AsyncQueryClient(Endpoints):
    """QueryClient for asyncio (aiohttp): the same arguments, defaults and methods, each
    returning an awaitable."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        tls_ca: config.Trust = None,
        timeout_s: float = TIMEOUT_S,
        settings: Settings | None = None,
    ):
        s = config.settings(settings)
        base, verify = config.http_base(url, tls_ca, s)
        self.transport = AsyncTransport(base, config.key(key, config.API_KEY, s), verify, timeout_s)

    @property
    def url(self) -> str:
        return self.transport.url

    async def request(
        self, method: str, path: str, *, params=None, json=None, timeout=None, answers=()
    ) -> Any:
        """As QueryClient.request."""
        return await self.transport.request(
            method, path, params=params, json=json, timeout=timeout, answers=answers
        )

    async def get(self, path: str, timeout: float | None = None, **params) -> Any:
        return await self.request("GET", path, params=params, timeout=timeout)

    async def post(self, path: str, body: dict, timeout: float | None = None) -> Any:
        return await self.request("POST", path, json=body, timeout=timeout)

    async def delete(self, path: str, timeout: float = 90) -> Any:
        return await self.request("DELETE", path, timeout=timeout)

    async def export(self, what: str, from_: Time, to: Time, format: str = "parquet") -> bytes:
        params = {"what": what, **_period(from_, to), "format": format}
        return await self.transport.download("/v1/export", params)

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> "AsyncQueryClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def _call(self, method, path, cls, *, params=None, json=None, timeout=None):
        body = await self.request(
            method, path, params=params, json=json, timeout=timeout, answers=_answers(cls)
        )
        return r.decode(cls, body)
