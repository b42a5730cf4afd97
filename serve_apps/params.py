"""Request parameters in the engine's terms; each malformed one is a 400 with its own code."""

import time

from fastapi import Request
from fastapi.responses import Response

from engine.cells import check_res
from engine.geo import BBox
from engine.spec import EngineSpec
from engine.timeutil import parse_time
from serve_apps.audit import note
from serve_apps.errors import ApiError, bad


def now() -> int:
    return int(time.time() * 1000)


def res(value: int | None, spec: EngineSpec) -> int:
    """The resolution asked for (the engine's own by default)."""
    with bad("bad_resolution"):
        return check_res(spec.res if value is None else value, spec.res)


def bbox(value: str | None) -> BBox | None:
    if value is None:
        return None
    with bad("bad_bbox"):
        return BBox.parse(value)


def at(value: str | None) -> int | None:
    """The time of an `at=` answer (None: live): the minute aggregate of its minute."""
    if value is None:
        return None
    with bad("bad_time"):
        return parse_time(value)


def period(start: str, end: str) -> tuple[int, int]:
    with bad("bad_time"):
        t0, t1 = parse_time(start), parse_time(end)
    if t1 <= t0:
        raise ApiError(400, "bad_time", "`to` must be after `from`")
    return t0, t1


def attrs(request: Request) -> dict[str, str]:
    """The ping attribute filters `attr.K=V` of the query string."""
    found = {k[5:]: v for k, v in request.query_params.items() if k.startswith("attr.")}
    if len(found) > 16 or any(not k or len(k) > 64 or len(v) > 256 for k, v in found.items()):
        raise ApiError(400, "bad_attribute", "up to 16 attr.K=V filters, K ≤ 64, V ≤ 256")
    return found


def check_id(value: str) -> None:
    """A space's or doorway's id, as a path segment can carry it."""
    if not value or len(value.encode()) > 200 or any(c in value for c in "/?#"):
        raise ApiError(400, "bad_id", "ids are 1 to 200 bytes without / ? #")


def note_params(request: Request, **params) -> None:
    """Parameters of a request's body for its audit record (those given)."""
    given = {k: v for k, v in params.items() if v is not None}
    note(request).setdefault("params", {}).update(given)


def json_bytes(body: bytes) -> Response:
    """A body serialized already (FastAPI would otherwise walk a returned dict item by item)."""
    return Response(body, media_type="application/json")
