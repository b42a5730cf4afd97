-- History tables. Times are milliseconds since the epoch (Int64), as everywhere in the engine;
-- devices are pseudonyms (UInt64), never raw ids. {raw_days} and {aggregate_days} are the
-- retention settings (integers, substituted when the migration is applied).

-- Every accepted ping (applied or late), from the user shards' write-ahead logs. Inserts carry
-- a dedup token per WAL range, so a retried snapshot adds nothing.
CREATE TABLE IF NOT EXISTS raw_pings (
    device UInt64,
    ts Int64,
    received Int64,
    lat Float64,
    lng Float64,
    cell UInt64,
    accuracy_m Float32,
    region LowCardinality(String),
    attributes Map(String, String),
    shard LowCardinality(String),
    -- arrival order within the shard's log: WAL entry id (ms, seq), then position in the batch;
    -- a ping is applied iff its ts is newer than every earlier ping of its device
    wal_ms Int64,
    wal_seq Int64,
    idx UInt32
) ENGINE = MergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(ts, 1000)))
ORDER BY (device, ts)
TTL toDateTime(intDiv(ts, 1000)) + INTERVAL {raw_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- Minute memberships arrive as (place, minute, device) rows in Null tables; materialized views
-- merge them into sets per place and minute. A membership sent twice is the same set member,
-- so snapshots are idempotent and a late ping for an old minute adds to it exactly.
CREATE TABLE IF NOT EXISTS cell_minute_members (
    res UInt8,
    cell UInt64,
    minute Int64,
    device UInt64
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS cell_minutes (
    res UInt8,
    cell UInt64,
    minute Int64,
    devices AggregateFunction(uniqExact, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(minute, 1000)))
ORDER BY (res, minute, cell)
TTL toDateTime(intDiv(minute, 1000)) + INTERVAL {aggregate_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS cell_minutes_mv TO cell_minutes AS
SELECT res, cell, minute, uniqExactState(device) AS devices
FROM cell_minute_members
GROUP BY res, cell, minute;

CREATE TABLE IF NOT EXISTS space_minute_members (
    space String,
    minute Int64,
    device UInt64
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS space_minutes (
    space String,
    minute Int64,
    devices AggregateFunction(uniqExact, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(minute, 1000)))
ORDER BY (space, minute)
TTL toDateTime(intDiv(minute, 1000)) + INTERVAL {aggregate_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS space_minutes_mv TO space_minutes AS
SELECT space, minute, uniqExactState(device) AS devices
FROM space_minute_members
GROUP BY space, minute;

-- Door events with their event time and receive time, from the space shards' logs.
CREATE TABLE IF NOT EXISTS door_events (
    sensor String,
    ts Int64,
    received Int64,
    direction Int8,
    shard LowCardinality(String),
    wal_id String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(ts, 1000)))
ORDER BY (sensor, ts)
TTL toDateTime(intDiv(ts, 1000)) + INTERVAL {aggregate_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- Dwell per device, UTC day and place (a base-resolution cell as hex, or a space), in pieces:
-- one per presence interval, place and day, identified by the interval's start. An open
-- interval's piece is written again, longer, at each snapshot until it settles; the latest
-- version of each piece wins, and a day's dwell is the sum of its pieces.
CREATE TABLE IF NOT EXISTS dwell_daily (
    device UInt64,
    day Int64,
    place String,
    is_space UInt8,
    start Int64,
    ms Int64,
    version Int64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(toDateTime(intDiv(day, 1000)))
ORDER BY (device, day, place, start)
TTL toDateTime(intDiv(day, 1000)) + INTERVAL {aggregate_days} DAY;

-- Who asked history what, and how long it took.
CREATE TABLE IF NOT EXISTS query_audit (
    ts Int64,
    role LowCardinality(String),
    endpoint LowCardinality(String),
    params String,
    result_rows UInt64,
    elapsed_ms Float64
) ENGINE = MergeTree
ORDER BY ts
TTL toDateTime(intDiv(ts, 1000)) + INTERVAL {aggregate_days} DAY;
