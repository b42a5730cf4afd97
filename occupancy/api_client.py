"""The engine's HTTP API as the CLI's commands reach it: the client library's QueryClient
(occupancy/client/), with the data dir's admin key as the default key and its failures as
click errors, so that every command reports an engine that does not answer, an error answer or
an answer that is not JSON in one line."""

from collections.abc import Iterator
from contextlib import contextmanager

import click

from occupancy import client
from occupancy.client import QueryClient
from occupancy.settings import Settings

TIMEOUT_S = 30.0


class ApiError(click.ClickException):
    """The API answered with an error (`code: message` from its error envelope), with something
    that is not JSON, or not within its time."""


class Unreachable(ApiError):
    """The API does not answer (the engine is not running there)."""


class ApiClient(QueryClient):
    """Calls to one engine's HTTP API with one key; answers are decoded JSON (or the typed
    answers of QueryClient's methods).

    The base URL defaults to this machine's `OCC_HTTP_PORT`, over https while the data dir's
    engine runs with TLS, trusting `OCC_TLS_CA` or else the CA its trust marker names
    (occupancy/tls.py). The key defaults to the data dir's bootstrap admin key."""

    def __init__(self, url: str | None, key: str | None, settings: Settings):
        if key is None:
            path = settings.data_dir / "admin.key"
            if not path.exists():
                raise click.ClickException(
                    "no --key given (or OCC_API_KEY) and no admin key in the data dir"
                )
            key = path.read_text().strip()
        super().__init__(url, key, settings=settings, timeout_s=TIMEOUT_S)

    def request(self, method: str, path: str, **kwargs):
        with _as_click():
            return super().request(method, path, **kwargs)

    @contextmanager
    def download(self, path: str, params: dict, timeout: float = 600) -> Iterator:
        with _as_click(), super().download(path, params, timeout) as answer:
            yield answer


@contextmanager
def _as_click() -> Iterator[None]:
    try:
        yield
    except client.Unreachable as exc:
        raise Unreachable(str(exc)) from None
    except client.ClientError as exc:
        raise ApiError(str(exc)) from None
