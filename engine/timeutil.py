"""Millisecond time arithmetic: minutes and UTC days."""

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


# the times an API accepts: what ISO 8601 can write (years 1 to 9999), well inside Int64
EARLIEST_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
LATEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def parse_time(text: str) -> int:
    """ms since the epoch from ms digits or ISO 8601 (naive times are UTC), between the years 1
    and 9999; ValueError else."""
    from datetime import UTC, datetime

    text = text.strip()
    if text.lstrip("-").isdigit() and len(text) <= 20:
        ms = int(text)
    else:
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            ms = int(dt.timestamp() * 1000)
        except (ValueError, OverflowError):
            raise ValueError(
                f"{text[:40]!r} is neither ms since the epoch nor an ISO 8601 time"
            ) from None
    if not EARLIEST_MS <= ms <= LATEST_MS:
        raise ValueError(f"{ms} is outside the years 1 to 9999")
    return ms


def parse_day(text: str) -> int:
    """Midnight UTC (ms) of a `YYYY-MM-DD` day; ValueError else."""
    from datetime import UTC, datetime

    try:
        dt = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not a day (YYYY-MM-DD)") from None
    return int(dt.timestamp() * 1000)
