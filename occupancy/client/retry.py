"""When a gRPC ingest call is tried again: on UNAVAILABLE (a shard restarting, Redis away, the
engine not up yet) and RESOURCE_EXHAUSTED (overload, a rate limit), after an exponentially
growing wait with jitter, or after what the server asked for if it asked for longer (the
engine sets `retry-after`, in seconds, on a rate limit; `grpc-retry-pushback-ms` is gRPC's own
hint). Other statuses are final: retrying a refused credential or a malformed batch changes
nothing.

A batch retried after a failure may have been logged in part before it failed; the engine
takes a ping it already has as a late duplicate (docs/semantics.md), so counts do not change."""

import random
from dataclasses import dataclass

import grpc

from occupancy.client.errors import IngestError

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class Backoff:
    """Waits of `initial_s`, times `multiplier` per attempt up to `max_s`, each shortened by up
    to `jitter` of itself at random (so that many clients do not retry in step); at most
    `attempts` calls in all (the first included)."""

    initial_s: float = 0.1
    multiplier: float = 2.0
    max_s: float = 10.0
    jitter: float = 0.5
    attempts: int = 12

    def __post_init__(self):
        if self.attempts < 1 or self.initial_s < 0 or self.max_s < 0 or self.multiplier < 1:
            raise ValueError("attempts >= 1, initial_s >= 0, max_s >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a share, from 0 to 1")

    def wait_s(self, retry: int, hint_s: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 for the first), at least `hint_s`."""
        base = min(self.max_s, self.initial_s * self.multiplier ** (retry - 1))
        wait = base * (1 - self.jitter * random.random())
        return max(wait, hint_s or 0.0)


def retryable(exc: grpc.RpcError) -> bool:
    return exc.code() in RETRYABLE


def hint_s(exc: grpc.RpcError) -> float | None:
    """The wait the server asked for in the call's trailing metadata, in seconds (None: none)."""
    try:
        metadata = exc.trailing_metadata() or ()
    except Exception:  # an error raised before the call had metadata
        return None
    for key, value in metadata:
        try:
            if key == "retry-after":
                return max(0.0, float(value))
            if key == "grpc-retry-pushback-ms":
                return max(0.0, int(value) / 1000)
        except (TypeError, ValueError):
            continue
    return None


def final(exc: grpc.RpcError, retry: int, backoff: Backoff, what: str, items: list):
    """The IngestError to raise for this failure of attempt `retry` (1 for the first), or None
    while it is worth retrying."""
    again = retryable(exc)
    if again and retry < backoff.attempts:
        return None
    tried = f" (after {retry} attempts)" if again else ""
    return IngestError(f"{what}: {exc.code().name}: {exc.details()}{tried}", exc.code(), items)


DEFAULT_BACKOFF = Backoff()
