"""Metrics through OpenTelemetry, from every engine process to one Prometheus endpoint.

Each process (ingest handler, shard, history, query replica) records with the OpenTelemetry
SDK. Every `EXPORT_S` its reader hands the cumulative values to `RedisExporter`, which keeps
them under `occ:metrics:<process>` (expiring when the process stops reporting); the query API's
`GET /metrics` renders every process's values in Prometheus's text format, each series labelled
with its `process`. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the same readings also go to an
OTLP collector.
"""

import logging
import os
import threading

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
from opentelemetry.sdk.resources import Resource

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
            resource = Resource.create(
                {"service.name": "occupancy", "service.instance.id": process}
            )
            provider = _providers[process] = MeterProvider(
                resource=resource, metric_readers=readers
            )
        return provider.get_meter("occupancy")


def prometheus_text(client: redis.Redis) -> str:
    """Every process's latest readings in Prometheus's text exposition format."""
    families: dict[str, dict] = {}
    for key in client.scan_iter(match=PREFIX + "*", count=200):
        raw = client.get(key)
        if raw is None:
            continue
        process = key.decode()[len(PREFIX) :]
        for metric in msgpack.unpackb(raw):
            family = families.setdefault(
                metric["name"], {"kind": metric["kind"], "help": metric["help"], "lines": []}
            )
            for p in metric["points"]:
                labels = {**p["labels"], "process": process}
                family["lines"] += _sample_lines(metric["name"], metric["kind"], labels, p)
    out = []
    for name in sorted(families):
        f = families[name]
        out.append(f"# HELP {name} {f['help'] or name}")
        out.append(f"# TYPE {name} {f['kind']}")
        out += f["lines"]
    return "\n".join(out) + "\n"


def _sample_lines(name: str, kind: str, labels: dict, p: dict) -> list[str]:
    if kind != "histogram":
        return [f"{name}{_labels(labels)} {_num(p['value'])}"]
    lines, total = [], 0
    for bound, n in zip([*p["bounds"], float("inf")], p["buckets"], strict=True):
        total += n
        le = "+Inf" if bound == float("inf") else _num(bound)
        lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {total}")
    lines.append(f"{name}_sum{_labels(labels)} {_num(p['sum'])}")
    lines.append(f"{name}_count{_labels(labels)} {p['count']}")
    return lines


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}"


def _escape(value) -> str:
    """A label value as Prometheus's text format quotes it."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def rss_bytes() -> int:
    """This process's resident memory (what an actor reports of itself)."""
    return psutil.Process().memory_info().rss
