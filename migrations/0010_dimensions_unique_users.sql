-- Dimensions and unique users (issue 14).
--
-- ctr_results_raw gains, in place (existing rows read as '' and 0):
--   campaign_id, country, device_type  String: the standard dimensions `ctr-aggregator --dimensions`
--       writes (a row's key is product_id, the dimensions and window_start; dimensions not
--       configured are ''). Other dimensions are further String columns added with ALTER TABLE.
--   unique_impression_users, unique_click_users  UInt64: distinct user_id among the window's
--       counted impressions / clicks as of the revision, exact, cumulative like `impressions`.
--   impression_user_hashes, click_user_hashes  Array(UInt64): the users first seen in the window
--       by this revision (64-bit hashes): over all revisions each user of the window once. They
--       feed the roll-ups' sketches, so late revisions and replays never count a user twice.
--
-- Roll-ups per dimension values, with distinct users over the whole period (not a sum of window
-- figures): ctr_rollup_5m_v2, ctr_rollup_1h_v2, ctr_rollup_1d_v2 (AggregatingMergeTree).
-- impression_users / click_users are uniqCombined sketches, built from the hashes with the
-- -Array combinator (ClickHouse 18.16 cannot store them under the type of plain uniqCombined):
-- read them with uniqCombinedArrayMerge(impression_users). uniqCombined is exact up to a few
-- thousand distinct users per group, then an HyperLogLog with 2^17 cells: about 0.5 % relative
-- error. The first-generation roll-ups (ctr_rollup_5m/1h/1d) keep being fed as before.
-- Rows emitted before the cut-over are backfilled from ctr_results_raw; their users are not
-- known (they read as 0 users). The cut-over timing is 0005's (ROLLUP_CUTOVER_*).
--
-- ctr_latest_view, third generation: the latest window per (product, dimensions) at its
-- highest revision, with unique_impression_users and unique_click_users, in ctr_latest_v3
-- (ReplacingMergeTree(version), ORDER BY product_id and the dimensions), by 0008's pattern and
-- timings (ML_CUTOVER_*).

ALTER TABLE ${DATABASE}.ctr_results_raw
    ADD COLUMN unique_impression_users UInt64 DEFAULT 0,
    ADD COLUMN unique_click_users UInt64 DEFAULT 0,
    ADD COLUMN impression_user_hashes Array(UInt64),
    ADD COLUMN click_user_hashes Array(UInt64),
    ADD COLUMN campaign_id String DEFAULT '',
    ADD COLUMN country String DEFAULT '',
    ADD COLUMN device_type String DEFAULT '';

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_rollup_v2_cutover
ENGINE = TinyLog
AS SELECT
    if((SELECT count() FROM ${DATABASE}.ctr_results_raw) = 0,
       toDateTime(0, 'UTC'), toDateTime(now() + ${ROLLUP_CUTOVER_DELAY_SECONDS:-15}, 'UTC')) AS start;

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_rollup_5m_v2
(
    product_id       String,
    campaign_id      String,
    country          String,
    device_type      String,
    period_start     DateTime('UTC'),
    impressions      AggregateFunction(sum, UInt64),
    clicks           AggregateFunction(sum, UInt64),
    conversions      AggregateFunction(sum, UInt64),
    revenue          AggregateFunction(sum, Decimal(18, 6)),
    impression_users AggregateFunction(uniqCombinedArray, Array(UInt64)),
    click_users      AggregateFunction(uniqCombinedArray, Array(UInt64))
)
ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(period_start) ORDER BY (product_id, campaign_id, country, device_type, period_start);

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_rollup_1h_v2
(
    product_id       String,
    campaign_id      String,
    country          String,
    device_type      String,
    period_start     DateTime('UTC'),
    impressions      AggregateFunction(sum, UInt64),
    clicks           AggregateFunction(sum, UInt64),
    conversions      AggregateFunction(sum, UInt64),
    revenue          AggregateFunction(sum, Decimal(18, 6)),
    impression_users AggregateFunction(uniqCombinedArray, Array(UInt64)),
    click_users      AggregateFunction(uniqCombinedArray, Array(UInt64))
)
ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(period_start) ORDER BY (product_id, campaign_id, country, device_type, period_start);

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_rollup_1d_v2
(
    product_id       String,
    campaign_id      String,
    country          String,
    device_type      String,
    period_start     DateTime('UTC'),
    impressions      AggregateFunction(sum, UInt64),
    clicks           AggregateFunction(sum, UInt64),
    conversions      AggregateFunction(sum, UInt64),
    revenue          AggregateFunction(sum, Decimal(18, 6)),
    impression_users AggregateFunction(uniqCombinedArray, Array(UInt64)),
    click_users      AggregateFunction(uniqCombinedArray, Array(UInt64))
)
ENGINE = AggregatingMergeTree PARTITION BY toYear(period_start) ORDER BY (product_id, campaign_id, country, device_type, period_start);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_rollup_5m_v2_mv TO ${DATABASE}.ctr_rollup_5m_v2
AS SELECT product_id, campaign_id, country, device_type, toStartOfFiveMinute(window_start) AS period_start,
    sumState(impressions_delta) AS impressions, sumState(clicks_delta) AS clicks,
    sumState(conversions_delta) AS conversions, sumState(revenue_delta) AS revenue,
    uniqCombinedArrayState(impression_user_hashes) AS impression_users, uniqCombinedArrayState(click_user_hashes) AS click_users
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(start) FROM ${DATABASE}.ctr_rollup_v2_cutover)
GROUP BY product_id, campaign_id, country, device_type, period_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_rollup_1h_v2_mv TO ${DATABASE}.ctr_rollup_1h_v2
AS SELECT product_id, campaign_id, country, device_type, toStartOfHour(window_start) AS period_start,
    sumState(impressions_delta) AS impressions, sumState(clicks_delta) AS clicks,
    sumState(conversions_delta) AS conversions, sumState(revenue_delta) AS revenue,
    uniqCombinedArrayState(impression_user_hashes) AS impression_users, uniqCombinedArrayState(click_user_hashes) AS click_users
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(start) FROM ${DATABASE}.ctr_rollup_v2_cutover)
GROUP BY product_id, campaign_id, country, device_type, period_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_rollup_1d_v2_mv TO ${DATABASE}.ctr_rollup_1d_v2
AS SELECT product_id, campaign_id, country, device_type, toStartOfDay(window_start) AS period_start,
    sumState(impressions_delta) AS impressions, sumState(clicks_delta) AS clicks,
    sumState(conversions_delta) AS conversions, sumState(revenue_delta) AS revenue,
    uniqCombinedArrayState(impression_user_hashes) AS impression_users, uniqCombinedArrayState(click_user_hashes) AS click_users
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(start) FROM ${DATABASE}.ctr_rollup_v2_cutover)
GROUP BY product_id, campaign_id, country, device_type, period_start;

WAIT UNTIL (SELECT min(start) FROM ${DATABASE}.ctr_rollup_v2_cutover) + ${ROLLUP_CUTOVER_GRACE_SECONDS:-15};

INSERT INTO ${DATABASE}.ctr_rollup_5m_v2
SELECT product_id, campaign_id, country, device_type, toStartOfFiveMinute(window_start) AS period_start,
    sumState(impressions_delta), sumState(clicks_delta),
    sumState(conversions_delta), sumState(revenue_delta),
    uniqCombinedArrayState(impression_user_hashes), uniqCombinedArrayState(click_user_hashes)
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at < (SELECT min(start) FROM ${DATABASE}.ctr_rollup_v2_cutover)
GROUP BY product_id, campaign_id, country, device_type, period_start;

INSERT INTO ${DATABASE}.ctr_rollup_1h_v2
SELECT product_id, campaign_id, country, device_type, toStartOfHour(window_start) AS period_start,
    sumState(impressions_delta), sumState(clicks_delta),
    sumState(conversions_delta), sumState(revenue_delta),
    uniqCombinedArrayState(impression_user_hashes), uniqCombinedArrayState(click_user_hashes)
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at < (SELECT min(start) FROM ${DATABASE}.ctr_rollup_v2_cutover)
GROUP BY product_id, campaign_id, country, device_type, period_start;

INSERT INTO ${DATABASE}.ctr_rollup_1d_v2
SELECT product_id, campaign_id, country, device_type, toStartOfDay(window_start) AS period_start,
    sumState(impressions_delta), sumState(clicks_delta),
    sumState(conversions_delta), sumState(revenue_delta),
    uniqCombinedArrayState(impression_user_hashes), uniqCombinedArrayState(click_user_hashes)
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at < (SELECT min(start) FROM ${DATABASE}.ctr_rollup_v2_cutover)
GROUP BY product_id, campaign_id, country, device_type, period_start;

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_latest_cutover_v3
ENGINE = TinyLog
AS SELECT
    if((SELECT count() FROM ${DATABASE}.ctr_results_raw) = 0,
       toDateTime(0, 'UTC'), toDateTime(now() + ${ML_CUTOVER_DELAY_SECONDS:-15}, 'UTC')) AS start,
    toDateTime('2105-01-01 00:00:00', 'UTC') AS stop;

CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_latest_v3
(
    product_id              String,
    campaign_id             String,
    country                 String,
    device_type             String,
    window_start            DateTime('UTC'),
    window_end              DateTime('UTC'),
    impressions             UInt64,
    clicks                  UInt64,
    ctr                     Float64,
    revision                UInt32,
    emitted_at              DateTime('UTC'),
    version                 UInt64,
    conversions             UInt64,
    revenue                 Decimal(18, 6),
    unique_impression_users UInt64,
    unique_click_users      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (product_id, campaign_id, country, device_type);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_latest_feed_v3 TO ${DATABASE}.ctr_latest_v3
AS SELECT
    product_id,
    campaign_id,
    country,
    device_type,
    window_start,
    window_end,
    impressions,
    clicks,
    ctr,
    revision,
    emitted_at,
    toUInt64(toUnixTimestamp(window_start)) * 1000000 + revision AS version,
    conversions,
    revenue,
    unique_impression_users,
    unique_click_users
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(start) FROM ${DATABASE}.ctr_latest_cutover_v3)
  AND emitted_at < (SELECT min(stop) FROM ${DATABASE}.ctr_latest_cutover_v3);

WAIT UNTIL (SELECT min(start) FROM ${DATABASE}.ctr_latest_cutover_v3) + ${ML_CUTOVER_GRACE_SECONDS:-15};

INSERT INTO ${DATABASE}.ctr_latest_v3
SELECT
    product_id,
    campaign_id,
    country,
    device_type,
    argMax(window_start, v),
    argMax(window_end, v),
    argMax(impressions, v),
    argMax(clicks, v),
    argMax(ctr, v),
    argMax(revision, v),
    argMax(emitted_at, v),
    max(v),
    argMax(conversions, v),
    argMax(revenue, v),
    argMax(unique_impression_users, v),
    argMax(unique_click_users, v)
FROM
(
    SELECT product_id, campaign_id, country, device_type, window_start, window_end, impressions, clicks, ctr, revision,
        emitted_at, conversions, revenue, unique_impression_users, unique_click_users,
        toUInt64(toUnixTimestamp(window_start)) * 1000000 + revision AS v
    FROM ${DATABASE}.ctr_results_raw
    WHERE emitted_at < (SELECT min(start) FROM ${DATABASE}.ctr_latest_cutover_v3)
)
GROUP BY product_id, campaign_id, country, device_type;

INSERT INTO ${DATABASE}.ctr_latest_cutover_v3
SELECT min(start), if(min(start) = toDateTime(0, 'UTC'), toDateTime(0, 'UTC'), toDateTime(now() + ${ML_CUTOVER_DELAY_SECONDS:-15}, 'UTC'))
FROM ${DATABASE}.ctr_latest_cutover_v3;

DROP TABLE IF EXISTS ${DATABASE}.ctr_latest_view;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_latest_view TO ${DATABASE}.ctr_latest_v3
AS SELECT
    product_id,
    campaign_id,
    country,
    device_type,
    window_start,
    window_end,
    impressions,
    clicks,
    ctr,
    revision,
    emitted_at,
    toUInt64(toUnixTimestamp(window_start)) * 1000000 + revision AS version,
    conversions,
    revenue,
    unique_impression_users,
    unique_click_users
FROM ${DATABASE}.ctr_results_raw
WHERE emitted_at >= (SELECT min(stop) FROM ${DATABASE}.ctr_latest_cutover_v3);

WAIT UNTIL (SELECT min(stop) FROM ${DATABASE}.ctr_latest_cutover_v3) + ${ML_CUTOVER_GRACE_SECONDS:-15};

DROP TABLE IF EXISTS ${DATABASE}.ctr_latest_feed_v3;
