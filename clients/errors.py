"""What a call over the Ray boundary can raise, in the engine's terms.

The clients in this package turn Ray's and Redis's errors into these (and pass the engine's own,
such as `StaleLayout` or a history error, through unchanged), so that callers — the HTTP API,
the ingest core, history, a rebalance — catch engine errors and never Ray's.
"""


class Unavailable(Exception):
    """An actor is dead, restarting or not started yet: the call may be tried again."""


class StateUnavailable(Unavailable):
    """Redis, where the engine's state lives, did not answer (here or in the actor called)."""
