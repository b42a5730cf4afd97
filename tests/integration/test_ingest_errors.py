"""Bad input gets the documented error and loses nothing else; streams ack at least every second."""

import math
import os
import signal
import threading
import time

import grpc
import pytest
import requests
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

SYDNEY = (-33.8688, 151.2093)


def feed_accepted(live, pings, ack, now) -> None:
    rejected = {r.index for r in ack.rejections}
    for i, p in enumerate(pings):
        if i not in rejected:
            live.oracle.ping(now, p.device_id, p.ts_ms, p.lat, p.lng)


def test_bad_items_are_rejected_with_reasons_and_the_rest_is_applied(live):
    now = int(time.time() * 1000)
    good = dict(ts_ms=now, lat=SYDNEY[0], lng=SYDNEY[1])
    pings = [
        pb.Ping(device_id="bad-ok-1", **good),
        pb.Ping(device_id="bad-nan", ts_ms=now, lat=math.nan, lng=1.0),
        pb.Ping(device_id="bad-lat", ts_ms=now, lat=91.0, lng=1.0),
        pb.Ping(device_id="bad-lng", ts_ms=now, lat=1.0, lng=-180.5),
        pb.Ping(device_id="bad-future", ts_ms=now + 120_000, lat=1.0, lng=1.0),
        pb.Ping(device_id="", **good),
        pb.Ping(device_id="x" * 200, **good),
        pb.Ping(device_id="bad-inf", ts_ms=now, lat=1.0, lng=math.inf),
        pb.Ping(device_id="bad-acc", accuracy_m=-3.0, **good),
        pb.Ping(device_id="bad-ok-2", **good),
    ]
    ack = live.stub.SendPings(pb.SendPingsRequest(pings=pings), metadata=live.auth, timeout=30)
    feed_accepted(live, pings, ack, now)
    assert (ack.accepted, ack.late, ack.rejected) == (2, 0, 8)
    assert {r.index: r.reason for r in ack.rejections} == {
        1: "lat_not_finite",
        2: "lat_out_of_range",
        3: "lng_out_of_range",
        4: "ts_in_future",
        5: "device_id_empty",
        6: "device_id_too_long",
        7: "lng_not_finite",
        8: "accuracy_invalid",
    }
    cell = live.oracle.cell_of(*SYDNEY)
    deadline = time.monotonic() + 10
    while live.q(live.queries.cell_count(cell)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live.q(live.queries.cell_count(cell)) == live.oracle.occupancy(cell, now, now) >= 2


def test_fifty_megabyte_batch_is_refused_and_the_next_batch_works(live):
    big = pb.SendPingsRequest(
        pings=[pb.Ping(device_id="big-" + "y" * 100, ts_ms=1, lat=1.0, lng=1.0)] * 400_000
    )
    assert big.ByteSize() > 50_000_000
    with pytest.raises(grpc.RpcError) as err:
        live.stub.SendPings(big, metadata=live.auth, timeout=60)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    now = int(time.time() * 1000)
    ack = live.send([pb.Ping(device_id="after-big", ts_ms=now, lat=SYDNEY[0], lng=SYDNEY[1])])
    assert ack.accepted == 1


def test_too_many_items_in_one_call_is_invalid_argument(live):
    many = pb.SendPingsRequest(pings=[pb.Ping(device_id="m", ts_ms=1, lat=1, lng=1)] * 50_001)
    with pytest.raises(grpc.RpcError) as err:
        live.stub.SendPings(many, metadata=live.auth, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 50000" in err.value.details()


def test_bytes_that_are_not_a_protobuf_are_invalid_argument(live):
    raw = live.channel.unary_unary("/occupancy.v1.IngestService/SendPings")
    for body in (b"this is not a protobuf", b"\x0a\xff\xff\xff\xff\x0f"):
        with pytest.raises(grpc.RpcError) as err:
            raw(body, metadata=live.auth, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_missing_bad_or_wrong_role_tokens(live):
    batch = pb.SendPingsRequest(pings=[pb.Ping(device_id="t", ts_ms=1, lat=1, lng=1)])
    cases = [
        ([], grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Bearer nonsense")], grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Basic abc")], grpc.StatusCode.UNAUTHENTICATED),
        (
            [("authorization", f"Bearer {live.engine.create_key('viewer')}")],
            grpc.StatusCode.PERMISSION_DENIED,
        ),
    ]
    for metadata, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            live.stub.SendPings(batch, metadata=metadata, timeout=10)
        assert err.value.code() == code


def test_device_token_sends_only_for_its_own_device(live):
    token = live.engine.device_token("phone-1")
    now = int(time.time() * 1000)
    pings = [
        pb.Ping(device_id="phone-1", ts_ms=now, lat=SYDNEY[0], lng=SYDNEY[1]),
        pb.Ping(device_id="phone-2", ts_ms=now, lat=SYDNEY[0], lng=SYDNEY[1]),
    ]
    ack = live.stub.SendPings(
        pb.SendPingsRequest(pings=pings),
        metadata=[("authorization", f"Bearer {token}")],
        timeout=10,
    )
    feed_accepted(live, pings, ack, now)
    assert ack.accepted == 1
    assert [(r.index, r.reason) for r in ack.rejections] == [(1, "not_authorized_for_device")]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(grpc.RpcError) as err:
        live.stub.SendPings(
            pb.SendPingsRequest(pings=pings[:1]),
            metadata=[("authorization", f"Bearer {forged}")],
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_stream_acks_cumulatively_and_survives_a_malformed_message(live):
    raw_stream = live.channel.stream_stream(
        "/occupancy.v1.IngestService/StreamPings",
        response_deserializer=pb.StreamPingsResponse.FromString,
    )
    start = int(time.time() * 1000)
    sent = []

    def messages():
        for i in range(3_000):
            if i == 1_500:
                yield b"this is not a protobuf"
                continue
            p = pb.StreamPingsRequest(
                device_id=f"stream-{i % 300}",
                ts_ms=start + i,
                lat=SYDNEY[0] + (i % 7) * 1e-3,
                lng=SYDNEY[1],
            )
            sent.append(p)
            yield p.SerializeToString()
            if i % 500 == 0:
                time.sleep(0.5)

    acks = list(raw_stream(messages(), metadata=live.auth, timeout=60))
    now = int(time.time() * 1000)
    for p in sent:
        live.oracle.ping(now, p.device_id, p.ts_ms, p.lat, p.lng)
    assert len(acks) >= 3  # ~3 s of streaming, an ack at least every second, and a final one
    final = acks[-1]
    assert final.accepted + final.late == 2_999 and final.rejected == 1
    counts = [(a.accepted + a.late + a.rejected) for a in acks]
    assert counts == sorted(counts)
    rejections = [(r.index, r.reason) for a in acks for r in a.rejections]
    assert rejections == [(1_500, "malformed")]


def test_stream_acks_everything_processed_while_the_sender_waits(live):
    """A sender whose buffer is full stops until it hears an ack: the server must ack what it
    has processed without waiting for more messages."""
    raw_stream = live.channel.stream_stream(
        "/occupancy.v1.IngestService/StreamPings",
        response_deserializer=pb.StreamPingsResponse.FromString,
    )
    start = int(time.time() * 1000)
    sent = [
        pb.StreamPingsRequest(
            device_id=f"waiting-{i % 50}", ts_ms=start + i, lat=SYDNEY[0], lng=SYDNEY[1]
        )
        for i in range(200)
    ]
    heard = threading.Event()

    def messages():
        for i, p in enumerate(sent):
            yield p.SerializeToString()
            if i % 10 == 9:
                time.sleep(0.005)  # bursts closer together than acks: the last one lands late
        heard.wait(timeout=20)  # the stream stays open: no half-close forces a final ack

    t0 = time.monotonic()
    for ack in raw_stream(messages(), metadata=live.auth, timeout=60):
        if ack.accepted + ack.late + ack.rejected == len(sent) and not heard.is_set():
            waited = time.monotonic() - t0
            heard.set()
    assert heard.is_set() and waited < 10  # acked while open, not at the 20 s give-up
    now = int(time.time() * 1000)
    for p in sent:
        live.oracle.ping(now, p.device_id, p.ts_ms, p.lat, p.lng)


def test_door_events_with_bad_items(live):
    now = int(time.time() * 1000)
    events = [
        pb.DoorEvent(sensor_id="s1", ts_ms=now - 1_000, direction=1),
        pb.DoorEvent(sensor_id="s1", ts_ms=now, direction=0),
        pb.DoorEvent(sensor_id="", ts_ms=now, direction=1),
        pb.DoorEvent(sensor_id="s1", ts_ms=now + 600_000, direction=-1),
    ]
    ack = live.doors(events)
    assert ack.accepted == 1
    assert {r.index: r.reason for r in ack.rejections} == {
        1: "direction_invalid",
        2: "sensor_id_empty",
        3: "ts_in_future",
    }


def test_health_and_reflection(live):
    health = health_pb2_grpc.HealthStub(live.channel)
    for service in ("", "occupancy.v1.IngestService", "occupancy.v1.Ingest"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(live.channel)
    replies = stub.ServerReflectionInfo(
        iter(
            [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="occupancy.v1.Ingest"
                ),
            ]
        ),
        timeout=5,
    )
    listed, described = replies
    names = {s.name for s in listed.list_services_response.service}
    assert {"occupancy.v1.IngestService", "occupancy.v1.Ingest"} <= names
    proto = descriptor_pb2.FileDescriptorProto.FromString(
        described.file_descriptor_response.file_descriptor_proto[0]
    )
    services = {s.name: s for s in proto.service}
    assert services["Ingest"].options.deprecated
    assert not services["IngestService"].options.deprecated


def _grpc_calls(live) -> dict[tuple[str, str, str], float]:
    """occupancy_grpc_calls_total by (service, method, code), from the API's /metrics."""
    text = requests.get(live.http + "/metrics", timeout=10).text
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "occupancy_grpc_calls_total":
                lab = sample.labels
                key = (lab.get("service", ""), lab["method"], lab["code"])
                out[key] = out.get(key, 0) + sample.value
    return out


def test_old_and_new_clients_are_served_alike(live):
    """The deprecated `occupancy.v1.Ingest` (its method paths and its messages' bytes, from its
    own generated stub and from raw bytes) and `occupancy.v1.IngestService` reach the same
    handlers, and their calls are counted by method under the name each called."""
    before = _grpc_calls(live)
    now = int(time.time() * 1000)
    old_stub, new_stub = pb_grpc.IngestStub(live.channel), pb_grpc.IngestServiceStub(live.channel)

    def pings(tag: str) -> list[pb.Ping]:
        return [
            pb.Ping(device_id=f"compat-{tag}-{i}", ts_ms=now, lat=SYDNEY[0], lng=SYDNEY[1])
            for i in range(3)
        ] + [pb.Ping(device_id=f"compat-{tag}-bad", ts_ms=now, lat=91.0, lng=1.0)]

    old_ack = old_stub.SendPings(pb.PingBatch(pings=pings("old")), metadata=live.auth, timeout=30)
    assert isinstance(old_ack, pb.IngestAck)
    new_ack = new_stub.SendPings(
        pb.SendPingsRequest(pings=pings("new")), metadata=live.auth, timeout=30
    )
    assert isinstance(new_ack, pb.SendPingsResponse)
    raw = live.channel.unary_unary("/occupancy.v1.Ingest/SendPings")  # bytes in, bytes out
    raw_ack = pb.IngestAck.FromString(
        raw(pb.PingBatch(pings=pings("raw")).SerializeToString(), metadata=live.auth, timeout=30)
    )
    for tag, ack in (("old", old_ack), ("new", new_ack), ("raw", raw_ack)):
        feed_accepted(live, pings(tag), ack, now)
        assert (ack.accepted, ack.rejected) == (3, 1), tag
        assert [(r.index, r.reason) for r in ack.rejections] == [(3, "lat_out_of_range")]
    # a stream of Ping messages on the old path, of StreamPingsRequests on the new one
    old_stream = [pb.Ping(device_id="compat-stream-old", ts_ms=now, lat=SYDNEY[0], lng=SYDNEY[1])]
    new_stream = [
        pb.StreamPingsRequest(device_id="compat-stream-new", ts_ms=now, lat=SYDNEY[0], lng=1.0)
    ]
    old_acks = list(old_stub.StreamPings(iter(old_stream), metadata=live.auth, timeout=30))
    new_acks = list(new_stub.StreamPings(iter(new_stream), metadata=live.auth, timeout=30))
    assert old_acks[-1].accepted == new_acks[-1].accepted == 1
    feed_accepted(live, old_stream + new_stream, pb.SendPingsResponse(), now)
    events = [pb.DoorEvent(sensor_id="s1", ts_ms=now - 500, direction=1)]
    old_doors = old_stub.SendDoorEvents(
        pb.DoorEventBatch(events=events), metadata=live.auth, timeout=30
    )
    new_doors = new_stub.SendDoorEvents(
        pb.SendDoorEventsRequest(events=[pb.DoorEvent(sensor_id="s1", ts_ms=now, direction=-1)]),
        metadata=live.auth,
        timeout=30,
    )
    assert old_doors.accepted == new_doors.accepted == 1
    live.oracle.door_event(int(time.time() * 1000), "s1", now - 500, 1)
    live.oracle.door_event(int(time.time() * 1000), "s1", now, -1)

    deadline = time.monotonic() + 30
    while True:  # every process exports its metrics every few seconds
        grown = {
            k: v - before.get(k, 0) for k, v in _grpc_calls(live).items() if v > before.get(k, 0)
        }
        wanted = {
            ("occupancy.v1.Ingest", "SendPings", "OK"): 2,
            ("occupancy.v1.IngestService", "SendPings", "OK"): 1,
            ("occupancy.v1.Ingest", "StreamPings", "OK"): 1,
            ("occupancy.v1.IngestService", "StreamPings", "OK"): 1,
            ("occupancy.v1.Ingest", "SendDoorEvents", "OK"): 1,
            ("occupancy.v1.IngestService", "SendDoorEvents", "OK"): 1,
        }
        if all(grown.get(k, 0) >= n for k, n in wanted.items()):
            break
        assert time.monotonic() < deadline, grown
        time.sleep(1)


def _statuses(channel: grpc.Channel) -> set[int]:
    """The health status of the server and of both ingest service names."""
    stub = health_pb2_grpc.HealthStub(channel)
    return {
        stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
        for name in ("", "occupancy.v1.IngestService", "occupancy.v1.Ingest")
    }


def test_grpc_health_follows_a_user_shard_that_stops_answering(live):
    """A user shard's process stopped (SIGSTOP: alive, answering nothing) makes every handler
    NOT_SERVING on every name; resumed, SERVING again, and pings are acked."""
    t = live.engine.topology
    victim = live.q(live.queries.users.pids())[0]
    assert _statuses(live.channel) == {health_pb2.HealthCheckResponse.SERVING}
    os.kill(victim, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        while _statuses(live.channel) != {health_pb2.HealthCheckResponse.NOT_SERVING}:
            assert time.monotonic() - stopped < 20, "gRPC health never said NOT_SERVING"
            time.sleep(0.2)
        # a handler on another connection (another handler, maybe) says the same
        with grpc.insecure_channel(f"127.0.0.1:{live.engine.grpc_port}") as other:
            assert _statuses(other) == {health_pb2.HealthCheckResponse.NOT_SERVING}
    finally:
        os.kill(victim, signal.SIGCONT)
    resumed = time.monotonic()
    while _statuses(live.channel) != {health_pb2.HealthCheckResponse.SERVING}:
        assert time.monotonic() - resumed < 20, "gRPC health stayed NOT_SERVING"
        time.sleep(0.2)
    now = int(time.time() * 1000)
    pings = [
        pb.Ping(device_id=f"health-{i}", ts_ms=now, lat=SYDNEY[0], lng=SYDNEY[1])
        for i in range(len(t.user_shards) * 4)
    ]
    assert live.send(pings).accepted == len(pings)


def test_a_stopping_handler_says_not_serving_before_it_closes(live):
    import ray

    from actors.ingest import IngestServer

    handler = IngestServer.options(
        name="ingest-draining", namespace=live.engine.topology.namespace
    ).remote(live.engine.topology, 0)
    try:
        port = ray.get(handler.bound_port.remote())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        assert _statuses(channel) == {health_pb2.HealthCheckResponse.SERVING}
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="occupancy.v1.IngestService"), timeout=60
        )
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stopping = handler.stop.remote()
        # watchers hear it at once; checks answer it while the handler still takes calls
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert _statuses(channel) == {health_pb2.HealthCheckResponse.NOT_SERVING}
        now = int(time.time() * 1000)
        ping = pb.Ping(device_id="draining", ts_ms=now, lat=SYDNEY[0], lng=SYDNEY[1])
        ack = pb_grpc.IngestServiceStub(channel).SendPings(
            pb.SendPingsRequest(pings=[ping]), metadata=live.auth, timeout=10
        )
        feed_accepted(live, [ping], ack, now)
        assert ack.accepted == 1
        ready, _ = ray.wait([stopping], timeout=0)
        assert not ready, "the handler closed before its health said NOT_SERVING for long"
        ray.get(stopping, timeout=30)
        with pytest.raises(grpc.RpcError) as err:
            _statuses(grpc.insecure_channel(f"127.0.0.1:{port}"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        ray.kill(handler, no_restart=True)


def test_overload_gets_resource_exhausted_not_a_queue(live):
    import ray

    from actors.ingest import IngestServer

    # a handler allowed no batch in flight is always overloaded
    handler = IngestServer.options(name="ingest-overloaded", namespace="occupancy").remote(
        live.engine.topology, 0, max_in_flight=0
    )
    try:
        port = ray.get(handler.bound_port.remote())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.IngestServiceStub(channel)
        batch = pb.SendPingsRequest(pings=[pb.Ping(device_id="o", ts_ms=1, lat=1, lng=1)])
        with pytest.raises(grpc.RpcError) as err:
            stub.SendPings(batch, metadata=live.auth, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        ray.kill(handler, no_restart=True)


def test_a_redis_that_refuses_writes_gets_unavailable_and_the_retry_counts_once(live):
    client = live.engine.client()
    now = int(time.time() * 1000)
    lat, lng = -33.80, 151.10
    pings = [pb.Ping(device_id=f"oom-{i}", ts_ms=now, lat=lat, lng=lng) for i in range(20)]
    doors = [pb.DoorEvent(sensor_id="oom-door", ts_ms=now, direction=1)]
    before = client.config_get("maxmemory")["maxmemory"]
    client.config_set("maxmemory", "1")  # noeviction: every write is refused, reads work
    try:
        for call, message in (
            (live.stub.SendPings, pb.SendPingsRequest(pings=pings)),
            (live.stub.SendDoorEvents, pb.SendDoorEventsRequest(events=doors)),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call(message, metadata=live.auth, timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            assert "write-ahead log" in err.value.details()
    finally:
        client.config_set("maxmemory", before)
    # nothing of the refused batch was applied: the retry is the first the engine counts
    ack = live.send(pings)
    assert ack.accepted == len(pings)
    cell = live.oracle.cell_of(lat, lng)
    deadline = time.monotonic() + 10
    while live.q(live.queries.cell_count(cell)) < len(pings) and time.monotonic() < deadline:
        time.sleep(0.1)
    t = int(time.time() * 1000)
    assert live.q(live.queries.cell_count(cell)) == live.oracle.occupancy(cell, t, t) == 20


def test_a_ten_year_backlog_is_too_old_and_the_rest_of_the_batch_counts(live):
    now = int(time.time() * 1000)
    decade = [now - k * 31 * 86_400_000 for k in range(120, 0, -1)]
    pings = [pb.Ping(device_id="decade", ts_ms=t, lat=1.0, lng=1.0) for t in decade]
    pings.append(pb.Ping(device_id="decade-ok", ts_ms=now, lat=SYDNEY[0], lng=SYDNEY[1]))
    ack = live.stub.SendPings(pb.SendPingsRequest(pings=pings), metadata=live.auth, timeout=30)
    feed_accepted(live, pings, ack, now)
    assert (ack.accepted, ack.rejected) == (1, 120)
    assert {r.reason for r in ack.rejections} == {"ts_too_old"}
    doors = [pb.DoorEvent(sensor_id="s1", ts_ms=t, direction=1) for t in decade[-3:]]
    ack = live.stub.SendDoorEvents(pb.SendDoorEventsRequest(events=doors), metadata=live.auth)
    assert [r.reason for r in ack.rejections] == ["ts_too_old"] * 3


def test_a_megabyte_region_is_rejected(live):
    now = int(time.time() * 1000)
    pings = [
        pb.Ping(device_id="region-big", ts_ms=now, lat=1.0, lng=1.0, region="r" * (1 << 20)),
        pb.Ping(device_id="region-ok", ts_ms=now, lat=1.0, lng=1.0, region="eu-west-1"),
    ]
    ack = live.stub.SendPings(pb.SendPingsRequest(pings=pings), metadata=live.auth, timeout=30)
    feed_accepted(live, pings, ack, now)
    assert [(r.index, r.reason) for r in ack.rejections] == [(0, "region_too_long")]


def test_a_device_token_beyond_its_rate_gets_resource_exhausted_with_retry_after(live):
    token = live.engine.device_token("rate-limited")
    auth = [("authorization", f"Bearer {token}")]
    now = int(time.time() * 1000)
    burst = [
        pb.Ping(device_id="rate-limited", ts_ms=now - 650 + i, lat=1.0, lng=1.0) for i in range(650)
    ]
    ack = live.stub.SendPings(pb.SendPingsRequest(pings=burst), metadata=auth, timeout=30)
    feed_accepted(live, burst, ack, now)
    assert ack.accepted == 650  # a minute's worth at once: the burst a device may send
    again = pb.SendPingsRequest(
        pings=[pb.Ping(device_id="rate-limited", ts_ms=now + 1, lat=1, lng=1)]
    )
    with pytest.raises(grpc.RpcError) as err:
        live.stub.SendPings(again, metadata=auth, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(err.value.trailing_metadata())
    assert int(trailing["retry-after"]) >= 1
    # an ingest key has no limit by default (OCC_KEY_RATE_LIMIT=0): gateways send for many
    ack = live.send([pb.Ping(device_id="rate-limited-too", ts_ms=now, lat=1.0, lng=1.0)] * 1)
    assert ack.accepted == 1
