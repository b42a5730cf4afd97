"""A shard's write-ahead log (a Redis stream) and its msgpack checkpoint."""

from collections.abc import Iterator

import msgpack
import redis

PREFIX = "occ"
EPOCH = f"{PREFIX}:epoch"  # one counter for every shard

# the shared counter, never below a per-shard counter kept by an older layout of the data
_NEXT_EPOCH = """
local shared = tonumber(redis.call('GET', KEYS[1]) or '0')
local own = tonumber(redis.call('GET', KEYS[2]) or '0')
if own > shared then redis.call('SET', KEYS[1], own) end
local e = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], e)
return e
"""


_RESTORE_EPOCH = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') < tonumber(ARGV[1]) then
    redis.call('SET', key, ARGV[1])
  end
end
"""

# compare-and-set: the checkpoint (KEYS[1]) and its id (KEYS[2]) are written only if no later
# entry's checkpoint is stored; then the log (KEYS[3]) is trimmed before ARGV[5] (if given)
_SAVE_CHECKPOINT = """
local stored = redis.call('GET', KEYS[2])
if stored then
  local ms, seq = string.match(stored, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  local new_ms, new_seq = tonumber(ARGV[3]), tonumber(ARGV[4])
  if ms > new_ms or (ms == new_ms and seq > new_seq) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[5] ~= '' then redis.call('XTRIM', KEYS[3], 'MINID', ARGV[5]) end
return 1
"""


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _id(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


def _after(stream_id: str) -> str:
    ms, seq = stream_id.split("-")
    return f"{ms}-{int(seq) + 1}"


class Wal:
    """Append before apply; checkpoint with the last applied entry's id; trim behind it.

    Recovery is `load_checkpoint()` then `entries_after(checkpoint id)`, applied in order.
    `next_epoch()` numbers the shard's incarnations (and handoffs) so that receivers can tell
    a restarted shard's updates from the old one's.
    """

    def __init__(self, client: redis.Redis, shard: str):
        self.client = client
        self.stream = f"{PREFIX}:wal:{shard}"
        self.ckpt_key = f"{PREFIX}:ckpt:{shard}"
        self.ckpt_id_key = f"{PREFIX}:ckpt_id:{shard}"  # the checkpoint's WAL id alone
        self.epoch_key = f"{PREFIX}:epoch:{shard}"
        # the last entry written to history; set once history is on, and the log then keeps
        # every entry not yet archived even when a checkpoint covers it
        self.archived_key = f"{PREFIX}:archived:{shard}"

    def next_epoch(self) -> int:
        """A number greater than every epoch any shard drew before: seqs of the same device
        sent by two shards (before and after a rebalance moved it) compare correctly too."""
        return int(self.client.eval(_NEXT_EPOCH, 2, EPOCH, self.epoch_key))

    def restore_epoch(self, epoch: int) -> None:
        """After Redis lost its data: the counters again at least at `epoch`, so that no shard
        draws an epoch some receiver has already seen."""
        self.client.eval(_RESTORE_EPOCH, 2, EPOCH, self.epoch_key, epoch)

    def append(self, entry: dict) -> str:
        """Durable once this returns, as far as Redis's AOF is (OCC_DURABILITY: fsynced
        within a second, or before the reply)."""
        return self.client.xadd(self.stream, {b"d": pack(entry)}).decode()

    def entries_after(self, stream_id: str, chunk: int = 500) -> Iterator[tuple[str, dict]]:
        start = f"({stream_id}" if stream_id != "0-0" else "-"
        while True:
            rows = self.client.xrange(self.stream, min=start, max="+", count=chunk)
            for raw_id, fields in rows:
                yield raw_id.decode(), unpack(fields[b"d"])
            if len(rows) < chunk:
                return
            start = f"({rows[-1][0].decode()}"

    def load_checkpoint(self) -> tuple[dict | None, str]:
        raw = self.client.get(self.ckpt_key)
        if raw is None:
            return None, "0-0"
        ckpt = unpack(raw)
        return ckpt["state"], ckpt["wal_id"]

    def save_checkpoint(self, state: dict, wal_id: str, archiving: bool = False) -> bool:
        """Store the state as of entry `wal_id` and drop the entries it covers that history
        has (all of them when history is off). `archiving`: history archives this log, so a
        missing archive mark (Redis lost its data) trims nothing. Refused (False) when the
        stored checkpoint is of a later entry: a late writer (a checkpoint child that outlived
        its timeout, a shard replaced meanwhile) never overwrites newer state."""
        archived = self.client.get(self.archived_key)
        trim_to = wal_id
        if archived is None and archiving:
            trim_to = "0-0"
        elif archived is not None and _id(archived.decode()) < _id(wal_id):
            trim_to = archived.decode()
        ms, seq = _id(wal_id)
        trim = _after(trim_to) if trim_to != "0-0" else ""
        stored = self.client.eval(
            _SAVE_CHECKPOINT,
            3,
            self.ckpt_key,
            self.ckpt_id_key,
            self.stream,
            pack({"wal_id": wal_id, "state": state}),
            wal_id,
            ms,
            seq,
            trim,
        )
        return bool(stored)

    # -- the history archive's position ---------------------------------------------------------

    def archiving(self) -> bool:
        """Whether history archives this log (its archive mark exists)."""
        return bool(self.client.exists(self.archived_key))

    def start_archive(self) -> None:
        """From now on, keep entries until they are archived."""
        self.client.set(self.archived_key, "0-0", nx=True)

    def archived(self) -> str:
        raw = self.client.get(self.archived_key)
        return raw.decode() if raw is not None else "0-0"

    def entries_between(self, first: str, last: str) -> list[tuple[str, dict]]:
        return [
            (raw_id.decode(), unpack(fields[b"d"]))
            for raw_id, fields in self.client.xrange(self.stream, min=first, max=last)
        ]

    def set_archived(self, wal_id: str) -> None:
        """Entries up to `wal_id` are in history; trim them if a checkpoint covers them too."""
        self.client.set(self.archived_key, wal_id)
        raw = self.client.get(self.ckpt_id_key)
        if raw is not None:
            covered = raw.decode()
            trim_to = covered if _id(covered) < _id(wal_id) else wal_id
            if trim_to != "0-0":
                self.client.xtrim(self.stream, minid=_after(trim_to), approximate=False)

    def archive_lag_ms(self) -> int:
        """How far (in WAL time) history is behind the log's newest entry; 0 when it has all."""
        newest = self.client.xrevrange(self.stream, count=1)
        if not newest:
            return 0
        last = _id(newest[0][0].decode())
        archived = _id(self.archived())
        if archived >= last:
            return 0
        if archived == (0, 0):  # nothing archived yet: the whole log is behind
            archived = _id(self.client.xrange(self.stream, count=1)[0][0].decode())
        return max(1, last[0] - archived[0])

    def unarchived_bytes(self) -> int:
        """Redis's memory for the entries history does not have yet, estimated: the stream's
        memory times the share of its time span after the archive mark (entries come in at a
        steady rate; counting them exactly would read them all)."""
        usage = self.client.memory_usage(self.stream) or 0
        newest = self.client.xrevrange(self.stream, count=1)
        if not usage or not newest:
            return 0
        last = _id(newest[0][0].decode())
        archived = _id(self.archived())
        if archived >= last:
            return 0
        oldest = _id(self.client.xrange(self.stream, count=1)[0][0].decode())
        span = last[0] - oldest[0]
        if span <= 0 or archived < oldest:
            return int(usage)
        return int(usage * (last[0] - archived[0]) / span)

    def length(self) -> int:
        return int(self.client.xlen(self.stream))

    def clear(self) -> None:
        self.client.delete(
            self.stream, self.ckpt_key, self.ckpt_id_key, self.epoch_key, self.archived_key
        )
