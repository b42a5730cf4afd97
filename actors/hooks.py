"""Webhook delivery, run by the History actor in a thread of its own (its asyncio loop never waits
for ingest, nor ingest for it): each hook's outbox read with a consumer group and POSTed in
order, signed, retried with exponential backoff and jitter, the hook disabled after failing for
`give_up_s`; and about once a second, the exact count of every space a hook watches for above
or below, compared with the side stored for it (state/hooks.py)."""

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import orjson
import redis

from engine.hooks import SIGNATURE_HEADER, HookSpec, backoff_s, crossing, level_id, sign
from state.hooks import FRESH, GROUP, HookStore, level_field, outbox

log = logging.getLogger(__name__)

CONSUMER = "history"
TICK_S = 0.2  # how often the outboxes are looked at
LEVELS_S = 1.0  # how often counts are compared with thresholds (the documented cadence)
# counts are compared from this long after a start on: restarted space shards rebuild their
# counts from the user shards' listings first (a half-built count would cross and come back)
LEVELS_GRACE_S = 5.0
BATCH = 32  # events read from one outbox at a time
IN_FLIGHT = 16  # POSTs under way at once, over every hook
TIMEOUT_S = 10.0  # one POST's bound
INT_FIELDS = ("ts", "count", "threshold")


@dataclass(frozen=True)
class DeliveryConfig:
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 600.0
    give_up_s: float = 86_400.0  # a hook failing this long is disabled
    outbox_max: int = 100_000


@dataclass
class _Hook:
    """A hook's delivery state in memory; `failing_since` is also stored (restarts keep it)."""

    failures: int = 0
    next_at: float = 0.0
    busy: bool = False
    retrying: set = field(default_factory=set)  # entries that failed once


def body_of(hook: str, fields: dict[bytes, bytes]) -> bytes:
    """The JSON a receiver gets for an outbox entry."""
    event = {k.decode(): v.decode() for k, v in fields.items()}
    for name in INT_FIELDS:
        if name in event:
            event[name] = int(event[name])
    return orjson.dumps({"id": event.pop("id"), "hook": hook, **event})


class Deliverer:
    """`run(stop)` until `stop` is set. `counts` gives every space's exact live count (the
    call `/v1/spaces` answers from); `count` records a delivery's outcome for the metrics."""

    def __init__(
        self,
        client: redis.Redis,
        config: DeliveryConfig,
        counts: Callable[[], Awaitable[dict[str, int]]],
        count: Callable[[str], None] = lambda outcome: None,
    ):
        self.store = HookStore(client)
        self.config = config
        self.counts = counts
        self.count = count
        self.state: dict[str, _Hook] = {}
        self._slots: asyncio.Semaphore | None = None

    def run(self, stop: threading.Event) -> None:
        asyncio.run(self._run(stop))

    async def _run(self, stop: threading.Event) -> None:
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        tasks: set[asyncio.Task] = set()
        last_levels = time.monotonic() + LEVELS_GRACE_S - LEVELS_S
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http:
            while not stop.is_set():
                try:
                    hooks, statuses = self.store.hooks(), self.store.statuses()
                    if time.monotonic() - last_levels >= LEVELS_S:
                        last_levels = time.monotonic()
                        await self.levels(hooks, statuses)
                    for hook, spec in hooks.items():
                        st = self.state.setdefault(hook, _Hook())
                        status = statuses.get(hook, FRESH)
                        if st.busy or status["disabled"] or time.monotonic() < st.next_at:
                            continue
                        st.busy = True
                        task = asyncio.create_task(self.deliver(http, hook, spec, status, st))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    for gone in self.state.keys() - hooks.keys():
                        del self.state[gone]
                except Exception as exc:  # Redis away, a shard restarting: the next tick
                    log.warning("hooks: %s", exc)
                await asyncio.sleep(TICK_S)
            for task in tasks:
                task.cancel()

    async def levels(self, hooks: dict[str, HookSpec], statuses: dict[str, dict]) -> None:
        """Compare each watched count with its hook's threshold; a crossing goes to the outbox
        with the side it leaves, together (so it is neither lost nor repeated by a restart)."""
        watching = {
            h: s
            for h, s in hooks.items()
            if s.threshold is not None and not statuses.get(h, FRESH)["disabled"]
        }
        if not watching:
            return
        counts, sides = await self.counts(), self.store.levels()
        now = int(time.time() * 1000)
        for hook, spec in watching.items():
            for space in spec.spaces:
                n = counts.get(space, 0)
                key = level_field(hook, space, spec.threshold)
                kind = crossing(sides.get(key), n, spec.threshold)
                if kind is None:
                    continue
                event = None
                if kind in spec.events:
                    event = {
                        "id": level_id(hook, space, kind, spec.threshold, now),
                        "event": kind,
                        "space": space,
                        "ts": now,
                        "count": n,
                        "threshold": spec.threshold,
                    }
                self.store.cross(hook, key, kind == "above", event, self.config.outbox_max)

    async def deliver(
        self, http: aiohttp.ClientSession, hook: str, spec: HookSpec, status: dict, st: _Hook
    ) -> None:
        """The hook's outbox in order: what was read before (pending) first, then new events,
        until it is empty or a POST fails (then the backoff, and perhaps giving up)."""
        try:
            while True:
                entries = self._read(hook)
                if not entries:
                    return
                for entry_id, fields in entries:
                    if not fields:  # trimmed by the outbox's bound while pending
                        self._done(hook, entry_id)
                        continue
                    error = await self._post(http, hook, spec, fields)
                    if error is None:
                        self.count("retried" if entry_id in st.retrying else "ok")
                        st.retrying.discard(entry_id)
                        self._done(hook, entry_id)
                        if st.failures or status["failing_since"]:
                            st.failures, status = 0, dict(FRESH)
                            self.store.set_status(hook, status)
                        continue
                    self.count("failed")
                    st.retrying.add(entry_id)
                    self._failed(hook, status, st, error)
                    return
        except redis.RedisError as exc:
            log.warning("hooks: %s: %s", hook, exc)
        finally:
            st.busy = False

    def _read(self, hook: str) -> list:
        key = outbox(hook)
        for start in ("0", ">"):
            try:
                found = self.store.client.xreadgroup(GROUP, CONSUMER, {key: start}, count=BATCH)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.store.client.xgroup_create(key, GROUP, id="0", mkstream=True)
                return []
            entries = found[0][1] if found else []
            if entries:
                return entries
        return []

    def _done(self, hook: str, entry_id: bytes) -> None:
        pipe = self.store.client.pipeline(transaction=False)
        pipe.xack(outbox(hook), GROUP, entry_id)
        pipe.xdel(outbox(hook), entry_id)
        pipe.execute()

    async def _post(
        self, http: aiohttp.ClientSession, hook: str, spec: HookSpec, fields: dict
    ) -> str | None:
        """None when the receiver took it (2xx), else what went wrong."""
        body = body_of(hook, fields)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(spec.secret, body)}
        assert self._slots is not None
        async with self._slots:
            try:
                async with http.post(spec.url, data=body, headers=headers) as answer:
                    if 200 <= answer.status < 300:
                        return None
                    return f"HTTP {answer.status}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                return f"{type(exc).__name__}: {exc}"[:200]

    def _failed(self, hook: str, status: dict, st: _Hook, error: str) -> None:
        c, now = self.config, time.time()
        st.failures += 1
        st.next_at = time.monotonic() + backoff_s(
            st.failures, c.backoff_base_s, c.backoff_cap_s, random.random()
        )
        since = status["failing_since"] or now
        disabled = now - since >= c.give_up_s
        if disabled:
            log.warning("hook %s failed for %.0f s: disabled (%s)", hook, now - since, error)
        self.store.set_status(
            hook, {"failing_since": since, "disabled": disabled, "last_error": error}
        )
