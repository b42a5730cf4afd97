"""Ingest over HTTP: `POST /v1/pings`, `POST /v1/door-events` and the OsmAnd protocol on
`/v1/osmand`. The API reads nothing of the body: each request goes whole to a gRPC ingest
handler (clients/ingest.py), which checks, logs and acks it with the RPCs' own code
(actors/ingest_http.py), so an HTTP ack means what a gRPC ack does: in the WAL.

Credentials are those of gRPC ingest: a device token, or an `ingest` or `admin` key, in the
Authorization header (for `/v1/osmand`, also a `token` parameter in the URL)."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from engine.http_ingest import JSON, NDJSON, HttpRequest
from serve_apps.audit import note
from serve_apps.context import Api
from serve_apps.models import Ack, errors

router = APIRouter()

INGEST_ERRORS = errors(413, 415, 429)
# Items are described, not constrained: an item that is not one is rejected in the ack (with
# its index and "malformed") while the rest of the batch goes on, as gRPC ingest does.
PING = {
    "description": "a ping: `device_id` (string, 1 to 128 bytes), `ts_ms` (integer, ms since "
    "the epoch), `lat` and `lng` (numbers); optional `accuracy_m` (number), `region` (string) "
    "and `attributes` (object of strings)",
    "examples": [{"device_id": "phone-42", "ts_ms": 1764583200000, "lat": 52.66, "lng": -8.63}],
}
DOOR_EVENT = {
    "description": "a door event: `sensor_id` (string), `ts_ms` (integer), `direction` (1 or -1)",
    "examples": [{"sensor_id": "s1", "ts_ms": 1764583200000, "direction": 1}],
}


def _body(field: str, item: dict) -> dict:
    """The request body of a batch route: a JSON object of items, or NDJSON."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {field: {"type": "array", "items": item}},
                    }
                },
                NDJSON: {"schema": {"type": "string", "description": "one JSON item a line"}},
            },
        }
    }


OSMAND_TIME = {
    "description": "seconds since the epoch below 2^31 - 1, ms from there, or ISO 8601",
    "anyOf": [
        {"type": "number", "exclusiveMinimum": -(1 << 62), "exclusiveMaximum": 1 << 62},
        {"type": "string", "format": "date-time"},
    ],
}


def _query(name: str, schema: dict, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema}


_TOKEN = _query("token", {"type": "string"})
OSMAND_QUERY = {
    "parameters": [
        _query("id", {"type": "string", "minLength": 1}, required=True),
        _query("lat", {"type": "number"}, required=True),
        _query("lon", {"type": "number"}, required=True),
        _query("timestamp", OSMAND_TIME),
        _query("accuracy", {"type": "number"}),
        _TOKEN,
    ]
}
_NULL = {"type": "null"}
LOCATION = {
    "type": "object",
    "required": ["coords"],
    "properties": {
        "timestamp": {**OSMAND_TIME, "anyOf": [*OSMAND_TIME["anyOf"], _NULL]},
        "coords": {
            "type": "object",
            "required": ["latitude", "longitude"],
            "properties": {
                "latitude": {"type": "number"},
                "longitude": {"type": "number"},
                "accuracy": {"anyOf": [{"type": "number"}, _NULL]},
            },
        },
    },
}
OSMAND_BODY = {
    "parameters": [_TOKEN],
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["device_id", "location"],
                    "properties": {
                        "device_id": {
                            "anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]
                        },
                        "location": {
                            "anyOf": [LOCATION, {"type": "array", "items": LOCATION, "minItems": 1}]
                        },
                    },
                }
            },
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["id", "lat", "lon"],
                    "properties": {
                        "id": {"type": "string", "minLength": 1},
                        "lat": {"type": "number"},
                        "lon": {"type": "number"},
                        "timestamp": OSMAND_TIME,
                        "accuracy": {"type": "number"},
                    },
                }
            },
        },
    },
}


async def _forward(request: Request, api: Api, kind: str) -> Response:
    authorization = request.headers.get("authorization", "")
    if not authorization and kind == "osmand":
        token = request.query_params.get("token", "")
        authorization = f"Bearer {token}" if token else ""
    forwarded = HttpRequest(
        kind,
        request.method,
        request.url.query,
        request.headers.get("content-type", ""),
        authorization,
        await request.body(),
    )
    answer = await api.ingest.handle(forwarded)
    note(request)["figures"] = dict(answer.figures)
    headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after else None
    return Response(answer.body, answer.status, headers=headers, media_type=JSON)


@router.post(
    "/v1/pings",
    responses={200: {"model": Ack}, **INGEST_ERRORS},
    openapi_extra=_body("pings", PING),
)
async def pings(request: Request, api: Api):
    """Send pings, as gRPC `SendPings`: `{"pings": [...]}` or NDJSON. The ack counts accepted,
    late and rejected pings, with each rejection's index and reason."""
    return await _forward(request, api, "pings")


@router.post(
    "/v1/door-events",
    responses={200: {"model": Ack}, **INGEST_ERRORS},
    openapi_extra=_body("events", DOOR_EVENT),
)
async def door_events(request: Request, api: Api):
    """Send door events, as gRPC `SendDoorEvents`: `{"events": [...]}` or NDJSON."""
    return await _forward(request, api, "door_events")


OSMAND_DOC = """A position in the OsmAnd protocol (the Traccar Client app): the query form
    (`?id=&lat=&lon=&timestamp=...`, in the URL or a form body) or the JSON body
    (`{"device_id", "location": {...}}`). 200 with the ack, a 4xx when refused."""


@router.get(
    "/v1/osmand",
    responses={200: {"model": Ack}, **INGEST_ERRORS},
    openapi_extra=OSMAND_QUERY,
    description=OSMAND_DOC,
)
async def osmand_get(request: Request, api: Api):
    return await _forward(request, api, "osmand")


@router.post(
    "/v1/osmand",
    responses={200: {"model": Ack}, **INGEST_ERRORS},
    openapi_extra=OSMAND_BODY,
    description=OSMAND_DOC,
)
async def osmand_post(request: Request, api: Api):
    return await _forward(request, api, "osmand")
