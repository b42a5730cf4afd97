"""What every ingest front end does with a batch: validate, pseudonymize, index, route, count."""

import asyncio
import time
from collections import Counter
from typing import NamedTuple

import redis
import redis.asyncio

from access import keyring
from access.auth import Authenticator
from access.tokens import Refused
from actors.ingest_batch import Batch, read_batch, read_columns
from clients.errors import NotStarted, StateUnavailable, Unavailable
from clients.family import Layout
from clients.users import UserShards
from clients.views import SpaceShards
from engine.cells import index_batch
from engine.ratelimit import RateLimiter
from engine.recent import RecentCache
from engine.record import PingRecord
from engine.routing import door_shard, group_by_user_shard
from engine.validation import Reason, check_door_event
from observability import telemetry
from protos.occupancy.v1 import occupancy_pb2 as pb
from state import id_directory, redis_client
from state.forgetting import ForgetWatch
from state.instance import InstanceWatch
from state.layout import StaleLayout, committed, current, with_layout
from state.topology import Clock, Topology

INGEST_ROLES = ("ingest", "admin")
KEYS_KEPT_MS = 300_000
LAYOUT_WAIT_S = 20.0  # longest a batch waits for a rebalance to commit before UNAVAILABLE
LAYOUT_CHECK_S = 1.0  # a handler idle during a rebalance takes the new layout this soon


class ShardUnavailable(Exception):
    """A shard failed mid-call (restarting, or its log in Redis unreachable): nothing of the
    batch is acked; retry it."""


def _stale(result) -> bool:
    return isinstance(result, StaleLayout)


def _gone(result) -> bool:
    """The shard is restarting or gone (retired by a rebalance, maybe)."""
    return isinstance(result, Unavailable) and not isinstance(result, StateUnavailable | NotStarted)


def _unavailable(exc: BaseException) -> ShardUnavailable | None:
    """The retryable form of a failure under way, or None for one that is a bug."""
    if isinstance(exc, StateUnavailable | redis.RedisError):
        return ShardUnavailable(f"the write-ahead log (Redis) refused the batch; retry it: {exc}")
    if isinstance(exc, NotStarted):  # the engine is starting (again): not there yet
        return ShardUnavailable(f"{exc}: the engine is starting; retry the batch")
    if isinstance(exc, Unavailable):
        return ShardUnavailable("a shard is restarting; retry the batch")
    return None


class Caller(NamedTuple):
    """Who sends: the device a device token is bound to (None for a key), the credential rate
    limits are kept for, the role (`device` for a device token) and a key's id (the audit
    log's: "" for a device token, whose calls are counted together)."""

    device: str | None
    credential: str
    role: str = "device"
    key_id: str = ""


class AuthError(Exception):
    def __init__(self, message: str, denied: bool = False):
        super().__init__(message)
        self.denied = denied  # True: authenticated but not allowed; False: not authenticated


class IngestCore:
    """Transport-free ingest, shared by the gRPC actor and any other front end.

    `ingest_pings` returns an ack only once every accepted ping is in its user shard's WAL;
    bad items become rejections with a reason. `in_flight` counts batches waiting on shards,
    for the front end's overload policy.
    """

    def __init__(self, topology: Topology, process: str = "ingest"):
        self.redis = redis_client.connect(topology.redis_url)
        topology = self.topology = current(topology, self.redis)
        self.spec = topology.engine_spec()
        m = telemetry.meter(process, topology.redis_url)
        self._pings = m.create_counter(
            "occupancy_pings_total", description="Pings by outcome: accepted, late, rejected"
        )
        self._door_events = m.create_counter(
            "occupancy_door_events_total", description="Door events by outcome"
        )
        self._rejections = m.create_counter(
            "occupancy_rejections_total", description="Rejected pings and door events by reason"
        )
        self._batch_size = m.create_histogram(
            "occupancy_ingest_batch_pings",
            description="Valid pings per ingest call",
            explicit_bucket_boundaries_advisory=[1, 10, 100, 1_000, 5_000, 20_000, 50_000],
        )
        self.placement = topology.placement()
        layout = Layout(topology, follow=False)  # taken by the protocol below, not by time
        self.users, self.spaces = UserShards(layout), SpaceShards(layout)
        self.auth = Authenticator(self.redis, keyring.process_secret())
        device_rate, key_rate = topology.rate_limits
        self._device_limit = RateLimiter(device_rate)
        self._key_limit = RateLimiter(key_rate)
        ids_async = redis_client.connect_async(topology.redis_url)
        self._ids = id_directory.Creator(ids_async)
        self.clock = Clock()
        self._layout_checked = time.monotonic()
        self.in_flight = 0
        # pseudonyms of the ids sent lately: memory follows the devices sending, not all ever seen
        self._keys: RecentCache[str, int] = RecentCache(KEYS_KEPT_MS, 1_000_000)
        self._forgets = ForgetWatch(self.redis, ids_async)
        self.instance = InstanceWatch(self.redis, process)

    def authenticate(self, authorization: str) -> Caller:
        """Who sends: a device token's device, or an ingest/admin key; raises AuthError
        otherwise."""
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        if not token:
            raise AuthError("missing token (authorization: Bearer <token>)")
        try:
            who = self.auth.resolve(token)
        except Refused as exc:
            raise AuthError(f"{exc} (authorization: Bearer <token>)") from None
        if who.role not in ("device", *INGEST_ROLES):
            raise AuthError(f"a {who.role} key cannot send pings", denied=True)
        if who.device is not None:
            return Caller(who.device, f"device:{who.device}")
        return Caller(None, f"key:{who.id}", who.role, who.id)

    def admit(self, caller: Caller, items: int) -> float:
        """0 when `caller` may send `items` now, else the seconds to wait (its token bucket:
        OCC_DEVICE_RATE_LIMIT per device token, OCC_KEY_RATE_LIMIT per key)."""
        limiter = self._device_limit if caller.device is not None else self._key_limit
        return limiter.admit(caller.credential, items, int(time.monotonic() * 1000))

    async def ingest_pings(
        self, pings, device: str | None, base: int = 0, trace: dict | None = None
    ) -> pb.SendPingsResponse:
        """`pings` (Ping or StreamPingsRequest messages) may hold None for messages that did
        not parse ("malformed"); rejection indexes are `base` + the position in `pings`.
        `trace`: the caller's span context, for a traced batch (it travels to the shards and
        into their logs)."""
        now = await self._read_clock()
        b = read_batch(pings, device, base, now, self.spec.limits, self._keys.get)
        return await self._ingest(b, pb.SendPingsResponse, trace)

    async def ingest_columns(
        self, request: pb.SendPingColumnsRequest, device: str | None, trace: dict | None = None
    ) -> pb.SendPingColumnsResponse:
        """`ingest_pings` of pings sent as columns (ValueError: columns of different lengths)."""
        now = await self._read_clock()
        b = read_columns(request, device, now, self.spec.limits, self._keys.get)
        return await self._ingest(b, pb.SendPingColumnsResponse, trace)

    async def _read_clock(self) -> int:
        """The time to check pings by, once forgotten ids and a lost directory are dealt with."""
        if self._forgets.due():
            self._drop_forgotten(await self._forgets.forgotten())
        if self.instance.due() and self.instance.lost():
            self._restore_directory()
        return self.clock()

    async def _ingest(self, b: Batch, response, trace: dict | None):
        ack = response(rejected=len(b.rejections), rejections=b.rejections)
        self._count_rejections("ping", b.rejections)
        pings, missing = b.pings, b.missing
        if not pings.ts:
            return ack
        if missing:  # ids this handler has not seen lately: the id directory names them
            self._fill_keys(pings, missing, await self._ids.keys(list(missing)))
        pings.cell = index_batch(pings.lat, pings.lng, self.spec.res).tolist()
        if time.monotonic() - self._layout_checked > LAYOUT_CHECK_S:
            self._layout_checked = time.monotonic()
            if self._layout_after(self.topology.version):
                await self._await_layout(self.topology.version)
        self.in_flight += 1
        try:
            applied = await self._to_user_shards(pings, trace)
        except (Unavailable, redis.RedisError) as exc:
            raise _unavailable(exc) from exc
        finally:
            self.in_flight -= 1
        ack.accepted = applied
        ack.late = len(pings) - applied
        self._pings.add(applied, {"outcome": "accepted"})
        self._pings.add(ack.late, {"outcome": "late"})
        self._batch_size.record(len(pings))
        return ack

    async def _to_user_shards(self, pings: PingRecord, trace: dict | None) -> int:
        """Send each user shard its part of the batch, stamped with the layout version it was
        routed by; parts refused for another version are routed again by the committed layout
        once there is a newer one. The number of pings applied (not late)."""
        todo: list[int] | None = None  # None: the whole batch (the common case, no copies)
        applied = 0
        while True:
            version = self.topology.version
            if todo is None:
                parts = list(group_by_user_shard(pings.dev, self.placement).items())
            else:
                groups = group_by_user_shard([pings.dev[j] for j in todo], self.placement)
                parts = [(shard, [todo[k] for k in idx]) for shard, idx in groups.items()]
            results = await asyncio.gather(
                *(self._send(shard, version, pings, idx, trace) for shard, idx in parts),
                return_exceptions=True,
            )
            stale: list[int] = []
            for (_, idx), result in zip(parts, results, strict=True):
                if _stale(result) or (_gone(result) and self._layout_after(version)):
                    stale += idx
                elif isinstance(result, BaseException):
                    raise result
                else:
                    applied += result.count(1)
            if not stale:
                return applied
            await self._await_layout(version)
            todo = sorted(stale)

    def _send(self, shard: str, version: int, pings: PingRecord, idx: list[int], trace):
        sub = pings.take(idx)
        sub.version = version
        sub.trace = trace or None
        return self.users.ingest(shard, sub)

    def _layout_after(self, version: int) -> bool:
        """Whether a layout newer than `version` is committed (a shard that is gone may have
        been retired by a rebalance this handler has not heard of)."""
        layout = committed(self.redis)
        return layout is not None and layout["version"] > version

    async def _await_layout(self, version: int) -> None:
        """Wait for a committed layout newer than `version`, the one a refused part was routed
        by (a rebalance is moving devices), and route by it from now on."""
        deadline = time.monotonic() + LAYOUT_WAIT_S
        while self.topology.version <= version:
            layout = committed(self.redis)
            if layout is not None and layout["version"] > version:
                if layout["version"] > self.topology.version:
                    self.topology = with_layout(self.topology, layout)
                    self.placement = self.topology.placement()
                    self.users.topology = self.topology
                return
            if time.monotonic() > deadline:
                raise ShardUnavailable("the shards are being rebalanced; retry the batch")
            await asyncio.sleep(0.05)

    def _count_rejections(self, kind: str, rejections) -> None:
        if not rejections:
            return
        if kind == "ping":
            self._pings.add(len(rejections), {"outcome": "rejected"})
        else:
            self._door_events.add(len(rejections), {"outcome": "rejected"})
        for reason, n in Counter(r.reason for r in rejections).items():
            self._rejections.add(n, {"kind": kind, "reason": reason})

    async def ingest_doors(self, events, device: str | None) -> pb.SendDoorEventsResponse:
        now = self.clock()
        ack = pb.SendDoorEventsResponse()
        groups: dict[str, dict] = {}
        for i, e in enumerate(events):
            if e is None:  # an HTTP item that is not a door event (engine/http_ingest.py)
                ack.rejections.append(pb.Rejection(index=i, reason="malformed"))
                continue
            reason = check_door_event(e.sensor_id, e.ts_ms, e.direction, now, self.spec.limits)
            if reason is None and device is not None and e.sensor_id != device:
                reason = Reason.NOT_AUTHORIZED_FOR_DEVICE
            if reason:
                ack.rejections.append(pb.Rejection(index=i, reason=reason.value))
                continue
            g = groups.setdefault(
                door_shard(e.sensor_id, self.placement), {"sensor": [], "ts": [], "dir": []}
            )
            g["sensor"].append(e.sensor_id)
            g["ts"].append(e.ts_ms)
            g["dir"].append(e.direction)
        try:
            counts = await asyncio.gather(
                *(self.spaces.door_events(s, g) for s, g in groups.items())
            )
        except (Unavailable, redis.RedisError) as exc:
            raise _unavailable(exc) from exc
        ack.accepted = sum(counts)
        ack.rejected = len(ack.rejections)
        self._door_events.add(ack.accepted, {"outcome": "accepted"})
        self._count_rejections("door_event", ack.rejections)
        return ack

    def _fill_keys(
        self, pings: PingRecord, missing: dict[str, list[int]], keys: dict[str, int]
    ) -> None:
        now = self.clock()
        for device_id, key in keys.items():
            if key not in self._forgets.recent:  # else forgotten while it was looked up
                self._keys.put(device_id, key, now)
            for i in missing[device_id]:
                pings.dev[i] = key

    def _drop_forgotten(self, keys: set[int] | None) -> None:
        """Forgotten devices leave the cache (None: notices may have been missed; all go)."""
        if keys is None:
            self._keys.clear()
        elif keys:
            self._keys.drop_values(keys)

    def _restore_directory(self) -> None:
        """Redis lost its data: the pairs this handler holds go back into the id directory
        (the devices sending now keep their pseudonyms); any the directory has otherwise by
        now (another handler drew first) leave the cache."""
        held = self._keys.items()
        differ = id_directory.restore(self.redis, held)
        if differ:
            self._keys.drop_values({k for raw, k in held if raw in differ})
