"""Noticing a Redis that lost its data: flushed, or started again without its files.

A Redis restarted from its AOF keeps everything (but at most the last second with
`appendfsync everysec`); one flushed or replaced comes back empty, with the logs, checkpoints and
archive marks gone. Each deployment's Redis holds a random instance id (`occ:instance`) written
once; every shard remembers the id it started with and checks it every few seconds. When it is
gone, the shard says so loudly, claims a new id and writes its checkpoint again from memory at
once, so that live state and presence history stay exact; only raw pings that were in the lost
log and not yet archived are missing from the raw archive.
"""

import logging
import secrets
import time

import redis

log = logging.getLogger(__name__)

INSTANCE = "occ:instance"
CHECK_EVERY_S = 2.0


def claim(client: redis.Redis) -> str:
    """The Redis's instance id, written now if it has none."""
    client.set(INSTANCE, secrets.token_hex(8), nx=True)
    return client.get(INSTANCE).decode()


class InstanceWatch:
    """`lost()` is True once for each loss of the Redis's data since the last call; `due()`
    says when to call it (every CHECK_EVERY_S)."""

    def __init__(self, client: redis.Redis, process: str, on_lost=lambda: None):
        self.client = client
        self.process = process
        self.on_lost = on_lost  # e.g. a metric counter's add
        self.id = claim(client)
        self._checked = time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self._checked < CHECK_EVERY_S:
            return False
        self._checked = time.monotonic()
        return True

    def lost(self) -> bool:
        current = self.client.get(INSTANCE)
        if current is not None and current.decode() == self.id:
            return False
        old, self.id = self.id, claim(self.client)
        log.error(
            "%s: Redis lost its data (instance %s, now %s): flushed or started without its "
            "files; writing state again from memory",
            self.process,
            old,
            self.id,
        )
        self.on_lost()
        return True
