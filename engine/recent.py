"""A cache of what was used recently: bounded by time and by size, O(1) per look-up."""

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RecentCache(Generic[K, V]):
    """Two generations of entries: a hit in the older one moves to the newer; the older is
    dropped when the newer is `ttl_ms` old or holds `max_size` entries. An entry unused for two
    turns is gone, so memory follows what is in use, not everything ever looked up. The clock
    is the caller's (`now` in ms). Values are never None."""

    def __init__(self, ttl_ms: int, max_size: int):
        self.ttl_ms = ttl_ms
        self.max_size = max_size
        self._new: dict[K, V] = {}
        self._old: dict[K, V] = {}
        self._turned = 0

    def get(self, key: K, now: int) -> V | None:
        value = self._new.get(key)
        if value is None:
            value = self._old.pop(key, None)
            if value is not None:
                self.put(key, value, now)
        return value

    def put(self, key: K, value: V, now: int) -> None:
        if now - self._turned >= self.ttl_ms or len(self._new) >= self.max_size:
            self._old, self._new = self._new, {}
            self._turned = now
        self._new[key] = value

    def drop_values(self, values: set[V]) -> int:
        """Drop every entry whose value is in `values` (a scan: for rare events); how many."""
        dropped = 0
        for generation in (self._new, self._old):
            for key in [k for k, v in generation.items() if v in values]:
                del generation[key]
                dropped += 1
        return dropped

    def items(self) -> list[tuple[K, V]]:
        """Every entry, without refreshing any."""
        return [*self._new.items(), *((k, v) for k, v in self._old.items() if k not in self._new)]

    def clear(self) -> None:
        self._new, self._old = {}, {}

    def __len__(self) -> int:
        return len(self._new) + len(self._old)
