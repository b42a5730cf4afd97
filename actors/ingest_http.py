"""HTTP ingest in an ingest handler: `POST /v1/pings`, `POST /v1/door-events` and the OsmAnd
protocol, through the same `IngestCore` as the gRPC RPCs (credentials, rate limits, validation,
the WAL and the ack), answered as HTTP.

The API's routes hand their requests to a handler (clients/ingest.py); the handler's own OsmAnd
port (actors/osmand_port.py) hands its requests here directly. Either way a request is an
`HttpRequest` and its answer an `HttpAnswer` (engine/http_ingest.py). The statuses mirror the
gRPC codes: 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 400 and 413 INVALID_ARGUMENT, 429
RESOURCE_EXHAUSTED for a caller over its rate, 503 for overload and for UNAVAILABLE.
"""

import math
from collections.abc import Callable

import orjson
import redis

from actors.ingest_core import AuthError, Caller, IngestCore, ShardUnavailable
from engine.http_ingest import (
    BadBody,
    HttpAnswer,
    HttpRequest,
    ack_body,
    door_item,
    error_body,
    ping_item,
    read_items,
)
from engine.osmand import osmand_pings
from engine.validation import Reason

KINDS = ("pings", "door_events", "osmand")
RETRY_S = 5  # Retry-After of a 503: a shard restarting, Redis away, the handler overloaded


class HttpIngest:
    """Answers HTTP ingest requests with `core`. `max_batch` and `max_in_flight` are the gRPC
    RPCs' own limits; `suspect()` is called when the WAL or a shard failed (the handler's
    health checks again at once)."""

    def __init__(
        self,
        core: IngestCore,
        max_batch: int,
        max_in_flight: int,
        suspect: Callable[[], None] = lambda: None,
    ):
        self.core = core
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.suspect = suspect

    async def handle(self, request: HttpRequest) -> HttpAnswer:
        if request.kind not in KINDS:
            return HttpAnswer(404, error_body("not_found", f"no ingest kind {request.kind!r}"))
        try:
            caller = self.core.authenticate(request.authorization)
        except AuthError as exc:
            if exc.denied:
                return HttpAnswer(403, error_body("forbidden", str(exc)))
            return HttpAnswer(401, error_body("unauthenticated", str(exc)))
        except redis.RedisError as exc:
            self.suspect()
            return _unavailable(exc)
        who = (caller.key_id, caller.role)
        try:
            items = self._items(request)
        except BadBody as exc:
            return HttpAnswer(exc.status, error_body(exc.code, str(exc)), caller=who)
        figures = {"items": len(items)}
        refused = self._refused(caller, len(items))
        if refused is not None:
            return refused._replace(caller=who, figures=figures)
        try:
            if request.kind == "door_events":
                ack = await self.core.ingest_doors(items, caller.device)
                late = 0
            else:
                ack = await self.core.ingest_pings(items, caller.device)
                late = ack.late
        except (ShardUnavailable, redis.RedisError) as exc:
            self.suspect()
            return _unavailable(exc)._replace(caller=who, figures=figures)
        figures |= {"accepted": ack.accepted, "late": late, "rejected": ack.rejected}
        body = ack_body(ack.accepted, late, ack.rejected, ack.rejections)
        if request.kind == "osmand" and _for_another_device(ack.rejections):
            # the app keeps a position it is refused and sends it again: right for a token of
            # another device (fixed on the phone, the positions kept go through)
            error = {"code": "forbidden", "message": "the token is for another device id"}
            body = orjson.dumps({"error": error, **orjson.loads(body)})
            return HttpAnswer(403, body, caller=who, figures=figures)
        # a position rejected for what it holds (too old, off the map, ...) never will be taken:
        # a 200 with its reason lets the app drop it and send the next (Traccar's server drops
        # the positions its filters refuse the same way), instead of holding back the rest
        return HttpAnswer(200, body, caller=who, figures=figures)

    def _items(self, request: HttpRequest) -> list:
        if request.kind == "osmand":
            pings = osmand_pings(
                request.query, request.body, request.content_type, self.core.clock()
            )
            if len(pings) > self.max_batch:
                raise BadBody(413, "batch_too_large", f"at most {self.max_batch} locations a call")
            return pings
        if request.kind == "pings":
            return read_items(
                request.body, request.content_type, "pings", ping_item, self.max_batch
            )
        return read_items(request.body, request.content_type, "events", door_item, self.max_batch)

    def _refused(self, caller: Caller, items: int) -> HttpAnswer | None:
        wait = self.core.admit(caller, items)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            kind = caller.credential.split(":")[0]
            message = f"rate limited ({kind}); retry in {seconds} s"
            return HttpAnswer(429, error_body("rate_limited", message), retry_after=seconds)
        if self.core.in_flight >= self.max_in_flight:
            return HttpAnswer(503, error_body("overloaded", "ingest overloaded; retry"), 1)
        return None


def _for_another_device(rejections) -> bool:
    return any(r.reason == Reason.NOT_AUTHORIZED_FOR_DEVICE.value for r in rejections)


def _unavailable(exc: Exception) -> HttpAnswer:
    if isinstance(exc, redis.RedisError):
        message = f"the write-ahead log (Redis) is unreachable; retry the batch: {exc}"
    else:
        message = str(exc)
    return HttpAnswer(503, error_body("unavailable", message), RETRY_S)
