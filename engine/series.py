"""Time series: buckets aligned to a time zone, and a door space's series from its crossings.

A series cuts time into buckets of a step (a minute to a day) aligned to the wall clock of an
IANA time zone. A bucket's edges are instants: for steps under a day, every instant whose wall
time there is a whole multiple of the step after midnight (an hour that repeats when clocks go
back has both its instants; one skipped when they go forward has none); for a day, the first
instant of each local date (so a day lasts 23 or 25 hours across a change of offset). Buckets
are half-open `[e_i, e_i+1)`. The SQL of history reads them as `segments`: runs of equally
spaced edges, which turn a time into its bucket with a few comparisons.
"""

import bisect
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.timeutil import DAY_MS, MINUTE_MS

STEPS = {
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "1d": DAY_MS,
}
MAX_BUCKETS = 5_000  # points of one series
MAX_VALUES = 100  # series of a `by=` answer

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_SLACK = timedelta(hours=26)  # more than any change of offset, on either side of the period
_FIRST = datetime(1, 1, 2)  # wall times this close to datetime's ends are not converted
_LAST = datetime(9999, 12, 30)


class Segment(NamedTuple):
    """Buckets `first .. first + count - 1`, starting at `start`, each `width` ms long."""

    start: int
    width: int
    first: int
    count: int


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name` ("UTC", "Europe/Dublin"); ValueError for an unknown one."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"{name[:64]!r} is not an IANA time zone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name[:64]!r} is not an IANA time zone (Area/City, or UTC)") from None


def step_ms(step: str) -> int:
    if step not in STEPS:
        raise ValueError(f"step must be one of {', '.join(STEPS)}")
    return STEPS[step]


def _ms(dt: datetime) -> int:
    return (dt - _EPOCH) // _MS


def _wall(ms: int, tz: ZoneInfo) -> datetime:
    """The naive wall time at instant `ms` in `tz`."""
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz).replace(tzinfo=None)


def _instants(wall: datetime, tz: ZoneInfo, day: bool) -> set[int]:
    """The instants whose wall time in `tz` is `wall`: none in a gap, two in a fold; for a day's
    start, the first instant of its date (a midnight in a gap starts at the gap's end)."""
    if day:
        return {_ms(wall.replace(tzinfo=tz, fold=0))}
    out = set()
    for fold in (0, 1):
        ms = _ms(wall.replace(tzinfo=tz, fold=fold))
        if _wall(ms, tz) == wall:
            out.add(ms)
    return out


def edges(start: int, end: int, step: int, tz: ZoneInfo) -> list[int]:
    """The bucket edges covering `[start, end)` (`start < end`): the first at or before
    `start`, the last at or after `end`. ValueError beyond MAX_BUCKETS buckets or outside
    the years datetime can hold."""
    if end <= start:
        raise ValueError("`to` must be after `from`")
    if (end - start) // step > 2 * MAX_BUCKETS:  # checked exactly below; this bounds the work
        raise ValueError(f"more than {MAX_BUCKETS} buckets: a longer step or a shorter period")
    if tz.key == "UTC":  # the common case, in arithmetic
        first = start - start % step
        last = end + (-end % step)
        out = list(range(first, last + 1, step))
    else:
        out = _zoned_edges(start, end, step, tz)
    if len(out) - 1 > MAX_BUCKETS:
        raise ValueError(f"more than {MAX_BUCKETS} buckets: a longer step or a shorter period")
    return out


def _zoned_edges(start: int, end: int, step: int, tz: ZoneInfo) -> list[int]:
    try:
        lo, hi = _wall(start, tz) - _SLACK, _wall(end, tz) + _SLACK
    except (OverflowError, ValueError):
        raise ValueError("that period is beyond what time zones are known for") from None
    if lo < _FIRST or hi > _LAST:
        raise ValueError("time zones are applied to the years 1 to 9999 only")
    day = step == DAY_MS
    if day:
        wall = lo.replace(hour=0, minute=0, second=0, microsecond=0)
        stride = timedelta(days=1)
    else:
        midnight = lo.replace(hour=0, minute=0, second=0, microsecond=0)
        wall = midnight + (lo - midnight) // timedelta(milliseconds=step) * timedelta(
            milliseconds=step
        )
        stride = timedelta(milliseconds=step)
    found: set[int] = set()
    while wall <= hi:
        found |= _instants(wall, tz, day)
        nxt = wall + stride
        if not day and nxt.date() != wall.date():  # every day's wall times start at midnight
            nxt = min(nxt, datetime.combine(nxt.date(), datetime.min.time()))
        wall = nxt
    instants = sorted(found)
    i = bisect.bisect_right(instants, start) - 1
    j = bisect.bisect_left(instants, end)
    return instants[i : j + 1]


def segments(edges: Sequence[int]) -> list[Segment]:
    """Runs of equally spaced edges (one for UTC; a few more across changes of offset)."""
    out: list[Segment] = []
    for i in range(len(edges) - 1):
        width = edges[i + 1] - edges[i]
        if out and out[-1].width == width:
            last = out[-1]
            out[-1] = last._replace(count=last.count + 1)
        else:
            out.append(Segment(edges[i], width, i, 1))
    return out


def bucket_of(t: int, edges: Sequence[int]) -> int:
    """The index of the bucket holding `t` (edges[0] <= t < edges[-1])."""
    return bisect.bisect_right(edges, t) - 1


def bucket_sql(column: str, parts: Sequence[Segment]) -> str:
    """SQL for the bucket index of `column` (an Int64 within the edges), from `segments`: its
    numbers are the engine's own integers, never a caller's text."""
    terms = [f"{int(s.first)} + intDiv({column} - {int(s.start)}, {int(s.width)})" for s in parts]
    if len(terms) == 1:
        return terms[0]
    args = []
    for s, term in zip(parts[1:], terms, strict=False):
        args += [f"{column} < {int(s.start)}", term]
    return f"multiIf({', '.join(args)}, {terms[-1]})"


def shown(edges: Sequence[int], now: int) -> int:
    """How many buckets a series shows: those that start at or before `now`."""
    return bisect.bisect_right(edges, now, hi=len(edges) - 1)


# -- door spaces --------------------------------------------------------------------------------


class DoorPoint(NamedTuple):
    count: int  # at the bucket's end (its last instant, or now)
    entered: int  # crossings into the space during the bucket
    left: int  # crossings out of it


def door_series(
    edges: Sequence[int],
    now: int,
    base: int,
    crossings: Iterable[tuple[int, int]],
    resets: Iterable[int],
) -> list[DoorPoint]:
    """A door space's points for the buckets that start at or before `now`.

    `base` is the space's sum of signed crossings at `edges[0] - 1` since its last reset
    (unclamped); `crossings` are its signed crossings (ts, ±1) from `edges[0]` on, in any
    order; `resets` its reset times. A bucket's count is Count(space, min(end - 1, now)):
    the crossings since the latest reset up to then, clamped at 0 only at the end; its
    entries and exits are the crossings of the bucket up to `now`, whatever the resets.
    """
    n = shown(edges, now)
    events = sorted((ts, signed) for ts, signed in crossings if edges[0] <= ts <= now)
    cuts = sorted(r for r in resets if edges[0] <= r <= now)
    out, total, e, c = [], base, 0, 0
    for i in range(n):
        until = min(edges[i + 1] - 1, now)
        entered = left = 0
        while e < len(events) and events[e][0] <= until:
            ts, signed = events[e]
            while c < len(cuts) and cuts[c] <= ts:  # a reset at ts counts the event at ts
                total, c = 0, c + 1
            total += signed
            entered += signed > 0
            left += signed < 0
            e += 1
        while c < len(cuts) and cuts[c] <= until:
            total, c = 0, c + 1
        out.append(DoorPoint(max(0, total), entered, left))
    return out
