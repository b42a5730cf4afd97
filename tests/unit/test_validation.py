"""Every rejection has a reason."""

import math

import pytest

from engine.validation import Limits, Reason, check_door_event, check_ping

NOW = 1_700_000_000_000
LIMITS = Limits()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("", NOW, 1.0, 1.0), Reason.DEVICE_ID_EMPTY),
        (("x" * 129, NOW, 1.0, 1.0), Reason.DEVICE_ID_TOO_LONG),
        (("é" * 65, NOW, 1.0, 1.0), Reason.DEVICE_ID_TOO_LONG),
        (("d", NOW, math.nan, 1.0), Reason.LAT_NOT_FINITE),
        (("d", NOW, 1.0, math.inf), Reason.LNG_NOT_FINITE),
        (("d", NOW, 90.0001, 1.0), Reason.LAT_OUT_OF_RANGE),
        (("d", NOW, -91.0, 1.0), Reason.LAT_OUT_OF_RANGE),
        (("d", NOW, 1.0, 180.5), Reason.LNG_OUT_OF_RANGE),
        (("d", 0, 1.0, 1.0), Reason.TS_MISSING),
        (("d", -5, 1.0, 1.0), Reason.TS_MISSING),
        (("d", NOW + 30_001, 1.0, 1.0), Reason.TS_IN_FUTURE),
        (("d", NOW - 7 * 86_400_000 - 1, 1.0, 1.0), Reason.TS_TOO_OLD),
        (("d", 1, 1.0, 1.0), Reason.TS_TOO_OLD),
    ],
)
def test_rejections(args, reason):
    assert check_ping(*args, now_ms=NOW, limits=LIMITS) == reason


def test_valid_edges():
    assert check_ping("d", NOW + 30_000, 90.0, 180.0, NOW, LIMITS) is None
    assert check_ping("d", NOW - 7 * 86_400_000, -90.0, -180.0, NOW, LIMITS) is None
    assert check_ping("d", 1, 0, 0, NOW, Limits(max_age_ms=NOW)) is None
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, 5.0, {"type": "bus"}) is None


def test_accuracy_and_attributes():
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, -1.0) == Reason.ACCURACY_INVALID
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, math.nan) == Reason.ACCURACY_INVALID
    many = {f"k{i}": "v" for i in range(17)}
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, 0, many) == Reason.TOO_MANY_ATTRIBUTES
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, 0, {"": "v"}) == Reason.ATTRIBUTE_INVALID
    long = {"k": "v" * 257}
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, 0, long) == Reason.ATTRIBUTE_INVALID
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, 0, {"k" * 257: "v"}) == Reason.ATTRIBUTE_INVALID
    at_limit = {f"{i:0256d}": "é" * 128 for i in range(16)}
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, 0, at_limit) is None


def test_region_is_bounded():
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, 0, None, "r" * 64) is None
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, 0, None, "é" * 32) is None
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, 0, None, "r" * 65) == Reason.REGION_TOO_LONG
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, 0, None, "é" * 33) == Reason.REGION_TOO_LONG
    huge = "r" * (1 << 20)
    assert check_ping("d", NOW, 0, 0, NOW, LIMITS, 0, None, huge) == Reason.REGION_TOO_LONG


def test_door_event_rejections():
    assert check_door_event("s", NOW, 1, NOW, LIMITS) is None
    assert check_door_event("s", NOW, -1, NOW, LIMITS) is None
    assert check_door_event("", NOW, 1, NOW, LIMITS) == Reason.SENSOR_ID_EMPTY
    assert check_door_event("s", NOW, 0, NOW, LIMITS) == Reason.DIRECTION_INVALID
    assert check_door_event("s", NOW, 2, NOW, LIMITS) == Reason.DIRECTION_INVALID
    assert check_door_event("s", NOW + 60_000, 1, NOW, LIMITS) == Reason.TS_IN_FUTURE
    assert check_door_event("s", 0, 1, NOW, LIMITS) == Reason.TS_MISSING
    too_old = NOW - LIMITS.max_age_ms - 1
    assert check_door_event("s", too_old, 1, NOW, LIMITS) == Reason.TS_TOO_OLD
    assert check_door_event("s", too_old + 1, 1, NOW, LIMITS) is None
