"""History store throughput and query latency at scale, on embedded chDB.

Writes `--pings` raw pings (default 10M: `--devices` devices reporting every 30 s, in WAL-sized
batches as the snapshotter writes them) and the presence pieces the engine derives from them
(computed by the engine code, as `occupancy replay` does), timing the writes; then times each
history query `--repeat` times and prints p50/p99.

    .venv/bin/python bench/history.py [--pings 10000000] [--devices 100000]

With `--days D` the rounds are spread over the last D days instead of 30 s apart, a polygon
space covers the middle of the area, the snapshotter's roll-up keeps its final hours and days
(clickhouse/series.py), and series of that space are timed: `--days 30` gives the 30-day hourly
series of BENCHMARKS.md.
"""

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from measure import percentile

from actors.archive import ping_columns
from clickhouse.backends import ChdbBackend
from clickhouse.store import HistoryStore
from engine.cells import index_batch
from engine.geo import BBox
from engine.record import PingRecord
from engine.series import STEPS, edges, zone
from engine.spec import EngineSpec
from engine.timeutil import DAY_MS
from engine.user import UserEngine

AREA = BBox(-8.80, 52.53, -8.50, 52.77)
BATCH = 100_000
SPACE = "bench-centre"  # a box of 0.06 by 0.05 degrees in the middle of the area
_W, _S = -8.68, 52.625
CENTRE = {
    "type": "Polygon",
    "coordinates": [[[_W, _S], [_W + 0.06, _S], [_W + 0.06, _S + 0.05], [_W, _S + 0.05], [_W, _S]]],
}


def generate(devices: int, pings: int, start: int, seed: int, interval: int = 30_000):
    """Batches of (devices, ts, lats, lngs) in arrival order: every device once per round
    (`interval` ms apart), moving a little each time."""
    rng = random.Random(seed)
    lat = [rng.uniform(AREA.min_lat, AREA.max_lat) for _ in range(devices)]
    lng = [rng.uniform(AREA.min_lng, AREA.max_lng) for _ in range(devices)]
    rounds = -(-pings // devices)
    sent = 0
    for r in range(rounds):
        t = start + r * interval
        for lo in range(0, devices, BATCH):
            hi = min(devices, lo + BATCH, lo + pings - sent)
            if hi <= lo:
                return
            ids = list(range(lo, hi))
            for i in ids:
                lat[i] += rng.uniform(-0.0005, 0.0005)
                lng[i] += rng.uniform(-0.0008, 0.0008)
            yield ids, [t + (i % 30_000) for i in ids], [lat[i] for i in ids], [lng[i] for i in ids]
            sent += hi - lo


def fill(store: HistoryStore, devices: int, pings: int, start: int, interval: int = 30_000) -> dict:
    """Write `pings` raw pings and the presence pieces the engine derives from them, as the
    snapshotter would; the time each part took."""
    spec = EngineSpec()
    engine = UserEngine(spec)
    engine.define_space(SPACE, CENTRE)
    out = dict.fromkeys(("raw_s", "presence_s", "engine_s"), 0.0)
    out.update(raw_rows=0, presence_rows=0, last=start)
    for n, (ids, ts, lats, lngs) in enumerate(generate(devices, pings, start, 1, interval)):
        t0 = time.perf_counter()
        cells = index_batch(lats, lngs, spec.res).tolist()
        recv = max(ts)
        engine.ingest(ids, ts, cells, lats, lngs, recv)
        engine.drain_moves()
        engine.advance(recv)
        engine.drain_moves()
        mark, pieces = engine.history_export(recv)
        engine.history_confirm(mark)
        t1 = time.perf_counter()
        pings = PingRecord(ids, ts, cells, lats, lngs, now=recv)
        columns, _ = ping_columns("user-0", [(f"{recv}-{n}", pings.to_log())])  # as archived
        store.write_pings(columns, f"bench:{n}")
        t2 = time.perf_counter()
        store.write_presence(pieces, n)
        t3 = time.perf_counter()
        out["engine_s"] += t1 - t0
        out["raw_s"] += t2 - t1
        out["presence_s"] += t3 - t2
        out["raw_rows"] += len(pings)
        out["presence_rows"] += len(pieces)
        out["last"] = recv
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pings", type=int, default=10_000_000)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--days", type=float, default=0, help="spread the pings over so many days")
    args = ap.parse_args()
    now = int(time.time() * 1000)
    rounds = -(-args.pings // args.devices)
    interval = int(args.days * DAY_MS / rounds) if args.days else 30_000
    start = now - rounds * interval - 60_000
    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(ChdbBackend(Path(tmp) / "ch"))
        f = fill(store, args.devices, args.pings, start, interval)
        raw_rows, presence_rows, last = f["raw_rows"], f["presence_rows"], f["last"]
        raw_s, presence_s, engine_s = f["raw_s"], f["presence_s"], f["engine_s"]
        print(f"# {raw_rows:,} raw pings of {args.devices:,} devices; {os.cpu_count()} cores")
        print(f"raw pings written     {raw_rows / raw_s:12,.0f} rows/s  ({raw_s:.1f} s)")
        print(
            f"presence pieces       {presence_rows / presence_s:12,.0f} rows/s  "
            f"({presence_rows:,} rows, {presence_s:.1f} s)"
        )
        print(f"engine (replay path)  {raw_rows / engine_s:12,.0f} pings/s")
        du = sum(p.stat().st_size for p in (Path(tmp) / "ch").rglob("*") if p.is_file())
        print(f"on disk               {du / raw_rows:12.1f} bytes/ping ({du / 1e6:,.0f} MB)")
        for table, size, count in store.backend.rows(
            "SELECT table, sum(bytes_on_disk), sum(rows) FROM system.parts "
            "WHERE active AND database = currentDatabase() GROUP BY table ORDER BY table"
        ):
            print(
                f"  {table:20s}{int(size) / raw_rows:12.1f} bytes/ping "
                f"({int(count):,} rows, {int(size) / max(1, int(count)):.1f} bytes/row)"
            )

        if args.days:
            series(store, args.repeat, now)
            store.backend.close()
            return
        at = last - 5 * 60_000
        mid = (AREA.min_lat + AREA.max_lat) / 2, (AREA.min_lng + AREA.max_lng) / 2
        small = BBox(mid[1] - 0.01, mid[0] - 0.01, mid[1] + 0.01, mid[0] + 0.01)
        queries = {
            "heatmap at= (res 9)": lambda: store.heatmap(9, at, AREA),
            "top-10 at= (res 7)": lambda: store.top(10, 7, at, None),
            "path (one device, all)": lambda: store.path(random.randrange(args.devices), 0, now),
            "devices in bbox, 10 min": lambda: store.devices_in_area(at - 600_000, at, small),
            "distance, 10 min": lambda: store.distance(at - 600_000, at),
            "dwell (one device-day)": lambda: store.dwell(random.randrange(args.devices), at),
        }
        for name, run in queries.items():
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                run()
                times.append((time.perf_counter() - t) * 1000)
            print(
                f"{name:26s} p50 {percentile(times, 0.5):8.1f} ms   "
                f"p99 {percentile(times, 0.99):8.1f} ms"
            )
        store.backend.close()


def series(store: HistoryStore, repeat: int, now: int) -> None:
    """The snapshotter's roll-up of every final hour (older than the default max ping age of
    7 days and its margin), then series of the space: what the API's history call runs."""
    final = now - EngineSpec().limits.max_age_ms - 120_000
    t = time.perf_counter()
    mark, rounds = 0, 0
    while (new := store.roll_up(final)) != mark:
        mark, rounds = new, rounds + 1
    print(f"roll-up of the final hours  {time.perf_counter() - t:8.1f} s in {rounds} rounds")
    month = now - 30 * DAY_MS
    cases = {
        "30 days hourly, UTC": (month, STEPS["1h"], "UTC", True),
        "30 days hourly, Dublin": (month, STEPS["1h"], "Europe/Dublin", True),
        "30 days daily, UTC": (month, STEPS["1d"], "UTC", True),
        "30 days hourly, pieces only": (month, STEPS["1h"], "UTC", False),
        "last 24 h, 15 min": (now - DAY_MS, STEPS["15m"], "UTC", True),
    }
    for name, (t0, step, tz, rolled) in cases.items():
        cuts = edges(t0, now, step, zone(tz))
        run = store.space_series if rolled else store.place_series
        times, total = [], 0
        for _ in range(repeat):
            t = time.perf_counter()
            total = sum(run(SPACE, 9, cuts, now + 1))
            times.append((time.perf_counter() - t) * 1000)
        print(
            f"series {name:28s} p50 {percentile(times, 0.5):8.1f} ms   "
            f"p99 {percentile(times, 0.99):8.1f} ms   ({len(cuts) - 1} buckets, sum {total:,})"
        )


if __name__ == "__main__":
    main()
