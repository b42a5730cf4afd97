"""Every Redis client of the engine, with bounded timeouts.

redis-py's defaults wait forever on a stalled server (no socket timeout) and retry a refused
connection ten times with backoff: a dead or paused Redis froze shard event loops or held an
ingest call for seconds. Here a command fails within `COMMAND_TIMEOUT_S`, a connection attempt
within `CONNECT_TIMEOUT_S`, and a broken connection is retried once, at once, on a new one (what
a restarted server needs: every pooled connection to the old one is dead). A timeout is never
retried: the command may have run (an append to a log would be written twice).
"""

from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 3.0
HEALTH_CHECK_S = 15  # an idle pooled connection is checked with a PING before reuse


def _options(timeout_s: float, retry_class) -> dict:
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": timeout_s,
        "retry": retry_class(ExponentialBackoff(cap=0.1, base=0.02), 1, (RedisConnectionError,)),
        "health_check_interval": HEALTH_CHECK_S,
    }


def connect(url: str, timeout_s: float = COMMAND_TIMEOUT_S) -> redis.Redis:
    return redis.Redis.from_url(url, **_options(timeout_s, Retry))


def connect_async(url: str, timeout_s: float = COMMAND_TIMEOUT_S) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url, **_options(timeout_s, redis.asyncio.retry.Retry))


def redact(url: str) -> str:
    """`url` with its password (if any) shown as `***`, for logs and output."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
