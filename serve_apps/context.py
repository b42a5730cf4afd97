"""What the routes of one replica work with: its clients of the engine, the key look-up, the id
directory, the privacy floor and the answer cache. Routes reach it through `context()`."""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated

from fastapi import Depends, Request

from access.tokens import Refused
from engine.pseudonym import pseudonym_str
from engine.spec import EngineSpec
from serve_apps.audit import note
from serve_apps.cache import AnswerCache
from serve_apps.errors import HISTORY_TIMEOUT_S, ApiError, within
from serve_apps.policy import Floor, role_of
from serve_apps.streams import StreamHub
from state.topology import Topology


class ApiContext:
    """A replica's state. Every engine call goes through the clients given here (`queries`:
    live state, `history`: the history actor, `users`: the user shards, `definitions`: spaces
    and doorways, `hooks`: webhooks), so routes can be exercised with stand-ins.
    `follow(on_change)`, if given, starts following key revocations (`on_change` ends the open
    streams of revoked keys); it runs once, in the loop of the first request."""

    def __init__(
        self,
        *,
        topology: Topology,
        spec: EngineSpec,
        k_min: int,
        queries,
        history,
        users,
        definitions,
        redis,
        auth,
        ids,
        scaler=None,
        ingest=None,
        hooks=None,
        follow: Callable[[Callable], Coroutine] | None = None,
        cache: AnswerCache | None = None,
        heartbeat_s: float = 15.0,
    ):
        self.topology, self.spec = topology, spec
        self.floor = Floor(k_min)
        self.queries, self.history, self.users = queries, history, users
        self.definitions, self.redis, self.auth, self.ids = definitions, redis, auth, ids
        self.scaler = scaler
        self.ingest = ingest  # the ingest handlers, for the HTTP ingest routes
        self.hooks = hooks  # webhook definitions (state/hooks.py `HookStore`)
        self.cache = cache or AnswerCache()
        self.jobs: set[asyncio.Task] = set()  # scales running here (kept from the collector)
        self.streams = StreamHub(self, heartbeat_s=heartbeat_s)
        self._follow = follow
        self._following: asyncio.Task | None = None

    @property
    def k_min(self) -> int:
        return self.floor.k_min

    def credential(self, key: str) -> tuple[str, str] | None:
        """(id, role) of an API key, None for an unknown or revoked one (cached)."""
        self._start_following()
        return self.auth.key(key)

    def sender(self, credential: str) -> tuple[str, str] | None:
        """(id, role) of an ingest route's credential: an API key, or a device token (id "":
        device tokens are counted together, as gRPC ingest counts them); None when refused.
        The ingest handler checks the role."""
        self._start_following()
        try:
            who = self.auth.resolve(credential)
        except Refused:
            return None
        return ("", who.role) if who.device is not None else (who.id, who.role)

    def _start_following(self) -> None:
        """Revocations followed from the first request on (a running loop is needed): whichever
        route comes first, a query's or an ingest's."""
        if self._following is None and self._follow is not None:
            self._following = asyncio.get_running_loop().create_task(
                self._follow(self.streams.end_revoked)
            )

    def role(self, request: Request, allowed: tuple[str, ...]) -> str:
        return role_of(request, allowed, self.credential)

    async def from_history(
        self, request: Request, call, timeout_s: float = HISTORY_TIMEOUT_S, grace_s: float = 0.0
    ):
        """A history answer (504 past `timeout_s`, `within`); the rows it gave go to the
        request's audit record."""
        result = await within(call, timeout_s, grace_s)
        note(request)["rows"] = _rows(result)
        return result

    async def history_status(self) -> dict:
        """The snapshotter's `status()`, or {"error"} when it does not answer within 2 s."""
        try:
            return await asyncio.wait_for(self.history.status(), timeout=2.0)
        except Exception as exc:  # not started, restarting or busy
            return {"error": f"unavailable ({type(exc).__name__})"}

    def device(self, request: Request, device_id: str) -> int:
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

    def device_ids(self, keys: list[int], role: str) -> dict[int, str]:
        """Raw ids for admins where the id directory still has them; pseudonyms otherwise."""
        raw = self.ids.resolve_many(keys) if role == "admin" else {}
        return {k: raw.get(k) or pseudonym_str(k) for k in keys}


def _rows(result) -> int:
    """The items a history answer holds, for its audit record (0 for an export's file)."""
    if isinstance(result, tuple):  # (devices, truncated)
        result = result[0]
    if isinstance(result, bytes):
        return 0
    return len(result) if isinstance(result, dict | list) else 1


_installed: list[ApiContext] = []


def install(api: ApiContext) -> None:
    """The process's context: a Serve replica is a process of its own, and sets it once."""
    _installed[:] = [api]


def installed() -> ApiContext | None:
    """The process's context, if one is installed."""
    return _installed[0] if _installed else None


async def context() -> ApiContext:
    """The FastAPI dependency every route takes its replica's state from (async: no thread)."""
    if not _installed:
        raise RuntimeError("no ApiContext installed in this process")
    return _installed[0]


Api = Annotated[ApiContext, Depends(context)]  # a route's parameter: its replica's ApiContext
