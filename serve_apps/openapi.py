"""The OpenAPI document at `/openapi.json` (and `/docs`): what FastAPI derives from the routes,
with what it cannot know: the bearer key, the error envelope in place of FastAPI's 422, and the
highest resolution the engine answers."""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from serve_apps.guard import checked
from serve_apps.models import FeatureCollection

BEARER = "bearer"
EXTRA_MODELS = (FeatureCollection,)  # named by a media type of their own (application/geo+json)
H3_MAX_RES = 15


def install(app: FastAPI, base_res: Callable[[], int | None]) -> None:
    """Serve the document below, made once; `base_res()`: the engine's resolution (None:
    unknown here), the highest a `res` parameter may ask for."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app, base_res())
        return app.openapi_schema

    app.openapi = document


def describe(app: FastAPI, base_res: int | None) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {})
    components["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key (`occupancy keys create`); roles: viewer, admin",
        }
    }
    _, defs = models_json_schema(
        [(m, "serialization") for m in EXTRA_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    schemas = components.setdefault("schemas", {})
    schemas.update(defs.get("$defs", {}))
    for name in ("HTTPValidationError", "ValidationError"):  # the API answers 400, never 422
        schemas.pop(name, None)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            operation["responses"].pop("422", None)
            if checked(path):
                operation["security"] = [{BEARER: []}]
            for parameter in operation.get("parameters", ()):
                parameter["schema"] = _parameter_schema(parameter, base_res)
    return schema


def _parameter_schema(parameter: dict, base_res: int | None) -> dict:
    """A query parameter is given or left out, never null: the `null` FastAPI writes for an
    optional one goes. `res` is bounded by the engine's resolution."""
    schema = dict(parameter["schema"])
    branches = schema.pop("anyOf", None)
    if branches is not None:
        kept = [b for b in branches if b.get("type") != "null"]
        if len(kept) == 1:
            schema = {**kept[0], **schema}
        else:
            schema["anyOf"] = kept
    if parameter["name"] == "res" and schema.get("type") == "integer":
        schema.update(minimum=0, maximum=H3_MAX_RES if base_res is None else base_res)
    return schema
