"""The simulated fleets move like what they stand for, and the door counters add up."""

import itertools
import random
from collections import defaultdict

from engine.doors import DoorCounter
from engine.geo import haversine_m
from occupancy.simulator import DISTRICTS, MALL_CENTRE, Building, Fleet, bus_route

T0 = 1_790_000_000_000


def _tracks(devices=300, interval_s=5.0, seconds=600):
    fleet = Fleet(devices=devices, interval_s=interval_s, seed=3)
    tracks = defaultdict(list)
    for t in range(0, seconds * 1000 + 1, 1000):
        for p in fleet.step(T0 + t):
            tracks[p.device_id].append(p)
    return tracks


def test_every_device_reports_about_once_an_interval():
    tracks = _tracks()
    assert len(tracks) == 300
    for pings in tracks.values():
        gaps = [b.ts - a.ts for a, b in itertools.pairwise(pings)]
        assert all(4_000 <= g <= 6_000 for g in gaps)


def test_speeds_are_plausible_for_each_kind():
    tracks = _tracks(seconds=2_400)  # long enough for a bus to turn at the route's end
    top = {"veh": 0.0, "bus": 0.0, "ped": 0.0}
    for device, pings in tracks.items():
        kind = device[:3]
        for a, b in itertools.pairwise(pings):
            speed = haversine_m(a.lat, a.lng, b.lat, b.lng) / ((b.ts - a.ts) / 1000)
            top[kind] = max(top[kind], speed)
    # GPS noise (σ 4 m) adds a few m/s over 5 s; a car never exceeds 15 m/s (54 km/h)
    assert 8 < top["veh"] < 15 + 6
    assert 5 < top["bus"] < 25  # the recorded bus reaches ~60 km/h between stops
    assert top["ped"] < 1.6 + 3


def test_places_each_kind_where_it_belongs():
    tracks = _tracks(seconds=120)
    route_lats = bus_route()[1]
    for device, pings in tracks.items():
        for p in pings:
            if device.startswith("ped"):
                assert haversine_m(p.lat, p.lng, *MALL_CENTRE) < 300
            elif device.startswith("veh"):
                # within a district: its corners are √2 half-sizes out, plus GPS noise
                assert any(
                    haversine_m(p.lat, p.lng, d.lat, d.lng) < d.half_size_m * 1.6 for d in DISTRICTS
                )
            else:
                assert min(route_lats) - 0.001 < p.lat < max(route_lats) + 0.001


def test_cars_wait_at_red_lights():
    tracks = _tracks()
    stopped = 0
    for device, pings in tracks.items():
        if device.startswith("veh"):
            for a, b in itertools.pairwise(pings):
                stopped += haversine_m(a.lat, a.lng, b.lat, b.lng) < 20
    assert stopped > 0


def test_door_counts_equal_the_people_inside_despite_late_reports():
    building = Building(random.Random(5))
    counter = DoorCounter()
    counter.define_space("hq")
    counter.define_space("hq-meeting")
    counter.define_doorway("front", inside="hq", outside=None)
    counter.define_doorway("back", inside="hq", outside=None)
    counter.define_doorway("meeting", inside="hq-meeting", outside="hq")
    counter.install("hq-front-1", "front", 0, "in")
    counter.install("hq-back-1", "back", 0, "out")
    counter.install("hq-meeting-door", "meeting", 0, "in")
    events = []
    for s in range(1, 1_201):
        events += building.events(T0 + s * 1000, 2.0, 1.0)
    arrival = [ts for _, ts, _ in events]
    assert arrival != sorted(arrival)  # some reports come late, out of order
    for sensor, ts, direction in events:
        counter.add(sensor, ts, direction)
    end = T0 + 1_201_000
    assert building.inside > 20 and building.in_meeting > 0
    assert counter.count("hq", end) == building.inside - building.in_meeting
    assert counter.count("hq-meeting", end) == building.in_meeting
