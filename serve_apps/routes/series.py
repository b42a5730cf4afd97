"""Time series of a place: counts per bucket of a step, aligned to a time zone's wall clock
(engine/series.py; docs/semantics.md, *Series*). Polygon spaces and cells come from history's
presence pieces, door spaces from their crossings (space shards, history before their
horizon)."""

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import ORJSONResponse

from engine.cells import check_res, parse_cell, resolution, to_str
from engine.series import MAX_VALUES, STEPS, edges, shown, zone
from serve_apps import params
from serve_apps.context import Api
from serve_apps.errors import ApiError, bad, within
from serve_apps.models import Series, ok
from serve_apps.params import CELL_SCHEMA, time_query
from serve_apps.policy import ADMIN, READ_ROLES

router = APIRouter()

FROM = time_query(alias="from", description="a time in the first bucket", example="2026-01-01")
TO = time_query(description="the period's end (excluded), after `from`", example="2026-01-31")


@router.get("/v1/series", responses=ok(Series, 404, 504))
async def series(
    request: Request,
    api: Api,
    from_: str = FROM,
    to: str = TO,
    step: Literal["1m", "5m", "15m", "1h", "1d"] = Query(description="the buckets' length"),
    space: str | None = Query(None, description="a space's id (or give `cell`)"),
    cell: str | None = Query(
        None, description="an H3 cell (hex), in place of `space`", json_schema_extra=CELL_SCHEMA
    ),
    by: str | None = Query(
        None,
        description="`attr.K`: a series per value of ping attribute K, each device under the "
        "value of its latest applied ping in the bucket (admins, while the floor is on)",
        pattern="^attr\\..{1,64}$",
    ),
    tz: str = Query(
        "UTC",
        description="the IANA time zone buckets align to (`Area/City`)",
        json_schema_extra={"format": "iana-tz", "maxLength": 64, "examples": ["Europe/Dublin"]},
    ),
):
    """Counts of a polygon space or a cell per bucket (distinct devices present at some
    instant of it), or of a door space (its count at the bucket's end, with the bucket's
    entries and exits); `step=1d` is daily footfall. At most 5,000 buckets, and 100 values
    with `by`."""
    role = api.role(request, READ_ROLES)
    t0, t1 = params.period(from_, to)
    if (space is None) == (cell is None):
        raise ApiError(400, "bad_place", "give exactly one of space and cell")
    with bad("bad_tz"):
        where = zone(tz)
    with bad("too_many_points"):
        cuts = edges(t0, t1, STEPS[step], where)
    if by is not None:
        if not by.startswith("attr.") or not 1 <= len(by) - 5 <= 64:
            raise ApiError(400, "bad_by", "by is attr.K, K of 1 to 64 characters")
        if api.floor.k(role):
            api.role(request, ADMIN)  # split counts are not released under the floor
    now = params.now()
    cuts = cuts[: shown(cuts, now) + 1]
    end = min(cuts[-1], now + 1)
    body: dict = {"step": step, "tz": tz}
    if space is not None:
        kind = api.definitions.kind(space)
        if kind is None:  # a deleted space has a series for periods from before its deletion
            kind = (api.definitions.deleted(space, cuts[0]) or {}).get("kind")
        if kind is None:
            raise ApiError(404, "unknown_space", f"no space {space!r}")
        body |= {"space": space, "kind": kind}
        place: str | int = space
    else:
        with bad("bad_cell"):
            place = parse_cell(cell or "")
            check_res(resolution(place), api.spec.res)
        kind = "cell"
        body |= {"cell": to_str(place), "kind": kind}
    if len(cuts) < 2:  # the period starts after now
        return ORJSONResponse(body | ({"by": by, "series": []} if by else {"points": []}))
    if kind == "door":
        if by is not None:
            raise ApiError(400, "bad_by", "a door space counts crossings, not devices: no `by`")
        found = await within(api.queries.door_series(space, cuts, now))
        floor = api.floor.count
        body["points"] = [
            {"t": t, "count": floor(p.count, role), "in": floor(p.entered, role),
             "out": floor(p.left, role)}
            for t, p in zip(cuts, found, strict=False)
        ]  # fmt: skip
        return ORJSONResponse(body)
    k = api.floor.k(role) if kind == "cell" else 0
    since = cuts[0] - api.spec.ttl_ms
    key = by[5:] if by is not None else None
    call = api.history.series(place, api.spec.res, cuts, end, key, since, k)
    counts = await api.from_history(request, call)
    if by is None:
        values = counts.get(None, [0] * (len(cuts) - 1))
        body["points"] = _points(api, cuts, values, role, floored=kind != "cell")
        return ORJSONResponse(body)
    if len(counts) > MAX_VALUES:
        raise ApiError(400, "too_many_points", f"more than {MAX_VALUES} values of {by}")
    ordered = sorted(counts.items(), key=lambda x: (x[0] is None, x[0] or ""))
    body |= {
        "by": by,
        "series": [
            {"value": v, "points": _points(api, cuts, c, role, floored=True)} for v, c in ordered
        ],
    }
    return ORJSONResponse(body)


def _points(api, cuts: list[int], counts: list[int], role: str, floored: bool) -> list[dict]:
    """`[{"t", "count"}]`; `floored`: a count under the floor reads 0 for viewers (a cell's
    counts come released already)."""
    show = api.floor.count if floored else (lambda n, _: n)
    return [{"t": t, "count": show(n, role)} for t, n in zip(cuts, counts, strict=False)]
