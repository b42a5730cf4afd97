"""The soak: a churning fleet against a whole engine, and every size that could grow, by minute.

Every minute 10% of the devices leave for good and as many new ones arrive; each device pings
every --interval seconds while it is there, moving about a city; a few pings arrive half a minute
late (older than ones already sent); door counters report crossings. Each minute the script
prints the RSS of every engine process by kind, each user shard's checkpoint, Redis's memory by
key family, the write-ahead logs, the rows the last snapshot wrote, and the devices present, held,
remembered by a watermark, and kept as tombstones in the views. At the end: each figure's change
over the run after the warm-up. The id directory (raw ids, which grow with devices ever seen until
`occupancy forget` or retention) is reported apart, per device.

    .venv/bin/python bench/soak.py --minutes 30

The engine runs with OCC_MAX_PING_AGE_S=60 (see --max-age) so that every horizon turns over
within the run: watermarks of departed devices, and door events folded into their bases. At the
default of 7 days the same holds after 7 days, with the watermarks of a week of departed devices
in memory (their bytes per device are printed).
"""

import argparse
import collections
import os
import platform
import random
import tempfile
import threading
import time
from pathlib import Path

import grpc
import psutil
import ray
import redis
from measure import free_port

from clients.history import NAME as HISTORY
from occupancy.runtime import Engine
from occupancy.settings import Settings
from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg

CENTRE = (52.6638, -8.6267)  # Limerick
FAMILIES = (
    "occ:wal:", "occ:ckpt:", "occ:ckpt_id:", "occ:ids", "occ:metrics", "occ:spans", "occ:keys",
    "occ:meta:", "occ:deadletter", "occ:archiv",
)  # fmt: skip


class Fleet:
    """Devices that come, move about and go; door sensors counting people in and out."""

    def __init__(self, devices: int, interval_s: float, seed: int = 7):
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.next_id = 0
        self.where: dict[str, tuple[float, float]] = {}
        for _ in range(devices):
            self._arrive()
        self.delayed: list[tuple[float, pb.Ping]] = []
        self._owed = 0.0
        self.sent = self.late_sent = self.doors = 0

    def _arrive(self) -> None:
        self.next_id += 1
        lat = CENTRE[0] + self.rng.uniform(-0.03, 0.03)
        lng = CENTRE[1] + self.rng.uniform(-0.05, 0.05)
        self.where[f"soak-{self.next_id:08d}"] = (lat, lng)

    def churn(self, seconds: float, share_a_minute: float = 0.1) -> None:
        """Over `seconds`, as many devices leave for good as `share_a_minute` says, and as many
        new ones arrive (a little at a time, as people come and go)."""
        self._owed += len(self.where) * share_a_minute * seconds / 60
        leaving = self.rng.sample(sorted(self.where), int(self._owed))
        self._owed -= len(leaving)
        for device in leaving:
            del self.where[device]
        for _ in leaving:
            self._arrive()

    def pings(self, share: float) -> list[pb.Ping]:
        """A `share` of the devices ping now; about 1% of those pings are held back 30 s."""
        now = int(time.time() * 1000)
        out = []
        for device in self.rng.sample(sorted(self.where), int(len(self.where) * share)):
            lat, lng = self.where[device]
            lat += self.rng.gauss(0, 0.0002)
            lng += self.rng.gauss(0, 0.0003)
            self.where[device] = (lat, lng)
            ping = pb.Ping(device_id=device, ts_ms=now, lat=lat, lng=lng)
            if self.rng.random() < 0.01:
                self.delayed.append((time.monotonic() + 30, ping))
            else:
                out.append(ping)
        due = [p for t, p in self.delayed if t <= time.monotonic()]
        self.delayed = [(t, p) for t, p in self.delayed if t > time.monotonic()]
        self.late_sent += len(due)
        self.sent += len(out) + len(due)
        return out + due

    def door_events(self) -> list[pb.DoorEvent]:
        now = int(time.time() * 1000)
        events = [
            pb.DoorEvent(
                sensor_id=f"door-{self.rng.randrange(4)}",
                ts_ms=now - self.rng.randint(0, 20_000),
                direction=self.rng.choice([1, -1]),
            )
            for _ in range(self.rng.randint(2, 8))
        ]
        self.doors += len(events)
        return events


def drive(fleet: Fleet, stub, key: str, stop: threading.Event) -> None:
    """Twice a second: the devices due, as one SendPings; door events once a second."""
    auth = [("authorization", f"Bearer {key}")]
    tick = 0
    while not stop.is_set():
        started = time.monotonic()
        fleet.churn(0.5)
        pings = fleet.pings(0.5 / fleet.interval_s)
        try:
            for i in range(0, len(pings), 5_000):
                stub.SendPings(
                    pb.SendPingsRequest(pings=pings[i : i + 5_000]), metadata=auth, timeout=30
                )
            if tick % 2 == 0:
                stub.SendDoorEvents(
                    pb.SendDoorEventsRequest(events=fleet.door_events()), metadata=auth, timeout=30
                )
        except grpc.RpcError as exc:
            print(f"  ingest: {exc.code().name} {exc.details()}", flush=True)
        tick += 1
        stop.wait(max(0.0, 0.5 - (time.monotonic() - started)))


def processes(engine: Engine, redis_pid: int | None) -> dict[str, list[int]]:
    """The engine's processes by kind, found by their actors and command lines."""
    kinds: dict[str, list[int]] = collections.defaultdict(list)
    t = engine.topology
    for family, names in (
        ("user shards", t.user_shards),
        ("cell shards", t.cell_shards),
        ("space shards", t.space_shards),
        ("history", (HISTORY,)),
        ("ingest", [f"ingest-{i}" for i in range(engine.settings.ingest_handlers)]),
    ):
        for name in names:
            kinds[family].append(ray.get(ray.get_actor(name, namespace=t.namespace).pid.remote()))
    ours = {pid for pids in kinds.values() for pid in pids} | {os.getpid()}
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if p.info["pid"] in ours:
            continue
        if (
            "ray::Serve" in line
            or "ray::HAProxy" in line
            or line.startswith("haproxy")
            or (p.info["name"] == "haproxy")
        ):
            kinds["serve"].append(p.info["pid"])
        elif p.info["pid"] == redis_pid:
            kinds["redis"].append(p.info["pid"])
        elif "gcs_server" in line:
            kinds["ray gcs"].append(p.info["pid"])
        elif any(d in line for d in ("raylet", "dashboard", "ray/_private", "autoscaler")):
            kinds["ray daemons"].append(p.info["pid"])
    return kinds


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def redis_families(client: redis.Redis) -> dict[str, int]:
    out: dict[str, int] = collections.Counter()
    for key in client.scan_iter(count=1000):
        name = key.decode()
        family = next((f for f in FAMILIES if name.startswith(f)), "other")
        out[family.rstrip(":")] += client.memory_usage(key, samples=0) or 0
    return dict(out)


def sample(engine: Engine, client: redis.Redis, kinds: dict) -> dict:
    t = engine.topology
    handle = lambda name: ray.get_actor(name, namespace=t.namespace)  # noqa: E731
    users = ray.get([handle(n).stats.remote() for n in t.user_shards])
    cells = ray.get([handle(n).stats.remote() for n in t.cell_shards])
    spaces = ray.get([handle(n).stats.remote() for n in t.space_shards])
    history = ray.get(handle(HISTORY).status.remote())
    families = redis_families(client)
    ids = client.hlen("occ:ids")
    row = {
        "present": sum(c["devices"] for c in cells),
        "held": sum(u["devices"] for u in users),
        "watermarks": sum(u["watermarks"] for u in users),
        "tombstones": sum(c["tombstones"] for c in cells) + sum(s["tombstones"] for s in spaces),
        "door events held": sum(s["door_events"] for s in spaces),
        "wal entries": sum(u["wal_length"] for u in users) + sum(s["wal_length"] for s in spaces),
        "presence rows/snapshot": history.get("last_rows", {}).get("presence", 0),
        "checkpoints KB": sum(client.strlen(f"occ:ckpt:{n}") for n in t.user_shards) / 1024,
        "redis used MB": client.info("memory")["used_memory"] / 2**20,
        "redis w/o ids MB": (sum(families.values()) - families.get("occ:ids", 0)) / 2**20,
        "ids B/device": families.get("occ:ids", 0) / max(1, ids),
        "ids": ids,
    }
    for family, size in sorted(families.items()):
        row[f"{family} KB"] = size / 1024
    for kind, pids in sorted(kinds.items()):
        row[f"{kind} MB"] = rss_mb(pids)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--devices", type=int, default=5_000, help="present at any time")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between pings")
    parser.add_argument("--warmup", type=int, default=10, help="minutes before slopes count")
    parser.add_argument("--max-age", type=float, default=60.0, help="OCC_MAX_PING_AGE_S")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp), grpc_port=0, http_port=free_port(), max_ping_age_s=args.max_age
        )
        engine = Engine(settings).start()
        try:
            run(engine, args)
        finally:
            engine.stop()


def run(engine: Engine, args) -> None:
    client = engine.client()
    key = engine.create_key("ingest", "soak")
    for space, (dlat, dlng) in (("soak-north", (0.01, 0.0)), ("soak-south", (-0.01, 0.0))):
        lat, lng = CENTRE[0] + dlat, CENTRE[1] + dlng
        ring = [[lng - 0.01, lat - 0.005], [lng + 0.01, lat - 0.005], [lng + 0.01, lat + 0.005],
                [lng - 0.01, lat + 0.005], [lng - 0.01, lat - 0.005]]  # fmt: skip
        engine.define_polygon_space(space, {"type": "Polygon", "coordinates": [ring]})
    engine.define_door_space("soak-hall")
    engine.define_doorway("soak-door", "soak-hall", None)
    for i in range(4):
        engine.install(f"door-{i}", "soak-door", int(time.time() * 1000) - 5_000, "in")
    redis_pid = engine._redis.proc.pid if engine._redis and engine._redis.proc else None
    kinds = processes(engine, redis_pid)
    fleet = Fleet(args.devices, args.interval)
    stub = pbg.IngestServiceStub(grpc.insecure_channel(f"127.0.0.1:{engine.grpc_port}"))
    stop = threading.Event()
    threading.Thread(target=drive, args=(fleet, stub, key, stop), daemon=True).start()
    print(f"machine: {platform.node()} · {os.cpu_count()} cores · {platform.python_version()}")
    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M')} · {args.devices:,} devices present, a ping "
        f"each {args.interval:g} s, 10% replaced a minute, OCC_MAX_PING_AGE_S={args.max_age:g}"
    )
    rows: list[dict] = []
    try:
        for minute in range(1, args.minutes + 1):
            time.sleep(60)
            row = {"minute": minute, "sent": fleet.sent, **sample(engine, client, kinds)}
            rows.append(row)
            print(" · ".join(f"{k} {_fmt(v)}" for k, v in row.items()), flush=True)
    finally:
        stop.set()
    summary(rows, args.warmup)


def _fmt(v) -> str:
    return f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"


def summary(rows: list[dict], warmup: int) -> None:
    """Each figure at the end of the warm-up and at the end, and its change (%) between."""
    if len(rows) <= warmup:
        return
    first, last = rows[warmup - 1], rows[-1]
    window = rows[warmup - 1 :]
    print(f"\n| figure | minute {first['minute']} | minute {last['minute']} | change | slope |")
    print("|---|---:|---:|---:|---:|")
    for k in last:
        if k in ("minute", "sent") or not isinstance(last[k], int | float):
            continue
        a, b = first.get(k, 0), last[k]
        change = f"{(b - a) / a * 100:+.1f}%" if a else "—"
        print(f"| {k} | {_fmt(a)} | {_fmt(b)} | {change} | {_slope(window, k)} |")


def _slope(rows: list[dict], k: str) -> str:
    """The least-squares slope over `rows`, in % of the mean per 10 minutes."""
    xs = [r["minute"] for r in rows]
    ys = [r.get(k, 0) for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if not var or not my:
        return "—"
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    return f"{slope * 10 / my * 100:+.1f}%/10 min"


if __name__ == "__main__":
    main()
