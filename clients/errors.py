"""What a call over the Ray boundary can raise, in the engine's terms.

The clients in this package turn Ray's and Redis's errors into these (and pass the engine's own,
such as `StaleLayout` or a history error, through unchanged), so that callers — the HTTP API,
the ingest core, history, a rebalance — catch engine errors and never Ray's.
"""

import ray
import redis


class Unavailable(Exception):
    """An actor is dead, restarting or not started yet: the call may be tried again."""


class NotStarted(Unavailable):
    """No actor has the name asked for: not started (yet), or stopped by a rebalance."""


class StateUnavailable(Unavailable):
    """Redis, where the engine's state lives, did not answer (here or in the actor called)."""


def mapped(exc: BaseException) -> BaseException:
    """The engine's form of an error raised by a call to an actor (or by looking one up).

    - the actor is dead, restarting or gone: `Unavailable`;
    - Redis did not answer, here or inside the actor: `StateUnavailable`;
    - the actor raised an exception of its own (`StaleLayout`, `HistoryUnavailable`,
      `ValueError`, an `Unavailable` of a call it made, ...): that exception itself, without
      Ray's wrapping;
    - anything else (a timeout, a cancellation, a bug here): unchanged.
    """
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause
        if isinstance(cause, ray.exceptions.RayTaskError | ray.exceptions.RayActorError):
            return mapped(cause)  # what the actor's own call to another one raised
        if isinstance(cause, redis.RedisError):
            return StateUnavailable(f"Redis did not answer a shard: {cause}")
        return cause if isinstance(cause, Exception) else exc
    if isinstance(exc, ray.exceptions.RayActorError):
        return Unavailable(f"an actor is restarting or gone ({type(exc).__name__}); retry")
    if isinstance(exc, redis.RedisError):
        return StateUnavailable(f"Redis did not answer: {exc}")
    if isinstance(exc, ray.exceptions.GetTimeoutError):
        return TimeoutError(str(exc))
    if isinstance(exc, ray.exceptions.RayError):  # an object lost with its node, say
        return Unavailable(f"{type(exc).__name__}: {exc}")
    return exc
