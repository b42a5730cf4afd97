"""The id directory: the only place where raw device ids live (in Redis), and the only way from
a raw id to its pseudonym.

Two hashes hold each pair: `occ:ids` (pseudonym hex -> raw id, for admins' answers) and
`occ:ids:raw` (raw id -> pseudonym hex, for ingest and per-device questions). A raw id gets a
random pseudonym the first time an ingest handler sees it, by one Lua script that every handler
runs (`get_or_create`), so two handlers seeing a new id at once agree on one pseudonym. Queries
only look up (`IdDirectory`), never create. Forgetting deletes both entries
(`state/forgetting.py`); nothing can compute the pseudonym again.

Pseudonyms recorded before they were drawn at random (HMACs of the raw id) stay as stored:
`migrate` fills the raw -> pseudonym side from the existing one once, before ingest opens.
"""

import os

import redis
import redis.asyncio

from engine.pseudonym import parse_pseudonym, pseudonym_str

IDS = "occ:ids"  # pseudonym hex -> raw id
RAW_IDS = "occ:ids:raw"  # raw id -> pseudonym hex
MIGRATED = "occ:ids:migrated"  # set once `migrate` has filled RAW_IDS from IDS
CHUNK = 2_000  # ids per script call: Redis serves nothing else while one runs

# KEYS[1] raw -> pseudonym, KEYS[2] pseudonym -> raw; ARGV[1]: one candidate pseudonym per raw
# id, 16 hex digits each, end to end; ARGV[2..]: the raw ids. Returns, end to end, each id's
# pseudonym: the one it has, else its candidate recorded for it, else NONE (the candidate
# belongs to another id: the caller draws again). One string each way: little to encode and
# parse per id.
_GET_OR_CREATE = """
local out = {}
for i = 2, #ARGV do
  local key = redis.call('HGET', KEYS[1], ARGV[i])
  if not key then
    local candidate = string.sub(ARGV[1], (i - 2) * 16 + 1, (i - 1) * 16)
    if redis.call('HSETNX', KEYS[2], candidate, ARGV[i]) == 1 then
      redis.call('HSET', KEYS[1], ARGV[i], candidate)
      key = candidate
    else
      key = '0000000000000000'
    end
  end
  out[#out + 1] = key
end
return table.concat(out)
"""
NONE = "0" * 16  # no pseudonym is 0

# the same keys; ARGV: (raw id, pseudonym) pairs a handler holds, written back where the
# directory has neither; returns the raw ids whose entry is another (their holder drops them)
_RESTORE = """
local out = {}
for i = 1, #ARGV, 2 do
  local key = redis.call('HGET', KEYS[1], ARGV[i])
  if not key then
    if redis.call('HSETNX', KEYS[2], ARGV[i + 1], ARGV[i]) == 1 then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    else
      out[#out + 1] = ARGV[i]
    end
  elseif key ~= ARGV[i + 1] then
    out[#out + 1] = ARGV[i]
  end
end
return out
"""


class IdDirectory:
    """Look-ups for answers and operators: never creates an entry."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def lookup(self, device_id: str) -> int | None:
        """The pseudonym of a raw id, None if the directory does not have it."""
        key = self.client.hget(RAW_IDS, device_id)
        return int(key, 16) if key else None

    def key_of(self, device: str) -> int | None:
        """The pseudonym a per-device question names: a raw id, or the 16-hex-digit pseudonym
        of a device the directory has (answers show pseudonyms where they show no raw id).
        None for anything else: never seen, or forgotten."""
        key = self.lookup(device)
        if key is not None:
            return key
        try:
            key = parse_pseudonym(device)
        except ValueError:
            return None
        return key if self.client.hexists(IDS, pseudonym_str(key)) else None

    def resolve(self, key: int) -> str | None:
        raw = self.client.hget(IDS, pseudonym_str(key))
        return raw.decode() if raw else None

    def resolve_many(self, keys: list[int]) -> dict[int, str | None]:
        if not keys:
            return {}
        raws = self.client.hmget(IDS, [pseudonym_str(k) for k in keys])
        return {k: (r.decode() if r else None) for k, r in zip(keys, raws, strict=True)}

    def __len__(self) -> int:
        return int(self.client.hlen(IDS))


async def pseudonyms_of(client: redis.asyncio.Redis, values: set[str]) -> dict[str, str | None]:
    """`IdDirectory.key_of` for many values at once, from async code, as 16 hex digits: the
    pseudonym of each raw id the directory has, or the value itself when it is the pseudonym
    of a device the directory has; None otherwise. Two reads in all."""
    names = sorted(values)
    if not names:
        return {}
    found = dict(zip(names, await client.hmget(RAW_IDS, names), strict=True))
    out = {v: (k.decode() if k else None) for v, k in found.items()}
    shaped = []
    for value, key in out.items():
        if key is None:
            try:
                shaped.append((value, pseudonym_str(parse_pseudonym(value))))
            except ValueError:
                continue
    if shaped:
        known = await client.hmget(IDS, [p for _, p in shaped])
        for (value, pseudonym), raw in zip(shaped, known, strict=True):
            out[value] = pseudonym if raw is not None else None
    return out


class Creator:
    """Get-or-create for ingest handlers (async): every raw id of a batch that the handler's
    cache lacks, in one script call per CHUNK ids."""

    def __init__(self, client: redis.asyncio.Redis):
        self._script = client.register_script(_GET_OR_CREATE)

    async def keys(self, device_ids: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        todo = list(device_ids)
        while todo:
            chunk, todo = todo[:CHUNK], todo[CHUNK:]
            found = await self._script(keys=[RAW_IDS, IDS], args=[_candidates(len(chunk)), *chunk])
            todo += _take(chunk, found, out)
        return out


def keys_for(client: redis.Redis, device_ids: list[str]) -> dict[str, int]:
    """`Creator.keys` from synchronous code (a replay of a raw file with raw ids)."""
    script = client.register_script(_GET_OR_CREATE)
    out: dict[str, int] = {}
    todo = list(dict.fromkeys(device_ids))
    while todo:
        chunk, todo = todo[:CHUNK], todo[CHUNK:]
        found = script(keys=[RAW_IDS, IDS], args=[_candidates(len(chunk)), *chunk])
        todo += _take(chunk, found, out)
    return out


def _candidates(n: int) -> str:
    """n random pseudonyms, 16 hex digits each, end to end (none of them 0)."""
    while True:
        drawn = os.urandom(8 * n).hex()
        if NONE not in drawn or all(drawn[i : i + 16] != NONE for i in range(0, len(drawn), 16)):
            return drawn


def _take(chunk: list[str], found: bytes, out: dict[str, int]) -> list[str]:
    """Each id's pseudonym from a script's answer into `out`; the ids to draw again (their
    candidate was another id's pseudonym: 1 in 2^64 an id)."""
    again = []
    for i, raw in enumerate(chunk):
        key = int(found[16 * i : 16 * i + 16], 16)
        if key:
            out[raw] = key
        else:
            again.append(raw)
    return again


def restore(client: redis.Redis, held: list[tuple[str, int]]) -> set[str]:
    """After Redis lost its data: the pairs a handler holds written back where the directory
    has neither; the raw ids whose entry is now another pair (drop them from the cache)."""
    script = client.register_script(_RESTORE)
    differ: set[str] = set()
    for i in range(0, len(held), CHUNK):
        args = [x for raw, key in held[i : i + CHUNK] for x in (raw, pseudonym_str(key))]
        differ.update(r.decode() for r in script(keys=[RAW_IDS, IDS], args=args))
    return differ


def migrate(client: redis.Redis) -> int:
    """Fill the raw -> pseudonym side from the pseudonym -> raw one (a directory written
    before both existed), once; how many entries were added. Existing pseudonyms stay."""
    if client.exists(MIGRATED):
        return 0
    added = 0
    batch: dict[bytes, bytes] = {}
    for key, raw in client.hscan_iter(IDS, count=CHUNK):
        batch[raw] = key
        if len(batch) >= CHUNK:
            added += _add_missing(client, batch)
            batch = {}
    added += _add_missing(client, batch)
    client.set(MIGRATED, 1)
    return added


def _add_missing(client: redis.Redis, pairs: dict[bytes, bytes]) -> int:
    pipe = client.pipeline(transaction=False)
    for raw, key in pairs.items():
        pipe.hsetnx(RAW_IDS, raw, key)
    return sum(pipe.execute())
