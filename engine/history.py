"""Presence for the history store: pieces of presence intervals that history can merge exactly.

A piece is one presence interval's part in one place on one UTC day, keyed by
(device, day, place, start) where `start` is the interval's start, with its bounds [lo, hi).
Settled intervals are final. A device's open interval is exported as it stands and may later
end earlier (a newer ping cuts it), so history keeps the latest version of each piece, and the
days an interval no longer reaches get a tombstone (lo = hi = 0). From the pieces, history
derives minute aggregates (devices whose piece overlaps the minute, at any coarser resolution)
and dwell per day (the sum of piece lengths), exactly, however late a ping arrives.
"""

from collections.abc import Iterable

from engine.timeutil import DAY_MS, day_of

Place = int | str
Piece = tuple[int, int, Place, int, int, int]  # device, day, place, start, lo, hi


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
    furthest end each open interval was exported with (to bury the days it no longer reaches)."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, tuple, int, int]] = []  # device, places, start, end
        # device -> {interval start: (places, furthest end exported)}
        self._open: dict[int, dict[int, tuple[tuple, int]]] = {}

    def settled(self, device: int, places: tuple, start: int, end: int) -> None:
        self._pending.append((device, places, start, end))

    def export(self, unsettled: Iterable[tuple[int, tuple, int, int]]) -> tuple[int, list[Piece]]:
        """(mark, pieces): the pending settled intervals and the open ones as of now, with
        tombstones for days an interval exported earlier no longer reaches. Exporting again
        before `confirm(mark)` sends the same pieces (or newer ones): history keeps the latest."""
        rows: list[Piece] = []
        for device, places, start, end in self._pending:
            rows += pieces(device, places, start, end)
            rows += self._tombstones(device, start, end)
        for device, places, start, end in unsettled:
            rows += pieces(device, places, start, end)
            rows += self._tombstones(device, start, end)
            book = self._open.setdefault(device, {})
            old = book.get(start)
            book[start] = (places, max(end, old[1]) if old else end)
        return len(self._pending), rows

    def confirm(self, mark: int) -> None:
        """The first `mark` pending intervals are in history, with their tombstones."""
        for device, _, start, _ in self._pending[:mark]:
            book = self._open.get(device)
            if book is not None:
                book.pop(start, None)
                if not book:
                    del self._open[device]
        del self._pending[:mark]

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
        return {
            "pending": [[d, list(p), s, e] for d, p, s, e in self._pending],
            "open": [
                [d, s, list(p), e] for d, book in self._open.items() for s, (p, e) in book.items()
            ],
        }

    @classmethod
    def restore(cls, state: dict | None) -> "PresenceHistory":
        h = cls()
        if state:
            h._pending = [(d, tuple(p), s, e) for d, p, s, e in state["pending"]]
            for d, s, p, e in state["open"]:
                h._open.setdefault(d, {})[s] = (tuple(p), e)
        return h
