"""Live streams (`GET /v1/stream`) beside queries: do open streams hold the query replicas'
request slots? And how soon does a stream show a change?

One engine (HAProxy ingress), `--devices` devices pinging at `--ingest-rate` pings/s from a
load-generator process, `--streams` open viewer streams over a space and the area of the
devices; meanwhile `/v1/top` at `--rate` requests/s (open loop) for `--seconds`: p50/p99 and how
many answered at all within 10 s. Then push latency: a ping into an empty probe space, and the
time from its ack to the admin stream's event that counts it (`--probes` probes).

Two layouts, in turn, on the same engine:
- `stream app` (the engine's): streams go to the `StreamApi` deployment (route prefix
  /v1/stream), whose slots are for streams;
- `query replicas`: the stream app deleted, so HAProxy sends `/v1/stream` to the `QueryApi`
  replicas (the route is theirs too), where each open stream holds one of
  `max_ongoing_requests` for its life.

    .venv/bin/python bench/stream.py [--streams 100] [--rate 50] [--seconds 20]
"""

import argparse
import contextlib
import json
import multiprocessing
import socket
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import requests
from measure import free_port, open_loop, percentile
from query import AREA, ingest_load

PROBE = {  # a square of empty land west of the devices' area
    "type": "Polygon",
    "coordinates": [[[-9.0, 52.60], [-8.99, 52.60], [-8.99, 52.61], [-9.0, 52.61], [-9.0, 52.60]]],
}
CITY = {
    "type": "Polygon",
    "coordinates": [
        [[-8.70, 52.60], [-8.60, 52.60], [-8.60, 52.70], [-8.70, 52.70], [-8.70, 52.60]]
    ],
}


class Stream:
    """An open SSE stream read by a thread over a plain socket (so that `close` from another
    thread ends the read): the `counts` events' data, with when they came."""

    def __init__(self, url: str, key: str, params: dict):
        self.events: list[tuple[float, dict]] = []
        self.status = 0
        self.sock: socket.socket | None = None
        self.changed = threading.Condition()
        threading.Thread(target=self._read, args=(url, key, params), daemon=True).start()

    def _read(self, url, key, params) -> None:
        parts = urlsplit(url)
        try:
            self.sock = socket.create_connection((parts.hostname, parts.port), timeout=120)
            head = (
                f"GET {parts.path}?{urlencode(params)} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
            )
            self.sock.sendall(head.encode())
            lines = self.sock.makefile("rb")
            self.status = int(lines.readline().split()[1])
            event = None
            for raw in lines:  # chunk sizes come as lines of their own: they match nothing
                line = raw.decode().rstrip("\r\n")
                if line == "event: counts":
                    event = "counts"
                elif line.startswith("data: ") and event == "counts":
                    with self.changed:
                        self.events.append((time.perf_counter(), json.loads(line[6:])))
                        self.changed.notify_all()
                    event = None
        except (OSError, ValueError, IndexError):
            self.status = self.status or -1

    def wait(self, wanted, timeout: float) -> float | None:
        """When the first event satisfying `wanted(data)` came (None: none within `timeout`)."""
        deadline = time.perf_counter() + timeout
        with self.changed:
            while True:
                for at, data in self.events:
                    if wanted(data):
                        return at
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                self.changed.wait(left)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()


def run_layout(name, base, admin, viewer, ingest, args) -> dict:
    bbox = ",".join(map(str, AREA))
    url = base + "/v1/stream"
    streams = [
        Stream(url, viewer, {"spaces": "city", "bbox": bbox, "res": 7}) for _ in range(args.streams)
    ]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(s.status != 0 for s in streams) < args.streams:
        time.sleep(0.2)
    time.sleep(2)
    opened = sum(bool(s.events) for s in streams)
    headers = {"Authorization": f"Bearer {viewer}"}

    def top():
        try:
            r = requests.get(base + "/v1/top", params={"n": 10}, headers=headers, timeout=10)
            return r.status_code
        except requests.RequestException:
            return "timeout"

    results = open_loop(top, args.rate, args.seconds)
    ok = [t for t, status in results if status == 200]
    out = {
        "layout": name,
        "streams_answered": opened,
        "queries": len(results),
        "queries_ok": len(ok),
        "top_p50_ms": round(percentile(ok, 0.5) * 1000, 1),
        "top_p99_ms": round(percentile(ok, 0.99) * 1000, 1),
    }
    out |= push_latency(base, admin, ingest, args, name)
    for s in streams:
        s.close()
    return out


def push_latency(base, admin, ingest, args, name) -> dict:
    import grpc

    from protos.occupancy.v1 import occupancy_pb2 as pb

    probe = Stream(base + "/v1/stream", admin, {"spaces": "probe"})
    if probe.wait(lambda d: True, 30) is None:
        return {"push_p50_ms": None, "push_p99_ms": None}
    call = grpc.insecure_channel(ingest[0]).unary_unary("/occupancy.v1.IngestService/SendPings")
    auth = [("authorization", f"Bearer {ingest[1]}")]
    lags = []
    start = probe.events[-1][1]["spaces"]["probe"]
    for i in range(args.probes):
        ping = pb.Ping(
            device_id=f"probe-{name}-{i}", ts_ms=int(time.time() * 1000), lat=52.605, lng=-8.995
        )
        call(pb.SendPingsRequest(pings=[ping]).SerializeToString(), metadata=auth, timeout=30)
        acked = time.perf_counter()
        at = probe.wait(lambda d, n=start + i + 1: d["spaces"]["probe"] >= n, 10)
        if at is not None:
            lags.append(max(0.0, at - acked))
        time.sleep(0.3)
    probe.close()
    return {
        "push_p50_ms": round(percentile(lags, 0.5) * 1000),
        "push_p99_ms": round(percentile(lags, 0.99) * 1000),
        "push_seen": f"{len(lags)}/{args.probes}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--devices", type=int, default=5_000)
    parser.add_argument("--ingest-rate", type=float, default=5_000.0)
    parser.add_argument("--probes", type=int, default=30)
    args = parser.parse_args()

    from ray import serve

    from occupancy.runtime import Engine
    from occupancy.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), grpc_port=0, http_port=free_port(), k_min=2)
        engine = Engine(settings).start()
        try:
            engine.define_polygon_space("city", CITY)
            engine.define_polygon_space("probe", PROBE)
            key = engine.create_key("ingest", "bench")
            admin = engine.create_key("admin", "bench")
            viewer = engine.create_key("viewer", "bench")
            base = f"http://127.0.0.1:{engine.http_port}"
            target = f"127.0.0.1:{engine.grpc_port}"
            load = multiprocessing.get_context("spawn").Process(
                target=ingest_load,
                args=(target, key, args.devices, args.ingest_rate, time.monotonic() + 1e9),
            )
            load.start()
            time.sleep(5)
            row = run_layout("stream app", base, admin, viewer, (target, key), args)
            print(json.dumps(row), flush=True)
            serve.delete("stream")  # /v1/stream now reaches the query replicas
            time.sleep(5)
            row = run_layout("query replicas", base, admin, viewer, (target, key), args)
            print(json.dumps(row), flush=True)
            load.kill()
        finally:
            engine.stop()


if __name__ == "__main__":
    main()
