"""Minute aggregates: distinct devices per place per minute."""

from collections.abc import Container, Iterable

from engine.timeutil import MINUTE_MS, minute_of

Place = int | str


class MinuteAggregator:
    """Distinct devices present in each place during each minute.

    Settled intervals are added once each (idempotent anyway: a set per key). Open intervals,
    which may still shrink, are passed to `counts` at query time clipped to `now + 1`, so that
    "present at some instant t <= now of the minute" holds. Minutes before `evict_before` (the
    `horizon`) are forgotten and not taken again: history answers for them.
    """

    def __init__(self) -> None:
        self._sets: dict[tuple[Place, int], set[int]] = {}
        self.horizon = 0  # the first minute kept

    def add(self, device: int, places: Iterable[Place], start: int, end: int) -> None:
        if end <= start or end <= self.horizon:
            return
        minutes = range(max(minute_of(start), self.horizon), end, MINUTE_MS)
        for place in places:
            for m in minutes:
                self._sets.setdefault((place, m), set()).add(device)

    def counts(
        self,
        open_intervals: Iterable[tuple[int, Iterable[Place], int, int]] = (),
        since: int = 0,
    ) -> dict[tuple[Place, int], int]:
        """{(place, minute): distinct devices} for minutes >= `since` (and the horizon),
        including the open `(device, places, start, end)` intervals."""
        since = max(since, self.horizon)
        extra: dict[tuple[Place, int], set[int]] = {}
        for device, places, start, end in open_intervals:
            if end <= start:
                continue
            for place in places:
                for m in range(max(minute_of(start), since), end, MINUTE_MS):
                    key = (place, m)
                    base = self._sets.get(key)
                    if base is None or device not in base:
                        extra.setdefault(key, set()).add(device)
        out = {k: len(v) for k, v in self._sets.items() if k[1] >= since}
        for key, devices in extra.items():
            out[key] = out.get(key, 0) + len(devices)
        return out

    def rekey(self, device: int, fresh: int) -> None:
        """The device is counted as `fresh` from now on, in every minute it was counted in
        (a forgotten device: the counts stay, the tie to its pseudonym goes)."""
        for members in self._sets.values():
            if device in members:
                members.discard(device)
                members.add(fresh)

    def evict_before(self, minute: int) -> None:
        if minute <= self.horizon:
            return
        self.horizon = minute
        for key in [k for k in self._sets if k[1] < minute]:
            del self._sets[key]

    def snapshot(self) -> dict:
        return {**_rows(self._sets), "horizon": self.horizon}

    @classmethod
    def restore(cls, state: dict) -> "MinuteAggregator":
        agg = cls()
        agg.absorb(state)
        agg.horizon = state.get("horizon", 0)
        return agg

    def extract(self, devices: Iterable[int]) -> dict:
        """Remove the devices from every (place, minute) set and return their memberships,
        rows as in `snapshot`; sets left empty are dropped."""
        leaving = set(devices)
        out: dict[tuple[Place, int], set[int]] = {}
        for key in list(self._sets):
            members = self._sets[key]
            if moved := members & leaving:
                out[key] = moved
                members -= moved
                if not members:
                    del self._sets[key]
        return _rows(out)

    def absorb(self, state: dict, devices: Container[int] | None = None) -> None:
        """Add the `devices` of an `extract` (or `snapshot`) state; by default those not yet
        in any set here, so absorbing the same state twice changes nothing."""
        if devices is None:
            held = {dev for members in self._sets.values() for dev in members}
            devices = {dev for _, _, devs in state["sets"] for dev in devs} - held
        for place, minute, devs in state["sets"]:
            if taken := [dev for dev in devs if dev in devices]:
                self._sets.setdefault((place, minute), set()).update(taken)


def _rows(sets: dict[tuple[Place, int], set[int]]) -> dict:
    """The plain state of some (place, minute) sets (snapshot and handoff)."""
    return {"sets": [[p, m, sorted(devs)] for (p, m), devs in sets.items()]}
