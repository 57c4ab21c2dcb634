-- Third generation of ctr_ml_view, by the same evolution pattern as 0004: adds `conversions`
-- and `revenue` (sums of the deltas; revenue Decimal(18, 6), exact). ctr_ml_summary gains cvr
-- and ecpm (revenue per thousand impressions), computed from sums. The second generation's
-- target is dropped once the switch is complete.

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_ml_cutover_v3
ENGINE = TinyLog
AS SELECT
    if((SELECT count() FROM ${DATABASE}.ctr_results_raw) = 0,
       toDateTime(0, 'UTC'), toDateTime(now() + ${ML_CUTOVER_DELAY_SECONDS:-15}, 'UTC')) AS start,
    toDateTime('2105-01-01 00:00:00', 'UTC') AS stop;

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_ml_agg_v3
(
    product_id    String,
    window_minute DateTime('UTC'),
    impressions   AggregateFunction(sum, UInt64),
    clicks        AggregateFunction(sum, UInt64),
    avg_ctr       AggregateFunction(avg, Float64),
    windows       AggregateFunction(sum, UInt64),
    late_updates  AggregateFunction(sum, UInt64),
    conversions   AggregateFunction(sum, UInt64),
    revenue       AggregateFunction(sum, Decimal(18, 6))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(window_minute)
ORDER BY (product_id, window_minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_ml_feed_v3 TO ${DATABASE}.ctr_ml_agg_v3
AS SELECT
    product_id,
    toStartOfMinute(window_end) AS window_minute,
    sumState(impressions_delta) AS impressions,
    sumState(clicks_delta) AS clicks,
    avgState(ctr) AS avg_ctr,
    sumState(toUInt64(revision = 0)) AS windows,
    sumState(toUInt64(revision > 0)) AS late_updates,
    sumState(conversions_delta) AS conversions,
    sumState(revenue_delta) AS revenue
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(start) FROM ${DATABASE}.ctr_ml_cutover_v3)
  AND emitted_at < (SELECT min(stop) FROM ${DATABASE}.ctr_ml_cutover_v3)
GROUP BY product_id, window_minute;

WAIT UNTIL (SELECT min(start) FROM ${DATABASE}.ctr_ml_cutover_v3) + ${ML_CUTOVER_GRACE_SECONDS:-15};

INSERT INTO ${DATABASE}.ctr_ml_agg_v3
SELECT
    product_id,
    toStartOfMinute(window_end) AS window_minute,
    sumState(impressions_delta),
    sumState(clicks_delta),
    avgState(ctr),
    sumState(toUInt64(revision = 0)),
    sumState(toUInt64(revision > 0)),
    sumState(conversions_delta),
    sumState(revenue_delta)
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at < (SELECT min(start) FROM ${DATABASE}.ctr_ml_cutover_v3)
GROUP BY product_id, window_minute;

INSERT INTO ${DATABASE}.ctr_ml_cutover_v3
SELECT min(start), if(min(start) = toDateTime(0, 'UTC'), toDateTime(0, 'UTC'), toDateTime(now() + ${ML_CUTOVER_DELAY_SECONDS:-15}, 'UTC'))
FROM ${DATABASE}.ctr_ml_cutover_v3;

DROP TABLE IF EXISTS ${DATABASE}.ctr_ml_view;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_ml_view TO ${DATABASE}.ctr_ml_agg_v3
AS SELECT
    product_id,
    toStartOfMinute(window_end) AS window_minute,
    sumState(impressions_delta) AS impressions,
    sumState(clicks_delta) AS clicks,
    avgState(ctr) AS avg_ctr,
    sumState(toUInt64(revision = 0)) AS windows,
    sumState(toUInt64(revision > 0)) AS late_updates,
    sumState(conversions_delta) AS conversions,
    sumState(revenue_delta) AS revenue
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(stop) FROM ${DATABASE}.ctr_ml_cutover_v3)
GROUP BY product_id, window_minute;

WAIT UNTIL (SELECT min(stop) FROM ${DATABASE}.ctr_ml_cutover_v3) + ${ML_CUTOVER_GRACE_SECONDS:-15};

DROP TABLE IF EXISTS ${DATABASE}.ctr_ml_feed_v3;

DROP TABLE IF EXISTS ${DATABASE}.ctr_ml_summary;

DROP TABLE IF EXISTS ${DATABASE}.ctr_ml_agg_v2;

CREATE VIEW IF NOT EXISTS ${DATABASE}.ctr_ml_summary
AS SELECT
    product_id,
    window_minute,
    i AS impressions,
    c AS clicks,
    v AS conversions,
    r AS revenue,
    if(i = 0, 0, c / i) AS weighted_ctr,
    if(c = 0, 0, v / c) AS cvr,
    if(i = 0, 0, toFloat64(r) / i * 1000) AS ecpm,
    a AS avg_ctr,
    w AS windows,
    l AS late_updates
FROM
(
    SELECT product_id, window_minute, sumMerge(impressions) AS i, sumMerge(clicks) AS c, sumMerge(conversions) AS v,
        sumMerge(revenue) AS r, avgMerge(avg_ctr) AS a, sumMerge(windows) AS w, sumMerge(late_updates) AS l
    FROM ${DATABASE}.ctr_ml_agg_v3
    GROUP BY product_id, window_minute
);
