"""Synthetic fleets: vehicles on a street grid, buses on a recorded route, pedestrians dwelling
in a mall, door counters."""

import math
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

from engine.local import RawPing
from engine.timeutil import parse_time

M_PER_DEG_LAT = 111_195.0

# the demo city is Limerick, Ireland, where the bus trace in occupancy/data/ was recorded
MALL_CENTRE = (52.6528, -8.6410)


@dataclass(frozen=True, slots=True)
class District:
    name: str
    lat: float
    lng: float
    half_size_m: float
    speed_mps: tuple[float, float]  # cruising speed between junctions, by traffic


DISTRICTS = (
    District("centre", 52.6638, -8.6267, 900, (4.0, 9.0)),
    District("north", 52.6790, -8.6300, 700, (7.0, 13.0)),
    District("east", 52.6620, -8.6000, 700, (8.0, 14.0)),
    District("south-west", 52.6480, -8.6550, 800, (8.0, 15.0)),
)

# what each device id's prefix is, as the `fleet` attribute of its pings
FLEET_OF = {"veh": "car", "bus": "bus", "ped": "shopper"}
BUS_TRACE = "bus-304-limerick-2019-02-18.gpx"


@cache
def bus_route() -> tuple[list[float], list[float], list[float]]:
    """The recorded bus journey (occupancy/data): seconds from its start, latitudes, longitudes."""
    ns = {"g": "http://www.topografix.com/GPX/1/1"}
    root = ET.fromstring((files("occupancy") / "data" / BUS_TRACE).read_bytes())
    points = root.findall(".//g:trkpt", ns)
    t0 = parse_time(points[0].find("g:time", ns).text)
    secs = [(parse_time(p.find("g:time", ns).text) - t0) / 1000 for p in points]
    return secs, [float(p.get("lat")) for p in points], [float(p.get("lon")) for p in points]


def on_route(elapsed_s: float) -> tuple[float, float]:
    """Where the bus is `elapsed_s` into its service: the recorded journey, then the same way
    back at the same pace, and again (interpolated between the recorded points)."""
    secs, lats, lngs = bus_route()
    t = elapsed_s % (2 * secs[-1])
    if t > secs[-1]:
        t = 2 * secs[-1] - t
    lo, hi = 0, len(secs) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if secs[mid] <= t:
            lo = mid
        else:
            hi = mid
    f = (t - secs[lo]) / ((secs[hi] - secs[lo]) or 1)
    return lats[lo] + (lats[hi] - lats[lo]) * f, lngs[lo] + (lngs[hi] - lngs[lo]) * f


MALL_SECTIONS = {
    # name: (offset north m, offset east m, half width m, half height m, dwell weight)
    "food-court": (0.0, 0.0, 45.0, 40.0, 3.0),
    "fashion": (90.0, -100.0, 50.0, 40.0, 2.0),
    "electronics": (-85.0, 95.0, 45.0, 40.0, 1.5),
    "cinema": (95.0, 105.0, 45.0, 45.0, 2.5),
}


def offset(lat: float, lng: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point `north_m` north and `east_m` east of (lat, lng)."""
    dlat = north_m / M_PER_DEG_LAT
    dlng = east_m / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
    return lat + dlat, lng + dlng


def rect_polygon(lat: float, lng: float, half_north_m: float, half_east_m: float) -> dict:
    """A GeoJSON rectangle centred on (lat, lng)."""
    s, w = offset(lat, lng, -half_north_m, -half_east_m)
    n, e = offset(lat, lng, half_north_m, half_east_m)
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return {"type": "Polygon", "coordinates": [ring]}


def demo_spaces() -> dict[str, tuple[str, dict]]:
    """Polygon spaces of the demo: the city's districts, the mall and its sections."""
    spaces = {
        f"district-{d.name}": (
            f"District {d.name}",
            rect_polygon(d.lat, d.lng, d.half_size_m, d.half_size_m),
        )
        for d in DISTRICTS
    }
    spaces["mall"] = ("Riverside mall", rect_polygon(*MALL_CENTRE, 160, 180))
    for name, (north, east, hw, hh, _) in MALL_SECTIONS.items():
        lat, lng = offset(*MALL_CENTRE, north, east)
        spaces[f"mall-{name}"] = (f"Mall {name}", rect_polygon(lat, lng, hh, hw))
    return spaces


@dataclass
class _Mover:
    device_id: str
    kind: str
    north: float  # metres from the area's origin
    east: float
    heading: tuple[int, int] = (1, 0)
    speed: float = 10.0
    next_report: int = 0
    dwell_until: int = 0  # pedestrians in a shop, vehicles at a red light
    target: tuple[float, float] = (0.0, 0.0)
    district: District | None = None
    route_s: float = 0.0  # buses: seconds into the recorded journey


@dataclass
class Fleet:
    """A deterministic synthetic fleet; `step(now)` returns the pings due by `now`.

    Cars drive the street grid of a district (block 150 m) at its traffic's speed (4–9 m/s in
    the centre, up to 15 m/s outside), turn at junctions and wait at red lights (a quarter of
    junctions, 5–40 s). Buses follow a recorded route-304 journey at its recorded pace, stops
    included, spread out along the route. Pedestrians walk at ~1.3 m/s between mall sections
    and dwell in them for minutes. Each device reports every `interval_s` with jitter and GPS
    noise, so pings of many devices interleave as on a real gateway.
    """

    devices: int = 1000
    interval_s: float = 5.0
    seed: int = 7
    pedestrian_share: float = 0.35
    bus_share: float = 0.03
    _movers: list[_Mover] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random)
    _last: int = 0

    BLOCK_M = 150.0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        buses = round(self.devices * self.bus_share)
        for i in range(self.devices):
            if i < buses:
                self._movers.append(self._bus(f"bus-{i:06d}", i, buses))
            elif self._rng.random() < self.pedestrian_share:
                self._movers.append(self._pedestrian(f"ped-{i:06d}"))
            else:
                self._movers.append(self._vehicle(f"veh-{i:06d}"))

    def _vehicle(self, device_id: str) -> _Mover:
        d = self._rng.choice(DISTRICTS)
        half_blocks = int(d.half_size_m // self.BLOCK_M)
        north = self._rng.randint(-half_blocks, half_blocks) * self.BLOCK_M
        east = self._rng.randint(-half_blocks, half_blocks) * self.BLOCK_M
        heading = self._rng.choice([(1, 0), (-1, 0), (0, 1), (0, -1)])
        speed = self._rng.uniform(*d.speed_mps)
        return _Mover(device_id, "vehicle", north, east, heading, speed, district=d)

    def _bus(self, device_id: str, i: int, buses: int) -> _Mover:
        service_s = 2 * bus_route()[0][-1]  # there and back
        return _Mover(device_id, "bus", 0.0, 0.0, route_s=service_s * i / buses)

    def _pedestrian(self, device_id: str) -> _Mover:
        m = _Mover(device_id, "pedestrian", 0.0, 0.0, speed=self._rng.uniform(1.0, 1.6))
        m.north, m.east = self._pick_section_point()
        m.target = (m.north, m.east)
        return m

    def _pick_section_point(self) -> tuple[float, float]:
        sections = list(MALL_SECTIONS.values())
        north, east, hw, hh, _ = self._rng.choices(sections, [s[4] for s in sections])[0]
        return north + self._rng.uniform(-hh, hh), east + self._rng.uniform(-hw, hw)

    def step(self, now: int) -> list[RawPing]:
        """Move everyone to `now` and return the pings that fell due, in time order."""
        dt = 0.0 if self._last == 0 else (now - self._last) / 1000
        self._last = now
        out = []
        interval_ms = int(self.interval_s * 1000)
        for m in self._movers:
            if dt:
                self._move(m, dt, now)
            if m.next_report == 0:
                m.next_report = now + self._rng.randrange(interval_ms)
            if m.next_report <= now:
                m.next_report += interval_ms + self._rng.randint(-200, 200)
                m.next_report = max(m.next_report, now + 1)
                out.append(self._ping(m, now))
        return out

    def _ping(self, m: _Mover, now: int) -> RawPing:
        noise_n, noise_e = self._rng.gauss(0, 4), self._rng.gauss(0, 4)
        if m.kind == "vehicle":
            lat, lng = offset(m.district.lat, m.district.lng, m.north + noise_n, m.east + noise_e)
        elif m.kind == "bus":
            lat, lng = offset(*on_route(m.route_s), noise_n, noise_e)  # the trace has its own
        else:
            lat, lng = offset(*MALL_CENTRE, m.north + noise_n / 2, m.east + noise_e / 2)
        return RawPing(m.device_id, now, lat, lng)

    def _move(self, m: _Mover, dt: float, now: int) -> None:
        if m.kind == "vehicle":
            self._drive(m, dt, now)
        elif m.kind == "bus":
            m.route_s += dt
        else:
            self._walk(m, dt, now)

    def _drive(self, m: _Mover, dt: float, now: int) -> None:
        if m.dwell_until > now:  # red light
            return
        travel = m.speed * dt
        limit = m.district.half_size_m
        while travel > 0:
            pos = m.north if m.heading[0] else m.east
            direction = m.heading[0] or m.heading[1]
            to_junction = (self.BLOCK_M - (pos * direction) % self.BLOCK_M) or self.BLOCK_M
            step = min(travel, to_junction)
            m.north += m.heading[0] * step
            m.east += m.heading[1] * step
            travel -= step
            if step == to_junction:
                options = [(1, 0), (-1, 0), (0, 1), (0, -1)]
                options.remove((-m.heading[0], -m.heading[1]))
                options = [
                    h
                    for h in options
                    if abs(m.north + h[0] * self.BLOCK_M) <= limit
                    and abs(m.east + h[1] * self.BLOCK_M) <= limit
                ] or [(-m.heading[0], -m.heading[1])]
                m.heading = self._rng.choice(options)
                if self._rng.random() < 0.25:
                    m.dwell_until = now + self._rng.randint(5_000, 40_000)
                    return

    def _walk(self, m: _Mover, dt: float, now: int) -> None:
        if m.dwell_until > now:
            return
        dn, de = m.target[0] - m.north, m.target[1] - m.east
        dist = math.hypot(dn, de)
        step = m.speed * dt
        if dist <= step:
            m.north, m.east = m.target
            m.dwell_until = now + int(self._rng.expovariate(1 / 240) * 1000)
            m.target = self._pick_section_point()
        else:
            m.north += dn / dist * step
            m.east += de / dist * step


@dataclass
class Building:
    """People crossing the doors of a building with a meeting room, as its counters report them.

    The building has two doors to the street, each with its counter (a doorway holds one
    sensor at a time): `hq-front-1` counts an entry as +1, `hq-back-1` is mounted the other
    way round (an entry is -1, as the installation's `positive: out` says).
    The meeting room's door counts an entry into the room as +1. `inside` is everyone in the
    building, `in_meeting` those in the room: the door space of the floor holds the difference
    (walking into the room leaves the floor). People come in while the
    building is below its usual occupancy and leave above it. About one report in twenty
    arrives late (1-60 s after the crossing, as from a counter buffering over a flaky link),
    so events reach the engine out of order.
    """

    rng: random.Random
    usual: int = 60
    meeting_usual: int = 12
    delayed_share: float = 0.05
    inside: int = 0
    in_meeting: int = 0

    SENSORS = ("hq-front-1", "hq-back-1", "hq-meeting-door")

    def events(self, now: int, rate_per_s: float, dt_s: float) -> list[tuple[str, int, int]]:
        """(sensor, ts, direction) of the crossings over the `dt_s` seconds ending at `now`."""
        expected = rate_per_s * dt_s
        n = int(expected) + (self.rng.random() < expected - int(expected))
        out = []
        for ts in sorted(now - int(self.rng.uniform(0, dt_s) * 1000) for _ in range(n)):
            sensor, direction = self._crossing()
            if self.rng.random() < self.delayed_share:
                ts -= self.rng.randint(1_000, 60_000)
            out.append((sensor, ts, direction))
        return out

    def _crossing(self) -> tuple[str, int]:
        if self.inside > self.in_meeting and self.rng.random() < 0.3:
            entering = self._wants_in(self.in_meeting, self.meeting_usual)
            if not entering and self.in_meeting == 0:
                entering = True
            self.in_meeting += 1 if entering else -1
            return "hq-meeting-door", 1 if entering else -1
        entering = self._wants_in(self.inside, self.usual) or self.inside == self.in_meeting
        self.inside += 1 if entering else -1
        if self.rng.random() < 0.5:
            return "hq-front-1", 1 if entering else -1
        return "hq-back-1", -1 if entering else 1

    def _wants_in(self, present: int, usual: int) -> bool:
        p = 0.5 + 0.45 * (usual - present) / usual
        return self.rng.random() < min(0.95, max(0.05, p))
