-- Provenance once per insert batch, and fencing of deposed writers (docs/exactly-once.md).
--
-- ctr-aggregator no longer writes source_partitions/source_offsets on every row of
-- ctr_results_raw (new rows leave them empty; rows written before keep theirs and are still read
-- on recovery). Instead each insert batch writes one row here first: the consumer position of
-- every partition its rows reflect.
CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_batches
(
    batch_id        String,
    writer          String,
    consumer_group  String,
    generation      Int32,
    created_at      DateTime('UTC'),
    window_end_min  DateTime('UTC'),
    window_end_max  DateTime('UTC'),
    rows            UInt32,
    partitions      Array(String),
    next_offsets    Array(Int64)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_end_max)
ORDER BY (window_end_max, batch_id);

-- Fencing tokens. scope 'group:<consumer group>' holds the generations of the group: a batch
-- of an older generation is refused at the server. scope 'writer:<instance>' holds a writer's
-- retry epoch: an attempt older than the writer's latest verification is refused.
CREATE TABLE IF NOT EXISTS ${DATABASE}.ctr_fences
(
    scope       String,
    token       Int64,
    writer      String,
    created_at  DateTime('UTC')
)
ENGINE = MergeTree
ORDER BY (scope, token);
