"""For operators (admin): the engine's status, the archive's controls and refusals, the audit log,
forgetting a device, API keys and device tokens, and scaling the shards."""

import asyncio
import logging
from contextlib import suppress
from typing import Annotated

import redis
from fastapi import APIRouter, Query, Request
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from access.tokens import DeviceTokens
from actors.archive import DeadLetter
from clients.errors import Unavailable
from clients.history import HistoryUnavailable
from cluster import progress
from cluster.fit import DoesNotFit
from cluster.rebalance import RebalanceError
from engine.pseudonym import new_pseudonym, pseudonym_str
from engine.timeutil import DAY_MS, parse_time
from serve_apps.context import Api, ApiContext
from serve_apps.errors import HISTORY_TIMEOUT_S, ApiError, bad
from serve_apps.models import (
    AuditLog,
    DeadLetters,
    Forgotten,
    HistoryStatus,
    Keys,
    Revoked,
    ScaleAccepted,
    Status,
    ok,
)
from serve_apps.params import DeviceId, json_int, note_params, now, time_query
from serve_apps.policy import ADMIN
from state import forgetting
from state.layout import layout_of
from state.layout import pending as pending_layout

log = logging.getLogger(__name__)

MAX_SHARDS = 64

router = APIRouter()


Shards = Annotated[int, Field(ge=1, le=MAX_SHARDS), BeforeValidator(json_int)]


def one_of(*fields: str, kind: str) -> ConfigDict:
    """A body that must give at least one of `fields` (not null), as its schema says too."""
    given = [{"required": [f], "properties": {f: {"type": kind}}} for f in fields]
    return ConfigDict(json_schema_extra={"anyOf": given})


class ScaleBody(BaseModel):
    model_config = one_of("user_shards", "cell_shards", "ingest_handlers", kind="integer")

    user_shards: Shards | None = None
    cell_shards: Shards | None = None
    ingest_handlers: Shards | None = None


class ArchiveControl(BaseModel):
    model_config = one_of("paused", "outage_drill", kind="boolean")

    paused: StrictBool | None = None  # stop (True) or resume (False) writing to ClickHouse
    outage_drill: StrictBool | None = None  # the store refuses every call until False


@router.get("/v1/admin/status", responses=ok(Status))
async def status(request: Request, api: Api) -> ORJSONResponse:
    """For operators (admin): every shard's figures, the history snapshotter's state and
    the last scale's progress (`rebalance`: running, done, failed or interrupted)."""
    api.role(request, ADMIN)
    history = await api.history_status()
    scaling = await asyncio.to_thread(progress.read, api.redis)
    api.queries.refresh()  # read after it: a scale that is done shows its layout
    shards = await api.queries.shard_stats()
    body = {"as_of": now(), "layout": layout_of(api.queries.topology), "shards": shards}
    if (unfinished := pending_layout(api.redis)) is not None:
        body["pending_layout"] = unfinished
    return ORJSONResponse({**body, "rebalance": scaling, "history": history})


@router.post("/v1/admin/archive", responses=ok(HistoryStatus))
async def archive(request: Request, api: Api, body: ArchiveControl) -> ORJSONResponse:
    """For operators (admin): pause writes to ClickHouse for a maintenance (`paused`), or
    rehearse an outage (`outage_drill`: every store call refused, as a ClickHouse that is
    down would). Meanwhile the backlog waits in Redis, then in spill files; answers the
    snapshotter's state."""
    api.role(request, ADMIN)
    note_params(request, paused=body.paused, outage_drill=body.outage_drill)
    if body.paused is None and body.outage_drill is None:
        raise ApiError(400, "bad_request", "give paused or outage_drill")
    if body.paused is not None:
        await api.history.pause(body.paused)
    if body.outage_drill is not None:
        await api.history.drill_outage(body.outage_drill)
    return ORJSONResponse(await api.history_status())


@router.get("/v1/admin/deadletter", responses=ok(DeadLetters))
async def deadletter(
    request: Request,
    api: Api,
    limit: int = Query(20, ge=1, le=1_000),
):
    """For operators (admin): what history refused, newest first (the table, the shard and
    log range it came from, ClickHouse's error and the refused rows)."""
    api.role(request, ADMIN)
    dead = DeadLetter(api.redis)
    entries = await asyncio.to_thread(dead.entries, limit)
    return ORJSONResponse({"total": len(dead), "entries": entries})


@router.get("/v1/admin/audit", responses=ok(AuditLog, 504))
async def audit(
    request: Request,
    api: Api,
    from_: str | None = time_query(None, alias="from", description="a day before `to` unless told"),
    to: str | None = time_query(None, description="now unless told"),
    key: str | None = Query(None, max_length=64),
    route: str | None = Query(None, max_length=200),
    limit: int = Query(100, ge=1, le=10_000),
) -> ORJSONResponse:
    """For operators (admin): the audit log, newest first: who (key id and role, or the
    OS user of a CLI command) asked what (method, route template, parameters with device
    ids as pseudonyms), how it went (status, time, bytes, rows), from [from, to) (the last
    day unless told), of one key id (`key`) and of routes starting with `route`. Requests
    reach it within a snapshot interval; reading it is audited too."""
    api.role(request, ADMIN)
    with bad("bad_time"):
        t1 = now() if to is None else parse_time(to)
        t0 = t1 - DAY_MS if from_ is None else parse_time(from_)
    if t1 <= t0:
        raise ApiError(400, "bad_time", "`to` must be after `from`")
    call = api.history.audit_entries(t0, t1, key, route, limit)
    entries = await api.from_history(request, call)
    return ORJSONResponse({"from": t0, "to": t1, "entries": entries})


@router.delete("/v1/admin/devices/{device_id}", responses=ok(Forgotten, 404))
async def forget(request: Request, api: Api, device_id: DeviceId) -> ORJSONResponse:
    """For operators (admin): forget a device, named by its raw id or pseudonym
    (state/forgetting.py). Its id leaves the directory, it leaves live state as if its
    presence ended now, its raw pings are deleted from history and its presence re-keyed
    to a key nothing links to it: counts of the past stay. `live` and `history` say
    whether those steps are done or still pending (the engine finishes them)."""
    api.role(request, ADMIN)
    key = api.device(request, device_id)
    raw = api.ids.resolve(key)
    job = forgetting.start(api.redis, raw, new_pseudonym()) if raw is not None else None
    if job is None:  # forgotten meanwhile
        raise ApiError(404, "unknown_device", "no such device (never seen, or forgotten)")
    live = "done"
    try:
        shard = forgetting.owner(api.topology, api.redis, job.old)
        await api.users.forget(shard, job.old, job.fresh)
        forgetting.forgotten_live(api.redis, job)
    except (forgetting.Busy, Unavailable) as exc:
        log.warning("forget: the user shard's step waits: %s", exc)
        live = "pending"
    try:
        states = await asyncio.wait_for(api.history.forget_pending(), HISTORY_TIMEOUT_S)
        history = states.get(pseudonym_str(job.old), "done")
    except (TimeoutError, Unavailable, HistoryUnavailable) as exc:
        log.warning("forget: history's step waits: %s", exc)
        history = "pending"
    if history == "done":
        live = "done"  # history's step does the shard's first when it was left pending
    return ORJSONResponse({"device_id": device_id, "live": live, "history": history})


@router.get("/v1/admin/keys", responses=ok(Keys))
async def list_keys(request: Request, api: Api) -> ORJSONResponse:
    """For operators (admin): every API key's id, role, label, creation and last use (ms
    since the epoch; the last use to within a minute, null if never seen)."""
    api.role(request, ADMIN)
    return ORJSONResponse({"keys": await asyncio.to_thread(api.auth.keys.list)})


@router.delete("/v1/admin/keys/{key_id}", responses=ok(Revoked, 404))
async def revoke_key(request: Request, api: Api, key_id: str) -> ORJSONResponse:
    """For operators (admin): revoke a key by its id. Every replica and ingest handler
    refuses it within a second; its open ingest streams end with UNAUTHENTICATED."""
    api.role(request, ADMIN)
    if not await asyncio.to_thread(api.auth.keys.revoke_id, key_id):
        raise ApiError(404, "not_found", f"no key with id {key_id!r}")
    return ORJSONResponse({"revoked": "key", "id": key_id})


@router.delete("/v1/admin/tokens/{token_id}", responses=ok(Revoked))
async def revoke_token(
    request: Request, api: Api, token_id: str, device: bool = False
) -> ORJSONResponse:
    """For operators (admin): revoke a device token by its id (`tok_...`), or every token
    issued so far to a device id (any other value, or `device=true`). Ingest refuses them
    within a second; open streams end with UNAUTHENTICATED."""
    api.role(request, ADMIN)
    tokens = DeviceTokens(api.redis, api.auth.tokens.secret)
    with bad("bad_token_id"):
        kind, what = await asyncio.to_thread(tokens.revoke, token_id, device)
    if kind == "token":  # given as the token itself: its record names it by its id
        note_params(request, token_id=what)
    return ORJSONResponse({"revoked": kind, "id": what})


@router.post("/v1/admin/scale", status_code=202, responses=ok(ScaleAccepted, 409, status=202))
async def scale(request: Request, api: Api, body: ScaleBody):
    """For operators (admin): change the user and cell shard counts while ingest goes on
    (devices move over the hash ring; nothing is lost or counted twice), and the number
    of gRPC ingest handlers. What can be refused is refused at once (409 while another
    rebalance runs or an unfinished one aims at other counts, or when the new actors would
    not fit); otherwise 202 with the target layout version, and the scale runs in the
    background: `GET /v1/admin/status` shows its progress under `rebalance`."""
    api.role(request, ADMIN)
    note_params(request, **body.model_dump())
    if body.user_shards is None and body.cell_shards is None and body.ingest_handlers is None:
        raise ApiError(400, "bad_request", "give user_shards, cell_shards or ingest_handlers")
    try:  # a shard that does not answer the pricing is Unavailable: 503
        job = await asyncio.to_thread(
            api.scaler.begin, body.user_shards, body.cell_shards, body.ingest_handlers
        )
    except RebalanceError as exc:
        raise ApiError(409, "rebalance_conflict", str(exc)) from exc
    except DoesNotFit as exc:
        raise ApiError(409, "does_not_fit", str(exc)) from exc
    task = asyncio.create_task(_run_scale(api, job))
    api.jobs.add(task)
    task.add_done_callback(api.jobs.discard)
    return ORJSONResponse(job.accepted(), status_code=202, headers={"Location": "/v1/admin/status"})


async def _run_scale(api: ApiContext, job) -> None:
    """The accepted scale, to its end (recorded by the scaler's `run`, which raises nothing);
    this replica's queries then take the new layout at once."""
    await asyncio.to_thread(api.scaler.run, job)
    with suppress(redis.RedisError):  # else within a second, from any query
        api.queries.refresh()
