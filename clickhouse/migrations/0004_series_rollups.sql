-- Final hours and days of every polygon space, for series (clickhouse/series.py): the set of
-- devices present in the space at some instant of each UTC hour (and day), kept as an exact
-- distinct-count state, so that any bucket made of whole hours merges them into its exact
-- count (a device there for several hours counts once). An hour is written once it is final:
-- older than OCC_MAX_PING_AGE_S (and a margin for clocks), past which no ping can change
-- presence in it. Writing an hour again adds nothing: the union of a set with itself.
CREATE TABLE IF NOT EXISTS space_hours (
    space String,
    hour Int64,
    devices AggregateFunction(uniqExact, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(hour, 1000)))
ORDER BY (space, hour)
TTL toDateTime(intDiv(hour, 1000)) + INTERVAL {aggregate_days} DAY;

CREATE TABLE IF NOT EXISTS space_days (
    space String,
    day Int64,
    devices AggregateFunction(uniqExact, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(day, 1000)))
ORDER BY (space, day)
TTL toDateTime(intDiv(day, 1000)) + INTERVAL {aggregate_days} DAY;

-- How far the hours are written: every hour before `upto` (ms) is in space_hours, every whole
-- UTC day before it in space_days. The latest version wins.
CREATE TABLE IF NOT EXISTS series_rollup (
    id UInt8,
    upto Int64,
    version Int64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id;
