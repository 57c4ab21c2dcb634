-- Second generation of ctr_ml_view, by the materialized-view evolution pattern of
-- docs/schema-tool.md: adds `windows` (windows with data in the minute) and `late_updates`
-- (rows that revised an emitted window), keeps every existing column, and
-- ctr_ml_summary exposes weighted_ctr = sumMerge(clicks) / sumMerge(impressions).
-- Rows of ctr_results_raw are split by `emitted_at` into three exact, disjoint ranges:
--   emitted_at <  start        backfilled from ctr_results_raw
--   start <= emitted_at < stop  through the temporary view ctr_ml_feed_v2
--   emitted_at >= stop          through the new ctr_ml_view
-- so no row is lost or counted twice while the aggregator keeps inserting.
-- ML_CUTOVER_DELAY_SECONDS must exceed the clock skew between aggregators and ClickHouse;
-- ML_CUTOVER_GRACE_SECONDS must exceed the time from emission to insert (batching, retries).
-- On an empty ctr_results_raw (a new installation) both cut-overs are the epoch: nothing to
-- backfill, no waiting, and every row goes through the new ctr_ml_view.

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_ml_cutover
ENGINE = TinyLog
AS SELECT
    if((SELECT count() FROM ${DATABASE}.ctr_results_raw) = 0,
       toDateTime(0, 'UTC'), toDateTime(now() + ${ML_CUTOVER_DELAY_SECONDS:-15}, 'UTC')) AS start,
    toDateTime('2105-01-01 00:00:00', 'UTC') AS stop;

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_ml_agg_v2
(
    product_id    String,
    window_minute DateTime('UTC'),
    impressions   AggregateFunction(sum, UInt64),
    clicks        AggregateFunction(sum, UInt64),
    avg_ctr       AggregateFunction(avg, Float64),
    windows       AggregateFunction(sum, UInt64),
    late_updates  AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(window_minute)
ORDER BY (product_id, window_minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_ml_feed_v2 TO ${DATABASE}.ctr_ml_agg_v2
AS SELECT
    product_id,
    toStartOfMinute(window_end) AS window_minute,
    sumState(impressions_delta) AS impressions,
    sumState(clicks_delta) AS clicks,
    avgState(ctr) AS avg_ctr,
    sumState(toUInt64(revision = 0)) AS windows,
    sumState(toUInt64(revision > 0)) AS late_updates
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(start) FROM ${DATABASE}.ctr_ml_cutover)
  AND emitted_at < (SELECT min(stop) FROM ${DATABASE}.ctr_ml_cutover)
GROUP BY product_id, window_minute;

WAIT UNTIL (SELECT min(start) FROM ${DATABASE}.ctr_ml_cutover) + ${ML_CUTOVER_GRACE_SECONDS:-15};

INSERT INTO ${DATABASE}.ctr_ml_agg_v2
SELECT
    product_id,
    toStartOfMinute(window_end) AS window_minute,
    sumState(impressions_delta),
    sumState(clicks_delta),
    avgState(ctr),
    sumState(toUInt64(revision = 0)),
    sumState(toUInt64(revision > 0))
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at < (SELECT min(start) FROM ${DATABASE}.ctr_ml_cutover)
GROUP BY product_id, window_minute;

INSERT INTO ${DATABASE}.ctr_ml_cutover
SELECT min(start), if(min(start) = toDateTime(0, 'UTC'), toDateTime(0, 'UTC'), toDateTime(now() + ${ML_CUTOVER_DELAY_SECONDS:-15}, 'UTC'))
FROM ${DATABASE}.ctr_ml_cutover;

DROP TABLE IF EXISTS ${DATABASE}.ctr_ml_view;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_ml_view TO ${DATABASE}.ctr_ml_agg_v2
AS SELECT
    product_id,
    toStartOfMinute(window_end) AS window_minute,
    sumState(impressions_delta) AS impressions,
    sumState(clicks_delta) AS clicks,
    avgState(ctr) AS avg_ctr,
    sumState(toUInt64(revision = 0)) AS windows,
    sumState(toUInt64(revision > 0)) AS late_updates
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(stop) FROM ${DATABASE}.ctr_ml_cutover)
GROUP BY product_id, window_minute;

WAIT UNTIL (SELECT min(stop) FROM ${DATABASE}.ctr_ml_cutover) + ${ML_CUTOVER_GRACE_SECONDS:-15};

DROP TABLE IF EXISTS ${DATABASE}.ctr_ml_feed_v2;

CREATE VIEW IF NOT EXISTS ${DATABASE}.ctr_ml_summary
AS SELECT
    product_id,
    window_minute,
    sumMerge(impressions) AS impressions,
    sumMerge(clicks) AS clicks,
    if(impressions = 0, 0, clicks / impressions) AS weighted_ctr,
    avgMerge(avg_ctr) AS avg_ctr,
    sumMerge(windows) AS windows,
    sumMerge(late_updates) AS late_updates
FROM ${DATABASE}.ctr_ml_agg_v2
GROUP BY product_id, window_minute;
