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
    at = range(len(messages))
    if any(m is None for m in messages):
        reasons = {i: "malformed" for i, m in enumerate(messages) if m is None}
        at = [i for i, m in enumerate(messages) if m is not None]
        messages = [messages[i] for i in at]
    if messages:
        ids, ts, lats, lngs, accuracy = zip(*map(_REQUIRED, messages), strict=True)
    else:
        ids = ts = lats = lngs = accuracy = ()
    record = PingRecord()
    optional = [(c, [getattr(m, c.name) for m in messages]) for c in record.optional()]
    ok = valid_columns(ids, ts, lats, lngs, accuracy, now, limits)
    # what the columns did not check (region, attributes), for the few pings that carry it
    carried = [
        k for c, values in optional if c.name not in _CHECKED for k, v in enumerate(values) if v
    ]
    for k in (*np.flatnonzero(~ok).tolist(), *carried):  # the one-by-one check has the last word
        reason = check_message(messages[k], now, limits)
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
        optional = [(c, [values[k] for k in kept]) for c, values in optional]
    record.ts, record.lat, record.lng = list(ts), list(lats), list(lngs)
    for c, values in optional:
        cast = type(c.default)
        setattr(record, c.name, {k: cast(v) for k, v in enumerate(values) if v})
    record.dev = keys = [cached(i, now) for i in ids]
    missing: dict[str, list[int]] = {}
    if None in keys:
        for k, key in enumerate(keys):
            if key is None:
                missing.setdefault(ids[k], []).append(k)
                keys[k] = 0
    rejections = [pb.Rejection(index=base + i, reason=reasons[i]) for i in sorted(reasons)]
    return Batch(record, rejections, missing)
