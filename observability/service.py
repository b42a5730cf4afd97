"""The OpenTelemetry resource every engine process reports its metrics and traces under."""

from opentelemetry.sdk.resources import SERVICE_NAME, Resource

DEFAULT_SERVICE = "occupancy"


def resource(process: str) -> Resource:
    """`process` as `service.instance.id`, under the service `OTEL_SERVICE_NAME` (or
    `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) names, "occupancy" when neither does."""
    detected = Resource.create({"service.instance.id": process})
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE}))
    return detected
