"""Presence for the history store: pieces of presence intervals that history can merge exactly.

A piece is one presence interval's part in one place on one UTC day, keyed by
(device, day, place, start) where `start` is the interval's start, with its bounds [lo, hi).
Settled intervals are final. A device's open interval is exported as it stands and may later
end earlier (a newer ping cuts it), so history keeps the latest version of each piece, and the
days an interval no longer reaches get a tombstone (lo = hi = 0). From the pieces, history
derives minute aggregates (devices whose piece overlaps the minute, at any coarser resolution)
and dwell per day (the sum of piece lengths), exactly, however late a ping arrives.
"""

from collections.abc import Container, Iterable

from engine.timeutil import DAY_MS, day_of

Place = int | str
Piece = tuple[int, int, Place, int, int, int]  # device, day, place, start, lo, hi
Pending = tuple[int, tuple, int, int]  # device, places, start, end


def pieces(device: int, places: Iterable[Place], start: int, end: int) -> list[Piece]:
    out = []
    if end <= start:
        return out
    for day in range(day_of(start), end, DAY_MS):
        lo, hi = max(start, day), min(end, day + DAY_MS)
        for place in places:
            out.append((device, day, place, start, lo, hi))
    return out


class PresenceHistory:
    """What a user shard owes history: settled intervals not yet confirmed written, and the
    furthest end each open interval was exported with (to bury the days it no longer reaches).

    A mark counts pending intervals from the front. Devices handed to another shard leave a
    placeholder where a mark handed out may count them, and absorbed ones join at the end, so
    a mark confirms exactly what its export sent. Snapshots leave the placeholders out: marks
    do not carry over to a restored history.
    """

    def __init__(self) -> None:
        self._pending: list[Pending | None] = []  # None: handed off after being exported
        self._exported = 0  # pending intervals the marks handed out may count
        # device -> {interval start: (places, furthest end exported)}
        self._open: dict[int, dict[int, tuple[tuple, int]]] = {}

    def settled(self, device: int, places: tuple, start: int, end: int) -> None:
        self._pending.append((device, places, start, end))

    def export(self, unsettled: Iterable[tuple[int, tuple, int, int]]) -> tuple[int, list[Piece]]:
        """(mark, pieces): the pending settled intervals and the open ones as of now, with
        tombstones for days an interval exported earlier no longer reaches. Exporting again
        before `confirm(mark)` sends the same pieces (or newer ones): history keeps the latest."""
        rows: list[Piece] = []
        for entry in self._pending:
            if entry is not None:
                device, places, start, end = entry
                rows += pieces(device, places, start, end)
                rows += self._tombstones(device, start, end)
        for device, places, start, end in unsettled:
            rows += pieces(device, places, start, end)
            rows += self._tombstones(device, start, end)
            book = self._open.setdefault(device, {})
            old = book.get(start)
            book[start] = (places, max(end, old[1]) if old else end)
        self._exported = len(self._pending)
        return self._exported, rows

    def confirm(self, mark: int) -> None:
        """The first `mark` pending intervals are in history, with their tombstones."""
        for entry in self._pending[:mark]:
            if entry is None:
                continue
            device, _, start, _ = entry
            book = self._open.get(device)
            if book is not None:
                book.pop(start, None)
                if not book:
                    del self._open[device]
        del self._pending[:mark]
        self._exported = max(0, self._exported - mark)

    def _tombstones(self, device: int, start: int, end: int) -> list[Piece]:
        old = self._open.get(device, {}).get(start)
        if old is None:
            return []
        places, furthest = old
        first = day_of(max(end, start + 1) - 1) + DAY_MS if end > start else day_of(start)
        return [
            (device, day, place, start, 0, 0)
            for day in range(first, furthest, DAY_MS)
            for place in places
        ]

    def snapshot(self) -> dict:
        return _rows([e for e in self._pending if e is not None], self._open)

    @classmethod
    def restore(cls, state: dict | None) -> "PresenceHistory":
        h = cls()
        if state:
            h.absorb(state)
        return h

    def extract(self, devices: Iterable[int]) -> dict:
        """Remove the devices' pending intervals and open books and return them, rows as in
        `snapshot`. Confirming a mark handed out before still confirms only what it sent."""
        leaving = set(devices)
        kept: list[Pending | None] = []
        moved: list[Pending] = []
        for i, entry in enumerate(self._pending):
            if entry is None or entry[0] not in leaving:
                kept.append(entry)
                continue
            moved.append(entry)
            if i < self._exported:
                kept.append(None)
        self._pending = kept
        books = {dev: self._open.pop(dev) for dev in leaving if dev in self._open}
        return _rows(moved, books)

    def absorb(self, state: dict, devices: Container[int] | None = None) -> None:
        """Add the `devices` of an `extract` (or `snapshot`) state, their pending intervals at
        the end; by default those with nothing pending nor open here, so absorbing the same
        state twice changes nothing."""
        if devices is None:
            held = {e[0] for e in self._pending if e is not None} | self._open.keys()
            incoming = {r[0] for r in state["pending"]} | {r[0] for r in state["open"]}
            devices = incoming - held
        for d, p, s, e in state["pending"]:
            if d in devices:
                self._pending.append((d, tuple(p), s, e))
        for d, s, p, e in state["open"]:
            if d in devices:
                self._open.setdefault(d, {})[s] = (tuple(p), e)


def _rows(pending: Iterable[Pending], books: dict[int, dict[int, tuple[tuple, int]]]) -> dict:
    """The plain state of some pending intervals and open books (snapshot and handoff)."""
    return {
        "pending": [[d, list(p), s, e] for d, p, s, e in pending],
        "open": [[d, s, list(p), e] for d, book in books.items() for s, (p, e) in book.items()],
    }
