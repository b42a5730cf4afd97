"""Live counts per place, materialised from the devices' memberships."""

from collections.abc import Callable, Iterable, Iterator

Place = int | str
TOMBSTONE_GRACE_MS = 60_000  # far longer than any membership update takes to arrive


class PlaceCounts:
    """Which devices are in which places of one shard, and the count per place.

    `update(device, places, seq)` states the device's full membership among this shard's
    places; an update with a lower `seq` than the one recorded is stale and ignored, the same
    update twice is a no-op (one seq, one membership), so updates may arrive late, twice or
    out of order. A device that left keeps a tombstone (its seq, no places) so that a stale
    "enter" cannot bring it back; tombstones go after one to two `grace` periods (`age`), long
    after any update in flight has arrived, so that memory holds the devices present and the
    recently departed only.
    """

    def __init__(self, grace_ms: int = TOMBSTONE_GRACE_MS) -> None:
        self._members: dict[int, tuple[int, tuple[Place, ...]]] = {}
        self._counts: dict[Place, int] = {}
        self._tombs: dict[int, int] = {}  # device -> seq of its leaving, this generation
        self._old_tombs: dict[int, int] = {}  # the previous generation
        self._grace_ms = grace_ms
        self._aged = 0  # when the generations last turned

    def update(self, device: int, places: tuple[Place, ...], seq: int) -> None:
        old = self._members.get(device)
        if old is not None:
            if seq <= old[0]:
                return
            self._discount(old[1])
        elif self._tombs or self._old_tombs:
            left = self._tombs.get(device)
            if left is None:
                left = self._old_tombs.get(device)
            if left is not None:
                if seq <= left:
                    return
                self._tombs.pop(device, None)  # newer than its leaving: the member replaces it
                self._old_tombs.pop(device, None)
        if places:
            self._members[device] = (seq, places)
            for place in places:
                self._counts[place] = self._counts.get(place, 0) + 1
        else:
            self._members.pop(device, None)
            self._old_tombs.pop(device, None)
            self._tombs[device] = seq

    def update_many(self, updates: Iterable[tuple[int, tuple[Place, ...], int]]) -> None:
        for device, places, seq in updates:
            self.update(device, places, seq)

    def age(self, now: int) -> None:
        """Turn the tombstone generations when a grace period has passed since the last turn:
        a tombstone lives between one and two grace periods."""
        if now - self._aged >= self._grace_ms:
            self._old_tombs, self._tombs = self._tombs, {}
            self._aged = now

    def count(self, place: Place) -> int:
        return self._counts.get(place, 0)

    def counts(self) -> dict[Place, int]:
        return self._counts

    def members(self) -> Iterator[tuple[int, tuple[Place, ...], int]]:
        """Devices present in at least one place here."""
        for device, (seq, places) in self._members.items():
            yield device, places, seq

    def __len__(self) -> int:
        return len(self._members)

    @property
    def tombstones(self) -> int:
        return len(self._tombs) + len(self._old_tombs)

    def replace(self, updates: Iterable[tuple[int, tuple[Place, ...], int]]) -> None:
        """Start again from a full listing (a rebuild from the user shards)."""
        self._members.clear()
        self._counts.clear()
        self._tombs.clear()
        self._old_tombs.clear()
        self.update_many(updates)

    def replace_where(
        self, owned: Callable[[int], bool], updates: Iterable[tuple[int, tuple[Place, ...], int]]
    ) -> None:
        """Forget every device for which `owned(device)` holds, then apply `updates`: one
        sender's full listing after that sender restarted."""
        for device in [d for d in self._members if owned(d)]:
            self._discount(self._members.pop(device)[1])
        for tombs in (self._tombs, self._old_tombs):
            for device in [d for d in tombs if owned(d)]:
                del tombs[device]
        self.update_many(updates)

    def _discount(self, places: tuple[Place, ...]) -> None:
        for place in places:
            n = self._counts[place] - 1
            if n:
                self._counts[place] = n
            else:
                del self._counts[place]

    def snapshot(self) -> dict:
        tombs = {**self._old_tombs, **self._tombs}  # a device is in one of the three at most
        return {
            "members": [[d, list(p), s] for d, (s, p) in self._members.items()]
            + [[d, [], s] for d, s in tombs.items()]
        }

    @classmethod
    def restore(cls, state: dict) -> "PlaceCounts":
        counts = cls()
        counts.update_many((d, tuple(p), s) for d, p, s in state["members"])
        return counts
