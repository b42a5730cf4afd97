"""Traces through OpenTelemetry: a batch followed from the gRPC handler through its user shard
to the snapshot that archives it, and HTTP queries, each continuing the caller's `traceparent`.

Sampling follows the caller: a request whose `traceparent` says "sampled" is traced; others are
traced at the ratio `OTEL_TRACES_SAMPLER_ARG` (default 0: none), so tracing costs nothing unless
asked for. A traced batch carries its span context in its log entry (`"trace"`), which is how the
snapshot, seconds later and in another process, joins the same trace. Finished spans go to
Redis (`occ:spans`, the newest KEEP, for `occupancy` tools and tests) and, with
`OTEL_EXPORTER_OTLP_ENDPOINT` set, to an OTLP collector.
"""

import logging
import os
import threading

import orjson
import redis
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from observability.service import resource
from state import redis_client

log = logging.getLogger(__name__)

SPANS = "occ:spans"
KEEP = 10_000
_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()
_providers: dict[str, TracerProvider] = {}


class RedisSpanExporter(SpanExporter):
    def __init__(self, client: redis.Redis, process: str):
        self.client = client
        self.process = process

    def export(self, spans: list[ReadableSpan]) -> SpanExportResult:
        pipe = self.client.pipeline(transaction=False)
        for s in spans:
            parent = s.parent.span_id if s.parent is not None else None
            pipe.lpush(
                SPANS,
                orjson.dumps(
                    {
                        "trace_id": f"{s.context.trace_id:032x}",
                        "span_id": f"{s.context.span_id:016x}",
                        "parent_id": f"{parent:016x}" if parent is not None else None,
                        "name": s.name,
                        "process": self.process,
                        "start_ns": s.start_time,
                        "end_ns": s.end_time,
                        "attributes": dict(s.attributes or {}),
                    }
                ),
            )
        pipe.ltrim(SPANS, 0, KEEP - 1)
        try:
            pipe.execute()
        except redis.RedisError as exc:  # traces never stop the engine
            log.warning("span export failed: %s", exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def tracer(process: str, redis_url: str) -> trace.Tracer:
    """This process's tracer; set up once per process name."""
    with _lock:
        provider = _providers.get(process)
        if provider is None:
            ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG") or 0.0)
            provider = TracerProvider(
                resource=resource(process),
                sampler=ParentBased(TraceIdRatioBased(ratio)),
            )
            exporter = RedisSpanExporter(redis_client.connect(redis_url), process)
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
            if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            _providers[process] = provider
        return provider.get_tracer("occupancy")


def extract(carrier) -> Context:
    """The caller's context from `traceparent` (gRPC metadata, HTTP headers, a log entry)."""
    return _propagator.extract(carrier)


def carrier_of(span: trace.Span) -> dict | None:
    """`span`'s context as a `traceparent` carrier, for the next hop; None if not sampled."""
    if not span.is_recording():
        return None
    carrier: dict = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def spans_of(client: redis.Redis, trace_id: str) -> list[dict]:
    """The kept spans of one trace (newest first)."""
    out = []
    for raw in client.lrange(SPANS, 0, -1):
        span = orjson.loads(raw)
        if span["trace_id"] == trace_id:
            out.append(span)
    return out
