-- Second generation of ctr_latest_view, by the materialized-view evolution pattern of
-- docs/schema-tool.md (as 0004 and 0006 do for ctr_ml_view): the latest window per product at
-- its highest revision now also carries `conversions` and `revenue` (Decimal(18, 6), exact),
-- cumulative for the window like `impressions` and `clicks`. Every existing column is kept, and
-- readers keep reading `ctr_latest_view FINAL`.
-- The first generation kept its rows in the view's inner table; the new ctr_latest_view writes
-- to the table ctr_latest_v2 (ReplacingMergeTree(version), ORDER BY product_id).
-- Rows of ctr_results_raw are split by `emitted_at` into three exact, disjoint ranges:
--   emitted_at <  start        backfilled from ctr_results_raw (the latest row per product)
--   start <= emitted_at < stop  through the temporary view ctr_latest_feed_v2
--   emitted_at >= stop          through the new ctr_latest_view
-- It uses the ctr_ml_view cut-over timings: ML_CUTOVER_DELAY_SECONDS must exceed the clock skew
-- between aggregators and ClickHouse, ML_CUTOVER_GRACE_SECONDS the time from emission to insert.
-- On an empty ctr_results_raw both cut-overs are the epoch: nothing to backfill, no waiting.

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_latest_cutover
ENGINE = TinyLog
AS SELECT
    if((SELECT count() FROM ${DATABASE}.ctr_results_raw) = 0,
       toDateTime(0, 'UTC'), toDateTime(now() + ${ML_CUTOVER_DELAY_SECONDS:-15}, 'UTC')) AS start,
    toDateTime('2105-01-01 00:00:00', 'UTC') AS stop;

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_latest_v2
(
    product_id   String,
    window_start DateTime('UTC'),
    window_end   DateTime('UTC'),
    impressions  UInt64,
    clicks       UInt64,
    ctr          Float64,
    revision     UInt32,
    emitted_at   DateTime('UTC'),
    version      UInt64,
    conversions  UInt64,
    revenue      Decimal(18, 6)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY product_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_latest_feed_v2 TO ${DATABASE}.ctr_latest_v2
AS SELECT
    product_id,
    window_start,
    window_end,
    impressions,
    clicks,
    ctr,
    revision,
    emitted_at,
    toUInt64(toUnixTimestamp(window_start)) * 1000000 + revision AS version,
    conversions,
    revenue
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(start) FROM ${DATABASE}.ctr_latest_cutover)
  AND emitted_at < (SELECT min(stop) FROM ${DATABASE}.ctr_latest_cutover);

WAIT UNTIL (SELECT min(start) FROM ${DATABASE}.ctr_latest_cutover) + ${ML_CUTOVER_GRACE_SECONDS:-15};

INSERT INTO ${DATABASE}.ctr_latest_v2
SELECT
    product_id,
    argMax(window_start, v),
    argMax(window_end, v),
    argMax(impressions, v),
    argMax(clicks, v),
    argMax(ctr, v),
    argMax(revision, v),
    argMax(emitted_at, v),
    max(v),
    argMax(conversions, v),
    argMax(revenue, v)
FROM
(
    SELECT product_id, window_start, window_end, impressions, clicks, ctr, revision, emitted_at, conversions, revenue,
        toUInt64(toUnixTimestamp(window_start)) * 1000000 + revision AS v
    FROM ${DATABASE}.ctr_results_raw
    WHERE emitted_at < (SELECT min(start) FROM ${DATABASE}.ctr_latest_cutover)
)
GROUP BY product_id;

INSERT INTO ${DATABASE}.ctr_latest_cutover
SELECT min(start), if(min(start) = toDateTime(0, 'UTC'), toDateTime(0, 'UTC'), toDateTime(now() + ${ML_CUTOVER_DELAY_SECONDS:-15}, 'UTC'))
FROM ${DATABASE}.ctr_latest_cutover;

DROP TABLE IF EXISTS ${DATABASE}.ctr_latest_view;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_latest_view TO ${DATABASE}.ctr_latest_v2
AS SELECT
    product_id,
    window_start,
    window_end,
    impressions,
    clicks,
    ctr,
    revision,
    emitted_at,
    toUInt64(toUnixTimestamp(window_start)) * 1000000 + revision AS version,
    conversions,
    revenue
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(stop) FROM ${DATABASE}.ctr_latest_cutover);

WAIT UNTIL (SELECT min(stop) FROM ${DATABASE}.ctr_latest_cutover) + ${ML_CUTOVER_GRACE_SECONDS:-15};

DROP TABLE IF EXISTS ${DATABASE}.ctr_latest_feed_v2;
