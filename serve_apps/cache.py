"""Live answer bodies shared by every request that asks for the same one within CACHE_S."""

import asyncio
import time
from collections.abc import Awaitable, Callable

# Live heatmap and top-N bodies are shared for CACHE_S and, while a refresh runs, answered up to
# STALE_S old: at 50 req/s a heatmap is computed about five times a second instead of fifty, and
# a ping still shows well within the 1 s freshness target (docs/design.md).
CACHE_S = 0.2
STALE_S = 0.6
MAX_KEYS = 1_000  # beyond it the cache starts over (keys carry a bbox: clients choose them)


class AnswerCache:
    """One replica's bodies by key. Concurrent requests for a key await one computation; past
    `fresh_s` and up to `stale_s`, the last body is answered at once while one refresh runs in
    the background, so a steady poller never waits for the fan-out (its `as_of` says how old it
    is). A failed computation is not kept: the next request computes it again."""

    def __init__(
        self,
        fresh_s: float = CACHE_S,
        stale_s: float = STALE_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.fresh_s, self.stale_s, self.clock = fresh_s, stale_s, clock
        self._bodies: dict[tuple, tuple[float, asyncio.Future]] = {}
        self._refreshing: dict[tuple, asyncio.Future] = {}

    def __len__(self) -> int:
        return len(self._bodies)

    async def shared(self, key: tuple, make: Callable[[], Awaitable[bytes]]) -> bytes:
        """The body `make()` computes for `key`, or the one computed within `fresh_s`."""
        now = self.clock()
        entry = self._bodies.get(key)
        if entry is not None:
            started, future = entry
            if now - started < self.fresh_s:
                return await future
            if now - started < self.stale_s and future.done() and future.exception() is None:
                if key not in self._refreshing:
                    self._refreshing[key] = asyncio.ensure_future(self._refresh(key, make))
                return future.result()
        if len(self._bodies) > MAX_KEYS:
            self._bodies.clear()
        future = asyncio.ensure_future(make())
        self._bodies[key] = (now, future)
        try:
            return await future
        except Exception:
            if self._bodies.get(key, (None, None))[1] is future:
                del self._bodies[key]
            raise

    async def _refresh(self, key: tuple, make: Callable[[], Awaitable[bytes]]) -> None:
        started = self.clock()
        try:
            body = await make()
        except Exception:  # the next request computes it again and sees the error
            self._bodies.pop(key, None)
        else:
            done = asyncio.get_running_loop().create_future()
            done.set_result(body)
            self._bodies[key] = (started, done)
        finally:
            self._refreshing.pop(key, None)
