"""A rebalance under load: how long it takes and what senders see meanwhile.

Starts an engine on embedded defaults (2 user and 2 cell shards, no HTTP API), gives it
`--devices` present devices, then keeps every device pinging (batches of 1,000 over gRPC at
`--rate` pings/s, open loop) while it rebalances to 3 + 3 shards and back to 2 + 2. Prints each
rebalance's duration and devices moved, the senders' ack latency inside and outside the
rebalances, and checks that every device is held by exactly one user shard and counted once in
the cell shards.

    .venv/bin/python bench/rebalance.py [--devices 100000] [--rate 20000]
"""

import argparse
import tempfile
import threading
import time
from pathlib import Path

import grpc
import ray
from ingest import make_batches
from measure import free_port, percentile

from cluster.rebalance import rebalance
from occupancy.runtime import Engine
from occupancy.settings import Settings
from protos.occupancy.v1 import occupancy_pb2 as pb
from state.layout import current


class Sender:
    """Sends pre-built batches at a fixed rate from threads; keeps (sent at, latency, ok)."""

    def __init__(self, channel, auth, devices: int, rate: float, seconds: float):
        self.call = channel.unary_unary(
            "/occupancy.v1.IngestService/SendPings",
            response_deserializer=pb.SendPingsResponse.FromString,
        )
        self.auth = auth
        rounds = int(rate * seconds / devices) + 1
        self.batches = make_batches(devices, 1_000, int(time.time() * 1000) + 1_000, rounds)
        self.rate = rate / 1_000  # calls per second
        self.samples: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _one(self, batch: bytes) -> None:
        t = time.monotonic()
        try:
            self.call(batch, metadata=self.auth, timeout=60)
            ok = True
        except grpc.RpcError:
            ok = False
        self.samples.append((t, time.monotonic() - t, ok))

    def run(self) -> None:
        start = time.monotonic()
        for k, batch in enumerate(self.batches):
            if self._stop.is_set():
                return
            delay = start + k / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            th = threading.Thread(target=self._one, args=(batch,))
            th.start()
            self._threads.append(th)

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join()


def held(engine: Engine) -> tuple[int, int, int]:
    """(devices over all user shards, distinct devices, devices counted by cell shards)."""
    t = current(engine.topology)
    users = [ray.get_actor(n, namespace=t.namespace) for n in t.user_shards]
    listings = ray.get([u.cell_listing.remote(c) for u in users for c in t.cell_shards])
    devices = [d for listing in listings for d, _, _ in listing]
    cells = [ray.get_actor(n, namespace=t.namespace) for n in t.cell_shards]
    counted = sum(s["devices"] for s in ray.get([c.stats.remote() for c in cells]))
    return len(devices), len(set(devices)), counted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=20_000, help="pings/s sent meanwhile")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), grpc_port=0, http_port=free_port())
        engine = Engine(settings, serve_api=False).start()
        try:
            auth = [("authorization", f"Bearer {engine.create_key('ingest', 'bench')}")]
            channel = grpc.insecure_channel(f"127.0.0.1:{engine.grpc_port}")
            sender = Sender(channel, auth, args.devices, args.rate, seconds=40)
            loader = channel.unary_unary("/occupancy.v1.IngestService/SendPings")
            for batch in make_batches(args.devices, 5_000, int(time.time() * 1000), 1):
                loader(batch, metadata=auth, timeout=60)
            thread = threading.Thread(target=sender.run, daemon=True)
            thread.start()
            windows = []
            for users, cells in ((3, 3), (2, 2)):
                time.sleep(5)
                t0 = time.monotonic()
                report = rebalance(engine.topology, users, cells)
                windows.append((t0, time.monotonic()))
                moved = sum(n for m in report["moved"].values() for n in m.values())
                print(
                    f"to {users} user + {cells} cell shards: {report['seconds']:.2f} s, "
                    f"{moved:,} of {args.devices:,} devices moved; steps {report['steps_s']}"
                )
            time.sleep(5)
            sender.stop()
            time.sleep(2)
            total, distinct, counted = held(engine)
            print(
                f"user shards hold {total:,} devices ({distinct:,} distinct); "
                f"cell shards count {counted:,}"
            )
            inside = [lat for t, lat, ok in sender.samples if any(a <= t <= b for a, b in windows)]
            outside = [
                lat for t, lat, ok in sender.samples if not any(a <= t <= b for a, b in windows)
            ]
            failed = sum(1 for _, _, ok in sender.samples if not ok)
            for label, lat in (("during rebalances", inside), ("otherwise", outside)):
                if lat:
                    print(
                        f"ack latency {label}: {len(lat)} calls, "
                        f"p50 {percentile(lat, 0.5) * 1000:.0f} ms, "
                        f"p99 {percentile(lat, 0.99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms"
                    )
            print(f"failed calls: {failed}")
        finally:
            engine.stop()


if __name__ == "__main__":
    main()
