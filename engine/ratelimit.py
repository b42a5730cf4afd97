"""Token buckets per credential: how many items a device or a key may send, on average and in a
burst, with memory for the credentials in use only."""

from engine.recent import RecentCache

BURST_S = 60.0  # a bucket holds this many seconds of the rate: a device back online catches up


class RateLimiter:
    """`admit(who, n, now)` takes `n` items from `who`'s bucket. A call is let in while the bucket
    is not empty, even if it takes more than is left (a batch is never refused for its size
    alone); the bucket then owes the difference, and the next calls wait until it is paid off.
    Returns 0 when let in, else the seconds to wait. A rate of 0 lets everything in."""

    def __init__(self, rate: float, burst_s: float = BURST_S, max_credentials: int = 100_000):
        self.rate = rate
        self.capacity = max(1.0, rate * burst_s)
        # an idle bucket is full again after `burst_s`: forgetting it then changes nothing
        self._buckets: RecentCache[str, list[float]] = RecentCache(
            int(burst_s * 1000), max_credentials
        )

    def admit(self, who: str, n: int, now: int) -> float:
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(who, now)
        if bucket is None:
            bucket = [self.capacity, now]
            self._buckets.put(who, bucket, now)
        tokens, last = bucket
        tokens = min(self.capacity, tokens + (now - last) * self.rate / 1000)
        bucket[1] = now
        if tokens <= 0:
            bucket[0] = tokens
            return (1 - tokens) / self.rate
        bucket[0] = tokens - n
        return 0.0

    def __len__(self) -> int:
        return len(self._buckets)
