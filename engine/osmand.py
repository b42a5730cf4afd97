"""The OsmAnd protocol, as Traccar's server reads it and the Traccar Client app sends it.

Two request shapes (Traccar's `OsmAndProtocolDecoder`):

- the query form of the original app, GET or POST: `?id=&lat=&lon=&timestamp=&speed=&bearing=
  &altitude=&accuracy=&batt=`, the parameters in the URL or in a form-encoded body (`deviceid`
  for `id`, `location=lat,lon` for `lat` and `lon` are read too);
- the JSON body of the newer app (`Content-Type: application/json`): `{"device_id",
  "location": {"timestamp", "coords": {"latitude", "longitude", "accuracy", "speed",
  "heading", "altitude"}, "battery": {...}, "is_moving", ...}}`; `location` may also be a list
  of such objects (the app's batched sync).

A timestamp is, as Traccar reads it: an integer, seconds since the epoch below 2^31 - 1 and
milliseconds from there; else an ISO-8601 time (with a `T`), or `yyyy-MM-dd HH:mm:ss` (UTC
here, the server's zone in Traccar). Without one, the ping is dated at its arrival. A decimal
number of seconds is taken too.

What the engine keeps of a position is its device, time, place and accuracy (metres; a negative
one, the app's "unknown", is none); speed, bearing, altitude, battery and the rest are read
past. Where Traccar would fall back on the device's last position (no coordinates), the
request is refused: the engine has no position to give it.
"""

from collections.abc import Mapping
from urllib.parse import parse_qsl

import orjson

from engine.http_ingest import JSON, BadBody, PingItem, float32, media_type
from engine.timeutil import parse_time

SECONDS_BELOW = 2_147_483_647  # Traccar: an integer timestamp below Integer.MAX_VALUE is seconds


def osmand_time(value, now_ms: int) -> int:
    """ms since the epoch of a timestamp as Traccar reads it (None: `now_ms`)."""
    if value is None:
        return now_ms
    if isinstance(value, bool):
        raise BadBody(400, "bad_timestamp", "a timestamp is a number or a time, not a boolean")
    if isinstance(value, int | float):
        number = value
    else:
        text = str(value).strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text) if "T" not in text and ":" not in text else None
            except ValueError:
                number = None
            if number is None:
                try:
                    return parse_time(text)
                except ValueError as exc:
                    raise BadBody(400, "bad_timestamp", str(exc)) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise BadBody(400, "bad_timestamp", "a timestamp must be finite")
    if abs(number) < SECONDS_BELOW:
        return round(number * 1000)
    if abs(number) >= 1 << 62:
        raise BadBody(400, "bad_timestamp", f"timestamp {value!r} is out of range")
    return int(number)


def parameters(query: str, body: bytes, content_type: str) -> dict[str, str]:
    """The query form's parameters: the URL's, then a form body's for names the URL has not
    (the app puts them in either; a URL may carry only the `token`). The first of a repeated
    name wins."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(name, value)
    if body and not looks_json(body, content_type):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadBody(400, "bad_body", "a form body must be UTF-8 text") from None
        for name, value in parse_qsl(text.strip(), keep_blank_values=True):
            params.setdefault(name, value)
    return params


def looks_json(body: bytes, content_type: str) -> bool:
    """The JSON shape: its media type, or a body that is a JSON object whatever the type."""
    return media_type(content_type) == JSON or body.lstrip()[:1] == b"{"


def _number(params: Mapping[str, str], name: str) -> float | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise BadBody(400, "bad_parameter", f"{name}={value[:40]!r} is not a number") from None


def _accuracy(value: float | None) -> float:
    return 0.0 if value is None or not value >= 0 else float32(value)


def query_ping(params: Mapping[str, str], now_ms: int) -> PingItem:
    """The ping of a query-form request."""
    device = params.get("id") or params.get("deviceid")
    if not device:
        raise BadBody(400, "missing_device_id", "an OsmAnd request names its device: id=")
    lat, lng = _number(params, "lat"), _number(params, "lon")
    if "location" in params and (lat is None or lng is None):
        parts = params["location"].split(",")
        if len(parts) < 2:
            raise BadBody(400, "bad_parameter", "location= is lat,lon")
        lat, lng = _number({"lat": parts[0]}, "lat"), _number({"lon": parts[1]}, "lon")
    if lat is None or lng is None:
        raise BadBody(400, "missing_position", "an OsmAnd request carries lat= and lon=")
    ts = osmand_time(params.get("timestamp"), now_ms)
    return PingItem(device, ts, lat, lng, _accuracy(_number(params, "accuracy")))


def json_pings(body: bytes, now_ms: int) -> list[PingItem]:
    """The pings of a JSON-shaped request, one for each location."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadBody(400, "bad_json", f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadBody(400, "bad_body", 'the body must be a JSON object {"device_id", "location"}')
    device = doc.get("device_id")
    if isinstance(device, float) and device.is_integer():
        device = int(device)  # JSON's 2.0 is the integer 2
    if isinstance(device, int) and not isinstance(device, bool):
        device = str(device)
    if not isinstance(device, str) or not device:
        raise BadBody(400, "missing_device_id", "the body names its device: device_id")
    locations = doc.get("location")
    if isinstance(locations, dict):
        locations = [locations]
    if not isinstance(locations, list) or not locations:
        raise BadBody(400, "missing_position", "the body carries a location")
    return [_location_ping(device, x, now_ms) for x in locations]


def _location_ping(device: str, location, now_ms: int) -> PingItem:
    coords = location.get("coords") if isinstance(location, dict) else None
    if not isinstance(coords, dict):
        raise BadBody(400, "missing_position", "a location carries coords")
    lat, lng = coords.get("latitude"), coords.get("longitude")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lng)):
        raise BadBody(400, "missing_position", "coords carry latitude and longitude, numbers")
    accuracy = coords.get("accuracy")
    if accuracy is not None and (type(accuracy) not in (int, float)):
        raise BadBody(400, "bad_parameter", "coords.accuracy is a number (metres)")
    ts = osmand_time(location.get("timestamp"), now_ms)
    return PingItem(device, ts, float(lat), float(lng), _accuracy(accuracy))


def osmand_pings(query: str, body: bytes, content_type: str, now_ms: int) -> list[PingItem]:
    """The pings of an OsmAnd request, whichever its shape; BadBody when it cannot be read."""
    if body and looks_json(body, content_type):
        return json_pings(body, now_ms)
    return [query_ping(parameters(query, body, content_type), now_ms)]


def token_of(query: str, body: bytes, content_type: str) -> str:
    """The device token of a `token` parameter (in the URL, or a form body), or ""."""
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token":
            return value
    if body and not looks_json(body, content_type):
        try:
            return parameters("", body, content_type).get("token", "")
        except BadBody:
            return ""
    return ""
