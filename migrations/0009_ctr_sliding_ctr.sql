-- CTR per product over the last minute and the last 5 minutes, sliding every 10 seconds, for
-- the last hour: one row per (product, period_end) where period_end steps by the window size
-- (10 s). Computed from the sums of the deltas of the 10-second rows (late updates count once),
-- never as an average of ratios: each row's deltas are spread over the 30 periods whose
-- 5-minute range contains its window (the first 6 of them also get it for the 1-minute range).
-- A plain view: it reads ctr_results_raw at query time and stores nothing.
CREATE VIEW IF NOT EXISTS ${DATABASE}.ctr_sliding_ctr AS
SELECT
    product_id,
    toDateTime(toUInt32(window_end) + step * 10, 'UTC') AS period_end,
    sumIf(impressions_delta, step < 6) AS impressions_1m,
    sumIf(clicks_delta, step < 6) AS clicks_1m,
    if(impressions_1m = 0, 0, clicks_1m / impressions_1m) AS ctr_1m,
    sum(impressions_delta) AS impressions_5m,
    sum(clicks_delta) AS clicks_5m,
    if(impressions_5m = 0, 0, clicks_5m / impressions_5m) AS ctr_5m
FROM ${DATABASE}.ctr_results_raw
ARRAY JOIN range(30) AS step
WHERE window_end > now() - 3900
GROUP BY product_id, period_end
HAVING period_end <= now() AND period_end > now() - 3600;
