"""The API's errors: one envelope for every error answer, and the engine's errors as HTTP."""

import asyncio
import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from clients.errors import StateUnavailable, Unavailable
from clients.history import HistoryTimeout, HistoryUnavailable
from serve_apps.guard import REDIS_DOWN, RETRY_AFTER_S

log = logging.getLogger(__name__)

HISTORY_TIMEOUT_S = 60.0  # a history answer that takes longer gets 504
# a query ClickHouse stops at its own `timeout_s` is awaited this much longer (it may wait
# behind another query for the store) before the API gives up on it
STORE_GRACE_S = 10.0
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


class ApiError(Exception):
    """An error with its HTTP status and a stable code for the error envelope."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def envelope(status: int, code: str, message: str, headers=None) -> ORJSONResponse:
    """`{"error": {"code", "message"}}`; a 503 says when to retry."""
    if status == 503:
        headers = {**(headers or {}), "Retry-After": RETRY_AFTER_S}
    body = {"error": {"code": code, "message": message}}
    return ORJSONResponse(body, status_code=status, headers=headers)


@contextmanager
def bad(code: str) -> Iterator[None]:
    """Turns a ValueError from engine parsing or validation into a 400 with `code`."""
    try:
        yield
    except ValueError as exc:
        raise ApiError(400, code, str(exc)) from exc


def engine_error(exc: BaseException, timeout_s: float = HISTORY_TIMEOUT_S) -> ApiError | None:
    """The answer to an error of the engine's clients (None: not one of theirs, a bug).

    `timeout_s` is the time a history query was given, for the 504's message."""
    if isinstance(exc, HistoryTimeout | TimeoutError):
        message = f"the history query took longer than {timeout_s:g} s"
        return ApiError(504, "history_timeout", message)
    if isinstance(exc, HistoryUnavailable):
        return ApiError(503, "history_unavailable", (str(exc).splitlines() or [""])[-1])
    if isinstance(exc, StateUnavailable | redis.RedisError):
        return ApiError(503, *REDIS_DOWN)
    if isinstance(exc, Unavailable):
        return ApiError(503, "unavailable", "a shard or the history store is restarting; retry")
    return None


async def within(call: Awaitable, timeout_s: float = HISTORY_TIMEOUT_S, grace_s: float = 0.0):
    """Await a history answer: a 504 naming `timeout_s` when ClickHouse stops the query at its
    own limit or when none came within `timeout_s` + `grace_s` (the grace for a query that
    ClickHouse stops at `timeout_s` itself). The other engine errors reach the handlers below."""
    try:
        return await asyncio.wait_for(call, timeout_s + grace_s)
    except (HistoryTimeout, TimeoutError) as exc:
        raise engine_error(exc, timeout_s) from exc


async def _api_error(request: Request, exc: ApiError) -> ORJSONResponse:
    return envelope(exc.status, exc.code, exc.message)


async def _engine_error(request: Request, exc: Exception) -> ORJSONResponse:
    error = engine_error(exc)
    log.warning("%s %s: %s", request.method, request.url.path, error.message)
    return envelope(error.status, error.code, error.message)


async def _validation_error(request: Request, exc: RequestValidationError) -> ORJSONResponse:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path"))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return envelope(400, "bad_request", "; ".join(parts) or "invalid request")


async def _http_error(request: Request, exc: HTTPException) -> ORJSONResponse:
    code = HTTP_CODES.get(exc.status_code, "http_error")
    headers = exc.headers
    if exc.status_code == 405:  # Starlette names the methods of one route of the path
        headers = {**(headers or {}), "Allow": ", ".join(_allowed(request))}
    return envelope(exc.status_code, code, str(exc.detail), headers)


def _allowed(request: Request) -> list[str]:
    """The methods of every route of the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


async def _internal_error(request: Request, exc: Exception) -> ORJSONResponse:
    """A bug, not the client's mistake: logged, and answered with the envelope all the same.
    An engine error (the clients raise them in place of Ray's, clients/errors.py) is answered
    as the error is."""
    if (error := engine_error(exc)) is not None:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return envelope(error.status, error.code, error.message)
    log.exception("%s %s failed", request.method, request.url.path)
    return envelope(500, "internal", f"{type(exc).__name__}: the engine failed to answer")


def install(app: FastAPI) -> None:
    """The handlers that answer every error with the envelope."""
    app.add_exception_handler(ApiError, _api_error)
    for engine in (Unavailable, HistoryUnavailable, HistoryTimeout, redis.RedisError):
        app.add_exception_handler(engine, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
