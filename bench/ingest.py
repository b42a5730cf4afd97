"""Sustained ingest through the real gRPC API into a running engine, with ack latency.

Starts an engine on embedded defaults in a temporary data dir (Ray, Redis, shard actors, the
ingest actor), then drives it from this process over loopback:

- batched `SendPings` (1,000 pings a call, `--in-flight` calls outstanding);
- per-message `StreamPings` (one message a ping on `--streams` streams), sent by Node.js
  processes (`stream_client/`, installed with npm on first use) or, with
  `--stream-client python`, by Python processes.

Prints pings/s and ack p50/p99. Everything shares this machine's cores.

    .venv/bin/python bench/ingest.py [--devices 100000] [--seconds 20]

`--phase known` or `--phase new` measures one batched phase alone, for what the id directory
costs: `known` sends the fleet once (not measured), then measures it sending again (every id in
the handlers' caches); `new` measures a fleet of devices never seen (`--new-devices` of them, one
ping each: every id drawn in Redis).
"""

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc
import ray
from measure import free_port, percentile

from clients.history import NAME as HISTORY
from occupancy.runtime import Engine
from occupancy.settings import Settings
from protos.occupancy.v1 import occupancy_pb2 as pb
from state.topology import NAMESPACE


def make_batches(
    devices: int, size: int, base_ts: int, rounds: int, prefix: str = "bench"
) -> list[bytes]:
    """Pre-serialised batches: every device pings once a round, rounds 1 s apart, so the load
    generator spends its time sending rather than building messages."""
    out = []
    for r in range(rounds):
        ts = base_ts + r * 1_000
        for start in range(0, devices, size):
            pings = [
                pb.Ping(
                    device_id=f"{prefix}-{i}",
                    ts_ms=ts,
                    lat=52.60 + (i % 997) * 1.5e-4,
                    lng=-8.70 + (i % 991) * 1.5e-4 + r * 1e-5,
                )
                for i in range(start, min(devices, start + size))
            ]
            out.append(pb.SendPingsRequest(pings=pings).SerializeToString())
    return out


def bench_batched(
    channel, auth, batches: list[bytes], seconds: float, in_flight: int, method: str = "SendPings"
) -> dict:
    """`batches`: serialized requests of `method` (`SendPings` or `SendPingColumns`)."""
    call = channel.unary_unary(
        f"/occupancy.v1.IngestService/{method}",
        response_deserializer=pb.SendPingsResponse.FromString,  # the same on the wire
    )
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"accepted": 0, "late": 0, "errors": 0}
    next_batch = [0]
    stop_at = time.monotonic() + seconds

    def worker():
        while time.monotonic() < stop_at:
            with lock:
                i = next_batch[0]
                next_batch[0] += 1
            if i >= len(batches):
                return
            t = time.perf_counter()
            try:
                ack = call(batches[i], metadata=auth, timeout=60)
            except grpc.RpcError:
                with lock:
                    counts["errors"] += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - t)
                counts["accepted"] += ack.accepted
                counts["late"] += ack.late

    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    start = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - start
    return {
        "pings_per_s": (counts["accepted"] + counts["late"]) / elapsed,
        "ack_p50_ms": percentile(latencies, 0.5) * 1e3,
        "ack_p99_ms": percentile(latencies, 0.99) * 1e3,
        "calls": len(latencies),
        **counts,
    }


def stream_messages(
    k: int, streams: int, devices: int, base_ts: int, seconds: float, rate: float | None
) -> list[bytes]:
    """Stream `k`'s serialized pings: every device in turn, one ping a round, 1 s apart."""
    ceiling = int(seconds * (rate / streams if rate else 20_000)) + 1
    out = []
    for i in range(ceiling):
        d = (i * streams + k) % devices
        r = (i * streams + k) // devices
        out.append(
            pb.StreamPingsRequest(
                device_id=f"stream-{d}",
                ts_ms=base_ts + r * 1_000 + k,
                lat=52.60 + (d % 997) * 1.5e-4,
                lng=-8.70 + (d % 991) * 1.5e-4,
            ).SerializeToString()
        )
    return out


def _stream_client(
    target: str,
    auth,
    k: int,
    streams: int,
    devices: int,
    base_ts: int,
    seconds: float,
    rate: float | None,
    out,
    ready,
) -> None:
    """One stream from its own process (a Python gRPC client tops out near 12k messages/s
    a process, so one process would measure the client, not the engine). It runs at the
    engine's niceness (Ray starts its workers at 15): at 0 the senders would take the cores and
    starve the engine they measure."""
    os.nice(15)
    channel = grpc.insecure_channel(target)
    call = channel.stream_stream(
        "/occupancy.v1.IngestService/StreamPings",
        response_deserializer=pb.StreamPingsResponse.FromString,
    )
    # messages are serialized before the clock starts: the load generator shares the cores with
    # the engine, and building protobufs is the client's cost, not the engine's
    payload = stream_messages(k, streams, devices, base_ts, seconds, rate)
    sent_at: list[float] = []
    ready.wait()  # every stream starts once all are built
    stop_at = time.monotonic() + seconds

    def messages():
        t0 = time.monotonic()
        for i, message in enumerate(payload):
            if time.monotonic() >= stop_at:
                return
            while rate and i > (time.monotonic() - t0) * rate / streams:
                time.sleep(0.001)
            sent_at.append(time.perf_counter())
            yield message

    lat, covered, total = [], 0, 0
    start = time.monotonic()
    for ack in call(messages(), metadata=auth, timeout=seconds + 60):
        now = time.perf_counter()
        total = ack.accepted + ack.late + ack.rejected
        lat.extend(now - sent_at[i] for i in range(covered, total))
        covered = total
    out.put((total, time.monotonic() - start, lat))


NODE_CLIENT = Path(__file__).parent / "stream_client"
STREAM_WINDOW = 2_000  # unacked messages a Node.js sender allows itself


def node_client_ready() -> bool:
    """Whether the Node.js stream client can run (installing its one package if needed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return False
    if not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_CLIENT,
            check=True,
        )
    return True


def bench_stream_node(
    target: str, auth, devices: int, base_ts: int, seconds: float, streams: int, rate: float | None
) -> dict:
    """`bench_stream` with one Node.js process a stream (`stream_client/client.js`)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for k in range(streams):
            path = Path(tmp) / f"stream-{k}.bin"
            with path.open("wb") as f:
                for m in stream_messages(k, streams, devices, base_ts, seconds, rate):
                    f.write(len(m).to_bytes(4, "little"))
                    f.write(m)
            files.append(path)
        start_at = int(time.time() * 1000) + 1_500 + 300 * streams
        per_stream = str((rate or 0) / streams)
        # at the engine's niceness (Ray starts its workers at 15), as the Python senders
        command = ["nice", "-n", "15", "node", str(NODE_CLIENT / "client.js"), target, auth[0][1]]
        tail = [str(seconds), per_stream, str(start_at), str(STREAM_WINDOW)]
        procs = [
            subprocess.Popen([*command, str(f), *tail], stdout=subprocess.PIPE, text=True)
            for f in files
        ]
        results = [json.loads(p.communicate()[0]) for p in procs]
    total = sum(r["acked"] for r in results)
    elapsed = max(r["elapsed_s"] for r in results)
    lat = [x / 1e3 for r in results for x in r["latencies_ms"]]
    return {
        "pings_per_s": total / elapsed,
        "ack_p50_ms": percentile(lat, 0.5) * 1e3,
        "ack_p99_ms": percentile(lat, 0.99) * 1e3,
        "messages": total,
    }


def bench_stream(
    target: str, auth, devices: int, base_ts: int, seconds: float, streams: int, rate: float | None
) -> dict:
    """`rate` (pings/s over all streams) paces the senders; None sends as fast as they can.
    One Python process a stream."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Barrier(streams)
    procs = [
        ctx.Process(
            target=_stream_client,
            args=(target, auth, k, streams, devices, base_ts, seconds, rate, out, ready),
        )
        for k in range(streams)
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    total = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results)
    lat = [x for r in results for x in r[2]]
    return {
        "pings_per_s": total / elapsed,
        "ack_p50_ms": percentile(lat, 0.5) * 1e3,
        "ack_p99_ms": percentile(lat, 0.99) * 1e3,
        "messages": total,
    }


def bench_ids(channel, auth, phase: str, args, base: int) -> dict:
    """One batched phase alone: a known fleet (sent once first, not measured) or a new one."""
    if phase == "known":
        warm = make_batches(args.devices, 1_000, base, 1)
        bench_batched(channel, auth, warm, 3_600.0, args.in_flight)
        wait_for_history()
        rounds = max(1, int(args.seconds * 200_000 / args.devices))
        batches = make_batches(args.devices, 1_000, base + 1_000, rounds)
    else:
        batches = make_batches(args.new_devices, 1_000, base, 1, prefix="new")
    return bench_batched(channel, auth, batches, args.seconds, args.in_flight)


def wait_for_history(limit_s: float = 300.0) -> float:
    """Seconds until history has archived every WAL entry (the archive competes for the cores:
    each phase starts with none of the previous phase's backlog)."""
    history = ray.get_actor(HISTORY, namespace=NAMESPACE)
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if not any(ray.get(history.status.remote())["archive_lag_ms"].values()):
            break
        time.sleep(0.5)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--stream-rate", type=float, default=5_000.0)
    ap.add_argument("--user-shards", type=int, default=2)
    ap.add_argument("--cell-shards", type=int, default=2)
    ap.add_argument("--phase", choices=("all", "known", "new"), default="all")
    ap.add_argument("--new-devices", type=int, default=1_500_000)
    ap.add_argument("--ingest-nice", type=int, default=Settings().ingest_nice)
    ap.add_argument("--http-ingress", default=Settings().http_ingress)
    ap.add_argument(
        "--durability",
        choices=("everysec", "always"),
        default=Settings().durability,
        help="OCC_DURABILITY: the embedded Redis fsyncs its AOF every second or before each ack",
    )
    ap.add_argument(
        "--stream-client",
        choices=("node", "python"),
        default="node" if shutil.which("node") else "python",
        help="StreamPings senders: Node.js grpc-js (default where node exists) or Python grpcio",
    )
    args = ap.parse_args()
    if args.stream_client == "node" and not node_client_ready():
        ap.error("--stream-client node needs node and npm on the PATH")

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            grpc_port=0,
            user_shards=args.user_shards,
            cell_shards=args.cell_shards,
            ingest_nice=args.ingest_nice,
            http_ingress=args.http_ingress,
            http_port=free_port(),
            durability=args.durability,
        )
        engine = Engine(settings).start()
        try:
            key = engine.create_key("ingest", "bench")
            auth = [("authorization", f"Bearer {key}")]
            channel = grpc.insecure_channel(
                f"127.0.0.1:{engine.grpc_port}",
                options=[("grpc.max_send_message_length", 64 << 20)],
            )
            base = int(time.time() * 1000) - 600_000
            if args.phase != "all":
                fleet = args.devices if args.phase == "known" else args.new_devices
                result = bench_ids(channel, auth, args.phase, args, base)
                print(
                    f"# {os.cpu_count()} cores; {args.user_shards} user shards; "
                    f"{fleet:,} {args.phase} devices\n"
                    f"SendPings  (1,000/call, {args.in_flight} in flight, {args.phase} ids): "
                    f"{result['pings_per_s']:>10,.0f} pings/s   ack p50 "
                    f"{result['ack_p50_ms']:.1f} ms  p99 {result['ack_p99_ms']:.1f} ms  "
                    f"({result['calls']} calls, {result['errors']} errors)"
                )
                return
            rounds = max(1, int(args.seconds * 200_000 / args.devices))
            batches = make_batches(args.devices, 1_000, base, rounds)
            print(
                f"# {os.cpu_count()} cores; {args.user_shards} user shards, "
                f"{args.cell_shards} cell shards; {args.devices:,} devices; "
                f"durability {args.durability}"
            )
            batched = bench_batched(channel, auth, batches, args.seconds, args.in_flight)
            print(
                f"SendPings  (1,000/call, {args.in_flight} in flight): "
                f"{batched['pings_per_s']:>10,.0f} pings/s   ack p50 "
                f"{batched['ack_p50_ms']:.1f} ms  p99 {batched['ack_p99_ms']:.1f} ms  "
                f"({batched['calls']} calls, {batched['errors']} errors)"
            )
            base += rounds * 1_000
            print(f"  history archive caught up {wait_for_history():.1f} s after SendPings")
            for rate in (None, args.stream_rate):
                run = bench_stream_node if args.stream_client == "node" else bench_stream
                stream = run(
                    f"127.0.0.1:{engine.grpc_port}",
                    auth,
                    args.devices,
                    base,
                    args.seconds,
                    args.streams,
                    rate,
                )
                base += 1_000 * (int(stream["messages"] / args.devices) + 2)
                label = "as fast as sent" if rate is None else f"paced at {rate:,.0f}/s"
                print(
                    f"StreamPings (1 ping/message, {args.streams} {args.stream_client} streams, "
                    f"{label}): "
                    f"{stream['pings_per_s']:>10,.0f} pings/s   ack p50 "
                    f"{stream['ack_p50_ms']:.1f} ms  p99 {stream['ack_p99_ms']:.1f} ms  "
                    f"({stream['messages']:,} messages)"
                )
                print(f"  history archive caught up {wait_for_history():.1f} s after")
        finally:
            engine.stop()


if __name__ == "__main__":
    main()
