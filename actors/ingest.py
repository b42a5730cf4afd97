"""The gRPC ingest handler: validate, authenticate, pseudonymize, index, route, ack."""

import asyncio
import logging
import threading
import time

import grpc
import ray
import redis
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from actors.auth import Authenticator, KeyStore
from actors.refs import Shards
from actors.topology import Clock, Topology
from engine.cells import index_batch
from engine.pseudonym import pseudonym, pseudonym_str
from engine.routing import door_shard, group_by_user_shard
from engine.validation import Reason, check_door_event, check_ping
from protos import occupancy_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Ingest"].full_name
IDS = "occ:ids"
INGEST_ROLES = ("ingest", "admin")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
STREAM_BATCH = 2_000
STREAM_LINGER_S = 0.02
ACK_EVERY_S = 0.05  # cumulative acks at most this far apart while pings flow (contract: 1 s)


class Overloaded(Exception):
    pass


class ShardUnavailable(Exception):
    pass


class _Batch:
    """One call's pings after validation: the columns sent to the user shards."""

    __slots__ = ("idx", "keys", "lats", "lngs", "rejections", "ts")

    def __init__(self) -> None:
        self.idx: list[int] = []
        self.keys: list[int] = []
        self.ts: list[int] = []
        self.lats: list[float] = []
        self.lngs: list[float] = []
        self.rejections: list[pb.Rejection] = []


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class IngestServer:
    """Serves `occupancy.v1.Ingest` (with health and reflection) on a stable port.

    An ack means every accepted ping is in its user shard's WAL. Bad items are rejected with a
    reason and never stop their batch; malformed requests get INVALID_ARGUMENT; when more than
    `max_in_flight` batches wait on the shards, new calls get RESOURCE_EXHAUSTED.
    """

    def __init__(
        self, topology: Topology, port: int, max_batch: int = 50_000, max_in_flight: int = 32
    ):
        self.topology = topology
        self.port = port
        self.max_batch = max_batch
        self.spec = topology.engine_spec()
        self.placement = topology.placement()
        self.shards = Shards(topology)
        self.redis = redis.Redis.from_url(topology.redis_url)
        self.auth = Authenticator(topology.secret, KeyStore(self.redis))
        self.clock = Clock()
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._keys: dict[str, int] = {}
        self._server: grpc.aio.Server | None = None
        self._bound = threading.Event()
        handle = ray.get_runtime_context().current_actor
        threading.Thread(target=lambda: ray.get(handle.serve.remote()), daemon=True).start()

    async def serve(self) -> int:
        if self._server is not None:
            return self.port
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 1),
            ]
        )
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
        self.port = server.add_insecure_port(f"0.0.0.0:{self.port}")
        await server.start()
        for name in ("", SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        self._bound.set()
        log.info("ingest listening on port %d", self.port)
        return self.port

    async def bound_port(self) -> int:
        while not self._bound.is_set():
            await asyncio.sleep(0.05)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=2)
            self._server = None

    # -- RPCs -----------------------------------------------------------------------------------

    async def send_pings(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        _role, device = await self._authenticate(context)
        try:
            batch = pb.PingBatch.FromString(request)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a valid PingBatch message")
        if len(batch.pings) > self.max_batch:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch of {len(batch.pings)} pings; at most {self.max_batch} per call",
            )
        if self.in_flight >= self.max_in_flight:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "ingest overloaded; retry")
        try:
            ack = await self._ingest(batch.pings, device, 0)
        except ShardUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return ack.SerializeToString()

    async def stream_pings(self, requests, context: grpc.aio.ServicerContext):
        _role, device = await self._authenticate(context)
        queue: asyncio.Queue = asyncio.Queue(maxsize=4 * STREAM_BATCH)
        reader = asyncio.ensure_future(_pump(requests, queue))
        totals = pb.IngestAck()
        pending: list[pb.Rejection] = []
        index, last_ack, done = 0, time.monotonic(), False
        try:
            while not done:
                raw, done = await _take(queue, STREAM_BATCH, STREAM_LINGER_S, 1.0)
                pings = []
                for item in raw:
                    try:
                        pings.append(pb.Ping.FromString(item))
                    except DecodeError:
                        pings.append(None)  # rejected as "malformed", the stream goes on
                if raw:
                    try:
                        ack = await self._ingest(pings, device, index)
                    except ShardUnavailable as exc:
                        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
                    index += len(raw)
                    totals.accepted += ack.accepted
                    totals.late += ack.late
                    totals.rejected += ack.rejected
                    pending.extend(ack.rejections)
                if raw or done:
                    if done or time.monotonic() - last_ack >= ACK_EVERY_S:
                        out = pb.IngestAck(
                            accepted=totals.accepted,
                            late=totals.late,
                            rejected=totals.rejected,
                            rejections=pending,
                        )
                        pending, last_ack = [], time.monotonic()
                        yield out.SerializeToString()
        finally:
            reader.cancel()

    async def send_door_events(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        _role, device = await self._authenticate(context)
        try:
            batch = pb.DoorEventBatch.FromString(request)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a valid DoorEventBatch")
        if len(batch.events) > self.max_batch:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch of {len(batch.events)} events; at most {self.max_batch} per call",
            )
        now = self.clock()
        ack = pb.IngestAck()
        groups: dict[str, dict] = {}
        for i, e in enumerate(batch.events):
            reason = check_door_event(e.sensor_id, e.ts_ms, e.direction, now, self.spec.limits)
            if reason is None and device is not None and e.sensor_id != device:
                reason = Reason.NOT_AUTHORIZED_FOR_DEVICE
            if reason:
                ack.rejections.append(pb.Rejection(index=i, reason=reason.value))
                continue
            g = groups.setdefault(
                door_shard(e.sensor_id, self.placement), {"sensor": [], "ts": [], "dir": []}
            )
            g["sensor"].append(e.sensor_id)
            g["ts"].append(e.ts_ms)
            g["dir"].append(e.direction)
        try:
            counts = await asyncio.gather(
                *(self.shards.handle(s).door_events.remote(g) for s, g in groups.items())
            )
        except ray.exceptions.RayActorError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "a space shard is restarting; retry")
        ack.accepted = sum(counts)
        ack.rejected = len(ack.rejections)
        return ack.SerializeToString()

    # -- internals ------------------------------------------------------------------------------

    async def _authenticate(self, context) -> tuple[str, str | None]:
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and value.lower().startswith("bearer "):
                token = value[7:].strip()
        resolved = self.auth.resolve(token) if token else None
        if resolved is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or invalid token (authorization: Bearer <token>)",
            )
        role, device = resolved
        if role not in ("device", *INGEST_ROLES):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"a {role} key cannot send pings"
            )
        return role, device

    def _key(self, device_id: str, new_ids: dict[str, str]) -> int:
        key = self._keys.get(device_id)
        if key is None:
            if len(self._keys) > 1_000_000:
                self._keys.clear()
            key = self._keys[device_id] = pseudonym(self.topology.secret, device_id)
            new_ids[pseudonym_str(key)] = device_id
        return key

    def _validate(self, pings, device: str | None, base: int) -> tuple[_Batch, dict[str, str]]:
        now = self.clock()
        limits = self.spec.limits
        b, new_ids = _Batch(), {}
        for i, p in enumerate(pings):
            if p is None:
                reason = "malformed"
            else:
                reason = check_ping(
                    p.device_id, p.ts_ms, p.lat, p.lng, now, limits, p.accuracy_m, p.attributes
                )
                if reason is None and device is not None and p.device_id != device:
                    reason = Reason.NOT_AUTHORIZED_FOR_DEVICE
            if reason:
                b.rejections.append(pb.Rejection(index=base + i, reason=str(reason)))
                continue
            b.idx.append(i)
            b.keys.append(self._key(p.device_id, new_ids))
            b.ts.append(p.ts_ms)
            b.lats.append(p.lat)
            b.lngs.append(p.lng)
        return b, new_ids

    async def _ingest(self, pings, device: str | None, base: int) -> pb.IngestAck:
        b, new_ids = self._validate(pings, device, base)
        if new_ids:
            # the id directory: the only place where raw ids live
            self.redis.hset(IDS, mapping=new_ids)
        ack = pb.IngestAck(rejected=len(b.rejections), rejections=b.rejections)
        if not b.keys:
            return ack
        cells = index_batch(b.lats, b.lngs, self.spec.res).tolist()
        groups = group_by_user_shard(b.keys, self.placement)
        calls = []
        for shard, idx in groups.items():
            sub = {
                "dev": [b.keys[j] for j in idx],
                "ts": [b.ts[j] for j in idx],
                "cell": [cells[j] for j in idx],
                "lat": [b.lats[j] for j in idx],
                "lng": [b.lngs[j] for j in idx],
            }
            calls.append(self.shards.handle(shard).ingest.remote(sub))
        self.in_flight += 1
        try:
            results = await asyncio.gather(*calls)
        except ray.exceptions.RayActorError as exc:
            raise ShardUnavailable("a user shard is restarting; retry the batch") from exc
        finally:
            self.in_flight -= 1
        applied = sum(r.count(1) for r in results)
        ack.accepted = applied
        ack.late = len(b.keys) - applied
        return ack


async def _pump(requests, queue: asyncio.Queue) -> None:
    async for item in requests:
        await queue.put(item)
    await queue.put(None)


async def _take(queue: asyncio.Queue, most: int, linger_s: float, wait_s: float):
    """Up to `most` items: wait up to `wait_s` for the first, then `linger_s` for more.
    Returns (items, stream ended)."""
    items: list[bytes] = []
    try:
        first = await asyncio.wait_for(queue.get(), timeout=wait_s)
    except TimeoutError:
        return items, False
    if first is None:
        return items, True
    items.append(first)
    deadline = time.monotonic() + linger_s
    while len(items) < most:
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = await asyncio.wait_for(queue.get(), timeout=left)
            except TimeoutError:
                break
        if item is None:
            return items, True
        items.append(item)
    return items, False
