"""Checkpoints written by a forked child (as Redis BGSAVE does): ingest stalls only to fork."""

import logging
import os
import signal
import time
from collections.abc import Callable

from state import redis_client
from state.wal import Wal

log = logging.getLogger(__name__)

CHILD_TIMEOUT_S = 60.0  # a child still running after this is killed; the next one starts over
_REFUSED = 3  # the child's exit code when a later checkpoint was already stored


class ForkedCheckpointer:
    """`start` forks; the child serializes the (copy-on-write) state as of `wal_id`, stores it
    and trims the WAL, then exits without running any of the parent's exit handlers. `poll`
    reaps the child and says which WAL id is now covered. One child at a time, and none for
    longer than `timeout_s`: a child stalled (on a paused Redis, a stopped process) is killed,
    and cannot store its state later because the child also has an alarm set to that time and
    the store is a compare-and-set on the WAL id."""

    def __init__(self, redis_url: str, shard: str, timeout_s: float = CHILD_TIMEOUT_S):
        self.redis_url = redis_url
        self.shard = shard
        self.timeout_s = timeout_s
        self._child: tuple[int, str, float] | None = None
        self.killed = 0  # children killed for their timeout, since start

    @property
    def busy(self) -> bool:
        return self._child is not None

    def start(self, snapshot: Callable[[], dict], wal_id: str, archiving: bool = False) -> bool:
        if self._child is not None:
            return False
        pid = os.fork()
        if pid == 0:  # the child: touch nothing but the state and a new Redis connection
            code = 1
            try:
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.alarm(max(1, int(self.timeout_s)))
                stored = Wal(redis_client.connect(self.redis_url), self.shard).save_checkpoint(
                    snapshot(), wal_id, archiving
                )
                code = 0 if stored else _REFUSED
            finally:
                os._exit(code)
        self._child = (pid, wal_id, time.monotonic() + self.timeout_s)
        return True

    def poll(self, block: bool = False) -> str | None:
        """The WAL id a finished child checkpointed, or None (still running, failed, refused
        or killed for its timeout). `block`: wait for the child, up to its timeout."""
        if self._child is None:
            return None
        pid, wal_id, deadline = self._child
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done != 0:
                break
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                self._child = None
                self.killed += 1
                log.error(
                    "%s: checkpoint child ran over %.0f s; killed", self.shard, self.timeout_s
                )
                return None
            if not block:
                return None
            time.sleep(0.01)
        self._child = None
        code = os.waitstatus_to_exitcode(status)
        if code == _REFUSED:
            log.warning(
                "%s: a later checkpoint is stored; this one (%s) was dropped", self.shard, wal_id
            )
            return None
        if code != 0:
            log.warning("%s: checkpoint child failed (status %d)", self.shard, status)
            return None
        return wal_id
