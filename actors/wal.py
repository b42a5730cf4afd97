"""A shard's write-ahead log (a Redis stream) and its msgpack checkpoint."""

from collections.abc import Iterator

import msgpack
import redis

PREFIX = "occ"


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _after(stream_id: str) -> str:
    ms, seq = stream_id.split("-")
    return f"{ms}-{int(seq) + 1}"


class Wal:
    """Append before apply; checkpoint with the last applied entry's id; trim behind it.

    Recovery is `load_checkpoint()` then `entries_after(checkpoint id)`, applied in order.
    `next_epoch()` numbers the shard's incarnations so that receivers can tell a restarted
    shard's updates from the old one's.
    """

    def __init__(self, client: redis.Redis, shard: str):
        self.client = client
        self.stream = f"{PREFIX}:wal:{shard}"
        self.ckpt_key = f"{PREFIX}:ckpt:{shard}"
        self.epoch_key = f"{PREFIX}:epoch:{shard}"

    def next_epoch(self) -> int:
        return int(self.client.incr(self.epoch_key))

    def append(self, entry: dict) -> str:
        """Durable once this returns (Redis AOF, fsync every second)."""
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

    def save_checkpoint(self, state: dict, wal_id: str) -> None:
        """Store the state as of entry `wal_id` and drop the entries it covers."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.ckpt_key, pack({"wal_id": wal_id, "state": state}))
        if wal_id != "0-0":
            pipe.xtrim(self.stream, minid=_after(wal_id), approximate=False)
        pipe.execute()

    def length(self) -> int:
        return int(self.client.xlen(self.stream))

    def clear(self) -> None:
        self.client.delete(self.stream, self.ckpt_key, self.epoch_key)
