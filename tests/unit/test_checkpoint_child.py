"""The forked checkpoint child is bounded in time: a stalled one is killed, not waited for."""

import time

from state.checkpoint import ForkedCheckpointer


def _stalled() -> dict:
    time.sleep(60)
    return {}


def test_a_stalled_child_is_killed_at_its_timeout_and_covers_nothing():
    # the Redis address is never reached: the child stalls in its snapshot
    cp = ForkedCheckpointer("redis://127.0.0.1:1/0", "user-0", timeout_s=0.5)
    assert cp.start(_stalled, "5-0")
    assert cp.busy and cp.poll() is None
    assert not cp.start(_stalled, "6-0")  # one child at a time
    assert cp.poll(block=True) is None  # returns at the timeout, with nothing covered
    assert not cp.busy and cp.killed == 1
    assert cp.start(_stalled, "6-0")  # the next checkpoint starts over
    cp.poll(block=True)


def test_a_child_that_cannot_reach_redis_fails_without_covering_its_entry():
    cp = ForkedCheckpointer("redis://127.0.0.1:1/0", "user-0", timeout_s=10)
    assert cp.start(lambda: {"devices": []}, "5-0")
    assert cp.poll(block=True) is None
    assert cp.killed == 0
