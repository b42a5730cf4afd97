"""Synthetic fleets: vehicles on a street grid, pedestrians dwelling in a mall, door counters."""

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from engine.local import RawPing

M_PER_DEG_LAT = 111_195.0

# Limerick, Ireland: where the bus trace in shared/data was recorded
CITY_CENTRE = (52.6638, -8.6267)
MALL_CENTRE = (52.6528, -8.6410)


@dataclass(frozen=True, slots=True)
class District:
    name: str
    lat: float
    lng: float
    half_size_m: float


DISTRICTS = (
    District("centre", 52.6638, -8.6267, 900),
    District("north", 52.6790, -8.6300, 700),
    District("east", 52.6620, -8.6000, 700),
    District("south-west", 52.6480, -8.6550, 800),
)

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
    dwell_until: int = 0
    target: tuple[float, float] = (0.0, 0.0)
    district: District | None = None


@dataclass
class Fleet:
    """A deterministic synthetic fleet; `step(now)` returns the pings due by `now`.

    Vehicles drive a street grid (block 150 m) at 6–16 m/s and turn at junctions; pedestrians
    walk at ~1.3 m/s between mall sections and dwell in them for minutes. Each device reports
    every `interval_s` with jitter, so pings of many devices interleave as on a real gateway.
    """

    devices: int = 1000
    interval_s: float = 5.0
    seed: int = 7
    pedestrian_share: float = 0.35
    _movers: list[_Mover] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random)
    _last: int = 0

    BLOCK_M = 150.0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        for i in range(self.devices):
            if self._rng.random() < self.pedestrian_share:
                self._movers.append(self._pedestrian(f"ped-{i:06d}"))
            else:
                self._movers.append(self._vehicle(f"veh-{i:06d}"))

    def _vehicle(self, device_id: str) -> _Mover:
        d = self._rng.choice(DISTRICTS)
        half_blocks = int(d.half_size_m // self.BLOCK_M)
        north = self._rng.randint(-half_blocks, half_blocks) * self.BLOCK_M
        east = self._rng.randint(-half_blocks, half_blocks) * self.BLOCK_M
        heading = self._rng.choice([(1, 0), (-1, 0), (0, 1), (0, -1)])
        return _Mover(
            device_id, "vehicle", north, east, heading, self._rng.uniform(6, 16), district=d
        )

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
        else:
            lat, lng = offset(*MALL_CENTRE, m.north + noise_n / 2, m.east + noise_e / 2)
        return RawPing(m.device_id, now, lat, lng)

    def _move(self, m: _Mover, dt: float, now: int) -> None:
        if m.kind == "vehicle":
            self._drive(m, dt)
        else:
            self._walk(m, dt, now)

    def _drive(self, m: _Mover, dt: float) -> None:
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


def door_events(
    rng: random.Random,
    sensors: list[str],
    now: int,
    rate_per_s: float,
    dt_s: float,
    delayed_share: float = 0.05,
) -> Iterator[tuple[str, int, int]]:
    """Door crossings over `dt_s` seconds ending at `now`: mostly in order, a few delayed by up
    to a minute (as counters that buffer over a flaky link do); entries slightly outnumber exits
    in the morning of the simulation so that counts build up."""
    expected = rate_per_s * dt_s
    n = int(expected) + (rng.random() < expected - int(expected))
    for _ in range(n):
        ts = now - int(rng.uniform(0, dt_s) * 1000)
        if rng.random() < delayed_share:
            ts -= rng.randint(1_000, 60_000)
        yield rng.choice(sensors), ts, 1 if rng.random() < 0.55 else -1
