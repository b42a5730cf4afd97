"""The benchmark suite: the engine beside what a user would pick instead, in one process tree.

Contenders, each fed the same fleet (devices spread over ~5k H3 cells, batches of 1,000 pings,
the same seed) for the same duration, each in a fresh process per run:

- engine: the live engine on embedded defaults (gRPC `SendPings` with 4 calls in flight, and
  per-message `StreamPings` from Node.js senders where node exists; queries over HTTP);
- redis: `peers.RedisCounts` (Lua per batch on the embedded redis-server, AOF on as for the
  engine), two loader processes;
- clickhouse: `peers.ChdbCounts` (raw pings into chDB, counts in SQL), one process;
- floor: `peers.floor_counts`, decode + H3 + numpy counts in one loop.

Per contender: the ingest rate (as fast as it goes), then with ingest paced at half that rate,
freshness (a ping at a new cell until a query shows it) and top-N/heatmap/dwell p50/p99 at 50
req/s (dwell: a random device of the fleet each request, today by the engine, since the start
by the peers, which keep no days).
History: minute aggregates over raw pings in SQL vs from the engine's presence pieces, on one
store built once, each query run `--repeat` times. Each other figure is the median of `--runs`
runs with [min–max]. `--write` puts the table in
BENCHMARKS.md between its markers.

    .venv/bin/python bench/run_all.py --quick [--write]
"""

import argparse
import json
import math
import multiprocessing
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from measure import free_port, open_loop, percentile
from query import AREA, freshness, ingest_load, position, timed_requests

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"
QUERY_RATE = 50.0


def make_batches(devices: int, rounds: int, base_ts: int) -> list[bytes]:
    """Every device once a round, moving a little each round; the rounds' times span at most
    55 s from `base_ts` (the engine refuses pings more than 30 s in its future)."""
    from protos.occupancy.v1 import occupancy_pb2 as pb

    step = min(1_000, 55_000 // rounds)
    out = []
    for r in range(rounds):
        for start in range(0, devices, 1_000):
            pings = []
            for i in range(start, min(devices, start + 1_000)):
                lat, lng = position(i)
                ts = base_ts + r * step
                pings.append(pb.Ping(device_id=f"d-{i}", ts_ms=ts, lat=lat, lng=lng + r * 1e-5))
            out.append(pb.SendPingsRequest(pings=pings).SerializeToString())
    return out


def _devices(devices: int):
    """The fleet's device ids in a random order, over and over: whose dwell each query asks."""
    rng = random.Random(3)
    while True:
        yield f"d-{rng.randrange(devices)}"


def _open_loop(fn, rate: float, seconds: float) -> list[float]:
    """Seconds each call took, `fn` called at `rate`/s for `seconds` (`measure.open_loop`)."""
    return [elapsed for elapsed, _ in open_loop(fn, rate, seconds)]


def _ms(values: list[float]) -> dict:
    return {"p50_ms": percentile(values, 0.5) * 1e3, "p99_ms": percentile(values, 0.99) * 1e3}


# -- contenders, each in its own process --------------------------------------------------------


def run_engine(args) -> dict:
    import grpc
    from ingest import bench_batched, bench_stream_node, node_client_ready

    from occupancy.runtime import Engine
    from occupancy.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(Settings(data_dir=Path(tmp), grpc_port=0, http_port=free_port())).start()
        try:
            key = engine.create_key("admin", "bench")
            auth = [("authorization", f"Bearer {key}")]
            target = f"127.0.0.1:{engine.grpc_port}"
            channel = grpc.insecure_channel(target)
            base = int(time.time() * 1000) - 60_000
            batches = make_batches(args.devices, args.rounds, base)
            base = int(time.time() * 1000) - 60_000  # the streams' own rounds, 1 s apart
            out = {"ingest": bench_batched(channel, auth, batches, args.seconds, 4)["pings_per_s"]}
            if node_client_ready():
                stream = bench_stream_node(target, auth, args.devices, base, args.seconds, 4, None)
                out["ingest_stream"] = stream["pings_per_s"]
            http = f"http://127.0.0.1:{engine.http_port}"
            headers = {"Authorization": f"Bearer {key}"}
            ctx = multiprocessing.get_context("spawn")
            load = ctx.Process(
                target=ingest_load,
                args=(target, key, args.devices, out["ingest"] / 2, time.monotonic() + 600),
            )
            load.start()
            try:
                time.sleep(2)
                bbox = ",".join(map(str, AREA))
                day = time.strftime("%Y-%m-%d", time.gmtime())
                devices = _devices(args.devices)
                queries = {
                    "top": (http + "/v1/top", {"n": 10, "res": 9}),
                    "heatmap": (http + "/v1/heatmap", {"bbox": bbox, "res": 9}),
                    "dwell": (lambda: f"{http}/v1/users/{next(devices)}/dwell", {"day": day}),
                }
                for name, (url, params) in queries.items():
                    timed_requests(url, headers, params, QUERY_RATE, 1.0)  # warm-up
                    lat, _ = timed_requests(url, headers, params, QUERY_RATE, args.seconds)
                    out[name] = _ms(lat)
                out["freshness"] = _ms(freshness(http, headers, target, key, args.probes))
            finally:
                load.kill()
            return out
        finally:
            engine.stop()


def _redis_loader(url: str, batches: list[bytes], rate: float | None, stop_at: float, q) -> None:
    from peers import RedisCounts

    peer = RedisCounts(url)
    sent, start, i = 0, time.monotonic(), 0
    while time.monotonic() < stop_at and (rate or i < len(batches)):
        if rate and sent > (time.monotonic() - start) * rate:
            time.sleep(0.002)
            continue
        sent += peer.ingest(batches[i % len(batches)])
        i += 1
    q.put((sent, time.monotonic() - start))


def _live_batches(devices: int, rounds: int) -> list[bytes]:
    return make_batches(devices, rounds, int(time.time() * 1000) - 60_000)


def run_redis(args) -> dict:
    from peers import RedisCounts, decode

    from engine.cells import cell_of
    from state.redis_server import EmbeddedRedis

    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp))
        url = server.start()
        stop = threading.Event()
        peer = RedisCounts(url)

        def expire():
            while not stop.wait(1.0):
                peer.expire()

        threading.Thread(target=expire, daemon=True).start()
        ctx = multiprocessing.get_context("spawn")
        try:
            batches = _live_batches(args.devices, args.rounds)
            q = ctx.Queue()
            loaders = [
                ctx.Process(
                    target=_redis_loader,
                    args=(url, batches[k::2], None, time.monotonic() + args.seconds, q),
                )
                for k in range(2)
            ]
            for p in loaders:
                p.start()
            parts = [q.get() for _ in loaders]
            out = {"ingest": sum(n for n, _ in parts) / max(e for _, e in parts)}
            load = [
                ctx.Process(
                    target=_redis_loader,
                    args=(url, batches[k::2], out["ingest"] / 4, time.monotonic() + 600, q),
                )
                for k in range(2)
            ]
            for p in load:
                p.start()
            try:
                time.sleep(2)
                _open_loop(lambda: peer.top(10), QUERY_RATE, 1.0)  # warm-up, as for the engine
                out["top"] = _ms(_open_loop(lambda: peer.top(10), QUERY_RATE, args.seconds))
                out["heatmap"] = _ms(_open_loop(peer.heatmap, QUERY_RATE, args.seconds))
                devices = _devices(args.devices)
                dwell = lambda: peer.dwell(next(devices))  # noqa: E731
                out["dwell"] = _ms(_open_loop(dwell, QUERY_RATE, args.seconds))
                fresh = []
                for k in range(args.probes):
                    probe = _probe_batch(k)
                    cell = decode(probe)[4][0]
                    assert cell == cell_of(-40.0 - k * 0.05, 150.0, 9)
                    t = time.perf_counter()
                    peer.ingest(probe)
                    while not peer.count(cell):
                        time.sleep(0.001)
                    fresh.append(time.perf_counter() - t)
                out["freshness"] = _ms(fresh)
            finally:
                for p in load:
                    p.kill()
            return out
        finally:
            stop.set()
            server.stop()


def _probe_batch(k: int) -> bytes:
    """One ping at a new cell far from the fleet (the engine's freshness probes' places)."""
    from protos.occupancy.v1 import occupancy_pb2 as pb

    ping = pb.Ping(
        device_id=f"probe-{k}", ts_ms=int(time.time() * 1000), lat=-40.0 - k * 0.05, lng=150.0
    )
    return pb.SendPingsRequest(pings=[ping]).SerializeToString()


def run_clickhouse(args) -> dict:
    from peers import ChdbCounts, decode

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        peer = ChdbCounts(Path(tmp) / "ch")
        lock = threading.Lock()  # one session: loading and queries take turns, as in one process
        batches = _live_batches(args.devices, args.rounds)
        sent, start, i = 0, time.monotonic(), 0
        while time.monotonic() - start < args.seconds and i < len(batches):
            sent += peer.ingest(batches[i])
            i += 1
        out = {"ingest": sent / (time.monotonic() - start)}
        stop = threading.Event()

        def paced(rate: float) -> None:
            sent, start, i = 0, time.monotonic(), 0
            while not stop.is_set():
                if sent > (time.monotonic() - start) * rate:
                    time.sleep(0.002)
                    continue
                with lock:
                    sent += peer.ingest(batches[i % len(batches)])
                i += 1

        loader = threading.Thread(target=paced, args=(out["ingest"] / 2,), daemon=True)
        loader.start()
        try:
            time.sleep(2)

            def locked(fn):
                def call():
                    with lock:
                        fn()

                return call

            _open_loop(locked(lambda: peer.top(10)), QUERY_RATE, 1.0)  # warm-up
            out["top"] = _ms(_open_loop(locked(lambda: peer.top(10)), QUERY_RATE, args.seconds))
            out["heatmap"] = _ms(_open_loop(locked(peer.heatmap), QUERY_RATE, args.seconds))
            devices = _devices(args.devices)
            dwell = locked(lambda: peer.dwell(next(devices)))
            out["dwell"] = _ms(_open_loop(dwell, QUERY_RATE, args.seconds))
            fresh = []
            for k in range(args.probes):
                probe = _probe_batch(k)
                cell = decode(probe)[4][0]
                t = time.perf_counter()
                with lock:
                    peer.ingest(probe)
                while True:
                    with lock:
                        if peer.count(cell):
                            break
                    time.sleep(0.001)
                fresh.append(time.perf_counter() - t)
            out["freshness"] = _ms(fresh)
        finally:
            stop.set()
            loader.join()
            peer.db.close()  # before the directory goes: chDB's merges write into it
        return out


def run_floor(args) -> dict:
    from peers import floor_counts

    batches = _live_batches(args.devices, args.rounds)
    t = time.perf_counter()
    n, _ = floor_counts(batches)
    return {"ingest": n / (time.perf_counter() - t)}


def run_history(args) -> dict:
    """Minute aggregates over a 10-minute window at res 9: SQL over the raw pings vs the
    engine's presence pieces (`cell_minutes`)."""
    from history import fill

    from clickhouse.backends import ChdbBackend
    from clickhouse.store import HistoryStore

    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(ChdbBackend(Path(tmp) / "ch"))
        devices = min(100_000, args.history_pings // 10)
        start = int(time.time() * 1000) - 30_000 * (args.history_pings // devices + 2)
        last = fill(store, devices, args.history_pings, start)["last"]
        end = last - last % 60_000 - 60_000
        window = {"start": end - 600_000, "end": end}
        raw_sql = (
            "SELECT cell, intDiv(ts, 60000) * 60000 AS minute, uniqExact(device) FROM raw_pings "
            "WHERE ts >= {start:Int64} AND ts < {end:Int64} GROUP BY cell, minute"
        )
        view_sql = "SELECT * FROM cell_minutes(start = {start:Int64}, end = {end:Int64})"
        out: dict = {"rows": args.history_pings, "raw": [], "presence": []}
        for _ in range(args.repeat):  # alternating, so drift in the machine hits both alike
            for name, sql in (("raw", raw_sql), ("presence", view_sql)):
                t = time.perf_counter()
                store.backend.rows(sql, window)
                out[name].append((time.perf_counter() - t) * 1e3)
        store.backend.close()
        return out


CONTENDERS = {
    "engine": run_engine,
    "redis": run_redis,
    "clickhouse": run_clickhouse,
    "floor": run_floor,
}


def _child(name: str, args, q) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        q.put(("ok", (CONTENDERS | {"history": run_history})[name](args)))
    except Exception as exc:
        q.put(("error", f"{type(exc).__name__}: {exc}"))


def run_fresh(name: str, args) -> dict:
    """One run of a contender in a fresh process (its own Ray, Redis or chDB)."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(name, args, q))
    p.start()
    status, value = q.get()
    p.join()
    if status != "ok":
        raise RuntimeError(f"{name}: {value}")
    return value


# -- the table ----------------------------------------------------------------------------------


def _stat(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _fmt(values: list[float], unit: str) -> str:
    if not values:
        return "–"
    med, lo, hi = _stat(values)
    if unit == "/s":
        return f"{med:,.0f} [{lo:,.0f}–{hi:,.0f}]"
    return f"{med:.1f} [{lo:.1f}–{hi:.1f}] ms"


def _ratio(engine: list[float], other: list[float], higher_is_better: bool) -> str:
    if not engine or not other:
        return "–"
    e, o = statistics.median(engine), statistics.median(other)
    return f"{(e / o if higher_is_better else o / e):.2f}×"


def table(results: dict[str, list[dict]], history: list[dict], args) -> str:
    def series(name: str, path: str) -> list[float]:
        out = []
        for run in results.get(name, []):
            value = run
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None and not math.isnan(value):
                out.append(value)
        return out

    metrics = [
        ("ingest, pings/s", "ingest", "/s", True),
        ("freshness p99", "freshness.p99_ms", "ms", False),
        ("top-10 p99 at 50 req/s", "top.p99_ms", "ms", False),
        ("heatmap (~5k cells) p99 at 50 req/s", "heatmap.p99_ms", "ms", False),
        ("dwell of one device p99 at 50 req/s", "dwell.p99_ms", "ms", False),
    ]
    lines = [
        "| figure | engine | redis | clickhouse (chDB) | floor | engine ÷ redis | "
        "engine ÷ clickhouse | engine ÷ floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, path, unit, better_high in metrics:
        e = series("engine", path)
        row = [label, *(_fmt(series(n, path), unit) for n in CONTENDERS)]
        row += [_ratio(e, series(n, path), better_high) for n in ("redis", "clickhouse", "floor")]
        lines.append("| " + " | ".join(row) + " |")
    stream = series("engine", "ingest_stream")
    if stream:
        lines.append(
            f"| ingest, per-message `StreamPings` | {_fmt(stream, '/s')} | – | – | – | – | – | – |"
        )
    if history:
        raw, pres = history[0]["raw"], history[0]["presence"]
        lines += [
            "",
            f"History, {history[0]['rows']:,} raw pings: cell-minute counts of 10 minutes at res 9 "
            f"({args.repeat} runs of each query on one store, alternating)",
            "",
            "| query | median [min–max] | presence ÷ raw |",
            "|---|---:|---:|",
            f"| SQL over the raw pings | {_fmt(raw, 'ms')} | |",
            f"| the engine's presence pieces (`cell_minutes`) | {_fmt(pres, 'ms')} | "
            f"{statistics.median(pres) / statistics.median(raw):.2f}× the time |",
        ]
    cpu = platform.processor() or platform.machine()
    head = [
        f"- Command: `.venv/bin/python bench/run_all.py {' '.join(args.argv)}`",
        f"- Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}; "
        f"date {time.strftime('%Y-%m-%d')}.",
        f"- {args.runs} runs of each contender, each in a fresh process; median [min–max]. "
        f"{args.devices:,} devices, {args.seconds:g} s per phase, {args.probes} freshness probes.",
        "- Ratios: engine ÷ peer for rates (above 1: the engine is faster), peer ÷ engine for "
        "latencies (above 1: the engine answers sooner).",
        "",
    ]
    return "\n".join(head + lines)


def write(text: str) -> None:
    doc = BENCHMARKS.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc:
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, doc, flags=re.S)
    else:
        doc += f"\n## The engine beside its peers (`bench/run_all.py`)\n\n{block}\n"
    BENCHMARKS.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short phases, 1M history rows")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--devices", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--history-pings", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=10, help="runs of each history query")
    ap.add_argument("--only", default=None, help="comma-separated contenders (and history)")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    args.seconds = args.seconds or (5.0 if args.quick else 15.0)
    args.history_pings = args.history_pings or (1_000_000 if args.quick else 10_000_000)
    args.rounds = max(2, math.ceil(args.seconds * 200_000 / args.devices))
    names = args.only.split(",") if args.only else [*CONTENDERS, "history"]
    started = time.monotonic()
    results: dict[str, list[dict]] = {}
    history: list[dict] = []
    for run in range(args.runs):
        for name in names:
            if name == "history" and run:
                continue  # one store, built once; its figures are `--repeat` query runs
            t = time.monotonic()
            value = run_fresh(name, args)
            (history if name == "history" else results.setdefault(name, [])).append(value)
            print(f"run {run + 1} {name:10s} {time.monotonic() - t:5.0f} s  {json.dumps(value)}")
    text = table(results, history, args)
    print()
    print(text)
    print(f"\n# {time.monotonic() - started:.0f} s in all")
    if args.write:
        write(text)


if __name__ == "__main__":
    main()
