"""Live counts per place, materialised from the devices' memberships."""

from collections.abc import Iterable, Iterator

Place = int | str


class PlaceCounts:
    """Which devices are in which places of one shard, and the count per place.

    `update(device, places, seq)` states the device's full membership among this shard's
    places; an update with a lower `seq` than the one recorded is stale and ignored, the same
    update twice is a no-op. Senders keep per-device order (one channel per shard), so a
    device that left (empty membership) can be forgotten without a tombstone.
    """

    def __init__(self) -> None:
        self._members: dict[int, tuple[int, tuple[Place, ...]]] = {}
        self._counts: dict[Place, int] = {}

    def update(self, device: int, places: tuple[Place, ...], seq: int) -> None:
        old = self._members.get(device)
        if old is not None:
            if seq < old[0] or (seq == old[0] and places == old[1]):
                return
            for place in old[1]:
                n = self._counts[place] - 1
                if n:
                    self._counts[place] = n
                else:
                    del self._counts[place]
        if places:
            self._members[device] = (seq, places)
            for place in places:
                self._counts[place] = self._counts.get(place, 0) + 1
        elif old is not None:
            del self._members[device]

    def update_many(self, updates: Iterable[tuple[int, tuple[Place, ...], int]]) -> None:
        for device, places, seq in updates:
            self.update(device, places, seq)

    def count(self, place: Place) -> int:
        return self._counts.get(place, 0)

    def counts(self) -> dict[Place, int]:
        return self._counts

    def members(self) -> Iterator[tuple[int, tuple[Place, ...], int]]:
        for device, (seq, places) in self._members.items():
            yield device, places, seq

    def __len__(self) -> int:
        return len(self._members)

    def replace(self, updates: Iterable[tuple[int, tuple[Place, ...], int]]) -> None:
        """Start again from a full listing (a rebuild from the user shards)."""
        self._members.clear()
        self._counts.clear()
        self.update_many(updates)

    def snapshot(self) -> dict:
        return {"members": [[d, list(p), s] for d, (s, p) in self._members.items()]}

    @classmethod
    def restore(cls, state: dict) -> "PlaceCounts":
        counts = cls()
        counts.update_many((d, tuple(p), s) for d, p, s in state["members"])
        return counts
