"""Metrics through OpenTelemetry, from every engine process to one Prometheus endpoint.

Each process (ingest handler, shard, history, query replica) records with the OpenTelemetry
SDK. Every `EXPORT_S` its reader hands the cumulative values to `RedisExporter`, which keeps
them under `occ:metrics:<process>` (expiring when the process stops reporting); the query API's
`GET /metrics` renders every process's values through `prometheus_client`'s exposition, each
series labelled with its `process`. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the same readings
also go to an OTLP collector, under the service `OTEL_SERVICE_NAME` names ("occupancy" unless
set).
"""

import logging
import math
import os
import threading
from collections.abc import Iterator

import msgpack
import psutil
import redis
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    Sum,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from observability.service import resource
from state import redis_client

log = logging.getLogger(__name__)

PREFIX = "occ:metrics:"
EXPORT_S = 5.0
TTL_S = 60

_lock = threading.Lock()
_providers: dict[str, MeterProvider] = {}


class RedisExporter(MetricExporter):
    """Keeps one process's latest cumulative readings in Redis, as msgpack."""

    def __init__(self, client: redis.Redis, process: str):
        super().__init__(preferred_temporality={})  # cumulative, as Prometheus expects
        self.client = client
        self.key = PREFIX + process

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_
    ) -> MetricExportResult:
        try:
            self.client.set(self.key, msgpack.packb(readings(metrics_data)), ex=TTL_S)
        except redis.RedisError as exc:  # metrics never stop the engine
            log.warning("metrics export failed: %s", exc)
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_) -> None:
        pass


def readings(data: MetricsData) -> list[dict]:
    """[{name, kind, help, points: [{labels, value} | {labels, buckets, bounds, sum, count}]}]"""
    out = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                d = metric.data
                if isinstance(d, Sum):
                    kind = "counter" if d.is_monotonic else "gauge"
                elif (
                    hasattr(d, "data_points")
                    and d.data_points
                    and isinstance(d.data_points[0], HistogramDataPoint)
                ):
                    kind = "histogram"
                else:
                    kind = "gauge"
                points = []
                for p in d.data_points:
                    labels = {str(k): str(v) for k, v in (p.attributes or {}).items()}
                    if isinstance(p, NumberDataPoint):
                        points.append({"labels": labels, "value": p.value})
                    elif isinstance(p, HistogramDataPoint):
                        points.append(
                            {
                                "labels": labels,
                                "bounds": list(p.explicit_bounds),
                                "buckets": list(p.bucket_counts),
                                "sum": p.sum,
                                "count": p.count,
                            }
                        )
                out.append(
                    {
                        "name": metric.name,
                        "kind": kind,
                        "help": metric.description,
                        "points": points,
                    }
                )
    return out


def meter(process: str, redis_url: str) -> Meter:
    """This process's meter; set up once per process name (a restarted actor sets up again)."""
    with _lock:
        provider = _providers.get(process)
        if provider is None:
            client = redis_client.connect(redis_url)
            readers = [
                PeriodicExportingMetricReader(
                    RedisExporter(client, process), export_interval_millis=EXPORT_S * 1000
                )
            ]
            if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter,
                )

                readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
            provider = _providers[process] = MeterProvider(
                resource=resource(process), metric_readers=readers
            )
        return provider.get_meter("occupancy")


def prometheus_text(client: redis.Redis) -> bytes:
    """Every process's latest readings in Prometheus's text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisReadings(client))
    return generate_latest(registry)


class RedisReadings(Collector):
    """The readings every process keeps under `occ:metrics:<process>`, as metric families for
    `prometheus_client`'s exposition; each series gets a `process` label. A family reported
    with different kinds by different processes keeps the first kind seen."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def collect(self) -> Iterator[Metric]:
        stored = []
        for key in self.client.scan_iter(match=PREFIX + "*", count=200):
            raw = self.client.get(key)
            if raw is not None:
                stored.append((key.decode()[len(PREFIX) :], msgpack.unpackb(raw)))
        yield from families(stored)


def families(stored: list[tuple[str, list[dict]]]) -> list[Metric]:
    """Metric families from (process, readings) pairs, sorted by name."""
    out: dict[str, Metric] = {}
    for process, metrics in sorted(stored, key=lambda pair: pair[0]):
        for metric in metrics:
            name, kind = metric["name"], metric["kind"]
            base = name.removesuffix("_total") if kind == "counter" else name
            family = out.get(name)
            if family is None:
                family = out[name] = Metric(base, metric["help"] or name, kind)
            elif family.type != kind:
                continue
            for p in metric["points"]:
                labels = {**p["labels"], "process": process}
                _add_samples(family, labels, p)
    return [out[name] for name in sorted(out)]


def _add_samples(family: Metric, labels: dict[str, str], p: dict) -> None:
    name = family.name
    if family.type == "counter":
        family.add_sample(name + "_total", labels, p["value"])
    elif family.type != "histogram":
        family.add_sample(name, labels, p["value"])
    else:  # OpenTelemetry counts per bucket; Prometheus's buckets are cumulative
        total = 0
        for bound, n in zip([*p["bounds"], math.inf], p["buckets"], strict=True):
            total += n
            family.add_sample(name + "_bucket", {**labels, "le": floatToGoString(bound)}, total)
        family.add_sample(name + "_sum", labels, p["sum"])
        family.add_sample(name + "_count", labels, p["count"])


def rss_bytes() -> int:
    """This process's resident memory (what an actor reports of itself)."""
    return psutil.Process().memory_info().rss
