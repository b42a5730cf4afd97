"""CPU a raw ping costs the archive's write to chDB, Arrow columns against JSON columns.

Writes the same 100,000 raw pings with `HistoryStore.write_pings` `--writes` times each way,
alternating, in one process, and prints the process's CPU (`getrusage`) a row, median [min-max].

    .venv/bin/python bench/archive_format.py [--rows 100000] [--writes 6]
"""

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import clickhouse.backends as backends
from clickhouse.store import HistoryStore
from engine.record import PingRecord


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def raw_pings(n: int) -> dict[str, list]:
    now = int(time.time() * 1000)
    rows = {
        "device": [(i * 0x9E3779B97F4A7C15) % 2**64 for i in range(n)],
        "ts": [now - 1_000 * (i % 600) for i in range(n)],
        "cell": [617_700_169_958_293_503 + i % 5_000 for i in range(n)],
        "lat": [52.6 + i * 1e-7 for i in range(n)],
        "lng": [-8.7 - i * 1e-7 for i in range(n)],
        "accuracy_m": [0.0] * n,
        "region": [""] * n,
        "attributes": [{}] * n,
        "received": [now] * n,
        "shard": ["user-0"] * n,
        "wal_ms": [now + i // 500 for i in range(n)],
        "wal_seq": [0] * n,
        "idx": [i % 500 for i in range(n)],
    }
    return {name: rows[name] for name in PingRecord.archive_columns()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--writes", type=int, default=6)
    args = ap.parse_args()
    columns = raw_pings(args.rows)
    arrow = backends.arrow_block
    paths = {"json": lambda *a: None, "arrow": arrow}
    out: dict[str, list[float]] = {name: [] for name in paths}
    with tempfile.TemporaryDirectory() as tmp:
        backend = backends.ChdbBackend(Path(tmp) / "ch")
        store = HistoryStore(backend)
        for i in range(args.writes):
            for name, path in paths.items():
                backends.arrow_block = path
                t = cpu_s()
                store.write_pings(columns, f"{name}-{i}")
                out[name].append((cpu_s() - t) / args.rows * 1e6)
        backends.arrow_block = arrow
        backend.close()
    print(f"# load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.rows:,} rows")
    for name, values in out.items():
        print(
            f"{name:>5}: {statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"
            " µs CPU a row"
        )


if __name__ == "__main__":
    main()
