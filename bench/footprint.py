"""What a deployment keeps in Redis: bytes per WAL ping, per checkpointed device, per id.

Writes WAL entries in the user shard's format (batches of `--batch` pings as the ingest handler
sends them), a checkpoint of a user shard holding `--devices` devices and their id-directory
entries to a fresh embedded redis-server, and reads Redis's own `MEMORY USAGE` of each key.
`occupancy estimate` uses these figures (occupancy/capacity.py).

    .venv/bin/python bench/footprint.py [--devices 100000] [--batch 1000]
"""

import argparse
import platform
import random
import tempfile
from pathlib import Path

import redis

from engine.cells import index_batch
from engine.pseudonym import Directory, pseudonym_str
from engine.spec import EngineSpec
from engine.user import UserEngine
from state.id_directory import IDS, RAW_IDS
from state.redis_server import EmbeddedRedis
from state.wal import Wal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1_000)
    args = ap.parse_args()
    rng = random.Random(1)
    spec = EngineSpec()
    now = 1_710_000_000_000
    ids = [f"vehicle-{i:07d}" for i in range(args.devices)]
    directory = Directory(1)
    keys = [directory.key(d) for d in ids]
    lats = [52.6 + rng.random() * 0.15 for _ in ids]
    lngs = [-8.7 + rng.random() * 0.15 for _ in ids]
    cells = index_batch(lats, lngs, spec.res).tolist()
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp))
        client = redis.Redis.from_url(server.start())
        try:
            wal = Wal(client, "user-0")
            engine = UserEngine(spec)
            for s in range(0, args.devices, args.batch):
                e = s + args.batch
                entry = {
                    "dev": keys[s:e],
                    "ts": [now + i for i in range(s, e)],
                    "cell": cells[s:e],
                    "lat": lats[s:e],
                    "lng": lngs[s:e],
                    "now": now + e,
                }
                wal.append(entry)
                engine.ingest(keys[s:e], entry["ts"], cells[s:e], lats[s:e], lngs[s:e], now + e)
            wal_bytes = client.memory_usage(wal.stream, samples=0)
            wal.save_checkpoint(engine.snapshot(), "1-0")
            ckpt_bytes = client.memory_usage(wal.ckpt_key, samples=0)
            pipe = client.pipeline(transaction=False)
            for raw, key in zip(ids, keys, strict=True):
                pipe.hset(IDS, pseudonym_str(key), raw)
                pipe.hset(RAW_IDS, raw, pseudonym_str(key))
            pipe.execute()
            id_bytes = client.memory_usage(IDS, samples=0)
            raw_id_bytes = client.memory_usage(RAW_IDS, samples=0)
        finally:
            server.stop()
    n = args.devices
    print(f"WAL (Redis stream)         {wal_bytes / n:8.1f} B/ping   ({wal_bytes:,} B for {n:,})")
    print(f"checkpoint (user shard)    {ckpt_bytes / n:8.1f} B/device ({ckpt_bytes:,} B)")
    print(f"id directory (key → raw)   {id_bytes / n:8.1f} B/device ({id_bytes:,} B)")
    print(f"id directory (raw → key)   {raw_id_bytes / n:8.1f} B/device ({raw_id_bytes:,} B)")


if __name__ == "__main__":
    main()
