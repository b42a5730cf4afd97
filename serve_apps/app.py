"""The API's FastAPI application: its routes, its error handlers and its middleware (no Ray)."""

import os

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from starlette.middleware.cors import CORSMiddleware

from serve_apps import context, errors, openapi, page
from serve_apps.audit import AuditTrail
from serve_apps.guard import Guard
from serve_apps.models import Health
from serve_apps.models import errors as error_answers
from serve_apps.routes import (
    admin,
    definitions,
    health,
    history,
    hooks,
    ingest,
    live,
    paths,
    series,
    stream,
)
from serve_apps.timing import QueryTiming

# what every route behind a key may answer besides its own
KEYED_ERRORS = error_answers(400, 401, 403, 500, 503)
BODY_ERRORS = error_answers(413)
HEALTH = {200: {"model": Health}, 503: {"model": Health, "description": "A check failed"}}


def cors_origins() -> list[str]:
    """The origins whose pages may call the API (`OCC_CORS_ORIGINS`, comma-separated; `*`: any);
    none by default."""
    return [o.strip() for o in os.environ.get("OCC_CORS_ORIGINS", "").split(",") if o.strip()]


def make_app(origins: list[str] | None = None) -> FastAPI:
    """The application; its routes take their replica's state from `context.context()`.
    `origins`: those of `cors_origins()` unless given."""
    app = FastAPI(
        title="occupancy",
        version="0.1.0",
        description="Live occupancy per H3 cell and named space; dwell per device.",
        default_response_class=ORJSONResponse,
    )
    app.include_router(page.router)
    app.include_router(health.router, responses=HEALTH)
    for routes in (admin, live, history, paths, series, stream):
        app.include_router(routes.router, responses=KEYED_ERRORS)
    # where the stream app's route prefix (/v1/stream) leaves the stream's path
    app.add_api_route("", stream.stream, methods=["GET"], include_in_schema=False)
    app.include_router(definitions.router, responses={**KEYED_ERRORS, **BODY_ERRORS})
    app.include_router(hooks.router, responses={**KEYED_ERRORS, **BODY_ERRORS})
    app.include_router(ingest.router, responses={**KEYED_ERRORS, **error_answers(503)})
    errors.install(app)
    openapi.install(app, base_res=lambda: (api := context.installed()) and api.spec.res)
    app.add_middleware(Guard)  # inside the timing and the audit: 401s and 413s are counted too
    app.add_middleware(AuditTrail)
    app.add_middleware(QueryTiming)
    origins = cors_origins() if origins is None else origins
    if origins:  # outermost: a preflight carries no key, and every answer needs the headers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "PUT", "POST", "DELETE"],
            allow_headers=["authorization", "content-type", "traceparent"],
            expose_headers=["retry-after", "location", "content-disposition"],
            max_age=600,
        )
    return app
