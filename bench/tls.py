"""What TLS costs each plane: the same engine without TLS and with it (`occupancy up
--tls-self-signed`, HAProxy terminating HTTPS, gRPC ingest over TLS), one after the other.

For each: `/v1/top` latency over a kept-alive connection (`--requests`, sequential), the same
with a new connection for every request (a TLS handshake each), and batched `SendPings`
throughput (1,000 pings a call, `--in-flight` calls at once, `--seconds`) with its ack p50.

    .venv/bin/python bench/tls.py [--requests 500] [--seconds 15]
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import requests
from measure import percentile

from protos.occupancy.v1 import occupancy_pb2 as pb
from tests.engine_process import EngineProcess


def http_latency(url: str, key: str, verify, n: int, fresh: bool) -> list[float]:
    headers = {"authorization": f"Bearer {key}"}
    session = requests.Session()
    out = []
    for _ in range(n):
        if fresh:
            session.close()
            session = requests.Session()
        t = time.perf_counter()
        r = session.get(f"{url}/v1/top", params={"n": 10}, headers=headers, verify=verify)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
    return out


def ingest(channel: grpc.Channel, key: str, seconds: float, in_flight: int) -> tuple[float, float]:
    call = channel.unary_unary("/occupancy.v1.IngestService/SendPings")
    auth = [("authorization", f"Bearer {key}")]
    base = int(time.time() * 1000) - 60_000
    batches = [
        pb.SendPingsRequest(
            pings=[
                pb.Ping(
                    device_id=f"t-{b}-{i}", ts_ms=base + b, lat=52.6 + i * 1e-4, lng=-8.7 + b * 1e-5
                )
                for i in range(1_000)
            ]
        ).SerializeToString()
        for b in range(200)
    ]
    acks: list[float] = []
    sent = [0]
    stop_at = time.monotonic() + seconds

    def worker(k: int) -> None:
        j = k
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            call(batches[j % len(batches)], metadata=auth, timeout=60)
            acks.append((time.perf_counter() - t) * 1000)
            sent[0] += 1_000
            j += in_flight

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent[0] / (time.monotonic() - start), percentile(acks, 0.5)


def run(tls: bool, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        engine = EngineProcess(Path(tmp), *(["--tls-self-signed"] if tls else []))
        try:
            ca = str(Path(tmp) / "data" / "tls" / "ca.pem")
            scheme, verify = ("https", ca) if tls else ("http", True)
            url = f"{scheme}://127.0.0.1:{engine.http_port}"
            target = f"127.0.0.1:{engine.grpc_port}"
            if tls:
                channel = grpc.secure_channel(
                    target, grpc.ssl_channel_credentials(Path(ca).read_bytes())
                )
            else:
                channel = grpc.insecure_channel(target)
            http_latency(url, engine.admin, verify, 50, fresh=False)  # warm-up
            kept = http_latency(url, engine.admin, verify, args.requests, fresh=False)
            fresh = http_latency(url, engine.admin, verify, args.requests // 5, fresh=True)
            rate, ack = ingest(channel, engine.keys["ingest"], args.seconds, args.in_flight)
            return {
                "kept": (percentile(kept, 0.5), percentile(kept, 0.99)),
                "fresh": (percentile(fresh, 0.5), percentile(fresh, 0.99)),
                "ingest": (rate, ack),
            }
        finally:
            engine.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="Pairs run, alternating the order.")
    args = ap.parse_args()
    rows = {}
    for r in range(args.rounds):  # each round runs both; the second starts with TLS
        order = (("plaintext", False), ("TLS", True))
        for label, tls in order if r % 2 == 0 else order[::-1]:
            rows[f"{label} #{r + 1}"] = run(tls, args)
    print(f"# {os.cpu_count()} cores; HAProxy ingress; /v1/top?n=10 sequential; 1,000 pings/call")
    print(
        f"{'':10s} {'top p50/p99 ms (kept-alive)':>28s} {'top p50/p99 ms (new conn)':>27s} "
        f"{'SendPings pings/s':>18s} {'ack p50 ms':>11s}"
    )
    for label, r in rows.items():
        print(
            f"{label:10s} {r['kept'][0]:>17.2f} / {r['kept'][1]:<8.2f} "
            f"{r['fresh'][0]:>16.2f} / {r['fresh'][1]:<8.2f} "
            f"{r['ingest'][0]:>18,.0f} {r['ingest'][1]:>11.1f}"
        )


if __name__ == "__main__":
    main()
