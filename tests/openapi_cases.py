"""What schemathesis needs to fuzz the API from its OpenAPI document: valid values of the
formats that name rules JSON Schema cannot state (serve_apps/params.py), and the one rule
across parameters: a period's order, one area. Shared by the unit tier (stand-ins) and the
integration tier (a live engine)."""

import time
from zoneinfo import available_timezones

import orjson
import schemathesis
from h3.api import basic_int as h3i
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from engine import series
from engine.cells import to_str
from engine.timeutil import DAY_MS, parse_time
from tests.workload import DOOR_SPACES

# spaces counted at their doors (no area): those of the workload, and those a live engine lists
DOOR_SPACE_IDS = set(DOOR_SPACES)

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def register_formats(base_res: int) -> None:
    """A bbox with its corners in order; an H3 cell of a resolution the engine answers; a
    polygon; ids of at most so many bytes."""

    @st.composite
    def bboxes(draw) -> str:
        lng = sorted(draw(st.integers(-18_000, 18_000)) / 100 for _ in range(2))
        lat = sorted(draw(st.integers(-9_000, 9_000)) / 100 for _ in range(2))
        return f"{lng[0]},{lat[0]},{lng[1]},{lat[1]}"

    cells = st.builds(
        lambda lat, lng, res: to_str(h3i.latlng_to_cell(lat, lng, res)),
        st.floats(-89.9, 89.9),
        st.floats(-179.9, 179.9),
        st.integers(0, base_res),
    )

    @st.composite
    def polygons(draw) -> str:  # a triangle inside a bbox
        west, south, east, north = (float(x) for x in draw(bboxes()).split(","))
        if west == east or south == north:  # degenerate: a half-degree triangle on the map
            east = west + 0.5 if west < 179 else west - 0.5
            north = south + 0.5 if south < 89 else south - 0.5
        ring = [[west, south], [east, south], [west, north], [west, south]]
        return orjson.dumps({"type": "Polygon", "coordinates": [ring]}).decode()

    def ids(most_bytes: int):  # ids count bytes, JSON Schema characters
        text = st.text(
            st.characters(exclude_characters="/?#", exclude_categories=("Cs",)),
            min_size=1,
            max_size=most_bytes,
        )
        return text.filter(lambda s: len(s.encode()) <= most_bytes)

    schemathesis.openapi.format("id128", ids(128))
    schemathesis.openapi.format("id200", ids(200))
    schemathesis.openapi.format("bbox", bboxes())
    schemathesis.openapi.format("geojson-polygon", polygons())
    schemathesis.openapi.format("h3-cell", cells)
    schemathesis.openapi.format("iana-tz", st.sampled_from(sorted(available_timezones())))
    schemathesis.openapi.format(
        "hook-url",
        st.builds(
            "{}://{}:{}/{}".format,
            st.sampled_from(["http", "https"]),
            st.sampled_from(["127.0.0.1", "localhost", "hooks.example"]),
            st.integers(1, 65535),
            st.text("abcdefghijklmnopqrstuvwxyz0123456789-_/", max_size=30),
        ),
    )


AREAS = ("bbox", "polygon", "space")  # /v1/history/paths takes exactly one


def _hook_rule(case) -> bool:
    if case.path != "/v1/hooks/{hook_id}" or not isinstance(case.body, dict):
        return True
    events = case.body.get("events")
    levels = isinstance(events, list) and bool({"above", "below"} & set(map(str, events)))
    return levels == (case.body.get("threshold") is not None)


def in_order(context, case) -> bool:
    """A period's `to` after its `from` (a missing `to` is now, a missing `from` a day before
    `to`, as the audit log has them): the rule the document states in words only. A hook's
    threshold comes with above or below, and only with them."""
    if not _hook_rule(case):
        return False
    query = case.query
    if not isinstance(query, dict):
        return True
    try:
        end = parse_time(str(query["to"])) if "to" in query else int(time.time() * 1000)
        start = parse_time(str(query["from"])) if "from" in query else end - DAY_MS
    except (ValueError, TypeError, AttributeError):
        return True  # not a time at all: its rejection is what is checked
    if case.path == "/v1/history/devices" and ("bbox" in query) == ("polygon" in query):
        return False  # exactly one of them
    if case.path == "/v1/series":
        if ("space" in query) == ("cell" in query):
            return False  # exactly one of them
        try:  # at most MAX_BUCKETS buckets, within the years time zones are known for
            step = series.STEPS[str(query.get("step"))]
            series.edges(start, end, step, series.zone(str(query.get("tz", "UTC"))))
        except (ValueError, KeyError):
            return False
    if case.path == "/v1/stream" and not (query.get("spaces") or query.get("bbox")):
        return False  # at least one of them
    if case.path == "/v1/history/paths":
        if sum(a in query for a in AREAS) != 1 or query.get("space") in DOOR_SPACE_IDS:
            return False  # exactly one area, and a door space has none
    return end > start


def config(key: str) -> SchemathesisConfig:
    """Every check, with `key` as the bearer key (checks that leave it out or spoil it too)."""
    return SchemathesisConfig.from_dict(
        {
            "auth": {"openapi": {"bearer": {"bearer": key}}},
            "generation": {"max-examples": SETTINGS.max_examples},
            # a history query given too little time is answered 504 (documented), not a bug
            "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "504"]}},
        }
    )


def one_event(context, case):
    """A live stream (`/v1/stream`) never ends by itself: each case asks for its first event
    only (`limit=1`), unless its `limit` is not a count at all (then its 400 is checked)."""
    if case.path == "/v1/stream" and isinstance(case.query, dict):
        limit = case.query.get("limit")
        if limit is None or (isinstance(limit, int) and not isinstance(limit, bool) and limit > 1):
            case.query["limit"] = 1
    return case


def load(schema):
    """The schema with the hooks above."""
    schema.hook("filter_case")(in_order)
    schema.hook("map_case")(one_event)
    return schema
