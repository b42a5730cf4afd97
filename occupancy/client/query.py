"""`QueryClient` and `AsyncQueryClient`: the HTTP API's query, history, definition and operator
routes as methods with typed answers (occupancy/client/results.py).

    with QueryClient() as api:                       # OCC_API_KEY, OCC_HTTP_PORT, OCC_TLS_CA
        for c in api.top(n=5).cells:
            print(c.cell, c.count)

    async with AsyncQueryClient() as api:
        print((await api.space("mall-food-court")).count)

Each method of AsyncQueryClient is the same as QueryClient's and returns an awaitable of the
same answer. Errors are ApiError (`status`, `code`, `retry_after`), Unreachable when nothing
answers. Times are ms since the epoch, ISO 8601 text or datetimes; `attrs` filters by ping
attributes (`attr.K=V`). Routes without a method here: `get`, `post`, `delete` (decoded JSON).

    for counts in api.stream(spaces=["hq"], limit=3):    # live push (Server-Sent Events)
        print(counts.as_of, counts.spaces["hq"])
"""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from typing import Any

from occupancy.client import config
from occupancy.client import results as r
from occupancy.client.endpoints import Endpoints, Time, answers_of, period
from occupancy.client.errors import ApiError
from occupancy.client.http import TIMEOUT_S, AsyncTransport, Transport
from occupancy.client.sse import Counts, Stream, StreamError
from occupancy.settings import Settings

STREAM = "/v1/stream"
# the longest silence on a stream before it counts as broken: the engine's heartbeat comes
# every OCC_STREAM_HEARTBEAT_S (15 s unless set)
STREAM_READ_S = 60.0


class QueryClient(Endpoints):
    """The HTTP API over one kept-alive connection pool, with one key.

    `url` defaults to `http(s)://127.0.0.1:OCC_HTTP_PORT` (https while the data dir's engine
    runs with TLS), `key` to OCC_API_KEY or the data dir's admin key, `tls_ca` (a CA file, or
    True / "system") to OCC_TLS_CA or the CA the data dir's engine recorded
    (occupancy/client/config.py)."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        tls_ca: config.Trust = None,
        timeout_s: float = TIMEOUT_S,
        settings: Settings | None = None,
    ):
        s = config.settings(settings)
        base, verify = config.http_base(url, tls_ca, s)
        self.transport = Transport(base, config.key(key, config.API_KEY, s), verify, timeout_s)

    @property
    def url(self) -> str:
        return self.transport.url

    @property
    def verify(self) -> str | bool:
        return self.transport.verify

    @property
    def headers(self) -> dict[str, str]:
        return self.transport.headers

    def request(
        self, method: str, path: str, *, params=None, json=None, timeout=None, answers=()
    ) -> Any:
        """The decoded answer of any route; ApiError for an error status (but `answers`)."""
        return self.transport.request(
            method, path, params=params, json=json, timeout=timeout, answers=answers
        )

    def get(self, path: str, timeout: float | None = None, **params) -> Any:
        """GET `path`; parameters that are None are left out."""
        return self.request("GET", path, params=params, timeout=timeout)

    def post(self, path: str, body: dict, timeout: float | None = None) -> Any:
        return self.request("POST", path, json=body, timeout=timeout)

    def delete(self, path: str, timeout: float = 90) -> Any:
        return self.request("DELETE", path, timeout=timeout)

    def download(self, path: str, params: dict, timeout: float = 600):
        """A context manager of the streamed answer (`requests.Response`, `iter_content`)."""
        return self.transport.download(path, params, timeout)

    def export(self, what: str, from_: Time, to: Time, format: str = "parquet") -> bytes:
        """History rows of [from, to) as a file's bytes (`what`: pings, cells, spaces, dwell,
        doors; `format`: csv, json, parquet, arrow)."""
        params = {"what": what, **period(from_, to), "format": format}
        with self.download("/v1/export", params) as answer:
            return answer.content

    def stream(
        self,
        spaces: Sequence[str] = (),
        bbox: str | None = None,
        res: int | None = None,
        *,
        limit: int | None = None,
        last_event_id: str | None = None,
        read_timeout_s: float = STREAM_READ_S,
    ) -> Iterator[Counts]:
        """`GET /v1/stream`: each `counts` event as it comes (the current state at once, then
        one whenever a count changes), until `limit` of them or for ever. A connection that
        breaks or ends early is made again after the server's `retry:`, with `Last-Event-ID`;
        an `error` event raises StreamError, a 4xx ApiError, and so do five failed connections
        in a row."""
        state = Stream(spaces, bbox, res, limit, last_event_id)
        while not state.done:
            state.connected()
            failure = None
            try:
                path, params, headers = STREAM, state.params(), state.headers()
                for chunk in self.transport.chunks(path, params, headers, read_timeout_s):
                    yield from state.take(chunk)
                    if state.done:
                        return
            except StreamError:
                raise
            except ApiError as exc:
                failure = exc
            if not state.done:
                time.sleep(state.retry(failure))

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "QueryClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _call(self, method, path, cls, *, params=None, json=None, timeout=None):
        body = self.request(
            method, path, params=params, json=json, timeout=timeout, answers=answers_of(cls)
        )
        return r.decode(cls, body)


class AsyncQueryClient(Endpoints):
    """QueryClient for asyncio (aiohttp): the same arguments, defaults and methods, each
    returning an awaitable."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        tls_ca: config.Trust = None,
        timeout_s: float = TIMEOUT_S,
        settings: Settings | None = None,
    ):
        s = config.settings(settings)
        base, verify = config.http_base(url, tls_ca, s)
        self.transport = AsyncTransport(base, config.key(key, config.API_KEY, s), verify, timeout_s)

    @property
    def url(self) -> str:
        return self.transport.url

    async def request(
        self, method: str, path: str, *, params=None, json=None, timeout=None, answers=()
    ) -> Any:
        """As QueryClient.request."""
        return await self.transport.request(
            method, path, params=params, json=json, timeout=timeout, answers=answers
        )

    async def get(self, path: str, timeout: float | None = None, **params) -> Any:
        return await self.request("GET", path, params=params, timeout=timeout)

    async def post(self, path: str, body: dict, timeout: float | None = None) -> Any:
        return await self.request("POST", path, json=body, timeout=timeout)

    async def delete(self, path: str, timeout: float = 90) -> Any:
        return await self.request("DELETE", path, timeout=timeout)

    async def export(self, what: str, from_: Time, to: Time, format: str = "parquet") -> bytes:
        params = {"what": what, **period(from_, to), "format": format}
        return await self.transport.download("/v1/export", params)

    async def stream(
        self,
        spaces: Sequence[str] = (),
        bbox: str | None = None,
        res: int | None = None,
        *,
        limit: int | None = None,
        last_event_id: str | None = None,
        read_timeout_s: float = STREAM_READ_S,
    ) -> AsyncIterator[Counts]:
        """As QueryClient.stream, an async iterator (`contextlib.aclosing` ends its connection
        at once when left early)."""
        state = Stream(spaces, bbox, res, limit, last_event_id)
        while not state.done:
            state.connected()
            failure = None
            try:
                chunks = self.transport.chunks(
                    STREAM, state.params(), state.headers(), read_timeout_s
                )
                async with aclosing(chunks):
                    async for chunk in chunks:
                        for counts in state.take(chunk):
                            yield counts
                        if state.done:
                            return
            except StreamError:
                raise
            except ApiError as exc:
                failure = exc
            if not state.done:
                await asyncio.sleep(state.retry(failure))

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> "AsyncQueryClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def _call(self, method, path, cls, *, params=None, json=None, timeout=None):
        body = await self.request(
            method, path, params=params, json=json, timeout=timeout, answers=answers_of(cls)
        )
        return r.decode(cls, body)
