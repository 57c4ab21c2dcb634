#!/usr/bin/env python3
"""Runs the shipped migrations and the SQL the tools send on current ClickHouse (chdb, in-process).

usage: check_current_clickhouse.py RENDERED_JSON [CLUSTER_RENDERED_JSON]
RENDERED_JSON is the output of `schema-tool render --database ctr`; its statements are run.
CLUSTER_RENDERED_JSON, the output of `schema-tool render --database ctr --cluster ctr_cluster`,
is parsed (EXPLAIN AST: an in-process engine has no cluster to run ON CLUSTER on), together with
the SQL schema-tool sends only in cluster mode. Exits non-zero on the first failure, naming the
statement.
"""
import json
import sys

from chdb import session

SAMPLE_ROWS = """{"product_id":"p-1","window_start":"2023-11-14 22:13:20","window_end":"2023-11-14 22:13:30","impressions":4,"clicks":1,"ctr":0.25,"impressions_delta":4,"clicks_delta":1,"revision":0,"emitted_at":"2023-11-14 22:13:40","source_partitions":["impressions:0"],"source_offsets":[7],"batch_id":"b-1"}
{"product_id":"p-1","window_start":"2023-11-14 22:13:20","window_end":"2023-11-14 22:13:30","impressions":6,"clicks":1,"ctr":0.1666,"impressions_delta":2,"clicks_delta":0,"revision":1,"emitted_at":"2023-11-14 22:13:41","source_partitions":["impressions:0"],"source_offsets":[9],"batch_id":"b-2"}
"""

# What ctr-aggregator and schema-tool send besides the migrations.
TOOL_QUERIES = [
    # ClickHouseResultsStore (ctr-aggregator): schema check, fences, staging, the fenced insert,
    # verification, recovery.
    "SELECT name FROM system.tables WHERE database = 'ctr' AND name IN ('ctr_batches', 'ctr_fences', 'ctr_results_raw')",
    "INSERT INTO ctr.ctr_fences (scope, token, writer, created_at) VALUES ('group:g', 3, 'w', now())",
    "SELECT query_id FROM system.processes WHERE query_id LIKE 'ctr-agg-%' AND NOT startsWith(query_id, 'ctr-agg-w-')",
    "CREATE TEMPORARY TABLE IF NOT EXISTS ctr_staging (" + ", ".join(
        f"{name} {kind}" for name, kind in [
            ("product_id", "String"), ("window_start", "DateTime('UTC')"), ("window_end", "DateTime('UTC')"), ("impressions", "UInt64"),
            ("clicks", "UInt64"), ("ctr", "Float64"), ("impressions_delta", "UInt64"), ("clicks_delta", "UInt64"), ("conversions", "UInt64"),
            ("conversions_delta", "UInt64"), ("revenue", "Decimal(18, 6)"), ("revenue_delta", "Decimal(18, 6)"), ("revision", "UInt32"),
            ("emitted_at", "DateTime('UTC')"), ("batch_id", "String")]) + ") ENGINE = Memory",
    "TRUNCATE TABLE ctr_staging",
    "INSERT INTO ctr_staging (product_id, window_start, window_end, impressions, clicks, batch_id) "
    "VALUES ('p-9', toDateTime(1700000000, 'UTC'), toDateTime(1700000010, 'UTC'), 3, 1, 'b-9')",
    "INSERT INTO ctr.ctr_batches (batch_id, writer, consumer_group, generation, created_at, window_end_min, window_end_max, rows, "
    "partitions, next_offsets) VALUES ('b-9', 'w', 'g', 3, now(), toDateTime(1700000010, 'UTC'), toDateTime(1700000010, 'UTC'), 1, "
    "['impressions:0'], [42])",
    "INSERT INTO ctr.ctr_results_raw (product_id, window_start, window_end, impressions, clicks, ctr, impressions_delta, clicks_delta, "
    "conversions, conversions_delta, revenue, revenue_delta, revision, emitted_at, batch_id) SELECT product_id, window_start, window_end, "
    "impressions, clicks, ctr, impressions_delta, clicks_delta, conversions, conversions_delta, revenue, revenue_delta, revision, "
    "emitted_at, batch_id FROM ctr_staging WHERE batch_id = 'b-9' AND throwIf((SELECT count() FROM ctr_staging WHERE batch_id = 'b-9') != 1 "
    "OR (SELECT max(token) FROM ctr.ctr_fences WHERE scope = 'group:g') > 3 "
    "OR (SELECT max(token) FROM ctr.ctr_fences WHERE scope = 'writer:w') > 0) = 0",
    "SELECT max(token) FROM ctr.ctr_fences WHERE scope = 'writer:w'",
    "SELECT count() FROM ctr.ctr_results_raw WHERE window_end >= toDateTime(1700000010, 'UTC') "
    "AND window_end <= toDateTime(1700000010, 'UTC') AND batch_id = 'b-9'",
    "SELECT count(), toUnixTimestamp(min(window_end_min)) FROM ctr.ctr_batches WHERE hasAny(partitions, ['impressions:0'])",
    "SELECT product_id, toUnixTimestamp(window_start), max(revision), argMax(impressions, revision), argMax(clicks, revision), "
    "argMax(conversions, revision), toString(argMax(revenue, revision)), argMax(batch_id, revision), "
    "arrayStringConcat(argMax(source_partitions, revision), ','), "
    "arrayStringConcat(arrayMap(x -> toString(x), argMax(source_offsets, revision)), ',') "
    "FROM ctr.ctr_results_raw WHERE window_end > toDateTime(1699999990, 'UTC') GROUP BY window_start, product_id",
    "SELECT batch_id, arrayStringConcat(partitions, ','), arrayStringConcat(arrayMap(x -> toString(x), next_offsets), ',') "
    "FROM ctr.ctr_batches WHERE window_end_max > toDateTime(1699999990, 'UTC') AND hasAny(partitions, ['impressions:0'])",
    "SELECT product_id, window_minute, avgMerge(avg_ctr) AS avg_ctr, sumMerge(impressions), sumMerge(clicks) FROM ctr.ctr_ml_view GROUP BY product_id, window_minute",
    "SELECT product_id, window_start, impressions, clicks, ctr, revision FROM ctr.ctr_latest_view FINAL",
    "CREATE TABLE IF NOT EXISTS ctr.schema_migrations (version UInt32, name String, checksum String, statements_total UInt32, "
    "statements_done UInt32, state String, error String, recorded_at DateTime('UTC'), duration_ms UInt64, applied_by String, seq UInt64, "
    "statement_checksums Array(String), query_id String, server String) ENGINE = MergeTree ORDER BY (version, seq)",
    "SELECT version, argMax(name, seq), argMax(replaceRegexpAll(error, '[\\t\\n]', ' '), seq), toString(argMax(recorded_at, seq)) "
    "FROM ctr.schema_migrations GROUP BY version ORDER BY version",
    "CREATE TABLE IF NOT EXISTS ctr.schema_migrations_lock (holder String, requested_us UInt64, expires_us UInt64, released UInt8) "
    "ENGINE = MergeTree ORDER BY requested_us",
    "SELECT holder FROM ctr.schema_migrations_lock GROUP BY holder HAVING max(released) = 0 AND max(expires_us) > 0 "
    "ORDER BY min(requested_us), holder LIMIT 1",
    "SELECT name, engine FROM system.tables WHERE database = 'ctr'",
    "SELECT product_id, window_minute, weighted_ctr, windows, late_updates FROM ctr.ctr_ml_summary",
    "SELECT product_id, period_end, impressions_1m, clicks_1m, ctr_1m, impressions_5m, clicks_5m, ctr_5m FROM ctr.ctr_sliding_ctr",
    # schema-tool: ledger upgrade and reads, data-statement outcomes, cut-over bounds, verify --data.
    "SELECT name FROM system.columns WHERE database = 'ctr' AND table = 'schema_migrations'",
    "SELECT version, argMax(name, seq), argMax(statements_done, seq), max(seq), arrayStringConcat(argMax(statement_checksums, seq), ','), "
    "argMax(query_id, seq), argMax(server, seq) FROM ctr.schema_migrations GROUP BY version ORDER BY version",
    "SELECT hostName()",
    "SELECT count() FROM system.processes WHERE query_id = 'schema-tool-4-5-x'",
    "SYSTEM FLUSH LOGS",
    "EXISTS TABLE system.query_log",
    "SELECT toUInt8(CAST(2 AS Enum8('QueryStart' = 1, 'QueryFinish' = 2, 'ExceptionBeforeStart' = 3, 'ExceptionWhileProcessing' = 4)))",
    "SELECT toInt64(toUnixTimestamp(min(start))), toInt64(toUnixTimestamp(now())) FROM ctr.ctr_ml_cutover_v3",
    "SELECT toInt64(toUnixTimestamp(start)) FROM (SELECT if((SELECT count() FROM ctr.ctr_results_raw) = 0, toDateTime(0, 'UTC'), "
    "toDateTime(now() + 15, 'UTC')) AS start, toDateTime('2105-01-01 00:00:00', 'UTC') AS stop)",
    "SELECT name, engine, sorting_key FROM system.tables WHERE database = 'ctr'",
    "SELECT `product_id`, `window_minute`, sumMerge(`impressions`) AS `impressions`, avgMerge(`avg_ctr`) AS `avg_ctr`, "
    "sumMerge(`revenue`) AS `revenue` FROM ctr.`ctr_ml_agg_v3` GROUP BY `product_id`, `window_minute`",
    "SELECT * FROM ctr.`ctr_rollup_1d` FINAL",
    "SELECT * FROM ctr.`ctr_funnel_daily`",
    "CREATE TABLE ctr.`schema_tool_check\\\\` (x UInt8) ENGINE = Memory",
    "DROP TABLE IF EXISTS ctr.`schema_tool_check\\\\`",
]

# Parsed only: the in-process engine has no query log.
PARSED_QUERIES = [
    "SELECT toUInt8(type), written_rows FROM system.query_log WHERE query_id = 'schema-tool-4-5-x' ORDER BY event_time",
    "ALTER TABLE ctr.schema_migrations ADD COLUMN statement_checksums Array(String), ADD COLUMN query_id String, ADD COLUMN server String",
]


# What schema-tool sends only with --cluster (parsed, not run).
CLUSTER_QUERIES = [
    "CREATE DATABASE IF NOT EXISTS ctr ON CLUSTER ctr_cluster",
    "CREATE TABLE IF NOT EXISTS ctr.schema_migrations ON CLUSTER ctr_cluster (version UInt32, name String, checksum String, "
    "statements_total UInt32, statements_done UInt32, state String, error String, recorded_at DateTime('UTC'), duration_ms UInt64, "
    "applied_by String, seq UInt64, statement_checksums Array(String), query_id String, server String) "
    "ENGINE = ReplicatedMergeTree('/clickhouse/schema_tool/ctr/schema_migrations', '{shard}_{replica}') ORDER BY (version, seq)",
    "SELECT count() FROM system.clusters WHERE cluster = 'ctr_cluster'",
    "SELECT zookeeper_path FROM system.replicas WHERE database = 'ctr' AND table = 'ctr_ml_cutover'",
    "SELECT name FROM system.zookeeper WHERE path = '/clickhouse/tables/01/ctr/ctr_ml_cutover/replicas'",
    "SELECT groupArray(name) FROM (SELECT name FROM system.zookeeper WHERE path = '/clickhouse/tables/01/ctr/ctr_ml_cutover/replicas/r1/parts' ORDER BY name)",
]


def parse_cluster_statements(db, path, version):
    with open(path) as handle:
        migrations = json.load(handle)
    statements = [(m["version"], s) for m in migrations for s in m["statements"] if "WAIT UNTIL" not in s.upper()]
    statements += [(0, q) for q in CLUSTER_QUERIES]
    for number, statement in statements:
        try:
            db.query("EXPLAIN AST " + statement)
        except Exception as error:  # noqa: BLE001
            print(f"FAILED to parse cluster statement of migration {number} on ClickHouse {version}: {statement}\n{error}")
            return None
    return len(statements)


def main():
    with open(sys.argv[1]) as handle:
        migrations = json.load(handle)
    db = session.Session()
    db.query("CREATE DATABASE IF NOT EXISTS ctr")
    version = db.query("SELECT version()", "CSV").data().strip()
    for migration in migrations:
        if migration["version"] == 4:
            # Data written before the view evolution must survive it.
            db.query("INSERT INTO ctr.ctr_results_raw FORMAT JSONEachRow " + SAMPLE_ROWS)
        for statement in migration["statements"]:
            if statement.lstrip().upper().startswith("WAIT UNTIL") or "\nWAIT UNTIL" in statement.upper():
                continue  # a schema-tool directive, not SQL
            try:
                db.query(statement)
            except Exception as error:  # noqa: BLE001 - report any engine error
                print(f"FAILED migration {migration['version']} ({migration['name']}) on ClickHouse {version}: {error}")
                return 1
    for query in TOOL_QUERIES:
        try:
            db.query(query)
        except Exception as error:  # noqa: BLE001
            print(f"FAILED tool query on ClickHouse {version}: {query}\n{error}")
            return 1
    for query in PARSED_QUERIES:
        try:
            db.query("EXPLAIN AST " + query)
        except Exception as error:  # noqa: BLE001
            print(f"FAILED to parse tool query on ClickHouse {version}: {query}\n{error}")
            return 1
    totals = db.query("SELECT sumMerge(impressions), sumMerge(clicks) FROM ctr.ctr_ml_view WHERE product_id = 'p-1'", "CSV").data().strip()
    latest = db.query("SELECT impressions, revision FROM ctr.ctr_latest_view FINAL WHERE product_id = 'p-1'", "CSV").data().strip()
    fenced = db.query("SELECT count() FROM ctr.ctr_results_raw WHERE batch_id = 'b-9'", "CSV").data().strip()
    if fenced != "1":
        print(f"FAILED the fenced insert on ClickHouse {version}: {fenced} rows")
        return 1
    if totals != "6,1" or latest != "6,1":
        print(f"FAILED view contents on ClickHouse {version}: ml totals {totals!r}, latest {latest!r}")
        return 1
    print(f"ok: {sum(len(m['statements']) for m in migrations)} migration statements and {len(TOOL_QUERIES)} tool queries on ClickHouse {version}")
    if len(sys.argv) > 2:
        parsed = parse_cluster_statements(db, sys.argv[2], version)
        if parsed is None:
            return 1
        print(f"ok: {parsed} cluster statements parse on ClickHouse {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
