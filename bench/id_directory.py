"""What resolving raw ids costs an ingest handler, on an embedded redis-server, no engine.

Times one batch's look-up of `--batch` raw ids in the id directory (the Lua get-or-create that
every handler runs for the ids its cache lacks): ids never seen (each drawn and recorded) and
ids the directory has (a handler that did not see them lately). Beside it, what a handler did
per new id before pseudonyms were random: an HMAC each and one HSET of the batch.

    .venv/bin/python bench/id_directory.py [--batches 200] [--batch 1000]
"""

import argparse
import asyncio
import hashlib
import hmac
import tempfile
import time
from pathlib import Path

import redis

from engine.pseudonym import pseudonym_str
from state import id_directory, redis_client
from state.redis_server import EmbeddedRedis


async def run(url: str, batches: int, size: int) -> None:
    client = redis_client.connect_async(url)
    creator = id_directory.Creator(client)

    async def timed(label: str, call) -> None:
        t = time.perf_counter()
        for b in range(batches):
            await call(b)
        dt = time.perf_counter() - t
        rate = batches * size / dt
        print(f"{label:44s} {dt / batches * 1e3:6.2f} ms a batch  {rate:>9,.0f} ids/s")

    ids = [[f"new-{b}-{i}" for i in range(size)] for b in range(batches)]
    await timed("get-or-create, ids never seen", lambda b: creator.keys(ids[b]))
    await timed("get-or-create, ids the directory has", lambda b: creator.keys(ids[b]))

    async def before(b: int) -> None:
        mapping = {}
        for raw in ids[b]:
            digest = hmac.new(b"secret", ("old" + raw).encode(), hashlib.sha256).digest()
            mapping[pseudonym_str(int.from_bytes(digest[:8], "big"))] = raw
        await client.hset("bench:hmac", mapping=mapping)

    await timed("before: HMAC each + HSET, ids never seen", before)
    stats = redis.Redis.from_url(url).info("commandstats")
    lua = stats.get("cmdstat_evalsha", {})
    print(f"inside Redis: {lua.get('usec_per_call', 0) / 1e3:.2f} ms a get-or-create call")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp))
        try:
            asyncio.run(run(server.start(), args.batches, args.batch))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
