-- Per product and minute of window_end: sums of the deltas (so late updates are counted once)
-- and avg_ctr, the average of `ctr` over the emitted rows of that minute (each revision of a
-- window counts once). The exact click-through rate of the minute is
-- sumMerge(clicks) / sumMerge(impressions).
CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_ml_view
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(window_minute)
ORDER BY (product_id, window_minute)
AS SELECT
    product_id,
    toStartOfMinute(window_end) AS window_minute,
    sumState(impressions_delta) AS impressions,
    sumState(clicks_delta) AS clicks,
    avgState(ctr) AS avg_ctr
FROM ${DATABASE}.ctr_results_raw
GROUP BY product_id, window_minute;
