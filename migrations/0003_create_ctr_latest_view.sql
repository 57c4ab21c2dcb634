-- Per product, the latest window at its highest revision. `version` orders windows by start
-- and revisions within a window; read it with FINAL (or argMax(..., version)) because
-- ReplacingMergeTree replaces rows only when parts merge.
CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_latest_view
ENGINE = ReplacingMergeTree(version)
ORDER BY product_id
AS SELECT
    product_id,
    window_start,
    window_end,
    impressions,
    clicks,
    ctr,
    revision,
    emitted_at,
    toUInt64(toUnixTimestamp(window_start)) * 1000000 + revision AS version
FROM ${DATABASE}.ctr_results_raw;
