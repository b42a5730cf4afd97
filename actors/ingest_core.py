"""What every ingest front end does with a batch: validate, pseudonymize, index, route, count."""

import asyncio
from collections import Counter

import ray
import redis
import redis.asyncio

from actors import telemetry
from actors.auth import Authenticator, KeyStore
from actors.id_directory import record_async
from actors.refs import Shards
from actors.topology import Clock, Topology
from engine.cells import index_batch
from engine.pseudonym import pseudonym, pseudonym_str
from engine.routing import door_shard, group_by_user_shard
from engine.validation import Reason, check_door_event, check_ping
from protos import occupancy_pb2 as pb

INGEST_ROLES = ("ingest", "admin")


class ShardUnavailable(Exception):
    """A shard failed mid-call (restarting, or its log in Redis unreachable): nothing of the
    batch is acked; retry it."""


def _unavailable(exc: BaseException) -> ShardUnavailable | None:
    """The retryable form of a failure under way, or None for one that is a bug."""
    if isinstance(exc, ray.exceptions.RayActorError):
        return ShardUnavailable("a shard is restarting; retry the batch")
    cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc
    if isinstance(cause, redis.RedisError):
        return ShardUnavailable(f"the write-ahead log (Redis) refused the batch; retry it: {cause}")
    return None


class AuthError(Exception):
    def __init__(self, message: str, denied: bool = False):
        super().__init__(message)
        self.denied = denied  # True: authenticated but not allowed; False: not authenticated


class _Batch:
    """One call's valid pings as the columns sent to the user shards."""

    __slots__ = ("extra", "keys", "lats", "lngs", "rejections", "ts")

    def __init__(self) -> None:
        # position → [attributes, accuracy_m, region] for the pings that carry any (history)
        self.extra: dict[int, list] = {}
        self.keys: list[int] = []
        self.ts: list[int] = []
        self.lats: list[float] = []
        self.lngs: list[float] = []
        self.rejections: list = []


class IngestCore:
    """Transport-free ingest, shared by the gRPC actor and any other front end.

    `ingest_pings` returns an ack only once every accepted ping is in its user shard's WAL;
    bad items become rejections with a reason. `in_flight` counts batches waiting on shards,
    for the front end's overload policy.
    """

    def __init__(self, topology: Topology, process: str = "ingest"):
        self.topology = topology
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
            "occupancy_ingest_batch_size",
            description="Valid pings per ingest call",
            explicit_bucket_boundaries_advisory=[1, 10, 100, 1_000, 5_000, 20_000, 50_000],
        )
        self.placement = topology.placement()
        self.shards = Shards(topology)
        self.redis = redis.Redis.from_url(topology.redis_url)
        self.auth = Authenticator(topology.secret, KeyStore(self.redis))
        self._ids_async = redis.asyncio.Redis.from_url(topology.redis_url)
        self.clock = Clock()
        self.in_flight = 0
        self._keys: dict[str, int] = {}

    def authenticate(self, authorization: str) -> str | None:
        """The device id a device token is bound to, or None for an ingest/admin key; raises
        AuthError otherwise."""
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        resolved = self.auth.resolve(token) if token else None
        if resolved is None:
            raise AuthError("missing or invalid token (authorization: Bearer <token>)")
        role, device = resolved
        if role not in ("device", *INGEST_ROLES):
            raise AuthError(f"a {role} key cannot send pings", denied=True)
        return device

    async def ingest_pings(
        self, pings, device: str | None, base: int = 0, trace: dict | None = None
    ) -> pb.IngestAck:
        """`pings` may hold None for messages that did not parse ("malformed"); rejection
        indexes are `base` + the position in `pings`. `trace`: the caller's span context, for
        a traced batch (it travels to the shards and into their logs)."""
        b, new_ids = self._validate(pings, device, base)
        ack = pb.IngestAck(rejected=len(b.rejections), rejections=b.rejections)
        self._count_rejections("ping", b.rejections)
        if not b.keys:
            return ack
        cells = index_batch(b.lats, b.lngs, self.spec.res).tolist()
        # first-seen raw ids go to the id directory while the shards write their WALs
        calls = [record_async(self._ids_async, new_ids)]
        for shard, idx in group_by_user_shard(b.keys, self.placement).items():
            sub = {
                "dev": [b.keys[j] for j in idx],
                "ts": [b.ts[j] for j in idx],
                "cell": [cells[j] for j in idx],
                "lat": [b.lats[j] for j in idx],
                "lng": [b.lngs[j] for j in idx],
            }
            if b.extra:
                extra = {k: b.extra[j] for k, j in enumerate(idx) if j in b.extra}
                if extra:
                    sub["extra"] = extra
            if trace:
                sub["trace"] = trace
            calls.append(self.shards.handle(shard).ingest.remote(sub))
        self.in_flight += 1
        try:
            _, *results = await asyncio.gather(*calls)
        except (ray.exceptions.RayError, redis.RedisError) as exc:
            if (retry := _unavailable(exc)) is None:
                raise
            raise retry from exc
        finally:
            self.in_flight -= 1
        applied = sum(r.count(1) for r in results)
        ack.accepted = applied
        ack.late = len(b.keys) - applied
        self._pings.add(applied, {"outcome": "accepted"})
        self._pings.add(ack.late, {"outcome": "late"})
        self._batch_size.record(len(b.keys))
        return ack

    def _count_rejections(self, kind: str, rejections) -> None:
        if not rejections:
            return
        if kind == "ping":
            self._pings.add(len(rejections), {"outcome": "rejected"})
        else:
            self._door_events.add(len(rejections), {"outcome": "rejected"})
        for reason, n in Counter(r.reason for r in rejections).items():
            self._rejections.add(n, {"kind": kind, "reason": reason})

    async def ingest_doors(self, events, device: str | None) -> pb.IngestAck:
        now = self.clock()
        ack = pb.IngestAck()
        groups: dict[str, dict] = {}
        for i, e in enumerate(events):
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
                *(self.shards.handle(s).door_events.remote(g) for s, g in groups.items())
            )
        except (ray.exceptions.RayError, redis.RedisError) as exc:
            if (retry := _unavailable(exc)) is None:
                raise
            raise retry from exc
        ack.accepted = sum(counts)
        ack.rejected = len(ack.rejections)
        self._door_events.add(ack.accepted, {"outcome": "accepted"})
        self._count_rejections("door_event", ack.rejections)
        return ack

    def _key(self, device_id: str, new_ids: dict[str, str]) -> int:
        key = self._keys.get(device_id)
        if key is None:
            if len(self._keys) > 1_000_000:
                self._keys.clear()
            key = self._keys[device_id] = pseudonym(self.topology.secret, device_id)
            new_ids[pseudonym_str(key)] = device_id
        return key

    def _validate(self, pings, device: str | None, base: int) -> tuple[_Batch, dict[str, str]]:
        now = self.clock()
        limits = self.spec.limits
        b, new_ids = _Batch(), {}
        for i, p in enumerate(pings):
            if p is None:
                reason = "malformed"
            else:
                reason = check_ping(
                    p.device_id, p.ts_ms, p.lat, p.lng, now, limits, p.accuracy_m, p.attributes
                )
                if reason is None and device is not None and p.device_id != device:
                    reason = Reason.NOT_AUTHORIZED_FOR_DEVICE
            if reason:
                b.rejections.append(pb.Rejection(index=base + i, reason=str(reason)))
                continue
            if p.attributes or p.accuracy_m or p.region:
                b.extra[len(b.keys)] = [dict(p.attributes), p.accuracy_m, p.region]
            b.keys.append(self._key(p.device_id, new_ids))
            b.ts.append(p.ts_ms)
            b.lats.append(p.lat)
            b.lngs.append(p.lng)
        return b, new_ids
