"""Inserts split by month: every history table is partitioned by the month of a time column, and
ClickHouse refuses a block that spans more than `max_partitions_per_insert_block` (100)."""

import bisect
from collections.abc import Sequence
from datetime import UTC, datetime


def month_of(ms: int) -> int:
    """The UTC month (YYYYMM) that contains `ms`."""
    d = datetime.fromtimestamp(ms / 1000, UTC)
    return d.year * 100 + d.month


def _month_start(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def _starts_between(first: int, last: int) -> list[tuple[int, int]]:
    """(start ms, YYYYMM) of every month after `first`'s, up to `last`'s (YYYYMM both)."""
    out = []
    year, month = divmod(first, 100)
    while year * 100 + month < last:
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        out.append((_month_start(year, month), year * 100 + month))
    return out


def by_month(times: Sequence[int]) -> list[tuple[int, list[int]]] | None:
    """None when every time lies in one UTC month (the common case: one insert, as it came);
    else [(YYYYMM, row indexes)] by month. Deterministic: a retried block splits the same way,
    so each part keeps its own dedup token."""
    if not times:
        return None
    first, last = month_of(min(times)), month_of(max(times))
    if first == last:
        return None
    starts = _starts_between(first, last)
    bounds = [ms for ms, _ in starts]
    months = [first] + [m for _, m in starts]
    parts: dict[int, list[int]] = {}
    for i, t in enumerate(times):
        parts.setdefault(bisect.bisect_right(bounds, t), []).append(i)
    return [(months[k], idx) for k, idx in sorted(parts.items())]


def part_token(token: str, month: int) -> str:
    return f"{token}:m{month}" if token else ""
