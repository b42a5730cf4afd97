"""`occupancy simulate`: a synthetic fleet streamed through the real gRPC API."""

import random
import threading
import time
from dataclasses import dataclass, replace

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from occupancy.client import Ack, IngestClient
from occupancy.settings import Settings
from occupancy.simulator import FLEET_OF, Building, Fleet
from protos.occupancy.v1 import occupancy_pb2 as pb

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
    """One fleet and a building's door counters, sent once a tick through the client library's
    IngestClient (batches of at most BATCH, retried with backoff while the engine is
    restarting or overloaded) with an ingest or admin key."""

    def __init__(
        self,
        target: str,
        key: str | None,
        devices: int,
        interval_s: float,
        door_rate: float = 2.0,
        seed: int = 7,
        tls_ca: str | bool | None = None,
        settings: Settings | None = None,
    ):
        """`key` and `tls_ca` as IngestClient takes them: None for what the settings and the
        data dir say, False for plaintext, else TLS trusting that CA file (True: the system's
        CAs)."""
        self.client = IngestClient(
            target,
            key,
            tls_ca=tls_ca,
            batch_size=BATCH,
            settings=settings,
        )
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
        ack = self._sent(lambda: self.client.send_pings(pings))
        self.totals.accepted += ack.accepted
        self.totals.late += ack.late
        self.totals.rejected += ack.rejected
        self.totals.sent += len(pings)
        events = [
            pb.DoorEvent(sensor_id=s, ts_ms=ts, direction=d)
            for s, ts, d in self.building.events(now, self.door_rate, tick_s)
        ]
        self.totals.doors += self._sent(lambda: self.client.send_door_events(events)).accepted

    def _sent(self, send) -> Ack:
        """What `send()` and a flush behind it came to (full batches go out during `send`)."""
        before = replace(self.client.totals, rejections=[])
        send()
        self.client.flush()
        after = self.client.totals
        return Ack(
            after.accepted - before.accepted,
            after.late - before.late,
            after.rejected - before.rejected,
        )

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
        self.client.close()


def interval_for(devices: int, interval_s: float, rate: float | None) -> float:
    """Each device's report interval: `interval_s`, or what makes the fleet send `rate` pings/s."""
    if rate is None:
        return interval_s
    if rate <= 0:
        raise ValueError("--rate must be positive")
    return devices / rate


def run(
    target: str,
    key: str | None,
    devices: int,
    interval_s: float,
    duration_s: float | None,
    door_rate: float,
    console: Console,
    tls_ca: str | bool | None = None,
    settings: Settings | None = None,
) -> Totals:
    """Send the fleet until `duration_s` (None: until Ctrl-C), showing progress: a bar on a
    terminal, a line per tick otherwise (logs, pipes)."""
    sim = Simulation(target, key, devices, interval_s, door_rate, tls_ca=tls_ca, settings=settings)
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
