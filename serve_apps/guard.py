"""The API's door: the key is checked and the body size bounded before a body is read.

An ASGI middleware in front of FastAPI (which reads and validates a body before a handler runs):
a request to `/v1/...` (but for the health check) without a known key gets 401 at once, whatever
it sends after its headers; a body beyond MAX_BODY_BYTES gets 413, by its Content-Length or, for a
chunked body, as soon as that many bytes have arrived. Roles are still checked by each route.

It leaves in the request's scope who the key is (CREDENTIAL: its id and role) or why it was
refused (REFUSED), for the audit log (serve_apps/audit.py).
"""

from collections.abc import Callable
from typing import ClassVar
from urllib.parse import parse_qsl

import orjson
import redis
from starlette.exceptions import HTTPException

MAX_BODY_BYTES = 1 << 20  # a polygon of 10,000 vertices is ~400 KB of JSON
MAX_BATCH_BYTES = 16 << 20  # a batch of pings or door events (gRPC's message limit)
OPEN_PATHS = ("/v1/health",)  # /v1 paths answered without a key
# ingest paths: their credential is a device token or an ingest/admin key (the ingest handler
# checks the role); `/v1/osmand` takes it from a `token` parameter too
INGEST_PATHS = ("/v1/pings", "/v1/door-events", "/v1/osmand")
BATCH_PATHS = ("/v1/pings", "/v1/door-events")
CREDENTIAL = "occ.credential"  # scope: (key id, role) of a request's key
REFUSED = "occ.refused"  # scope: why the door refused a request: "missing", "unknown", "redis"


def checked(path: str) -> bool:
    """Whether a request to `path` needs a key."""
    return path.startswith("/v1/") and path not in OPEN_PATHS


def ingest(path: str) -> bool:
    """Whether `path` is an ingest route (counted per window in the audit log)."""
    return path in INGEST_PATHS


def bearer(headers: list[tuple[bytes, bytes]]) -> str:
    """The bearer token of an `authorization` header (empty if none or not decodable)."""
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            return text[7:].strip() if text[:7].lower() == "bearer " else ""
    return ""


async def send_error(send, status: int, code: str, message: str, headers=()) -> None:
    """The error envelope, as the API's own errors have it."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


RETRY_AFTER_S = "5"  # told to clients of a 503: a dependency is down or restarting
REDIS_DOWN = ("redis_unavailable", "the engine's log and key store (Redis) is unreachable; retry")


class TooLarge(HTTPException):
    """Raised while a body is read: FastAPI passes HTTP exceptions on (others become 400)."""

    def __init__(self, most: int = MAX_BODY_BYTES) -> None:
        super().__init__(413, f"the request body is larger than {most} bytes")


class Guard:
    """ASGI middleware; `use(who, sender)` gives it the replica's `who(key) -> (key id, role)
    | None` (which caches look-ups) and, for the ingest paths, `sender(credential)`, which
    knows device tokens too (`who` when not given)."""

    _who: ClassVar[list[Callable[[str], tuple[str, str] | None]]] = []
    _sender: ClassVar[list[Callable[[str], tuple[str, str] | None]]] = []

    @classmethod
    def use(cls, who, sender=None) -> None:
        cls._who[:] = [who]
        cls._sender[:] = [sender] if sender is not None else []

    def __init__(self, inner):
        self.inner = inner

    def who(self, key: str, path: str = "") -> tuple[str, str] | None:
        if ingest(path) and self._sender:
            return self._sender[0](key)
        return self._who[0](key) if self._who else ("", "")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        path = scope.get("path", "")
        if checked(path):
            key = bearer(scope.get("headers", ()))
            if not key and path == "/v1/osmand":
                key = _token_parameter(scope.get("query_string", b""))
            if not key:
                scope[REFUSED] = "missing"
                return await send_error(
                    send, 401, "unauthenticated", "missing API key (Authorization: Bearer <key>)"
                )
            try:
                found = self.who(key, path)
            except redis.RedisError:
                scope[REFUSED] = "redis"
                return await send_error(
                    send, 503, *REDIS_DOWN, headers=((b"retry-after", RETRY_AFTER_S.encode()),)
                )
            if found is None:
                scope[REFUSED] = "unknown"
                return await send_error(send, 401, "unauthenticated", "unknown or revoked API key")
            scope[CREDENTIAL] = found
        most = MAX_BATCH_BYTES if path in BATCH_PATHS else MAX_BODY_BYTES
        length = _content_length(scope.get("headers", ()))
        if length is not None and length > most:
            error = TooLarge(most)
            return await send_error(send, 413, "body_too_large", error.detail)
        received = [0]

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > most:
                    raise TooLarge(most)
            return message

        await self.inner(scope, counted_receive, send)


def _token_parameter(query: bytes) -> str:
    """The `token` parameter of a query string (an OsmAnd client's credential), or ""."""
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == "token":
            return value.strip()
    return ""


def _content_length(headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
