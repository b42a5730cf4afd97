"""The RPCs of `occupancy.v1.IngestService` (and of its deprecated name `occupancy.v1.Ingest`):
decoding, limits, acks, audit counts and the call counter of each call, and the buffered reader
of a ping stream."""

import asyncio
import math
import time

import grpc
import redis
from google.protobuf.message import DecodeError
from opentelemetry import trace
from opentelemetry.metrics import Counter, Meter

from actors.ingest_batch import column_lengths
from actors.ingest_core import AuthError, Caller, IngestCore, ShardUnavailable
from actors.ingest_health import IngestHealth
from observability import tracing
from observability.audit import AuditWriter
from protos.occupancy.v1 import occupancy_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["IngestService"].full_name
# served beside SERVICE until the next minor version: the same RPCs and, on the wire, messages
DEPRECATED = pb.DESCRIPTOR.services_by_name["Ingest"].full_name
SERVICES = (SERVICE, DEPRECATED)
STREAM_BUFFER_BYTES = 1 << 20  # what a stream's reader holds before it waits for the shards
STREAM_BATCH = 2_000
STREAM_LINGER_S = 0.02
ACK_EVERY_S = 0.05  # cumulative acks at most this far apart while pings flow (contract: 1 s)
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def call_counter(meter: Meter) -> Counter:
    """gRPC calls ended, by `method` (`SendPings`, ..., whichever service name it was called
    under), `service` (the name called: the deprecated one shows who still uses it) and status
    `code` (`OK`, `UNAVAILABLE`, ...)."""
    return meter.create_counter(
        "occupancy_grpc_calls_total",
        description="gRPC ingest calls ended, by method, service name and code",
    )


class IngestRpcs:
    """Mixed into the `IngestServer` actor, which holds the ingest core, the audit writer, the
    call counter, the tracer, the health, the open streams and the limits these read. Each RPC
    takes the service name it was called under; requests of either name are decoded as
    IngestService's messages (the deprecated ones are the same on the wire)."""

    core: IngestCore
    health: IngestHealth
    audit: AuditWriter
    calls: Counter
    tracer: trace.Tracer
    max_batch: int
    max_in_flight: int
    _streams: set["OpenStream"]

    async def send_pings(
        self, request: bytes, context: grpc.aio.ServicerContext, service: str = SERVICE
    ) -> bytes:
        call = _Counted("SendPings", service)
        return await self._audited(
            call, context, self._unary(request, context, pb.SendPingsRequest, "pings", call)
        )

    async def send_door_events(
        self, request: bytes, context: grpc.aio.ServicerContext, service: str = SERVICE
    ) -> bytes:
        call = _Counted("SendDoorEvents", service)
        return await self._audited(
            call, context, self._unary(request, context, pb.SendDoorEventsRequest, "events", call)
        )

    async def send_ping_columns(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        call = _Counted("SendPingColumns", SERVICE)
        message = pb.SendPingColumnsRequest
        return await self._audited(
            call, context, self._unary(request, context, message, "device_ids", call)
        )

    async def stream_pings(
        self, requests, context: grpc.aio.ServicerContext, service: str = SERVICE
    ) -> None:
        call = _Counted("StreamPings", service)
        await self._audited(call, context, self._stream(context, call))

    async def _audited(self, call: "_Counted", context, serving):
        """Await `serving`, then count the call, with its status code, for the audit log and in
        the call counter."""
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
        key = ("grpc", key_id, role, "", f"/{call.service}/{call.method}", status, ())
        figures, call.figures = call.figures, {}
        if ended:
            elapsed = (time.perf_counter() - call.started) * 1000
            self.audit.count(key, elapsed, **figures)
            code = CODE_NAMES.get(status, str(status))
            self.calls.add(1, {"method": call.method, "service": call.service, "code": code})
        else:
            self.audit.count(key, calls=0, **figures)

    async def _unary(self, request: bytes, context, message, field: str, call) -> bytes:
        caller = call.caller = await self._authenticate(context)
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
        if field == "device_ids" and (problem := column_lengths(batch)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        await self._admit(context, caller, len(items))
        if self.core.in_flight >= self.max_in_flight:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "ingest overloaded; retry")
        parent = tracing.extract(dict(context.invocation_metadata() or ()))
        name = "pings" if field == "device_ids" else field
        with self.tracer.start_as_current_span(f"ingest {name}", context=parent) as span:
            try:
                # a traced ping batch carries its context on to the shards (door events stop here)
                traced = {"trace": tracing.carrier_of(span)} if field != "events" else {}
                if field == "device_ids":
                    ack = await self.core.ingest_columns(batch, device, **traced)
                elif field == "pings":
                    ack = await self.core.ingest_pings(items, device, **traced)
                else:
                    ack = await self.core.ingest_doors(items, device)
            except (ShardUnavailable, redis.RedisError) as exc:
                self.health.suspect()
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
        inbox = Inbox(4 * STREAM_BATCH, STREAM_BUFFER_BYTES)
        stream = OpenStream(_authorization(context), inbox)
        self._streams.add(stream)
        reader = asyncio.ensure_future(inbox.fill(context))
        totals = pb.StreamPingsResponse()
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
                            pings.append(pb.StreamPingsRequest.FromString(item))
                        except DecodeError:
                            pings.append(None)  # rejected as "malformed", the stream goes on
                    try:
                        ack = await self.core.ingest_pings(pings, device, index)
                    except (ShardUnavailable, redis.RedisError) as exc:
                        self.health.suspect()
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
                    out = pb.StreamPingsResponse(
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
            self.health.suspect()
            await context.abort(grpc.StatusCode.UNAVAILABLE, _retry_message(exc))
        except AuthError as exc:
            code = (
                grpc.StatusCode.PERMISSION_DENIED if exc.denied else grpc.StatusCode.UNAUTHENTICATED
            )
            await context.abort(code, str(exc))


class _Counted:
    """One call's part in the audit counts: its method and the service name it was called
    under, who (once known) and the figures not counted yet."""

    __slots__ = ("caller", "figures", "method", "service", "started")

    def __init__(self, method: str, service: str):
        self.method = method
        self.service = service
        self.caller: Caller | None = None
        self.figures: dict[str, int] = {}
        self.started = time.perf_counter()


def _figures(ack) -> dict[str, int]:
    """An ack's figures for the audit log (door events are never late)."""
    late = 0 if isinstance(ack, pb.SendDoorEventsResponse) else ack.late
    return {"accepted": ack.accepted, "late": late, "rejected": ack.rejected}


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


class OpenStream:
    """A stream being served: its credential, and why it was revoked (None while valid)."""

    __slots__ = ("authorization", "inbox", "revoked")

    def __init__(self, authorization: str, inbox: "Inbox"):
        self.authorization = authorization
        self.inbox = inbox
        self.revoked: str | None = None


def _retry_message(exc: Exception) -> str:
    if isinstance(exc, redis.RedisError):
        return f"the write-ahead log (Redis) is unreachable; retry the batch: {exc}"
    return str(exc)


class Inbox:
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
