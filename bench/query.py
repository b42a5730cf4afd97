"""Query latency of the HTTP API while ingest runs, for each HTTP ingress mode
(occupancy/http_ingress.py): Serve's proxy, direct ingress to a replica, HAProxy.

For each mode, in a fresh process: start an engine, fill it with `--devices` devices spread over
~5,000 base cells, start a load-generator process sending batched pings at `--ingest-rate`, then
issue each query at `--rate` requests/s (open loop) for `--seconds` and print p50/p99:
top-N (n=10), a heatmap of the whole area (~5k cells at res 9), both at `--res`, as an admin and
as a viewer (under the privacy floor `--k-min`, 0: off), and dwell. Freshness: how long until a
ping to a fresh cell shows in `/v1/top` (p50/p99 over `--probes` probes).

    .venv/bin/python bench/query.py [--seconds 10] [--ingest-rate 70000] [--res 7 --k-min 3]

Live bodies are shared for 0.2 s and answered stale up to 0.6 s (serve_apps/api.py): at 50
requests/s most are served from that cache; below 1.5 requests/s every one is computed.
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from measure import free_port, open_loop, percentile

MODES = ("proxy", "direct", "haproxy")
AREA = (-8.80, 52.53, -8.50, 52.77)  # minLng, minLat, maxLng, maxLat: ~550 km², ~5k cells


def position(i: int) -> tuple[float, float]:
    # a fixed low-discrepancy spread over AREA
    u, v = (i * 0.6180339887) % 1, (i * 0.7548776662) % 1
    return AREA[1] + v * (AREA[3] - AREA[1]), AREA[0] + u * (AREA[2] - AREA[0])


def ingest_load(target: str, key: str, devices: int, rate: float, stop_at: float) -> None:
    """A separate process: every device pings in turn, batches of 1,000, at `rate` pings/s.

    It runs at the lowest CPU priority: it stands in for devices on other machines, so it takes
    the cores only when the engine leaves them idle."""
    os.nice(19)
    import grpc

    from protos.occupancy.v1 import occupancy_pb2 as pb

    call = grpc.insecure_channel(target).unary_unary("/occupancy.v1.IngestService/SendPings")
    auth = [("authorization", f"Bearer {key}")]
    positions = [position(i) for i in range(devices)]
    sent, start, i = 0, time.monotonic(), 0
    while time.monotonic() < stop_at:
        if sent > (time.monotonic() - start) * rate:
            time.sleep(0.002)
            continue
        now = int(time.time() * 1000)
        pings = []
        for _ in range(1_000):
            lat, lng = positions[i % devices]
            pings.append(pb.Ping(device_id=f"q-{i % devices}", ts_ms=now, lat=lat, lng=lng))
            i += 1
        try:
            call(pb.SendPingsRequest(pings=pings).SerializeToString(), metadata=auth, timeout=30)
        except grpc.RpcError:
            pass
        sent += 1_000


def timed_requests(url, headers: dict, params: dict, rate: float, seconds: float):
    """Open-loop GETs: latencies of the 200s, and how many answered otherwise. `url`: a string,
    or a function giving each request's."""
    import requests

    session_local = threading.local()

    def one() -> int:
        s = getattr(session_local, "s", None) or requests.Session()
        session_local.s = s
        at = url() if callable(url) else url
        return s.get(at, params=params, headers=headers, timeout=30).status_code

    results = open_loop(one, rate, seconds)
    return [dt for dt, code in results if code == 200], sum(code != 200 for _, code in results)


def freshness(base: str, headers: dict, target: str, key: str, probes: int) -> list[float]:
    import grpc
    import requests

    from engine.cells import cell_of, to_str
    from protos.occupancy.v1 import occupancy_pb2 as pb

    call = grpc.insecure_channel(target).unary_unary("/occupancy.v1.IngestService/SendPings")
    auth = [("authorization", f"Bearer {key}")]
    out = []
    for p in range(probes):
        lat, lng = -40.0 - p * 0.05, 150.0  # far from the load, a new cell each probe
        cell = to_str(cell_of(lat, lng, 9))
        box = f"{lng - 0.01},{lat - 0.01},{lng + 0.01},{lat + 0.01}"
        ping = pb.Ping(device_id=f"probe-{p}", ts_ms=int(time.time() * 1000), lat=lat, lng=lng)
        t = time.perf_counter()
        call(pb.SendPingsRequest(pings=[ping]).SerializeToString(), metadata=auth, timeout=30)
        while time.perf_counter() - t < 10:
            body = requests.get(
                base + "/v1/top", params={"n": 1, "bbox": box}, headers=headers, timeout=10
            ).json()
            if body.get("cells") and body["cells"][0]["cell"] == cell:
                out.append(time.perf_counter() - t)
                break
            time.sleep(0.005)
    return out


def _direct_http_port(app: str) -> int:
    from occupancy.http_ingress import replica_targets

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        targets = [t for t in replica_targets(app) if t["app"] == app]
        if targets:
            return targets[0]["port"]
        time.sleep(0.5)
    raise RuntimeError("no HTTP target for the app")


def run_mode(mode: str, args) -> dict:
    from occupancy.runtime import Engine
    from occupancy.settings import Settings

    result: dict = {"mode": mode}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            grpc_port=0,
            http_port=free_port(),
            http_ingress=mode,
            k_min=args.k_min,
        )
        engine = Engine(settings).start()
        try:
            ingest_key = engine.create_key("ingest", "bench")
            admin = engine.create_key("admin", "bench")
            headers = {"Authorization": f"Bearer {admin}"}
            viewer = {"Authorization": f"Bearer {engine.create_key('viewer', 'bench')}"}
            port = _direct_http_port("api") if mode == "direct" else engine.http_port
            base = f"http://127.0.0.1:{port}"
            target = f"127.0.0.1:{engine.grpc_port}"
            ctx = multiprocessing.get_context("spawn")
            # fill: every device once, then keep ingesting while querying
            fill = ctx.Process(
                target=ingest_load,
                args=(target, ingest_key, args.devices, 1e9, time.monotonic() + 1e9),
            )
            fill.start()
            time.sleep(max(3.0, args.devices / 50_000))
            fill.kill()
            heat = {"bbox": ",".join(map(str, AREA)), "res": args.res}
            import requests

            cells = len(
                requests.get(base + "/v1/heatmap", params=heat, headers=headers, timeout=30).json()[
                    "cells"
                ]
            )
            result["heatmap_cells"] = cells
            total = 3 * args.seconds + 30
            load = ctx.Process(
                target=ingest_load,
                args=(target, ingest_key, args.devices, args.ingest_rate, time.monotonic() + total),
            )
            load.start()
            time.sleep(2)
            day = time.strftime("%Y-%m-%d", time.gmtime())
            top = {"n": 10, "res": args.res}
            queries = {
                "top": ("/v1/top", top, headers),
                "heatmap": ("/v1/heatmap", heat, headers),
                "top_viewer": ("/v1/top", top, viewer),
                "heatmap_viewer": ("/v1/heatmap", heat, viewer),
                "dwell": ("/v1/users/q-7/dwell", {"day": day}, headers),
            }
            for name, (path, params, who) in queries.items():
                lat, errors = timed_requests(base + path, who, params, args.rate, args.seconds)
                result[name] = {
                    "p50_ms": percentile(lat, 0.5) * 1e3,
                    "p99_ms": percentile(lat, 0.99) * 1e3,
                    "errors": errors,
                }
            fresh = freshness(base, headers, target, ingest_key, args.probes)
            result["freshness"] = {
                "p50_ms": percentile(fresh, 0.5) * 1e3,
                "p99_ms": percentile(fresh, 0.99) * 1e3,
                "seen": len(fresh),
                "probes": args.probes,
            }
            load.kill()
            return result
        finally:
            engine.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=MODES)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--devices", type=int, default=20_000)
    ap.add_argument("--ingest-rate", type=float, default=70_000.0)
    ap.add_argument("--probes", type=int, default=30)
    ap.add_argument("--res", type=int, default=9, help="resolution of top and heatmap")
    ap.add_argument("--k-min", type=int, default=0, help="the privacy floor (OCC_K_MIN)")
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args)))
        return
    print(
        f"# {args.rate:.0f} req/s per query for {args.seconds:.0f} s while ingesting "
        f"{args.ingest_rate:,.0f} pings/s; {args.devices:,} devices; {os.cpu_count()} cores; "
        f"top and heatmap at res {args.res}, k_min {args.k_min}"
    )
    for mode in MODES:
        cmd = [sys.executable, __file__, "--mode", mode]
        for k, v in vars(args).items():
            if k != "mode":
                cmd += [f"--{k.replace('_', '-')}", str(v)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            print(f"{mode}: failed {out.stderr.strip().splitlines()[-3:]}")
            continue
        r = json.loads(lines[-1])
        print(f"{mode}: heatmap of {r['heatmap_cells']} cells")
        for name in ("top", "heatmap", "top_viewer", "heatmap_viewer", "dwell", "freshness"):
            m = r[name]
            extra = (
                f"seen {m['seen']}/{m['probes']}"
                if name == "freshness"
                else f"errors {m['errors']}"
            )
            print(f"  {name:14s} p50 {m['p50_ms']:7.1f} ms   p99 {m['p99_ms']:7.1f} ms   {extra}")


if __name__ == "__main__":
    main()
