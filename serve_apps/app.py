"""The API's FastAPI application: its routes, its error handlers and its middleware (no Ray)."""

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from serve_apps import errors, page
from serve_apps.audit import AuditTrail
from serve_apps.guard import Guard
from serve_apps.routes import admin, definitions, health, history, live
from serve_apps.timing import QueryTiming


def make_app() -> FastAPI:
    """The application; its routes take their replica's state from `context.context()`."""
    app = FastAPI(
        title="occupancy",
        version="0.1.0",
        description="Live occupancy per H3 cell and named space; dwell per device.",
        default_response_class=ORJSONResponse,
    )
    app.include_router(page.router)
    for routes in (health, admin, live, history, definitions):
        app.include_router(routes.router)
    errors.install(app)
    app.add_middleware(Guard)  # inside the timing and the audit: 401s and 413s are counted too
    app.add_middleware(AuditTrail)
    app.add_middleware(QueryTiming)
    return app
