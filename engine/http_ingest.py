"""Pings and door events sent over HTTP, read into the items gRPC ingest takes.

`POST /v1/pings` and `POST /v1/door-events` carry a JSON object (`{"pings": [...]}`,
`{"events": [...]}`) or NDJSON (one item a line). Each item becomes a `PingItem` or a
`DoorItem`, with the fields and wire types of the gRPC `Ping` and `DoorEvent` messages, so the
same checks (engine/validation.py) and the same ingest code take them. An item that is not an
object of those fields and types is None: rejected as "malformed", as a stream's message that
does not parse is; the rest of its batch goes on. A body that cannot be read at all is a
`BadBody`, which the front end answers with its status.

Also here: what a front end hands an ingest handler (`HttpRequest`) and gets back
(`HttpAnswer`), plain values that cross the Ray boundary.
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import orjson

JSON = "application/json"
NDJSON = "application/x-ndjson"
INT64 = (-(1 << 63), (1 << 63) - 1)
INT32 = (-(1 << 31), (1 << 31) - 1)
_NO_ATTRIBUTES: Mapping[str, str] = {}


class PingItem(NamedTuple):
    """A ping as the gRPC `Ping` message has it (the fields `read_batch` reads)."""

    device_id: str
    ts_ms: int
    lat: float
    lng: float
    accuracy_m: float = 0.0
    region: str = ""
    attributes: Mapping[str, str] = _NO_ATTRIBUTES


class DoorItem(NamedTuple):
    """A door event as the gRPC `DoorEvent` message has it."""

    sensor_id: str
    ts_ms: int
    direction: int


class BadBody(ValueError):
    """A request body that cannot be read: its HTTP status and a stable code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


class HttpRequest(NamedTuple):
    """An HTTP ingest request as its front end (the API, the OsmAnd port) received it.
    `kind`: "pings", "door_events" or "osmand"; `authorization`: the header, or
    "Bearer <token>" of a `token` query parameter."""

    kind: str
    method: str
    query: str
    content_type: str
    authorization: str
    body: bytes


class HttpAnswer(NamedTuple):
    """What the front end answers: status, JSON body, `Retry-After` seconds (0: none), and
    for the audit counts, the caller ((key id, role), None when not authenticated) and the
    figures (items, accepted, late, rejected)."""

    status: int
    body: bytes
    retry_after: int = 0
    caller: tuple[str, str] | None = None
    figures: Mapping[str, int] = _NO_ATTRIBUTES


def error_body(code: str, message: str) -> bytes:
    """The API's error envelope."""
    return orjson.dumps({"error": {"code": code, "message": message}})


def media_type(content_type: str) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return content_type.split(";", 1)[0].strip().lower()


def read_items(
    body: bytes, content_type: str, field: str, item: Callable[[Any], Any], most: int
) -> list:
    """The items of a JSON body `{field: [...]}` or of NDJSON, each read by `item` (None:
    malformed). BadBody for another media type (415), a body that is not JSON or not of that
    shape (400), or more than `most` items (413)."""
    kind = media_type(content_type)
    if kind == NDJSON:
        lines = [line for line in body.split(b"\n") if line.strip()]
        _bounded(len(lines), most, field)
        return [item(_loads_or_none(line)) for line in lines]
    if kind != JSON:
        raise BadBody(
            415,
            "unsupported_media_type",
            f"send {JSON} ({{{field!r}: [...]}}) or {NDJSON} (one item a line), "
            f"not {kind or 'a body without a Content-Type'}",
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadBody(400, "bad_json", f"the body is not JSON: {exc}") from None
    items = doc.get(field) if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise BadBody(400, "bad_body", f'the body must be a JSON object {{"{field}": [...]}}')
    _bounded(len(items), most, field)
    return [item(x) for x in items]


def _bounded(n: int, most: int, field: str) -> None:
    if n > most:
        raise BadBody(413, "batch_too_large", f"batch of {n} {field}; at most {most} per call")


def _loads_or_none(line: bytes):
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def _integer(value, bounds: tuple[int, int]) -> bool:
    return type(value) is int and bounds[0] <= value <= bounds[1]


def _number(value) -> bool:
    return type(value) in (int, float)


def float32(value: float) -> float:
    """A number as a `float` field on the wire holds it (beyond its range: infinite)."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def ping_item(x) -> PingItem | None:
    """A ping object: `device_id` (string), `ts_ms` (integer), `lat` and `lng` (numbers), and
    optionally `accuracy_m` (number), `region` (string), `attributes` (object of strings).
    None if any of these is missing or of another type."""
    if not isinstance(x, dict):
        return None
    device, ts, lat, lng = x.get("device_id"), x.get("ts_ms"), x.get("lat"), x.get("lng")
    if not (isinstance(device, str) and _integer(ts, INT64) and _number(lat) and _number(lng)):
        return None
    accuracy = x.get("accuracy_m", 0.0)
    region = x.get("region", "")
    attributes = x.get("attributes") or _NO_ATTRIBUTES
    if not (_number(accuracy) and isinstance(region, str) and isinstance(attributes, dict)):
        return None
    if not all(isinstance(v, str) for v in attributes.values()):
        return None
    return PingItem(device, ts, float(lat), float(lng), float32(accuracy), region, attributes)


def door_item(x) -> DoorItem | None:
    """A door event object: `sensor_id` (string), `ts_ms` and `direction` (integers)."""
    if not isinstance(x, dict):
        return None
    sensor, ts, direction = x.get("sensor_id"), x.get("ts_ms"), x.get("direction")
    if not (isinstance(sensor, str) and _integer(ts, INT64) and _integer(direction, INT32)):
        return None
    return DoorItem(sensor, ts, direction)


def ack_body(accepted: int, late: int, rejected: int, rejections) -> bytes:
    """An ack as JSON: `{"accepted", "late", "rejected", "rejections": [{"index", "reason"}]}`."""
    return orjson.dumps(
        {
            "accepted": accepted,
            "late": late,
            "rejected": rejected,
            "rejections": [{"index": r.index, "reason": r.reason} for r in rejections],
        }
    )
