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

-- Presence pieces (engine/history.py): one per presence interval, place and UTC day, keyed by
-- the interval's start, with its bounds [lo, hi) on that day. A place is a base-resolution cell
-- (space = '') or a space (cell = 0). An open interval is written again as it grows or is cut
-- short by a newer ping; the latest version of a piece wins, and a piece the interval no longer
-- reaches is buried (lo = hi = 0). Minute aggregates (devices whose piece overlaps the minute,
-- at any coarser resolution via h3ToParent) and dwell per day (sum of hi - lo) derive from it
-- exactly, however late a ping arrives.
CREATE TABLE IF NOT EXISTS presence (
    device UInt64,
    day Int64,
    cell UInt64,
    space String,
    start Int64,
    lo Int64,
    hi Int64,
    version Int64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(toDateTime(intDiv(day, 1000)))
ORDER BY (day, device, cell, space, start)
TTL toDateTime(intDiv(day, 1000)) + INTERVAL {aggregate_days} DAY;

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
