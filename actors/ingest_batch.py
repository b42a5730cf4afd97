"""A batch of `Ping` messages read as columns: valid pings into a `PingRecord`, the rest rejected
with their reasons, the checks made on whole columns at once."""

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from engine.record import PingRecord
from engine.validation import Limits, Reason, check_message, valid_columns
from protos.occupancy.v1 import occupancy_pb2 as pb

_REQUIRED = attrgetter("device_id", "ts_ms", "lat", "lng", "accuracy_m")
_CHECKED = {"accuracy_m"}  # the optional attributes `valid_columns` checks


class Batch(NamedTuple):
    """One call's valid pings (their cells still to be indexed), its rejections, and the ids
    whose keys the cache did not have (raw id -> positions in `pings`, whose key is 0 so far)."""

    pings: PingRecord
    rejections: list
    missing: dict[str, list[int]]


def read_batch(
    messages: Sequence,
    device: str | None,
    base: int,
    now: int,
    limits: Limits,
    cached: Callable[[str, int], int | None],
) -> Batch:
    """`messages` may hold None for messages that did not parse ("malformed"); rejection
    indexes are `base` + the position in `messages`. `device`: the only id the caller may send
    for (a device token), or None. `cached(id, now)`: the id's key if known here.

    An optional attribute is read from the message field of its name, for the pings that
    carry it (they are checked one by one, as are the pings the column checks refuse)."""
    reasons: dict[int, str] = {}
    at: Sequence[int] = range(base, base + len(messages))
    if any(m is None for m in messages):
        reasons = {base + i: "malformed" for i, m in enumerate(messages) if m is None}
        at = [base + i for i, m in enumerate(messages) if m is not None]
        messages = [m for m in messages if m is not None]
    if messages:
        ids, ts, lats, lngs, accuracy = zip(*map(_REQUIRED, messages), strict=True)
    else:
        ids = ts = lats = lngs = accuracy = ()
    columns = [ids, ts, lats, lngs, accuracy]
    optional = {c.name: [getattr(m, c.name) for m in messages] for c in PingRecord().optional()}
    return _checked(
        columns, optional, messages.__getitem__, at, reasons, device, now, limits, cached
    )


def read_columns(
    request: pb.SendPingColumnsRequest,
    device: str | None,
    now: int,
    limits: Limits,
    cached: Callable[[str, int], int | None],
) -> Batch:
    """`read_batch` of a `SendPingColumnsRequest` (ValueError: columns of different lengths).
    Only the pings the column checks refuse become messages, for the one-by-one check."""
    if problem := column_lengths(request):
        raise ValueError(problem)
    ids = list(request.device_ids)
    n = len(ids)
    ts, lats, lngs = list(request.ts_ms), list(request.lat), list(request.lng)
    accuracy, region = list(request.accuracy_m), list(request.region)
    accuracy = accuracy or [0.0] * n
    given = {"accuracy_m": accuracy, "region": region or [""] * n}
    optional = {c.name: given.get(c.name) or [None] * n for c in PingRecord().optional()}

    def message(k: int) -> pb.Ping:
        return pb.Ping(
            device_id=ids[k],
            ts_ms=ts[k],
            lat=lats[k],
            lng=lngs[k],
            accuracy_m=accuracy[k],
            region=given["region"][k],
        )

    columns = [ids, ts, lats, lngs, accuracy]
    return _checked(columns, optional, message, range(n), {}, device, now, limits, cached)


def column_lengths(request: pb.SendPingColumnsRequest) -> str | None:
    """What is wrong with the lengths of the request's columns, if anything."""
    n = len(request.device_ids)
    for name in ("ts_ms", "lat", "lng"):
        if len(getattr(request, name)) != n:
            return f"{len(getattr(request, name))} {name} for {n} device_ids: one a ping"
    for name in ("accuracy_m", "region"):
        if len(getattr(request, name)) not in (0, n):
            return f"{len(getattr(request, name))} {name} for {n} device_ids: none, or one a ping"
    return None


def _checked(
    columns: list[Sequence],
    optional: dict[str, list],
    message: Callable[[int], object],
    at: Sequence[int],
    reasons: dict[int, str],
    device: str | None,
    now: int,
    limits: Limits,
    cached: Callable[[str, int], int | None],
) -> Batch:
    """The pings of `columns` (ids, ts, lats, lngs, accuracy) checked: the column checks, the
    one-by-one check of `message(k)` for those they refuse and those carrying what they do not
    check, the device token's id. `at[k]`: ping k's index in the call; `reasons`: rejections
    so far, by that index."""
    ids, ts, lats, lngs, accuracy = columns
    record = PingRecord()
    ok = valid_columns(ids, ts, lats, lngs, accuracy, now, limits)
    # what the columns did not check (region, attributes), for the few pings that carry it
    carried = [
        k
        for name, values in optional.items()
        if name not in _CHECKED
        for k, v in enumerate(values)
        if v
    ]
    for k in (*np.flatnonzero(~ok).tolist(), *carried):  # the one-by-one check has the last word
        reason = check_message(message(k), now, limits)
        ok[k] = reason is None
        if reason is not None:
            reasons[at[k]] = str(reason)
    if device is not None:
        for k in np.flatnonzero(ok).tolist():
            if ids[k] != device:
                reasons[at[k]] = str(Reason.NOT_AUTHORIZED_FOR_DEVICE)
                ok[k] = False
    kept = np.flatnonzero(ok).tolist()
    if len(kept) < len(ids):
        ids, ts, lats, lngs = ([column[k] for k in kept] for column in (ids, ts, lats, lngs))
        optional = {name: [values[k] for k in kept] for name, values in optional.items()}
    record.ts, record.lat, record.lng = list(ts), list(lats), list(lngs)
    for c in record.optional():
        cast = type(c.default)
        setattr(record, c.name, {k: cast(v) for k, v in enumerate(optional[c.name]) if v})
    record.dev = keys = [cached(i, now) for i in ids]
    missing: dict[str, list[int]] = {}
    if None in keys:
        for k, key in enumerate(keys):
            if key is None:
                missing.setdefault(ids[k], []).append(k)
                keys[k] = 0
    rejections = [pb.Rejection(index=i, reason=reasons[i]) for i in sorted(reasons)]
    return Batch(record, rejections, missing)
