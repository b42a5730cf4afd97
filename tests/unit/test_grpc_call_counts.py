"""Every gRPC ingest call ends in the call counter by method, service name and status code, failed
calls too, under either service name alike (no Ray, no gRPC server: the RPCs over a stand-in
core and call context)."""

import asyncio

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from actors.ingest_core import AuthError, Caller, ShardUnavailable
from actors.ingest_rpc import DEPRECATED, SERVICE, IngestRpcs, call_counter
from protos.occupancy.v1 import occupancy_pb2 as pb

GOOD = (("authorization", "Bearer good"),)


class Core:
    """Authenticates "Bearer good"; acks every ping, or fails as a lost shard does."""

    in_flight = 0

    def __init__(self):
        self.fail = False

    def authenticate(self, authorization: str) -> Caller:
        if authorization != "Bearer good":
            raise AuthError("no valid credential")
        return Caller(device=None, credential="key:k1", role="ingest", key_id="k1")

    def admit(self, caller: Caller, items: int) -> float:
        return 0.0

    async def ingest_pings(self, pings, device, base: int = 0, trace=None) -> pb.SendPingsResponse:
        if self.fail:
            raise ShardUnavailable("user-0 is restarting")
        return pb.SendPingsResponse(accepted=len(pings))


class Audit:
    def __init__(self):
        self.routes: list[str] = []

    def count(self, key, duration_ms: float = 0.0, **counts) -> None:
        self.routes.append(key[4])


class Health:
    """Counts the calls that told the handler's health to check at once."""

    def __init__(self):
        self.suspected = 0

    def suspect(self) -> None:
        self.suspected += 1


class Context:
    """What a handler reads of grpc.aio's call context, and the code it ends the call with."""

    def __init__(self, metadata=GOOD):
        self.metadata = metadata
        self._code = None

    def invocation_metadata(self):
        return self.metadata

    def set_trailing_metadata(self, metadata) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, details: str):
        self._code = code
        raise grpc.aio.AbortError()

    def code(self):
        return self._code


class Handler(IngestRpcs):
    def __init__(self, meter):
        self.core = Core()
        self.audit = Audit()
        self.health = Health()
        self.calls = call_counter(meter)
        self.tracer = trace.NoOpTracer()
        self.max_batch = 100
        self.max_in_flight = 8
        self._streams = set()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def handler(reader) -> Handler:
    return Handler(MeterProvider(metric_readers=[reader]).get_meter("test"))


def _counts(reader: InMemoryMetricReader) -> dict[tuple[str, str, str], int]:
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "occupancy_grpc_calls_total":
                    for p in metric.data.data_points:
                        a = p.attributes
                        out[(a["method"], a["service"], a["code"])] = p.value
    return out


def _send(handler: Handler, request: bytes, context: Context, service: str = SERVICE) -> None:
    try:
        asyncio.run(handler.send_pings(request, context, service))
    except grpc.aio.AbortError:
        pass


@pytest.mark.parametrize("service", [SERVICE, DEPRECATED])
def test_calls_are_counted_by_method_and_code_failed_ones_too(handler, reader, service):
    batch = pb.SendPingsRequest(pings=[pb.Ping(device_id="d-1", ts_ms=1, lat=1.0, lng=1.0)])
    good = batch.SerializeToString()
    _send(handler, good, Context(), service)
    _send(handler, good, Context(), service)
    _send(handler, good, Context(metadata=()), service)  # no credential
    _send(handler, b"\xff\xff not a message", Context(), service)
    _send(handler, b"\x0a\x05ab", Context(), service)  # truncated
    assert handler.health.suspected == 0
    handler.core.fail = True
    _send(handler, good, Context(), service)
    assert handler.health.suspected == 1  # a lost shard: the health checks at once
    assert _counts(reader) == {
        ("SendPings", service, "OK"): 2,
        ("SendPings", service, "UNAUTHENTICATED"): 1,
        ("SendPings", service, "INVALID_ARGUMENT"): 2,
        ("SendPings", service, "UNAVAILABLE"): 1,
    }
    assert set(handler.audit.routes) == {f"/{service}/SendPings"}


def test_both_names_count_in_one_method_apart_by_service(handler, reader):
    good = pb.PingBatch(pings=[pb.Ping(device_id="d-1", ts_ms=1, lat=1.0, lng=1.0)])
    _send(handler, good.SerializeToString(), Context(), DEPRECATED)  # an old client's bytes
    _send(handler, good.SerializeToString(), Context(), SERVICE)
    assert _counts(reader) == {
        ("SendPings", "occupancy.v1.Ingest", "OK"): 1,
        ("SendPings", "occupancy.v1.IngestService", "OK"): 1,
    }


def test_a_call_that_raises_unexpectedly_is_counted_as_unknown(handler, reader):
    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    handler.core.ingest_pings = broken
    with pytest.raises(RuntimeError):
        asyncio.run(handler.send_pings(pb.SendPingsRequest().SerializeToString(), Context()))
    assert _counts(reader) == {("SendPings", SERVICE, "UNKNOWN"): 1}
