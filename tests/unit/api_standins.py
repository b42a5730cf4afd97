"""In-memory stand-ins for the API's clients of the engine, and an ASGI driver: the HTTP API's
routes exercised without Ray or Redis."""

import asyncio
from dataclasses import dataclass, field

import orjson

from access.auth import Credential
from access.tokens import Refused
from engine.cells import cell_of
from engine.http_ingest import (
    BadBody,
    HttpAnswer,
    HttpRequest,
    ack_body,
    door_item,
    error_body,
    ping_item,
    read_items,
)
from engine.osmand import osmand_pings
from engine.series import DoorPoint
from engine.spec import EngineSpec
from serve_apps.app import make_app
from serve_apps.context import ApiContext, context
from state.topology import Topology

KEYS = {
    "admin-key": ("k-admin", "admin"),
    "viewer-key": ("k-viewer", "viewer"),
    "ingest-key": ("k-ingest", "ingest"),
}
# three cells at res 9 with 1, 2 and 5 devices
A, B, C = (cell_of(52.66 + i * 0.01, -8.63, 9) for i in range(3))
COUNTS = {A: 1, B: 2, C: 5}
DEVICES = {"phone-1": 101, "phone-2": 102}  # raw id -> pseudonym


def floored(counts: dict, k: int) -> dict:
    """A simple floor (the engine's releases more carefully): what the stand-ins answer."""
    return {c: (n if n >= k else 0) for c, n in counts.items()}


class Queries:
    """LiveQueries' interface over fixed counts; every call is recorded."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.topology = Topology(redis_url="redis://unused")
        self.fail: BaseException | None = None
        self.space_totals = {"lab": 1, "hall": 7, "lobby": 2}
        self.live_dwell: dict = {"dwell": {"cells": {A: 60_000}, "spaces": {"lab": 30_000}}}

    def _call(self, *call):
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def refresh(self) -> None:
        self._call("refresh")

    async def heatmap(self, res, bbox):
        self._call("heatmap", res, bbox)
        return dict(COUNTS)

    async def floored_heatmap(self, res, bbox, k):
        self._call("floored_heatmap", res, bbox, k)
        return floored(COUNTS, k)

    async def top(self, n, res, bbox=None):
        self._call("top", n, res, bbox)
        return sorted(COUNTS.items(), key=lambda x: -x[1])[:n]

    async def floored_top(self, n, res, bbox, k):
        self._call("floored_top", n, res, bbox, k)
        return sorted(floored(COUNTS, k).items(), key=lambda x: -x[1])[:n]

    async def cell_count(self, cell):
        self._call("cell_count", cell)
        return COUNTS.get(cell, 0)

    async def floored_cell(self, cell, k):
        self._call("floored_cell", cell, k)
        return floored(COUNTS, k).get(cell, 0)

    async def space_count(self, space, at=None):
        self._call("space_count", space, at)
        return self.space_totals.get(space)

    async def space_counts(self, at=None):
        self._call("space_counts", at)
        return dict(self.space_totals)

    async def door_count(self, space, at=None):
        self._call("door_count", space, at)
        return self.space_totals.get(space, 0)

    async def door_series(self, space, edges, now):
        self._call("door_series", space, edges, now)
        return [DoorPoint(self.space_totals.get(space, 0), 1, 0)] * (len(edges) - 1)

    async def dwell_live(self, key, day):
        self._call("dwell_live", key, day)
        return self.live_dwell

    async def stats(self):
        self._call("stats")
        return {"user_shards": True, "cell_shards": True, "space_shards": True}

    async def shard_stats(self):
        self._call("shard_stats")
        return []


class History:
    """clients.history.History's interface: the history actor's methods, by name and positional
    arguments, answering from `answers` (or raising `fail`)."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.fail: BaseException | None = None
        self.answers: dict = {
            "heatmap": {A: 4},
            "floored_heatmap": {A: 0},
            "top": [(A, 4)],
            "floored_top": [],
            "cell_count": 4,
            "floored_cell": 0,
            "space_count": 3,
            "space_counts": {"lab": 3},
            "series": {None: [3, 1]},
            "dwell_pieces": [],
            "path": [(1_000, 52.66, -8.63)],
            "devices_in_area": ([(101, 1, 2)], False),
            "paths_in_area": (
                [(101, [(1, 52.66, -8.63)]), (102, [(1, 1.0, 2.0), (3, 1.5, 2.5)])],
                False,
            ),
            "distance": {101: 10.0, 102: 30.0},
            "attribute_masks": {},
            "export": b"ts,cell\n",
            "audit_entries": [{"route": "/v1/top"}],
            "status": {
                "paused": False,
                "archive_lag_ms": {"user-0": 1_500},
                "spill": {"oldest_ms": 0},
                "last_error": "",
                "catching_up": False,
            },
            "pause": None,
            "drill_outage": None,
            "forget_pending": {},
        }

    async def _answer(self, method, *args):
        self.calls.append((method, *args))
        if self.fail is not None:
            raise self.fail
        return self.answers[method]

    async def status(self):
        return await self._answer("status")

    async def pause(self, paused):
        return await self._answer("pause", paused)

    async def drill_outage(self, down):
        return await self._answer("drill_outage", down)

    async def forget_pending(self):
        return await self._answer("forget_pending")

    async def heatmap(self, res, at, bbox):
        return await self._answer("heatmap", res, at, bbox)

    async def top(self, n, res, at, bbox):
        return await self._answer("top", n, res, at, bbox)

    async def cell_count(self, cell, at):
        return await self._answer("cell_count", cell, at)

    async def floored_heatmap(self, res, base_res, at, bbox, k):
        return await self._answer("floored_heatmap", res, base_res, at, bbox, k)

    async def floored_top(self, n, res, base_res, at, bbox, k):
        return await self._answer("floored_top", n, res, base_res, at, bbox, k)

    async def floored_cell(self, cell, base_res, at, k):
        return await self._answer("floored_cell", cell, base_res, at, k)

    async def space_count(self, space, at):
        return await self._answer("space_count", space, at)

    async def space_counts(self, at):
        return await self._answer("space_counts", at)

    async def series(self, place, base_res, edges, end, by, since, k):
        return await self._answer("series", place, base_res, edges, end, by, since, k)

    async def dwell_pieces(self, device, day):
        return await self._answer("dwell_pieces", device, day)

    async def path(self, device, start, end):
        return await self._answer("path", device, start, end)

    async def devices_in_area(self, start, end, bbox, polygon, attrs, limit, timeout_s):
        return await self._answer(
            "devices_in_area", start, end, bbox, polygon, attrs, limit, timeout_s
        )

    async def paths_in_area(self, start, end, bbox, polygon, cells, attrs, limit, timeout_s):
        return await self._answer(
            "paths_in_area", start, end, bbox, polygon, cells, attrs, limit, timeout_s
        )

    async def distance(self, start, end, attrs, device, timeout_s):
        return await self._answer("distance", start, end, attrs, device, timeout_s)

    async def attribute_masks(self, start, end, attrs, timeout_s):
        return await self._answer("attribute_masks", start, end, attrs, timeout_s)

    async def export(self, what, start, end, fmt):
        return await self._answer("export", what, start, end, fmt)

    async def audit_entries(self, start, end, key_id, route, limit):
        return await self._answer("audit_entries", start, end, key_id, route, limit)


class UserShards:
    def __init__(self):
        self.calls: list[tuple] = []

    async def forget(self, shard, old, fresh):
        self.calls.append((shard, old, fresh))

    async def reload_hooks(self):
        self.calls.append(("reload_hooks",))


# a square of about 200 m around (52.66, -8.63)
LAB = {
    "type": "Polygon",
    "coordinates": [
        [
            [-8.6315, 52.659],
            [-8.6285, 52.659],
            [-8.6285, 52.661],
            [-8.6315, 52.661],
            [-8.6315, 52.659],
        ]
    ],
}


DELETED_AT = 1_767_312_000_000  # 2026-01-02T00:00:00Z


class Metadata:
    def polygon_spaces(self):
        return {"lab": {"name": "Lab", "polygon": LAB}}

    def door_spaces(self):
        return {"hall": "Hall", "lobby": "Lobby"}

    def doorways(self):
        return {"front": ("hall", None), "inner": ("lobby", "hall")}

    def installations(self):
        return [
            ("s1", "front", 1_000, "in"),
            ("s2", "inner", 2_000, "out"),
            ("s1", None, 3_000, "in"),
        ]


class Definitions:
    """Definitions' interface: a definition named "bad" is refused as the engine would."""

    def __init__(self):
        self.metadata = Metadata()
        self.calls: list[tuple] = []
        # deleted spaces: "gone" (a polygon space) deleted at DELETED_AT, kind and name kept
        self.gone = {"gone": {"kind": "polygon", "name": "Gone", "at": DELETED_AT}}

    def kind(self, space):
        if space in self.metadata.polygon_spaces():
            return "polygon"
        return "door" if space in self.metadata.door_spaces() else None

    def deleted(self, space, before=None):
        found = self.gone.get(space)
        return None if found is None or (before is not None and found["at"] <= before) else found

    async def delete_space(self, space):
        kind = self.kind(space)
        if kind is None:
            return None
        await self._define("delete_space", space)
        doorways = sorted(d for d, sides in self.metadata.doorways().items() if space in sides)
        return kind, DELETED_AT, doorways if kind == "door" else []

    async def delete_doorway(self, doorway, at=None):
        if doorway not in self.metadata.doorways():
            return None
        await self._define("delete_doorway", doorway)
        return DELETED_AT, ["s2"] if doorway == "inner" else []

    async def _define(self, *call):
        self.calls.append(call)
        if "bad" in call:
            raise ValueError(f"{call[0]}: refused")

    async def define_polygon_space(self, space, polygon, name=""):
        await self._define("polygon", space, polygon, name)
        return 7

    async def define_door_space(self, space, name=""):
        await self._define("door", space, name)

    async def define_doorway(self, doorway, inside, outside):
        await self._define("doorway", doorway, inside, outside)

    async def install(self, sensor, doorway, start, positive):
        await self._define("install", sensor, doorway, start, positive)

    async def reset(self, space, at):
        await self._define("reset", space, at)


class Ingest:
    """The ingest handlers' interface: bodies read by the engine's own readers, every item
    taken but the malformed; a credential is an API key of role ingest or admin."""

    def __init__(self):
        self.requests: list[HttpRequest] = []

    async def handle(self, request: HttpRequest) -> HttpAnswer:
        self.requests.append(request)
        found = KEYS.get(request.authorization.removeprefix("Bearer "))
        if found is None:
            return HttpAnswer(401, error_body("unauthenticated", "unknown credential"))
        if found[1] not in ("ingest", "admin"):
            return HttpAnswer(403, error_body("forbidden", "not an ingest key"), caller=found)
        try:
            if request.kind == "osmand":
                items = osmand_pings(request.query, request.body, request.content_type, 1)
            elif request.kind == "pings":
                items = read_items(request.body, request.content_type, "pings", ping_item, 100)
            else:
                items = read_items(request.body, request.content_type, "events", door_item, 100)
        except BadBody as exc:
            return HttpAnswer(exc.status, error_body(exc.code, str(exc)), caller=found)

        class Rejection:
            reason = "malformed"

            def __init__(self, index):
                self.index = index

        rejections = [Rejection(i) for i, item in enumerate(items) if item is None]
        accepted = len(items) - len(rejections)
        body = ack_body(accepted, 0, len(rejections), rejections)
        return HttpAnswer(200, body, caller=found, figures={"items": len(items)})


class Auth:
    """The credential look-up (and the key list) of `access.auth.Authenticator`."""

    def __init__(self):
        self.keys = self

    def key(self, key):
        return KEYS.get(key)

    def resolve(self, credential):
        """An API key's Credential (no device tokens here)."""
        found = KEYS.get(credential)
        if found is None:
            raise Refused("unknown or revoked key")
        return Credential(found[1], None, found[0])

    def list(self):
        return [{"id": i, "role": r} for i, r in KEYS.values()]

    def revoke_id(self, key_id):
        return key_id == "k-viewer"


class Ids:
    def key_of(self, device):
        return DEVICES.get(device)

    def resolve(self, key):
        return {v: k for k, v in DEVICES.items()}.get(key)

    def resolve_many(self, keys):
        return {k: self.resolve(k) for k in keys}


class Hooks:
    """HookStore's interface, in memory."""

    def __init__(self):
        self.defined: dict = {}

    def put(self, hook, spec):
        self.defined[hook] = spec

    def delete(self, hook):
        return self.defined.pop(hook, None) is not None

    def hooks(self):
        return dict(self.defined)

    def statuses(self):
        return {h: {"failing_since": 0, "disabled": False, "last_error": ""} for h in self.defined}

    def pending(self, hook):
        return 0


class Redis:
    def __init__(self):
        self.down: BaseException | None = None

    def ping(self):
        if self.down is not None:
            raise self.down
        return True


@dataclass
class Job:
    target: dict = field(default_factory=lambda: {"target_version": 2})

    def accepted(self):
        return {"id": "scale-1", "state": "running", **self.target}


class Scaler:
    def __init__(self):
        self.fail: BaseException | None = None
        self.ran: list = []

    def begin(self, user_shards, cell_shards, ingest_handlers):
        if self.fail is not None:
            raise self.fail
        return Job()

    def run(self, job):
        self.ran.append(job)


def api_context(k_min: int = 0, **clients) -> ApiContext:
    parts = {
        "queries": Queries(),
        "history": History(),
        "users": UserShards(),
        "definitions": Definitions(),
        "redis": Redis(),
        "auth": Auth(),
        "ids": Ids(),
        "scaler": Scaler(),
        "ingest": Ingest(),
        "hooks": Hooks(),
    }
    parts.update(clients)
    topology = Topology(redis_url="redis://unused")
    return ApiContext(topology=topology, spec=EngineSpec(), k_min=k_min, **parts)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return orjson.loads(self.body)

    @property
    def error(self) -> tuple[str, str]:
        error = self.json()["error"]
        return error["code"], error["message"]


class Client:
    """Requests to a fresh app whose routes see `api`, over ASGI (no server, no network)."""

    def __init__(self, api: ApiContext):
        self.api = api
        self.app = make_app()
        self.app.dependency_overrides[context] = lambda: api

    def get(self, path: str, key: str | None = None, **params) -> Answer:
        return asyncio.run(self.request("GET", path, key, params=params))

    def send(self, method: str, path: str, key: str | None = None, body=None, **params) -> Answer:
        return asyncio.run(self.request(method, path, key, body, params))

    async def request(self, method, path, key=None, body=None, params=None) -> Answer:
        from urllib.parse import urlencode

        headers = [(b"host", b"test")]
        if key is not None:
            headers.append((b"authorization", f"Bearer {key}".encode()))
        data = b"" if body is None else orjson.dumps(body)
        if body is not None:
            headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(data)).encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": urlencode(params or {}).encode(),
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("test", 80),
        }
        received = [False]

        async def receive():
            if not received[0]:
                received[0] = True
                return {"type": "http.request", "body": data, "more_body": False}
            return {"type": "http.disconnect"}

        messages = []

        async def send(message):
            messages.append(message)

        try:
            await self.app(scope, receive, send)
        except Exception:  # a 500's handler answers, then the error is raised on (logged)
            if not messages:
                raise
        start = messages[0]
        answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
        content = b"".join(m.get("body", b"") for m in messages[1:])
        return Answer(start["status"], answer_headers, content)
