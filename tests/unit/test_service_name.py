"""OTEL_SERVICE_NAME names the service every process's metrics and traces report under."""

import pytest

from observability import telemetry, tracing
from state import redis_client
from tests.unit.standins import MemoryRedis


@pytest.fixture
def redis(monkeypatch) -> MemoryRedis:
    memory = MemoryRedis()
    monkeypatch.setattr(redis_client, "connect", lambda url, **_: memory)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    return memory


def _resources(process: str) -> list[dict]:
    """The resource attributes of `process`'s meter and tracer, set up anew."""
    try:
        telemetry.meter(process, "redis://unused")
        tracing.tracer(process, "redis://unused")
        meters, tracers = telemetry._providers[process], tracing._providers[process]
        return [
            dict(meters._sdk_config.resource.attributes),
            dict(tracers.resource.attributes),
        ]
    finally:
        for providers in (telemetry._providers, tracing._providers):
            provider = providers.pop(process, None)
            if provider is not None:
                provider.shutdown()


def test_otel_service_name_reaches_the_resource(redis, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "occupancy-eu-west")
    for attributes in _resources("user-7"):
        assert attributes["service.name"] == "occupancy-eu-west"
        assert attributes["service.instance.id"] == "user-7"


def test_the_service_is_occupancy_unless_named(redis, monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    for attributes in _resources("user-8"):
        assert attributes["service.name"] == "occupancy"


def test_service_name_in_resource_attributes_is_honoured_too(redis, monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=edge,deployment.environment=lab")
    for attributes in _resources("user-9"):
        assert attributes["service.name"] == "edge"
        assert attributes["deployment.environment"] == "lab"
