"""Apache Flink SQL contender of scripts/bench.py (run with the bench's own virtual environment).

    bench_flink.py IMPRESSIONS.jsonl CLICKS.jsonl EXPECTED_EVENTS [PARALLELISM]

The same events as the aggregator's topics, dumped one JSON value per line, are read through the
filesystem connector with the json format (the Kafka SQL connector jar is not on PyPI, so Flink
reads files, not Kafka: its figure excludes consuming). Each file is a table with its own event-time
watermark `ts - 2 s`, as each Kafka topic would be; the union is counted in `TUMBLE` windows of
10 s per product (impressions and clicks), into the blackhole sink.

In one JVM: a warm-up job on the first 20,000 lines of each file (class loading, JIT), a
calibration job on the same small input, then the timed job on everything. Prints
`RESULT flink-calibration <lines> <seconds> cpu=<CPU seconds>` and
`RESULT flink <events> <seconds> cpu=<CPU seconds>`, CPU being that of this process and the JVM it
runs (every thread), from /proc; bench.py subtracts the calibration from the timed job, which
removes what every job pays whatever its input (the local mini-cluster's start, planning).
"""
import os
import sys
import tempfile
import time

from pyflink.table import EnvironmentSettings, TableEnvironment


def table_ddl(name, path):
    return f"""
        CREATE TEMPORARY TABLE {name} (
            product_id STRING,
            `timestamp` BIGINT,
            ts AS TO_TIMESTAMP_LTZ(`timestamp`, 3),
            WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
        ) WITH (
            'connector' = 'filesystem',
            'path' = 'file://{path}',
            'format' = 'json',
            'json.ignore-parse-errors' = 'true'
        )"""


VIEW = """
    CREATE TEMPORARY VIEW events_{suffix} AS
    SELECT product_id, ts, 1 AS impression, 0 AS click FROM impressions_{suffix}
    UNION ALL
    SELECT product_id, ts, 0 AS impression, 1 AS click FROM clicks_{suffix}
"""

QUERY = """
    INSERT INTO results
    SELECT product_id, window_start, window_end, SUM(impression), SUM(click)
    FROM TABLE(TUMBLE(TABLE events_{suffix}, DESCRIPTOR(ts), INTERVAL '10' SECOND))
    GROUP BY product_id, window_start, window_end
"""


def tree_cpu_seconds(root):
    """User + system CPU seconds of `root` and its descendants (here: this Python process and the
    JVM it started), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    pending.extend(int(child) for child in f.read().split())
        except OSError:
            pass
    return total / ticks


def main():
    impressions, clicks, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    parallelism = sys.argv[4] if len(sys.argv) > 4 else "1"
    settings = EnvironmentSettings.in_streaming_mode()
    env = TableEnvironment.create(settings)
    configuration = env.get_config()
    configuration.set("parallelism.default", parallelism)
    configuration.set("table.exec.source.idle-timeout", "1 s")
    env.execute_sql("""
        CREATE TEMPORARY TABLE results (
            product_id STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), impressions INT, clicks INT
        ) WITH ('connector' = 'blackhole')""")

    small = tempfile.mkdtemp(prefix="flink-small-")
    for source, name in ((impressions, "impressions.jsonl"), (clicks, "clicks.jsonl")):
        with open(source) as f, open(os.path.join(small, name), "w") as out:
            for index, line in enumerate(f):
                if index >= 20_000:
                    break
                out.write(line)
    for suffix in ("warmup", "calibration"):
        env.execute_sql(table_ddl(f"impressions_{suffix}", os.path.join(small, "impressions.jsonl")))
        env.execute_sql(table_ddl(f"clicks_{suffix}", os.path.join(small, "clicks.jsonl")))
        env.execute_sql(VIEW.format(suffix=suffix))
    env.execute_sql(table_ddl("impressions_timed", os.path.abspath(impressions)))
    env.execute_sql(table_ddl("clicks_timed", os.path.abspath(clicks)))
    env.execute_sql(VIEW.format(suffix="timed"))
    env.execute_sql(QUERY.format(suffix="warmup")).wait()

    small_lines = sum(1 for name in os.listdir(small) for _ in open(os.path.join(small, name)))
    cpu_before = tree_cpu_seconds(os.getpid())
    start = time.time()
    env.execute_sql(QUERY.format(suffix="calibration")).wait()
    print("RESULT flink-calibration %d %.6f cpu=%.3f" % (small_lines, time.time() - start, tree_cpu_seconds(os.getpid()) - cpu_before), flush=True)

    cpu_before = tree_cpu_seconds(os.getpid())
    start = time.time()
    env.execute_sql(QUERY.format(suffix="timed")).wait()
    elapsed = time.time() - start
    cpu = tree_cpu_seconds(os.getpid()) - cpu_before
    print("RESULT flink %d %.6f cpu=%.3f" % (expected, elapsed, cpu), flush=True)


if __name__ == "__main__":
    main()
