-- Named aggregates over the presence pieces, for analysts and exports. Each is a parameterized
-- view over the period [start, end) in epoch milliseconds, e.g.
--   SELECT * FROM cell_minutes(start = 1764000000000, end = 1764003600000)
-- Minute aggregates count the distinct devices present at some instant of the minute (base
-- resolution cells; coarser ones with h3ToParent); dwell_daily sums each device's time per UTC
-- day and place (a cell, or a space with cell = 0).

CREATE VIEW IF NOT EXISTS cell_minutes AS
SELECT cell, m AS minute, uniqExact(device) AS devices FROM (
    SELECT device, cell, arrayJoin(range(lo - lo % 60000, hi, 60000)) AS m
    FROM presence FINAL
    WHERE space = '' AND hi > lo AND day >= {start:Int64} - 86400000
        AND day < {end:Int64} AND hi > {start:Int64} AND lo < {end:Int64}
) WHERE m >= {start:Int64} AND m < {end:Int64}
GROUP BY cell, minute;

CREATE VIEW IF NOT EXISTS space_minutes AS
SELECT space, m AS minute, uniqExact(device) AS devices FROM (
    SELECT device, space, arrayJoin(range(lo - lo % 60000, hi, 60000)) AS m
    FROM presence FINAL
    WHERE space != '' AND hi > lo AND day >= {start:Int64} - 86400000
        AND day < {end:Int64} AND hi > {start:Int64} AND lo < {end:Int64}
) WHERE m >= {start:Int64} AND m < {end:Int64}
GROUP BY space, minute;

CREATE VIEW IF NOT EXISTS dwell_daily AS
SELECT device, day, cell, space, sum(hi - lo) AS ms
FROM presence FINAL
WHERE day >= {start:Int64} AND day < {end:Int64}
GROUP BY device, day, cell, space
HAVING ms > 0;
