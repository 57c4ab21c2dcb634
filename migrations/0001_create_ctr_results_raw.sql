-- One row per window emission of a product (see README "Output rows").
-- Invariants: for each (product_id, window_start) the sum of the *_delta columns over all
-- revisions equals the true counts, and the row with the highest revision carries them.
-- source_partitions/source_offsets and batch_id are written by ctr-aggregator for exactly-once
-- recovery (highest offset per topic:partition reflected in the window) and idempotent retries.
CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_results_raw
(
    product_id         String,
    window_start       DateTime('UTC'),
    window_end         DateTime('UTC'),
    impressions        UInt64,
    clicks             UInt64,
    ctr                Float64,
    impressions_delta  UInt64,
    clicks_delta       UInt64,
    revision           UInt32,
    emitted_at         DateTime('UTC'),
    source_partitions  Array(String),
    source_offsets     Array(Int64),
    batch_id           String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(window_end)
ORDER BY (window_end, product_id);
