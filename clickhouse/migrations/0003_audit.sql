-- The audit log: every authenticated request to the HTTP API, counts per window of refused
-- requests and gRPC ingest calls, and the CLI's writes (engine/audit.py says what each field
-- holds). Append-only; kept {audit_days} days (OCC_AUDIT_RETENTION_DAYS). Devices appear as
-- pseudonyms, never raw ids; keys by their ids, never themselves. Inserts carry a dedup token
-- per range of the Redis stream they come from, so a retried round adds nothing.
CREATE TABLE IF NOT EXISTS audit (
    ts Int64,
    source LowCardinality(String),
    key_id String,
    role LowCardinality(String),
    os_user String,
    method LowCardinality(String),
    route LowCardinality(String),
    params String,
    status UInt16,
    calls UInt32,
    duration_ms Float64,
    bytes_out UInt64,
    rows UInt64
) ENGINE = MergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(ts, 1000)))
ORDER BY ts
TTL toDateTime(intDiv(ts, 1000)) + INTERVAL {audit_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- `query_audit` (history queries only, with the role but not the key) is folded into `audit`:
-- its rows are copied over with their route's template and dropped. Each statement may run
-- again after a crash: the table is there (empty once dropped) and the copy carries a token.
CREATE TABLE IF NOT EXISTS query_audit (
    ts Int64,
    role LowCardinality(String),
    endpoint LowCardinality(String),
    params String,
    result_rows UInt64,
    elapsed_ms Float64
) ENGINE = MergeTree
ORDER BY ts;

INSERT INTO audit (ts, source, role, method, route, params, status, calls, duration_ms, rows)
SETTINGS insert_deduplication_token = 'migration:0003_audit'
SELECT ts, 'http', role, 'GET',
    transform(endpoint,
        ['top', 'heatmap', 'cell', 'spaces', 'space', 'dwell', 'devices', 'path', 'distance',
         'export'],
        ['/v1/top', '/v1/heatmap', '/v1/cells/{cell}', '/v1/spaces', '/v1/spaces/{space_id}',
         '/v1/users/{device_id}/dwell', '/v1/history/devices',
         '/v1/history/path/{device_id}', '/v1/history/distance', '/v1/export'],
        endpoint),
    params, 200, 1, elapsed_ms, result_rows
FROM query_audit;

DROP TABLE IF EXISTS query_audit;
