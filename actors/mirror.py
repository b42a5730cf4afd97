"""The small tables only Redis holds, kept in memory too, and written back when Redis loses
its data: API keys (their hashes), signing key ids and token revocations, the space, doorway
and sensor definitions, webhook definitions, and the forgets under way (state/forgetting.py).

The history actor refreshes the copy every round, reading it in one transaction with the Redis
instance id (state/instance.py); when the id is gone or changed, Redis was flushed or started
without its files, and the copy is written back instead (fields and entries missing, never
over what was written since). A key revoked or a definition deleted within one round before a
loss comes back with it.
"""

import logging

import redis

from access import revocation
from access.auth import KEYS
from access.tokens import REVOKED, REVOKED_DEVICES, SIGNING
from state.forgetting import JOBS
from state.hooks import HOOKS
from state.instance import INSTANCE, InstanceWatch
from state.metadata import (
    DELETED_DOORWAYS,
    DELETED_SPACES,
    DOOR_SPACES,
    DOORWAYS,
    INSTALLS,
    RESETS,
    SPACES,
)

log = logging.getLogger(__name__)

HASHES = (
    *(KEYS, SIGNING, REVOKED, REVOKED_DEVICES, SPACES, DOOR_SPACES, DOORWAYS, JOBS, HOOKS),
    *(DELETED_SPACES, DELETED_DOORWAYS),
)
LISTS = (INSTALLS, RESETS)


class StateMirror:
    def __init__(self, client: redis.Redis, process: str, on_lost=lambda: None):
        self.client = client
        self.watch = InstanceWatch(client, process, on_lost)
        self.tables: dict[str, dict | list] = {}

    def refresh(self) -> bool:
        """Copy the tables; or, if Redis lost its data since the last call, write the copy
        back. True when it did."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(INSTANCE)
        for name in HASHES:
            pipe.hgetall(name)
        for name in LISTS:
            pipe.lrange(name, 0, -1)
        instance, *tables = pipe.execute()
        if instance is not None and instance.decode() == self.watch.id:
            self.tables = dict(zip(HASHES + LISTS, tables, strict=True))
            return False
        self.watch.lost()  # logged and counted; the new id is claimed
        self._restore()
        return True

    def _restore(self) -> None:
        pipe = self.client.pipeline(transaction=True)
        restored = 0
        for name in HASHES:
            for field, value in self.tables.get(name, {}).items():
                pipe.hsetnx(name, field, value)
                restored += 1
        for name in LISTS:
            current = self.client.lrange(name, 0, -1)
            missing = [v for v in self.tables.get(name, []) if v not in current]
            if missing:  # before anything written since, in their order
                pipe.lpush(name, *reversed(missing))
                restored += len(missing)
        pipe.execute()
        revocation.bump(self.client)  # every process reloads the credentials written back
        log.error("Redis lost its data: %d keys and definitions written back", restored)
