"""The gRPC ingest front end: an actor serving `occupancy.v1.Ingest` on a stable port."""

import asyncio
import logging
import math
import os
import threading
import time
from pathlib import Path

import grpc
import ray
import redis
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from actors.ingest_core import AuthError, Caller, IngestCore, ShardUnavailable
from clients.cluster import IngestHandlers
from clients.refs import ACTOR_OPTIONS, alive_nodes, on_node
from observability import tracing
from observability.audit import AuditWriter
from observability.telemetry import rss_bytes
from protos import occupancy_pb2 as pb
from state import redis_client
from state.topology import Topology

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Ingest"].full_name
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_CALLS = 1_000  # calls and streams a handler serves at once; more get RESOURCE_EXHAUSTED
STREAM_BUFFER_BYTES = 1 << 20  # what a stream's reader holds before it waits for the shards
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 1),
    # a connection must finish its HTTP/2 handshake in 10 s (a client trickling it is cut off)
    ("grpc.server_handshake_timeout_ms", 10_000),
    # an idle connection (no call for 5 minutes) is closed; long-lived streams are not idle
    ("grpc.max_connection_idle_ms", 300_000),
    ("grpc.max_concurrent_streams", 100),  # per connection
    # the server pings quiet connections to find dead peers; clients may ping every 10 s
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 3),
]
STREAM_BATCH = 2_000
STREAM_LINGER_S = 0.02
HEALTH_EVERY_S = 0.5  # how often the gRPC health status follows Redis
ACK_EVERY_S = 0.05  # cumulative acks at most this far apart while pings flow (contract: 1 s)


@ray.remote(**ACTOR_OPTIONS)
class IngestServer:
    """Serves `occupancy.v1.Ingest` (with health and reflection) on a stable port.

    An ack means every accepted ping is in its user shard's WAL. Bad items are rejected with a
    reason and never stop their batch; malformed requests get INVALID_ARGUMENT; when more than
    `max_in_flight` batches wait on the shards, new calls get RESOURCE_EXHAUSTED.

    Calls are counted for the audit log per window (`audit_window_s`), key id (device tokens
    together), method and status code, with the items they carried and their acks' figures:
    calls in the window they ended, a stream's acked pings in the window they were acked.
    """

    def __init__(
        self,
        topology: Topology,
        port: int,
        max_batch: int = 50_000,
        max_in_flight: int = 32,
        nice: int = 0,
    ):
        if nice > 0:
            # Ingest is batched and buffered; queries are latency-bound. On busy cores a query's
            # processes get the CPU first, ingest the rest (throughput is unchanged when idle).
            os.nice(nice)
        self.port = port
        self.nice = nice
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        name = ray.get_runtime_context().get_actor_name() or "ingest"
        self.core = IngestCore(topology, process=name)
        self.audit = AuditWriter(topology.redis_url, topology.audit_window_s)
        self.tracer = tracing.tracer(name, topology.redis_url)
        self._server: grpc.aio.Server | None = None
        self._streams: set[_OpenStream] = set()
        self._bound = threading.Event()
        handle = ray.get_runtime_context().current_actor
        IngestHandlers.serve_in_thread(handle)

    async def serve(self) -> int:
        if self._server is not None:
            return self.port
        server = grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=MAX_CALLS)
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "SendPings": grpc.unary_unary_rpc_method_handler(self.send_pings),
                        "SendDoorEvents": grpc.unary_unary_rpc_method_handler(
                            self.send_door_events
                        ),
                        "StreamPings": grpc.stream_stream_rpc_method_handler(self.stream_pings),
                    },
                ),
            )
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = _listen(server, self.port, self.core.topology.tls)
        await server.start()
        for name in ("", SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._health_task = asyncio.ensure_future(self._follow_redis(health_servicer))
        revocations = redis_client.connect_async(self.core.topology.redis_url)
        self._auth_task = asyncio.ensure_future(
            self.core.auth.follow(revocations, self._end_revoked_streams)
        )
        self._server = server
        self._bound.set()
        log.info("ingest listening on port %d", self.port)
        return self.port

    async def _follow_redis(self, health_servicer) -> None:
        """NOT_SERVING while Redis (every acked ping's log) is unreachable, SERVING again once
        it answers: load balancers and clients checking health send elsewhere or wait."""
        client = redis_client.connect_async(self.core.topology.redis_url, timeout_s=1.0)
        serving = True
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            try:
                up = bool(await client.ping())
            except redis.RedisError:
                up = False
            if up == serving:
                continue
            serving = up
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if up
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", SERVICE):
                await health_servicer.set(name, status)
            log.warning(
                "Redis %s: health %s",
                "is back" if up else "unreachable",
                "SERVING" if up else "NOT_SERVING",
            )

    async def _end_revoked_streams(self) -> None:
        """Credentials changed (access/revocation.py): every open stream whose credential no
        longer authenticates is marked, and its loop ends it with UNAUTHENTICATED at once."""
        for stream in list(self._streams):
            try:
                self.core.authenticate(stream.authorization)
            except AuthError as exc:
                stream.revoked = str(exc)
                stream.inbox.arrived.set()
            except redis.RedisError:  # nothing is revoked while Redis is unreachable
                pass

    async def bound_port(self) -> int:
        while not self._bound.is_set():
            await asyncio.sleep(0.05)
        return self.port

    async def pid(self) -> int:
        return os.getpid()

    async def rss(self) -> int:
        return rss_bytes()

    async def options(self) -> dict:
        """What another handler needs to serve beside this one (same port and limits)."""
        return {
            "port": self.port,
            "nice": self.nice,
            "max_batch": self.max_batch,
            "max_in_flight": self.max_in_flight,
        }

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=2)
            self._server = None
        await self.audit.close()

    # -- RPCs -----------------------------------------------------------------------------------

    async def send_pings(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        call = _Counted("SendPings")
        return await self._audited(
            call, context, self._unary(request, context, pb.PingBatch, "pings", call)
        )

    async def send_door_events(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        call = _Counted("SendDoorEvents")
        return await self._audited(
            call, context, self._unary(request, context, pb.DoorEventBatch, "events", call)
        )

    async def stream_pings(self, requests, context: grpc.aio.ServicerContext) -> None:
        call = _Counted("StreamPings")
        await self._audited(call, context, self._stream(context, call))

    async def _audited(self, call: "_Counted", context, serving):
        """Await `serving`, then count the call for the audit log with its status code."""
        try:
            result = await serving
        except BaseException as exc:
            self._count(call, _status(context, exc))
            raise
        self._count(call, 0)
        return result

    def _count(self, call: "_Counted", status: int, ended: bool = True) -> None:
        """The call's figures not counted yet, in the current window; the call itself too
        once it has `ended`."""
        who = call.caller
        key_id, role = (who.key_id, who.role) if who is not None else ("", "")
        key = ("grpc", key_id, role, "", f"/{SERVICE}/{call.method}", status, ())
        figures, call.figures = call.figures, {}
        if ended:
            elapsed = (time.perf_counter() - call.started) * 1000
            self.audit.count(key, elapsed, **figures)
        else:
            self.audit.count(key, calls=0, **figures)

    async def _unary(self, request: bytes, context, message, field: str, call) -> bytes:
        caller = call.caller = await self._authenticate(context)
        ingest = self.core.ingest_pings if field == "pings" else self.core.ingest_doors
        device = caller.device
        try:
            batch = message.FromString(request)
        except DecodeError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"not a valid {message.__name__} message"
            )
        items = getattr(batch, field)
        call.figures["items"] = len(items)
        if len(items) > self.max_batch:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch of {len(items)} {field}; at most {self.max_batch} per call",
            )
        await self._admit(context, caller, len(items))
        if self.core.in_flight >= self.max_in_flight:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "ingest overloaded; retry")
        parent = tracing.extract(dict(context.invocation_metadata() or ()))
        with self.tracer.start_as_current_span(f"ingest {field}", context=parent) as span:
            try:
                # a traced ping batch carries its context on to the shards (door events stop here)
                traced = {"trace": tracing.carrier_of(span)} if field == "pings" else {}
                ack = await ingest(items, device, **traced)
            except (ShardUnavailable, redis.RedisError) as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, _retry_message(exc))
            if span.is_recording():
                span.set_attributes(
                    {"items": len(items), "accepted": ack.accepted, "rejected": ack.rejected}
                )
        call.figures.update(_figures(ack))
        return ack.SerializeToString()

    async def _stream(self, context: grpc.aio.ServicerContext, call: "_Counted") -> None:
        caller = call.caller = await self._authenticate(context)
        device = caller.device
        inbox = _Inbox(4 * STREAM_BATCH, STREAM_BUFFER_BYTES)
        stream = _OpenStream(_authorization(context), inbox)
        self._streams.add(stream)
        reader = asyncio.ensure_future(inbox.fill(context))
        totals = pb.IngestAck()
        pending: list[pb.Rejection] = []
        index, last_ack, unacked = 0, time.monotonic(), 0
        try:
            while True:
                if stream.revoked is not None:  # what was not acked is not taken
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, stream.revoked)
                # with pings processed but not acked, wake up in time to ack them even if the
                # client sends nothing more (a sender with a full buffer waits for that ack)
                wait_s = max(0.001, last_ack + ACK_EVERY_S - time.monotonic()) if unacked else 1.0
                raw, done = await inbox.take(STREAM_BATCH, STREAM_LINGER_S, wait_s)
                if raw:
                    await self._admit(context, caller, len(raw))
                    pings = []
                    for item in raw:
                        try:
                            pings.append(pb.Ping.FromString(item))
                        except DecodeError:
                            pings.append(None)  # rejected as "malformed", the stream goes on
                    try:
                        ack = await self.core.ingest_pings(pings, device, index)
                    except (ShardUnavailable, redis.RedisError) as exc:
                        await context.abort(grpc.StatusCode.UNAVAILABLE, _retry_message(exc))
                    index += len(raw)
                    unacked += len(raw)
                    # a stream's pings are counted as they are taken: it may last for hours
                    call.figures.update({"items": len(raw), **_figures(ack)})
                    self._count(call, 0, ended=False)
                    totals.accepted += ack.accepted
                    totals.late += ack.late
                    totals.rejected += ack.rejected
                    pending.extend(ack.rejections)
                if done or (unacked and time.monotonic() - last_ack >= ACK_EVERY_S):
                    out = pb.IngestAck(
                        accepted=totals.accepted,
                        late=totals.late,
                        rejected=totals.rejected,
                        rejections=pending,
                    )
                    pending, last_ack, unacked = [], time.monotonic(), 0
                    await context.write(out.SerializeToString())
                if done:
                    return
        finally:
            self._streams.discard(stream)
            reader.cancel()

    # -- internals ------------------------------------------------------------------------------

    async def _admit(self, context, caller, items: int) -> None:
        """RESOURCE_EXHAUSTED, with `retry-after` (seconds) in the trailing metadata, for a
        caller beyond its rate limit."""
        wait = self.core.admit(caller, items)
        if wait > 0:
            seconds = str(max(1, math.ceil(wait)))
            context.set_trailing_metadata((("retry-after", seconds),))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limited ({caller.credential.split(':')[0]}); retry in {seconds} s",
            )

    async def _authenticate(self, context) -> Caller:
        try:
            return self.core.authenticate(_authorization(context))
        except redis.RedisError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, _retry_message(exc))
        except AuthError as exc:
            code = (
                grpc.StatusCode.PERMISSION_DENIED if exc.denied else grpc.StatusCode.UNAUTHENTICATED
            )
            await context.abort(code, str(exc))


class _Counted:
    """One call's part in the audit counts: its method, who (once known) and the figures not
    counted yet."""

    __slots__ = ("caller", "figures", "method", "started")

    def __init__(self, method: str):
        self.method = method
        self.caller: Caller | None = None
        self.figures: dict[str, int] = {}
        self.started = time.perf_counter()


def _figures(ack: pb.IngestAck) -> dict[str, int]:
    return {"accepted": ack.accepted, "late": ack.late, "rejected": ack.rejected}


def _status(context, exc: BaseException) -> int:
    """The status code a call that raised `exc` ends with."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.value[0]
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.value[0]
    return grpc.StatusCode.UNKNOWN.value[0]


def _authorization(context) -> str:
    authorization = ""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            authorization = value
    return authorization


class _OpenStream:
    """A stream being served: its credential, and why it was revoked (None while valid)."""

    __slots__ = ("authorization", "inbox", "revoked")

    def __init__(self, authorization: str, inbox: "_Inbox"):
        self.authorization = authorization
        self.inbox = inbox
        self.revoked: str | None = None


def _retry_message(exc: Exception) -> str:
    if isinstance(exc, redis.RedisError):
        return f"the write-ahead log (Redis) is unreachable; retry the batch: {exc}"
    return str(exc)


class _Inbox:
    """Messages read off a stream, handed over in batches: one list append a message (no
    per-message queue operation); the reader pauses when `limit` messages or `limit_bytes`
    bytes wait (so a stream holds at most about that much, whatever its messages' sizes)."""

    def __init__(self, limit: int, limit_bytes: int):
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.bytes = 0
        self.items: list[bytes] = []
        self.done = False
        self.arrived = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    async def fill(self, context: grpc.aio.ServicerContext) -> None:
        try:
            while True:
                item = await context.read()
                if item is grpc.aio.EOF:
                    break
                self.items.append(item)
                self.bytes += len(item)
                if not self.arrived.is_set():
                    self.arrived.set()
                if len(self.items) >= self.limit or self.bytes >= self.limit_bytes:
                    self.room.clear()
                    await self.room.wait()
        finally:
            self.done = True
            self.arrived.set()

    async def take(self, most: int, linger_s: float, wait_s: float) -> tuple[list[bytes], bool]:
        """Up to `most` messages: wait up to `wait_s` for one, then up to `linger_s` for the
        batch to fill. Returns (messages, whether the stream has ended and all were taken)."""
        if not self.items and not self.done:
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout=wait_s)
            except TimeoutError:
                return [], False
        if self.items and len(self.items) < most and not self.done:
            await asyncio.sleep(linger_s)
        batch, self.items = self.items[:most], self.items[most:]
        self.bytes -= sum(len(item) for item in batch)
        if not self.items and not self.done:
            self.arrived.clear()
        self.room.set()
        return batch, self.done and not self.items


def _listen(server: grpc.aio.Server, port: int, tls: tuple[str, str, str]) -> int:
    """Bind the ingest port, with TLS when a certificate is given (and mutual TLS when a
    client CA is: a client without a certificate it signed fails the handshake)."""
    cert, key, client_ca = tls
    if not cert:
        return server.add_insecure_port(f"0.0.0.0:{port}")
    credentials = grpc.ssl_server_credentials(
        [(Path(key).read_bytes(), Path(cert).read_bytes())],
        root_certificates=Path(client_ca).read_bytes() if client_ca else None,
        require_client_auth=bool(client_ca),
    )
    return server.add_secure_port(f"0.0.0.0:{port}", credentials)


def start_handler(
    topology: Topology, index: int, port: int, detached: bool = False, **options
) -> tuple[ray.actor.ActorHandle, int]:
    """Handler `ingest-<index>` on the port every handler shares, and the port it bound.

    Handlers go round-robin over the cluster's alive nodes (`on_node`: when that node is lost,
    Ray restarts the handler on another), so each node serves ingest on the same port and an
    L4 balancer in front of the nodes spreads devices over them."""
    handler = IngestServer.options(
        name=f"ingest-{index}",
        namespace=topology.namespace,
        get_if_exists=True,
        lifetime="detached" if detached else None,
        **on_node(alive_nodes(), index),
    ).remote(topology, port, **options)
    return handler, IngestHandlers.bound_port(handler)
