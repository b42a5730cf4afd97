"""Live counts per place, materialised from the devices' memberships."""

from collections.abc import Callable, Iterable, Iterator

Place = int | str


class PlaceCounts:
    """Which devices are in which places of one shard, and the count per place.

    `update(device, places, seq)` states the device's full membership among this shard's
    places; an update with a lower `seq` than the one recorded is stale and ignored, the same
    update twice is a no-op (one seq, one membership), so updates may arrive late, twice or
    out of order. A device that
    left keeps a tombstone (its seq, no places) so that a stale "enter" cannot bring it back.
    """

    def __init__(self) -> None:
        self._members: dict[int, tuple[int, tuple[Place, ...]]] = {}
        self._counts: dict[Place, int] = {}

    def update(self, device: int, places: tuple[Place, ...], seq: int) -> None:
        old = self._members.get(device)
        if old is not None:
            if seq <= old[0]:
                return
            self._discount(old[1])
        self._members[device] = (seq, places)
        for place in places:
            self._counts[place] = self._counts.get(place, 0) + 1

    def update_many(self, updates: Iterable[tuple[int, tuple[Place, ...], int]]) -> None:
        for device, places, seq in updates:
            self.update(device, places, seq)

    def count(self, place: Place) -> int:
        return self._counts.get(place, 0)

    def counts(self) -> dict[Place, int]:
        return self._counts

    def members(self) -> Iterator[tuple[int, tuple[Place, ...], int]]:
        """Devices present in at least one place here."""
        for device, (seq, places) in self._members.items():
            if places:
                yield device, places, seq

    def __len__(self) -> int:
        return sum(1 for _ in self.members())

    def replace(self, updates: Iterable[tuple[int, tuple[Place, ...], int]]) -> None:
        """Start again from a full listing (a rebuild from the user shards)."""
        self._members.clear()
        self._counts.clear()
        self.update_many(updates)

    def replace_where(
        self, owned: Callable[[int], bool], updates: Iterable[tuple[int, tuple[Place, ...], int]]
    ) -> None:
        """Forget every device for which `owned(device)` holds, then apply `updates`: one
        sender's full listing after that sender restarted."""
        for device in [d for d in self._members if owned(d)]:
            self._discount(self._members.pop(device)[1])
        self.update_many(updates)

    def _discount(self, places: tuple[Place, ...]) -> None:
        for place in places:
            n = self._counts[place] - 1
            if n:
                self._counts[place] = n
            else:
                del self._counts[place]

    def snapshot(self) -> dict:
        return {"members": [[d, list(p), s] for d, (s, p) in self._members.items()]}

    @classmethod
    def restore(cls, state: dict) -> "PlaceCounts":
        counts = cls()
        counts.update_many((d, tuple(p), s) for d, p, s in state["members"])
        return counts
