"""`occupancy simulate`: a synthetic fleet streamed through the real gRPC API."""

import random
import time

import grpc
from rich.console import Console

from occupancy.simulator import Fleet, door_events
from protos import occupancy_pb2 as pb
from protos import occupancy_pb2_grpc as pbg

DOOR_SENSORS = ["hq-front-1", "hq-front-2", "hq-meeting-door"]
BATCH = 5_000


def run(
    target: str,
    key: str,
    devices: int,
    interval_s: float,
    duration_s: float | None,
    door_rate: float,
    console: Console,
    tick_s: float = 1.0,
) -> dict:
    """Send the fleet's pings once a tick until `duration_s` (None: until Ctrl-C)."""
    stub = pbg.IngestStub(grpc.insecure_channel(target))
    auth = [("authorization", f"Bearer {key}")]
    fleet = Fleet(devices=devices, interval_s=interval_s)
    rng = random.Random(3)
    totals = {"sent": 0, "accepted": 0, "late": 0, "rejected": 0, "doors": 0}
    start = time.monotonic()
    try:
        while duration_s is None or time.monotonic() - start < duration_s:
            tick = time.monotonic()
            now = int(time.time() * 1000)
            pings = [
                pb.Ping(device_id=p.device_id, ts_ms=p.ts, lat=p.lat, lng=p.lng)
                for p in fleet.step(now)
            ]
            for i in range(0, len(pings), BATCH):
                ack = stub.SendPings(
                    pb.PingBatch(pings=pings[i : i + BATCH]), metadata=auth, timeout=30
                )
                totals["accepted"] += ack.accepted
                totals["late"] += ack.late
                totals["rejected"] += ack.rejected
            totals["sent"] += len(pings)
            events = [
                pb.DoorEvent(sensor_id=s, ts_ms=ts, direction=d)
                for s, ts, d in door_events(rng, DOOR_SENSORS, now, door_rate, tick_s)
            ]
            if events:
                ack = stub.SendDoorEvents(
                    pb.DoorEventBatch(events=events), metadata=auth, timeout=30
                )
                totals["doors"] += ack.accepted
            console.print(
                f"{time.monotonic() - start:6.0f} s  sent {totals['sent']:,}  "
                f"accepted {totals['accepted']:,}  late {totals['late']:,}  "
                f"rejected {totals['rejected']:,}  door events {totals['doors']:,}"
            )
            time.sleep(max(0.0, tick_s - (time.monotonic() - tick)))
    except KeyboardInterrupt:
        pass
    return totals
