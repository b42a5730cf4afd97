"""The chaos report: faults injected into `occupancy up` under a streaming fleet, each measured
against the oracle.

For each fault a fleet streams 1,000 pings/s (300 devices, batches of 100, every batch sent
again until acked); the fault is injected, the fleet goes on for a while, then stops. Reported:
the recovery time (from the fault, or from its end for a stall, to the first ack after the
first call it refused, or to the next ack if it refused none: a batch in flight at the fault
may still be acked), the calls refused meanwhile by status, the acked pings missing from live
state and those counted twice (the live heatmap against the oracle of everything sent), the
acked pings missing from the raw archive (each device's path from history against what was
acked), the raw rows written twice (two rows from one log position, read back from ClickHouse)
and how long history took to catch up after the fault.

With `--nodes N` (N > 1) the engine runs on a Ray cluster of N nodes started on this machine
with `ray start` (tests/multinode/cluster.py), and one more fault is offered: `node`, a worker
node that runs a user shard and an ingest handler lost (its raylet and every process on it
SIGKILLed at once). It runs last: the cluster has a node fewer after it.

    .venv/bin/python bench/chaos.py            # every fault, short outages
    .venv/bin/python bench/chaos.py --stall 20 --only redis-stall
    .venv/bin/python bench/chaos.py --outage 600 --only clickhouse-outage
    .venv/bin/python bench/chaos.py --nodes 3 --only node
"""

import argparse
import contextlib
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import h3.api.basic_int as h3i
import orjson
import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fleet lives in tests/

from occupancy.http_ingress import serve_env
from occupancy.local_files import HAPROXY_SUBDIR
from state.checkpoint import CHILD_TIMEOUT_S as CHECKPOINT_TIMEOUT_S
from tests.chaos.fleet import Fleet
from tests.chaos.processes import actors, redis_of, redis_server
from tests.engine_process import EngineProcess
from tests.multinode.cluster import LocalRayCluster, cluster_env
from tests.oracle import Oracle

WORLD = "-180,-90,180,90"


class Target:
    """The engine under test and what the faults need to reach its processes."""

    def __init__(self, engine: EngineProcess, cluster: LocalRayCluster | None = None):
        self.e = engine
        self.cluster = cluster
        self.oracle = Oracle()
        self.http = f"http://127.0.0.1:{engine.http_port}"

    def redis_server(self) -> psutil.Process:
        return redis_server(self.e)

    def actors(self, kind: str) -> list[psutil.Process]:
        if self.cluster is None:
            return actors(self.e, kind)  # under `occupancy up`, which started its own Ray
        return [p for n in self.cluster.nodes if not n.killed for p in n.actors(kind)]

    def get(self, path: str, **params) -> requests.Response:
        headers = {"authorization": f"Bearer {self.e.admin}"}
        return requests.get(self.http + path, params=params, headers=headers, timeout=60)

    def post(self, path: str, body: dict) -> requests.Response:
        headers = {"authorization": f"Bearer {self.e.admin}"}
        return requests.post(self.http + path, json=body, headers=headers, timeout=60)

    def history_caught_up(self, timeout_s: float = 900) -> bool:
        """Waits until history has every log entry (no error, no lag, nothing spilled)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            h = self.get("/v1/admin/status").json().get("history", {})
            lags = h.get("archive_lag_ms", {"?": 1}).values()
            if not h.get("last_error") and not h.get("catching_up") and not any(lags):
                return True
            time.sleep(0.5)
        return False

    def archived_twice(self, since_ms: int) -> int:
        """Raw rows in ClickHouse beyond one per log position (shard, entry, index)."""
        r = self.get(
            "/v1/export",
            what="pings",
            format="json",
            **{"from": since_ms, "to": int(time.time() * 1000) + 60_000},
        )
        if r.status_code != 200:
            return -1
        rows = [orjson.loads(line) for line in r.content.splitlines() if line]
        return len(rows) - len({(x["shard"], x["wal_ms"], x["wal_seq"], x["idx"]) for x in rows})

    def live_diff(self, timeout_s: float = 60) -> tuple[int, int]:
        """(acked pings missing from live counts, counted twice), once the views settle."""
        deadline = time.monotonic() + timeout_s
        while True:
            now = int(time.time() * 1000)
            r = self.get("/v1/heatmap", bbox=WORLD, res=9)
            expected = self.oracle.counts(9, now, now)
            if r.status_code == 200:
                cells = {h3i.str_to_int(c["cell"]): c["count"] for c in r.json()["cells"]}
                keys = cells.keys() | expected.keys()
                lost = sum(max(0, expected.get(c, 0) - cells.get(c, 0)) for c in keys)
                twice = sum(max(0, cells.get(c, 0) - expected.get(c, 0)) for c in keys)
                if (lost, twice) == (0, 0) or time.monotonic() > deadline:
                    return lost, twice
            elif time.monotonic() > deadline:
                return -1, -1
            time.sleep(0.5)

    def archive_missing(self, fleet: Fleet, since_ms: int, timeout_s: float = 90) -> int:
        """Acked pings not in the raw archive once history has caught up (it is read until
        nothing more arrives)."""
        acked: dict[str, set[int]] = {}
        for device, ts in fleet.acked_pings:
            acked.setdefault(device, set()).add(ts)
        deadline = time.monotonic() + timeout_s
        missing = -1
        while time.monotonic() < deadline:
            now = int(time.time() * 1000) + 1
            missing = 0
            for device, times in acked.items():
                r = self.get(f"/v1/history/path/{device}", **{"from": since_ms, "to": now})
                if r.status_code != 200:
                    missing = -1
                    break
                missing += len(times - {p["ts"] for p in r.json()["points"]})
            if missing == 0:
                return 0
            time.sleep(5)
        return missing


def run_fault(t: Target, name: str, inject, seed: int, after_s: float = 8) -> dict:
    since = int(time.time() * 1000) - 1000
    fleet = Fleet(t.e.grpc_port, t.e.keys["ingest"], seed=seed, oracle=t.oracle)
    fleet.start()
    time.sleep(3)
    fault_end = inject()
    back = fleet.await_ack_after(fault_end, timeout_s=120)
    refused = min((f for f in fleet.failed_at if f > fault_end), default=fault_end)
    recovery = next((a for a in fleet.acked_at if a > refused), None)
    back = back and recovery is not None
    time.sleep(after_s)
    fleet.stop()
    caught_up = time.monotonic() - fault_end if t.history_caught_up() else None
    lost, twice = t.live_diff()
    return {
        "fault": name,
        "recovery s": f"{recovery - fault_end:.2f}" if back else "none in 120 s",
        "refused calls": ", ".join(f"{k} {v}" for k, v in sorted(fleet.codes.items()) if k != "OK")
        or "none",
        "acked pings": f"{len(fleet.acked_pings):,}",
        "lost (live)": lost,
        "counted twice (live)": twice,
        "missing from raw archive": t.archive_missing(fleet, since),
        "raw rows twice": t.archived_twice(since),
        "history caught up s": f"{caught_up:.1f}" if caught_up is not None else "no",
    }


def faults(t: Target, stall_s: float, outage_s: float) -> dict:
    def kill_redis() -> float:
        p = t.redis_server()
        p.send_signal(signal.SIGKILL)
        return time.monotonic()

    def stall_redis() -> float:
        p = t.redis_server()
        p.send_signal(signal.SIGSTOP)
        time.sleep(stall_s)
        os.kill(p.pid, signal.SIGCONT)
        return time.monotonic()

    def flush_redis() -> float:
        redis_of(t.e).flushall()
        return time.monotonic()

    def kill(kind: str):
        def inject() -> float:
            victims = t.actors(kind)
            for p in victims[:1]:
                p.send_signal(signal.SIGKILL)
            return time.monotonic()

        return inject

    def clickhouse_outage() -> float:
        t.post("/v1/admin/archive", {"outage_drill": True}).raise_for_status()
        time.sleep(outage_s)
        t.post("/v1/admin/archive", {"outage_drill": False}).raise_for_status()
        return time.monotonic()

    def stall_checkpoint_child() -> float:
        """SIGSTOP a user shard's forked checkpoint child; ends when its parent killed it."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shards = t.actors("UserShard")
            children = [c for p in shards for c in p.children()]
            if children:
                child = children[0]
                try:
                    child.send_signal(signal.SIGSTOP)
                    child.wait(timeout=CHECKPOINT_TIMEOUT_S + 30)
                except psutil.NoSuchProcess:  # it finished first: try the next one
                    continue
                return time.monotonic()
            time.sleep(0.01)
        raise RuntimeError("no checkpoint child seen in 60 s")

    def rebalance() -> float:
        """Scale user and cell shards up by one each under load, until the layout is committed."""
        layout = t.get("/v1/admin/status").json()["layout"]
        target = {"user_shards": len(layout["user_shards"]) + 1,
                  "cell_shards": len(layout["cell_shards"]) + 1}  # fmt: skip
        started = time.monotonic()
        t.post("/v1/admin/scale", target).raise_for_status()
        while True:
            body = t.get("/v1/admin/status").json()
            done = len(body["layout"]["user_shards"]) == target["user_shards"]
            if done and "pending_layout" not in body:
                return time.monotonic()
            if body.get("rebalance", {}).get("state") in ("failed", "interrupted"):
                raise RuntimeError(f"rebalance {body['rebalance']}")
            if time.monotonic() - started > 300:
                raise RuntimeError(f"rebalance unfinished after 300 s: {body}")
            time.sleep(0.2)

    def kill_node() -> float:
        """A worker node running a user shard and an ingest handler (the ingest path), one
        running a cell shard too if there is one."""
        workers = [n for n in t.cluster.workers if not n.killed]
        on_path = [n for n in workers if n.actors("UserShard") and n.actors("IngestServer")]
        victim = max(on_path or workers, key=lambda n: len(n.actors("CellShard")))
        t.cluster.kill(victim.name)
        return time.monotonic()

    table = {
        "redis-kill": ("redis-server SIGKILL", kill_redis),
        "redis-stall": (f"Redis stalled {stall_s:g} s (SIGSTOP)", stall_redis),
        "redis-flush": ("Redis FLUSHALL", flush_redis),
        "user-shard": ("a user shard SIGKILL", kill("UserShard")),
        "cell-shard": ("a cell shard SIGKILL", kill("CellShard")),
        "space-shard": ("the space shard SIGKILL", kill("SpaceShard")),
        "ingest": ("an ingest handler SIGKILL", kill("IngestServer")),
        "history": ("the history actor SIGKILL", kill("History")),
        "clickhouse-outage": (f"ClickHouse unavailable {outage_s:g} s", clickhouse_outage),
        "checkpoint-stall": ("a checkpoint child stalled (SIGSTOP)", stall_checkpoint_child),
        "rebalance": ("rebalance +1 user, +1 cell shard under load", rebalance),
    }
    if t.cluster is not None:
        table["node"] = ("a worker node SIGKILLed (raylet and every process)", kill_node)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stall", type=float, default=5.0, help="seconds Redis is stalled")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds ClickHouse is away")
    parser.add_argument("--only", nargs="*", help="faults to run (default: all)")
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="Ray nodes: 1 (occupancy up starts its own Ray) or more (a head and worker nodes "
        "on this machine, for the `node` fault)",
    )
    args = parser.parse_args()
    if args.nodes < 2 and "node" in (args.only or ()):
        parser.error("the node fault needs a cluster: --nodes 3")
    with tempfile.TemporaryDirectory(prefix="occ-chaos-") as tmp, contextlib.ExitStack() as stop:
        cluster, joined = None, {}
        if args.nodes > 1:
            env = cluster_env() | serve_env("haproxy", Path(tmp) / "data" / HAPROXY_SUBDIR)
            workers = tuple(f"node_{i}" for i in range(1, args.nodes))
            cluster = LocalRayCluster(env, workers=workers)
            stop.callback(cluster.stop)
            cluster.start()
            joined = {k: v for k, v in cluster.env.items() if k.startswith("RAY_")}
        # a small backlog bound, so that an outage of minutes spills
        engine = EngineProcess(
            Path(tmp), OCC_SNAPSHOT_INTERVAL_S="2", OCC_ARCHIVE_BACKLOG_MAX_MB="4", **joined
        )
        stop.callback(engine.stop)
        t = Target(engine, cluster)
        table = faults(t, args.stall, args.outage)
        rows = []
        for i, key in enumerate(args.only or table):
            name, inject = table[key]
            print(f"… {name}", file=sys.stderr, flush=True)
            rows.append(run_fault(t, name, inject, seed=100 + i))
    print(f"Ray nodes: {args.nodes}")
    print(f"machine: {platform.node()} · {os.cpu_count()} cores · {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    print()
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
