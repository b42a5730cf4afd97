"""Door spaces: people counters over doorways, exact at any time under out-of-order events."""

import bisect
import itertools
from typing import NamedTuple


class Installation(NamedTuple):
    """Sensor on `doorway` (None: out of service) from `start`; `sign` is +1 when a +1 event
    enters the doorway's inside space ("positive": "in"), -1 when it leaves it ("out")."""

    start: int
    doorway: str | None
    sign: int


class DoorCounter:
    """Signed crossings per door space, from door events attributed by event time.

    Metadata (spaces, doorways, installations, resets) applies retroactively: an installation
    added after the events it covers re-attributes them. Events may come in any order. Counters
    on several shards can each hold a part of the events (partitioned by sensor): their
    `partial_sum`s add up, and only the final sum is clamped at 0 (`door_count`).
    """

    def __init__(self) -> None:
        self._spaces: dict[str, str] = {}  # door space -> name
        self._doorways: dict[str, tuple[str, str | None]] = {}
        self._installs: dict[str, list[Installation]] = {}
        self._resets: dict[str, list[int]] = {}
        self._events: dict[str, list[tuple[int, int]]] = {}  # sensor -> [(ts, direction)]
        self._derived: dict[str, tuple[list[int], list[int]]] | None = None

    # -- metadata -------------------------------------------------------------------------------

    def define_space(self, space: str, name: str = "") -> None:
        self._spaces[space] = name

    def has_space(self, space: str) -> bool:
        return space in self._spaces

    def spaces(self) -> dict[str, str]:
        """Every door space and its name."""
        return dict(self._spaces)

    def define_doorway(self, doorway: str, inside: str, outside: str | None) -> None:
        for side in (inside, outside):
            if side is not None and side not in self._spaces:
                raise ValueError(f"unknown door space {side!r}")
        if inside == outside:
            raise ValueError("a doorway joins two different spaces")
        self._doorways[doorway] = (inside, outside)
        self._derived = None

    def doorway(self, doorway: str) -> tuple[str, str | None] | None:
        return self._doorways.get(doorway)

    def install(self, sensor: str, doorway: str | None, start: int, positive: str = "in") -> None:
        """Put `sensor` on `doorway` from `start` (replacing an installation at the same start)."""
        if doorway is not None and doorway not in self._doorways:
            raise ValueError(f"unknown doorway {doorway!r}")
        if positive not in ("in", "out"):
            raise ValueError('positive must be "in" or "out"')
        history = self._installs.setdefault(sensor, [])
        history[:] = [i for i in history if i.start != start]
        bisect.insort(
            history, Installation(start, doorway, 1 if positive == "in" else -1), key=_start
        )
        self._derived = None

    def installations(self, sensor: str) -> list[Installation]:
        return list(self._installs.get(sensor, ()))

    def reset(self, space: str, at: int) -> None:
        if space not in self._spaces:
            raise ValueError(f"unknown door space {space!r}")
        resets = self._resets.setdefault(space, [])
        if at not in resets:
            bisect.insort(resets, at)

    # -- events ---------------------------------------------------------------------------------

    def add(self, sensor: str, ts: int, direction: int) -> None:
        self._events.setdefault(sensor, []).append((ts, direction))
        if self._derived is not None:
            for space, signed in self._crossings(sensor, ts, direction):
                self._insert(space, ts, signed)

    def partial_sum(self, space: str, at: int) -> int:
        """Sum of this counter's signed crossings for `space` since its last reset up to `at`."""
        derived = self._derive().get(space)
        if derived is None:
            return 0
        times, deltas = derived
        resets = self._resets.get(space, ())
        i = bisect.bisect_right(resets, at)
        lo = bisect.bisect_left(times, resets[i - 1]) if i else 0
        hi = bisect.bisect_right(times, at)
        return sum(itertools.islice(deltas, lo, hi))

    def count(self, space: str, at: int) -> int:
        return door_count([self.partial_sum(space, at)])

    # -- internals ------------------------------------------------------------------------------

    def _crossings(self, sensor: str, ts: int, direction: int) -> list[tuple[str, int]]:
        history = self._installs.get(sensor)
        if not history:
            return []
        i = bisect.bisect_right(history, ts, key=_start) - 1
        if i < 0 or history[i].doorway is None:
            return []
        inst = history[i]
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
            "events": [[s, [x for e in evs for x in e]] for s, evs in self._events.items()],
        }

    @classmethod
    def restore(cls, state: dict) -> "DoorCounter":
        counter = cls()
        counter._spaces = dict(state["spaces"])
        counter._doorways = {d: (i, o) for d, i, o in state["doorways"]}
        for sensor, start, doorway, sign in state["installs"]:
            counter._installs.setdefault(sensor, []).append(Installation(start, doorway, sign))
        for space, at in state["resets"]:
            counter._resets.setdefault(space, []).append(at)
        for sensor, flat in state["events"]:
            counter._events[sensor] = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        return counter


def _start(installation: Installation) -> int:
    return installation.start


def door_count(partials: list[int]) -> int:
    """A door space's count from the partial sums of every shard: clamped once, at the end."""
    return max(0, sum(partials))
