"""HTTP ingest's readers (engine/http_ingest.py, engine/osmand.py): bodies into the items gRPC
ingest takes, with the wire types of its messages; the OsmAnd protocol's two shapes and its
timestamps as Traccar's decoder reads them."""

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.http_ingest import BadBody, PingItem, door_item, ping_item, read_items
from engine.osmand import osmand_pings, osmand_time, token_of

NOW = 1_764_583_200_000  # 2025-12-01T10:00:00Z


def test_a_json_batch_and_ndjson_read_alike():
    pings = [
        {"device_id": "a", "ts_ms": NOW, "lat": 52.5, "lng": -8},
        {"device_id": "b", "ts_ms": NOW, "lat": 1, "lng": 2, "accuracy_m": 3, "region": "r"},
        {"device_id": "c", "ts_ms": NOW, "lat": 1, "lng": 2, "attributes": {"k": "v"}},
    ]
    as_json = read_items(orjson.dumps({"pings": pings}), "application/json", "pings", ping_item, 9)
    ndjson = b"\n".join(orjson.dumps(p) for p in pings) + b"\n\n"
    lines = read_items(ndjson, "application/x-ndjson; charset=utf-8", "pings", ping_item, 9)
    assert as_json == lines
    assert as_json[0] == PingItem("a", NOW, 52.5, -8.0)
    assert as_json[1].accuracy_m == 3.0 and as_json[1].region == "r"
    assert as_json[2].attributes == {"k": "v"}


@pytest.mark.parametrize(
    "item",
    [
        "x",
        {"ts_ms": NOW, "lat": 1, "lng": 2},
        {"device_id": 5, "ts_ms": NOW, "lat": 1, "lng": 2},
        {"device_id": "a", "ts_ms": 1.5, "lat": 1, "lng": 2},
        {"device_id": "a", "ts_ms": 1 << 63, "lat": 1, "lng": 2},
        {"device_id": "a", "ts_ms": True, "lat": 1, "lng": 2},
        {"device_id": "a", "ts_ms": NOW, "lat": "1", "lng": 2},
        {"device_id": "a", "ts_ms": NOW, "lat": 1},
        {"device_id": "a", "ts_ms": NOW, "lat": 1, "lng": 2, "attributes": {"k": 1}},
        {"device_id": "a", "ts_ms": NOW, "lat": 1, "lng": 2, "region": 7},
    ],
)
def test_an_item_not_of_the_message_s_fields_and_types_is_malformed(item):
    assert ping_item(item) is None


def test_accuracy_has_the_wire_type_a_float():
    item = ping_item({"device_id": "a", "ts_ms": NOW, "lat": 1, "lng": 2, "accuracy_m": 1e300})
    assert math.isinf(item.accuracy_m)  # refused as accuracy_invalid, as over gRPC


def test_door_events_read_as_the_message():
    assert door_item({"sensor_id": "s", "ts_ms": NOW, "direction": -1}) == ("s", NOW, -1)
    assert door_item({"sensor_id": "s", "ts_ms": NOW, "direction": 1 << 40}) is None
    assert door_item({"sensor_id": "s", "ts_ms": NOW}) is None


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{", "application/json", 400, "bad_json"),
        (b"[]", "application/json", 400, "bad_body"),
        (b'{"pings": {}}', "application/json", 400, "bad_body"),
        (b'{"pings": []}', "text/plain", 415, "unsupported_media_type"),
        (b'{"pings": []}', "", 415, "unsupported_media_type"),
        (b'{"pings": [1, 2, 3]}', "application/json", 413, "batch_too_large"),
        (b"1\n2\n3\n", "application/x-ndjson", 413, "batch_too_large"),
    ],
)
def test_a_body_that_cannot_be_read_is_refused_whole(body, content_type, status, code):
    with pytest.raises(BadBody) as refused:
        read_items(body, content_type, "pings", ping_item, 2)
    assert (refused.value.status, refused.value.code) == (status, code)


def test_a_line_that_is_not_json_is_malformed_and_the_rest_go_on():
    body = b'{"device_id": "a", "ts_ms": 1, "lat": 1, "lng": 2}\n{oops\n'
    assert read_items(body, "application/x-ndjson", "pings", ping_item, 9)[1] is None


# -- OsmAnd ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (None, NOW),  # none: the arrival
        ("1764583200", NOW),  # seconds (below 2^31 - 1)
        ("1764583200000", NOW),  # ms
        (1764583200, NOW),
        ("1764583200.25", NOW + 250),
        ("2025-12-01T10:00:00Z", NOW),
        ("2025-12-01T11:00:00.5+01:00", NOW + 500),
        ("2025-12-01 10:00:00", NOW),  # Traccar's yyyy-MM-dd HH:mm:ss (UTC here)
        ("2147483646", 2_147_483_646_000),
        ("2147483647", 2_147_483_647),  # from Integer.MAX_VALUE on: ms
    ],
)
def test_timestamps_read_as_traccar_reads_them(value, ms):
    assert osmand_time(value, NOW) == ms


@pytest.mark.parametrize("value", ["", "soon", "nan", "inf", True, str(1 << 63)])
def test_a_timestamp_traccar_would_not_read_is_refused(value):
    with pytest.raises(BadBody):
        osmand_time(value, NOW)


def test_the_original_app_s_query_in_the_url_or_a_form_body():
    query = "id=phone&timestamp=1764583200&lat=52.66&lon=-8.63&speed=0.0&bearing=0.0"
    query += "&altitude=12.0&accuracy=8.5&batt=87.0&token=dev2.x.y"
    expected = [PingItem("phone", NOW, 52.66, -8.63, 8.5)]
    assert osmand_pings(query, b"", "", NOW) == expected
    form = "application/x-www-form-urlencoded"
    assert osmand_pings("token=dev2.x.y", query.encode(), form, NOW) == expected
    assert osmand_pings("", b"deviceid=phone&location=52.66,-8.63", form, NOW) == [
        PingItem("phone", NOW, 52.66, -8.63)
    ]
    assert token_of(query, b"", "") == "dev2.x.y"
    assert token_of("", b"token=t1&id=p", form) == "t1"
    assert token_of("", b'{"token": "t"}', "application/json") == ""


def test_the_newer_app_s_json_body():
    location = {
        "timestamp": "2025-12-01T10:00:00.000Z",
        "coords": {"latitude": 52.66, "longitude": -8.63, "accuracy": -1, "speed": -1},
        "battery": {"level": 0.5, "is_charging": False},
        "is_moving": True,
        "extras": {},
    }
    body = orjson.dumps({"location": location, "device_id": "phone"})
    assert osmand_pings("", body, "application/json", NOW) == [PingItem("phone", NOW, 52.66, -8.63)]
    many = orjson.dumps({"location": [location, location], "device_id": 12345678})
    assert [p.device_id for p in osmand_pings("", many, "text/plain", NOW)] == ["12345678"] * 2


@pytest.mark.parametrize(
    ("query", "body", "code"),
    [
        ("lat=1&lon=2", b"", "missing_device_id"),
        ("id=a&lat=1", b"", "missing_position"),
        ("id=a&lat=x&lon=2", b"", "bad_parameter"),
        ("", b'{"device_id": "a"}', "missing_position"),
        ("", b'{"device_id": "a", "location": {"coords": {"latitude": 1}}}', "missing_position"),
        ("", b'{"location": {}}', "missing_device_id"),
        ("", b"{", "bad_json"),
    ],
)
def test_what_osmand_cannot_place_is_refused(query, body, code):
    with pytest.raises(BadBody) as refused:
        osmand_pings(query, body, "application/json" if body else "", NOW)
    assert refused.value.status == 400 and refused.value.code == code


@given(st.binary(max_size=200), st.text(max_size=100))
def test_no_body_or_query_raises_anything_but_bad_body(body, query):
    for content_type in ("", "application/json", "application/x-www-form-urlencoded"):
        try:
            osmand_pings(query, body, content_type, NOW)
        except BadBody:
            pass
        for reader in (ping_item, door_item):
            try:
                read_items(body, content_type or "application/x-ndjson", "pings", reader, 50)
            except BadBody:
                pass
