"""Inserts split by UTC month, deterministically."""

from datetime import UTC, datetime

from clickhouse.partitions import by_month, month_of, part_token


def _ms(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_one_month_is_one_insert():
    assert by_month([]) is None
    assert by_month([_ms(2026, 11, 1), _ms(2026, 11, 30, 23, 59)]) is None


def test_rows_are_grouped_by_their_month_in_order():
    times = [_ms(2026, 12, 31, 23, 59), _ms(2025, 1, 1), _ms(2027, 1, 1), _ms(2026, 12, 1) - 1]
    assert by_month(times) == [(202501, [1]), (202611, [3]), (202612, [0]), (202701, [2])]
    assert month_of(_ms(2026, 12, 1) - 1) == 202611


def test_ten_years_of_months():
    times = [_ms(2016 + k // 12, k % 12 + 1, 15) for k in range(120)]
    parts = by_month(times)
    assert [m for m, _ in parts] == [(2016 + k // 12) * 100 + k % 12 + 1 for k in range(120)]
    assert [idx for _, idx in parts] == [[k] for k in range(120)]
    assert part_token("user-0:1-0:2-0", 201601) == "user-0:1-0:2-0:m201601"
    assert part_token("", 201601) == ""
