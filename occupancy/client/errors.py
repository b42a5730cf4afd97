"""What the client library raises: one base class, so that a caller can catch every failure of
the engine's API (HTTP or gRPC) in one clause and tell them apart by type."""


class ClientError(Exception):
    """A call to the engine failed; the message is one line for people."""


class ApiError(ClientError):
    """The HTTP API answered with an error (`status`, and `code` and `message` from its error
    envelope), with something that is not JSON, or not within its time. `retry_after` is the
    seconds its `Retry-After` header asked for (503s), else None."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class Unreachable(ApiError):
    """The HTTP API does not answer (the engine is not running there)."""


class IngestError(ClientError):
    """A gRPC ingest call failed for good: a status that retrying does not change
    (UNAUTHENTICATED, INVALID_ARGUMENT, ...), or UNAVAILABLE / RESOURCE_EXHAUSTED past the
    backoff's last attempt. `code` is the grpc.StatusCode, `items` the pings or door events of
    the batch that was not acked (none of them is known to be durable)."""

    def __init__(self, message: str, code, items: list):
        super().__init__(message)
        self.code = code
        self.items = items
