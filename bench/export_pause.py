"""How long a user shard's history export holds its event loop, whole or in parts.

Every snapshot, history asks each user shard for the presence pieces it owes: a walk over every
present device. Whatever holds the shard's event loop that long delays every ingest call queued
behind it (the paced-stream ack p99). This builds one shard's engine in process (no Ray) with
`--devices` present devices, a tenth of them moving each round, then times:

- `whole`: the export in one call, then pickling its list of pieces in one go (what Ray did
  with the answer: one C call that holds the interpreter);
- `parts`: the export as the shard walks it now, `--part` devices at a time, each part packed
  with msgpack; the figure is the longest single part (the loop is let go between parts).

    .venv/bin/python bench/export_pause.py [--devices 100000] [--part 2000] [--repeat 5]
"""

import argparse
import gc
import pickle
import platform
import random
import time

from engine.cells import index_batch
from engine.pseudonym import Directory
from engine.spec import EngineSpec
from engine.user import UserEngine
from state.wal import pack


def build(devices: int, rounds: int = 6) -> tuple[UserEngine, int]:
    spec = EngineSpec()
    rng = random.Random(1)
    now = 1_710_000_000_000
    directory = Directory(1)
    keys = [directory.key(f"d{i}") for i in range(devices)]
    lats = [52.6 + rng.random() * 0.15 for _ in keys]
    lngs = [-8.7 + rng.random() * 0.15 for _ in keys]
    engine = UserEngine(spec)
    for r in range(rounds):
        t = now + r * 10_000
        for i in range(devices):
            if rng.random() < 0.1:
                lats[i] += 1e-3
        cells = index_batch(lats, lngs, spec.res).tolist()
        for s in range(0, devices, 1_000):
            e = min(devices, s + 1_000)
            engine.ingest(keys[s:e], [t] * (e - s), cells[s:e], lats[s:e], lngs[s:e], t)
        engine.drain_moves()
    gc.freeze()
    return engine, now + rounds * 10_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--part", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    engine, now = build(args.devices)
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"# {args.devices:,} present devices, parts of {args.part:,}, best of {args.repeat}")
    whole, pickled, longest, total = [], [], [], []
    for k in range(args.repeat):
        t = time.perf_counter()
        _, rows = engine.history_export(now + k)
        whole.append(time.perf_counter() - t)
        t = time.perf_counter()
        pickle.dumps(rows, protocol=5)
        pickled.append(time.perf_counter() - t)
        _, parts = engine.history_export_parts(now + k, args.part)
        worst, sum_ = 0.0, 0.0
        while True:
            t = time.perf_counter()
            rows = next(parts, None)
            if rows is None:
                break
            if rows:
                pack(rows)
            spent = time.perf_counter() - t
            worst, sum_ = max(worst, spent), sum_ + spent
        longest.append(worst)
        total.append(sum_)
    ms = lambda xs: f"{min(xs) * 1e3:8.1f} ms"  # noqa: E731
    print(f"whole: export {ms(whole)}, then pickling its pieces {ms(pickled)}: one hold each")
    print(f"parts: longest part {ms(longest)} (all parts together {ms(total)})")


if __name__ == "__main__":
    main()
