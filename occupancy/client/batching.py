"""What the two ingest clients share: the buffer a batch grows in, the messages a ping or door
event becomes, and the acks they add up. No I/O here: the clients decide when to send."""

import time
from dataclasses import dataclass, field

from protos.occupancy.v1 import occupancy_pb2 as pb

PINGS, DOORS = "pings", "door_events"


def now_ms() -> int:
    return int(time.time() * 1000)


def ping(
    device_id: str,
    lat: float,
    lng: float,
    ts_ms: int | None = None,
    accuracy_m: float | None = None,
    region: str | None = None,
    attributes: dict[str, str] | None = None,
) -> pb.Ping:
    """A ping as the wire has it; `ts_ms` defaults to now."""
    return pb.Ping(
        device_id=device_id,
        ts_ms=now_ms() if ts_ms is None else ts_ms,
        lat=lat,
        lng=lng,
        accuracy_m=accuracy_m or 0.0,
        region=region or "",
        attributes=attributes or {},
    )


def door_event(sensor_id: str, direction: int, ts_ms: int | None = None) -> pb.DoorEvent:
    return pb.DoorEvent(
        sensor_id=sensor_id, ts_ms=now_ms() if ts_ms is None else ts_ms, direction=direction
    )


def request(kind: str, items: list):
    if kind == PINGS:
        return pb.SendPingsRequest(pings=items)
    return pb.SendDoorEventsRequest(events=items)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An item the engine refused, with its reason (`lat_out_of_range`, `ts_in_future`, ...):
    the ping or door event itself, not only its index in a batch the caller never saw."""

    item: pb.Ping | pb.DoorEvent
    reason: str


@dataclass
class Ack:
    """What some calls came to: items accepted (durable), late (durable, older than their
    device's newest; pings only) and rejected, with each rejection; `calls` made to get there
    and `retries` among them."""

    accepted: int = 0
    late: int = 0
    rejected: int = 0
    rejections: list[Rejected] = field(default_factory=list)
    calls: int = 0
    retries: int = 0

    def add(self, other: "Ack") -> None:
        self.accepted += other.accepted
        self.late += other.late
        self.rejected += other.rejected
        self.rejections.extend(other.rejections)
        self.calls += other.calls
        self.retries += other.retries


def ack_of(items: list, response, retries: int) -> Ack:
    """The Ack of one answered call; rejections name their items."""
    return Ack(
        accepted=response.accepted,
        late=getattr(response, "late", 0),  # door events are never late
        rejected=response.rejected,
        rejections=[Rejected(items[r.index], r.reason) for r in response.rejections],
        calls=retries + 1,
        retries=retries,
    )


class Pending:
    """Items waiting to be sent, of one kind, and since when the oldest of them waits."""

    def __init__(self, kind: str, size: int):
        self.kind = kind
        self.size = size
        self.items: list = []
        self.since = 0.0  # time.monotonic() of the oldest item's arrival

    def add(self, items: list) -> bool:
        """Whether a full batch waits now."""
        if items and not self.items:
            self.since = time.monotonic()
        self.items.extend(items)
        return len(self.items) >= self.size

    def take(self) -> list:
        """The next batch (at most `size`, oldest first); what is left keeps waiting, as
        though it had arrived now."""
        batch, self.items = self.items[: self.size], self.items[self.size :]
        if self.items:
            self.since = time.monotonic()
        return batch

    def due_in(self, linger_s: float) -> float | None:
        """Seconds until the oldest item has waited `linger_s` (0: due now; None: empty)."""
        if not self.items:
            return None
        return max(0.0, self.since + linger_s - time.monotonic())


def next_due(pending: dict[str, Pending], linger_s: float, everything: bool, full_only: bool):
    """The kind whose batch goes out next: a full one, else one that lingered `linger_s` (not
    with `full_only`), else any (with `everything`); None when none is due."""
    for kind, p in pending.items():
        if not p.items:
            continue
        if everything or len(p.items) >= p.size:
            return kind
        if not full_only and p.due_in(linger_s) == 0:
            return kind
    return None


def due_in(pending: dict[str, Pending], linger_s: float) -> float | None:
    """Seconds until a batch is due by time (None: nothing waits)."""
    waits = [w for w in (p.due_in(linger_s) for p in pending.values()) if w is not None]
    return min(waits, default=None)
