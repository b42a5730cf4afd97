"""Live counts pushed as Server-Sent Events: one poller per replica, fanned out to every open
stream of that replica.

Each second the poller asks the engine once for every space's count (if a stream subscribes to
spaces) and once per distinct (bbox, res, floor) for the cells (the heatmap's live query), then
offers each stream its own answer under its role's privacy floor (as `GET /v1/spaces` and
`GET /v1/heatmap` give it). A stream is woken only when its answer changed. So a hundred streams
over the same map cost the engine what one poll a second costs, not a hundred.

Streams are served by a deployment of their own (`StreamApi`, serve_apps/api.py): Serve counts an
open streaming response as an ongoing request of its replica for its whole life, so streams on
the query replicas would take the slots (`max_ongoing_requests`) queries need.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field

import orjson

from engine.geo import BBox
from serve_apps.errors import ApiError, within

log = logging.getLogger(__name__)

POLL_S = 1.0  # the poller's period, and the least time between two events of one stream
MAX_CELLS = 50_000  # as a heatmap answers (serve_apps/routes/live.py)
RETRY_MS = 2_000  # told to clients: how long to wait before reconnecting


@dataclass(eq=False)
class Subscription:
    """One open stream: what it asks for, under which key and role, and the last answer it was
    offered. `ended` is the error that ends it (a revoked key, too many cells)."""

    key: str
    role: str
    k: int  # the cell floor (Floor.k): 0 for admins
    spaces: tuple[str, ...]
    box: BBox | None
    res: int
    last_id: int = 0  # the id of the last event sent (or the client's Last-Event-ID)
    state: dict | None = None
    as_of: int = 0
    dirty: bool = False
    ended: ApiError | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def view(self) -> tuple | None:
        """The cells query it shares with streams over the same area."""
        return None if self.box is None else (self.res, BBox.to_tuple(self.box), self.k)

    def offer(self, state: dict, as_of: int) -> None:
        if state != self.state:
            self.state, self.as_of, self.dirty = state, as_of, True
            self.wake.set()

    def end(self, error: ApiError) -> None:
        self.ended = error
        self.wake.set()

    def take(self) -> bytes:
        """The `counts` event of the state offered last (its id above every id sent before)."""
        self.dirty = False
        self.last_id = max(self.last_id + 1, self.as_of)
        body = {"as_of": self.as_of, **(self.state or {})}
        return frame("counts", orjson.dumps(body), self.last_id)


def frame(event: str, data: bytes, event_id: int | None = None) -> bytes:
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def error_frame(error: ApiError) -> bytes:
    return frame("error", orjson.dumps({"error": {"code": error.code, "message": error.message}}))


def last_event_id(header: str | None) -> int:
    """A reconnecting client's `Last-Event-ID` (0 when absent or not one of ours)."""
    try:
        return max(0, int(header or 0))
    except ValueError:
        return 0


class StreamHub:
    """The replica's streams and their poller (started with the first stream, ended with the
    last). `api` is the replica's ApiContext."""

    def __init__(self, api, poll_s: float = POLL_S, heartbeat_s: float = 15.0):
        self.api, self.poll_s, self.heartbeat_s = api, poll_s, heartbeat_s
        self.subscriptions: set[Subscription] = set()
        self._task: asyncio.Task | None = None

    async def subscribe(self, sub: Subscription) -> None:
        """Its first answer now (an error here is the request's: 400, 503, ...), then one
        each time it changes."""
        await self._refresh([sub])
        if sub.ended is not None:
            raise sub.ended
        self.subscriptions.add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions.discard(sub)

    async def events(self, sub: Subscription, limit: int | None = None):
        """The stream's body: the current state at once, then each change (at most one a
        POLL_S), a comment when nothing was written for `heartbeat_s`, and an `error` event
        that ends it; `limit`: it ends after so many `counts` events."""
        try:
            yield b"retry: %d\n\n" % RETRY_MS
            sent = 0.0
            while True:
                if sub.ended is not None:
                    yield error_frame(sub.ended)
                    return
                if sub.dirty:
                    wait = sent + self.poll_s - time.monotonic()
                    if wait > 0:  # at most one event a second: the latest state after the wait
                        await asyncio.sleep(wait)
                        continue
                    sent = time.monotonic()
                    yield sub.take()
                    if limit is not None:
                        limit -= 1
                        if limit <= 0:
                            return
                    continue
                sub.wake.clear()
                try:
                    await asyncio.wait_for(sub.wake.wait(), self.heartbeat_s)
                except TimeoutError:
                    yield b": heartbeat\n\n"
        finally:
            self.unsubscribe(sub)

    async def end_revoked(self) -> None:
        """Credentials changed (access/revocation.py): streams whose key no longer
        authenticates end with a 401 error event."""
        for sub in list(self.subscriptions):
            try:
                if self.api.credential(sub.key) is None:
                    sub.end(ApiError(401, "unauthenticated", "unknown or revoked API key"))
            except Exception:  # Redis unreachable: nothing is revoked meanwhile
                continue

    async def _poll(self) -> None:
        while self.subscriptions:
            await asyncio.sleep(self.poll_s)
            try:
                await self._refresh(list(self.subscriptions))
            except Exception as exc:  # the engine is restarting: streams wait for it
                log.warning("stream poll failed: %s", exc)

    async def _refresh(self, subs: list[Subscription]) -> None:
        api = self.api
        now = int(time.time() * 1000)
        views = {sub.view for sub in subs if sub.view is not None}
        asks = [self._cells(*view) for view in views]
        if any(sub.spaces for sub in subs):
            asks.append(within(api.queries.space_counts(None)))
        answers = await asyncio.gather(*asks)
        cells = dict(zip(views, answers, strict=False))
        spaces = answers[-1] if len(answers) > len(views) else {}
        for sub in subs:
            counts = cells.get(sub.view, {})
            if len(counts) > MAX_CELLS:
                sub.end(ApiError(400, "too_many_cells", f"{len(counts)} cells; use a coarser res"))
                continue
            state = {
                "spaces": {s: api.floor.count(spaces.get(s, 0) or 0, sub.role) for s in sub.spaces},
                "cells": api.floor.cells(sorted(counts.items()), sub.role),
            }
            sub.offer(state, now)

    async def _cells(self, res: int, box: tuple, k: int) -> dict:
        bbox = BBox(*box)
        if k:
            return await within(self.api.queries.floored_heatmap(res, bbox, k))
        return await within(self.api.queries.heatmap(res, bbox))
