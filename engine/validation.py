"""Ping and door-event validation: every rejection has a reason."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Reason(StrEnum):
    """Why an item was rejected; the value is what clients see in `Rejection.reason`."""

    DEVICE_ID_EMPTY = "device_id_empty"
    DEVICE_ID_TOO_LONG = "device_id_too_long"
    LAT_NOT_FINITE = "lat_not_finite"
    LNG_NOT_FINITE = "lng_not_finite"
    LAT_OUT_OF_RANGE = "lat_out_of_range"
    LNG_OUT_OF_RANGE = "lng_out_of_range"
    TS_MISSING = "ts_missing"
    TS_IN_FUTURE = "ts_in_future"
    TS_TOO_OLD = "ts_too_old"
    ACCURACY_INVALID = "accuracy_invalid"
    TOO_MANY_ATTRIBUTES = "too_many_attributes"
    ATTRIBUTE_INVALID = "attribute_invalid"
    REGION_TOO_LONG = "region_too_long"
    SENSOR_ID_EMPTY = "sensor_id_empty"
    SENSOR_ID_TOO_LONG = "sensor_id_too_long"
    DIRECTION_INVALID = "direction_invalid"
    NOT_AUTHORIZED_FOR_DEVICE = "not_authorized_for_device"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a single item may carry (docs/semantics.md lists them for clients).

    `max_age_ms` bounds lateness: an item dated more than that before the engine's clock is
    `ts_too_old`. Live state may then forget what only such an item could still change
    (watermarks, door events folded into a base), and history stays writable (a block never
    spans more months than a few)."""

    max_skew_ms: int = 30_000
    max_age_ms: int = 7 * 86_400_000
    max_id_bytes: int = 128
    max_attributes: int = 16
    max_attribute_bytes: int = 256
    max_region_bytes: int = 64


def _id_reason(value: str, limits: Limits, empty: Reason, too_long: Reason) -> Reason | None:
    if not value:
        return empty
    if len(value) > limits.max_id_bytes or len(value.encode()) > limits.max_id_bytes:
        return too_long
    return None


def check_ping(
    device_id: str,
    ts_ms: int,
    lat: float,
    lng: float,
    now_ms: int,
    limits: Limits,
    accuracy_m: float = 0.0,
    attributes: Mapping[str, str] | None = None,
    region: str = "",
) -> Reason | None:
    """The reason this ping must be rejected, or None if it is valid (checked at `now_ms`)."""
    reason = _id_reason(device_id, limits, Reason.DEVICE_ID_EMPTY, Reason.DEVICE_ID_TOO_LONG)
    if reason:
        return reason
    if not math.isfinite(lat):
        return Reason.LAT_NOT_FINITE
    if not math.isfinite(lng):
        return Reason.LNG_NOT_FINITE
    if not -90.0 <= lat <= 90.0:
        return Reason.LAT_OUT_OF_RANGE
    if not -180.0 <= lng <= 180.0:
        return Reason.LNG_OUT_OF_RANGE
    # the time checks of `_ts_reason`, inline: this runs for every ping
    if ts_ms <= 0:
        return Reason.TS_MISSING
    if ts_ms > now_ms + limits.max_skew_ms:
        return Reason.TS_IN_FUTURE
    if ts_ms < now_ms - limits.max_age_ms:
        return Reason.TS_TOO_OLD
    if not (math.isfinite(accuracy_m) and accuracy_m >= 0):
        return Reason.ACCURACY_INVALID
    if region and _too_long(region, limits.max_region_bytes):
        return Reason.REGION_TOO_LONG
    if attributes:
        return _attributes_reason(attributes, limits)
    return None


def valid_columns(
    device_ids: Sequence[str],
    ts_ms: Sequence[int],
    lats: Sequence[float],
    lngs: Sequence[float],
    accuracy_m: Sequence[float],
    now_ms: int,
    limits: Limits,
) -> np.ndarray:
    """Whether each ping of a batch passes `check_ping`'s checks of its id, position, time and
    accuracy, all at once; a ping found invalid is given its reason by `check_ping`. Region and
    attributes are not looked at: check the pings that carry them with `check_ping`."""
    lat = np.asarray(lats, dtype=np.float64)
    lng = np.asarray(lngs, dtype=np.float64)
    ts = np.asarray(ts_ms, dtype=np.int64)
    accuracy = np.asarray(accuracy_m, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # NaN compares false: invalid, as it must be
        ok = (lat >= -90.0) & (lat <= 90.0) & (lng >= -180.0) & (lng <= 180.0)
        ok &= (ts > 0) & (ts <= now_ms + limits.max_skew_ms) & (ts >= now_ms - limits.max_age_ms)
        ok &= np.isfinite(accuracy) & (accuracy >= 0)
    most = limits.max_id_bytes
    ok &= np.fromiter(
        (0 < len(d) <= most and (d.isascii() or len(d.encode()) <= most) for d in device_ids),
        dtype=bool,
        count=len(device_ids),
    )
    return ok


def check_message(ping, now_ms: int, limits: Limits) -> Reason | None:
    """`check_ping` of a `Ping` message (or anything with its fields)."""
    return check_ping(
        ping.device_id,
        ping.ts_ms,
        ping.lat,
        ping.lng,
        now_ms,
        limits,
        ping.accuracy_m,
        ping.attributes,
        ping.region,
    )


def _too_long(value: str, max_bytes: int) -> bool:
    # a str is at least one byte per character: most values are decided without encoding them
    return len(value) > max_bytes or len(value.encode()) > max_bytes


def _ts_reason(ts_ms: int, now_ms: int, limits: Limits) -> Reason | None:
    if ts_ms <= 0:
        return Reason.TS_MISSING
    if ts_ms > now_ms + limits.max_skew_ms:
        return Reason.TS_IN_FUTURE
    if ts_ms < now_ms - limits.max_age_ms:
        return Reason.TS_TOO_OLD
    return None


def _attributes_reason(attributes: Mapping[str, str], limits: Limits) -> Reason | None:
    if len(attributes) > limits.max_attributes:
        return Reason.TOO_MANY_ATTRIBUTES
    for key, value in attributes.items():
        if not key or _too_long(key, limits.max_attribute_bytes):
            return Reason.ATTRIBUTE_INVALID
        if _too_long(value, limits.max_attribute_bytes):
            return Reason.ATTRIBUTE_INVALID
    return None


def check_door_event(sensor_id: str, ts_ms: int, direction: int, now_ms: int, limits: Limits):
    """The reason this door event must be rejected, or None."""
    reason = _id_reason(sensor_id, limits, Reason.SENSOR_ID_EMPTY, Reason.SENSOR_ID_TOO_LONG)
    if reason:
        return reason
    if direction not in (1, -1):
        return Reason.DIRECTION_INVALID
    return _ts_reason(ts_ms, now_ms, limits)
