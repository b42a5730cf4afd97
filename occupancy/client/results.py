"""The HTTP API's answers as dataclasses, field for field the models the API documents
(serve_apps/models.py; a unit test holds the two together). `decode` builds them from the JSON
and ignores fields it does not know, so a client keeps working against a newer engine.

Times are ms since the epoch; devices are named by raw id for admins where the engine knows
it, else by pseudonym."""

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

Ms = int
Kind = Literal["polygon", "door"]


@dataclass(frozen=True, slots=True)
class CellCount:
    cell: str  # H3 cell id (hex)
    count: int


@dataclass(frozen=True, slots=True)
class Cells:
    """`GET /v1/top` and `/v1/heatmap`: cells with their counts."""

    res: int
    as_of: Ms
    cells: list[CellCount]


@dataclass(frozen=True, slots=True)
class CellAnswer:
    cell: str
    count: int
    as_of: Ms


@dataclass(frozen=True, slots=True)
class SpaceItem:
    space: str
    name: str
    kind: Kind
    count: int
    polygon: dict[str, Any] | None = None  # with `geometry=True`, for polygon spaces


@dataclass(frozen=True, slots=True)
class SpaceList:
    as_of: Ms
    spaces: list[SpaceItem]


@dataclass(frozen=True, slots=True)
class SpaceCount:
    space: str
    kind: Kind
    count: int
    as_of: Ms
    name: str = ""


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    t: Ms  # the bucket's start
    count: int  # a door space: its count at the bucket's end (or now)
    in_: int | None = None  # a door space's entries (`in` in JSON)
    out: int | None = None  # and exits


@dataclass(frozen=True, slots=True)
class SeriesValue:
    value: str | None  # the attribute's value (None: pings without it)
    points: list[SeriesPoint]


@dataclass(frozen=True, slots=True)
class Series:
    """`GET /v1/series`: `points`, or with `by` one series per value in `series`."""

    step: str
    tz: str
    kind: Literal["polygon", "door", "cell"]
    space: str | None = None
    cell: str | None = None
    by: str | None = None
    points: list[SeriesPoint] | None = None
    series: list[SeriesValue] | None = None


@dataclass(frozen=True, slots=True)
class CellSeconds:
    cell: str
    seconds: float


@dataclass(frozen=True, slots=True)
class SpaceSeconds:
    space: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Dwell:
    device_id: str
    day: str
    cells: list[CellSeconds]
    spaces: list[SpaceSeconds]


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    device_id: str
    first_seen: Ms
    last_seen: Ms


@dataclass(frozen=True, slots=True)
class Devices:
    devices: list[DeviceSeen]
    truncated: bool


@dataclass(frozen=True, slots=True)
class PathPoint:
    ts: Ms
    lat: float
    lng: float


@dataclass(frozen=True, slots=True)
class DevicePath:
    device_id: str
    points: list[PathPoint]


@dataclass(frozen=True, slots=True)
class KeyedPath:
    device: str  # the device's pseudonym, never its raw id
    points: list[PathPoint]


@dataclass(frozen=True, slots=True)
class Paths:
    """`GET /v1/history/paths`: the paths of the devices that were inside an area."""

    from_: Ms
    to: Ms
    paths: list[KeyedPath]
    truncated: bool


@dataclass(frozen=True, slots=True)
class DeviceMeters:
    device_id: str
    meters: float


@dataclass(frozen=True, slots=True)
class Distance:
    average_meters: float
    device_count: int
    devices: list[DeviceMeters] | None = None  # per device, for admins


@dataclass(frozen=True, slots=True)
class SpaceDefined:
    space: str
    kind: Kind
    name: str
    cells: int | None = None


@dataclass(frozen=True, slots=True)
class DoorwayDefined:
    doorway: str
    inside: str
    outside: str | None


@dataclass(frozen=True, slots=True)
class SensorAt:
    sensor_id: str
    from_: Ms  # `from` in JSON
    positive: Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class DoorwayItem:
    doorway: str
    inside: str
    outside: str | None
    installations: list[SensorAt]  # by `from`; each ends at the next


@dataclass(frozen=True, slots=True)
class DoorwayList:
    doorways: list[DoorwayItem]


@dataclass(frozen=True, slots=True)
class SpaceDeleted:
    deleted: Literal["space"]
    space: str
    kind: Kind
    at: Ms  # when: counts of times before stay
    doorways: list[str]  # deleted with a door space


@dataclass(frozen=True, slots=True)
class DoorwayDeleted:
    deleted: Literal["doorway"]
    doorway: str
    at: Ms
    sensors: list[str]  # installed nowhere from `at`


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int  # the item's position in the request
    reason: str


@dataclass(frozen=True, slots=True)
class Ack:
    """`POST /v1/pings` and `/v1/door-events`: every accepted item is in the write-ahead log."""

    accepted: int
    late: int
    rejected: int
    rejections: list[Rejection]


@dataclass(frozen=True, slots=True)
class Installed:
    doorway: str
    sensor_id: str
    from_: Ms  # `from` in JSON
    positive: Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class ResetDone:
    space: str
    at: Ms


@dataclass(frozen=True, slots=True)
class Health:
    status: Literal["ok", "degraded"]
    checks: dict[str, str]
    as_of: Ms
    archive_lag_s: float


@dataclass(frozen=True, slots=True)
class Status:
    """The engine's figures; their shape grows with the engine, so they stay dicts."""

    as_of: Ms
    layout: dict[str, Any]
    shards: list[dict[str, Any]]
    rebalance: dict[str, Any] | None
    history: dict[str, Any]
    pending_layout: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeadLetters:
    total: int
    entries: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class AuditLog:
    from_: Ms
    to: Ms
    entries: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Forgotten:
    device_id: str
    live: Literal["done", "pending"]
    history: str


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    role: str
    label: str | None = None
    created: Ms | None = None
    last_used: Ms | None = None


@dataclass(frozen=True, slots=True)
class Keys:
    keys: list[KeyInfo]


@dataclass(frozen=True, slots=True)
class Revoked:
    revoked: Literal["key", "token", "device"]
    id: str


@dataclass(frozen=True, slots=True)
class ScaleAccepted:
    id: str
    state: Literal["running"]
    target_version: int | None = None
    user_shards: int | None = None
    cell_shards: int | None = None
    ingest_handlers: int | None = None


def json_name(field: str) -> str:
    """A field's name in JSON: `from_` is `from` (a Python keyword)."""
    return field[:-1] if field.endswith("_") else field


T = typing.TypeVar("T")


def decode(cls: type[T], value: Any) -> T:
    """`value` (decoded JSON) as `cls`: dataclasses by field, lists and optionals by their
    element type; anything else as it is."""
    return _build(cls, value)


def _build(kind: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return _build(inner[0], value) if len(inner) == 1 else value
    if origin is list:
        (item,) = typing.get_args(kind)
        return [_build(item, v) for v in value]
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        given = {}
        for f in dataclasses.fields(kind):
            name = json_name(f.name)
            if name in value:
                given[f.name] = _build(hints[f.name], value[name])
        return kind(**given)
    return value
