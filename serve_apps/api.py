"""The HTTP API on Ray Serve: live answers from the shard actors, definitions for admins."""

import asyncio
import logging
import os
import time
from contextlib import contextmanager, suppress
from typing import Literal

import orjson
import ray
import redis
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse, Response
from pydantic import BaseModel, Field
from ray import serve
from starlette.exceptions import HTTPException

from access import keyring
from access.auth import Authenticator
from access.tokens import DeviceTokens
from actors.archive import DeadLetter
from clickhouse.store import EXPORT_FORMATS
from clients.definitions import Definitions
from clients.errors import StateUnavailable, Unavailable
from clients.history import NAME as HISTORY
from clients.history import HistoryTimeout, HistoryUnavailable
from clients.queries import LiveQueries
from cluster import progress, scale_job
from cluster.fit import DoesNotFit
from cluster.rebalance import RebalanceError
from engine.cells import boundary_lnglat, check_res, parse_cell, resolution, to_str
from engine.geo import BBox, polygon_bbox, validate_polygon
from engine.history import dwell_of
from engine.privacy import filter_released, subset_counts
from engine.pseudonym import new_pseudonym, pseudonym_str
from engine.timeutil import DAY_MS, parse_day, parse_time
from observability import telemetry, tracing
from observability.audit import AuditWriter
from serve_apps import page
from serve_apps.audit import AuditTrail, note
from serve_apps.guard import REDIS_DOWN, RETRY_AFTER_S, Guard
from serve_apps.timing import QueryTiming
from state import forgetting, redis_client
from state.id_directory import IdDirectory
from state.layout import layout_of
from state.layout import pending as pending_layout
from state.topology import Topology

log = logging.getLogger(__name__)

MAX_TOP = 1_000
# Live heatmap and top-N bodies are shared for CACHE_S and, while a refresh runs, answered up to
# STALE_S old: at 50 req/s a heatmap is computed about five times a second instead of fifty, and
# a ping still shows well within DESIGN's 1 s freshness.
CACHE_S = 0.2
STALE_S = 0.6
MAX_HEATMAP_CELLS = 50_000
READ_ROLES = ("viewer", "admin")
MAX_SHARDS = 64
HISTORY_TIMEOUT_S = 60.0  # a history answer that takes longer gets 504
# a viewer's attribute filter under the floor is checked against all its sub-filters (2^n)
MAX_FLOORED_ATTRS = 8

app = FastAPI(
    title="occupancy",
    version="0.1.0",
    description="Live occupancy per H3 cell and named space; dwell per device.",
    default_response_class=ORJSONResponse,
)
app.include_router(page.router)


app.add_middleware(Guard)  # inside the timing and the audit: 401s and 413s are counted too
app.add_middleware(AuditTrail)
app.add_middleware(QueryTiming)


class ApiError(Exception):
    """An error with its HTTP status and a stable code for the error envelope."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _envelope(status: int, code: str, message: str) -> ORJSONResponse:
    headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
    body = {"error": {"code": code, "message": message}}
    return ORJSONResponse(body, status_code=status, headers=headers)


@app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> ORJSONResponse:
    return _envelope(exc.status, exc.code, exc.message)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> ORJSONResponse:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path"))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return _envelope(400, "bad_request", "; ".join(parts) or "invalid request")


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> ORJSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
    return _envelope(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


@app.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> ORJSONResponse:
    """A bug, not the client's mistake: logged, and answered with the envelope all the same.
    Redis unreachable (here or in a shard the request reached) is not a bug: 503."""
    cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc
    if isinstance(cause, redis.RedisError | StateUnavailable):
        log.warning("%s %s: Redis unreachable: %s", request.method, request.url.path, cause)
        return _envelope(503, *REDIS_DOWN)
    log.exception("%s %s failed", request.method, request.url.path)
    return _envelope(500, "internal", f"{type(exc).__name__}: the engine failed to answer")


class PolygonSpaceBody(BaseModel):
    name: str = Field("", max_length=200)
    polygon: dict | None = None


class DoorwayBody(BaseModel):
    inside: str = Field(min_length=1, max_length=200)
    outside: str | None = Field(None, max_length=200)


class InstallationBody(BaseModel):
    sensor_id: str = Field(min_length=1, max_length=128)
    from_: str | int = Field(alias="from")
    positive: Literal["in", "out"] = "in"
    doorway_removed: bool = False


class ResetBody(BaseModel):
    at: str | int


class ScaleBody(BaseModel):
    user_shards: int | None = Field(None, ge=1, le=MAX_SHARDS)
    cell_shards: int | None = Field(None, ge=1, le=MAX_SHARDS)
    ingest_handlers: int | None = Field(None, ge=1, le=MAX_SHARDS)


class ArchiveControl(BaseModel):
    paused: bool | None = None  # stop (True) or resume (False) writing to ClickHouse
    outage_drill: bool | None = None  # the store refuses every call until False


@contextmanager
def _bad(code: str):
    """Turns a ValueError from engine parsing or validation into a 400 with `code`."""
    try:
        yield
    except ValueError as exc:
        raise ApiError(400, code, str(exc)) from exc


def _check_id(value: str) -> None:
    if not value or len(value.encode()) > 200 or any(c in value for c in "/?#"):
        raise ApiError(400, "bad_id", "ids are 1 to 200 bytes without / ? #")


def _json_bytes(body: bytes) -> Response:
    """A body serialized already (FastAPI would otherwise walk a returned dict item by item)."""
    return Response(body, media_type="application/json")


def _now() -> int:
    return int(time.time() * 1000)


def _note_params(request: Request, **params) -> None:
    """Parameters of a request's body for its audit record (those given)."""
    given = {k: v for k, v in params.items() if v is not None}
    note(request).setdefault("params", {}).update(given)


def _rows(result) -> int:
    """The items a history answer holds, for its audit record (0 for an export's file)."""
    if isinstance(result, tuple):  # (devices, truncated)
        result = result[0]
    if isinstance(result, bytes):
        return 0
    return len(result) if isinstance(result, dict | list) else 1


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 16},
    max_ongoing_requests=64,
)
@serve.ingress(app)
class QueryApi:
    """Every query fans out once per shard family and merges (engine code); viewers get the
    privacy floor, admins exact counts and raw device ids."""

    def __init__(self, topology: Topology, k_min: int = 0):
        self.topology = topology
        self.spec = topology.engine_spec()
        self.queries = LiveQueries(topology)
        self.definitions = Definitions(topology)
        self.redis = redis_client.connect(topology.redis_url)
        # keys are checked here; a revocation reaches the replica within a second
        self.auth = Authenticator(self.redis, keyring.process_secret())
        self._auth_task: asyncio.Task | None = None
        self.k_min = k_min
        self._cache: dict[tuple, tuple[float, asyncio.Future]] = {}
        self._refreshing: dict[tuple, asyncio.Future] = {}
        self._history_actor = None
        self._jobs: set[asyncio.Task] = set()  # scales running here (kept from the collector)
        self.ids = IdDirectory(self.redis)
        Guard.use(self._credential)
        AuditTrail.writer = AuditWriter(topology.redis_url, topology.audit_window_s)
        process = f"api-{os.getpid()}"
        QueryTiming.tracer = tracing.tracer(process, topology.redis_url)
        meter = telemetry.meter(process, topology.redis_url)
        QueryTiming.latency = meter.create_histogram(
            "occupancy_query_seconds",
            unit="s",
            description="Query latency by endpoint (in the replica, HTTP stack excluded)",
            explicit_bucket_boundaries_advisory=[
                0.001,
                0.0025,
                0.005,
                0.01,
                0.02,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
            ],
        )

    async def _shared(self, key: tuple, make) -> bytes:
        """The body `make()` computes for `key`, shared by every request within CACHE_S.

        Concurrent requests await one computation. Past CACHE_S and up to STALE_S, the last
        body is answered at once while one refresh runs in the background, so a steady poller
        never waits for the fan-out; its `as_of` says how old it is.
        """
        now = time.monotonic()
        entry = self._cache.get(key)
        if entry is not None:
            started, future = entry
            if now - started < CACHE_S:
                return await future
            if now - started < STALE_S and future.done() and future.exception() is None:
                if key not in self._refreshing:
                    self._refreshing[key] = asyncio.ensure_future(self._refresh(key, make))
                return future.result()
        if len(self._cache) > 1_000:
            self._cache.clear()
        future = asyncio.ensure_future(make())
        self._cache[key] = (now, future)
        try:
            return await future
        except Exception:
            if self._cache.get(key, (None, None))[1] is future:
                del self._cache[key]
            raise

    async def _refresh(self, key: tuple, make) -> None:
        started = time.monotonic()
        try:
            body = await make()
        except Exception:  # the next request computes it again and sees the error
            self._cache.pop(key, None)
        else:
            done = asyncio.get_running_loop().create_future()
            done.set_result(body)
            self._cache[key] = (started, done)
        finally:
            self._refreshing.pop(key, None)

    # -- auth and privacy -----------------------------------------------------------------------

    def _role(self, request: Request, allowed: tuple[str, ...]) -> str:
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not key:
            raise ApiError(401, "unauthenticated", "missing API key (Authorization: Bearer <key>)")
        found = self._credential(key)
        if found is None:
            raise ApiError(401, "unauthenticated", "unknown or revoked API key")
        role = found[1]
        if role not in allowed:
            raise ApiError(403, "forbidden", f"this needs the {' or '.join(allowed)} role")
        return role

    def _credential(self, key: str) -> tuple[str, str] | None:
        """(id, role) of an API key, None for an unknown or revoked one (cached)."""
        if self._auth_task is None:  # the first request: follow revocations in this loop
            self._auth_task = asyncio.get_running_loop().create_task(
                self.auth.follow(redis_client.connect_async(self.topology.redis_url))
            )
        return self.auth.key(key)

    async def __del__(self) -> None:
        """A graceful stop (Serve scales in or redeploys): the audit records not written yet
        go to Redis."""
        if AuditTrail.writer is not None:
            await AuditTrail.writer.close()

    def _floor(self, count: int, role: str) -> int:
        return count if role == "admin" or count >= self.k_min else 0

    def _k(self, role: str) -> int:
        """The floor a cell answer is released under (engine/privacy.py): k_min for viewers;
        0 for admins, or when k_min is 0 or 1 (nothing to hide), and then nothing extra is
        computed."""
        return self.k_min if role != "admin" and self.k_min > 1 else 0

    def _cells(self, counts, role: str) -> list[dict]:
        return [{"cell": to_str(c), "count": n} for c, n in counts if self._floor(n, role) > 0]

    def _res(self, res: int | None) -> int:
        with _bad("bad_resolution"):
            return check_res(self.spec.res if res is None else res, self.spec.res)

    @staticmethod
    def _bbox(bbox: str | None) -> BBox | None:
        if bbox is None:
            return None
        with _bad("bad_bbox"):
            return BBox.parse(bbox)

    @staticmethod
    def _at(at: str | None) -> int | None:
        """The time of an `at=` answer (None: live): the minute aggregate of its minute."""
        if at is None:
            return None
        with _bad("bad_time"):
            return parse_time(at)

    async def _history(
        self, request: Request, method: str, *args, timeout_s: float = HISTORY_TIMEOUT_S
    ):
        """A call to the history actor; 503 while the store is unreachable, 504 past
        `timeout_s`. The rows it gave go to the request's audit record."""
        call = getattr(self._history_handle(), method).remote(*args)
        result = await self._guarded(call, timeout_s)
        note(request)["rows"] = _rows(result)
        return result

    def _history_handle(self):
        if self._history_actor is None:
            self._history_actor = ray.get_actor(HISTORY, namespace=self.topology.namespace)
        return self._history_actor

    @staticmethod
    async def _guarded(call, timeout_s: float = HISTORY_TIMEOUT_S):
        """Await `call`, which may reach history: 503 while the store is unreachable, 504 when
        it takes longer than `timeout_s` (or ClickHouse stops the query at its own limit)."""
        try:
            return await asyncio.wait_for(call, timeout_s)
        except (HistoryTimeout, TimeoutError) as exc:
            raise ApiError(
                504, "history_timeout", f"the history query took longer than {timeout_s:g} s"
            ) from exc
        except HistoryUnavailable as exc:
            raise ApiError(503, "history_unavailable", str(exc).splitlines()[-1]) from exc
        except StateUnavailable:
            raise
        except (ray.exceptions.RayActorError, Unavailable) as exc:
            raise ApiError(
                503, "unavailable", "a shard or the history store is restarting; retry"
            ) from exc

    # -- live queries ---------------------------------------------------------------------------

    async def _history_status(self) -> dict:
        """The snapshotter's `status()`, or {"error"} when it does not answer within 2 s."""
        try:
            if self._history_actor is None:
                self._history_actor = ray.get_actor(HISTORY, namespace=self.topology.namespace)
            return await asyncio.wait_for(self._history_actor.status.remote(), timeout=2.0)
        except Exception as exc:  # not started, restarting or busy
            return {"error": f"unavailable ({type(exc).__name__})"}

    async def _history_health(self) -> tuple[str, float]:
        """The store's check, and how far (s) history is behind the newest log entry. Writing
        a backlog back after an outage is lag, not an error: "catching up" is healthy."""
        status = await self._history_status()
        if "error" in status:
            return "unavailable", 0.0
        lag_s = max(status["archive_lag_ms"].values(), default=0) / 1000
        if status["spill"]["oldest_ms"]:
            lag_s = max(lag_s, time.time() - status["spill"]["oldest_ms"] / 1000)
        if status["paused"]:
            return "paused", lag_s
        if status["last_error"]:
            return f"error: {status['last_error']}", lag_s
        return ("catching up" if status["catching_up"] else "ok"), lag_s

    @app.get("/v1/health")
    async def health(self) -> ORJSONResponse:
        checks: dict[str, str] = {}
        try:
            self.redis.ping()
            checks["redis"] = "ok"
        except redis.RedisError as exc:
            checks["redis"] = f"error: {exc}"
        stats = await self.queries.stats()
        for family, ok in stats.items():
            checks[family] = "ok" if ok else "unavailable"
        checks["clickhouse"], lag_s = await self._history_health()
        healthy = all(v in ("ok", "catching up") for v in checks.values())
        body = {"status": "ok" if healthy else "degraded", "checks": checks, "as_of": _now()}
        return ORJSONResponse(
            {**body, "archive_lag_s": round(lag_s, 1)},
            status_code=200 if healthy else 503,
            headers=None if healthy else {"Retry-After": RETRY_AFTER_S},
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics(self) -> Response:
        """Every engine process's metrics in Prometheus's text format (no per-device data, so
        no key: scrape it from inside the cluster's network)."""
        text = await asyncio.to_thread(telemetry.prometheus_text, self.redis)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/admin/status")
    async def status(self, request: Request) -> ORJSONResponse:
        """For operators (admin): every shard's figures, the history snapshotter's state and
        the last scale's progress (`rebalance`: running, done, failed or interrupted)."""
        self._role(request, ("admin",))
        history = await self._history_status()
        scaling = await asyncio.to_thread(progress.read, self.redis)
        self.queries.refresh()  # read after it: a scale that is done shows its layout
        shards = await self.queries.shard_stats()
        body = {"as_of": _now(), "layout": layout_of(self.queries.topology), "shards": shards}
        if (unfinished := pending_layout(self.redis)) is not None:
            body["pending_layout"] = unfinished
        return ORJSONResponse({**body, "rebalance": scaling, "history": history})

    @app.post("/v1/admin/archive")
    async def archive(self, request: Request, body: ArchiveControl) -> ORJSONResponse:
        """For operators (admin): pause writes to ClickHouse for a maintenance (`paused`), or
        rehearse an outage (`outage_drill`: every store call refused, as a ClickHouse that is
        down would). Meanwhile the backlog waits in Redis, then in spill files; answers the
        snapshotter's state."""
        self._role(request, ("admin",))
        _note_params(request, paused=body.paused, outage_drill=body.outage_drill)
        if body.paused is None and body.outage_drill is None:
            raise ApiError(400, "bad_request", "give paused or outage_drill")
        history = ray.get_actor(HISTORY, namespace=self.topology.namespace)
        try:
            if body.paused is not None:
                await history.pause.remote(body.paused)
            if body.outage_drill is not None:
                await history.drill_outage.remote(body.outage_drill)
        except HistoryUnavailable as exc:
            raise ApiError(503, "history_unavailable", str(exc)) from exc
        return ORJSONResponse(await self._history_status())

    @app.get("/v1/admin/deadletter")
    async def deadletter(self, request: Request, limit: int = Query(20, ge=1, le=1_000)):
        """For operators (admin): what history refused, newest first (the table, the shard and
        log range it came from, ClickHouse's error and the refused rows)."""
        self._role(request, ("admin",))
        dead = DeadLetter(self.redis)
        entries = await asyncio.to_thread(dead.entries, limit)
        return ORJSONResponse({"total": len(dead), "entries": entries})

    @app.get("/v1/admin/audit")
    async def audit(
        self,
        request: Request,
        from_: str | None = Query(None, alias="from"),
        to: str | None = None,
        key: str | None = Query(None, max_length=64),
        route: str | None = Query(None, max_length=200),
        limit: int = Query(100, ge=1, le=10_000),
    ) -> ORJSONResponse:
        """For operators (admin): the audit log, newest first: who (key id and role, or the
        OS user of a CLI command) asked what (method, route template, parameters with device
        ids as pseudonyms), how it went (status, time, bytes, rows), from [from, to) (the last
        day unless told), of one key id (`key`) and of routes starting with `route`. Requests
        reach it within a snapshot interval; reading it is audited too."""
        self._role(request, ("admin",))
        with _bad("bad_time"):
            t1 = _now() if to is None else parse_time(to)
            t0 = t1 - DAY_MS if from_ is None else parse_time(from_)
        if t1 <= t0:
            raise ApiError(400, "bad_time", "`to` must be after `from`")
        entries = await self._history(request, "audit_entries", t0, t1, key, route, limit)
        return ORJSONResponse({"from": t0, "to": t1, "entries": entries})

    @app.delete("/v1/admin/devices/{device_id}")
    async def forget(self, request: Request, device_id: str) -> ORJSONResponse:
        """For operators (admin): forget a device, named by its raw id or pseudonym
        (state/forgetting.py). Its id leaves the directory, it leaves live state as if its
        presence ended now, its raw pings are deleted from history and its presence re-keyed
        to a key nothing links to it: counts of the past stay. `live` and `history` say
        whether those steps are done or still pending (the engine finishes them)."""
        self._role(request, ("admin",))
        key = self._device(request, device_id)
        raw = self.ids.resolve(key)
        job = forgetting.start(self.redis, raw, new_pseudonym()) if raw is not None else None
        if job is None:  # forgotten meanwhile
            raise ApiError(404, "unknown_device", "no such device (never seen, or forgotten)")
        live = "done"
        try:
            shard = forgetting.owner(self.topology, self.redis, job.old)
            await self.queries.users.forget(shard, job.old, job.fresh)
            forgetting.forgotten_live(self.redis, job)
        except (forgetting.Busy, Unavailable) as exc:
            log.warning("forget: the user shard's step waits: %s", exc)
            live = "pending"
        try:
            states = await asyncio.wait_for(
                self._history_handle().forget_pending.remote(), HISTORY_TIMEOUT_S
            )
            history = states.get(pseudonym_str(job.old), "done")
        except (TimeoutError, ray.exceptions.RayError, HistoryUnavailable) as exc:
            log.warning("forget: history's step waits: %s", exc)
            history = "pending"
        if history == "done":
            live = "done"  # history's step does the shard's first when it was left pending
        return ORJSONResponse({"device_id": device_id, "live": live, "history": history})

    @app.get("/v1/admin/keys")
    async def list_keys(self, request: Request) -> ORJSONResponse:
        """For operators (admin): every API key's id, role, label, creation and last use (ms
        since the epoch; the last use to within a minute, null if never seen)."""
        self._role(request, ("admin",))
        return ORJSONResponse({"keys": await asyncio.to_thread(self.auth.keys.list)})

    @app.delete("/v1/admin/keys/{key_id}")
    async def revoke_key(self, request: Request, key_id: str) -> ORJSONResponse:
        """For operators (admin): revoke a key by its id. Every replica and ingest handler
        refuses it within a second; its open ingest streams end with UNAUTHENTICATED."""
        self._role(request, ("admin",))
        if not await asyncio.to_thread(self.auth.keys.revoke_id, key_id):
            raise ApiError(404, "not_found", f"no key with id {key_id!r}")
        return ORJSONResponse({"revoked": "key", "id": key_id})

    @app.delete("/v1/admin/tokens/{token_id}")
    async def revoke_token(
        self, request: Request, token_id: str, device: bool = False
    ) -> ORJSONResponse:
        """For operators (admin): revoke a device token by its id (`tok_...`), or every token
        issued so far to a device id (any other value, or `device=true`). Ingest refuses them
        within a second; open streams end with UNAUTHENTICATED."""
        self._role(request, ("admin",))
        tokens = DeviceTokens(self.redis, self.auth.tokens.secret)
        with _bad("bad_token_id"):
            kind, what = await asyncio.to_thread(tokens.revoke, token_id, device)
        if kind == "token":  # given as the token itself: its record names it by its id
            _note_params(request, token_id=what)
        return ORJSONResponse({"revoked": kind, "id": what})

    @app.post("/v1/admin/scale", status_code=202)
    async def scale(self, request: Request, body: ScaleBody):
        """For operators (admin): change the user and cell shard counts while ingest goes on
        (devices move over the hash ring; nothing is lost or counted twice), and the number
        of gRPC ingest handlers. What can be refused is refused at once (409 while another
        rebalance runs or an unfinished one aims at other counts, or when the new actors would
        not fit); otherwise 202 with the target layout version, and the scale runs in the
        background: `GET /v1/admin/status` shows its progress under `rebalance`."""
        self._role(request, ("admin",))
        _note_params(request, **body.model_dump())
        if body.user_shards is None and body.cell_shards is None and body.ingest_handlers is None:
            raise ApiError(400, "bad_request", "give user_shards, cell_shards or ingest_handlers")
        try:
            job = await asyncio.to_thread(
                scale_job.begin,
                self.topology,
                body.user_shards,
                body.cell_shards,
                body.ingest_handlers,
            )
        except RebalanceError as exc:
            raise ApiError(409, "rebalance_conflict", str(exc)) from exc
        except DoesNotFit as exc:
            raise ApiError(409, "does_not_fit", str(exc)) from exc
        except (ray.exceptions.RayError, Unavailable) as exc:  # a shard did not answer the pricing
            raise ApiError(
                503, "unavailable", f"{exc.__class__.__name__}: a shard is restarting; retry"
            ) from exc
        task = asyncio.create_task(self._run_scale(job))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return ORJSONResponse(
            job.accepted(), status_code=202, headers={"Location": "/v1/admin/status"}
        )

    async def _run_scale(self, job: scale_job.Job) -> None:
        """The accepted scale, to its end (recorded by `scale_job.run`, which raises nothing);
        this replica's queries then take the new layout at once."""
        await asyncio.to_thread(scale_job.run, job)
        with suppress(redis.RedisError):  # else within a second, from any query
            self.queries.refresh()

    @app.get("/v1/heatmap")
    async def heatmap(
        self,
        request: Request,
        bbox: str,
        res: int | None = None,
        format: Literal["cells", "geojson"] = "cells",
        at: str | None = None,
    ):
        role = self._role(request, READ_ROLES)
        box, r = self._bbox(bbox), self._res(res)
        t, k = self._at(at), self._k(role)
        if t is not None:
            if k:
                args = ("floored_heatmap", r, self.spec.res, t, BBox.to_tuple(box), k)
            else:
                args = ("heatmap", r, t, BBox.to_tuple(box))
            counts = await self._history(request, *args)
            return _json_bytes(self._heatmap_body(counts, t, r, format, role))
        admin = role == "admin"

        async def make() -> bytes:
            now = _now()
            if k:
                counts = await self.queries.floored_heatmap(r, box, k)
            else:
                counts = await self.queries.heatmap(r, box)
            return self._heatmap_body(counts, now, r, format, role)

        body = await self._shared(("heatmap", r, bbox, format, admin), make)
        return _json_bytes(body)

    def _heatmap_body(self, counts: dict, now: int, r: int, format: str, role: str) -> bytes:
        if len(counts) > MAX_HEATMAP_CELLS:
            raise ApiError(
                400, "too_many_cells", f"{len(counts)} cells; use a coarser res or a smaller bbox"
            )
        cells = self._cells(sorted(counts.items()), role)
        if format == "geojson":
            features = [
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [boundary_lnglat(parse_cell(c["cell"]))],
                    },
                    "properties": c,
                }
                for c in cells
            ]
            return orjson.dumps(
                {"type": "FeatureCollection", "res": r, "as_of": now, "features": features}
            )
        return orjson.dumps({"res": r, "as_of": now, "cells": cells})

    @app.get("/v1/top")
    async def top(
        self,
        request: Request,
        n: int = Query(10, ge=1, le=MAX_TOP),
        res: int | None = None,
        bbox: str | None = None,
        at: str | None = None,
    ):
        role = self._role(request, READ_ROLES)
        box, r = self._bbox(bbox), self._res(res)
        t, k = self._at(at), self._k(role)
        if t is not None:
            if k:
                args = ("floored_top", n, r, self.spec.res, t, BBox.to_tuple(box), k)
            else:
                args = ("top", n, r, t, BBox.to_tuple(box))
            ranked = await self._history(request, *args)
            return ORJSONResponse({"res": r, "as_of": t, "cells": self._cells(ranked, role)})
        admin = role == "admin"
        body = await self._shared(
            ("top", n, r, bbox, admin), lambda: self._top_body(n, r, box, role)
        )
        return _json_bytes(body)

    async def _top_body(self, n: int, r: int, box: BBox | None, role: str) -> bytes:
        now, k = _now(), self._k(role)
        if k:  # ranked by released counts
            ranked = await self.queries.floored_top(n, r, box, k)
        else:
            ranked = await self.queries.top(n, r, box)
        return orjson.dumps({"res": r, "as_of": now, "cells": self._cells(ranked, role)})

    @app.get("/v1/cells/{cell}")
    async def cell(self, request: Request, cell: str, at: str | None = None):
        role = self._role(request, READ_ROLES)
        with _bad("bad_cell"):
            c = parse_cell(cell)
            check_res(resolution(c), self.spec.res)
        t, k = self._at(at), self._k(role)
        if t is not None:
            args = ("floored_cell", c, self.spec.res, t, k) if k else ("cell_count", c, t)
            count = await self._history(request, *args)
        elif k:
            count = await self.queries.floored_cell(c, k)
        else:
            count = await self.queries.cell_count(c)
        as_of = t if t is not None else _now()
        return ORJSONResponse(
            {"cell": to_str(c), "count": self._floor(count, role), "as_of": as_of}
        )

    @app.get("/v1/spaces")
    async def spaces(self, request: Request, at: str | None = None, geometry: bool = False):
        """Every space with its count (live, or `at=` as `GET /v1/spaces/{id}` answers it),
        and with `geometry=true` the polygon of each polygon space."""
        role = self._role(request, READ_ROLES)
        t = self._at(at)
        # door spaces exact at t, polygon ones live
        counts = await self._guarded(self.queries.space_counts(t))
        polygon_counts = counts
        if t is not None:  # a polygon space at t is its minute aggregate (history)
            polygon_counts = await self._history(request, "space_counts", t)
        metadata = self.definitions.metadata
        out = []
        for space, spec in sorted(metadata.polygon_spaces().items()):
            count = polygon_counts.get(space, 0)
            item = {"space": space, "name": spec["name"], "kind": "polygon"}
            item["count"] = self._floor(count, role)
            if geometry:
                item["polygon"] = spec["polygon"]
            out.append(item)
        for space, name in sorted(metadata.door_spaces().items()):
            count = self._floor(counts.get(space, 0), role)
            out.append({"space": space, "name": name, "kind": "door", "count": count})
        return ORJSONResponse({"as_of": t if t is not None else _now(), "spaces": out})

    @app.get("/v1/spaces/{space_id}")
    async def space(self, request: Request, space_id: str, at: str | None = None):
        role = self._role(request, READ_ROLES)
        kind = self.definitions.kind(space_id)
        if kind is None:
            raise ApiError(404, "unknown_space", f"no space {space_id!r}")
        t = self._at(at)
        if t is not None and kind != "door":
            # a polygon space's count at T is the minute aggregate of T's minute (history);
            # a door space's is exact at T from its events (live state keeps those of the last
            # OCC_MAX_PING_AGE_S, history all of them)
            count = await self._history(request, "space_count", space_id, t)
        else:
            count = await self._guarded(self.queries.space_count(space_id, t))
        return {
            "space": space_id,
            "kind": kind,
            "count": self._floor(count, role),
            "as_of": t if t is not None else _now(),
        }

    @app.get("/v1/users/{device_id}/dwell")
    async def dwell(self, request: Request, device_id: str, day: str):
        self._role(request, ("admin",))
        with _bad("bad_day"):
            d = parse_day(day)
        key = self._device(request, device_id)
        # live state where it holds the day, else history's pieces with the owed ones over them
        live = await self.queries.dwell_live(key, d)
        if "dwell" in live:
            found = live["dwell"]
        else:
            stored = await self._history(request, "dwell_pieces", key, d)
            found = dwell_of(stored, live["owed"])
        return ORJSONResponse(
            {
                "device_id": device_id,
                "day": day,
                "cells": [
                    {"cell": to_str(c), "seconds": ms / 1000}
                    for c, ms in sorted(found["cells"].items(), key=lambda x: -x[1])
                ],
                "spaces": [
                    {"space": s, "seconds": ms / 1000}
                    for s, ms in sorted(found["spaces"].items(), key=lambda x: -x[1])
                ],
            }
        )

    # -- history (raw archive) ------------------------------------------------------------------

    def _period(self, start: str, end: str) -> tuple[int, int]:
        with _bad("bad_time"):
            t0, t1 = parse_time(start), parse_time(end)
        if t1 <= t0:
            raise ApiError(400, "bad_time", "`to` must be after `from`")
        return t0, t1

    @staticmethod
    def _attrs(request: Request) -> dict[str, str]:
        attrs = {k[5:]: v for k, v in request.query_params.items() if k.startswith("attr.")}
        if len(attrs) > 16 or any(not k or len(k) > 64 or len(v) > 256 for k, v in attrs.items()):
            raise ApiError(400, "bad_attribute", "up to 16 attr.K=V filters, K ≤ 64, V ≤ 256")
        return attrs

    def _device(self, request: Request, device_id: str) -> int:
        """The pseudonym a per-device route names (a raw id, or the pseudonym of a device the
        id directory has): 404 for a device never seen or forgotten. The request's audit
        record names the device by it."""
        if not device_id or len(device_id.encode()) > self.spec.limits.max_id_bytes:
            raise ApiError(400, "bad_device_id", "device ids are 1 to 128 bytes")
        key = self.ids.key_of(device_id)
        if key is None:
            raise ApiError(404, "unknown_device", "no such device (never seen, or forgotten)")
        note(request).setdefault("pseudonyms", {})[device_id] = pseudonym_str(key)
        return key

    def _device_ids(self, keys: list[int], role: str) -> dict[int, str]:
        """Raw ids for admins where the id directory still has them; pseudonyms otherwise."""
        raw = self.ids.resolve_many(keys) if role == "admin" else {}
        return {k: raw.get(k) or pseudonym_str(k) for k in keys}

    @app.get("/v1/history/devices")
    async def history_devices(
        self,
        request: Request,
        from_: str = Query(alias="from"),
        to: str = Query(),
        bbox: str | None = None,
        polygon: str | None = None,
        limit: int = Query(1000, ge=1, le=100_000),
        timeout_s: float = Query(30.0, gt=0, le=300),
    ):
        """Devices with an applied ping inside the area (GeoJSON polygon, holes respected, or
        bbox) during [from, to), filtered by ping attributes `attr.K=V`."""
        role = self._role(request, ("admin",))
        t0, t1 = self._period(from_, to)
        if (bbox is None) == (polygon is None):
            raise ApiError(400, "bad_area", "give exactly one of bbox and polygon")
        shape = None
        if polygon is not None:
            with _bad("bad_polygon"):
                shape = validate_polygon(orjson.loads(polygon))
                box = polygon_bbox(shape)
        else:
            box = self._bbox(bbox)
        attrs = self._attrs(request)
        found, truncated = await self._history(
            request, "devices_in_area",
            t0, t1, BBox.to_tuple(box), shape, attrs, limit, timeout_s, timeout_s=timeout_s + 10,
        )  # fmt: skip
        names = self._device_ids([d for d, _, _ in found], role)
        devices = [{"device_id": names[d], "first_seen": a, "last_seen": b} for d, a, b in found]
        return ORJSONResponse({"devices": devices, "truncated": truncated})

    @app.get("/v1/history/path/{device_id}")
    async def history_path(
        self, request: Request, device_id: str, from_: str = Query(alias="from"), to: str = Query()
    ):
        self._role(request, ("admin",))
        t0, t1 = self._period(from_, to)
        key = self._device(request, device_id)
        points = await self._history(request, "path", key, t0, t1)
        return ORJSONResponse(
            {
                "device_id": device_id,
                "points": [{"ts": ts, "lat": lat, "lng": lng} for ts, lat, lng in points],
            }
        )

    @app.get("/v1/history/distance")
    async def history_distance(
        self,
        request: Request,
        from_: str = Query(alias="from"),
        to: str = Query(),
        device_id: str | None = None,
        timeout_s: float = Query(30.0, gt=0, le=300),
    ):
        """Metres between consecutive applied pings in [from, to) per device (admins) and their
        average; `attr.K=V` keeps the devices with a ping carrying those attributes."""
        role = self._role(request, READ_ROLES)
        t0, t1 = self._period(from_, to)
        attrs = self._attrs(request)
        if self._k(role) and len(attrs) > MAX_FLOORED_ATTRS:
            raise ApiError(
                400, "bad_attribute", f"viewers filter on up to {MAX_FLOORED_ATTRS} attributes"
            )
        key = None
        if device_id is not None:
            if role != "admin":
                raise ApiError(403, "forbidden", "per-device answers need the admin role")
            key = self._device(request, device_id)
        meters = await self._history(
            request, "distance", t0, t1, attrs, key, timeout_s, timeout_s=timeout_s + 10
        )
        average = sum(meters.values()) / len(meters) if meters else 0.0
        body: dict = {"average_meters": average, "device_count": len(meters)}
        if role == "admin":
            names = self._device_ids(sorted(meters), role)
            body["devices"] = [{"device_id": names[d], "meters": meters[d]} for d in sorted(meters)]
        elif self.k_min and not await self._filter_released(t0, t1, attrs, len(meters), timeout_s):
            body = {"average_meters": 0.0, "device_count": 0}
        return ORJSONResponse(body)

    async def _filter_released(
        self, t0: int, t1: int, attrs: dict, n: int, timeout_s: float
    ) -> bool:
        """Whether a viewer's answer over `n` devices may be given: n >= k_min and, with
        attribute filters, every filter with fewer of them may be given and differs from it by
        0 or at least k_min devices (engine.privacy.filter_released)."""
        if n < self.k_min:
            return False
        if not attrs or self.k_min <= 1:
            return True
        # not the answer's rows: the audit record keeps those of the distance query
        masks = await self._guarded(
            self._history_handle().attribute_masks.remote(t0, t1, attrs, timeout_s),
            timeout_s + 10,
        )
        return filter_released(subset_counts(masks, len(attrs)), (1 << len(attrs)) - 1, self.k_min)

    @app.get("/v1/export")
    async def export(
        self,
        request: Request,
        what: Literal["pings", "cells", "spaces", "dwell", "doors"],
        from_: str = Query(alias="from"),
        to: str = Query(),
        format: Literal["csv", "json", "parquet", "arrow"] = "csv",
    ):
        """A download of history rows with their time in [from, to); devices as pseudonyms."""
        self._role(request, ("admin",))
        t0, t1 = self._period(from_, to)
        data = await self._history(request, "export", what, t0, t1, format)
        _, media = EXPORT_FORMATS[format]
        name = f"occupancy-{what}-{t0}-{t1}.{format}"
        return Response(
            data,
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    # -- definitions (admin) --------------------------------------------------------------------

    @app.put("/v1/spaces/{space_id}")
    async def put_space(self, request: Request, space_id: str, body: PolygonSpaceBody):
        self._role(request, ("admin",))
        _check_id(space_id)
        _note_params(request, name=body.name, kind="door" if body.polygon is None else "polygon")
        with _bad("bad_space"):
            if body.polygon is not None:
                cells = await self.definitions.define_polygon_space(
                    space_id, body.polygon, body.name
                )
                return {"space": space_id, "kind": "polygon", "name": body.name, "cells": cells}
            await self.definitions.define_door_space(space_id, body.name)
        return {"space": space_id, "kind": "door", "name": body.name}

    @app.put("/v1/doorways/{doorway_id}")
    async def put_doorway(self, request: Request, doorway_id: str, body: DoorwayBody):
        self._role(request, ("admin",))
        _check_id(doorway_id)
        _note_params(request, inside=body.inside, outside=body.outside)
        with _bad("bad_doorway"):
            await self.definitions.define_doorway(doorway_id, body.inside, body.outside)
        return {"doorway": doorway_id, "inside": body.inside, "outside": body.outside}

    @app.post("/v1/doorways/{doorway_id}/installations", status_code=201)
    async def install(self, request: Request, doorway_id: str, body: InstallationBody):
        self._role(request, ("admin",))
        _note_params(
            request,
            sensor_id=body.sensor_id,
            **{"from": body.from_},
            positive=body.positive,
            doorway_removed=body.doorway_removed,
        )
        with _bad("bad_time"):
            start = parse_time(str(body.from_))
        with _bad("bad_installation"):
            doorway = None if body.doorway_removed else doorway_id
            await self.definitions.install(body.sensor_id, doorway, start, body.positive)
        return {
            "doorway": doorway_id,
            "sensor_id": body.sensor_id,
            "from": start,
            "positive": body.positive,
        }

    @app.post("/v1/spaces/{space_id}/resets", status_code=201)
    async def reset(self, request: Request, space_id: str, body: ResetBody):
        self._role(request, ("admin",))
        _note_params(request, at=body.at)
        with _bad("bad_time"):
            at = parse_time(str(body.at))
        with _bad("bad_space"):
            await self.definitions.reset(space_id, at)
        return {"space": space_id, "at": at}


def build(topology: Topology, k_min: int = 0):
    """The Serve application (`serve.run(build(...))`)."""
    return QueryApi.bind(topology, k_min)
