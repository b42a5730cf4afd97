"""What a hostile client sends, against `occupancy up` of its own: every HTTP route and every
gRPC method answers with a 4xx (or a documented status), never a 5xx nor a crash, and the engine
stays healthy and keeps counting."""

import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings

from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg
from tests import hostile
from tests.engine_process import EngineProcess

pytestmark = pytest.mark.integration

EXAMPLES = 300  # per test; bench/fuzz.py runs the same generators for as many as asked


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = EngineProcess(tmp_path_factory.mktemp("hostile"))
    try:
        yield e
    finally:
        e.stop()


def test_hostile_http_requests_never_get_a_5xx(engine):
    seen: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(hostile.requests_(engine.keys))
    def run(request):
        status, body = hostile.send("127.0.0.1", engine.http_port, request)
        seen[str(status)] = seen.get(str(status), 0) + 1
        assert hostile.problem(request, status, body) is None

    run()
    assert engine.healthy()
    assert len(seen) > 3, seen  # the inputs reach many answers, not one refusal


def test_hostile_grpc_calls_get_a_clear_status_and_the_engine_keeps_counting(engine):
    channel = grpc.insecure_channel(f"127.0.0.1:{engine.grpc_port}")
    now = int(time.time() * 1000)
    codes: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(hostile.grpc_calls(now))
    def run(call):
        method, data = call
        code = hostile.grpc_send(channel, engine.keys["ingest"], method, data)
        codes[code.name] = codes.get(code.name, 0) + 1
        assert code in hostile.OK_CODES, (code, method, data[:200])

    run()
    # a stream of broken and good messages: the broken ones are rejected, the good ones count
    stub = pbg.IngestServiceStub(channel)
    good = pb.Ping(device_id="after-fuzz", ts_ms=int(time.time() * 1000), lat=52.66, lng=-8.63)
    stream = channel.stream_stream(
        "/occupancy.v1.IngestService/StreamPings",
        request_serializer=lambda b: b,
        response_deserializer=pb.StreamPingsResponse.FromString,
    )
    messages = [b"\xff\xff\xff", good.SerializeToString(), b"\x0a\x85", b""]
    acks = list(stream(iter(messages), metadata=[("authorization", f"Bearer {engine.admin}")]))
    assert acks[-1].accepted == 1 and acks[-1].rejected == 3
    ack = stub.SendPings(
        pb.SendPingsRequest(pings=[good]), metadata=[("authorization", f"Bearer {engine.admin}")]
    )
    assert ack.late == 1  # the same ping again: it was applied the first time
    assert engine.healthy()
    assert "OK" in codes and "INVALID_ARGUMENT" in codes, codes
