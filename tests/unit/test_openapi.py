"""The OpenAPI document describes the API: the bearer key, the error envelope for every 4xx and
5xx, a schema for every answer, and parameters constrained as validation has them, so that
schemathesis's checks (all of them) pass over the routes with stand-in clients."""

import asyncio

import pytest
import schemathesis

from engine.timeutil import EARLIEST_MS, LATEST_MS
from serve_apps.app import make_app
from serve_apps.context import _installed, install
from serve_apps.guard import Guard
from tests.openapi_cases import SETTINGS, config, load, register_formats
from tests.unit.api_standins import Client, api_context

# their stand-ins have no Redis behind them (the integration tier fuzzes them)
NEED_REDIS = "^/v1/admin/(status|deadletter|tokens|devices)"


@pytest.fixture(autouse=True)
def _door(monkeypatch):
    """The door checks keys with the stand-ins' look-up (as the deployment sets it)."""
    monkeypatch.setattr(Guard, "_who", [api_context().credential])


@pytest.fixture(scope="module")
def document():
    """The document of an app with no context installed (so `res` is bounded by H3's 15)."""
    installed = list(_installed)
    _installed.clear()
    try:
        return make_app().openapi()
    finally:
        _installed[:] = installed


def operations(document):
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_every_keyed_operation_names_the_bearer_scheme(document):
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    for path, method, op in operations(document):
        keyed = path != "/v1/health"
        assert (op.get("security") == [{"bearer": []}]) == keyed, (method, path)


def test_errors_are_the_envelope_never_422(document):
    assert "HTTPValidationError" not in document["components"]["schemas"]
    envelope = {"$ref": "#/components/schemas/ErrorBody"}
    for path, method, op in operations(document):
        assert "422" not in op["responses"], (method, path)
        for status, answer in op["responses"].items():
            if status >= "400" and path != "/v1/health":
                assert answer["content"]["application/json"]["schema"] == envelope
        if path != "/v1/health":
            assert {"400", "401", "403", "500", "503"} <= set(op["responses"]), (method, path)


def test_every_answer_has_a_schema(document):
    for path, method, op in operations(document):
        ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
        for media, content in ok["content"].items():
            assert content["schema"], (method, path, media)
    heatmap = document["paths"]["/v1/heatmap"]["get"]["responses"]["200"]["content"]
    assert heatmap["application/geo+json"]["schema"]["$ref"].endswith("/FeatureCollection")
    assert "FeatureCollection" in document["components"]["schemas"]


def test_parameters_carry_their_constraints(document):
    params = {p["name"]: p["schema"] for p in document["paths"]["/v1/heatmap"]["get"]["parameters"]}
    assert params["bbox"]["format"] == "bbox" and params["bbox"]["pattern"]
    assert params["res"] == {**params["res"], "type": "integer", "minimum": 0, "maximum": 15}
    assert {"type": "null"} not in params["at"]["anyOf"]
    # every time it documents is accepted, and only those: ms between the years 1 and 9999
    # (at any offset), as RFC 3339 times and days
    search = document["paths"]["/v1/history/devices"]["get"]["parameters"]
    start = next(p["schema"] for p in search if p["name"] == "from")
    assert "type" not in start and start["anyOf"] == [
        {"type": "integer", "minimum": EARLIEST_MS, "maximum": LATEST_MS},
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
    ]


def test_the_document_bounds_res_by_the_engines_resolution():
    api = api_context()
    install(api)
    try:
        app = make_app()
        top = app.openapi()["paths"]["/v1/top"]["get"]["parameters"]
        assert next(p for p in top if p["name"] == "res")["schema"]["maximum"] == api.spec.res
    finally:
        _installed.clear()


def test_geojson_is_served_as_geo_json():
    client = Client(api_context())
    r = client.get("/v1/heatmap", "admin-key", bbox="-180,-90,180,90", format="geojson")
    assert r.status == 200 and r.headers["content-type"] == "application/geo+json"
    r = client.get("/v1/heatmap", "admin-key", bbox="-180,-90,180,90")
    assert r.status == 200 and r.headers["content-type"] == "application/json"


def _preflight(app, origin: str) -> dict[str, str]:
    scope = {
        "type": "http",
        "method": "OPTIONS",
        "path": "/v1/top",
        "raw_path": b"/v1/top",
        "query_string": b"",
        "headers": [
            (b"origin", origin.encode()),
            (b"access-control-request-method", b"GET"),
            (b"access-control-request-headers", b"authorization"),
        ],
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return {"status": sent[0]["status"]} | {k.decode(): v.decode() for k, v in sent[0]["headers"]}


def test_cors_origins_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("OCC_CORS_ORIGINS", raising=False)
    assert "access-control-allow-origin" not in _preflight(make_app(), "https://maps.example")
    monkeypatch.setenv("OCC_CORS_ORIGINS", "https://maps.example, https://ops.example")
    answer = _preflight(make_app(), "https://maps.example")
    assert answer["status"] == 200  # before the key check: a preflight carries no key
    assert answer["access-control-allow-origin"] == "https://maps.example"
    assert "authorization" in answer["access-control-allow-headers"].lower()
    assert _preflight(make_app(), "https://evil.example")["status"] == 400


def _fuzzed():
    api = api_context()
    install(api)  # the document's `res` bound is the engine's resolution
    register_formats(api.spec.res)
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", Client(api).app, config=config("admin-key")
    )
    _installed.clear()
    return load(schema).exclude(path_regex=NEED_REDIS)


@_fuzzed().parametrize()
@SETTINGS
def test_schemathesis_finds_nothing(case):
    case.call_and_validate()
