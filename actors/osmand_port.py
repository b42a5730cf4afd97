"""The OsmAnd port (`OCC_OSMAND_PORT`, 5055 as Traccar's): an HTTP server in each ingest handler,
on one port they share (SO_REUSEPORT, as their gRPC port), for phones running the Traccar Client
app or anything else speaking the OsmAnd protocol (engine/osmand.py).

Any path and GET or POST: the app sends to the URL it is given (`http://host:5055/?token=...`).
The device token comes in a `token` parameter or the Authorization header. With the engine's
certificate (OCC_TLS_CERT) the port speaks HTTPS. Requests go to `HttpIngest`; the answer is
200 with the ack, or the error envelope with a 4xx (a 503 with Retry-After while the engine
cannot take the position).
"""

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.http_ingest import HttpAnswer, HttpRequest, error_body
from engine.osmand import token_of

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20  # a position is a few hundred bytes; a batched sync a few hundred more
JSON = "application/json"


class _Server(uvicorn.Server):
    """uvicorn in the actor's event loop: the actor's process keeps its own signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class OsmAndPort:
    """`handle(request)` answers each request; `counted(method, answer, elapsed_ms)` is told
    of each answer (the audit counts)."""

    def __init__(
        self,
        handle: Callable[[HttpRequest], Awaitable[HttpAnswer]],
        counted: Callable[[str, HttpAnswer, float], None],
        tls: tuple[str, str, str] = ("", "", ""),
    ):
        self.handle = handle
        self.counted = counted
        self.tls = tls
        self.port = -1
        self._server: _Server | None = None

    async def start(self, port: int) -> int:
        """Listen on `port` (0: a free one) and serve; the port bound."""
        sock = _listen(port)
        self.port = sock.getsockname()[1]
        cert, key, _ = self.tls
        app = Starlette(routes=[Route("/{path:path}", self._endpoint, methods=["GET", "POST"])])
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_keep_alive=30,
            server_header=False,
            ssl_certfile=cert or None,
            ssl_keyfile=key or None,
        )
        self._server = _Server(config)
        self._running = asyncio.ensure_future(self._server.serve(sockets=[sock]))
        log.info("OsmAnd port %d", self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._running
            self._server = None

    async def _endpoint(self, request: Request) -> Response:
        started = time.perf_counter()
        answer = await self._answer(request)
        self.counted(request.method, answer, (time.perf_counter() - started) * 1000)
        headers = {"retry-after": str(answer.retry_after)} if answer.retry_after else None
        return Response(answer.body, answer.status, headers=headers, media_type=JSON)

    async def _answer(self, request: Request) -> HttpAnswer:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                message = f"the request body is larger than {MAX_BODY_BYTES} bytes"
                return HttpAnswer(413, error_body("body_too_large", message))
        query = request.url.query
        content_type = request.headers.get("content-type", "")
        authorization = request.headers.get("authorization", "")
        if not authorization:
            token = token_of(query, body, content_type)
            authorization = f"Bearer {token}" if token else ""
        return await self.handle(
            HttpRequest("osmand", request.method, query, content_type, authorization, body)
        )
