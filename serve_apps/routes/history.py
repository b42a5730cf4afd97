"""Per-device and raw-archive answers (history, with live state where it still holds them), and
exports. Devices are named by raw id for admins, by pseudonym otherwise."""

from typing import Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import ORJSONResponse, Response

from clickhouse.raw_queries import EXPORT_FORMATS
from engine.cells import to_str
from engine.geo import BBox, polygon_bbox, validate_polygon
from engine.history import dwell_of
from engine.timeutil import parse_day
from serve_apps import params
from serve_apps.context import Api
from serve_apps.errors import STORE_GRACE_S, ApiError, bad
from serve_apps.models import DevicePath, Devices, Distance, Dwell, errors, ok
from serve_apps.params import DeviceId, bbox_query, day_query, time_query
from serve_apps.policy import ADMIN, READ_ROLES, per_device

router = APIRouter()

FROM = time_query(
    alias="from", description="the period's start (included)", example="2026-01-01T00:00:00Z"
)
TO = time_query(
    description="the period's end (excluded), after `from`", example="2026-01-02T00:00:00Z"
)
EXPORT = {
    200: {
        "description": "The rows as a file",
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for _, media in EXPORT_FORMATS.values()
        },
    },
    **errors(504),
}


@router.get("/v1/users/{device_id}/dwell", responses=ok(Dwell, 404, 504))
async def dwell(request: Request, api: Api, device_id: DeviceId, day: str = day_query()):
    """Seconds a device spent per cell and per space in a UTC day."""
    api.role(request, ADMIN)
    with bad("bad_day"):
        d = parse_day(day)
    key = api.device(request, device_id)
    # live state where it holds the day, else history's pieces with the owed ones over them
    live = await api.queries.dwell_live(key, d)
    if "dwell" in live:
        found = live["dwell"]
    else:
        stored = await api.from_history(request, api.history.dwell_pieces(key, d))
        found = dwell_of(stored, live["owed"])
    return ORJSONResponse(
        {
            "device_id": device_id,
            "day": day,
            "cells": [
                {"cell": to_str(c), "seconds": ms / 1000}
                for c, ms in sorted(found["cells"].items(), key=lambda x: -x[1])
            ],
            "spaces": [
                {"space": s, "seconds": ms / 1000}
                for s, ms in sorted(found["spaces"].items(), key=lambda x: -x[1])
            ],
        }
    )


@router.get("/v1/history/devices", responses=ok(Devices, 504))
async def history_devices(
    request: Request,
    api: Api,
    from_: str = FROM,
    to: str = TO,
    bbox: str | None = bbox_query(None),
    polygon: str | None = Query(
        None,
        description="a GeoJSON Polygon, in place of bbox",
        json_schema_extra=params.POLYGON_SCHEMA,
    ),
    limit: int = Query(1000, ge=1, le=100_000),
    timeout_s: float = Query(30.0, gt=0, le=300),
):
    """Devices with an applied ping inside the area (GeoJSON polygon, holes respected, or
    bbox) during [from, to), filtered by ping attributes `attr.K=V`."""
    role = api.role(request, ADMIN)
    t0, t1 = params.period(from_, to)
    if (bbox is None) == (polygon is None):
        raise ApiError(400, "bad_area", "give exactly one of bbox and polygon")
    shape = None
    if polygon is not None:
        with bad("bad_polygon"):
            shape = validate_polygon(orjson.loads(polygon))
            box = polygon_bbox(shape)
    else:
        box = params.bbox(bbox)
    attrs = params.attrs(request)
    call = api.history.devices_in_area(t0, t1, BBox.to_tuple(box), shape, attrs, limit, timeout_s)
    found, truncated = await api.from_history(request, call, timeout_s, STORE_GRACE_S)
    names = api.device_ids([d for d, _, _ in found], role)
    devices = [{"device_id": names[d], "first_seen": a, "last_seen": b} for d, a, b in found]
    return ORJSONResponse({"devices": devices, "truncated": truncated})


@router.get("/v1/history/path/{device_id}", responses=ok(DevicePath, 404, 504))
async def history_path(
    request: Request,
    api: Api,
    device_id: DeviceId,
    from_: str = FROM,
    to: str = TO,
):
    """A device's applied pings in [from, to)."""
    api.role(request, ADMIN)
    t0, t1 = params.period(from_, to)
    key = api.device(request, device_id)
    points = await api.from_history(request, api.history.path(key, t0, t1))
    return ORJSONResponse(
        {
            "device_id": device_id,
            "points": [{"ts": ts, "lat": lat, "lng": lng} for ts, lat, lng in points],
        }
    )


@router.get("/v1/history/distance", responses=ok(Distance, 404, 504))
async def history_distance(
    request: Request,
    api: Api,
    from_: str = FROM,
    to: str = TO,
    device_id: str | None = Query(
        None,
        description="a raw device id (1 to 128 bytes) or its pseudonym",
        json_schema_extra=params.DEVICE_ID_SCHEMA,
    ),
    timeout_s: float = Query(30.0, gt=0, le=300),
):
    """Metres between consecutive applied pings in [from, to) per device (admins) and their
    average; `attr.K=V` keeps the devices with a ping carrying those attributes."""
    role = api.role(request, READ_ROLES)
    t0, t1 = params.period(from_, to)
    attrs = params.attrs(request)
    api.floor.check_attrs(attrs, role)
    key = None
    if device_id is not None:
        per_device(role)
        key = api.device(request, device_id)
    call = api.history.distance(t0, t1, attrs, key, timeout_s)
    meters = await api.from_history(request, call, timeout_s, STORE_GRACE_S)
    average = sum(meters.values()) / len(meters) if meters else 0.0
    body: dict = {"average_meters": average, "device_count": len(meters)}
    if role == "admin":
        names = api.device_ids(sorted(meters), role)
        body["devices"] = [{"device_id": names[d], "meters": meters[d]} for d in sorted(meters)]
    elif api.k_min and not await api.floor.filter_released(
        api.history, t0, t1, attrs, len(meters), timeout_s
    ):
        body = {"average_meters": 0.0, "device_count": 0}
    return ORJSONResponse(body)


@router.get("/v1/export", responses=EXPORT, response_class=Response)
async def export(
    request: Request,
    api: Api,
    what: Literal["pings", "cells", "spaces", "dwell", "doors"],
    from_: str = FROM,
    to: str = TO,
    format: Literal["csv", "json", "parquet", "arrow"] = "csv",
):
    """A download of history rows with their time in [from, to); devices as pseudonyms."""
    api.role(request, ADMIN)
    t0, t1 = params.period(from_, to)
    data = await api.from_history(request, api.history.export(what, t0, t1, format))
    _, media = EXPORT_FORMATS[format]
    name = f"occupancy-{what}-{t0}-{t1}.{format}"
    return Response(
        data,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
