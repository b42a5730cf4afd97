"""What the lake adds to the archive: raw pings archived in log ranges as the snapshotter
writes them (`--batch` pings a log entry, MAX_ENTRIES entries a range), timing the Arrow block
built once per range, chDB's insert of it, and the lake's Parquet files of it, per ping.

    .venv/bin/python bench/lake.py [--pings 2000000] [--batch 500]
"""

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from actors.archive import MAX_ENTRIES, ping_columns
from clickhouse import lake as lakes
from clickhouse.backends import ChdbBackend
from clickhouse.lake import Lake
from clickhouse.store import HistoryStore
from engine.cells import index_batch
from engine.record import PingRecord


def ranges(pings: int, batch: int, start: int, seed: int = 1):
    """Log ranges as the archive reads them: (token, entries) of MAX_ENTRIES entries."""
    rng = random.Random(seed)
    entries, sent, n = [], 0, 0
    while sent < pings:
        k = min(batch, pings - sent)
        lats = [rng.uniform(52.53, 52.77) for _ in range(k)]
        lngs = [rng.uniform(-8.80, -8.50) for _ in range(k)]
        ts = [start + (sent + i) * 10 for i in range(k)]
        cells = index_batch(lats, lngs, 9).tolist()
        devs = [rng.randrange(100_000) for _ in range(k)]
        record = PingRecord(devs, ts, cells, lats, lngs, now=ts[-1] + 500)
        entries.append((f"{ts[-1] + 500}-{n}", record.to_log()))
        sent, n = sent + k, n + 1
        if len(entries) == MAX_ENTRIES or sent >= pings:
            yield f"user-0:{entries[0][0]}:{entries[-1][0]}", entries
            entries = []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pings", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    start = int(time.time() * 1000) - 86_400_000
    took = dict.fromkeys(("columns", "block", "chdb", "lake"), 0.0)
    files = size = rows = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(ChdbBackend(Path(tmp) / "ch"))
        lake = Lake(str(Path(tmp) / "lake"))
        for token, entries in ranges(args.pings, args.batch, start):
            t0 = time.perf_counter()
            columns, n = ping_columns("user-0", entries)
            t1 = time.perf_counter()
            block = lakes.exact_block("pings", columns)
            t2 = time.perf_counter()
            store.write_pings(columns, token, block)
            t3 = time.perf_counter()
            f, s = lake.write("pings", token, block)
            t4 = time.perf_counter()
            for part, dt in zip(took, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                took[part] += dt
            files, size, rows = files + f, size + s, rows + n
        store.backend.close()
    print(f"# {rows:,} raw pings, {args.batch} a log entry; {os.cpu_count()} cores")
    for part, s in took.items():
        print(f"{part:8} {s / rows * 1e6:6.2f} µs/ping  ({s:.1f} s)")
    print(f"lake     {files:,} files, {size / rows:.1f} bytes/ping")


if __name__ == "__main__":
    main()
