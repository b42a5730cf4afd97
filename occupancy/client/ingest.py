"""`IngestClient`: pings and door events to the engine's gRPC ingest (`occupancy.v1.
IngestService`), batched by size and by time, retried with backoff, with their acks added up.

    with IngestClient() as ingest:               # OCC_* settings, as the CLI reads them
        ingest.send("phone-42", 52.6638, -8.6267)
    print(ingest.totals.accepted, ingest.rejections)

`send` buffers; a batch goes out when `batch_size` items wait (in the caller's thread, which
waits for its ack: the backpressure a fleet needs) or when its oldest item has waited
`linger_s` (a background thread). `flush` sends what waits and returns its ack; `close` (and
leaving the `with`) flushes, then closes the channel. Batches go out one at a time, in the
order their items arrived, so a device's pings reach the engine in the order they were given.

A batch that fails for good (see occupancy/client/retry.py) raises IngestError with its items
from `flush`, `close` or `send` (one the background thread sent: it is raised by the next of
those calls, once, and that call takes nothing of its own).
"""

import threading
import time
from collections.abc import Callable, Iterable

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
from occupancy.client.retry import DEFAULT_BACKOFF, Backoff, final, hint_s
from occupancy.settings import Settings
from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg

OnRetry = Callable[[grpc.StatusCode, int, float], None]  # (status, retry number, wait s)
MAX_BATCH = 50_000  # what a handler takes in one call (actors/ingest.py)


class IngestClient:
    """One gRPC channel to the ingest, with one credential (an ingest key, an admin key, or a
    device token, whose pings must all be of its device).

    `target` defaults to `127.0.0.1:OCC_GRPC_PORT`, `key` to OCC_INGEST_KEY or the data dir's
    admin key, `tls_ca` (a CA file, True or "system" for the system's CAs, False for
    plaintext) to OCC_TLS_CA or what the data dir's engine uses (occupancy/client/config.py);
    `tls_cert` and `tls_key` are a client certificate for mutual TLS. `on_retry(status,
    retry, wait_s)` hears of each retry before its wait."""

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
            self.channel = grpc.insecure_channel(self.target, options)
        else:
            credentials = config.grpc_credentials(trust, tls_cert, tls_key)
            self.channel = grpc.secure_channel(self.target, credentials, options)
        stub = pbg.IngestServiceStub(self.channel)
        self._methods = {PINGS: stub.SendPings, DOORS: stub.SendDoorEvents}
        self.linger_s = linger_s
        self.timeout_s = timeout_s
        self.backoff = backoff
        self.on_retry = on_retry
        self.totals = Ack()  # every answered call's ack, added up (rejections included)
        self._pending = {PINGS: Pending(PINGS, batch_size), DOORS: Pending(DOORS, batch_size)}
        self._lock = threading.Condition()  # the pending items, totals, failure, closing
        self._sending = threading.Lock()  # one batch at a time, in order
        self._failure: IngestError | None = None
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_when_due, daemon=True)
        self._flusher.start()

    # -- sending ---------------------------------------------------------------------------------

    def send(self, device_id: str, lat: float, lng: float, ts_ms: int | None = None, **optional):
        """Buffer one ping (`ts_ms` defaults to now; `accuracy_m`, `region`, `attributes`)."""
        self.send_pings([ping(device_id, lat, lng, ts_ms, **optional)])

    def send_pings(self, pings: Iterable[pb.Ping]) -> None:
        """Buffer pings (occupancy_pb2.Ping); full batches are sent before it returns."""
        self._add(PINGS, list(pings))

    def door_event(self, sensor_id: str, direction: int, ts_ms: int | None = None) -> None:
        """Buffer one door crossing (+1 or -1, as the sensor counts it)."""
        self.send_door_events([door_event(sensor_id, direction, ts_ms)])

    def send_door_events(self, events: Iterable[pb.DoorEvent]) -> None:
        self._add(DOORS, list(events))

    def flush(self) -> Ack:
        """Send everything buffered; the ack of what this call sent."""
        with self._lock:
            self._raise_failure()
        return self._send_due(everything=True)

    @property
    def rejections(self):
        """Every item refused so far, with its reason."""
        return self.totals.rejections

    def close(self) -> None:
        """Stop the background thread, send what waits, close the channel (also when that
        fails); IngestError for a batch that failed for good and was not raised yet."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        self._flusher.join()
        try:
            self._send_due(everything=True)
        finally:
            self.channel.close()
        with self._lock:  # the background thread's failure, if the caller has not seen it
            self._raise_failure()

    def __enter__(self) -> "IngestClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _add(self, kind: str, items: list) -> None:
        with self._lock:
            self._raise_failure()
            if self._closed:
                raise ClientError("the ingest client is closed")
            full = self._pending[kind].add(items)
            self._lock.notify_all()
        if full:
            self._send_due(full_only=True)

    def _raise_failure(self) -> None:
        """The background thread's failure, raised once (under the lock)."""
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _send_due(self, everything: bool = False, full_only: bool = False) -> Ack:
        """Send the batches that are due (full, or lingered long enough; `everything`: all),
        in order; the ack of what was sent."""
        out = Ack()
        with self._sending:
            while True:
                with self._lock:
                    kind = next_due(self._pending, self.linger_s, everything, full_only)
                    if kind is None:
                        return out
                    items = self._pending[kind].take()
                ack = self._call(kind, items)
                out.add(ack)
                with self._lock:
                    self.totals.add(ack)

    def _call(self, kind: str, items: list) -> Ack:
        message = request(kind, items)
        retry = 0
        while True:
            try:
                response = self._methods[kind](message, metadata=self._auth, timeout=self.timeout_s)
                return ack_of(items, response, retry)
            except grpc.RpcError as exc:
                retry += 1
                error = final(exc, retry, self.backoff, f"{kind} to {self.target}", items)
                if error is not None:
                    raise error from None
                wait = self.backoff.wait_s(retry, hint_s(exc))
                if self.on_retry is not None:
                    self.on_retry(exc.code(), retry, wait)
                time.sleep(wait)

    def _flush_when_due(self) -> None:
        """The background thread: send a batch once its oldest item has lingered."""
        while True:
            with self._lock:
                while not self._closed:
                    due = due_in(self._pending, self.linger_s)
                    if due == 0:
                        break
                    self._lock.wait(due)
                if self._closed:
                    return
            try:
                self._send_due()
            except IngestError as exc:  # for the caller's next call; later ones join it
                with self._lock:
                    if self._failure is None:
                        self._failure = exc
                    else:
                        self._failure.items.extend(exc.items)
