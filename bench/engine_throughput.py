"""In-process throughput of the pure engine: validation + H3 + one user shard + cell counts.

Prints pings/s for each stage and the memory per tracked device. No Ray, no network: this is the
ceiling the actors' per-ping work sits under.

    .venv/bin/python bench/engine_throughput.py [--devices 100000] [--batch 1000]
"""

import argparse
import gc
import platform
import random
import time
import tracemalloc

from engine.cells import index_batch
from engine.local import LocalCluster
from engine.membership import PlaceCounts
from engine.pseudonym import Directory
from engine.spec import EngineSpec
from engine.user import UserEngine
from engine.validation import check_ping


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(1)
    spec = EngineSpec()
    now = 1_710_000_000_000
    ids = [f"device-{i}" for i in range(args.devices)]
    known = Directory(1)
    keys = [known.key(d) for d in ids]
    lats = [52.6 + rng.random() * 0.15 for _ in ids]
    lngs = [-8.7 + rng.random() * 0.15 for _ in ids]
    n = args.devices * args.rounds
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}")

    t = time.perf_counter()
    for r in range(args.rounds):
        for i in range(args.devices):
            check_ping(ids[i], now + r, lats[i], lngs[i], now + r, spec.limits)
    report("validate", n, time.perf_counter() - t)

    t = time.perf_counter()
    for _ in range(args.rounds):
        cells = index_batch(lats, lngs, spec.res).tolist()
    report("h3 index", n, time.perf_counter() - t)

    t = time.perf_counter()
    directory = Directory(1)  # first sight, then known (live ingest: a cache, then Redis)
    for _ in range(args.rounds):
        for i in range(args.devices):
            directory.key(ids[i])
    report("pseudonym (directory)", n, time.perf_counter() - t)

    t = time.perf_counter()
    feed(spec, keys, lats, lngs, args, now)
    report("user shard + cell counts", n, time.perf_counter() - t)
    gc.collect()
    tracemalloc.start()
    kept = feed(spec, keys, lats, lngs, args, now)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"memory per device (user shard + counts): {current / args.devices:.0f} B")
    del kept

    cluster = LocalCluster(spec)
    from engine.local import RawPing

    pings = [RawPing(ids[i], now, lats[i], lngs[i]) for i in range(args.devices)]
    t = time.perf_counter()
    for s in range(0, args.devices, args.batch):
        cluster.ingest(pings[s : s + args.batch], now)
    report("LocalCluster end to end", args.devices, time.perf_counter() - t)
    del cells


def feed(spec, keys, lats, lngs, args, now):
    """Every device pings `rounds` times, 5 s apart, in batches; moves go to one PlaceCounts."""
    user = UserEngine(spec)
    counts = PlaceCounts()
    for r in range(args.rounds):
        ts = now + r * 5_000
        for s in range(0, args.devices, args.batch):
            e = s + args.batch
            jitter = [(x + r * 0.0003) for x in lats[s:e]]
            batch_cells = index_batch(jitter, lngs[s:e], spec.res).tolist()
            user.ingest(keys[s:e], [ts] * (e - s), batch_cells, jitter, lngs[s:e], ts)
            moves, _ = user.drain_moves()
            counts.update_many((m.device, (m.new,) if m.new else (), m.seq) for m in moves)
    return user, counts


def report(stage: str, n: int, seconds: float) -> None:
    print(f"{stage:28s} {n / seconds:>12,.0f} pings/s  ({seconds * 1e6 / n:.2f} µs/ping)")


if __name__ == "__main__":
    main()
