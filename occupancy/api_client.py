"""The engine's HTTP API as the CLI's commands reach it: one base URL, key, TLS trust, timeout
and way to fail, so that every command reports an engine that does not answer, an error answer
or an answer that is not JSON in one line."""

from collections.abc import Iterator
from contextlib import contextmanager

import click
import requests

from occupancy.settings import Settings
from occupancy.tls import local_scheme

TIMEOUT_S = 30.0


class ApiError(click.ClickException):
    """The API answered with an error (`code: message` from its error envelope), with something
    that is not JSON, or not within its time."""


class Unreachable(ApiError):
    """The API does not answer (the engine is not running there)."""


class ApiClient:
    """Calls to one engine's HTTP API with one key; answers are decoded JSON.

    The base URL defaults to this machine's `OCC_HTTP_PORT`, over https while the data dir's
    engine runs with TLS, trusting `OCC_TLS_CA` or else the CA its trust marker names
    (occupancy/tls.py). The key defaults to the data dir's bootstrap admin key."""

    def __init__(self, url: str | None, key: str | None, settings: Settings):
        scheme, self.verify = local_scheme(settings.data_dir, settings.tls_ca)
        self.url = (url or f"{scheme}://127.0.0.1:{settings.http_port}").rstrip("/")
        if key is None:
            path = settings.data_dir / "admin.key"
            if not path.exists():
                raise click.ClickException(
                    "no --key given (or OCC_API_KEY) and no admin key in the data dir"
                )
            key = path.read_text().strip()
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(self, path: str, timeout: float = TIMEOUT_S, **params) -> dict:
        """GET `path`; parameters that are None are left out."""
        params = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=params, timeout=timeout)

    def post(self, path: str, body: dict, timeout: float = TIMEOUT_S) -> dict:
        return self.request("POST", path, json=body, timeout=timeout)

    def delete(self, path: str, timeout: float = 90) -> dict:
        return self.request("DELETE", path, timeout=timeout)

    def request(
        self, method: str, path: str, *, params=None, json=None, timeout: float = TIMEOUT_S
    ) -> dict:
        """The decoded answer; ApiError for an error status or an answer that is not JSON."""
        r = self._send(method, path, params=params, json=json, timeout=timeout)
        body = _decoded(r, method, path)
        if r.status_code >= 400:
            raise _error(r.status_code, body)
        return body

    @contextmanager
    def download(self, path: str, params: dict, timeout: float = 600) -> Iterator:
        """A streamed answer (`requests.Response`, read with `iter_content`) once its status
        says it is not an error; closed on leaving."""
        r = self._send("GET", path, params=params, timeout=timeout, stream=True)
        with r:
            if r.status_code >= 400:
                raise _error(r.status_code, _decoded(r, "GET", path))
            yield r

    def _send(self, method: str, path: str, timeout: float, **kwargs) -> requests.Response:
        try:
            return requests.request(
                method,
                self.url + path,
                headers=self.headers,
                verify=self.verify,
                timeout=timeout,
                **kwargs,
            )
        except requests.exceptions.SSLError:  # a ConnectionError too, but the engine runs
            trusted = self.verify if isinstance(self.verify, str) else "the system's CAs"
            raise ApiError(
                f"TLS with {self.url} failed trusting {trusted}; OCC_TLS_CA names another CA"
            ) from None
        except requests.ConnectionError:
            raise Unreachable(f"cannot reach {self.url}; is `occupancy up` running?") from None
        except requests.Timeout:
            raise ApiError(
                f"{self.url} did not answer {method} {path} within {timeout:g} s"
            ) from None


def _decoded(r: requests.Response, method: str, path: str):
    try:
        return r.json()
    except ValueError:  # a proxy's error page, or not the engine's API at all
        kind = r.headers.get("content-type") or "no content type"
        start = " ".join(r.text[:60].split())
        raise ApiError(
            f"{method} {path} answered {r.status_code} with {kind}, not JSON: {start!r}"
        ) from None


def _error(status: int, body) -> ApiError:
    """`code: message` from the error envelope ({"error": {"code", "message"}})."""
    err = body.get("error", {}) if isinstance(body, dict) else {}
    return ApiError(f"{err.get('code', status)}: {err.get('message')}")
