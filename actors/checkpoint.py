"""Checkpoints written by a forked child (as Redis BGSAVE does): ingest stalls only to fork."""

import logging
import os
from collections.abc import Callable

import redis

from actors.wal import Wal

log = logging.getLogger(__name__)


class ForkedCheckpointer:
    """`start` forks; the child serializes the (copy-on-write) state as of `wal_id`, stores it
    and trims the WAL, then exits without running any of the parent's exit handlers. `poll`
    reaps the child and says which WAL id is now covered. One child at a time."""

    def __init__(self, redis_url: str, shard: str):
        self.redis_url = redis_url
        self.shard = shard
        self._child: tuple[int, str] | None = None

    @property
    def busy(self) -> bool:
        return self._child is not None

    def start(self, snapshot: Callable[[], dict], wal_id: str) -> bool:
        if self._child is not None:
            return False
        pid = os.fork()
        if pid == 0:  # the child: touch nothing but the state and a new Redis connection
            code = 1
            try:
                Wal(redis.Redis.from_url(self.redis_url), self.shard).save_checkpoint(
                    snapshot(), wal_id
                )
                code = 0
            finally:
                os._exit(code)
        self._child = (pid, wal_id)
        return True

    def poll(self, block: bool = False) -> str | None:
        """The WAL id a finished child checkpointed, or None (still running, or it failed)."""
        if self._child is None:
            return None
        pid, wal_id = self._child
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        if done == 0:
            return None
        self._child = None
        if os.waitstatus_to_exitcode(status) != 0:
            log.warning("%s: checkpoint child failed (status %d)", self.shard, status)
            return None
        return wal_id
