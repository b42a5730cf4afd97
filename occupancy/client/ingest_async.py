"""`AsyncIngestClient`: `IngestClient` for asyncio, over grpc.aio. The same batching, retries,
acks and settings; the background flush is a task of the running loop.

    async with AsyncIngestClient() as ingest:
        await ingest.send("phone-42", 52.6638, -8.6267)
    print(ingest.totals.accepted)

Create it inside the loop that uses it (grpc.aio channels belong to one loop).
"""

import asyncio
import contextlib
from collections.abc import Iterable

import grpc

from occupancy.client import config
from occupancy.client.batching import (
    DOORS,
    PINGS,
    Ack,
    Pending,
    ack_of,
    door_event,
    due_in,
    next_due,
    ping,
    request,
)
from occupancy.client.errors import ClientError, IngestError
from occupancy.client.ingest import MAX_BATCH, OnRetry
from occupancy.client.retry import DEFAULT_BACKOFF, Backoff, final, hint_s
from occupancy.settings import Settings
from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg


class AsyncIngestClient:
    """As IngestClient (its arguments and defaults), with coroutines for methods."""

    def __init__(
        self,
        target: str | None = None,
        key: str | None = None,
        *,
        tls_ca: config.Trust = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        batch_size: int = 1_000,
        linger_s: float = 0.2,
        timeout_s: float = 30.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        on_retry: OnRetry | None = None,
        settings: Settings | None = None,
        channel_options: Iterable[tuple[str, object]] = (),
    ):
        if not 1 <= batch_size <= MAX_BATCH or linger_s < 0:
            raise ValueError(f"batch_size from 1 to {MAX_BATCH}, linger_s >= 0")
        s = config.settings(settings)
        self.target = target or f"127.0.0.1:{s.grpc_port}"
        self._auth = (("authorization", f"Bearer {config.key(key, config.INGEST_KEY, s)}"),)
        trust = config.grpc_trust(tls_ca, s)
        options = list(channel_options)
        if trust is None:
            self.channel = grpc.aio.insecure_channel(self.target, options)
        else:
            credentials = config.grpc_credentials(trust, tls_cert, tls_key)
            self.channel = grpc.aio.secure_channel(self.target, credentials, options)
        stub = pbg.IngestServiceStub(self.channel)
        self._methods = {PINGS: stub.SendPings, DOORS: stub.SendDoorEvents}
        self.linger_s = linger_s
        self.timeout_s = timeout_s
        self.backoff = backoff
        self.on_retry = on_retry
        self.totals = Ack()
        self._pending = {PINGS: Pending(PINGS, batch_size), DOORS: Pending(DOORS, batch_size)}
        self._changed = asyncio.Event()
        self._sending = asyncio.Lock()
        self._failure: IngestError | None = None
        self._closed = False
        self._flusher: asyncio.Task | None = None

    async def send(self, device_id: str, lat: float, lng: float, ts_ms: int | None = None, **kw):
        await self.send_pings([ping(device_id, lat, lng, ts_ms, **kw)])

    async def send_pings(self, pings: Iterable[pb.Ping]) -> None:
        await self._add(PINGS, list(pings))

    async def door_event(self, sensor_id: str, direction: int, ts_ms: int | None = None) -> None:
        await self.send_door_events([door_event(sensor_id, direction, ts_ms)])

    async def send_door_events(self, events: Iterable[pb.DoorEvent]) -> None:
        await self._add(DOORS, list(events))

    async def flush(self) -> Ack:
        self._raise_failure()
        return await self._send_due(everything=True)

    @property
    def rejections(self):
        return self.totals.rejections

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:  # it ends after the batch it may be sending
            self._changed.set()
            await self._flusher
        try:
            await self._send_due(everything=True)
        finally:
            await self.channel.close()
        self._raise_failure()

    async def __aenter__(self) -> "AsyncIngestClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------------------

    async def _add(self, kind: str, items: list) -> None:
        self._raise_failure()
        if self._closed:
            raise ClientError("the ingest client is closed")
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_when_due())
        full = self._pending[kind].add(items)
        self._changed.set()
        if full:
            await self._send_due(full_only=True)

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    async def _send_due(self, everything: bool = False, full_only: bool = False) -> Ack:
        out = Ack()
        async with self._sending:
            while True:
                kind = next_due(self._pending, self.linger_s, everything, full_only)
                if kind is None:
                    return out
                items = self._pending[kind].take()
                ack = await self._call(kind, items)
                out.add(ack)
                self.totals.add(ack)

    async def _call(self, kind: str, items: list) -> Ack:
        message = request(kind, items)
        retry = 0
        while True:
            try:
                call = self._methods[kind](message, metadata=self._auth, timeout=self.timeout_s)
                return ack_of(items, await call, retry)
            except grpc.RpcError as exc:
                retry += 1
                error = final(exc, retry, self.backoff, f"{kind} to {self.target}", items)
                if error is not None:
                    raise error from None
                wait = self.backoff.wait_s(retry, hint_s(exc))
                if self.on_retry is not None:
                    self.on_retry(exc.code(), retry, wait)
                await asyncio.sleep(wait)

    async def _flush_when_due(self) -> None:
        while not self._closed:
            due = due_in(self._pending, self.linger_s)
            if due != 0:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), due)
                continue
            try:
                await self._send_due()
            except IngestError as exc:
                if self._failure is None:
                    self._failure = exc
                else:
                    self._failure.items.extend(exc.items)
