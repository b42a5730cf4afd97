"""The API's audit trail: an ASGI middleware that records every request to a route that needs a
key, once it is answered (observability/audit.py takes the records to history)."""

import time
from functools import partial

from starlette.requests import Request
from starlette.routing import Match

from engine import audit as records
from observability.audit import AuditWriter, Made
from serve_apps.guard import CREDENTIAL, REFUSED, checked, ingest

NOTE = "occ.audit"  # scope: what a handler adds to its request's record


def note(request: Request) -> dict:
    """What the handler of `request` adds to its audit record: `rows` (how many a history
    answer gave), `pseudonyms` (raw id -> pseudonym of the devices it named: one forgotten by
    the request itself keeps its pseudonym in the record) and `params` (e.g. a token's id)."""
    return request.scope.setdefault(NOTE, {})


class AuditTrail:
    """ASGI middleware: one record per request to a route that needs a key (the key's id and
    role, the method, the route's template, its parameters with device ids as pseudonyms, the
    status, the time and the bytes answered). Requests refused before their key was known (no
    key, an unknown one, Redis down) are counted per window, route and reason instead: a flood
    of them adds a bounded number of rows. Nothing here waits for I/O."""

    writer: AuditWriter | None = None  # the replica's, set by QueryApi

    def __init__(self, inner):
        self.inner = inner
        self._routes: list | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.writer is None or not checked(scope.get("path", "")):
            return await self.inner(scope, receive, send)
        arrived = int(time.time() * 1000)
        started = time.perf_counter()
        answer = [500, 0]  # status, body bytes

        async def counted(message):
            if message["type"] == "http.response.start":
                answer[0] = message["status"]
            elif message["type"] == "http.response.body":
                answer[1] += len(message.get("body", b""))
            await send(message)

        try:
            await self.inner(scope, receive, counted)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            self._record(scope, arrived, answer[0], elapsed, answer[1])

    def _record(self, scope, arrived: int, status: int, elapsed_ms: float, sent: int) -> None:
        method = records.http_method(scope.get("method", ""))
        credential = scope.get(CREDENTIAL)
        if credential is None:
            reason = (("reason", scope.get(REFUSED, "")),)
            key = ("http", "", "", method, self._template(scope), status, reason)
            self.writer.count(key, elapsed_ms)
            return
        route = getattr(scope.get("route"), "path", "unmatched")
        if ingest(scope.get("path", "")):
            # as gRPC ingest calls: too many to record one by one, and their parameters hold
            # positions and raw device ids; counted per window with their acks' figures
            key = ("http", *credential, method, route, status, ())
            self.writer.count(key, elapsed_ms, **scope.get(NOTE, {}).get("figures", {}))
            return
        answer = (status, elapsed_ms, sent)
        self.writer.add(
            partial(_made, arrived, credential, method, route, scope.get("path_params"),
                    scope.get("query_string", b""), answer, scope.get(NOTE, {}))
        )  # fmt: skip

    def _template(self, scope) -> str:
        """The template of the route a path matches (never the path: it may hold a raw id)."""
        if self._routes is None:  # the serving app's, once (Starlette puts itself in the scope)
            self._routes = _routes(getattr(scope.get("app"), "routes", ()))
        partial = None
        for route in self._routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route.path
            if match == Match.PARTIAL and partial is None:
                partial = route.path
        return partial or "unmatched"


def _made(arrived, credential, method, route, path_params, query, answer, added) -> Made:
    """A request's record, built when the writer flushes (not on the request's path)."""
    params, devices = records.request_params(path_params or {}, query.decode("latin-1"))
    params.update(added.get("params", {}))
    (key_id, role), (status, elapsed_ms, sent) = credential, answer
    record = records.record(
        arrived,
        "http",
        route,
        key_id=key_id,
        role=role,
        method=method,
        params=params,
        status=status,
        duration_ms=elapsed_ms,
        bytes_out=sent,
        rows=added.get("rows", 0),
    )
    return record, devices, added.get("pseudonyms") or {}


def _routes(routes) -> list:
    """Every route with a path template, those of included routers too (FastAPI keeps an
    included router whole, as Serve's class-based views are)."""
    out = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            out += _routes(included.routes)
        elif getattr(route, "path", None) is not None:
            out.append(route)
    return out
