"""Random workloads for comparing the engine (and later the live system) with the oracle."""

from dataclasses import dataclass

from hypothesis import strategies as st

# 2024-03-10 23:58:00 UTC: workloads cross midnight two minutes in
T0 = 1_710_115_080_000
DAY0 = 1_710_028_800_000  # 2024-03-10 00:00 UTC
DAY_MS = 86_400_000

# four clusters of points, tens of kilometres apart (different placement parents and shards),
# each with a few points in neighbouring base cells
CLUSTERS = [(52.660, -8.630), (52.960, -8.630), (52.660, -8.130), (52.260, -8.930)]
OFFSETS = [(0.0, 0.0), (0.002, 0.0), (0.0, 0.003), (-0.0025, -0.002), (0.004, 0.004)]
POINTS = [(lat + dlat, lng + dlng) for lat, lng in CLUSTERS for dlat, dlng in OFFSETS]

DEVICES = [f"dev-{i}" for i in range(6)]
SENSORS = ["s1", "s2", "s3"]
DOORWAYS = ["d-front", "d-room", "d-side", None]
DOOR_SPACES = ["hall", "room"]
BBOX_C0 = (-8.64, 52.65, -8.62, 52.67)
# door event times, installations and resets fall on a grid so that they coincide often
GRID_MS = 5_000


def _rect(lat0, lng0, lat1, lng1) -> list[list[float]]:
    return [[lng0, lat0], [lng1, lat0], [lng1, lat1], [lng0, lat1], [lng0, lat0]]


# a square around (52.66, -8.63) with a hole around that point
SQUARE_WITH_HOLE = {
    "type": "Polygon",
    "coordinates": [_rect(52.655, -8.64, 52.665, -8.62), _rect(52.658, -8.632, 52.662, -8.628)],
}

POLYGON_SPACES = {
    # around cluster 0, with a hole around its first point
    "sp-a": {
        "type": "Polygon",
        "coordinates": [
            _rect(52.6555, -8.6365, 52.6655, -8.6215),
            _rect(52.6585, -8.6320, 52.6612, -8.6282),
        ],
    },
    # overlaps sp-a on its east side
    "sp-b": {"type": "Polygon", "coordinates": [_rect(52.6570, -8.6290, 52.6660, -8.6190)]},
    "sp-c": {"type": "Polygon", "coordinates": [_rect(52.6550, -8.1380, 52.6680, -8.1200)]},
}


@dataclass(frozen=True)
class Op:
    """One step of a workload: `kind` with its arguments; `dt` advances the arrival clock."""

    kind: str
    dt: int = 0
    args: tuple = ()


_dt = st.one_of(
    st.just(0), st.integers(0, 2_000), st.integers(0, 150_000), st.sampled_from([60_000, 120_000])
)
_ping_offset = st.one_of(
    st.just(0), st.integers(-200_000, 0), st.integers(0, 31_000), st.integers(-3_000, 3_000)
)


def ops() -> st.SearchStrategy[Op]:
    ping = st.builds(
        lambda dt, dev, off, pt: Op("ping", dt, (dev, off, pt)),
        _dt,
        st.sampled_from(DEVICES),
        _ping_offset,
        st.integers(0, len(POINTS) - 1),
    )
    dup = st.builds(
        lambda dev, pt: Op("dup", 0, (dev, pt)),
        st.sampled_from(DEVICES),
        st.integers(0, len(POINTS) - 1),
    )
    # a ping delayed in transit: dated just after the device's latest, arriving now (after a
    # long silence it cuts short the stay of a device that left memory)
    delayed = st.builds(
        lambda dev, within, pt: Op("delayed", 0, (dev, within, pt)),
        st.sampled_from(DEVICES),
        st.one_of(st.integers(-5_000, 0), st.integers(1, 150_000)),
        st.integers(0, len(POINTS) - 1),
    )
    door = st.builds(
        lambda dt, sensor, off, direction: Op("door", dt, (sensor, off, direction)),
        _dt,
        st.sampled_from(SENSORS),
        st.one_of(st.integers(-900_000, 0), st.integers(-120_000, 40_000)),
        st.sampled_from([1, -1, 1, 0]),
    )
    install = st.builds(
        lambda sensor, doorway, start, positive: Op(
            "install", 0, (sensor, doorway, start, positive)
        ),
        st.sampled_from(SENSORS),
        st.sampled_from(DOORWAYS),
        st.integers(-48, 72).map(lambda k: k * GRID_MS),
        st.sampled_from(["in", "out"]),
    )
    reset = st.builds(
        lambda space, at: Op("reset", 0, (space, at)),
        st.sampled_from(DOOR_SPACES),
        st.integers(-24, 72).map(lambda k: k * GRID_MS),
    )
    tick = st.builds(lambda dt: Op("tick", dt), _dt)
    # long silences: devices leave memory, watermarks and door events pass the horizon
    jump = st.builds(lambda dt: Op("tick", dt), st.integers(600_000, 3_600_000))
    return st.one_of(
        jump,
        ping,
        ping,
        ping,
        ping,
        dup,
        delayed,
        door,
        door,
        install,
        reset,
        tick,
        st.just(Op("snapshot")),
        st.just(Op("rebuild")),
        st.just(Op("check")),
    )


def workloads(min_size: int = 10, max_size: int = 80) -> st.SearchStrategy[list[Op]]:
    return st.lists(ops(), min_size=min_size, max_size=max_size)


def initial_installations() -> list[tuple[str, str | None, int, str]]:
    """Sensors in place twenty minutes before the workload starts."""
    return [
        ("s1", "d-front", T0 - 1_200_000, "in"),
        ("s2", "d-room", T0 - 1_200_000, "out"),
        ("s3", "d-side", T0 - 1_200_000, "in"),  # the room's second door
    ]
