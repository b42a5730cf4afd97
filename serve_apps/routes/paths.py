"""The paths of many devices (admins): every device that was inside an area (a bbox, a GeoJSON
polygon or a polygon space) during a period, with its path over the period. Devices are named
by pseudonym only: a map of many people's movements must not carry who they are."""

from typing import Literal

import orjson
from fastapi import APIRouter, Query, Request

from engine.geo import BBox, polygon_bbox, validate_polygon
from engine.pseudonym import pseudonym_str
from engine.spaces import SpaceIndex
from serve_apps import params
from serve_apps.context import Api, ApiContext
from serve_apps.errors import STORE_GRACE_S, ApiError, bad
from serve_apps.models import Paths, errors
from serve_apps.params import bbox_query, json_bytes
from serve_apps.policy import ADMIN
from serve_apps.routes.history import FROM, TO
from serve_apps.routes.live import GEOJSON

router = APIRouter()

MAX_PATHS = 10_000
PATHS = {
    200: {
        "model": Paths,
        "description": "Each device's path, or GeoJSON LineStrings (`format=geojson`)",
        "content": {GEOJSON: {"schema": {"$ref": "#/components/schemas/PathCollection"}}},
    },
    **errors(404, 504),
}


@router.get("/v1/history/paths", responses=PATHS)
async def history_paths(
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
    space: str | None = Query(
        None,
        description="a polygon space, in place of bbox: inside means in one of its cells",
        json_schema_extra={"minLength": 1, "maxLength": 200},
    ),
    limit: int = Query(100, ge=1, le=MAX_PATHS),
    timeout_s: float = Query(30.0, gt=0, le=300),
    format: Literal["json", "geojson"] = "json",
):
    """The paths in [from, to) (every applied ping of the period, by time) of the devices with
    an applied ping inside the area during it (`bbox`, a `polygon` with its holes, or a
    polygon `space`'s cells), filtered by that ping's attributes `attr.K=V`; at most `limit`
    devices, by pseudonym. Devices are named by pseudonym only."""
    api.role(request, ADMIN)
    t0, t1 = params.period(from_, to)
    if sum(a is not None for a in (bbox, polygon, space)) != 1:
        raise ApiError(400, "bad_area", "give exactly one of bbox, polygon and space")
    box, shape, cells = _area(api, bbox, polygon, space)
    attrs = params.attrs(request)
    call = api.history.paths_in_area(
        t0, t1, BBox.to_tuple(box), shape, cells, attrs, limit, timeout_s
    )
    found, truncated = await api.from_history(request, call, timeout_s, STORE_GRACE_S)
    if format == "geojson":
        features = [_feature(d, points) for d, points in found]
        body = {"type": "FeatureCollection", "from": t0, "to": t1, "truncated": truncated}
        return json_bytes(orjson.dumps(body | {"features": features}), GEOJSON)
    paths = [
        {
            "device": pseudonym_str(d),
            "points": [{"ts": ts, "lat": lat, "lng": lng} for ts, lat, lng in points],
        }
        for d, points in found
    ]
    return json_bytes(orjson.dumps({"from": t0, "to": t1, "paths": paths, "truncated": truncated}))


def _area(api: ApiContext, bbox: str | None, polygon: str | None, space: str | None):
    """(the bbox to search, the polygon to check pings against, the cells to check them
    against): one of the last two at most."""
    if bbox is not None:
        return params.bbox(bbox), None, None
    if polygon is not None:
        with bad("bad_polygon"):
            shape = validate_polygon(orjson.loads(polygon))
            return polygon_bbox(shape), shape, None
    kind = api.definitions.kind(space)
    if kind is None:
        raise ApiError(404, "unknown_space", f"no space {space!r}")
    if kind != "polygon":
        raise ApiError(400, "bad_area", f"{space!r} is counted at its doors: it has no area")
    shape = api.definitions.metadata.polygon_spaces()[space]["polygon"]
    cells = SpaceIndex(api.spec.res).define(space, shape)
    return polygon_bbox(validate_polygon(shape)), None, sorted(cells)


def _feature(device: int, points: list) -> dict:
    coordinates = [[lng, lat] for _, lat, lng in points]
    if len(coordinates) == 1:  # a LineString has two positions at least
        coordinates *= 2
    return {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": coordinates},
        "properties": {"device": pseudonym_str(device), "times": [ts for ts, _, _ in points]},
    }
