"""Presence tracking: where each device is, from its applied pings, by an injected clock."""

import itertools
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from engine.geo import haversine_many

NOWHERE = 0  # no H3 cell has id 0

# What an evicted device leaves behind (48 bytes): its latest applied ping (ts, lat, lng), its
# move seq, and the cell and start of its last stay, which a delayed ping may still cut short
_WATERMARK = struct.Struct("<qddqqq")


class Interval(NamedTuple):
    """The device was in `cell` during `[start, end)`."""

    device: int
    cell: int
    start: int
    end: int


class Move(NamedTuple):
    """The device's present cell changed from `old` to `new` (NOWHERE = absent); `seq` orders
    the moves of one device, so a receiver can apply them idempotently (last `seq` wins). `at`:
    when, in presence time (the stay's start, or when it ran out), whatever the clock's pace."""

    device: int
    old: int
    new: int
    seq: int
    at: int = 0


class Segment(NamedTuple):
    """Great-circle step between two consecutive applied pings of a device."""

    device: int
    t0: int
    t1: int
    meters: float


class _Device:
    __slots__ = ("cell", "chain", "deadline", "last_lat", "last_lng", "last_ts", "seq")
    __slots__ += ("since", "stay")

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
        # live dwell and distance hold the device's presence from here on (0: all of it); more
        # after it was evicted and came back: what came before is in history
        self.since = 0


class PresenceTracker:
    """Applies pings in arrival order and keeps every device's present cell at `now`.

    A ping is applied when its ts is newer than the device's latest applied ping, else it is
    late and changes nothing. Applied ping i places the device in its cell during
    [ts_i, min(ts_{i+1}, ts_i + ttl)). The tracker emits, into outboxes the caller drains:
    `Move`s when a present cell changes (at a ping, when a future-dated ping comes due, or at
    expiry); `Interval`s once they are settled (successor known and end <= now), each exactly
    once; `Segment`s between consecutive applied pings (`drain_segments`, measured a batch at a
    time). Calls must come with a non-decreasing
    `now`. `advance(now)` is idempotent.

    A device whose presence has expired can be evicted (`evict`): it leaves a 48-byte watermark
    that keeps late pings late, cuts its last stay short if a delayed ping says so, and
    continues its move seq; a ping brings it back (`revived` tells the caller). Watermarks go
    once no ping they could judge can arrive any more (`drop_watermarks`).
    """

    shortcut = True  # False: every ping the general way (tests compare the two)

    def __init__(self, ttl_ms: int):
        self.ttl_ms = ttl_ms
        self._devices: dict[int, _Device] = {}
        self._wheel: dict[int, set[int]] = {}  # deadline second -> devices
        self._gone: dict[int, bytes] = {}  # evicted device -> watermark, oldest first
        self._seq_floor = 0  # the seq a device starts from: above any dropped watermark's
        # presence of devices whose watermark was dropped ended before this: a device met
        # for the first time may have had presence before it, which only history holds
        self.dropped_until = 0
        self.expired: set[int] = set()  # held devices whose presence ended (no ping since)
        self.moves: list[Move] = []
        self.settled: list[Interval] = []
        # steps between applied pings (device, t0, t1, lat0, lng0, lat1, lng1): drain_segments
        self._steps: list[tuple[int, int, int, float, float, float, float]] = []
        self.revived: list[Interval] = []  # evicted devices back: the last stay they had

    def __len__(self) -> int:
        """Devices held in memory (not counting watermarks)."""
        return len(self._devices)

    def __contains__(self, device: int) -> bool:
        """Held, or evicted with a watermark."""
        return device in self._devices or device in self._gone

    @property
    def watermarks(self) -> int:
        return len(self._gone)

    # -- input ----------------------------------------------------------------------------------

    def apply(self, device: int, ts: int, cell: int, lat: float, lng: float, now: int) -> bool:
        """Apply one ping; False if it is late (not newer than the device's latest applied)."""
        d = self._devices.get(device)
        if d is None:
            d = self._arrive(device, ts)
            if d is None:
                return False
        elif ts <= d.last_ts:
            return False
        else:
            self.expired.discard(device)
        chain = d.chain
        if chain:
            self._steps.append((device, d.last_ts, ts, d.last_lat, d.last_lng, lat, lng))
        d.last_ts, d.last_lat, d.last_lng = ts, lat, lng
        if self.shortcut and len(chain) == 1 and cell == d.cell:
            # the common case, a present device pinging again in its cell before its TTL ran
            # out: the ping continues the stay and changes nothing else (what `_update` would
            # do: settle nothing, move nowhere, keep the wake-up, which is no later)
            start, ttl = chain[0][0], self.ttl_ms
            if ts <= now < ts + ttl and ts <= start + ttl and 0 <= d.deadline <= ts + ttl:
                chain[0] = [ts, cell]
                return True
        if not chain:
            d.stay = ts
        chain.append([ts, cell])
        self._update(device, d, now)
        return True

    def _arrive(self, device: int, ts: int) -> _Device | None:
        """The state a ping of a device not held starts from: its watermark's, or a new one;
        None if the watermark makes the ping late."""
        mark = self._gone.get(device)
        if mark is None:
            d = self._devices[device] = _Device()
            d.seq = self._seq_floor
            return d
        last_ts, lat, lng, seq, cell, stay = _WATERMARK.unpack(mark)
        if ts <= last_ts:
            return None
        del self._gone[device]
        d = self._devices[device] = _Device()
        d.last_ts, d.last_lat, d.last_lng, d.seq = last_ts, lat, lng, seq
        d.chain, d.stay, d.since = [[last_ts, cell]], stay, last_ts + 1
        self.revived.append(Interval(device, cell, stay, last_ts + self.ttl_ms))
        return d

    def evict(self, device: int) -> None:
        """Forget an expired device (in `expired`) but for its watermark. Its last stay must be
        in history already: it comes back through `revived` if a ping brings the device back."""
        d = self._devices.pop(device)
        self._unschedule(device, d)
        self.expired.discard(device)
        [(_, cell)] = d.chain
        mark = _WATERMARK.pack(d.last_ts, d.last_lat, d.last_lng, d.seq, cell, d.stay)
        self._gone[device] = mark

    def leave(self, device: int, now: int) -> bool:
        """The device leaves for good at `now` (it is forgotten): its intervals not yet
        settled are settled cut at `now` (empty ones, such as those of pings dated after
        `now`, vanish), a move to NOWHERE is emitted if it is present, and nothing of it is
        kept, not even a watermark. False if the tracker did not know it."""
        if self._gone.pop(device, None) is not None:
            return True
        d = self._devices.get(device)
        if d is None:
            return False
        self._update(device, d, now)
        for interval in self._joined(device, d, now):
            self.settled.append(interval)
        if d.cell != NOWHERE:
            d.seq += 1
            self.moves.append(Move(device, d.cell, NOWHERE, d.seq, now))
        self._unschedule(device, d)
        self.expired.discard(device)
        del self._devices[device]
        return True

    def drop_watermarks(self, before: int) -> int:
        """Drop the watermarks of devices whose latest ping is older than `before` (oldest
        first, stopping at the first newer one); how many went."""
        dropped = 0
        for mark in self._gone.values():
            last_ts, _, _, seq, _, _ = _WATERMARK.unpack(mark)
            if last_ts >= before:
                break
            self._seq_floor = max(self._seq_floor, seq)
            dropped += 1
        for device in list(itertools.islice(self._gone, dropped)):
            del self._gone[device]
        if dropped:
            self.dropped_until = max(self.dropped_until, before + self.ttl_ms)
        return dropped

    def advance(self, now: int) -> None:
        """Bring every device whose presence may have changed by `now` up to date."""
        due = [second for second in self._wheel if second * 1000 <= now]
        for second in sorted(due):
            for device in sorted(self._wheel.pop(second)):
                d = self._devices[device]
                d.deadline = -1
                self._update(device, d, now)

    # -- queries --------------------------------------------------------------------------------

    def held(self) -> list[int]:
        """The devices whose presence is held (not evicted)."""
        return list(self._devices)

    def devices(self) -> Iterator[int]:
        """The devices this tracker knows, held or evicted (do not extract while iterating)."""
        return itertools.chain(self._devices, self._gone)

    def since(self, device: int) -> int | None:
        """From when live state holds the device's presence (None: not held)."""
        d = self._devices.get(device)
        return d.since if d else None

    def last_stay(self, device: int) -> tuple[int, int, int]:
        """(cell, start, end) of an expired device's last stay (the interval of its latest
        ping, joined with the stay it continues)."""
        d = self._devices[device]
        ts, cell = d.chain[-1]
        return cell, d.stay, ts + self.ttl_ms

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

    def open_stays(self, now: int, devices: Iterable[int] | None = None) -> Iterator[Interval]:
        """Unsettled intervals up to `now` of every device held (or of those of `devices`),
        contiguous ones in one cell joined: each starts where its settled form will."""
        ttl, held = self.ttl_ms, self._devices
        pairs = held.items() if devices is None else ((k, held[k]) for k in devices if k in held)
        for device, d in pairs:
            chain = d.chain
            if len(chain) == 1:  # most devices: `_joined` of their one interval
                ts, cell = chain[0]
                end = min(ts + ttl, now)
                if end > d.stay:
                    yield Interval(device, cell, d.stay, end)
            else:
                yield from self._joined(device, d, now)

    def _joined(self, device: int, d: _Device, now: int) -> Iterator[Interval]:
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
                if end != following:
                    self._move(device, d, NOWHERE, end)
                if following <= now:
                    self._move(device, d, next_cell, following)
            del chain[0]
        start, cell = chain[0]
        if start > now:  # only future-dated pings so far
            present, deadline, end = NOWHERE, start, start
        else:
            end = min(chain[1][0], start + ttl) if len(chain) > 1 else start + ttl
            if now < end:
                present, deadline = cell, end
            else:  # expired; only a new ping can bring it back
                present, deadline = NOWHERE, -1
                self.expired.add(device)
        self._move(device, d, present, d.stay if present != NOWHERE else end)
        self._schedule(device, d, deadline)

    def _move(self, device: int, d: _Device, cell: int, at: int) -> None:
        if cell != d.cell:
            d.seq += 1
            self.moves.append(Move(device, d.cell, cell, d.seq, at))
            d.cell = cell

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
        if self.moves or self.settled or self._steps or self.revived:
            raise RuntimeError(f"drain the outboxes before {what}")

    def drain_segments(self) -> list[Segment]:
        """The `Segment`s since the last drain, in the order their pings were applied."""
        steps, self._steps = self._steps, []
        if not steps:
            return []
        devices, t0, t1, lat0, lng0, lat1, lng1 = zip(*steps, strict=True)
        meters = haversine_many(lat0, lng0, lat1, lng1)
        return list(map(Segment, devices, t0, t1, meters))

    # -- snapshot and handoff -------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Plain data (msgpack-able); outboxes must have been drained."""
        self._check_drained("taking a snapshot")
        return {
            "ttl_ms": self.ttl_ms,
            "devices": [_row(dev, d) for dev, d in self._devices.items()],
            "gone": [[dev, mark] for dev, mark in self._gone.items()],
            "seq_floor": self._seq_floor,
            "dropped_until": self.dropped_until,
        }

    @classmethod
    def restore(cls, state: dict) -> "PresenceTracker":
        tracker = cls(state["ttl_ms"])
        tracker.absorb(state)
        tracker._seq_floor = state.get("seq_floor", 0)
        tracker.dropped_until = state.get("dropped_until", 0)
        return tracker

    def extract(self, devices: Iterable[int]) -> dict:
        """Remove the devices (held or evicted) and return their state, rows as in `snapshot`;
        outboxes must have been drained."""
        self._check_drained("extracting devices")
        rows, gone = [], []
        for dev in devices:
            d = self._devices.pop(dev, None)
            if d is not None:
                self._unschedule(dev, d)
                self.expired.discard(dev)
                rows.append(_row(dev, d))
            elif (mark := self._gone.pop(dev, None)) is not None:
                gone.append([dev, mark])
        return {"devices": rows, "gone": gone}

    def absorb(self, state: dict) -> None:
        """Add the devices of an `extract` (or `snapshot`) state, each with its wake-up as
        `restore` sets it. A device already known keeps its own state, so absorbing the same
        state twice changes nothing. Emits no moves: a device's presence comes with it."""
        for row in state["devices"]:
            if row[0] not in self:
                dev, d, deadline = _device(row)
                self._devices[dev] = d
                self._schedule(dev, d, deadline)
                if d.cell == NOWHERE and deadline < 0:
                    self.expired.add(dev)
        for dev, mark in state.get("gone", ()):
            if dev not in self:
                self._gone[dev] = bytes(mark)


def _row(dev: int, d: _Device) -> list:
    """A device's state as one plain row (the layout of snapshots and handoffs)."""
    chain = [x for p in d.chain for x in p]
    return [
        dev, d.last_ts, d.last_lat, d.last_lng, chain, d.stay, d.cell, d.seq, d.deadline, d.since
    ]  # fmt: skip


def _device(row: list) -> tuple[int, _Device, int]:
    """(device, its state, its deadline) from a `_row`; the deadline is not yet scheduled."""
    dev, last_ts, lat, lng, flat, stay, cell, seq, deadline, *since = row
    d = _Device()
    d.last_ts, d.last_lat, d.last_lng, d.stay = last_ts, lat, lng, stay
    d.chain = [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)]
    d.cell, d.seq = cell, seq
    d.since = since[0] if since else 0
    return dev, d, deadline
