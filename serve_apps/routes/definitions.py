"""Spaces, doorways, sensor installations and door-space resets (admins): validated by the engine,
stored and sent to the shards by `Definitions`. Each is idempotent."""

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StrictBool

from engine.timeutil import parse_time
from serve_apps.context import Api
from serve_apps.errors import ApiError, bad
from serve_apps.models import (
    DoorwayDefined,
    DoorwayDeleted,
    DoorwayList,
    Installed,
    ResetDone,
    SpaceDefined,
    SpaceDeleted,
    ok,
)
from serve_apps.params import BodyTime, IdPath, check_id, note_params
from serve_apps.policy import ADMIN, READ_ROLES

router = APIRouter()


class PolygonSpaceBody(BaseModel):
    name: str = Field("", max_length=200)
    polygon: dict | None = Field(None, description="a GeoJSON Polygon; none: a door space")


class DoorwayBody(BaseModel):
    inside: str = Field(min_length=1, max_length=200)
    outside: str | None = Field(None, max_length=200)


class InstallationBody(BaseModel):
    sensor_id: str = Field(min_length=1, max_length=128)
    from_: BodyTime = Field(alias="from")
    positive: Literal["in", "out"] = "in"
    doorway_removed: StrictBool = False


class ResetBody(BaseModel):
    at: BodyTime


@router.put("/v1/spaces/{space_id}", responses=ok(SpaceDefined))
async def put_space(request: Request, api: Api, space_id: IdPath, body: PolygonSpaceBody):
    """Define a polygon space (with `polygon`) or a door space (without)."""
    api.role(request, ADMIN)
    check_id(space_id)
    note_params(request, name=body.name, kind="door" if body.polygon is None else "polygon")
    with bad("bad_space"):
        if body.polygon is not None:
            cells = await api.definitions.define_polygon_space(space_id, body.polygon, body.name)
            return {"space": space_id, "kind": "polygon", "name": body.name, "cells": cells}
        await api.definitions.define_door_space(space_id, body.name)
    return {"space": space_id, "kind": "door", "name": body.name}


@router.put("/v1/doorways/{doorway_id}", responses=ok(DoorwayDefined))
async def put_doorway(request: Request, api: Api, doorway_id: IdPath, body: DoorwayBody):
    """Define a doorway between two door spaces (`outside` null: the world)."""
    api.role(request, ADMIN)
    check_id(doorway_id)
    note_params(request, inside=body.inside, outside=body.outside)
    with bad("bad_doorway"):
        await api.definitions.define_doorway(doorway_id, body.inside, body.outside)
    return {"doorway": doorway_id, "inside": body.inside, "outside": body.outside}


@router.delete("/v1/spaces/{space_id}", responses=ok(SpaceDeleted, 404))
async def delete_space(request: Request, api: Api, space_id: IdPath):
    """Delete a space now: its live count and definition go, and a door space's doorways
    with it (their sensors count nowhere from now). Counts of times before stay in history
    (`at=` before the deletion, series that end before it)."""
    api.role(request, ADMIN)
    deleted = await api.definitions.delete_space(space_id)
    if deleted is None:
        raise ApiError(404, "unknown_space", f"no space {space_id!r}")
    kind, at, doorways = deleted
    return {"deleted": "space", "space": space_id, "kind": kind, "at": at, "doorways": doorways}


@router.delete("/v1/doorways/{doorway_id}", responses=ok(DoorwayDeleted, 404))
async def delete_doorway(request: Request, api: Api, doorway_id: IdPath):
    """Delete a doorway now: the sensors on it count nowhere from now (an installation
    nowhere each); its crossings before still count, for the past and for its spaces."""
    api.role(request, ADMIN)
    deleted = await api.definitions.delete_doorway(doorway_id)
    if deleted is None:
        raise ApiError(404, "unknown_doorway", f"no doorway {doorway_id!r}")
    at, sensors = deleted
    return {"deleted": "doorway", "doorway": doorway_id, "at": at, "sensors": sensors}


@router.get("/v1/doorways", responses=ok(DoorwayList))
async def doorways(request: Request, api: Api):
    """Every doorway, with the sensors installed on it over time."""
    api.role(request, READ_ROLES)
    metadata = api.definitions.metadata
    on: dict[str, list[dict]] = {}
    for sensor, doorway, start, positive in metadata.installations():
        if doorway is not None:
            on.setdefault(doorway, []).append(
                {"sensor_id": sensor, "from": start, "positive": positive}
            )
    out = [
        {
            "doorway": doorway,
            "inside": inside,
            "outside": outside,
            "installations": sorted(on.get(doorway, []), key=lambda i: (i["from"], i["sensor_id"])),
        }
        for doorway, (inside, outside) in sorted(metadata.doorways().items())
    ]
    return {"doorways": out}


@router.post(
    "/v1/doorways/{doorway_id}/installations", status_code=201, responses=ok(Installed, status=201)
)
async def install(request: Request, api: Api, doorway_id: IdPath, body: InstallationBody):
    """A door sensor counts at this doorway from `from` (or, `doorway_removed`, nowhere)."""
    api.role(request, ADMIN)
    note_params(
        request,
        sensor_id=body.sensor_id,
        **{"from": body.from_},
        positive=body.positive,
        doorway_removed=body.doorway_removed,
    )
    with bad("bad_time"):
        start = parse_time(str(body.from_))
    with bad("bad_installation"):
        doorway = None if body.doorway_removed else doorway_id
        await api.definitions.install(body.sensor_id, doorway, start, body.positive)
    return {
        "doorway": doorway_id,
        "sensor_id": body.sensor_id,
        "from": start,
        "positive": body.positive,
    }


@router.post("/v1/spaces/{space_id}/resets", status_code=201, responses=ok(ResetDone, status=201))
async def reset(request: Request, api: Api, space_id: IdPath, body: ResetBody):
    """A door space's count is 0 at `at` (a count corrected by hand)."""
    api.role(request, ADMIN)
    note_params(request, at=body.at)
    with bad("bad_time"):
        at = parse_time(str(body.at))
    with bad("bad_space"):
        await api.definitions.reset(space_id, at)
    return {"space": space_id, "at": at}
