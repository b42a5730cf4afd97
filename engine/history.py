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
    """The pieces of the interval [start, end) in each of `places`, one per UTC day."""
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

    A mark counts pending intervals from the front, and names its export. Devices handed to
    another shard leave a placeholder where a mark handed out may count them, and absorbed ones
    join at the end, so a mark confirms exactly what its export sent. Snapshots leave the
    placeholders out: marks do not carry over to a restored history.

    An open interval confirmed in history as it stands is not exported again until it changes
    (an expired device's last stay, say), so the rows of an export grow with the devices
    present, not with every device ever seen; `in_history` tells when a device owes nothing.
    """

    def __init__(self) -> None:
        self._pending: list[Pending | None] = []  # None: handed off after being exported
        self._exported = 0  # pending intervals the marks handed out may count
        # device -> {interval start: (places, furthest end exported)}
        self._open: dict[int, dict[int, tuple[tuple, int]]] = {}
        self._export = 0  # the latest export's number
        # open intervals the latest export sent, (device, start) -> (places, end), and those
        # history has as they are now
        self._sent: dict[tuple[int, int], tuple[tuple, int]] = {}
        self._confirmed: dict[tuple[int, int], tuple[tuple, int]] = {}

    def settled(self, device: int, places: tuple, start: int, end: int) -> None:
        self._pending.append((device, places, start, end))

    def export(
        self, unsettled: Iterable[tuple[int, tuple, int, int]], now: int | None = None
    ) -> tuple[tuple[int, int], list[Piece]]:
        """(mark, pieces): the pending settled intervals and the open ones as of `now`, with
        tombstones for days an interval exported earlier no longer reaches. Exporting again
        before `confirm(mark)` sends the same pieces (or newer ones): history keeps the latest.
        An open interval that ended before `now` (its device's presence expired) is not sent
        again once confirmed, until it changes."""
        mark, rows = self.begin_export()
        self.export_open(unsettled, now, rows)
        return mark, rows

    def begin_export(self) -> tuple[tuple[int, int], list[Piece]]:
        """`export` in steps: (mark, pieces of the pending settled intervals), then
        `export_open` with the open intervals, in as many parts as wanted, adding to the same
        pieces. The mark counts the intervals pending now, whatever settles in between; a
        device the open parts do not reach (it came, or left, meanwhile) is exported next time.
        """
        rows: list[Piece] = []
        for entry in self._pending:
            if entry is not None:
                device, places, start, end = entry
                rows += pieces(device, places, start, end)
                rows += self._tombstones(device, start, end)
        self._export += 1
        self._sent = {}
        self._exported = len(self._pending)
        return (self._exported, self._export), rows

    def export_open(
        self, unsettled: Iterable[tuple[int, tuple, int, int]], now: int | None, rows: list[Piece]
    ) -> None:
        """Add the pieces of open intervals to an export's `rows` (`begin_export`)."""
        books, confirmed = self._open, self._confirmed
        for device, places, start, end in unsettled:
            ended = now is not None and end < now  # else it still grows: sent each time
            if (ended or now is None) and confirmed.get((device, start)) == (places, end):
                continue  # only an interval that ended can be confirmed as it stands
            book = books.get(device)
            old = book.get(start) if book is not None else None
            day = start - start % DAY_MS
            if start < end <= day + DAY_MS:  # one day (most): its pieces at once
                rows += [(device, day, place, start, start, end) for place in places]
            else:
                rows += pieces(device, places, start, end)
            if old is None:
                if book is None:
                    book = books[device] = {}
                book[start] = (places, end)
            else:
                rows += self._tombstones(device, start, end)
                book[start] = (places, max(end, old[1]))
            if ended:
                self._sent[(device, start)] = (places, end)

    def confirm(self, mark: tuple[int, int]) -> None:
        """What the export that handed out `mark` sent is in history: its first pending
        intervals with their tombstones, and (for the latest export) its open intervals."""
        mark, export = mark
        if export == self._export:
            for key, sent in self._sent.items():
                if key[0] in self._open:  # not handed off or evicted meanwhile
                    self._confirmed[key] = sent
            self._sent = {}
        for entry in self._pending[:mark]:
            if entry is None:
                continue
            device, _, start, _ = entry
            book = self._open.get(device)
            if book is not None:
                book.pop(start, None)
                self._confirmed.pop((device, start), None)
                if not book:
                    del self._open[device]
        del self._pending[:mark]
        self._exported = max(0, self._exported - mark)

    def owing(self) -> set[int]:
        """Devices with settled intervals not yet confirmed."""
        return {e[0] for e in self._pending if e is not None}

    def oldest_owed(self) -> int | None:
        """The earliest start among settled intervals not yet confirmed."""
        return min((e[2] for e in self._pending if e is not None), default=None)

    def in_history(self, device: int, places: tuple, start: int, end: int) -> bool:
        """Whether the device's open interval [start, end) in `places` is confirmed in history
        as it is."""
        return self._confirmed.get((device, start)) == (places, end)

    def forget(self, device: int) -> None:
        """An evicted device: nothing pending (the caller checked), its books go."""
        for start in self._open.pop(device, {}):
            self._confirmed.pop((device, start), None)

    def rekey(self, device: int, fresh: int) -> None:
        """What the device owes history is owed as `fresh` from now on (a forgotten device:
        its presence stays, under a key nothing links to it). In place, so marks handed out
        still count the same intervals; pieces already written under the old key are history's
        to re-key (`HistoryStore.forget_device`)."""
        self._pending = [
            (fresh, *e[1:]) if e is not None and e[0] == device else e for e in self._pending
        ]
        if device in self._open:
            self._open[fresh] = self._open.pop(device)
        for books in (self._sent, self._confirmed):
            for key in [k for k in books if k[0] == device]:
                books[(fresh, key[1])] = books.pop(key)

    def reopen(self, device: int, places: tuple, start: int, end: int) -> None:
        """An evicted device is back: its last stay [start, end), in history as it was, is open
        again (a newer ping may have cut it, and the days it no longer reaches get buried)."""
        self._open.setdefault(device, {})[start] = (places, end)

    def owed(self, device: int, day: int, unsettled: Iterable[tuple[int, tuple, int, int]]):
        """The device's pieces on `day` that history does not have as they are now: its
        pending intervals and its open ones (with their tombstones). Laid over what history
        holds, piece by piece, they give the device's presence as live state knows it."""
        rows: list[Piece] = []
        for entry in self._pending:
            if entry is not None and entry[0] == device:
                _, places, start, end = entry
                rows += pieces(device, places, start, end)
                rows += self._tombstones(device, start, end)
        for _, places, start, end in unsettled:
            rows += pieces(device, places, start, end)
            rows += self._tombstones(device, start, end)
        return [r for r in rows if r[1] == day]

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
        for device, book in books.items():
            for start in book:
                self._confirmed.pop((device, start), None)
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


def dwell_of(stored: Iterable[tuple[Place, int, int, int]], owed: Iterable[Piece]) -> dict:
    """{"cells": {cell: ms}, "spaces": {space: ms}} of one device and day, from the pieces
    history holds, `(place, start, lo, hi)`, with the `owed` ones laid over them (the latest
    version of a piece wins, as in history)."""
    latest = {(place, start): (lo, hi) for place, start, lo, hi in stored}
    for _, _, place, start, lo, hi in owed:
        latest[(place, start)] = (lo, hi)
    out: dict[str, dict] = {"cells": {}, "spaces": {}}
    for (place, _), (lo, hi) in latest.items():
        if hi > lo:
            side = out["spaces" if isinstance(place, str) else "cells"]
            side[place] = side.get(place, 0) + hi - lo
    return out
