"""Webhooks in Redis: the definitions (durable, like spaces), each hook's delivery state, the
outbox (one bounded stream per hook, read by a consumer group) and the last side of each
watched count (so that a restart neither repeats nor loses a crossing)."""

import redis

from engine.hooks import HookSpec
from state.wal import PREFIX, pack, unpack

HOOKS = f"{PREFIX}:meta:hooks"  # id -> the definition
STATUS = f"{PREFIX}:hooks:status"  # id -> {"failing_since", "disabled", "last_error"}
VERSION = f"{PREFIX}:hooks:version"  # grows with each change: shards reload what they watch
LEVELS = f"{PREFIX}:hooks:levels"  # hook \x1f space \x1f threshold -> b"1" above, b"0" not
OUTBOX = f"{PREFIX}:hooks:outbox:"  # + hook id: the events owed to it
GROUP = "deliver"
FRESH = {"failing_since": 0, "disabled": False, "last_error": ""}


def outbox(hook: str) -> str:
    return OUTBOX + hook


def level_field(hook: str, space: str, threshold: int) -> str:
    return f"{hook}\x1f{space}\x1f{threshold}"


class HookStore:
    """Definitions are validated (engine/hooks.py, and the spaces by the API) before they are
    stored here. A PUT makes a hook enabled again and keeps its outbox; a DELETE drops both."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def put(self, hook: str, spec: HookSpec) -> None:
        pipe = self.client.pipeline()
        pipe.hset(HOOKS, hook, pack(spec.to_dict()))
        pipe.hset(STATUS, hook, pack(FRESH))
        pipe.incr(VERSION)
        pipe.execute()
        try:  # from the start of the stream: what it held while disabled is delivered too
            self.client.xgroup_create(outbox(hook), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def delete(self, hook: str) -> bool:
        fields = [f for f in self.client.hkeys(LEVELS) if f.decode().split("\x1f")[0] == hook]
        pipe = self.client.pipeline()
        pipe.hdel(HOOKS, hook)
        pipe.hdel(STATUS, hook)
        pipe.delete(outbox(hook))
        if fields:
            pipe.hdel(LEVELS, *fields)
        pipe.incr(VERSION)
        return bool(pipe.execute()[0])

    def hooks(self) -> dict[str, HookSpec]:
        return {
            k.decode(): HookSpec.from_dict(unpack(v)) for k, v in self.client.hgetall(HOOKS).items()
        }

    def statuses(self) -> dict[str, dict]:
        return {k.decode(): unpack(v) for k, v in self.client.hgetall(STATUS).items()}

    def set_status(self, hook: str, status: dict) -> None:
        """Only while the hook exists (a DELETE meanwhile wins)."""
        if self.client.hexists(HOOKS, hook):
            self.client.hset(STATUS, hook, pack(status))

    def version(self) -> int:
        return int(self.client.get(VERSION) or 0)

    def pending(self, hook: str) -> int:
        return int(self.client.xlen(outbox(hook)))

    def backlog(self) -> int:
        """Events waiting over every hook's outbox."""
        return sum(self.pending(h.decode()) for h in self.client.hkeys(HOOKS))

    def watched(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """space -> {hook: its enter/exit events} over enabled hooks that want either."""
        statuses = self.statuses()
        out: dict[str, dict[str, tuple[str, ...]]] = {}
        for hook, spec in self.hooks().items():
            kinds = tuple(e for e in spec.events if e in ("enter", "exit"))
            if kinds and not statuses.get(hook, FRESH)["disabled"]:
                for space in spec.spaces:
                    out.setdefault(space, {})[hook] = kinds
        return out

    def levels(self) -> dict[str, bool]:
        return {k.decode(): v == b"1" for k, v in self.client.hgetall(LEVELS).items()}

    def cross(self, hook: str, field: str, above: bool, event: dict | None, maxlen: int) -> None:
        """A crossing: its event (None: one the hook does not want) in the hook's outbox and
        the side it leaves, in one step."""
        pipe = self.client.pipeline(transaction=True)
        if event is not None:
            pipe.xadd(outbox(hook), event, maxlen=maxlen, approximate=True)
        pipe.hset(LEVELS, field, b"1" if above else b"0")
        pipe.execute()

    def drop_device(self, device: str) -> int:
        """Take every undelivered event naming `device` (its pseudonym) out of the outboxes."""
        dropped = 0
        for hook in self.client.hkeys(HOOKS):
            key = outbox(hook.decode())
            ids = [i for i, f in self.client.xrange(key) if f.get(b"device") == device.encode()]
            if ids:
                dropped += self.client.xdel(key, *ids)
        return dropped
