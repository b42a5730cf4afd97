"""`occupancy simulate`: a synthetic fleet streamed through the real gRPC API."""

import random
import threading
import time
from dataclasses import dataclass

import grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from occupancy.simulator import FLEET_OF, Building, Fleet
from occupancy.tls import grpc_credentials
from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg

DOOR_SENSORS = Building.SENSORS
BATCH = 5_000


@dataclass
class Totals:
    sent: int = 0
    accepted: int = 0
    late: int = 0
    rejected: int = 0
    doors: int = 0

    def line(self) -> str:
        return (
            f"sent {self.sent:,}  accepted {self.accepted:,}  late {self.late:,}  "
            f"rejected {self.rejected:,}  door events {self.doors:,}"
        )


class Simulation:
    """One fleet and a building's door counters, sent once a tick (`SendPings` in batches of
    at most BATCH, `SendDoorEvents`) with an ingest or admin key."""

    def __init__(
        self,
        target: str,
        key: str,
        devices: int,
        interval_s: float,
        door_rate: float = 2.0,
        seed: int = 7,
        tls_ca: str | bool | None = None,
    ):
        """`tls_ca`: None for a plaintext channel, else TLS trusting that CA file (True: the
        system's CAs)."""
        if tls_ca is None:
            self.channel = grpc.insecure_channel(target)
        else:
            self.channel = grpc.secure_channel(target, grpc_credentials(tls_ca))
        self.stub = pbg.IngestServiceStub(self.channel)
        self.auth = [("authorization", f"Bearer {key}")]
        self.fleet = Fleet(devices=devices, interval_s=interval_s, seed=seed)
        self.door_rate = door_rate
        self.building = Building(random.Random(seed + 1))
        self.totals = Totals()

    def tick(self, tick_s: float) -> None:
        now = int(time.time() * 1000)
        pings = [
            pb.Ping(
                device_id=p.device_id,
                ts_ms=p.ts,
                lat=p.lat,
                lng=p.lng,
                attributes={"fleet": FLEET_OF[p.device_id[:3]]},
            )
            for p in self.fleet.step(now)
        ]
        for i in range(0, len(pings), BATCH):
            ack = self.stub.SendPings(
                pb.SendPingsRequest(pings=pings[i : i + BATCH]), metadata=self.auth, timeout=30
            )
            self.totals.accepted += ack.accepted
            self.totals.late += ack.late
            self.totals.rejected += ack.rejected
        self.totals.sent += len(pings)
        events = [
            pb.DoorEvent(sensor_id=s, ts_ms=ts, direction=d)
            for s, ts, d in self.building.events(now, self.door_rate, tick_s)
        ]
        if events:
            ack = self.stub.SendDoorEvents(
                pb.SendDoorEventsRequest(events=events), metadata=self.auth, timeout=30
            )
            self.totals.doors += ack.accepted

    def run(
        self,
        duration_s: float | None,
        stop: threading.Event | None = None,
        on_tick=None,
        tick_s: float = 1.0,
    ) -> Totals:
        """Tick until `duration_s` has passed (None: until `stop` is set or Ctrl-C)."""
        stop = stop or threading.Event()
        start = time.monotonic()
        while not stop.is_set() and (duration_s is None or time.monotonic() - start < duration_s):
            tick = time.monotonic()
            self.tick(tick_s)
            if on_tick is not None:
                on_tick(self.totals, time.monotonic() - start)
            stop.wait(max(0.0, tick_s - (time.monotonic() - tick)))
        return self.totals

    def close(self) -> None:
        self.channel.close()


def interval_for(devices: int, interval_s: float, rate: float | None) -> float:
    """Each device's report interval: `interval_s`, or what makes the fleet send `rate` pings/s."""
    if rate is None:
        return interval_s
    if rate <= 0:
        raise ValueError("--rate must be positive")
    return devices / rate


def run(
    target: str,
    key: str,
    devices: int,
    interval_s: float,
    duration_s: float | None,
    door_rate: float,
    console: Console,
    tls_ca: str | bool | None = None,
) -> Totals:
    """Send the fleet until `duration_s` (None: until Ctrl-C), showing progress: a bar on a
    terminal, a line per tick otherwise (logs, pipes)."""
    sim = Simulation(target, key, devices, interval_s, door_rate, tls_ca=tls_ca)
    console.print(
        f"simulating {devices:,} devices (one ping each every {interval_s:g} s, "
        f"~{devices / interval_s:,.0f} pings/s) and {len(DOOR_SENSORS)} door counters → {target}"
    )
    try:
        if not console.is_terminal:
            return sim.run(
                duration_s, on_tick=lambda t, el: console.print(f"{el:6.0f} s  {t.line()}")
            )
        columns = [TextColumn("[bold]simulating[/]")]
        if duration_s is not None:
            columns.append(BarColumn())
        columns += [TimeElapsedColumn(), TextColumn("{task.fields[totals]}")]
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("simulate", total=duration_s, totals="")

            def show(totals: Totals, elapsed: float) -> None:
                bar.update(task, completed=elapsed, totals=totals.line())

            sim.run(duration_s, on_tick=show)
        console.print(sim.totals.line())
        return sim.totals
    except KeyboardInterrupt:
        console.print(sim.totals.line())
        return sim.totals
    finally:
        sim.close()
