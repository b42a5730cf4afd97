"""A user shard's enters and exits for webhooks: the shard is the source of truth of its devices'
space memberships, so it writes their events to the outboxes of the hooks that watch the space
(state/hooks.py), right after the moves that make them. Delivery is history's (actors/hooks.py)."""

import logging
import time

import redis

from engine.hooks import membership_id, space_events
from engine.pseudonym import pseudonym_str
from state.hooks import HookStore, outbox

log = logging.getLogger(__name__)

REFRESH_S = 1.0  # how often the shard looks for changed definitions (one GET)


class HookEvents:
    """What hooks watch, reloaded within `REFRESH_S` of a change; `emit` appends the events of
    space moves to their outboxes, each stream capped near `maxlen` entries. Ids are functions
    of (device, space, kind, when), so moves replayed from the log after a restart append the
    same events again under the same ids: receivers drop the copies."""

    def __init__(self, client: redis.Redis, maxlen: int):
        self.store = HookStore(client)
        self.maxlen = maxlen
        self.watch: dict[str, dict[str, tuple[str, ...]]] = {}
        self._version = -1
        self._checked = 0.0
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._checked < REFRESH_S:
            return
        self._checked = time.monotonic()
        try:
            version = self.store.version()
            if version != self._version:
                self.watch, self._version = self.store.watched(), version
        except redis.RedisError as exc:  # the next tick tries again
            log.debug("hooks: %s", exc)

    def emit(self, space_moves: list, now: int) -> int:
        """Append the enters and exits of watched spaces among `space_moves`; how many."""
        if not self.watch or not space_moves:
            return 0
        pipe, n = self.store.client.pipeline(transaction=False), 0
        for kind, space, device, at in space_events(space_moves, frozenset(self.watch)):
            at = at or now
            event = {
                "id": membership_id(device, space, kind, at),
                "event": kind,
                "space": space,
                "ts": at,
                "device": pseudonym_str(device),
            }
            for hook, kinds in self.watch[space].items():
                if kind in kinds:
                    pipe.xadd(outbox(hook), event, maxlen=self.maxlen, approximate=True)
                    n += 1
        if n:
            try:
                pipe.execute()
            except redis.RedisError as exc:  # the ping is logged: only its events are lost
                log.warning("hooks: %d events not written: %s", n, exc)
                return 0
        return n

    def forget(self, device: int) -> None:
        """A forgotten device: its events not yet delivered leave the outboxes."""
        try:
            self.store.drop_device(pseudonym_str(device))
        except redis.RedisError as exc:
            log.warning("hooks: events of a forgotten device not dropped: %s", exc)
