"""Engine CPU per ping, by process kind: what each ping costs the machine, not how fast it goes.

Starts an engine as `occupancy up` does (Redis, Ray, the shards, history, the gRPC handlers and
the HTTP API behind Serve) in a temporary data dir, then, reading every engine process's CPU
time from /proc before and after each phase:

- idle: nothing sent, for `--idle-seconds`; its CPU a second, per kind, is what each phase's
  figures have subtracted (idle × the phase's length);
Ping times are relative to each phase's start (`--round-s` apart, ending `--round-s` before
it), so no device's presence expires during the bench.

- warm-up: every device's first ping, batched (`SendPings`, 1,000 pre-serialized pings a call,
  4 calls in flight): new devices, new pseudonyms;
- steady state: `--rounds` more pings a device, batched, the devices known and a fraction
  (`--move`) of each round's pings in another cell than the device's previous one; then as many
  again as columns (`SendPingColumns`, the same 1,000 pings a call);
- streaming: one more round over `StreamPings`, one ping a message, from Node.js senders (4
  streams) where node exists.

A phase lasts from its first ping sent until history has archived its last one, so the archive's
work is in it. The sender (this process, the Node.js senders) is not counted. Prints a markdown
table of µs of CPU a ping per process kind.

    .venv/bin/python bench/cpu_budget.py [--devices 100000] [--rounds 4]
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import psutil
from ingest import NODE_CLIENT, bench_batched, node_client_ready, wait_for_history
from measure import free_port

from occupancy.runtime import Engine
from occupancy.settings import Settings
from protos.occupancy.v1 import occupancy_pb2 as pb

KINDS = (
    "ingest",
    "user shard",
    "cell shard",
    "space shard",
    "history",
    "serve",
    "redis",
    "ray daemons",
)
# Ray names an actor's worker process after its class (`ray::UserShard`, `ray::UserShard.ingest`)
_ACTORS = {
    "ray::IngestServer": "ingest",
    "ray::UserShard": "user shard",
    "ray::CellShard": "cell shard",
    "ray::SpaceShard": "space shard",
    "ray::History": "history",
    "ray::ServeController": "serve",
    "ray::ProxyActor": "serve",
    "ray::ServeReplica": "serve",
}
CELL_STEP_DEG = 0.005  # ~550 m north: another res-9 cell (~350 m across)


def kind_of(cmdline: list[str]) -> str | None:
    """The process kind of a command line; None for what is not the engine (the senders)."""
    line = " ".join(cmdline)
    for prefix, kind in _ACTORS.items():
        if line.startswith(prefix):
            return kind
    if line.startswith("ray::"):  # idle workers, Ray's own actors
        return "ray daemons"
    name = Path(cmdline[0]).name if cmdline else ""
    if name.startswith("redis-server"):
        return "redis"
    if name.startswith("haproxy"):
        return "serve"
    if name == "node" or name.startswith("nice"):
        return None
    return "ray daemons"  # raylet, gcs_server, the agents, the log monitor


def cpu_by_kind() -> dict[str, float]:
    """CPU seconds so far of every engine process (this process's descendants but the senders),
    by kind; children that ended and were waited for (a checkpoint's fork) count in their
    parent."""
    out = dict.fromkeys(KINDS, 0.0)
    for p in psutil.Process().children(recursive=True):
        try:
            kind = kind_of(p.cmdline())
            t = p.cpu_times()
        except psutil.Error:
            continue
        if kind is not None:
            out[kind] += t.user + t.system + t.children_user + t.children_system
    return out


def census() -> dict[str, int]:
    """Engine processes by kind."""
    out: dict[str, int] = {}
    for p in psutil.Process().children(recursive=True):
        try:
            kind = kind_of(p.cmdline())
        except psutil.Error:
            continue
        out[kind or "sender"] = out.get(kind or "sender", 0) + 1
    return out


def positions(devices: int, rounds: int, move: float, seed: int = 7) -> np.ndarray:
    """(rounds, devices, 2) lat/lng: a few metres' jitter each round, and a fraction `move` of
    the devices a cell away from where they were."""
    rng = np.random.default_rng(seed)
    i = np.arange(devices)
    lat = 52.60 + (i % 997) * 1.5e-4
    lng = -8.70 + (i % 991) * 1.5e-4
    out = np.empty((rounds, devices, 2))
    for r in range(rounds):
        moved = rng.random(devices) < move
        lat = lat + np.where(moved, CELL_STEP_DEG * rng.choice((-1, 1), devices), 0.0)
        out[r, :, 0] = lat + rng.normal(0, 2e-5, devices)
        out[r, :, 1] = lng + rng.normal(0, 2e-5, devices)
    return out


def round_pings(where: np.ndarray, ts: int) -> list[pb.Ping]:
    return [
        pb.Ping(device_id=f"d-{i}", ts_ms=ts, lat=float(lat), lng=float(lng))
        for i, (lat, lng) in enumerate(where)
    ]


def batches_of(pings: list[pb.Ping], size: int = 1_000) -> list[bytes]:
    return [
        pb.SendPingsRequest(pings=pings[k : k + size]).SerializeToString()
        for k in range(0, len(pings), size)
    ]


def column_batches_of(pings: list[pb.Ping], size: int = 1_000) -> list[bytes]:
    out = []
    for k in range(0, len(pings), size):
        part = pings[k : k + size]
        request = pb.SendPingColumnsRequest(
            device_ids=[p.device_id for p in part],
            ts_ms=[p.ts_ms for p in part],
            lat=[p.lat for p in part],
            lng=[p.lng for p in part],
        )
        out.append(request.SerializeToString())
    return out


def stream_node(target: str, token: str, pings: list[pb.Ping], streams: int, start) -> int:
    """The pings over `streams` StreamPings streams from Node.js senders, as fast as acked
    (`start()` called once they are written out); the pings acked."""
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for k in range(streams):
            path = Path(tmp) / f"stream-{k}.bin"
            with path.open("wb") as f:
                for p in pings[k::streams]:
                    m = p.SerializeToString()
                    f.write(len(m).to_bytes(4, "little") + m)
            files.append(path)
        start()
        start_at = int(time.time() * 1000) + 1_000 + 300 * streams
        command = ["nice", "-n", "15", "node", str(NODE_CLIENT / "client.js"), target, token]
        tail = ["600", "0", str(start_at), "2000"]
        procs = [
            subprocess.Popen([*command, str(f), *tail], stdout=subprocess.PIPE, text=True)
            for f in files
        ]
        return sum(json.loads(p.communicate()[0])["acked"] for p in procs)


def measured(send, idle_rate: dict[str, float]) -> dict:
    """CPU by kind from `send(start)`'s first ping (it calls `start()` once its messages are
    built) until history has archived the last, less idle."""
    marks = {}

    def start() -> None:
        marks["cpu"], marks["t"] = cpu_by_kind(), time.monotonic()

    pings = send(start)
    before, t0 = marks["cpu"], marks["t"]
    wait_for_history()
    after, elapsed = cpu_by_kind(), time.monotonic() - t0
    cpu = {k: after[k] - before[k] - idle_rate[k] * elapsed for k in KINDS}
    return {"pings": pings, "seconds": elapsed, "cpu": cpu}


def table(phases: dict[str, dict]) -> str:
    names = list(phases)
    head = "| process kind | " + " | ".join(f"{n}, µs/ping" for n in names) + " |"
    lines = [head, "|---|" + "---:|" * len(names)]
    for k in (*KINDS, "total"):
        cells = []
        for n in names:
            p = phases[n]
            cpu = sum(p["cpu"].values()) if k == "total" else p["cpu"][k]
            cells.append(f"{cpu / p['pings'] * 1e6:.1f}")
        label = f"**{k}**" if k == "total" else k
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rates = [f"{p['pings']:,} in {p['seconds']:.1f} s" for p in phases.values()]
    lines.append("| pings, phase length | " + " | ".join(rates) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=4, help="steady-state pings a device")
    ap.add_argument("--move", type=float, default=0.1, help="pings in another cell, a fraction")
    ap.add_argument("--round-s", type=int, default=5, help="seconds between a device's pings")
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--streams", type=int, default=4)
    args = ap.parse_args()

    where = positions(args.devices, 2 * args.rounds + 2, args.move)
    gap = args.round_s * 1000

    def pings_of(rounds: range) -> list[pb.Ping]:
        """The rounds' pings, their times ending `round_s` before now and `round_s` apart:
        relative to each phase's start, so no device's presence expires during the bench."""
        end = int(time.time() * 1000) - gap
        last = len(rounds) - 1
        return [
            p for k, r in enumerate(rounds) for p in round_pings(where[r], end - (last - k) * gap)
        ]

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), grpc_port=0, http_port=free_port())
        engine = Engine(settings).start()
        try:
            key = engine.create_key("ingest", "bench")
            auth = [("authorization", f"Bearer {key}")]
            target = f"127.0.0.1:{engine.grpc_port}"
            channel = grpc.insecure_channel(target)
            time.sleep(5)  # Serve and the first snapshot settle
            processes = census()
            load_before = os.getloadavg()
            t0, before = time.monotonic(), cpu_by_kind()
            time.sleep(args.idle_seconds)
            after, idle_s = cpu_by_kind(), time.monotonic() - t0
            idle_rate = {k: (after[k] - before[k]) / idle_s for k in KINDS}

            def batched(rounds: range, method: str = "SendPings"):
                def send(start):
                    pings = pings_of(rounds)
                    if method == "SendPings":
                        batches = batches_of(pings)
                    else:
                        batches = column_batches_of(pings)
                    start()
                    r = bench_batched(channel, auth, batches, 3_600.0, args.in_flight, method)
                    assert not r["errors"], r
                    return r["accepted"] + r["late"]

                return send

            rounds = args.rounds
            phases = {
                "warm-up (new devices)": measured(batched(range(1)), idle_rate),
                "steady state, SendPings": measured(batched(range(1, rounds + 1)), idle_rate),
                "steady state, SendPingColumns": measured(
                    batched(range(rounds + 1, 2 * rounds + 1), "SendPingColumns"), idle_rate
                ),
            }
            if node_client_ready():
                phases["steady state, StreamPings"] = measured(
                    lambda start: stream_node(
                        target,
                        auth[0][1],
                        pings_of(range(2 * rounds + 1, 2 * rounds + 2)),
                        args.streams,
                        start,
                    ),
                    idle_rate,
                )
        finally:
            engine.stop()

    load = os.getloadavg()
    print(
        f"# {datetime.date.today()}; {os.cpu_count()} cores ({platform.machine()}), "
        f"Python {platform.python_version()}; load average (1, 5, 15 min) "
        f"{' '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{' '.join(f'{x:.2f}' for x in load)} after\n"
        f"# processes: {', '.join(f'{k} {n}' for k, n in processes.items())}\n"
        f"# {args.devices:,} devices; {args.rounds} steady rounds, {args.move:.0%} of pings "
        f"moving cell; idle CPU {sum(idle_rate.values()):.3f} cores subtracted "
        f"({', '.join(f'{k} {v:.3f}' for k, v in idle_rate.items() if v > 0.005)})\n"
    )
    print(table(phases))


if __name__ == "__main__":
    main()
