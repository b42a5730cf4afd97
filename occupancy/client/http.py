"""The HTTP API's transport: the one place requests are sent and answers decoded, for the query
clients (sync over requests, asyncio over aiohttp) and through them the CLI. An error answer,
an answer that is not JSON, an engine that does not answer and TLS that fails each become one
ApiError with a one-line message."""

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import requests

from occupancy.client.errors import ApiError, Unreachable

TIMEOUT_S = 30.0


def query_params(params: dict[str, Any] | None) -> dict[str, str]:
    """Parameters as the API reads them: None left out, booleans as `true`/`false`."""
    out = {}
    for k, v in (params or {}).items():
        if v is None:
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def decoded(status: int, content_type: str | None, text: str, method: str, path: str) -> Any:
    """The JSON of an answer; ApiError for one that is not JSON (a proxy's error page, or not
    the engine's API at all)."""
    try:
        return orjson.loads(text)
    except ValueError:
        kind = content_type or "no content type"
        start = " ".join(text[:60].split())
        raise ApiError(
            f"{method} {path} answered {status} with {kind}, not JSON: {start!r}", status
        ) from None


def error(status: int, body: Any, retry_after: str | None) -> ApiError:
    """`code: message` from the error envelope ({"error": {"code", "message"}})."""
    err = body.get("error", {}) if isinstance(body, dict) else {}
    code = err.get("code")
    try:
        wait = float(retry_after) if retry_after is not None else None
    except ValueError:
        wait = None
    return ApiError(f"{code or status}: {err.get('message')}", status, code, wait)


def _trusted(verify: str | bool) -> str:
    return verify if isinstance(verify, str) else "the system's CAs"


class Transport:
    """Requests to one API base URL with one key, over a kept-alive session."""

    def __init__(self, url: str, key: str, verify: str | bool, timeout_s: float = TIMEOUT_S):
        self.url = url.rstrip("/")
        self.verify = verify
        self.headers = {"Authorization": f"Bearer {key}"}
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def request(
        self,
        method: str,
        path: str,
        *,
        params=None,
        json=None,
        timeout: float | None = None,
        answers: tuple[int, ...] = (),
    ) -> Any:
        """The decoded answer; ApiError for an error status (but those in `answers`, whose
        body is the answer) or an answer that is not JSON."""
        r = self._send(method, path, timeout, params=query_params(params), json=json)
        body = decoded(r.status_code, r.headers.get("content-type"), r.text, method, path)
        if r.status_code >= 400 and r.status_code not in answers:
            raise error(r.status_code, body, r.headers.get("retry-after"))
        return body

    @contextmanager
    def download(
        self, path: str, params: dict, timeout: float = 600, headers: dict | None = None
    ) -> Iterator:
        """A streamed answer (`requests.Response`, read with `iter_content`) once its status
        says it is not an error; closed on leaving."""
        r = self._send(
            "GET", path, timeout, params=query_params(params), stream=True, extra=headers
        )
        with r:
            if r.status_code >= 400:
                ct = r.headers.get("content-type")
                body = decoded(r.status_code, ct, r.text, "GET", path)
                raise error(r.status_code, body, r.headers.get("retry-after"))
            yield r

    def chunks(self, path: str, params: dict, headers: dict, read_s: float) -> Iterator[bytes]:
        """An answer's bytes as they come (a stream: `read_s` the longest silence); ApiError
        for an error status, Unreachable when the connection breaks. Closed when left."""
        with self.download(path, params, read_s, headers) as r:
            try:
                yield from r.iter_content(chunk_size=None)
            except requests.RequestException as exc:
                raise Unreachable(f"GET {path} broke off: {exc}") from None

    def close(self) -> None:
        self._session.close()

    def _send(
        self, method: str, path: str, timeout: float | None, extra: dict | None = None, **kwargs
    ) -> requests.Response:
        timeout = self.timeout_s if timeout is None else timeout
        headers = self.headers | (extra or {})
        try:
            return self._session.request(
                method, self.url + path, headers=headers, verify=self.verify,
                timeout=timeout, **kwargs,
            )  # fmt: skip
        except requests.exceptions.SSLError:  # a ConnectionError too, but the engine runs
            raise ApiError(
                f"TLS with {self.url} failed trusting {_trusted(self.verify)}; "
                "OCC_TLS_CA names another CA"
            ) from None
        except requests.ConnectionError:
            raise Unreachable(f"cannot reach {self.url}; is `occupancy up` running?") from None
        except requests.Timeout:
            raise ApiError(
                f"{self.url} did not answer {method} {path} within {timeout:g} s"
            ) from None


class AsyncTransport:
    """Transport for asyncio (aiohttp); its session is made in the loop of the first call."""

    def __init__(self, url: str, key: str, verify: str | bool, timeout_s: float = TIMEOUT_S):
        self.url = url.rstrip("/")
        self.verify = verify
        self.headers = {"Authorization": f"Bearer {key}"}
        self.timeout_s = timeout_s
        self._session = None  # an aiohttp.ClientSession

    def _ssl(self) -> ssl.SSLContext | bool:
        if isinstance(self.verify, str):
            return ssl.create_default_context(cafile=self.verify)
        return True

    async def request(
        self,
        method: str,
        path: str,
        *,
        params=None,
        json=None,
        timeout: float | None = None,
        answers: tuple[int, ...] = (),
    ) -> Any:
        """As Transport.request."""
        status, headers, text = await self._send(method, path, timeout, query_params(params), json)
        body = decoded(status, headers.get("content-type"), text, method, path)
        if status >= 400 and status not in answers:
            raise error(status, body, headers.get("retry-after"))
        return body

    async def download(self, path: str, params: dict, timeout: float = 600) -> bytes:
        """The whole answer's bytes."""
        status, headers, data = await self._send(
            "GET", path, timeout, query_params(params), None, raw=True
        )
        if status >= 400:
            text = data.decode(errors="replace")
            body = decoded(status, headers.get("content-type"), text, "GET", path)
            raise error(status, body, headers.get("retry-after"))
        return data

    async def chunks(
        self, path: str, params: dict, headers: dict, read_s: float
    ) -> AsyncIterator[bytes]:
        """As Transport.chunks."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self.headers)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s, sock_read=read_s)
        try:
            async with self._session.get(
                self.url + path, params=query_params(params), headers=headers, ssl=self._ssl(),
                timeout=timeout,
            ) as r:  # fmt: skip
                if r.status >= 400:
                    body = decoded(r.status, r.content_type, await r.text(), "GET", path)
                    raise error(r.status, body, r.headers.get("retry-after"))
                async for chunk in r.content.iter_any():
                    yield chunk
        except aiohttp.ClientSSLError:
            raise ApiError(
                f"TLS with {self.url} failed trusting {_trusted(self.verify)}; "
                "OCC_TLS_CA names another CA"
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(f"GET {path} broke off: {exc!r}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send(self, method, path, timeout, params, json, raw: bool = False):
        import aiohttp  # only where asyncio is used: a sync client does not load it

        timeout = self.timeout_s if timeout is None else timeout
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self.headers)
        try:
            async with self._session.request(
                method, self.url + path, params=params, json=json, ssl=self._ssl(),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as r:  # fmt: skip
                content = await r.read() if raw else await r.text()
                return r.status, r.headers, content
        except aiohttp.ClientSSLError:
            raise ApiError(
                f"TLS with {self.url} failed trusting {_trusted(self.verify)}; "
                "OCC_TLS_CA names another CA"
            ) from None
        except aiohttp.ClientConnectionError:
            raise Unreachable(f"cannot reach {self.url}; is `occupancy up` running?") from None
        except TimeoutError:
            raise ApiError(
                f"{self.url} did not answer {method} {path} within {timeout:g} s"
            ) from None
