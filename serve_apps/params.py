"""Request parameters in the engine's terms; each malformed one is a 400 with its own code.

The annotated types below carry what OpenAPI says of a parameter: what these functions accept.
A rule JSON Schema cannot state (a bbox's corners in order, an H3 cell's bits) is named by a
`format`: generated clients ignore it, and a test generates valid values for it."""

import re
import time
from typing import Annotated

from fastapi import Path, Query, Request
from fastapi.responses import Response
from pydantic import BeforeValidator, Field

from engine.cells import check_res
from engine.geo import BBox
from engine.spec import EngineSpec
from engine.timeutil import EARLIEST_MS, LATEST_MS, parse_time
from serve_apps.audit import note
from serve_apps.errors import ApiError, bad

_LNG = r"-?(180(\.0*)?|(1[0-7][0-9]|[1-9]?[0-9])(\.[0-9]*)?)"
_LAT = r"-?(90(\.0*)?|[1-8]?[0-9](\.[0-9]*)?)"
BBOX_PATTERN = f"^{_LNG},{_LAT},{_LNG},{_LAT}$"
_BBOX = re.compile(BBOX_PATTERN)
_ISO_TIMES = [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]
# a time in a query: ms since the epoch (digits), or an RFC 3339 time or day; every one of them
# is accepted, at any UTC offset (engine.timeutil.parse_time)
TIME_SCHEMA = {
    "anyOf": [{"type": "integer", "minimum": EARLIEST_MS, "maximum": LATEST_MS}, *_ISO_TIMES]
}
BBOX_SCHEMA = {
    "pattern": BBOX_PATTERN,
    "format": "bbox",  # west <= east, south <= north
    "examples": ["-8.7,52.6,-8.5,52.7"],
}
POLYGON_SCHEMA = {
    "format": "geojson-polygon",  # a GeoJSON Polygon, as JSON text: rings closed, no crossing
}
CELL_SCHEMA = {
    "pattern": "^[0-9a-fA-F]{1,16}$",
    "format": "h3-cell",
    "examples": ["89195da49b7ffff"],
}


def json_int(value):
    if isinstance(value, bool | str):  # what JSON Schema's "integer" is not (44.0 is)
        raise ValueError("an integer")
    return value


JsonInt = Annotated[int, BeforeValidator(json_int)]  # a body's integer, as JSON has it
# a time in a body: as in a query, or ms since the epoch as a number
BodyTime = Annotated[
    str | JsonInt,
    Field(
        description="ms since the epoch, or ISO 8601 (UTC if naive)",
        json_schema_extra={
            "anyOf": [*TIME_SCHEMA["anyOf"], {"type": "string", "pattern": "^-?[0-9]{1,13}$"}]
        },
    ),
]


def bbox_query(default=...):
    return Query(
        default,
        description="minLng,minLat,maxLng,maxLat (degrees)",
        json_schema_extra=BBOX_SCHEMA,
    )


def _time_schema(schema: dict) -> None:
    schema.pop("type", None)  # a string in the query, though its ms form is an integer
    schema.update(TIME_SCHEMA)


def time_query(default=..., alias: str | None = None, description: str = "", example=None):
    return Query(
        default,
        alias=alias,
        examples=None if example is None else [example],
        description=f"{description}: ms since the epoch, or ISO 8601 (UTC if naive)".lstrip(": "),
        json_schema_extra=_time_schema,
    )


def day_query():
    return Query(description="a UTC day (YYYY-MM-DD)", json_schema_extra={"format": "date"})


CellPath = Annotated[str, Path(description="an H3 cell id (hex)", json_schema_extra=CELL_SCHEMA)]
IdPath = Annotated[
    str,
    Path(
        description="1 to 200 bytes (UTF-8) without / ? #",
        json_schema_extra={"pattern": "^[^/?#]{1,200}$", "format": "id200"},
    ),
]
# 1 to 128 bytes: characters count at most that, and the format counts the bytes
DEVICE_ID_SCHEMA = {"minLength": 1, "maxLength": 128, "format": "id128"}
DeviceId = Annotated[
    str,
    Path(
        description="a raw device id (1 to 128 bytes) or its pseudonym",
        json_schema_extra=DEVICE_ID_SCHEMA,
    ),
]


def now() -> int:
    return int(time.time() * 1000)


def res(value: int | None, spec: EngineSpec) -> int:
    """The resolution asked for (the engine's own by default)."""
    with bad("bad_resolution"):
        return check_res(spec.res if value is None else value, spec.res)


def bbox(value: str | None) -> BBox | None:
    if value is None:
        return None
    if not _BBOX.match(value):
        raise ApiError(400, "bad_bbox", "bbox must be minLng,minLat,maxLng,maxLat in degrees")
    with bad("bad_bbox"):
        return BBox.parse(value)


def at(value: str | None) -> int | None:
    """The time of an `at=` answer (None: live): the minute aggregate of its minute."""
    if value is None:
        return None
    with bad("bad_time"):
        return parse_time(value)


def period(start: str, end: str) -> tuple[int, int]:
    with bad("bad_time"):
        t0, t1 = parse_time(start), parse_time(end)
    if t1 <= t0:
        raise ApiError(400, "bad_time", "`to` must be after `from`")
    return t0, t1


def attrs(request: Request) -> dict[str, str]:
    """The ping attribute filters `attr.K=V` of the query string."""
    found = {k[5:]: v for k, v in request.query_params.items() if k.startswith("attr.")}
    if len(found) > 16 or any(not k or len(k) > 64 or len(v) > 256 for k, v in found.items()):
        raise ApiError(400, "bad_attribute", "up to 16 attr.K=V filters, K ≤ 64, V ≤ 256")
    return found


def check_id(value: str) -> None:
    """A space's or doorway's id, as a path segment can carry it."""
    if not value or len(value.encode()) > 200 or any(c in value for c in "/?#"):
        raise ApiError(400, "bad_id", "ids are 1 to 200 bytes without / ? #")


def note_params(request: Request, **params) -> None:
    """Parameters of a request's body for its audit record (those given)."""
    given = {k: v for k, v in params.items() if v is not None}
    note(request).setdefault("params", {}).update(given)


def json_bytes(body: bytes, media_type: str = "application/json") -> Response:
    """A body serialized already (FastAPI would otherwise walk a returned dict item by item)."""
    return Response(body, media_type=media_type)
