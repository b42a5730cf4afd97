"""Counts per cell and per space: live (from the shards, via LiveQueries) or `at=` a past minute
(from history). Viewers get them under the privacy floor."""

from typing import Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import ORJSONResponse

from engine.cells import boundary_lnglat, check_res, parse_cell, resolution, to_str
from engine.geo import BBox
from serve_apps import params
from serve_apps.context import Api, ApiContext
from serve_apps.errors import ApiError, bad, within
from serve_apps.models import (
    CellAnswer,
    Cells,
    SpaceCount,
    SpaceList,
    errors,
    ok,
)
from serve_apps.params import CellPath, bbox_query, time_query
from serve_apps.policy import READ_ROLES

MAX_TOP = 1_000
MAX_HEATMAP_CELLS = 50_000
GEOJSON = "application/geo+json"
RES = Query(None, description="H3 resolution, 0 to the engine's (its own by default)")
AT = time_query(None, description="a past minute (from history) instead of live counts")

router = APIRouter()


HEATMAP = {
    200: {
        "model": Cells,
        "description": "Cells with their counts, or GeoJSON (`format=geojson`)",
        "content": {GEOJSON: {"schema": {"$ref": "#/components/schemas/FeatureCollection"}}},
    },
    **errors(504),
}


@router.get("/v1/heatmap", responses=HEATMAP)
async def heatmap(
    request: Request,
    api: Api,
    bbox: str = bbox_query(),
    res: int | None = RES,
    format: Literal["cells", "geojson"] = "cells",
    at: str | None = AT,
):
    """Counts of every occupied cell in a bbox: live, or `at=` a past minute."""
    role = api.role(request, READ_ROLES)
    box, r = params.bbox(bbox), params.res(res, api.spec)
    t, k = params.at(at), api.floor.k(role)
    if t is not None:
        if k:
            call = api.history.floored_heatmap(r, api.spec.res, t, BBox.to_tuple(box), k)
        else:
            call = api.history.heatmap(r, t, BBox.to_tuple(box))
        counts = await api.from_history(request, call)
        body = _heatmap_body(api, counts, t, r, format, role)
    else:

        async def make() -> bytes:
            now = params.now()
            if k:
                counts = await api.queries.floored_heatmap(r, box, k)
            else:
                counts = await api.queries.heatmap(r, box)
            return _heatmap_body(api, counts, now, r, format, role)

        body = await api.cache.shared(("heatmap", r, bbox, format, role == "admin"), make)
    return params.json_bytes(body, GEOJSON if format == "geojson" else "application/json")


def _heatmap_body(api: ApiContext, counts: dict, now: int, r: int, format: str, role: str):
    if len(counts) > MAX_HEATMAP_CELLS:
        raise ApiError(
            400, "too_many_cells", f"{len(counts)} cells; use a coarser res or a smaller bbox"
        )
    cells = api.floor.cells(sorted(counts.items()), role)
    if format == "geojson":
        features = [
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [boundary_lnglat(parse_cell(c["cell"]))],
                },
                "properties": c,
            }
            for c in cells
        ]
        return orjson.dumps(
            {"type": "FeatureCollection", "res": r, "as_of": now, "features": features}
        )
    return orjson.dumps({"res": r, "as_of": now, "cells": cells})


@router.get("/v1/top", responses=ok(Cells, 504))
async def top(
    request: Request,
    api: Api,
    n: int = Query(10, ge=1, le=MAX_TOP),
    res: int | None = RES,
    bbox: str | None = bbox_query(None),
    at: str | None = AT,
):
    """The `n` cells with the most devices, most first."""
    role = api.role(request, READ_ROLES)
    box, r = params.bbox(bbox), params.res(res, api.spec)
    t, k = params.at(at), api.floor.k(role)
    if t is not None:
        if k:
            call = api.history.floored_top(n, r, api.spec.res, t, BBox.to_tuple(box), k)
        else:
            call = api.history.top(n, r, t, BBox.to_tuple(box))
        ranked = await api.from_history(request, call)
        return ORJSONResponse({"res": r, "as_of": t, "cells": api.floor.cells(ranked, role)})

    async def make() -> bytes:
        now = params.now()
        if k:  # ranked by released counts
            ranked = await api.queries.floored_top(n, r, box, k)
        else:
            ranked = await api.queries.top(n, r, box)
        return orjson.dumps({"res": r, "as_of": now, "cells": api.floor.cells(ranked, role)})

    body = await api.cache.shared(("top", n, r, bbox, role == "admin"), make)
    return params.json_bytes(body)


@router.get("/v1/cells/{cell}", responses=ok(CellAnswer, 504))
async def cell(request: Request, api: Api, cell: CellPath, at: str | None = AT):
    """One cell's count."""
    role = api.role(request, READ_ROLES)
    with bad("bad_cell"):
        c = parse_cell(cell)
        check_res(resolution(c), api.spec.res)
    t, k = params.at(at), api.floor.k(role)
    if t is not None:
        if k:
            call = api.history.floored_cell(c, api.spec.res, t, k)
        else:
            call = api.history.cell_count(c, t)
        count = await api.from_history(request, call)
    elif k:
        count = await api.queries.floored_cell(c, k)
    else:
        count = await api.queries.cell_count(c)
    as_of = t if t is not None else params.now()
    return ORJSONResponse(
        {"cell": to_str(c), "count": api.floor.count(count, role), "as_of": as_of}
    )


@router.get("/v1/spaces", responses=ok(SpaceList, 504))
async def spaces(
    request: Request,
    api: Api,
    at: str | None = AT,
    geometry: bool = False,
):
    """Every space with its count (live, or `at=` as `GET /v1/spaces/{id}` answers it),
    and with `geometry=true` the polygon of each polygon space."""
    role = api.role(request, READ_ROLES)
    t = params.at(at)
    # door spaces exact at t, polygon ones live
    counts = await within(api.queries.space_counts(t))  # may ask history for door counts
    polygon_counts = counts
    if t is not None:  # a polygon space at t is its minute aggregate (history)
        polygon_counts = await api.from_history(request, api.history.space_counts(t))
    metadata = api.definitions.metadata
    out = []
    for space, spec in sorted(metadata.polygon_spaces().items()):
        item = {"space": space, "name": spec["name"], "kind": "polygon"}
        item["count"] = api.floor.count(polygon_counts.get(space, 0), role)
        if geometry:
            item["polygon"] = spec["polygon"]
        out.append(item)
    for space, name in sorted(metadata.door_spaces().items()):
        count = api.floor.count(counts.get(space, 0), role)
        out.append({"space": space, "name": name, "kind": "door", "count": count})
    return ORJSONResponse({"as_of": t if t is not None else params.now(), "spaces": out})


@router.get("/v1/spaces/{space_id}", responses=ok(SpaceCount, 404, 504))
async def space(request: Request, api: Api, space_id: str, at: str | None = AT):
    """One space's count."""
    role = api.role(request, READ_ROLES)
    kind = api.definitions.kind(space_id)
    t = params.at(at)
    # a deleted space is counted at times before its deletion
    gone = api.definitions.deleted(space_id, t) if kind is None and t is not None else None
    if kind is None and gone is None:
        raise ApiError(404, "unknown_space", f"no space {space_id!r}")
    if gone is not None:
        kind = gone["kind"]
        if kind == "door":
            count = await within(api.queries.door_count(space_id, t))
        else:
            count = await api.from_history(request, api.history.space_count(space_id, t))
        return {
            "space": space_id,
            "name": gone["name"],
            "kind": kind,
            "count": api.floor.count(count, role),
            "as_of": t,
        }
    if t is not None and kind != "door":
        # a polygon space's count at T is the minute aggregate of T's minute (history);
        # a door space's is exact at T from its events (live state keeps those of the last
        # OCC_MAX_PING_AGE_S, history all of them)
        count = await api.from_history(request, api.history.space_count(space_id, t))
    else:
        count = await within(api.queries.space_count(space_id, t))
    metadata = api.definitions.metadata
    if kind == "polygon":
        name = metadata.polygon_spaces().get(space_id, {}).get("name", "")
    else:
        name = metadata.door_spaces().get(space_id, "")
    return {
        "space": space_id,
        "name": name,
        "kind": kind,
        "count": api.floor.count(count, role),
        "as_of": t if t is not None else params.now(),
    }
