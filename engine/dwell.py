"""Dwell ledger: time per device per UTC day per cell and space, and distance per day."""

from collections.abc import Container, Iterable

from engine.distance import DistanceBook
from engine.timeutil import day_of, split_by_day

Place = int | str  # a base-resolution cell or a polygon space id


class DwellLedger:
    """Settled dwell and distance. Each settled interval and segment must be added exactly once;
    the caller adds the still-open intervals at query time (`dwell(..., open_intervals)`).
    Days before `evict_before` are forgotten, and not taken again (history keeps them); so are
    the books of a device that is `forget`-ten."""

    def __init__(self) -> None:
        self._dwell: dict[int, dict[tuple[int, Place], int]] = {}
        self._distance = DistanceBook()
        self.horizon = 0  # the first day kept

    def add_interval(self, device: int, places: Iterable[Place], start: int, end: int) -> None:
        pieces = [(day, ms) for day, ms in split_by_day(start, end) if day >= self.horizon]
        if not pieces:
            return
        book = self._dwell.setdefault(device, {})
        for place in places:
            for day, ms in pieces:
                key = (day, place)
                book[key] = book.get(key, 0) + ms

    def add_segment(self, device: int, t0: int, t1: int, meters: float) -> None:
        """A step counts for a day when both of its pings lie in that day."""
        day = day_of(t0)
        if day_of(t1) == day and meters and day >= self.horizon:
            self._distance.add(device, day, meters)

    def forget(self, device: int) -> None:
        self._dwell.pop(device, None)
        self._distance.pop(device)

    def dwell(
        self,
        device: int,
        day: int,
        open_intervals: Iterable[tuple[Iterable[Place], int, int]] = (),
    ) -> dict[Place, int]:
        """Milliseconds per place on `day`: settled ones plus `(places, start, end)` still open."""
        out = {p: ms for (d, p), ms in self._dwell.get(device, {}).items() if d == day}
        for places, start, end in open_intervals:
            lo, hi = max(start, day), min(end, day + 86_400_000)
            if hi > lo:
                for place in places:
                    out[place] = out.get(place, 0) + hi - lo
        return out

    def distance(self, device: int, day: int) -> float:
        return self._distance.get(device, day)

    def days(self) -> set[int]:
        return {d for book in self._dwell.values() for d, _ in book}

    def totals(self, day: int) -> Iterable[tuple[int, Place, int]]:
        """(device, place, ms) settled so far on `day`."""
        for device, book in self._dwell.items():
            for (d, place), ms in book.items():
                if d == day:
                    yield device, place, ms

    def evict_before(self, day: int) -> None:
        if day <= self.horizon:
            return
        self.horizon = day
        for device in list(self._dwell):
            book = self._dwell[device]
            for key in [k for k in book if k[0] < day]:
                del book[key]
            if not book:
                del self._dwell[device]
        self._distance.evict_before(day)

    def snapshot(self) -> dict:
        return {**_rows(self._dwell, self._distance.rows()), "horizon": self.horizon}

    @classmethod
    def restore(cls, state: dict) -> "DwellLedger":
        ledger = cls()
        ledger.absorb(state)
        ledger.horizon = state.get("horizon", 0)
        return ledger

    def extract(self, devices: Iterable[int]) -> dict:
        """Remove the devices' dwell and distance and return them, rows as in `snapshot`."""
        dwell, distance = {}, []
        for dev in devices:
            if (book := self._dwell.pop(dev, None)) is not None:
                dwell[dev] = book
            if (days := self._distance.pop(dev)) is not None:
                distance += [[dev, d, m] for d, m in days.items()]
        return _rows(dwell, distance)

    def absorb(self, state: dict, devices: Container[int] | None = None) -> None:
        """Add the `devices` of an `extract` (or `snapshot`) state; by default those this
        ledger has no data for, so absorbing the same state twice changes nothing."""
        if devices is None:
            incoming = {r[0] for r in state["dwell"]} | {r[0] for r in state["distance"]}
            devices = {d for d in incoming - self._dwell.keys() if d not in self._distance}
        for dev, day, place, ms in state["dwell"]:
            if dev in devices:
                self._dwell.setdefault(dev, {})[(day, place)] = ms
        for dev, day, meters in state["distance"]:
            if dev in devices:
                self._distance.put(dev, day, meters)


def _rows(dwell: dict[int, dict[tuple[int, Place], int]], distance: list[list]) -> dict:
    """The plain state of some devices' books (snapshot and handoff)."""
    return {
        "dwell": [[dev, d, p, ms] for dev, b in dwell.items() for (d, p), ms in b.items()],
        "distance": distance,
    }
