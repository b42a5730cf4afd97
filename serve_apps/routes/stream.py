"""`GET /v1/stream`: live counts of spaces and of the cells of an area as Server-Sent Events
(serve_apps/streams.py has the poller; docs/semantics.md, *Live push*, the contract)."""

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from serve_apps import params
from serve_apps.context import Api
from serve_apps.errors import ApiError
from serve_apps.guard import bearer
from serve_apps.models import errors
from serve_apps.policy import READ_ROLES
from serve_apps.streams import Subscription, last_event_id

MAX_SPACES = 100
# what a request line holds, percent-encoded, within the HTTP proxies' buffers (16 KiB)
MAX_SPACES_CHARS = 1_500
PATH = "/v1/stream"  # its deployment's route prefix too (the stream app, serve_apps/api.py)

router = APIRouter()

# one event of the stream (OpenAPI before 3.2: `schema` describes each event); `data` is JSON
EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["counts", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "retry": {"type": "integer"},
    },
}
STREAM = {
    200: {
        "description": "`text/event-stream`: `counts` events `{as_of, spaces, cells}` with ids, "
        "heartbeat comments, and an `error` event that ends the stream",
        "content": {"text/event-stream": {"schema": EVENT}},
    },
    **errors(404),
}


async def stream(
    request: Request,
    api: Api,
    spaces: str | None = Query(
        None,
        description=f"comma-separated space ids (up to {MAX_SPACES} ids, {MAX_SPACES_CHARS} "
        "characters)",
        max_length=MAX_SPACES_CHARS,
    ),
    bbox: str | None = params.bbox_query(None),
    res: int | None = Query(None, description="H3 resolution of the cells (the engine's own)"),
    limit: int | None = Query(
        None, ge=1, description="end the stream after this many `counts` events (default: never)"
    ),
    last_event: str | None = Header(None, alias="last-event-id", include_in_schema=False),
):
    """Counts pushed as they change (Server-Sent Events): the current state at once, then an
    event whenever a count the stream asks for changes, at most one a second."""
    role = api.role(request, READ_ROLES)
    ids = tuple(dict.fromkeys(s for s in (spaces or "").split(",") if s))
    if len(ids) > MAX_SPACES:
        raise ApiError(400, "too_many_spaces", f"at most {MAX_SPACES} spaces a stream")
    for space in ids:
        if api.definitions.kind(space) is None:
            raise ApiError(404, "unknown_space", f"no space {space!r}")
    box = params.bbox(bbox or None)
    if not ids and box is None:
        raise ApiError(400, "bad_stream", "give spaces=, bbox= or both")
    sub = Subscription(
        key=bearer(request.scope.get("headers", ())),
        role=role,
        k=api.floor.k(role),
        spaces=ids,
        box=box,
        res=params.res(res, api.spec),
        last_id=last_event_id(last_event),
    )
    await api.streams.subscribe(sub)
    return StreamingResponse(
        api.streams.events(sub, limit),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


router.add_api_route(
    PATH, stream, methods=["GET"], responses=STREAM, response_class=StreamingResponse
)
