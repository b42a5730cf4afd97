"""Door spaces: people counters over doorways, exact at any time under out-of-order events."""

import bisect
import itertools
import math
from typing import NamedTuple


class Installation(NamedTuple):
    """Sensor on `doorway` (None: out of service) from `start`; `sign` is +1 when a +1 event
    enters the doorway's inside space ("positive": "in"), -1 when it leaves it ("out")."""

    start: int
    doorway: str | None
    sign: int


class BeyondHorizon(ValueError):
    """A count or a change at a time older than the counter's horizon, where its events are
    folded into a base: history answers such counts; such changes are refused."""


class DoorCounter:
    """Signed crossings per door space, from door events attributed by event time.

    Metadata (spaces, doorways, installations, resets) applies retroactively: an installation
    added after the events it covers re-attributes them. Events may come in any order. Counters
    on several shards can each hold a part of the events (partitioned by sensor): their
    `partial_sum`s add up, and only the final sum is clamped at 0 (`door_count`).

    Events older than the `horizon` are folded (`fold`) into a base per space: the sum of its
    crossings since its last reset before the horizon. Counts at any time from the horizon on
    stay exact; earlier ones raise BeyondHorizon (history has every event). So that folded
    events never need attributing again, installations and resets dated before the horizon are
    refused, and a doorway's sides never change once set.
    """

    def __init__(self) -> None:
        self._spaces: dict[str, str] = {}  # door space -> name
        self._doorways: dict[str, tuple[str, str | None]] = {}
        self._installs: dict[str, list[Installation]] = {}
        self._resets: dict[str, list[int]] = {}
        self._events: dict[str, list[tuple[int, int]]] = {}  # sensor -> [(ts, direction)]
        self._derived: dict[str, tuple[list[int], list[int]]] | None = None
        # doorway -> (starts, sensors) of the installations on it, by start (None: to derive)
        self._on_doorway: dict[str, tuple[list[int], list[str]]] | None = None
        self.horizon = 0  # events before it are folded into `_base`
        self._base: dict[str, int] = {}  # space -> crossings since its last reset < horizon
        # deleted spaces and doorways: kept to count the past, hidden from the present
        self._deleted_spaces: set[str] = set()
        self._deleted_doorways: set[str] = set()

    # -- metadata -------------------------------------------------------------------------------

    def define_space(self, space: str, name: str = "") -> None:
        """Define a door space (a deleted one is defined again: its count goes on from its
        crossings, so whoever brings it back resets it)."""
        self._spaces[space] = name
        self._deleted_spaces.discard(space)

    def has_space(self, space: str) -> bool:
        return space in self._spaces and space not in self._deleted_spaces

    def spaces(self) -> dict[str, str]:
        """Every door space (but the deleted) and its name."""
        return {s: n for s, n in self._spaces.items() if s not in self._deleted_spaces}

    def delete_space(self, space: str) -> None:
        """The space is no longer counted nor listed; its crossings before stay, for counts of
        the past. Its doorways are deleted first (`delete_doorway`, `ending`)."""
        if self.has_space(space):
            self._deleted_spaces.add(space)

    def delete_doorway(self, doorway: str) -> None:
        """No sensor may be installed on it any more; the installations it had stay, for
        counts of the past (`ending` says which to end when it goes)."""
        if doorway in self._doorways:
            self._deleted_doorways.add(doorway)

    def ending(self, doorway: str, at: int) -> list[tuple[str, str]]:
        """(sensor, positive) of each sensor counting at `doorway` at `at`: what deleting the
        doorway at `at` ends (an installation nowhere from `at` each)."""
        out = []
        for sensor, history in self._installs.items():
            i = bisect.bisect_right(history, at, key=_start) - 1
            if i < 0 or history[i].doorway != doorway:
                continue
            if not self._ended(doorway, sensor, history[i].start, at):
                out.append((sensor, "in" if history[i].sign == 1 else "out"))
        return sorted(out)

    def define_doorway(self, doorway: str, inside: str, outside: str | None) -> None:
        """Define a doorway (a deleted one with the same sides is defined again, with no
        sensor on it)."""
        for side in (inside, outside):
            if side is not None and not self.has_space(side):
                raise ValueError(f"unknown door space {side!r}")
        if inside == outside:
            raise ValueError("a doorway joins two different spaces")
        if self._doorways.get(doorway, (inside, outside)) != (inside, outside):
            raise ValueError(
                f"doorway {doorway!r} joins {self._doorways[doorway]} already: a doorway's "
                "sides never change (define another doorway and move the sensors to it)"
            )
        self._doorways[doorway] = (inside, outside)
        self._deleted_doorways.discard(doorway)
        self._derived = None

    def install(
        self,
        sensor: str,
        doorway: str | None,
        start: int,
        positive: str = "in",
        horizon: int = 0,
        exclusive: bool = True,
    ) -> None:
        """Put `sensor` on `doorway` from `start` (replacing an installation at the same start);
        it ends there whatever sensor was on the doorway (`_ended`). The same installation
        again changes nothing; a new one dated before the counter's horizon (or `horizon`, the
        caller's) is refused, and so is one at the start of another sensor's on that doorway
        (`exclusive`; stored definitions from before the rule load without it)."""
        if doorway is not None and (
            doorway not in self._doorways or (exclusive and doorway in self._deleted_doorways)
        ):
            raise ValueError(f"unknown doorway {doorway!r}")
        if positive not in ("in", "out"):
            raise ValueError('positive must be "in" or "out"')
        new = Installation(start, doorway, 1 if positive == "in" else -1)
        history = self._installs.setdefault(sensor, [])
        if new in history:
            return
        self._check_horizon(start, "an installation", horizon)
        if exclusive and doorway is not None:
            starts, sensors = self._doorway_index().get(doorway, ((), ()))
            for at, other in zip(starts, sensors, strict=True):
                if at == start and other != sensor:
                    raise ValueError(
                        f"sensor {other!r} is installed on doorway {doorway!r} from {start} "
                        "already: a doorway holds one sensor at a time"
                    )
        history[:] = [i for i in history if i.start != start]
        bisect.insort(history, new, key=_start)
        self._derived = self._on_doorway = None

    def installations(self, sensor: str) -> list[Installation]:
        return list(self._installs.get(sensor, ()))

    def reset(self, space: str, at: int, horizon: int = 0) -> None:
        """Count `space` from zero again at `at` (the same reset again changes nothing; a new
        one before the horizon is refused)."""
        if not self.has_space(space):
            raise ValueError(f"unknown door space {space!r}")
        resets = self._resets.setdefault(space, [])
        if at in resets:
            return
        self._check_horizon(at, "a reset", horizon)
        bisect.insort(resets, at)

    # -- events ---------------------------------------------------------------------------------

    def add(self, sensor: str, ts: int, direction: int) -> None:
        if ts < self.horizon:  # a log replayed after a restart, or a clock ahead of ours
            for space, signed in self._crossings(sensor, ts, direction):
                if ts >= self._last_reset(space, self.horizon):
                    self._base[space] = self._base.get(space, 0) + signed
            return
        self._events.setdefault(sensor, []).append((ts, direction))
        if self._derived is not None:
            for space, signed in self._crossings(sensor, ts, direction):
                self._insert(space, ts, signed)

    def partial_sum(self, space: str, at: int) -> int:
        """Sum of this counter's signed crossings for `space` since its last reset up to `at`;
        BeyondHorizon before the horizon."""
        if at < self.horizon:
            raise BeyondHorizon(f"{at} is before this counter's horizon {self.horizon}")
        reset = self._last_reset(space, at + 1)
        base = self._base.get(space, 0) if reset < self.horizon else 0
        derived = self._derive().get(space)
        if derived is None:
            return base
        times, deltas = derived
        lo = bisect.bisect_left(times, reset) if reset > -math.inf else 0
        hi = bisect.bisect_right(times, at)
        return base + sum(itertools.islice(deltas, lo, hi))

    def fold(self, horizon: int) -> int:
        """Fold the events before `horizon` into each space's base (a later horizon only);
        returns how many events left memory."""
        if horizon <= self.horizon:
            return 0
        derived = self._derive()
        for space in self._spaces:
            reset = self._last_reset(space, horizon)
            base = self._base.get(space, 0) if reset < self.horizon else 0
            times, deltas = derived.get(space, ((), ()))
            lo = bisect.bisect_left(times, reset) if reset > -math.inf else 0
            hi = bisect.bisect_left(times, horizon)
            total = base + sum(itertools.islice(deltas, lo, hi))
            if total:
                self._base[space] = total
            else:
                self._base.pop(space, None)
        folded = 0
        for sensor, events in list(self._events.items()):
            kept = [e for e in events if e[0] >= horizon]
            folded += len(events) - len(kept)
            if kept:
                self._events[sensor] = kept
            else:
                del self._events[sensor]
        for times, deltas in derived.values():
            cut = bisect.bisect_left(times, horizon)
            del times[:cut], deltas[:cut]
        self.horizon = horizon
        return folded

    def ranges(
        self, space: str, at: int, since: int | None = None
    ) -> list[tuple[str, int, int, int]]:
        """What the count of `space` at `at` sums, as (sensor, first ts, last ts, sign): each
        sensor's events in that ts range count `sign * direction` (history's form of a count,
        for times before the horizon). With `since`, the crossings from `since` on instead,
        whatever the resets (a series' events)."""
        reset = self._last_reset(space, at + 1) if since is None else since
        out = []
        for sensor, history in self._installs.items():
            for i, inst in enumerate(history):
                if inst.doorway is None:
                    continue
                inside, outside = self._doorways[inst.doorway]
                sign = inst.sign if space == inside else -inst.sign if space == outside else 0
                end = history[i + 1].start - 1 if i + 1 < len(history) else at
                end = min(end, self._ended_at(inst.doorway, sensor, inst.start) - 1)
                lo, hi = max(inst.start, reset, 1), min(end, at)
                if sign and lo <= hi:
                    out.append((sensor, int(lo), int(hi), sign))
        return out

    def crossings(self, space: str, start: int, end: int) -> list[list[int]]:
        """[ts, ±1] of the signed crossings of `space` with ts in `[start, end)`, from the
        horizon on (those before it are folded), in ts order."""
        times, deltas = self._derive().get(space, ((), ()))
        lo = bisect.bisect_left(times, max(start, self.horizon))
        hi = bisect.bisect_left(times, end)
        return [[times[i], deltas[i]] for i in range(lo, max(lo, hi))]

    def resets(self, space: str) -> list[int]:
        return list(self._resets.get(space, ()))

    def event_count(self) -> int:
        return sum(len(events) for events in self._events.values())

    def count(self, space: str, at: int) -> int:
        return door_count([self.partial_sum(space, at)])

    # -- internals ------------------------------------------------------------------------------

    def _last_reset(self, space: str, before: int) -> float:
        """The space's latest reset earlier than `before` (-inf if none)."""
        resets = self._resets.get(space, ())
        i = bisect.bisect_left(resets, before)
        return resets[i - 1] if i else -math.inf

    def _check_horizon(self, at: int, what: str, horizon: int = 0) -> None:
        horizon = max(horizon, self.horizon)
        if at < horizon:
            raise BeyondHorizon(
                f"{what} dated {at} is older than OCC_MAX_PING_AGE_S allows (from {horizon} on): "
                "door events that old are no longer kept one by one to be counted again"
            )

    def _doorway_index(self) -> dict[str, tuple[list[int], list[str]]]:
        if self._on_doorway is None:
            pairs = sorted(
                (i.doorway, i.start, sensor)
                for sensor, history in self._installs.items()
                for i in history
                if i.doorway is not None
            )
            self._on_doorway = {}
            for doorway, start, sensor in pairs:
                starts, sensors = self._on_doorway.setdefault(doorway, ([], []))
                starts.append(start)
                sensors.append(sensor)
        return self._on_doorway

    def _ended(self, doorway: str, sensor: str, start: int, ts: int) -> bool:
        """Whether `sensor`'s installation on `doorway` from `start` was ended by `ts`: another
        sensor was installed there after `start`, at `ts` or before."""
        return self._ended_at(doorway, sensor, start) <= ts

    def _ended_at(self, doorway: str, sensor: str, start: int) -> float:
        """When another sensor's installation on `doorway` ends `sensor`'s from `start` (inf:
        none has yet)."""
        starts, sensors = self._doorway_index()[doorway]
        for j in range(bisect.bisect_right(starts, start), len(starts)):
            if sensors[j] != sensor:
                return starts[j]
        return math.inf

    def _crossings(self, sensor: str, ts: int, direction: int) -> list[tuple[str, int]]:
        history = self._installs.get(sensor)
        if not history:
            return []
        i = bisect.bisect_right(history, ts, key=_start) - 1
        if i < 0 or history[i].doorway is None:
            return []
        inst = history[i]
        if self._ended(inst.doorway, sensor, inst.start, ts):
            return []
        inside, outside = self._doorways[inst.doorway]
        signed = direction * inst.sign
        return [(inside, signed)] if outside is None else [(inside, signed), (outside, -signed)]

    def _insert(self, space: str, ts: int, signed: int) -> None:
        times, deltas = self._derived.setdefault(space, ([], []))
        i = bisect.bisect_right(times, ts)
        times.insert(i, ts)
        deltas.insert(i, signed)

    def _derive(self) -> dict[str, tuple[list[int], list[int]]]:
        if self._derived is None:
            self._derived = {}
            for sensor, events in self._events.items():
                for ts, direction in events:
                    for space, signed in self._crossings(sensor, ts, direction):
                        self._insert(space, ts, signed)
        return self._derived

    # -- snapshot -------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        return {
            "spaces": [[s, n] for s, n in self._spaces.items()],
            "doorways": [[d, i, o] for d, (i, o) in self._doorways.items()],
            "installs": [[s, *i] for s, hist in self._installs.items() for i in hist],
            "resets": [[s, at] for s, ats in self._resets.items() for at in ats],
            "deleted": [sorted(self._deleted_spaces), sorted(self._deleted_doorways)],
            **self.events_state(),
        }

    def events_state(self) -> dict:
        """The events, the base and the horizon (what a space shard checkpoints: definitions
        live in Redis apart)."""
        return {
            "events": [[s, [x for e in evs for x in e]] for s, evs in self._events.items()],
            "base": [[s, n] for s, n in self._base.items()],
            "horizon": self.horizon,
        }

    def load_events(self, state: dict) -> None:
        """Take the events, base and horizon of `events_state` (on top of the definitions)."""
        self.horizon = max(self.horizon, state.get("horizon", 0))
        self._base = dict(state.get("base", ()))
        for item in state.get("events", ()):
            if len(item) == 3:  # a space shard's checkpoint from before: [sensor, ts, direction]
                self._events.setdefault(item[0], []).append((item[1], item[2]))
                continue
            sensor, flat = item
            self._events[sensor] = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        self._derived = None

    @classmethod
    def restore(cls, state: dict) -> "DoorCounter":
        counter = cls()
        counter._spaces = dict(state["spaces"])
        counter._doorways = {d: (i, o) for d, i, o in state["doorways"]}
        for sensor, start, doorway, sign in state["installs"]:
            counter._installs.setdefault(sensor, []).append(Installation(start, doorway, sign))
        for space, at in state["resets"]:
            counter._resets.setdefault(space, []).append(at)
        spaces, doorways = state.get("deleted", ((), ()))
        counter._deleted_spaces, counter._deleted_doorways = set(spaces), set(doorways)
        counter.load_events(state)
        return counter


def _start(installation: Installation) -> int:
    return installation.start


def door_count(partials: list[int]) -> int:
    """A door space's count from the partial sums of every shard: clamped once, at the end."""
    return max(0, sum(partials))
