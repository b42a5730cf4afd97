"""The gRPC ingest front end: an actor serving `occupancy.v1.IngestService` on a stable port."""

import asyncio
import logging
import os
import threading
from pathlib import Path

import grpc
import ray
import redis
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from actors.ingest_core import AuthError, IngestCore
from actors.ingest_health import IngestHealth
from actors.ingest_http import HttpIngest
from actors.ingest_rpc import SERVICE, SERVICES, IngestRpcs, OpenStream, call_counter
from actors.osmand_port import OsmAndPort
from clients.cluster import IngestHandlers
from clients.refs import ACTOR_OPTIONS, alive_nodes, on_node
from engine import audit as records
from engine.http_ingest import HttpAnswer, HttpRequest
from observability import telemetry, tracing
from observability.audit import AuditWriter
from observability.telemetry import rss_bytes
from state import redis_client
from state.topology import Topology

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_CALLS = 1_000  # calls and streams a handler serves at once; more get RESOURCE_EXHAUSTED
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
OSMAND_ROUTE = "osmand-port"  # the audit log's route of a request to the OsmAnd port
DRAIN_S = 2.0  # a stopping handler answers NOT_SERVING this long before it closes


@ray.remote(**ACTOR_OPTIONS)
class IngestServer(IngestRpcs):
    """Serves `occupancy.v1.IngestService`, and the same RPCs under the deprecated name
    `occupancy.v1.Ingest` (same messages on the wire), with health and reflection, on a stable
    port. Its health follows whether it can take pings (actors/ingest_health.py).

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
        osmand_port: int = -1,
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
        self.calls = call_counter(telemetry.meter(name, topology.redis_url))
        self.tracer = tracing.tracer(name, topology.redis_url)
        self.health = IngestHealth(topology, SERVICES)
        self.http = HttpIngest(self.core, max_batch, max_in_flight, self.health.suspect)
        self.osmand_port = osmand_port  # -1: none; 0: a free one, the same for every handler
        self._osmand: OsmAndPort | None = None
        self._server: grpc.aio.Server | None = None
        self._streams: set[OpenStream] = set()
        self._bound = threading.Event()
        handle = ray.get_runtime_context().current_actor
        IngestHandlers.serve_in_thread(handle)

    async def serve(self) -> int:
        if self._server is not None:
            return self.port
        server = grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=MAX_CALLS)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(name, self.handlers(name)) for name in SERVICES]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        reflection.enable_server_reflection(
            (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = _listen(server, self.port, self.core.topology.tls)
        await self.health.check()  # the status it starts with (a handler restarted meanwhile)
        await server.start()
        self._health_task = asyncio.ensure_future(self.health.follow())
        revocations = redis_client.connect_async(self.core.topology.redis_url)
        self._auth_task = asyncio.ensure_future(
            self.core.auth.follow(revocations, self._end_revoked_streams)
        )
        self._server = server
        if self.osmand_port >= 0:
            self._osmand = OsmAndPort(self.http.handle, self._count_http, self.core.topology.tls)
            self.osmand_port = await self._osmand.start(self.osmand_port)
        self._bound.set()
        log.info("ingest listening on port %d", self.port)
        return self.port

    async def http_ingest(self, request: HttpRequest) -> HttpAnswer:
        """An HTTP ingest request the API received (`POST /v1/pings`, `/v1/door-events`,
        `/v1/osmand`): answered by the same core as the RPCs; the API counts it for the audit
        log."""
        return await self.http.handle(request)

    def _count_http(self, method: str, answer: HttpAnswer, elapsed_ms: float) -> None:
        """A request to the OsmAnd port, counted for the audit log as gRPC calls are."""
        key_id, role = answer.caller or ("", "")
        key = ("http", key_id, role, records.http_method(method), OSMAND_ROUTE, answer.status, ())
        self.audit.count(key, elapsed_ms, **answer.figures)

    def handlers(self, service: str) -> dict[str, grpc.RpcMethodHandler]:
        """The RPCs of `service` (either name: the messages are the same on the wire), which
        count their calls under its name."""

        async def send_pings(request, context):
            return await self.send_pings(request, context, service)

        async def send_door_events(request, context):
            return await self.send_door_events(request, context, service)

        async def stream_pings(requests, context):
            await self.stream_pings(requests, context, service)

        rpcs = {
            "SendPings": grpc.unary_unary_rpc_method_handler(send_pings),
            "SendDoorEvents": grpc.unary_unary_rpc_method_handler(send_door_events),
            "StreamPings": grpc.stream_stream_rpc_method_handler(stream_pings),
        }
        if service == SERVICE:  # added after the former name was deprecated
            rpcs["SendPingColumns"] = grpc.unary_unary_rpc_method_handler(self.send_ping_columns)
        return rpcs

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

    async def bound_osmand_port(self) -> int:
        """The OsmAnd port this handler serves (-1: none), once it serves."""
        await self.bound_port()
        return self.osmand_port

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
            "osmand_port": self.osmand_port,
        }

    async def stop(self, drain_s: float = DRAIN_S) -> None:
        """Health NOT_SERVING for `drain_s` (new calls are still taken meanwhile), then the
        listener closes and open calls get 2 s to finish."""
        if self._server is not None:
            await self.health.drain()
            self._health_task.cancel()
            await asyncio.sleep(drain_s)
            if self._osmand is not None:
                await self._osmand.stop()
            await self._server.stop(grace=2)
            self._server = None
        await self.audit.close()


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
