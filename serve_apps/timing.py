"""The query latency histogram and query spans, by route template (an ASGI middleware)."""

import time

from observability import tracing

_TRACE_HEADERS = (b"traceparent", b"tracestate")


class QueryTiming:
    """ASGI middleware: the replica's `occupancy_query_seconds` by route template and status
    (templates, not raw paths: one series per endpoint, whatever the ids)."""

    latency = None  # the replica's histogram, set by QueryApi
    tracer = None  # the replica's tracer: a request with a sampled `traceparent` gets a span

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.latency is None:
            return await self.inner(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        span = None
        carrier = {
            k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in _TRACE_HEADERS
        }
        if carrier:  # a malformed one is ignored, as the W3C spec asks
            span = self.tracer.start_span("query", context=tracing.extract(carrier))
        try:
            await self.inner(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            labels = {"endpoint": route, "status": str(status[0])}
            self.latency.record(time.perf_counter() - start, labels)
            if span is not None:
                span.update_name(f"query {route}")
                span.set_attributes({"http.route": route, "http.status_code": status[0]})
                span.end()
