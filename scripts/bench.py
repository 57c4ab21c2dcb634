#!/usr/bin/env python3
"""Side-by-side benchmark of the CTR aggregator, run from one command:

    scripts/bench.py [--events 1000000] [--runs 3] [--skip-python] [--latency-seconds 30]

Builds release binaries, starts a private ClickHouse server and the dev broker, pre-loads the same
deterministic stream (documented JSON contract, about 120 bytes per event, 10,000 products, about
4 % clicks, 1 s disorder) into `impressions` and `clicks`, then measures, back to back, each
contender several times and prints one table (median, min, max events/s):

  consume          librdkafka consume-and-discard (ctr-bench consume): the consumer limit
  aggregator e2e   ctr-aggregator: consume, decode, windows, rows acknowledged by ClickHouse,
                   timed until every closed window of the stream is in ctr_results_raw
  decode only      EventDecoder on events in memory
  windows only     WindowAggregator on decoded events in memory
  sink only        rows/s into ctr_results_raw (JSONEachRow over HTTP)
  clickhouse raw   ClickHouse ingesting the raw events (INSERT ... FORMAT JSONEachRow) and
                   computing the same 10 s per-product counts with GROUP BY
  python consumer  confluent-kafka consumer with json.loads and a dict (installed from PyPI)
  wider events     the aggregator end to end on a stream with revenue on clicks and a
                   conversions topic (what issue-7 features cost)

Then the aggregator's peak resident memory and result latency (window emitted -> rows acknowledged
by ClickHouse) p50/p99 at a steady producer rate of 100,000 events/s.

The dev broker keeps at most 5 MiB per partition (librdkafka 2.0.2), so the topics get enough
partitions for the pre-loaded data (24 for 1M events) instead of 3.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(url, database, sql, body=None):
    params = {"database": database}
    data = body if body is not None else sql.encode()
    if body is not None:
        params["query"] = sql
    request = urllib.request.Request(url + "/?" + urllib.parse.urlencode(params), data=data)
    with urllib.request.urlopen(request, timeout=600) as response:
        return response.read().decode().strip()


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def result_line(output, name):
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "RESULT" and parts[1] == name:
            return int(parts[2]), float(parts[3])
    raise RuntimeError(f"no RESULT {name} in:\n{output}")


PYTHON_CONSUMER = r'''
import json, sys, time
from confluent_kafka import Consumer
brokers, expect = sys.argv[1], int(sys.argv[2])
c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-py-%f" % time.time(), "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "queued.min.messages": 1000000})
c.subscribe(["impressions", "clicks"])
counts, n, start = {}, 0, None
deadline = time.time() + 600
while n < expect and time.time() < deadline:
    for m in c.consume(10000, 0.1):
        if m.error():
            continue
        if start is None:
            start = time.time()
        e = json.loads(m.value())
        key = (e["product_id"], e["timestamp"] // 10000)
        v = counts.setdefault(key, [0, 0])
        v[0 if m.topic() == "impressions" else 1] += 1
        n += 1
print("RESULT python %d %.6f" % (n, time.time() - (start or time.time())))
c.close()
'''


def measure_aggregator(exe, url, brokers, closed_windows, database, work, extra):
    """Runs ctr-aggregator on the pre-loaded topics into a fresh database; returns the seconds from
    its first consumed message to the last closed window in ClickHouse, and its peak RSS (KiB)."""
    query(url, "default", f"DROP DATABASE IF EXISTS {database}")
    subprocess.run([exe("schema-tool"), "migrate", "--clickhouse-url", url, "--database", database,
                    "--migrations-dir", os.path.join(ROOT, "migrations")], check=True, stdout=subprocess.DEVNULL)
    metrics_port = free_port()
    launched = time.time()
    aggregator = subprocess.Popen([exe("ctr-aggregator"), "--brokers", brokers, "--group-id", f"bench-{database}-{time.time()}",
                                   "--clickhouse-url", url, "--database", database, "--metrics-port", str(metrics_port)] + extra,
                                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"aggregator-{database}.log"), "w"))
    peak_rss = 0
    try:
        # Timed from the first message consumed (the group join of the mock cluster takes about
        # 3 s and is not the aggregator's work) to the last closed window in ClickHouse.
        started = None
        while started is None and time.time() - launched < 120:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
                consumed = sum(int(float(l.split()[-1])) for l in text.splitlines() if l.startswith("ctr_events_consumed_total"))
                if consumed > 0:
                    started = time.time()
            except OSError:
                pass
            time.sleep(0.01)
        started = started or launched
        while True:
            peak_rss = max(peak_rss, rss_kib(aggregator.pid))
            done = int(query(url, database, "SELECT uniqExact(product_id, window_start) FROM ctr_results_raw") or 0)
            if done >= closed_windows or time.time() - started > 600:
                break
            time.sleep(0.02)
        return time.time() - started, peak_rss
    finally:
        aggregator.send_signal(signal.SIGKILL)
        aggregator.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--skip-python", action="store_true")
    parser.add_argument("--latency-seconds", type=float, default=30)
    args = parser.parse_args()

    print("building release binaries ...", file=sys.stderr, flush=True)
    subprocess.run(["swift", "build", "-c", "release"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    binaries = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    exe = lambda name: os.path.join(binaries, name)  # noqa: E731
    work = tempfile.mkdtemp(prefix="ctr-bench-")
    children = []
    clickhouse_dir = os.path.join(work, "clickhouse")
    script = os.path.join(ROOT, "scripts", "clickhouse-local.sh")
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    results = {}
    try:
        subprocess.run([script, "start", clickhouse_dir, str(http_port), str(free_port())], check=True, stdout=subprocess.DEVNULL)
        partitions = max(3, -(-args.events * 125 // (4 * 1024 * 1024)))
        bootstrap = os.path.join(work, "bootstrap.txt")
        children.append(subprocess.Popen([exe("ctr-dev-broker"), "--partitions", str(partitions), "--bootstrap-file", bootstrap],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while not os.path.exists(bootstrap):
            time.sleep(0.1)
        brokers = open(bootstrap).read().strip()
        truth = os.path.join(work, "truth.json")
        print(f"pre-loading {args.events} events into {partitions} partitions per topic ...", file=sys.stderr, flush=True)
        subprocess.run([exe("ctr-producer"), "--brokers", brokers, "--products", str(args.products), "--count", str(args.events),
                        "--rate", "0", "--event-rate", "20000", "--start-time-ms", "1700000000000", "--seed", "11",
                        "--truth-file", truth], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(truth) as f:
            truth_data = json.load(f)
        total = truth_data["events_sent"]["impressions"] + truth_data["events_sent"]["clicks"]
        closed_windows = sum(1 for w in truth_data["windows"] if not w["open"])

        def record(name, events, seconds):
            results.setdefault(name, []).append(events / seconds if seconds > 0 else 0)

        peak_rss = 0
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs} ...", file=sys.stderr, flush=True)
            out = subprocess.run([exe("ctr-bench"), "consume", "--brokers", brokers, "--expect", str(total)],
                                 check=True, capture_output=True, text=True).stdout
            record("consume (librdkafka, discard)", *result_line(out, "consume"))

            database = f"bench_{run}"
            elapsed, rss = measure_aggregator(exe, url, brokers, closed_windows, database, work, [])
            peak_rss = max(peak_rss, rss)
            record("aggregator end to end", total, elapsed)

            out = subprocess.run([exe("ctr-bench"), "stages", "--events", str(min(args.events, 2_000_000)), "--products", str(args.products)],
                                 check=True, capture_output=True, text=True).stdout
            record("decode only", *result_line(out, "decode"))
            record("windows only", *result_line(out, "windows"))
            out = subprocess.run([exe("ctr-bench"), "sink", "--clickhouse-url", url, "--database", database, "--rows", "300000"],
                                 check=True, capture_output=True, text=True).stdout
            record("sink only (rows/s)", *result_line(out, "sink"))

            # ClickHouse ingesting the raw events and computing the same windows.
            raw = os.path.join(work, "raw.jsonl")
            if not os.path.exists(raw):
                with open(raw, "wb") as f:
                    for topic in ("impressions", "clicks"):
                        subprocess.run(["kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q"], check=True, stdout=f)
            query(url, database, "DROP TABLE IF EXISTS raw_events")
            query(url, database, "CREATE TABLE raw_events (product_id String, timestamp UInt64, event_type String) ENGINE = MergeTree ORDER BY timestamp")
            start = time.time()
            subprocess.run(["curl", "-fsS", url + "/?" + urllib.parse.urlencode({
                "database": database, "query": "INSERT INTO raw_events FORMAT JSONEachRow", "input_format_skip_unknown_fields": "1"}),
                "--data-binary", "@" + raw], check=True, stdout=subprocess.DEVNULL)
            query(url, database, "SELECT product_id, intDiv(timestamp, 10000) AS w, countIf(event_type = 'impression'), "
                                 "countIf(event_type = 'click') FROM raw_events GROUP BY product_id, w FORMAT Null")
            record("clickhouse raw ingest + GROUP BY", total, time.time() - start)

            if not args.skip_python:
                try:
                    out = subprocess.run([sys.executable, "-c", PYTHON_CONSUMER, brokers, str(total)], check=True,
                                         capture_output=True, text=True).stdout
                    record("python confluent-kafka + json.loads", *result_line(out, "python"))
                except subprocess.CalledProcessError as error:
                    print(f"python consumer failed (pip install confluent-kafka?): {error.stderr[-300:]}", file=sys.stderr)

        # The same aggregator on wider events: revenue on clicks, and a conversions topic.
        print("wider events (revenue + conversions) ...", file=sys.stderr, flush=True)
        wide_bootstrap = os.path.join(work, "wide-bootstrap.txt")
        children.append(subprocess.Popen([exe("ctr-dev-broker"), "--partitions", str(partitions), "--topics",
                                          "impressions,clicks,conversions,ctr-dlq", "--bootstrap-file", wide_bootstrap],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while not os.path.exists(wide_bootstrap):
            time.sleep(0.1)
        wide = open(wide_bootstrap).read().strip()
        wide_truth = os.path.join(work, "wide-truth.json")
        subprocess.run([exe("ctr-producer"), "--brokers", wide, "--products", str(args.products), "--count", str(args.events),
                        "--rate", "0", "--event-rate", "20000", "--start-time-ms", "1700000000000", "--seed", "11",
                        "--conversion-rate", "0.3", "--revenue-per-click", "0.4", "--revenue-per-conversion", "30",
                        "--truth-file", wide_truth], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(wide_truth) as f:
            wide_data = json.load(f)
        wide_total = sum(wide_data["events_sent"].values())
        wide_closed = sum(1 for w in wide_data["windows"] if not w["open"])
        for run in range(args.runs):
            elapsed, _ = measure_aggregator(exe, url, wide, wide_closed, f"bench_wide_{run}", work, ["--conversions-topic", "conversions"])
            record("aggregator e2e, revenue + conversions", wide_total, elapsed)

        # Memory per open (product, window) at 100,000 products.
        out = subprocess.run([exe("ctr-bench"), "memory", "--products", "100000", "--windows", "3"], check=True, capture_output=True, text=True).stdout
        memory_line = next(l for l in out.splitlines() if l.startswith("RESULT memory"))
        memory = dict(part.split("=") for part in memory_line.split()[4:])

        # Result latency at a steady 100,000 events/s.
        print(f"latency: {args.latency_seconds:.0f} s at 100,000 events/s ...", file=sys.stderr, flush=True)
        database = "bench_latency"
        query(url, "default", f"DROP DATABASE IF EXISTS {database}")
        subprocess.run([exe("schema-tool"), "migrate", "--clickhouse-url", url, "--database", database,
                        "--migrations-dir", os.path.join(ROOT, "migrations")], check=True, stdout=subprocess.DEVNULL)
        metrics_port = free_port()
        live_topics = os.path.join(work, "live-bootstrap.txt")
        children.append(subprocess.Popen([exe("ctr-dev-broker"), "--partitions", "3", "--bootstrap-file", live_topics],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while not os.path.exists(live_topics):
            time.sleep(0.1)
        live = open(live_topics).read().strip()
        aggregator = subprocess.Popen([exe("ctr-aggregator"), "--brokers", live, "--clickhouse-url", url, "--database", database,
                                       "--metrics-port", str(metrics_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children.append(aggregator)
        time.sleep(2)
        producer = subprocess.Popen([exe("ctr-producer"), "--brokers", live, "--products", str(args.products), "--rate", "100000",
                                     "--duration", str(args.latency_seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        steady_rss = 0
        while producer.poll() is None:
            steady_rss = max(steady_rss, rss_kib(aggregator.pid))
            time.sleep(0.2)
        time.sleep(1)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        buckets = []
        for line in metrics.splitlines():
            if line.startswith("ctr_result_latency_seconds_bucket"):
                bound = line.split('le="')[1].split('"')[0]
                buckets.append((float("inf") if bound == "+Inf" else float(bound), int(line.split()[-1])))
        count = buckets[-1][1] if buckets else 0

        def quantile(q):
            for bound, cumulative in buckets:
                if count and cumulative >= q * count:
                    return bound
            return float("nan")

        print()
        print(f"CTR pipeline benchmark: {total} events ({truth_data['events_sent']['clicks']} clicks), {args.products} products, "
              f"{partitions} partitions per topic, {args.runs} runs, git {git_commit()}")
        print(f"{'contender':40} {'median ev/s':>14} {'min':>14} {'max':>14}")
        for name, values in results.items():
            print(f"{name:40} {statistics.median(values):14,.0f} {min(values):14,.0f} {max(values):14,.0f}")
        consume = statistics.median(results["consume (librdkafka, discard)"])
        aggregator_rate = statistics.median(results["aggregator end to end"])
        print(f"aggregator / consumer limit: {aggregator_rate / consume:.0%}")
        if "python confluent-kafka + json.loads" in results:
            print(f"aggregator / python consumer: {aggregator_rate / statistics.median(results['python confluent-kafka + json.loads']):.1f}x")
        print(f"aggregator / clickhouse raw ingest: {aggregator_rate / statistics.median(results['clickhouse raw ingest + GROUP BY']):.1f}x")
        print(f"aggregator peak RSS (backlog of {total} events): {peak_rss / 1024:.0f} MiB; at 100,000 events/s steady: {steady_rss / 1024:.0f} MiB")
        print(f"window state: {memory['bytes_per_open_product_window']} bytes per open (product, window); "
              f"{int(memory['state_bytes']) / 1048576:.0f} MiB for {memory['open_pairs']} open pairs (100,000 products x 3 windows)")
        print(f"result latency at 100,000 events/s (histogram bucket bounds): p50 <= {quantile(0.5)} s, p99 <= {quantile(0.99)} s "
              f"over {count} batches")
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                child.wait()
        subprocess.run([script, "stop", clickhouse_dir], stdout=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
