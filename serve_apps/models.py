"""The API's answers as OpenAPI documents them: models of the bodies the routes write.

They describe, they do not serialize: routes keep writing their bodies themselves (the live
heatmap and top-N ones are bytes shared between requests), and a route names its model in
`responses=` (`ok`) so FastAPI never validates or re-encodes an answer."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Ms = int  # milliseconds since the epoch


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable: `bad_bbox`, `unauthenticated`, ...")
    message: str = Field(description="for people")


class ErrorBody(BaseModel):
    """Every error answer of the API, whatever its status."""

    error: ErrorDetail


ERRORS = {
    400: "A malformed parameter or body (`error.code` names which rule it broke)",
    401: "No API key, or one that is unknown or revoked (`Authorization: Bearer <key>`)",
    403: "The key's role may not ask this",
    404: "No such resource",
    409: "Refused in the engine's current state",
    413: "The request body is larger than 1 MiB (16 MiB for batches of pings and door events), "
    "or a batch holds more items than one call takes",
    415: "The request body is of a media type the route does not read",
    429: "The credential sent more than its rate; `Retry-After` says when to retry",
    500: "A bug: the engine failed to answer",
    503: "A dependency (Redis, a shard, history) is unavailable; `Retry-After` says when to retry",
    504: "A history query took longer than its time",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries of error answers: each the envelope."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {"model": ErrorBody, "description": ERRORS[status]}
        if status in (429, 503):
            out[status]["headers"] = RETRY_AFTER
    return out


def ok(model: type[BaseModel], *error_statuses: int, status: int = 200) -> dict:
    """`responses=` of a route: its answer, and the errors of its own (`errors`)."""
    return {status: {"model": model}, **errors(*error_statuses)}


class Loose(BaseModel):
    """An object with the fields named and perhaps others (figures that grow with the engine)."""

    model_config = ConfigDict(extra="allow")


# -- counts ------------------------------------------------------------------------------------


class CellCount(BaseModel):
    cell: str = Field(description="H3 cell id (hex)")
    count: int


class Cells(BaseModel):
    """Cells with their counts; viewers' answers leave out those the privacy floor hides."""

    res: int
    as_of: Ms
    cells: list[CellCount]


class Polygon(BaseModel):
    type: Literal["Polygon"]
    coordinates: list[list[list[float]]] = Field(description="rings of [lng, lat]")


class Feature(BaseModel):
    type: Literal["Feature"]
    geometry: Polygon
    properties: CellCount


class FeatureCollection(BaseModel):
    """The heatmap as GeoJSON (`format=geojson`), one hexagon per cell."""

    type: Literal["FeatureCollection"]
    res: int
    as_of: Ms
    features: list[Feature]


class CellAnswer(BaseModel):
    cell: str
    count: int
    as_of: Ms


class SpaceItem(BaseModel):
    space: str
    name: str
    kind: Literal["polygon", "door"]
    count: int
    polygon: dict[str, Any] | None = Field(
        None, description="the GeoJSON polygon of a polygon space (`geometry=true`)"
    )


class SpaceList(BaseModel):
    as_of: Ms
    spaces: list[SpaceItem]


class SpaceCount(BaseModel):
    space: str
    name: str
    kind: Literal["polygon", "door"]
    count: int
    as_of: Ms


class Rejection(BaseModel):
    index: int = Field(description="the item's position in the request")
    reason: str = Field(description="`lat_out_of_range`, `ts_in_future`, `malformed`, ...")


class Ack(BaseModel):
    """An ingest call's ack: every accepted item is in the write-ahead log."""

    accepted: int
    late: int = Field(description="pings taken but dated at or before their device's latest")
    rejected: int
    rejections: list[Rejection]


class SeriesPoint(BaseModel):
    t: Ms = Field(description="the bucket's start")
    count: int = Field(
        description="devices present at some instant of the bucket (a door space: its count "
        "at the bucket's end, or now)"
    )
    entered: int | None = Field(None, alias="in", description="a door space's entries")
    left: int | None = Field(None, alias="out", description="a door space's exits")


class SeriesValue(BaseModel):
    value: str | None = Field(description="the attribute's value (null: a ping without it)")
    points: list[SeriesPoint]


class Series(BaseModel):
    """Buckets of `step` aligned to the wall clock of `tz`, from the one holding `from` to the
    one holding `to`'s last instant or now, whichever is earlier."""

    step: Literal["1m", "5m", "15m", "1h", "1d"]
    tz: str
    space: str | None = None
    cell: str | None = None
    kind: Literal["polygon", "door", "cell"]
    by: str | None = Field(None, description="`attr.K`: one series per value of K")
    points: list[SeriesPoint] | None = Field(None, description="without `by`")
    series: list[SeriesValue] | None = Field(None, description="with `by`")


# -- devices and history -----------------------------------------------------------------------


class CellSeconds(BaseModel):
    cell: str
    seconds: float


class SpaceSeconds(BaseModel):
    space: str
    seconds: float


class Dwell(BaseModel):
    device_id: str
    day: str
    cells: list[CellSeconds]
    spaces: list[SpaceSeconds]


class DeviceSeen(BaseModel):
    device_id: str = Field(description="raw id for admins where known, else its pseudonym")
    first_seen: Ms
    last_seen: Ms


class Devices(BaseModel):
    devices: list[DeviceSeen]
    truncated: bool


class PathPoint(BaseModel):
    ts: Ms
    lat: float
    lng: float


class DevicePath(BaseModel):
    device_id: str
    points: list[PathPoint]


class KeyedPath(BaseModel):
    device: str = Field(description="the device's pseudonym (never its raw id)")
    points: list[PathPoint] = Field(description="its applied pings of the period, by time")


class Paths(BaseModel):
    from_: Ms = Field(alias="from")
    to: Ms
    paths: list[KeyedPath] = Field(description="one per device, by pseudonym")
    truncated: bool = Field(description="more devices than `limit` were inside")


class LineString(BaseModel):
    type: Literal["LineString"]
    coordinates: list[list[float]] = Field(
        description="[lng, lat] of each point (a path of one point: it, twice)"
    )


class PathProperties(BaseModel):
    device: str = Field(description="the device's pseudonym")
    times: list[Ms] = Field(description="the time of each point")


class PathFeature(BaseModel):
    type: Literal["Feature"]
    geometry: LineString
    properties: PathProperties


class PathCollection(BaseModel):
    """Paths as GeoJSON (`format=geojson`): a LineString per device."""

    type: Literal["FeatureCollection"]
    from_: Ms = Field(alias="from")
    to: Ms
    truncated: bool
    features: list[PathFeature]


class DeviceMeters(BaseModel):
    device_id: str
    meters: float


class Distance(BaseModel):
    average_meters: float
    device_count: int
    devices: list[DeviceMeters] | None = Field(None, description="per device, for admins")


# -- definitions -------------------------------------------------------------------------------


class SpaceDefined(BaseModel):
    space: str
    kind: Literal["polygon", "door"]
    name: str
    cells: int | None = Field(None, description="the cells a polygon space covers")


class SpaceDeleted(BaseModel):
    deleted: Literal["space"]
    space: str
    kind: Literal["polygon", "door"]
    at: Ms = Field(description="when it was deleted: history answers for times before")
    doorways: list[str] = Field(description="the doorways deleted with a door space")


class DoorwayDeleted(BaseModel):
    deleted: Literal["doorway"]
    doorway: str
    at: Ms = Field(description="when it was deleted, and the sensors on it ended")
    sensors: list[str] = Field(description="the sensors counting there, installed nowhere now")


class DoorwayDefined(BaseModel):
    doorway: str
    inside: str
    outside: str | None


class SensorAt(BaseModel):
    sensor_id: str
    from_: Ms = Field(alias="from")
    positive: Literal["in", "out"]


class DoorwayItem(BaseModel):
    doorway: str
    inside: str
    outside: str | None
    installations: list[SensorAt] = Field(
        description="every installation of a sensor on it, by `from` (each ends at the next)"
    )


class DoorwayList(BaseModel):
    doorways: list[DoorwayItem]


class Installed(BaseModel):
    doorway: str
    sensor_id: str
    from_: Ms = Field(alias="from")
    positive: Literal["in", "out"]


class ResetDone(BaseModel):
    space: str
    at: Ms


# -- operations --------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, str] = Field(description="per dependency: ok, catching up, or the error")
    as_of: Ms
    archive_lag_s: float


class HistoryStatus(Loose):
    """The history snapshotter's state, or `{"error"}` when it does not answer."""


class Status(Loose):
    as_of: Ms
    layout: dict[str, Any]
    shards: list[dict[str, Any]]
    pending_layout: dict[str, Any] | None = None
    rebalance: dict[str, Any] | None
    history: dict[str, Any]


class DeadLetters(BaseModel):
    total: int
    entries: list[dict[str, Any]]


class AuditLog(BaseModel):
    from_: Ms = Field(alias="from")
    to: Ms
    entries: list[dict[str, Any]]


class Forgotten(BaseModel):
    device_id: str
    live: Literal["done", "pending"]
    history: str = Field(description="done, or the step history still has to take")


class KeyInfo(Loose):
    id: str
    role: str


class Keys(BaseModel):
    keys: list[KeyInfo]


class Revoked(BaseModel):
    revoked: Literal["key", "token", "device"]
    id: str


class ScaleAccepted(Loose):
    id: str
    state: Literal["running"]
