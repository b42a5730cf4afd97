"""HTTP ingest's way into the engine: the API hands each request to a gRPC ingest handler
(`ingest-<i>`), whose `IngestCore` checks, logs and acks it as it does an RPC's batch.

The handlers are found by name and taken in turn; the list is read again every
NAMES_EVERY_S (a scale adds or stops handlers) and at once when a handler is gone.
"""

import asyncio
import itertools
import time

import ray

from clients.cluster import named
from clients.errors import NotStarted, Unavailable, mapped
from engine.http_ingest import HttpAnswer, HttpRequest

NAMES_EVERY_S = 10.0


def _handler_names(namespace: str) -> list[str]:
    names = (n for n in named(namespace) if n.startswith("ingest-"))
    return sorted(names, key=lambda n: int(n.split("-")[1]) if n[7:].isdigit() else -1)


class IngestFront:
    """The ingest handlers of a namespace, for the API's ingest routes."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self._handles: list = []
        self._read = 0.0
        self._turn = itertools.count()

    async def _current(self, again: bool = False) -> list:
        if again or not self._handles or time.monotonic() - self._read > NAMES_EVERY_S:
            self._read = time.monotonic()
            names = await asyncio.to_thread(_handler_names, self.namespace)
            handles = []
            for name in names:
                try:
                    handles.append(ray.get_actor(name, namespace=self.namespace))
                except ValueError:  # stopped meanwhile
                    continue
            self._handles = handles
        if not self._handles:
            raise NotStarted("no ingest handler runs (yet); retry")
        return self._handles

    async def handle(self, request: HttpRequest) -> HttpAnswer:
        """The handler's answer; `Unavailable` when the handler is gone or restarting (the
        next request reads the list again and goes to another)."""
        handles = await self._current()
        handler = handles[next(self._turn) % len(handles)]
        try:
            return await handler.http_ingest.remote(request)
        except Exception as exc:
            engine = mapped(exc)
            if isinstance(engine, Unavailable):
                self._handles = []
            if engine is exc:
                raise
            raise engine from exc
