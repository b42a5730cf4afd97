"""What a hostile client sends, as hypothesis strategies, and how the engine must answer it.

Shared by the property tests (`tests/e2e/test_hostile_input.py`) and the long fuzz run
(`bench/fuzz.py`). HTTP requests are written byte by byte (so that headers may carry bytes
that are not UTF-8); gRPC calls send raw message bytes (mutated protobufs, random bytes) and
messages with extreme values.
"""

import http.client
import json
import math
import socket
import urllib.parse
from dataclasses import dataclass

import grpc
from hypothesis import strategies as st

from protos.occupancy.v1 import occupancy_pb2 as pb

# every route of the API; `POST /v1/admin/scale` is left out (it starts and stops actors)
ROUTES = [
    ("GET", "/v1/health"),
    ("GET", "/v1/heatmap"),
    ("GET", "/v1/top"),
    ("GET", "/v1/cells/{id}"),
    ("GET", "/v1/spaces"),
    ("GET", "/v1/spaces/{id}"),
    ("PUT", "/v1/spaces/{id}"),
    ("PUT", "/v1/doorways/{id}"),
    ("POST", "/v1/doorways/{id}/installations"),
    ("POST", "/v1/spaces/{id}/resets"),
    ("GET", "/v1/users/{id}/dwell"),
    ("GET", "/v1/history/devices"),
    ("GET", "/v1/history/path/{id}"),
    ("GET", "/v1/history/distance"),
    ("GET", "/v1/export"),
    ("GET", "/v1/admin/status"),
    ("GET", "/v1/admin/deadletter"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/static/{id}"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/no-such-route"),
]
PARAMS = [
    "at", "from", "to", "bbox", "res", "n", "format", "day", "polygon", "limit", "timeout_s",
    "device_id", "what", "geometry", "attr.fleet", "attr.", "attr." + "k" * 70,
]  # fmt: skip

_int64 = st.integers(-(2**63), 2**63 - 1)
_huge = st.integers(-(10**30), 10**30)
_text = st.text(max_size=40)
_weird = st.sampled_from(
    [
        "", "nan", "NaN", "inf", "-inf", "1e400", "-0", "0x10", "١٢٣", "9" * 40, "-" + "9" * 25,
        "2026-13-45", "2026-11-30T25:00:00Z", "9999-12-31T23:59:59.999999+14:00",
        "0001-01-01T00:00:00-14:00", "1,2,3,4", "-181,-91,181,91", "NaN,0,1,1", "[]", "{}",
        '{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}', "null", "true",
        "' OR 1=1 --", "\x00", "%00", "../../etc/passwd", "8a2a1072b59ffff", "ffffffffffffffff",
        "x" * 5000,
    ]
)  # fmt: skip
_value = st.one_of(_text, _weird, _int64.map(str), _huge.map(str), st.floats().map(str))


def _polygon() -> st.SearchStrategy:
    position = st.lists(
        st.one_of(st.floats(allow_nan=True), _int64, st.text(max_size=3)), max_size=3
    )
    ring = st.lists(position, max_size=8)
    return st.fixed_dictionaries(
        {
            "type": st.sampled_from(["Polygon", "Point", "polygon", ""]),
            "coordinates": st.lists(ring, max_size=3),
        }
    )


_json_leaf = st.one_of(st.none(), st.booleans(), _huge, st.floats(), _text, _weird)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


def _body() -> st.SearchStrategy:
    shaped = st.fixed_dictionaries(
        {},
        optional={
            "name": _value,
            "polygon": st.one_of(_polygon(), _json),
            "inside": _value,
            "outside": st.one_of(st.none(), _value),
            "sensor_id": _value,
            "from": st.one_of(_value, _huge),
            "positive": st.sampled_from(["in", "out", "up", ""]),
            "doorway_removed": _json_leaf,
            "at": st.one_of(_value, _huge),
        },
    )
    return st.one_of(
        shaped.map(lambda b: json.dumps(b, allow_nan=True).encode()),
        _json.map(lambda b: json.dumps(b, allow_nan=True).encode()),
        st.binary(max_size=200),
        st.just(b"{" * 2000),
        st.just(b"[" * 1_100_000),  # beyond the body limit
    )


# bytes no HTTP field value may hold (RFC 9110: control characters but tab); a request with
# them is refused by the HTTP parser before the engine sees it
_CONTROL = frozenset([*range(0x09), *range(0x0A, 0x20), 0x7F])


@dataclass
class Request:
    method: str
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes | None

    def __repr__(self) -> str:
        return f"{self.method} {self.path[:300]!r} {self.headers!r} {(self.body or b'')[:300]!r}"


def requests_(keys: dict[str, str]) -> st.SearchStrategy[Request]:
    """Hostile requests to every route; `keys` maps a role to a valid key."""
    segment = st.one_of(
        _text.map(lambda t: urllib.parse.quote(t, safe="")),
        _weird.map(lambda t: urllib.parse.quote(t, safe="")),
        st.binary(max_size=20).map(lambda b: urllib.parse.quote_from_bytes(b, safe="")),
        st.sampled_from(["..", ".", "%2e%2e", "%2F", "a%00b", "%ff%fe", "x" * 300]),
    )
    query = st.lists(st.tuples(st.sampled_from(PARAMS) | _text, _value), max_size=6)
    valid = st.sampled_from(sorted(keys.values())).map(lambda k: b"Bearer " + k.encode())
    auth = st.one_of(
        valid,
        valid,
        valid,
        st.none(),
        st.binary(max_size=60),
        st.sampled_from([b"Bearer", b"Bearer ", b"bearer \xff\xfe", b"Basic YTpi", b"B" * 9000]),
    )
    traceparent = st.one_of(
        st.none(),
        st.binary(max_size=60),
        st.just(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        st.just(b"00-\xff\xfe\xfd-01"),
    )
    content_type = st.sampled_from(
        [None, b"application/json", b"text/plain", b"application/x-www-form-urlencoded", b"\xff"]
    )

    @st.composite
    def build(draw) -> Request:
        method, template = draw(st.sampled_from(ROUTES))
        path = template.replace("{id}", draw(segment)).encode()
        pairs = draw(query)
        if pairs:
            path += b"?" + urllib.parse.urlencode(pairs, safe="").encode()
        headers = []
        for name, value in (
            (b"authorization", draw(auth)),
            (b"traceparent", draw(traceparent)),
            (b"content-type", draw(content_type)),
        ):
            if value is not None:  # control bytes make it no HTTP at all; bytes >= 0x80 may be
                headers.append((name, bytes(c for c in value if c not in _CONTROL)))
        body = draw(_body()) if method in ("PUT", "POST") or draw(st.booleans()) else None
        return Request(method, path, headers, body)

    return build()


def send(host: str, port: int, request: Request, timeout_s: float = 60.0) -> tuple[int, bytes]:
    """The status and body of one request on a new connection (raises on a hang or a reset)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.putrequest(request.method, request.path.decode("ascii"), skip_accept_encoding=True)
        for name, value in request.headers:
            conn.putheader(name, value)
        body = request.body
        if body is not None:
            conn.putheader(b"content-length", str(len(body)).encode())
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def problem(request: Request, status: int, body: bytes) -> str | None:
    """What is wrong with an answer, or None: never a 5xx but 503 (a dependency) and 504 (a
    query's time), and every error in the JSON envelope."""
    if status >= 500 and status not in (503, 504):
        return f"{status} for {request!r}: {body[:300]!r}"
    path = request.path.split(b"?")[0]
    if status in (400, 408, 413, 414, 431) and body.lstrip().startswith(b"<html>"):
        return None  # HAProxy's own refusal of what is not HTTP it takes (a line too long)
    if status >= 400 and path.startswith(b"/v1/"):
        try:
            error = json.loads(body)["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str)
        except (ValueError, KeyError, TypeError, AssertionError):
            return f"{status} without the error envelope for {request!r}: {body[:300]!r}"
    return None


# -- gRPC ---------------------------------------------------------------------------------------

INGEST = "/occupancy.v1.IngestService/"
OK_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}

_float = st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0]))
_limit_strings = st.one_of(
    _text,
    st.integers(0, 4).map(lambda k: "d" * (126 + k)),  # around the 128-byte id limit
    st.integers(0, 4).map(lambda k: "é" * (62 + k)),  # the same in bytes, 2 per character
    st.integers(0, 3).map(lambda k: "r" * (63 + k)),  # around the 64-byte region limit
    st.just("x" * 70_000),
)


def _ping(now: int) -> st.SearchStrategy:
    return st.builds(
        lambda device, ts, lat, lng, region, acc, attrs: pb.Ping(
            device_id=device, ts_ms=ts, lat=lat, lng=lng, region=region, accuracy_m=acc,
            attributes=attrs,
        ),
        _limit_strings,
        st.one_of(_int64, st.integers(now - 10**9, now + 10**5)),
        _float,
        _float,
        _limit_strings,
        st.floats(width=32),
        st.dictionaries(_limit_strings, _limit_strings, max_size=18),
    )  # fmt: skip


def grpc_calls(now: int) -> st.SearchStrategy[tuple[str, bytes]]:
    """(method, request bytes): structured batches with extreme values, their bytes mutated, and
    random bytes."""
    pings = st.lists(_ping(now), max_size=20).map(lambda p: pb.SendPingsRequest(pings=p))
    doors = st.lists(
        st.builds(
            lambda s, ts, d: pb.DoorEvent(sensor_id=s, ts_ms=ts, direction=d),
            _limit_strings,
            _int64,
            st.integers(-(2**31), 2**31 - 1),
        ),
        max_size=20,
    ).map(lambda e: pb.SendDoorEventsRequest(events=e))
    message = st.one_of(
        st.tuples(st.just("SendPings"), pings), st.tuples(st.just("SendDoorEvents"), doors)
    ).map(lambda mm: (mm[0], mm[1].SerializeToString()))

    @st.composite
    def mutated(draw) -> tuple[str, bytes]:
        method, data = draw(message)
        data = bytearray(data)
        for _ in range(draw(st.integers(0, 8))):
            if data:
                i = draw(st.integers(0, len(data) - 1))
                data[i] = draw(st.integers(0, 255))
        return method, bytes(data)

    raw = st.tuples(st.sampled_from(["SendPings", "SendDoorEvents"]), st.binary(max_size=300))
    return st.one_of(message, mutated(), raw)


def grpc_send(channel: grpc.Channel, key: str, method: str, data: bytes) -> grpc.StatusCode:
    call = channel.unary_unary(INGEST + method)  # raw bytes both ways
    try:
        call(data, metadata=[("authorization", f"Bearer {key}")], timeout=30)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False
