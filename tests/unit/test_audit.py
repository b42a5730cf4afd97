"""Audit records: parameters without raw ids or credentials, counts per window, and the API's
middleware building one record per request (and counts for refused ones), without Ray."""

import asyncio

import orjson
import pytest
from fastapi import FastAPI, Request

from engine import audit
from observability.audit import entry, rows_of
from serve_apps.audit import AuditTrail, note
from serve_apps.guard import Guard

KEY = "occ_admin_" + "x" * 32
TOKEN = "dev2.eyJzdWIiOiJwaG9uZS00MiJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
TOKEN_ID = "tok_" + "0123456789abcdef" * 2


def test_a_device_parameter_leaves_params_for_its_pseudonym():
    params, devices = audit.request_params(
        {"device_id": "+15145550123"}, "from=2026-11-24T08:00:00Z&to=1764000000000"
    )
    assert params == {"from": "2026-11-24T08:00:00Z", "to": "1764000000000", "device_id": None}
    assert devices == {"device_id": "+15145550123"}
    named = audit.with_pseudonyms(params, devices, {"+15145550123": "00ab12cd34ef5678"})
    assert named["device_id"] == "00ab12cd34ef5678"
    unknown = audit.with_pseudonyms(params, devices, {})  # never seen, or forgotten
    assert unknown["device_id"] is None
    assert "+15145550123" not in orjson.dumps([named, unknown]).decode()


def test_the_query_string_device_id_is_a_device_too():
    params, devices = audit.request_params({}, "device_id=phone-42&attr.fleet=bus")
    assert params == {"device_id": None, "attr.fleet": "bus"}
    assert devices == {"device_id": "phone-42"}


@pytest.mark.parametrize(
    ("value", "query", "kept", "device"),
    [
        (TOKEN_ID, "", TOKEN_ID, None),  # a token id is what the record names
        ("phone-42", "", None, "phone-42"),  # a device id: its pseudonym
        (TOKEN_ID, "device=true", None, TOKEN_ID),  # a device whose id looks like a token id
        (TOKEN, "", audit.REDACTED, None),  # the token itself: never recorded, never looked up
    ],
)
def test_a_token_routes_parameter_is_a_token_id_a_device_or_redacted(value, query, kept, device):
    params, devices = audit.request_params({"token_id": value}, query)
    assert params["token_id"] == kept
    assert devices == ({"token_id": device} if device else {})


def test_credentials_are_redacted_wherever_they_are_and_values_are_bounded():
    params, _ = audit.request_params(
        {"key_id": KEY},
        f"key=Bearer%20{KEY}&note={TOKEN}&space=dev.lab&polygon={'1' * 1000}",
    )
    assert params["key_id"] == params["key"] == params["note"] == audit.REDACTED
    assert params["space"] == "dev.lab"  # not a token
    assert len(params["polygon"]) == audit.MAX_VALUE_CHARS + 1
    many, _ = audit.request_params({}, "&".join(f"p{i}=1" for i in range(100)))
    assert len(many) == audit.MAX_PARAMS


def test_a_record_has_every_field_and_nothing_else():
    r = audit.record(5, "cli", "keys create", os_user="ops@head", params={"role": "viewer"})
    assert set(r) == set(audit.FIELDS)
    assert (r["calls"], r["status"], r["key_id"]) == (1, 0, "")
    with pytest.raises(ValueError, match="not audit fields"):
        audit.record(5, "cli", "x", authorization="Bearer k")


def test_counts_are_handed_out_once_their_window_has_ended():
    w = audit.WindowCounts(60_000)
    refused = ("http", "", "", "GET", "/v1/top", 401, (("reason", "unknown"),))
    sent = ("grpc", "a1b2c3d4e5f6", "ingest", "", "/occupancy.v1.IngestService/SendPings", 0, ())
    for t in (60_000, 60_500, 119_999):
        w.add(t, refused, 2.0)
    w.add(61_000, sent, 1.5, items=10, accepted=9, late=1)
    w.add(62_000, sent, calls=0, items=5, accepted=5)  # a stream's pings, acked before it ends
    w.add(120_000, refused, 1.0)
    assert w.closed(119_999) == []
    first = {r["route"]: r for r in w.closed(120_000)}
    assert first["/v1/top"]["calls"] == 3 and first["/v1/top"]["duration_ms"] == 6.0
    assert first["/v1/top"]["params"] == {"reason": "unknown"} and first["/v1/top"]["ts"] == 60_000
    ingest = first["/occupancy.v1.IngestService/SendPings"]
    assert ingest["calls"] == 1 and ingest["params"] == {"items": 15, "accepted": 14, "late": 1}
    assert (ingest["key_id"], ingest["role"], ingest["status"]) == ("a1b2c3d4e5f6", "ingest", 0)
    assert w.closed(10**9) != [] and w.everything() == []


def test_a_window_holds_a_bounded_number_of_keys():
    w = audit.WindowCounts(1_000, max_keys=3)
    for i in range(10):
        w.add(0, ("http", "", "", "GET", f"/r{i}", 401, ()), 1.0)
    out = w.everything()
    assert len(out) == 4 and sum(r["calls"] for r in out) == 10
    assert next(r for r in out if r["route"] == "other")["calls"] == 7


def test_stream_entries_become_table_rows_in_column_order():
    r = audit.record(7, "http", "/v1/top", key_id="k", role="viewer", method="GET",
                     params={"n": "5"}, status=200, duration_ms=1.25, bytes_out=42)  # fmt: skip
    rows = rows_of([(b"1-0", {b"r": entry(r)}), (b"1-1", {b"r": b"\xc1 not msgpack"})])
    assert len(rows) == 1
    assert dict(zip(audit.FIELDS, rows[0], strict=True)) == {**r, "params": '{"n":"5"}'}


# -- the API's middleware ------------------------------------------------------------------------


class _Writer:
    def __init__(self):
        self.records: list[tuple[dict, dict, dict]] = []
        self.counts: list[tuple] = []

    def add(self, make):
        self.records.append(make())

    def count(self, key, duration_ms=0.0, **counts):
        self.counts.append(key)


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/history/path/{device_id}")
    async def path(request: Request, device_id: str, to: str = ""):
        note(request)["rows"] = 3
        if device_id == "known":
            note(request).setdefault("pseudonyms", {})[device_id] = "00000000000000ff"
        return {"points": [1, 2, 3]}

    app.add_middleware(Guard)
    app.add_middleware(AuditTrail)
    return app


async def _call(app, method: str, path: str, query: bytes = b"", key: str | None = None):
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": query, "headers": headers, "root_path": "", "scheme": "http",
             "server": ("test", 80), "client": ("127.0.0.1", 1), "http_version": "1.1"}  # fmt: skip
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


def test_the_middleware_records_who_asked_what_and_counts_the_refused(monkeypatch):
    writer = _Writer()
    monkeypatch.setattr(AuditTrail, "writer", writer)
    monkeypatch.setattr(
        Guard, "_who", [lambda key: ("a1b2c3d4e5f6", "admin") if key == KEY else None]
    )
    app = _app()

    async def calls():
        assert await _call(app, "GET", "/v1/history/path/+15145550123", b"to=5", KEY) == 200
        assert await _call(app, "GET", "/v1/history/path/known", b"", KEY) == 200
        assert await _call(app, "GET", "/v1/history/path/+15145550123", b"", "occ_admin_bad") == 401
        assert await _call(app, "DELETE", "/v1/history/path/x", b"", None) == 401
        assert await _call(app, "GET", "/v1/health") == 404  # open path: not audited

    asyncio.run(calls())
    (first, devices, known), (second, _, known2) = writer.records
    assert known == {} and second["params"] == {"device_id": None}
    assert first["route"] == "/v1/history/path/{device_id}" and first["method"] == "GET"
    assert (first["key_id"], first["role"], first["status"], first["rows"]) == (
        "a1b2c3d4e5f6", "admin", 200, 3)  # fmt: skip
    assert first["params"] == {"to": "5", "device_id": None} and first["bytes_out"] > 0
    assert devices == {"device_id": "+15145550123"}
    assert known2 == {"known": "00000000000000ff"}
    assert "+15145550123" not in orjson.dumps(first).decode()
    assert writer.counts == [
        ("http", "", "", "GET", "/v1/history/path/{device_id}", 401, (("reason", "unknown"),)),
        ("http", "", "", "DELETE", "/v1/history/path/{device_id}", 401, (("reason", "missing"),)),
    ]
