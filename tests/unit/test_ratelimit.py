"""Token buckets per credential."""

import pytest

from engine.ratelimit import RateLimiter


def test_a_device_gets_its_rate_and_a_burst_and_waits_after():
    limiter = RateLimiter(rate=10, burst_s=60)
    assert limiter.admit("d", 600, now=0) == 0  # a minute's worth at once: the burst
    wait = limiter.admit("d", 1, now=0)
    assert wait == pytest.approx(0.1)  # one item's worth of refill
    assert limiter.admit("d", 1, now=100) == 0
    assert limiter.admit("other", 5, now=100) == 0  # buckets are per credential


def test_a_batch_larger_than_the_bucket_is_let_in_once_and_paid_off_after():
    limiter = RateLimiter(rate=10, burst_s=1)
    assert limiter.admit("d", 50, now=0) == 0
    assert limiter.admit("d", 1, now=0) == pytest.approx(4.1)  # owes 40, plus one token
    assert limiter.admit("d", 1, now=4_000) > 0
    assert limiter.admit("d", 1, now=4_200) == 0


def test_zero_is_off_and_memory_follows_the_credentials_in_use():
    assert RateLimiter(rate=0).admit("k", 10**9, now=0) == 0
    limiter = RateLimiter(rate=10, burst_s=1)
    for i in range(10_000):
        limiter.admit(f"d{i}", 1, now=i * 10)
    assert len(limiter) < 500  # buckets idle for a second are full again, and forgotten
