"""Webhooks (admins): defined here, stored in Redis (state/hooks.py); the user shards write their
spaces' enters and exits to each hook's outbox, history delivers them and the above/below
crossings it sees in the exact counts (actors/hooks.py)."""

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from engine.hooks import MAX_SPACES, MAX_URL, MEMBERSHIP, SECRET_BYTES, HookSpec, check_hook
from serve_apps.context import Api
from serve_apps.errors import ApiError, bad
from serve_apps.models import Ms, ok
from serve_apps.params import IdPath, check_id, note_params
from serve_apps.policy import ADMIN

router = APIRouter()

Event = Literal["enter", "exit", "above", "below"]


URL_PATTERN = r"^https?://[^\s/?#@\[\]]+(/\S*)?$"
# printable ASCII without spaces: its characters are its bytes, as the signature's key
SECRET_PATTERN = rf"^[!-~]{{{SECRET_BYTES[0]},{SECRET_BYTES[1]}}}$"
SpaceId = Annotated[str, Field(pattern=r"^[^/?#]{1,200}$", json_schema_extra={"format": "id200"})]


class HookBody(BaseModel):
    url: str = Field(
        max_length=MAX_URL,
        pattern=URL_PATTERN,
        description="where deliveries are POSTed (http or https)",
        json_schema_extra={"format": "hook-url"},
    )
    secret: str = Field(
        pattern=SECRET_PATTERN,
        description="signs every delivery (X-Occupancy-Signature: sha256=<HMAC-SHA256 hex>); "
        "16 to 256 printable ASCII characters",
    )
    spaces: list[SpaceId] = Field(min_length=1, max_length=MAX_SPACES)
    events: list[Event] = Field(min_length=1, max_length=4)
    threshold: int | None = Field(
        None, ge=0, le=2**31, description="required with above or below, refused without"
    )


class Hook(BaseModel):
    hook: str
    url: str
    secret: Literal["set"] = Field(description="never shown")
    spaces: list[str]
    events: list[Event]
    threshold: int | None
    status: Literal["active", "failing", "disabled"]
    failing_since: Ms | None = Field(description="since when deliveries fail (null: they do not)")
    last_error: str
    pending: int = Field(description="events waiting in the hook's outbox")


class HookList(BaseModel):
    hooks: list[Hook]


class HookDeleted(BaseModel):
    hook: str
    deleted: bool


def view(hook: str, spec: HookSpec, status: dict, pending: int) -> dict:
    since = status.get("failing_since") or 0
    state = "disabled" if status.get("disabled") else "failing" if since else "active"
    return {
        "hook": hook,
        "url": spec.url,
        "secret": "set",
        "spaces": list(spec.spaces),
        "events": list(spec.events),
        "threshold": spec.threshold,
        "status": state,
        "failing_since": int(since * 1000) if since else None,
        "last_error": status.get("last_error", ""),
        "pending": pending,
    }


@router.put("/v1/hooks/{hook_id}", responses=ok(Hook, 404))
async def put_hook(request: Request, api: Api, hook_id: IdPath, body: HookBody):
    """Define (or redefine, which enables it again) a webhook on existing spaces: `enter` and
    `exit` of polygon spaces, `above` and `below` a `threshold` of any space's count. Once
    answered, every user shard has it."""
    api.role(request, ADMIN)
    check_id(hook_id)
    note_params(request, url=body.url, spaces=body.spaces, events=body.events)
    with bad("bad_hook"):
        spec = check_hook(body.url, body.secret, body.spaces, body.events, body.threshold)
    for space in spec.spaces:
        kind = await asyncio.to_thread(api.definitions.kind, space)
        if kind is None:
            raise ApiError(404, "unknown_space", f"no space {space!r}")
        if kind == "door" and MEMBERSHIP & set(spec.events):
            raise ApiError(400, "bad_hook", f"{space!r} is a door space: no enter or exit")
    await asyncio.to_thread(api.hooks.put, hook_id, spec)
    await api.users.reload_hooks()  # every user shard writes its enters and exits from now on
    return view(hook_id, spec, {}, 0)


@router.get("/v1/hooks", responses=ok(HookList))
async def hooks(request: Request, api: Api):
    """Every webhook, its delivery status (a hook failing for `OCC_HOOK_GIVE_UP_S` is
    disabled until defined again) and the events waiting for it; never its secret."""
    api.role(request, ADMIN)

    def read() -> list[dict]:
        statuses = api.hooks.statuses()
        return [
            view(h, spec, statuses.get(h, {}), api.hooks.pending(h))
            for h, spec in sorted(api.hooks.hooks().items())
        ]

    return {"hooks": await asyncio.to_thread(read)}


@router.delete("/v1/hooks/{hook_id}", responses=ok(HookDeleted, 404))
async def delete_hook(request: Request, api: Api, hook_id: IdPath):
    """Delete a webhook and the events still waiting for it."""
    api.role(request, ADMIN)
    check_id(hook_id)
    if not await asyncio.to_thread(api.hooks.delete, hook_id):
        raise ApiError(404, "unknown_hook", f"no hook {hook_id!r}")
    await api.users.reload_hooks()
    return {"hook": hook_id, "deleted": True}
