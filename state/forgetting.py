"""Forgetting a device (`DELETE /v1/admin/devices/{id}`, `occupancy forget`): crypto-shredding.

1. The id directory drops both of the device's entries, in one script that also records a job
   (old pseudonym -> a fresh random key) and a notice for the ingest handlers, which drop the
   id from their caches within a second (`ForgetWatch`). The raw id is gone from Redis; its
   next ping draws a new pseudonym.
2. Its user shard logs and applies a `forget` entry (`UserEngine.forget`): the device leaves
   live state at once, as if its presence ended then; the views drop it through the usual
   moves; what counts keep of it (minute sets, presence owed to history) moves to the fresh key.
   For a minute the shard drops pings still in flight under the old pseudonym, before they are
   logged (`drop_forgotten`). The job then records the newest entry of every log (its `cut`).
3. Once history has archived every log up to the cut (spill files included), the history actor
   deletes the device's raw pings, re-keys its presence rows to the fresh key (counts of the
   past do not change), re-keys or drops its dead-lettered rows, and has every user shard
   checkpoint: the log entries that held it are then trimmed (checkpointed and archived), and
   no checkpoint has it. The job goes.

Steps 2 and 3 are retried by the history actor after each snapshot until they are done (Redis
or ClickHouse down, a shard restarting, a rebalance under way). Until the job is done, Redis
holds the old pseudonym beside the fresh key in the job (never the raw id).
"""

import time
from dataclasses import dataclass

import redis
import redis.asyncio

from engine.pseudonym import pseudonym_str
from engine.record import PingRecord
from state.id_directory import IDS, RAW_IDS
from state.layout import current, pending
from state.topology import Topology
from state.wal import PREFIX, pack, unpack

JOBS = f"{PREFIX}:forget:jobs"  # old pseudonym hex -> job (fresh key, when, cut)
NOTICES = f"{PREFIX}:forget:notices"  # a stream: pseudonyms ingest handlers must drop
NOTICES_KEPT_MS = 600_000  # a handler that has not looked for this long drops its whole cache
CHECK_EVERY_S = 1.0  # how often a handler looks for notices (while it ingests)
IN_FLIGHT_MS = 60_000  # how long a shard drops pings under a forgotten pseudonym

# KEYS: raw -> pseudonym, pseudonym -> raw, jobs, notices. ARGV: raw id, job, notices' MINID.
# The pseudonym the raw id had, or false if the directory does not have it.
_FORGET = """
local key = redis.call('HGET', KEYS[1], ARGV[1])
if not key then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], key)
redis.call('HSET', KEYS[3], key, ARGV[2])
redis.call('XADD', KEYS[4], 'MINID', ARGV[3], '*', 'key', key)
return key
"""


@dataclass
class Job:
    """A forget under way: `old` pseudonym, `fresh` key, `at` (ms) when it began, and `cut`
    (the newest entry of each log once the shard has forgotten the device; None before)."""

    old: int
    fresh: int
    at: int
    cut: dict[str, str] | None = None

    def pack(self) -> bytes:
        return pack({"fresh": self.fresh, "at": self.at, "cut": self.cut})


def start(client: redis.Redis, device_id: str, fresh: int) -> Job | None:
    """Step 1 for a raw id: its directory entries go and the job is recorded; None if the
    directory does not have it."""
    now = int(time.time() * 1000)
    job = Job(0, fresh, now)
    found = client.eval(
        _FORGET, 4, RAW_IDS, IDS, JOBS, NOTICES, device_id, job.pack(), now - NOTICES_KEPT_MS
    )
    if not found:
        return None
    job.old = int(found, 16)
    return job


def jobs(client: redis.Redis) -> list[Job]:
    """Every forget not finished, oldest first."""
    out = []
    for key, raw in client.hgetall(JOBS).items():
        data = unpack(raw)
        out.append(Job(int(key, 16), data["fresh"], data["at"], data["cut"]))
    return sorted(out, key=lambda j: j.at)


def save(client: redis.Redis, job: Job) -> None:
    client.hset(JOBS, pseudonym_str(job.old), job.pack())


def finish(client: redis.Redis, job: Job) -> None:
    client.hdel(JOBS, pseudonym_str(job.old))


class Busy(Exception):
    """A rebalance is moving devices: the shard's forget waits until it is committed."""


def owner(topology: Topology, client: redis.Redis, key: int) -> str:
    """The user shard that holds the device under the committed layout (step 2)."""
    if pending(client) is not None:
        raise Busy("a rebalance is under way")
    return current(topology, client).placement().user_shard(key)


def forgotten_live(client: redis.Redis, job: Job) -> None:
    """Step 2 is done: the job's cut is every log's newest entry from now on."""
    job.cut = log_tips(client)
    save(client, job)


def log_tips(client: redis.Redis) -> dict[str, str]:
    """The newest entry of every shard log (a job's cut): history must have archived these
    before the device's rows can be deleted for good."""
    prefix = f"{PREFIX}:wal:"
    tips = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        newest = client.xrevrange(key, count=1)
        if newest:
            tips[key.decode()[len(prefix) :]] = newest[0][0].decode()
    return tips


# -- in the ingest handlers ---------------------------------------------------------------------


class ForgetWatch:
    """Which pseudonyms were forgotten since the handler last looked: `due()` once a second,
    then `forgotten()`: a set of pseudonyms to drop from the cache, or None to drop it all
    (the handler did not look for longer than the notices are kept). `recent` holds those of
    the last IN_FLIGHT_MS: a look-up answered just before a forget must not be cached after."""

    def __init__(self, client: redis.Redis, async_client: redis.asyncio.Redis):
        newest = client.xrevrange(NOTICES, count=1)
        self._last = newest[0][0].decode() if newest else "0-0"
        self._client = async_client
        self._checked = time.monotonic()
        self.recent: dict[int, float] = {}

    def due(self) -> bool:
        return time.monotonic() - self._checked >= CHECK_EVERY_S

    async def forgotten(self) -> set[int] | None:
        now = time.monotonic()
        late, self._checked = now - self._checked > NOTICES_KEPT_MS / 2_000, now
        rows = await self._client.xrange(NOTICES, min=f"({self._last}", max="+")
        if rows:
            self._last = rows[-1][0].decode()
        keys = {int(fields[b"key"], 16) for _, fields in rows}
        self.recent = {k: t for k, t in self.recent.items() if now - t < IN_FLIGHT_MS / 1000}
        self.recent.update((k, now) for k in keys)
        return None if late else keys


# -- in the user shards -------------------------------------------------------------------------


def drop_forgotten(batch: PingRecord, forgotten: dict[int, int]) -> list[int] | None:
    """The positions of an ingest batch's pings to keep: all but those of forgotten pseudonyms
    (still in flight when their device was forgotten); None if all are kept."""
    devices = batch.dev
    if not any(d in forgotten for d in devices):
        return None
    return [i for i, d in enumerate(devices) if d not in forgotten]
