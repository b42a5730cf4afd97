"""What a user would build instead of the engine, for the same job: live counts per H3 cell from a
stream of ping batches, top-N and heatmap queries, and the floor of this machine.

- `RedisCounts`: pipelined GEOADD plus per-cell counters (a hash) and a sorted set for top-N,
  one Lua script per batch; a device's previous cell is kept so a move decrements it, and the
  time since its previous ping (capped at the TTL) is added to its dwell in that cell (a hash a
  device); a second script, run every second, expires devices silent for the TTL.
- `ChdbCounts`: raw pings inserted into ClickHouse (chDB, in process); counts computed with SQL
  from each device's latest ping within the TTL, dwell from each ping to the device's next.
- `floor_counts`: decode the batches, H3-index them, count them with numpy: no state, no network.

Each takes the same serialized `SendPingsRequest`s the engine's gRPC API takes.
"""

import time
from pathlib import Path

import numpy as np
import redis

from engine.cells import index_batch
from protos.occupancy.v1 import occupancy_pb2 as pb

RES = 9
TTL_MS = 120_000

INGEST = f"""
local TTL = {TTL_MS}
local now = tonumber(ARGV[1])
for i = 2, #ARGV, 5 do
  local dev, ts, cell = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  redis.call('GEOADD', 'peer:pos', ARGV[i + 4], ARGV[i + 3], dev)
  local old = redis.call('HGET', 'peer:devcell', dev)
  local last = redis.call('ZSCORE', 'peer:seen', dev)
  if old and last and ts > tonumber(last) then  -- dwell: the time since its last ping, capped
    redis.call('HINCRBY', 'peer:dwell:' .. dev, old, math.min(ts - tonumber(last), TTL))
  end
  if old ~= cell then
    if old then
      redis.call('HINCRBY', 'peer:cells', old, -1)
      redis.call('ZINCRBY', 'peer:top', -1, old)
    end
    redis.call('HSET', 'peer:devcell', dev, cell)
    redis.call('HINCRBY', 'peer:cells', cell, 1)
    redis.call('ZINCRBY', 'peer:top', 1, cell)
  end
  redis.call('ZADD', 'peer:seen', ts, dev)
end
return #ARGV
"""

EXPIRE = """
local gone = redis.call('ZRANGEBYSCORE', 'peer:seen', '-inf', ARGV[1])
for _, dev in ipairs(gone) do
  local cell = redis.call('HGET', 'peer:devcell', dev)
  if cell then
    redis.call('HINCRBY', 'peer:cells', cell, -1)
    redis.call('ZINCRBY', 'peer:top', -1, cell)
    redis.call('HDEL', 'peer:devcell', dev)
  end
  redis.call('ZREM', 'peer:seen', dev)
  redis.call('ZREM', 'peer:pos', dev)
end
redis.call('ZREMRANGEBYSCORE', 'peer:top', '-inf', 0)
return #gone
"""


def decode(batch: bytes) -> tuple[list[str], list[int], list[float], list[float], list[int]]:
    """ids, timestamps, lats, lngs and H3 cells of a serialized SendPingsRequest."""
    pings = pb.SendPingsRequest.FromString(batch).pings
    ids = [p.device_id for p in pings]
    ts = [p.ts_ms for p in pings]
    lats = [p.lat for p in pings]
    lngs = [p.lng for p in pings]
    return ids, ts, lats, lngs, index_batch(lats, lngs, RES).tolist()


class RedisCounts:
    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url)
        self.ingest_script = self.client.register_script(INGEST)
        self.expire_script = self.client.register_script(EXPIRE)

    def ingest(self, batch: bytes) -> int:
        ids, ts, lats, lngs, cells = decode(batch)
        args: list = [int(time.time() * 1000)]
        for d, t, la, ln, c in zip(ids, ts, lats, lngs, cells, strict=True):
            args += [d, t, c, la, ln]
        self.ingest_script(args=args)
        return len(ids)

    def expire(self) -> int:
        return self.expire_script(args=[int(time.time() * 1000) - TTL_MS])

    def top(self, n: int) -> list[tuple[int, int]]:
        return [(int(c), int(s)) for c, s in self.client.zrevrange("peer:top", 0, n - 1, True)]

    def heatmap(self) -> dict[int, int]:
        return {int(c): int(n) for c, n in self.client.hgetall("peer:cells").items() if int(n)}

    def count(self, cell: int) -> int:
        return int(self.client.hget("peer:cells", str(cell)) or 0)

    def dwell(self, device: str) -> dict[int, int]:
        """Milliseconds per cell (every day together: the peer keeps no days)."""
        return {int(c): int(ms) for c, ms in self.client.hgetall(f"peer:dwell:{device}").items()}


class ChdbCounts:
    """One process owns the chDB data dir: loading and queries share it."""

    COLUMNS = ("device", "ts", "cell", "lat", "lng")

    def __init__(self, data_dir: Path):
        from clickhouse.backends import ChdbBackend

        self.db = ChdbBackend(data_dir)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS peer_pings (device String, ts Int64, cell UInt64, "
            "lat Float64, lng Float64) ENGINE = MergeTree ORDER BY (ts, device)"
        )

    def ingest(self, batch: bytes) -> int:
        ids, ts, lats, lngs, cells = decode(batch)
        rows = list(zip(ids, ts, cells, lats, lngs, strict=True))
        self.db.insert("peer_pings", self.COLUMNS, rows)
        return len(ids)

    def _latest(self) -> str:
        return (
            "SELECT device, argMax(cell, ts) AS c FROM peer_pings "
            "WHERE ts > {since:Int64} GROUP BY device"
        )

    def top(self, n: int) -> list[tuple[int, int]]:
        since = int(time.time() * 1000) - TTL_MS
        rows = self.db.rows(
            f"SELECT c, count() AS k FROM ({self._latest()}) GROUP BY c "
            "ORDER BY k DESC, c LIMIT {n:UInt32}",
            {"since": since, "n": n},
        )
        return [(int(c), int(k)) for c, k in rows]

    def heatmap(self) -> dict[int, int]:
        since = int(time.time() * 1000) - TTL_MS
        rows = self.db.rows(
            f"SELECT c, count() FROM ({self._latest()}) GROUP BY c", {"since": since}
        )
        return {int(c): int(k) for c, k in rows}

    def dwell(self, device: str) -> dict[int, int]:
        """Milliseconds per cell: each ping to the device's next (at most the TTL)."""
        rows = self.db.rows(
            "SELECT cell, sum(if(next > ts, least(next - ts, {ttl:Int64}), 0)) AS ms FROM ("
            "SELECT cell, ts, leadInFrame(ts) OVER (ORDER BY ts ROWS BETWEEN CURRENT ROW AND "
            "1 FOLLOWING) AS next FROM peer_pings WHERE device = {device:String}) GROUP BY cell "
            "HAVING ms > 0",
            {"device": device, "ttl": TTL_MS},
        )
        return {int(c): int(ms) for c, ms in rows}

    def count(self, cell: int) -> int:
        since = int(time.time() * 1000) - TTL_MS
        rows = self.db.rows(
            "SELECT count() FROM (SELECT device, argMax(cell, ts) AS c FROM peer_pings "
            "WHERE ts > {since:Int64} AND device IN (SELECT device FROM peer_pings "
            "WHERE cell = {cell:UInt64} AND ts > {since:Int64}) GROUP BY device) "
            "WHERE c = {cell:UInt64}",
            {"since": since, "cell": cell},
        )
        return int(rows[0][0]) if rows else 0


def floor_counts(batches: list[bytes]) -> tuple[int, dict[int, int]]:
    """The least work the job needs: decode, index, count per cell (numpy)."""
    total = 0
    cells_all = []
    for batch in batches:
        pings = pb.SendPingsRequest.FromString(batch).pings
        lats = np.fromiter((p.lat for p in pings), float, len(pings))
        lngs = np.fromiter((p.lng for p in pings), float, len(pings))
        cells_all.append(index_batch(lats, lngs, RES))
        total += len(pings)
    cells, counts = np.unique(np.concatenate(cells_all), return_counts=True)
    return total, dict(zip(cells.tolist(), counts.tolist(), strict=True))
