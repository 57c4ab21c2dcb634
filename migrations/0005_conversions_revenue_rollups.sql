-- Conversions and revenue in ctr_results_raw, and roll-ups per 5 minutes, hour and day with a
-- daily funnel. Revenue is Decimal(18, 6): summed exactly on 18.16 and current ClickHouse.
-- Rows written before this migration read conversions = 0 and revenue = 0.

ALTER TABLE ${DATABASE}.ctr_results_raw
    ADD COLUMN conversions UInt64 DEFAULT 0 AFTER ctr,
    ADD COLUMN conversions_delta UInt64 DEFAULT 0 AFTER conversions,
    ADD COLUMN revenue Decimal(18, 6) DEFAULT 0 AFTER conversions_delta,
    ADD COLUMN revenue_delta Decimal(18, 6) DEFAULT 0 AFTER revenue;

-- The roll-ups start empty: rows emitted from `start` on flow through their views, older rows
-- are backfilled once `start` + grace has passed (see docs/schema-tool.md).
CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_rollup_cutover
ENGINE = TinyLog
AS SELECT
    if((SELECT count() FROM ${DATABASE}.ctr_results_raw) = 0,
       toDateTime(0, 'UTC'), toDateTime(now() + ${ROLLUP_CUTOVER_DELAY_SECONDS:-15}, 'UTC')) AS start;

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_rollup_5m
(
    product_id   String,
    period_start DateTime('UTC'),
    impressions  AggregateFunction(sum, UInt64),
    clicks       AggregateFunction(sum, UInt64),
    conversions  AggregateFunction(sum, UInt64),
    revenue      AggregateFunction(sum, Decimal(18, 6))
)
ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(period_start) ORDER BY (product_id, period_start);

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_rollup_1h
(
    product_id   String,
    period_start DateTime('UTC'),
    impressions  AggregateFunction(sum, UInt64),
    clicks       AggregateFunction(sum, UInt64),
    conversions  AggregateFunction(sum, UInt64),
    revenue      AggregateFunction(sum, Decimal(18, 6))
)
ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(period_start) ORDER BY (product_id, period_start);

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_rollup_1d
(
    product_id   String,
    period_start DateTime('UTC'),
    impressions  AggregateFunction(sum, UInt64),
    clicks       AggregateFunction(sum, UInt64),
    conversions  AggregateFunction(sum, UInt64),
    revenue      AggregateFunction(sum, Decimal(18, 6))
)
ENGINE = AggregatingMergeTree PARTITION BY toYear(period_start) ORDER BY (product_id, period_start);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_rollup_5m_mv TO ${DATABASE}.ctr_rollup_5m
AS SELECT product_id, toStartOfFiveMinute(window_start) AS period_start,
    sumState(impressions_delta) AS impressions, sumState(clicks_delta) AS clicks,
    sumState(conversions_delta) AS conversions, sumState(revenue_delta) AS revenue
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(start) FROM ${DATABASE}.ctr_rollup_cutover)
GROUP BY product_id, period_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_rollup_1h_mv TO ${DATABASE}.ctr_rollup_1h
AS SELECT product_id, toStartOfHour(window_start) AS period_start,
    sumState(impressions_delta) AS impressions, sumState(clicks_delta) AS clicks,
    sumState(conversions_delta) AS conversions, sumState(revenue_delta) AS revenue
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(start) FROM ${DATABASE}.ctr_rollup_cutover)
GROUP BY product_id, period_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_rollup_1d_mv TO ${DATABASE}.ctr_rollup_1d
AS SELECT product_id, toStartOfDay(window_start) AS period_start,
    sumState(impressions_delta) AS impressions, sumState(clicks_delta) AS clicks,
    sumState(conversions_delta) AS conversions, sumState(revenue_delta) AS revenue
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(start) FROM ${DATABASE}.ctr_rollup_cutover)
GROUP BY product_id, period_start;

WAIT UNTIL (SELECT min(start) FROM ${DATABASE}.ctr_rollup_cutover) + ${ROLLUP_CUTOVER_GRACE_SECONDS:-15};

INSERT INTO ${DATABASE}.ctr_rollup_5m
SELECT product_id, toStartOfFiveMinute(window_start) AS period_start, sumState(impressions_delta), sumState(clicks_delta),
    sumState(conversions_delta), sumState(revenue_delta)
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at < (SELECT min(start) FROM ${DATABASE}.ctr_rollup_cutover)
GROUP BY product_id, period_start;

INSERT INTO ${DATABASE}.ctr_rollup_1h
SELECT product_id, toStartOfHour(window_start) AS period_start, sumState(impressions_delta), sumState(clicks_delta),
    sumState(conversions_delta), sumState(revenue_delta)
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at < (SELECT min(start) FROM ${DATABASE}.ctr_rollup_cutover)
GROUP BY product_id, period_start;

INSERT INTO ${DATABASE}.ctr_rollup_1d
SELECT product_id, toStartOfDay(window_start) AS period_start, sumState(impressions_delta), sumState(clicks_delta),
    sumState(conversions_delta), sumState(revenue_delta)
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at < (SELECT min(start) FROM ${DATABASE}.ctr_rollup_cutover)
GROUP BY product_id, period_start;

-- Where do people drop off? Impressions -> clicks -> conversions per product and day, with
-- step rates computed from sums (never averages of ratios).
CREATE VIEW IF NOT EXISTS ${DATABASE}.ctr_funnel_daily
AS SELECT
    product_id,
    day,
    i AS impressions,
    c AS clicks,
    v AS conversions,
    r AS revenue,
    if(i = 0, 0, c / i) AS click_rate,
    if(c = 0, 0, v / c) AS conversion_rate,
    if(i = 0, 0, v / i) AS impression_to_conversion_rate,
    i - c AS dropped_after_impression,
    c - v AS dropped_after_click
FROM
(
    SELECT product_id, period_start AS day, sumMerge(impressions) AS i, sumMerge(clicks) AS c,
        sumMerge(conversions) AS v, sumMerge(revenue) AS r
    FROM ${DATABASE}.ctr_rollup_1d
    GROUP BY product_id, period_start
);
