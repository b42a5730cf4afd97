"""`GET /v1/stream` for both query clients: reading Server-Sent Events from the bytes as they
come, and what a stream keeps across reconnections (the last event id, the server's `retry:`,
the events still wanted), so that only the transport differs between the sync and asyncio
clients. docs/semantics.md, *Live push*, has what the events mean."""

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from occupancy.client import results as r
from occupancy.client.errors import ApiError

RETRY_MS = 2_000  # until the server says otherwise (`retry:`)
MAX_RECONNECTS = 5  # in a row without an event in between


class StreamError(ApiError):
    """The stream's `error` event: the engine ended it (`code`: `unauthenticated` when the key
    was revoked, `too_many_cells`); reconnecting would not help."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event as sent: its type (`message` when none), its data lines joined by newlines, and
    its id (None: the event had none)."""

    event: str
    data: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    """A `counts` event: the whole state the stream follows at `as_of` (never a difference)."""

    as_of: r.Ms
    spaces: dict[str, int]
    cells: list[r.CellCount]
    id: int | None = None  # the event's id (a reconnection's Last-Event-ID)


class EventReader:
    """Events from chunks of bytes (the SSE rules: lines end in LF, CRLF or CR; a blank line
    ends an event; `:` starts a comment; an unknown field is ignored; one space after the colon
    is dropped). `retry_ms` is the server's latest `retry:`."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event, self._data, self._id = "", [], None
        self.retry_ms = RETRY_MS

    def feed(self, chunk: bytes) -> list[Event]:
        data, keep = self._buffer + chunk, b""
        if data.endswith(b"\r"):  # perhaps a CRLF cut in two: its line waits for the rest
            data, keep = data[:-1], b"\r"
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._buffer = lines.pop() + keep
        out = []
        for line in lines:
            event = self._line(line.decode())
            if event is not None:
                out.append(event)
        return out

    def _line(self, line: str) -> Event | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = Event(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id" and "\0" not in value:
            self._id = value
        elif field == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


class Stream:
    """One stream's request and state: the query of each (re)connection, its Last-Event-ID,
    and the `Counts` of each event. An `error` event ends it with ApiError."""

    def __init__(
        self,
        spaces: Iterable[str] = (),
        bbox: str | None = None,
        res: int | None = None,
        limit: int | None = None,
        last_event_id: str | None = None,
    ):
        self.spaces = ",".join(spaces) or None
        self.bbox, self.res, self.limit = bbox, res, limit
        self.last_id = last_event_id
        self.received = 0
        self.failures = 0  # reconnections in a row without an event
        self.reader = EventReader()

    @property
    def done(self) -> bool:
        return self.limit is not None and self.received >= self.limit

    def params(self) -> dict:
        """The query of the next connection: `limit` counts what is still wanted."""
        left = None if self.limit is None else self.limit - self.received
        return {"spaces": self.spaces, "bbox": self.bbox, "res": self.res, "limit": left}

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last_id} if self.last_id is not None else {}

    def connected(self) -> None:
        """A new connection's events are read from the start (the server's `retry:` kept)."""
        retry_ms, self.reader = self.reader.retry_ms, EventReader()
        self.reader.retry_ms = retry_ms

    def take(self, chunk: bytes) -> list[Counts]:
        """The `counts` events of a chunk (StreamError for an `error` event)."""
        out = []
        for event in self.reader.feed(chunk):
            if event.id is not None:
                self.last_id = event.id
            if event.event == "error":
                err = orjson.loads(event.data).get("error", {})
                code = err.get("code")
                raise StreamError(f"{code}: {err.get('message')}", 200, code)
            if event.event != "counts" or self.done:
                continue
            body = orjson.loads(event.data)
            cells = [r.CellCount(c["cell"], c["count"]) for c in body.get("cells", ())]
            event_id = int(event.id) if event.id and event.id.isdigit() else None
            out.append(Counts(body["as_of"], dict(body.get("spaces", {})), cells, event_id))
            self.received += 1
            self.failures = 0
        return out

    def retry(self, error: ApiError | None) -> float:
        """Seconds to wait before reconnecting after the connection ended (with `error`, or
        none: the server closed it); raises `error` (or ApiError) when it is not worth it: a
        4xx, or MAX_RECONNECTS in a row without an event."""
        self.failures += 1
        if error is not None and error.status is not None and 400 <= error.status < 500:
            if error.status != 429:
                raise error
        if self.failures > MAX_RECONNECTS:
            raise error or ApiError(f"the stream ended {MAX_RECONNECTS} times in a row")
        wait = self.reader.retry_ms / 1000
        if error is not None and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait
