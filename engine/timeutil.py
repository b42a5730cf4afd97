"""Millisecond time arithmetic: minutes and UTC days."""

import re

MINUTE_MS = 60_000
DAY_MS = 86_400_000


def minute_of(ts_ms: int) -> int:
    """Start of the minute that contains `ts_ms`."""
    return ts_ms - ts_ms % MINUTE_MS


def day_of(ts_ms: int) -> int:
    """Midnight (UTC) of the day that contains `ts_ms`."""
    return ts_ms - ts_ms % DAY_MS


def split_by_day(start: int, end: int) -> list[tuple[int, int]]:
    """`(day, milliseconds)` pieces of `[start, end)`, split at UTC midnights."""
    pieces = []
    while start < end:
        day = day_of(start)
        cut = min(end, day + DAY_MS)
        pieces.append((day, cut - start))
        start = cut
    return pieces


# the times an API accepts: every time RFC 3339 can write, the years 1 to 9999 at any UTC offset
# (the history store answers any Int64 span; tests/integration/test_store_contract.py)
_LAST_OFFSET_MS = (23 * 60 + 59) * MINUTE_MS
EARLIEST_MS = -62_135_596_800_000 - _LAST_OFFSET_MS  # 0001-01-01T00:00:00+23:59
LATEST_MS = 253_402_300_799_999 + _LAST_OFFSET_MS  # 9999-12-31T23:59:59.999-23:59
_MS = re.compile(r"-?[0-9]{1,15}(\.0*)?")  # 2.0 is JSON's integer 2 as well


def parse_time(text: str) -> int:
    """ms since the epoch from ms digits or ISO 8601 (naive times are UTC; a fraction of a
    millisecond is dropped), between EARLIEST_MS and LATEST_MS; ValueError else."""
    from datetime import UTC, datetime, timedelta

    if _MS.fullmatch(text):
        ms = int(text.partition(".")[0])
    else:
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{text[:40]!r} is neither ms since the epoch nor an ISO 8601 time"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        # in whole numbers: a float's ms are a millisecond off here and there, and round the
        # last microsecond of 9999 up into the year 10000
        ms = (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    if not EARLIEST_MS <= ms <= LATEST_MS:
        raise ValueError(
            f"{text[:40]!r} is outside the years 1 to 9999 "
            f"(ms since the epoch from {EARLIEST_MS} to {LATEST_MS})"
        )
    return ms


def parse_day(text: str) -> int:
    """Midnight UTC (ms) of a `YYYY-MM-DD` day; ValueError else."""
    from datetime import UTC, datetime

    try:
        dt = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not a day (YYYY-MM-DD)") from None
    return int(dt.timestamp() * 1000)
