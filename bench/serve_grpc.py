"""The ingest front end three ways, same engine, same load: which one to ship?

1. `actor`: the engine's default, a grpc.aio server inside a Ray actor on a stable port;
2. `serve-proxy`: the same `IngestCore` as a Ray Serve gRPC deployment behind Serve's proxy;
3. `serve-direct`: that deployment with direct ingress (`RAY_SERVE_ENABLE_DIRECT_INGRESS=1`),
   clients connecting to the replica's own gRPC port (found in the Serve target groups).

Each mode runs in a fresh process (direct ingress is a process-wide setting read at start) and
drives batched `SendPings` with the load generator of bench/ingest.py.

    .venv/bin/python bench/serve_grpc.py [--seconds 10] [--devices 100000]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("actor", "serve-proxy", "serve-direct")


def _direct_grpc_port(app: str) -> int:
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    import ray

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        details = ray.get(controller.get_serve_instance_details.remote())
        for group in details.get("target_groups", []):
            if group["protocol"].lower() == "grpc" and group["app_name"] == app:
                if group["targets"]:
                    return group["targets"][0]["port"]
        time.sleep(0.5)
    raise RuntimeError("no gRPC target group for the app")


def run_mode(mode: str, seconds: float, devices: int, in_flight: int) -> dict:
    if mode == "serve-direct":
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
        os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"
    import grpc
    import ingest as load

    from occupancy.runtime import Engine
    from occupancy.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(Settings(data_dir=Path(tmp), grpc_port=0)).start()
        try:
            auth = [("authorization", f"Bearer {engine.create_key('ingest', 'bench')}")]
            if mode == "actor":
                target = f"127.0.0.1:{engine.grpc_port}"
            else:
                from ray import serve
                from ray.serve.config import gRPCOptions

                from serve_apps.ingest_grpc import SERVICER, GrpcIngest

                port = free_port()
                serve.start(
                    http_options={"port": free_port()},
                    grpc_options=gRPCOptions(port=port, grpc_servicer_functions=[SERVICER]),
                )
                serve.run(GrpcIngest.bind(engine.topology), name="ingest", route_prefix="/ingest")
                auth.append(("application", "ingest"))
                if mode == "serve-direct":
                    port = _direct_grpc_port("ingest")
                target = f"127.0.0.1:{port}"
            channel = grpc.insecure_channel(target)
            base = int(time.time() * 1000) - 600_000
            rounds = max(1, int(seconds * 200_000 / devices))
            batches = load.make_batches(devices, 1_000, base, rounds)
            load.bench_batched(channel, auth, batches[:20], 5, in_flight)  # warm-up
            result = load.bench_batched(channel, auth, batches[20:], seconds, in_flight)
            result["mode"] = mode
            return result
        finally:
            if mode != "actor":
                from ray import serve

                serve.shutdown()
            engine.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=MODES)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--in-flight", type=int, default=4)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.seconds, args.devices, args.in_flight)))
        return
    print(
        f"# SendPings, 1,000 pings a call, {args.in_flight} in flight, {args.devices:,} "
        f"devices, {args.seconds:.0f} s per mode, {os.cpu_count()} cores"
    )
    print(f"{'front end':14s} {'pings/s':>10s} {'ack p50':>9s} {'ack p99':>9s} {'errors':>7s}")
    for mode in MODES:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--seconds",
                str(args.seconds),
                "--devices",
                str(args.devices),
                "--in-flight",
                str(args.in_flight),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            print(f"{mode:14s} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(lines[-1])
        print(
            f"{mode:14s} {r['pings_per_s']:>10,.0f} {r['ack_p50_ms']:>7.1f}ms "
            f"{r['ack_p99_ms']:>7.1f}ms {r['errors']:>7d}"
        )


if __name__ == "__main__":
    main()
