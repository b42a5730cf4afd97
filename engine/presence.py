"""Presence tracking: where each device is, from its applied pings, by an injected clock."""

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from engine.geo import haversine_m

NOWHERE = 0  # no H3 cell has id 0


class Interval(NamedTuple):
    """The device was in `cell` during `[start, end)`."""

    device: int
    cell: int
    start: int
    end: int


class Move(NamedTuple):
    """The device's present cell changed from `old` to `new` (NOWHERE = absent); `seq` orders
    the moves of one device, so a receiver can apply them idempotently (last `seq` wins)."""

    device: int
    old: int
    new: int
    seq: int


class Segment(NamedTuple):
    """Great-circle step between two consecutive applied pings of a device."""

    device: int
    t0: int
    t1: int
    meters: float


class _Device:
    __slots__ = ("cell", "chain", "deadline", "last_lat", "last_lng", "last_ts", "seq", "stay")

    def __init__(self) -> None:
        self.last_ts = 0
        self.last_lat = 0.0
        self.last_lng = 0.0
        # applied pings [ts, cell] from the earliest whose interval is not yet settled: chain[0]
        # may be current (ts <= now); the rest are pings dated in the future.
        self.chain: list[list[int]] = []
        # start of the unbroken stay in chain[0]'s cell that chain[0] continues (<= its ts):
        # consecutive pings in one cell settle as one interval
        self.stay = 0
        self.cell = NOWHERE
        self.seq = 0
        self.deadline = -1  # the wheel wakes the device then (<= when it may change); -1: never


class PresenceTracker:
    """Applies pings in arrival order and keeps every device's present cell at `now`.

    A ping is applied when its ts is newer than the device's latest applied ping, else it is
    late and changes nothing. Applied ping i places the device in its cell during
    [ts_i, min(ts_{i+1}, ts_i + ttl)). The tracker emits, into outboxes the caller drains:
    `Move`s when a present cell changes (at a ping, when a future-dated ping comes due, or at
    expiry); `Interval`s once they are settled (successor known and end <= now), each exactly
    once; `Segment`s between consecutive applied pings. Calls must come with a non-decreasing
    `now`. `advance(now)` is idempotent.
    """

    def __init__(self, ttl_ms: int):
        self.ttl_ms = ttl_ms
        self._devices: dict[int, _Device] = {}
        self._wheel: dict[int, set[int]] = {}  # deadline second -> devices
        self.moves: list[Move] = []
        self.settled: list[Interval] = []
        self.segments: list[Segment] = []

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device: int) -> bool:
        return device in self._devices

    # -- input ----------------------------------------------------------------------------------

    def apply(self, device: int, ts: int, cell: int, lat: float, lng: float, now: int) -> bool:
        """Apply one ping; False if it is late (not newer than the device's latest applied)."""
        d = self._devices.get(device)
        if d is None:
            d = self._devices[device] = _Device()
        elif ts <= d.last_ts:
            return False
        if d.chain:
            meters = haversine_m(d.last_lat, d.last_lng, lat, lng)
            self.segments.append(Segment(device, d.last_ts, ts, meters))
        d.last_ts, d.last_lat, d.last_lng = ts, lat, lng
        if not d.chain:
            d.stay = ts
        d.chain.append([ts, cell])
        self._update(device, d, now)
        return True

    def advance(self, now: int) -> None:
        """Bring every device whose presence may have changed by `now` up to date."""
        due = [second for second in self._wheel if second * 1000 <= now]
        for second in sorted(due):
            for device in sorted(self._wheel.pop(second)):
                d = self._devices[device]
                d.deadline = -1
                self._update(device, d, now)

    # -- queries --------------------------------------------------------------------------------

    def devices(self) -> Iterator[int]:
        """The devices this tracker holds (do not extract while iterating)."""
        return iter(self._devices)

    def cell(self, device: int) -> int:
        """The device's present cell as of the last call (NOWHERE if absent or unknown)."""
        d = self._devices.get(device)
        return d.cell if d else NOWHERE

    def last_ts(self, device: int) -> int | None:
        d = self._devices.get(device)
        return d.last_ts if d else None

    def present(self) -> Iterator[tuple[int, int, int]]:
        """(device, cell, seq) of every present device."""
        for device, d in self._devices.items():
            if d.cell != NOWHERE:
                yield device, d.cell, d.seq

    def unsettled(self, device: int, now: int) -> list[Interval]:
        """The device's intervals not yet settled, with ends clipped to `now`.

        Together with the settled intervals emitted so far, these are all of the device's
        presence up to `now`; the last one may still be cut short by a later ping.
        """
        d = self._devices.get(device)
        return self._unsettled(device, d, now) if d else []

    def all_unsettled(self, now: int) -> Iterator[Interval]:
        for device, d in self._devices.items():
            yield from self._unsettled(device, d, now)

    def open_stays(self, now: int) -> Iterator[Interval]:
        """Every device's unsettled intervals up to `now`, with contiguous ones in the same cell
        joined as settlement will join them: each starts where its settled form will."""
        for device, d in self._devices.items():
            joined: Interval | None = None
            for i in self._unsettled(device, d, now):
                if joined is not None and joined.cell == i.cell and joined.end == i.start:
                    joined = Interval(device, i.cell, joined.start, i.end)
                    continue
                if joined is not None:
                    yield joined
                joined = i
            if joined is not None:
                yield joined

    def _unsettled(self, device: int, d: _Device, now: int) -> list[Interval]:
        out = []
        chain, ttl = d.chain, self.ttl_ms
        for i, (ts, cell) in enumerate(chain):
            end = ts + ttl
            if i + 1 < len(chain):
                end = min(end, chain[i + 1][0])
            end = min(end, now)
            start = d.stay if i == 0 else ts
            if end > start:
                out.append(Interval(device, cell, start, end))
        return out

    # -- internals ------------------------------------------------------------------------------

    def _update(self, device: int, d: _Device, now: int) -> None:
        chain, ttl = d.chain, self.ttl_ms
        while len(chain) >= 2:
            start, cell = chain[0]
            following, next_cell = chain[1]
            end = min(following, start + ttl)
            if end > now:
                break
            if next_cell != cell or end != following:  # the stay ends here
                self.settled.append(Interval(device, cell, d.stay, end))
                d.stay = following
            del chain[0]
        start, cell = chain[0]
        if start > now:  # only future-dated pings so far
            present, deadline = NOWHERE, start
        else:
            end = min(chain[1][0], start + ttl) if len(chain) > 1 else start + ttl
            if now < end:
                present, deadline = cell, end
            else:  # expired; only a new ping can bring it back
                present, deadline = NOWHERE, -1
        if present != d.cell:
            d.seq += 1
            self.moves.append(Move(device, d.cell, present, d.seq))
            d.cell = present
        self._schedule(device, d, deadline)

    def _schedule(self, device: int, d: _Device, deadline: int) -> None:
        # Only ever move a wake-up earlier: a later deadline (the common case, a new ping
        # extending the TTL) is found when the earlier wake-up fires, so most pings cost no
        # wheel operation and each device has at most one entry.
        if deadline < 0 or 0 <= d.deadline <= deadline:
            return
        self._unschedule(device, d)
        d.deadline = deadline
        self._wheel.setdefault(deadline // 1000, set()).add(device)

    def _unschedule(self, device: int, d: _Device) -> None:
        """Take the device's wake-up off the wheel (its `deadline` is left as it was)."""
        if d.deadline < 0:
            return
        bucket = self._wheel.get(d.deadline // 1000)
        if bucket is not None:
            bucket.discard(device)
            if not bucket:
                del self._wheel[d.deadline // 1000]

    def _check_drained(self, what: str) -> None:
        if self.moves or self.settled or self.segments:
            raise RuntimeError(f"drain the outboxes before {what}")

    # -- snapshot and handoff -------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Plain data (msgpack-able); outboxes must have been drained."""
        self._check_drained("taking a snapshot")
        return {
            "ttl_ms": self.ttl_ms,
            "devices": [_row(dev, d) for dev, d in self._devices.items()],
        }

    @classmethod
    def restore(cls, state: dict) -> "PresenceTracker":
        tracker = cls(state["ttl_ms"])
        tracker.absorb(state)
        return tracker

    def extract(self, devices: Iterable[int]) -> dict:
        """Remove the devices (those held) and return their state, rows as in `snapshot`;
        outboxes must have been drained."""
        self._check_drained("extracting devices")
        rows = []
        for dev in devices:
            d = self._devices.pop(dev, None)
            if d is not None:
                self._unschedule(dev, d)
                rows.append(_row(dev, d))
        return {"devices": rows}

    def absorb(self, state: dict) -> None:
        """Add the devices of an `extract` (or `snapshot`) state, each with its wake-up as
        `restore` sets it. A device already held keeps its own state, so absorbing the same
        state twice changes nothing. Emits no moves: a device's presence comes with it."""
        for row in state["devices"]:
            if row[0] not in self._devices:
                dev, d, deadline = _device(row)
                self._devices[dev] = d
                self._schedule(dev, d, deadline)


def _row(dev: int, d: _Device) -> list:
    """A device's state as one plain row (the layout of snapshots and handoffs)."""
    chain = [x for p in d.chain for x in p]
    return [dev, d.last_ts, d.last_lat, d.last_lng, chain, d.stay, d.cell, d.seq, d.deadline]


def _device(row: list) -> tuple[int, _Device, int]:
    """(device, its state, its deadline) from a `_row`; the deadline is not yet scheduled."""
    dev, last_ts, lat, lng, flat, stay, cell, seq, deadline = row
    d = _Device()
    d.last_ts, d.last_lat, d.last_lng, d.stay = last_ts, lat, lng, stay
    d.chain = [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)]
    d.cell, d.seq = cell, seq
    return dev, d, deadline
