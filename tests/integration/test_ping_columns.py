"""`SendPingColumns` over real gRPC: the same acks as `SendPings` for the same pings, live state
equal to the oracle, and a malformed call refused whole."""

import math
import random
import time

import grpc
import pytest

from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg
from tests.integration.checks import assert_live_equals_oracle, random_pings

pytestmark = pytest.mark.integration


def as_columns(pings: list[pb.Ping]) -> pb.SendPingColumnsRequest:
    return pb.SendPingColumnsRequest(
        device_ids=[p.device_id for p in pings],
        ts_ms=[p.ts_ms for p in pings],
        lat=[p.lat for p in pings],
        lng=[p.lng for p in pings],
        accuracy_m=[p.accuracy_m for p in pings],
    )


def _ack(ack) -> tuple:
    return ack.accepted, ack.late, ack.rejected, [(r.index, r.reason) for r in ack.rejections]


def test_columns_are_acked_as_the_same_pings_in_messages(spaces):
    live = spaces
    now = int(time.time() * 1000)
    # two fleets with the same history, one sending messages, the other columns
    by_messages = random_pings(random.Random(7), "cols-m", 600, now)
    by_columns = random_pings(random.Random(7), "cols-c", 600, now)
    for fleet in (by_messages, by_columns):  # a few each call cannot take
        fleet[10].lat = math.nan
        fleet[20].ts_ms = now + 600_000
        fleet[30].accuracy_m = -1.0
    rng = random.Random(8)
    i = 0
    while i < len(by_messages):
        size = rng.randint(1, 150)
        sent_at = int(time.time() * 1000)
        for p in by_messages[i : i + size] + by_columns[i : i + size]:
            if p.accuracy_m >= 0:  # the oracle knows no accuracy: refused here, not there
                live.oracle.ping(sent_at, p.device_id, p.ts_ms, p.lat, p.lng)
        messages = live.stub.SendPings(
            pb.SendPingsRequest(pings=by_messages[i : i + size]), metadata=live.auth, timeout=30
        )
        columns = live.stub.SendPingColumns(
            as_columns(by_columns[i : i + size]), metadata=live.auth, timeout=30
        )
        assert _ack(columns) == _ack(messages), i
        i += size
    assert_live_equals_oracle(live)


@pytest.mark.parametrize(
    "request_",
    [
        pb.SendPingColumnsRequest(device_ids=["cols-x"], ts_ms=[1], lat=[1.0], lng=[]),
        pb.SendPingColumnsRequest(device_ids=["cols-x"], ts_ms=[1, 2], lat=[1.0], lng=[1.0]),
        pb.SendPingColumnsRequest(
            device_ids=["cols-x", "cols-y"],
            ts_ms=[1, 2],
            lat=[1.0] * 2,
            lng=[1.0] * 2,
            region=["a"],
        ),
    ],
)
def test_columns_of_different_lengths_refuse_the_whole_call(live, request_):
    with pytest.raises(grpc.RpcError) as err:
        live.stub.SendPingColumns(request_, metadata=live.auth, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "for" in err.value.details() and "device_ids" in err.value.details()
    assert live.pseudonym("cols-x") is None  # nothing of it was taken


def test_an_oversized_call_is_refused_and_a_device_token_sends_for_its_device_only(live):
    n = 50_001
    request = pb.SendPingColumnsRequest(
        device_ids=["cols-big"] * n, ts_ms=[1] * n, lat=[1.0] * n, lng=[1.0] * n
    )
    with pytest.raises(grpc.RpcError) as err:
        live.stub.SendPingColumns(request, metadata=live.auth, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 50000" in err.value.details()

    token = live.engine.device_token("cols-own")
    now = int(time.time() * 1000)
    pings = [pb.Ping(device_id=d, ts_ms=now, lat=52.66, lng=-8.63) for d in ("cols-own", "x")]
    live.oracle.ping(now, "cols-own", now, 52.66, -8.63)
    ack = live.stub.SendPingColumns(
        as_columns(pings), metadata=[("authorization", f"Bearer {token}")], timeout=30
    )
    assert _ack(ack) == (1, 0, 1, [(1, "not_authorized_for_device")])


def test_the_deprecated_service_has_no_columns(live):
    call = live.channel.unary_unary(
        "/occupancy.v1.Ingest/SendPingColumns",
        request_serializer=pb.SendPingColumnsRequest.SerializeToString,
        response_deserializer=pb.SendPingColumnsResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as err:
        call(pb.SendPingColumnsRequest(), metadata=live.auth, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert (
        pbg.IngestServiceStub(live.channel).SendPingColumns(
            pb.SendPingColumnsRequest(), metadata=live.auth, timeout=30
        )
        == pb.SendPingColumnsResponse()
    )
