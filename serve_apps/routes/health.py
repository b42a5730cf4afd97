"""The health check (no key: load balancers ask it) and the Prometheus scrape."""

import asyncio
import time

import redis
from fastapi import APIRouter
from fastapi.responses import ORJSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from observability import telemetry
from serve_apps.context import Api
from serve_apps.guard import RETRY_AFTER_S
from serve_apps.params import now

router = APIRouter()


@router.get("/v1/health")
async def health(api: Api) -> ORJSONResponse:
    checks: dict[str, str] = {}
    try:
        api.redis.ping()
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        checks["redis"] = f"error: {exc}"
    stats = await api.queries.stats()
    for family, ok in stats.items():
        checks[family] = "ok" if ok else "unavailable"
    checks["clickhouse"], lag_s = history_health(await api.history_status())
    healthy = all(v in ("ok", "catching up") for v in checks.values())
    body = {"status": "ok" if healthy else "degraded", "checks": checks, "as_of": now()}
    return ORJSONResponse(
        {**body, "archive_lag_s": round(lag_s, 1)},
        status_code=200 if healthy else 503,
        headers=None if healthy else {"Retry-After": RETRY_AFTER_S},
    )


def history_health(status: dict) -> tuple[str, float]:
    """The store's check, and how far (s) history is behind the newest log entry. Writing
    a backlog back after an outage is lag, not an error: "catching up" is healthy."""
    if "error" in status:
        return "unavailable", 0.0
    lag_s = max(status["archive_lag_ms"].values(), default=0) / 1000
    if status["spill"]["oldest_ms"]:
        lag_s = max(lag_s, time.time() - status["spill"]["oldest_ms"] / 1000)
    if status["paused"]:
        return "paused", lag_s
    if status["last_error"]:
        return f"error: {status['last_error']}", lag_s
    return ("catching up" if status["catching_up"] else "ok"), lag_s


@router.get("/metrics", include_in_schema=False)
async def metrics(api: Api) -> Response:
    """Every engine process's metrics in Prometheus's text format (no per-device data, so
    no key: scrape it from inside the cluster's network)."""
    text = await asyncio.to_thread(telemetry.prometheus_text, api.redis)
    return Response(text, media_type=CONTENT_TYPE_PLAIN_0_0_4)
