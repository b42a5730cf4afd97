"""The engine over a simulated city in one process, printing live counts as they change."""

import random
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from engine.cells import to_str
from engine.local import LocalCluster
from engine.spec import EngineSpec
from occupancy.simulator import Fleet, demo_spaces, door_events

# fine enough for the mall's sections to be spaces of several cells; the city rolls up to 9
DEMO_RES = 11
DOOR_SENSORS = ["hq-front-1", "hq-front-2", "hq-meeting-door"]


def build_cluster(spec: EngineSpec, now: int) -> LocalCluster:
    cluster = LocalCluster(spec, user_shards=2, cell_shards=2, space_shards=2)
    for space, (name, polygon) in demo_spaces().items():
        cluster.define_space(space, polygon, name)
    cluster.define_door_space("hq", "Headquarters building")
    cluster.define_door_space("hq-meeting", "HQ meeting room")
    cluster.define_doorway("hq-front", inside="hq", outside=None)
    cluster.define_doorway("hq-meeting-door", inside="hq-meeting", outside="hq")
    cluster.install("hq-front-1", "hq-front", now - 3_600_000, "in")
    cluster.install("hq-front-2", "hq-front", now - 3_600_000, "out")
    cluster.install("hq-meeting-door", "hq-meeting-door", now - 3_600_000, "in")
    return cluster


def render(cluster: LocalCluster, now: int, pings: int, elapsed_s: float) -> Table:
    table = Table(
        title=f"live occupancy · {cluster.device_count()} devices · "
        f"{pings} pings in {elapsed_s:.0f} s"
    )
    table.add_column("top cells (res 9)")
    table.add_column("count", justify="right")
    table.add_column("space")
    table.add_column("count", justify="right")
    top = cluster.top(10, 9)
    spaces = [
        "district-centre",
        "district-north",
        "district-east",
        "district-south-west",
        "mall",
        "mall-food-court",
        "mall-fashion",
        "mall-cinema",
        "hq",
        "hq-meeting",
    ]
    for i in range(max(len(top), len(spaces))):
        cell, count = (to_str(top[i][0]), str(top[i][1])) if i < len(top) else ("", "")
        space = spaces[i] if i < len(spaces) else ""
        table.add_row(cell, count, space, str(cluster.space_count(space, now)) if space else "")
    return table


def run(
    devices: int,
    interval_s: float,
    duration_s: float | None,
    console: Console,
    clock: Callable[[], float] = time.time,
    tick_s: float = 1.0,
) -> LocalCluster:
    """Drive the simulated fleet through the engine for `duration_s` (None: until Ctrl-C)."""
    spec = EngineSpec(res=DEMO_RES)
    start = time.monotonic()
    cluster = build_cluster(spec, int(clock() * 1000))
    fleet = Fleet(devices=devices, interval_s=interval_s)
    rng = random.Random(11)
    total = 0
    while duration_s is None or time.monotonic() - start < duration_s:
        now = int(clock() * 1000)
        pings = fleet.step(now)
        total += len(pings)
        cluster.ingest(pings, now)
        cluster.door_events(door_events(rng, DOOR_SENSORS, now, 0.5, tick_s), now)
        cluster.advance(now)
        console.print(render(cluster, now, total, time.monotonic() - start))
        time.sleep(tick_s)
    return cluster
