"""What the audit log costs, on an embedded redis-server and chDB, no engine.

- An HTTP request: the API's door and a route that answers at once, as an ASGI app in one event
  loop, with and without the audit trail (CPU time, alternated rounds): what the trail adds on
  the request's path, then what the writer's task spends per record when it flushes (the
  record built, the device id replaced by its pseudonym from the id directory, packed, sent in
  one script call per 1,000), and Redis's own CPU for them.
- A gRPC call: counting it in its window (what a handler adds per call).
- History: the stream drained into the `audit` table (records/s), the Redis memory a record
  takes while it waits, and the bytes a row takes in ClickHouse once merged.

    .venv/bin/python bench/audit.py [--requests 20000] [--rows 100000]
"""

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import redis
from fastapi import FastAPI, Request

from actors.archive import Archiver
from clickhouse.backends import ChdbBackend
from clickhouse.store import HistoryStore
from engine import audit as records
from engine.pseudonym import pseudonym_str
from observability import audit
from serve_apps.audit import AuditTrail
from serve_apps.guard import CREDENTIAL, Guard
from state import redis_client
from state.id_directory import IDS, RAW_IDS
from state.redis_server import EmbeddedRedis

DEVICES = 1_000


def _app(audited: bool) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/history/path/{device_id}")
    async def path(request: Request, device_id: str, to: str = ""):
        return {"points": []}

    app.add_middleware(Guard)
    if audited:
        app.add_middleware(AuditTrail)
    return app


async def _request(app, i: int) -> None:
    path = f"/v1/history/path/phone-{i % DEVICES}"
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": b"from=2026-11-24T08:00:00Z&to=2026-11-24T10:00:00Z",
             "headers": [(b"authorization", b"Bearer occ_admin_k")], "root_path": "",
             "scheme": "http", "server": ("bench", 80), "client": ("127.0.0.1", 1),
             "http_version": "1.1"}  # fmt: skip

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    await app(scope, receive, send)
    await asyncio.sleep(0)  # lets the writer's task run when it is due, as a server's loop does


def _redis_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


class _Queue:
    """A writer that only keeps what the trail hands it: the request's path alone."""

    def __init__(self):
        self.queued: list = []

    def add(self, make) -> None:
        self.queued.append(make)

    def count(self, key, duration_ms=0.0, **counts) -> None:
        pass


async def http_and_grpc(url: str, n: int, rounds: int = 5) -> None:
    client = redis.Redis.from_url(url)
    client.hset(RAW_IDS, mapping={f"phone-{i}": pseudonym_str(i + 1) for i in range(DEVICES)})
    client.hset(IDS, mapping={pseudonym_str(i + 1): f"phone-{i}" for i in range(DEVICES)})
    Guard.use(lambda key: ("a1b2c3d4e5f6", "admin"))
    queue = AuditTrail.writer = _Queue()
    route = _app(False).routes[-1]

    async def answer(scope, receive, send):  # what the door and a route leave in the scope
        scope[CREDENTIAL] = ("a1b2c3d4e5f6", "admin")
        scope["route"], scope["path_params"] = route, {"device_id": scope["path"][17:]}
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"points":[]}'})

    cpu: dict[AuditTrail | None, list[float]] = {None: [], AuditTrail(answer): []}
    for _ in range(rounds):  # alternated: the machine's load falls on both alike
        for trail in cpu:
            app = trail or answer
            t = time.process_time()
            for i in range(n):
                await _request(app, i)
            cpu[trail].append((time.process_time() - t) / n)
    base, trail = (statistics.median(v) for v in cpu.values())
    print(f"the audit trail on a request's path    {(trail - base) * 1e6:7.1f} µs CPU "
          f"(a bare ASGI answer: {base * 1e6:.1f} µs; median of {rounds})")  # fmt: skip
    fastapi = _app(False)
    t = time.process_time()
    for i in range(n):
        await _request(fastapi, i)
    print(f"  beside: the door and a FastAPI route {(time.process_time() - t) / n * 1e6:7.1f} µs")

    writer = audit.AuditWriter(url, 60.0)
    flushes = []
    for r in range(rounds):  # the writer's task: build, pseudonyms, pack, one script a 1,000
        client.delete(audit.STREAM)
        writer._queued = queue.queued[r * n : (r + 1) * n]
        redis_before, t = _redis_cpu(client), time.process_time()
        written = await writer.flush()
        flushes.append(
            ((time.process_time() - t) / written, (_redis_cpu(client) - redis_before) / written)
        )
    flush_cpu = statistics.median(f for f, _ in flushes)
    redis_cpu = statistics.median(r for _, r in flushes)
    print(f"the writer's flush, per record         {flush_cpu * 1e6:7.1f} µs CPU")
    print(f"Redis CPU per record                   {redis_cpu * 1e6:7.1f} µs")
    one = client.xrange(audit.STREAM, count=1)[0][1][b"r"]
    print(f"a record in the stream                 {len(one):7d} B packed")

    key = ("grpc", "a1b2c3d4e5f6", "ingest", "", "/occupancy.v1.IngestService/SendPings", 0, ())
    t = time.process_time()
    for _ in range(n * 5):
        writer.count(key, 1.0, items=1, accepted=1, late=0, rejected=0)
    per_call = (time.process_time() - t) / (n * 5)
    print(f"gRPC call counted in its window        {per_call * 1e6:7.2f} µs")
    await writer.close()


def _records(n: int, rng: random.Random) -> list[dict]:
    """A day's mix: a live page polling three routes, admins asking for paths, ingest counts."""
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        ts = now - (n - i) * 50
        kind = rng.random()
        if kind < 0.9:
            route = rng.choice(["/v1/heatmap", "/v1/top", "/v1/spaces"])
            params = {"bbox": "-8.70,52.62,-8.55,52.70", "res": str(rng.choice([7, 8, 9]))}
            r = records.record(
                ts, "http", route, key_id="3f2a9c1d0b7e", role="viewer", method="GET",
                params=params, status=200, duration_ms=rng.uniform(2, 40),
                bytes_out=rng.randint(500, 40_000),
            )  # fmt: skip
        elif kind < 0.97:
            params = {"from": str(ts - 7_200_000), "to": str(ts),
                      "device_id": pseudonym_str(rng.getrandbits(64))}  # fmt: skip
            r = records.record(ts, "http", "/v1/history/path/{device_id}", key_id="9b8e7d6c5a4f",
                               role="admin", method="GET", params=params, status=200,
                               duration_ms=rng.uniform(5, 200), bytes_out=rng.randint(100, 90_000),
                               rows=rng.randint(0, 2_000))  # fmt: skip
        else:
            r = records.record(ts - ts % 60_000, "grpc", "/occupancy.v1.IngestService/SendPings",
                               key_id="0e58f99e9cf2", role="ingest", status=0,
                               calls=rng.randint(100, 6_000), duration_ms=rng.uniform(1e3, 9e4),
                               params={"items": 50_000, "accepted": 49_990, "late": 10,
                                       "rejected": 0})  # fmt: skip
        out.append(r)
    return out


def drain(url: str, tmp: Path, rows: int) -> None:
    rows = min(rows, audit.KEEP)
    client = redis_client.connect(url)
    client.delete(audit.STREAM)
    batch = 10_000
    made = _records(rows, random.Random(7))
    for i in range(0, rows, batch):
        pipe = client.pipeline(transaction=False)
        for r in made[i : i + batch]:
            pipe.xadd(audit.STREAM, {"r": audit.entry(r)}, maxlen=audit.KEEP, approximate=True)
        pipe.execute()
    waiting = client.xlen(audit.STREAM)
    memory = client.memory_usage(audit.STREAM, samples=0)
    print(
        f"Redis while they wait                  {memory / waiting:7.1f} B a record "
        f"({waiting:,} records, {memory / 2**20:.1f} MiB; the cap is {audit.KEEP:,})"
    )
    backend = ChdbBackend(tmp / "ch")
    store = HistoryStore(backend)
    drain = audit.AuditDrain(client, Archiver(client, store).write_audit)
    t = time.perf_counter()
    written, _ = drain.run(budget=rows)
    dt = time.perf_counter() - t
    print(f"drained into ClickHouse                {written / dt:9,.0f} records/s "
          f"({written:,} in {dt:.2f} s, left {client.xlen(audit.STREAM)})")  # fmt: skip
    backend.execute("OPTIMIZE TABLE audit FINAL")
    size, count = backend.rows(
        "SELECT sum(data_compressed_bytes), sum(rows) FROM system.parts "
        "WHERE table = 'audit' AND active AND database = currentDatabase()"
    )[0]
    print(f"ClickHouse, merged                     {int(size) / int(count):7.1f} B a row "
          f"({int(count):,} rows, {int(size) / 2**20:.1f} MiB)")  # fmt: skip
    backend.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--rows", type=int, default=audit.KEEP, help="at most the stream's cap")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp))
        try:
            url = server.start()
            asyncio.run(http_and_grpc(url, args.requests))
            drain(url, Path(tmp), args.rows)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
