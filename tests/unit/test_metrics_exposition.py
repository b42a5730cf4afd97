"""/metrics: readings kept in Redis by several processes, rendered through prometheus_client's
exposition and parsed back by its parser; every metric the engine creates says its unit."""

import fnmatch
import re
from pathlib import Path

import pytest
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from observability import telemetry
from tests.metric_names import lacks_unit

ROOT = Path(__file__).resolve().parents[2]


class Keys:
    """The two Redis commands the scrape makes, over a dict."""

    def __init__(self):
        self.data: dict[bytes, bytes] = {}

    def set(self, key: str, value: bytes, **_) -> None:
        self.data[key.encode()] = value

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def scan_iter(self, match: str, count: int = 0):
        return [k for k in list(self.data) if fnmatch.fnmatch(k.decode(), match)]


def _report(keys: Keys, process: str, record) -> None:
    """What `process`'s exporter leaves in Redis after `record(meter)`."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    record(provider.get_meter("test"))
    telemetry.RedisExporter(keys, process).export(reader.get_metrics_data())
    provider.shutdown()


def _ingest(m) -> None:
    pings = m.create_counter("occupancy_pings_total")
    pings.add(7, {"outcome": "accepted"})
    pings.add(2, {"outcome": "rejected"})
    m.create_counter("occupancy_rejections_total").add(
        2, {"kind": "ping", "reason": 'odd "quoted"\nreason\\'}
    )
    sizes = m.create_histogram(
        "occupancy_ingest_batch_pings", explicit_bucket_boundaries_advisory=[1, 10, 100]
    )
    for n in (1, 5, 50, 500):
        sizes.record(n)


def _shard(name: str):
    def record(m) -> None:
        m.create_observable_gauge(
            "occupancy_shard_devices", callbacks=[lambda _: [Observation(3, {"shard": name})]]
        )
        m.create_counter("occupancy_redis_lost_total").add(0, {"shard": name})

    return record


@pytest.fixture
def scraped() -> dict:
    keys = Keys()
    _report(keys, "ingest-0", _ingest)
    _report(keys, "user-0", _shard("user-0"))
    _report(keys, "user-1", _shard("user-1"))
    text = telemetry.prometheus_text(keys).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_parse_with_every_process_as_a_label(scraped):
    pings = {s.labels["outcome"]: (s.name, s.value) for s in scraped["occupancy_pings"].samples}
    assert scraped["occupancy_pings"].type == "counter"
    assert pings == {
        "accepted": ("occupancy_pings_total", 7),
        "rejected": ("occupancy_pings_total", 2),
    }
    devices = scraped["occupancy_shard_devices"]
    assert devices.type == "gauge"
    assert {(s.labels["process"], s.labels["shard"], s.value) for s in devices.samples} == {
        ("user-0", "user-0", 3),
        ("user-1", "user-1", 3),
    }
    lost = scraped["occupancy_redis_lost"].samples
    assert sorted((s.labels["process"], s.value) for s in lost) == [("user-0", 0), ("user-1", 0)]


def test_a_label_value_with_quotes_newlines_and_backslashes_comes_back_whole(scraped):
    (sample,) = scraped["occupancy_rejections"].samples
    assert sample.labels == {
        "kind": "ping",
        "reason": 'odd "quoted"\nreason\\',
        "process": "ingest-0",
    }


def test_histogram_buckets_are_cumulative(scraped):
    family = scraped["occupancy_ingest_batch_pings"]
    assert family.type == "histogram"
    by_name: dict[str, list] = {}
    for s in family.samples:
        by_name.setdefault(s.name.rsplit("_", 1)[-1], []).append(s)
    assert [(s.labels["le"], s.value) for s in by_name["bucket"]] == [
        ("1.0", 1),
        ("10.0", 2),
        ("100.0", 3),
        ("+Inf", 4),
    ]
    assert [s.value for s in by_name["count"]] == [4]
    assert [s.value for s in by_name["sum"]] == [556]


def _created() -> list[tuple[str, str]]:
    """(name, kind) of every metric the engine's code creates."""
    made = re.compile(r'create_(counter|histogram|observable_gauge|up_down_counter)\(\s*"(\w+)"')
    out = []
    for path in [*ROOT.glob("actors/*.py"), *ROOT.glob("serve_apps/*.py")]:
        for kind, name in made.findall(path.read_text()):
            out.append((name, "counter" if kind == "counter" else "gauge"))
    return out


def test_every_metric_name_says_its_unit():
    created = _created()
    assert len(created) >= 20
    assert [name for name, kind in created if lacks_unit(name, kind)] == []
