#!/usr/bin/env python3
"""Side-by-side benchmark of the CTR aggregator, run on demand (never in CI or the tests):

    scripts/bench.py                                   # the default run, about 15 minutes
    scripts/bench.py --contenders e2e,consume --partitions 3,96 --runs 1
    scripts/bench.py --list                            # the contenders

It builds release binaries, creates its own Python virtual environment (default `run/bench-venv`)
and installs the Python contenders' packages into it from PyPI (confluent-kafka; apache-flink,
which bundles Flink's runtime jars and needs Java 17), starts a private ClickHouse server and the
dev broker, and pre-loads the same deterministic stream (documented JSON contract, about 120 bytes
per event, 10,000 products, about 4 % clicks, 1 s disorder; no user_id or dimensions: see `features`), compressed with zstd as producers
usually send it, into `impressions` and `clicks` at each partition count of `--partitions`. Then it
measures each contender `--runs` times and prints one table: median, min and max events/s, and
CPU-seconds per million events of the contender's own processes over the measured span
(/proc/<pid>/stat or getrusage):

  consume      librdkafka consume-and-discard (ctr-bench consume): the consumer limit, per partition count
  e2e          ctr-aggregator: consume, decode, windows, rows acknowledged by ClickHouse, timed until
               every closed window of the stream is in ctr_results_raw, per partition count; also its
               sink rows/s (ctr_sink_rows_total over ctr_sink_insert_seconds_sum), and where its pipeline thread
               spent the span: on a CPU, runnable but waiting for a core (other processes on the machine), or
               blocked (waiting for messages); /proc/<pid>/task/<pid>/schedstat
  stages       decode only, windows only (ctr-bench stages, events in memory)
  sink         the aggregator's sink alone (ctr-bench sink): rows/s through the results store (staging, the
               ctr_batches provenance row, the fenced insert into ctr_results_raw), 10,000-row batches whose
               provenance covers each partition count of --partitions, in alternating rounds; CPU of the
               client and the ClickHouse server
  clickhouse   ClickHouse ingesting the raw events (INSERT ... FORMAT JSONEachRow) and computing the
               same 10 s per-product counts with GROUP BY (CPU of the server)
  python       confluent-kafka consumer with json.loads and a dict
  flink        Apache Flink SQL, TUMBLE 10 s, watermark 2 s, parallelism 1 (--flink-parallelism), from a
               FILE source of the same events: the Kafka SQL connector jar is not on PyPI, so Flink's
               figure excludes consuming from Kafka (scripts/bench_flink.py). Marginal figures: after a
               warm-up job, a calibration job on 20,000 lines per file in the same JVM is subtracted,
               time and CPU, which removes the mini-cluster start and query planning every job pays
  file         the aggregator's core on the files Flink reads (ctr-bench file): decode, windows (10 s,
               watermark 2 s) and the rows' insert bodies, discarded as Flink's blackhole sink discards
               its rows; no Kafka, no ClickHouse: like for like with the flink line
  wide         the aggregator end to end on a stream with revenue on clicks and a conversions topic
               (not in the default run)
  features     the aggregator end to end, events/s, CPU and peak RSS, on the plain stream and on streams
               with user_id on every event (unique users), with 3 dimensions (--dimensions
               campaign_id,country,device_type), with 2 % duplicates (--dedup-field event_id), and all three
  memory       window state: bytes per open (product, window) at 100,000 products; per open window, bytes
               per event id remembered for --dedup-field and per distinct user
  latency      result latency (window emitted -> rows acknowledged) p50/p99, the mean insert time and
               RSS at a steady 100,000 events/s, on the plain stream and with a user_id on every event
  distinct     the aggregator's peak RSS while --distinct-ids impressions, each with a new product id,
               stream through (stopped at --rss-limit-mib), and the peak so far after each fifth of them;
               produced as fast as possible, or paced at --distinct-rate events/s and consumed as they arrive
  callgrind    instructions per event of the in-process stages (decode, windows, batch encoding),
               counted with valgrind --tool=callgrind through `ctr-bench callgrind`: the repeatable
               figure to judge a hot-path change on a noisy machine

The dev broker (librdkafka's mock cluster) keeps at most 5 MiB per partition: at 3 partitions the
compressed stream must fit in 15 MiB per topic, which bounds --events (the bench checks that every
event is there and says so when it is not). With many partitions the mock cluster's single fetch
thread, not the consumer, caps wall-clock rates: compare CPU-seconds per million events there.
"""
import argparse
import json
import os
import resource
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
CONTENDERS = ["consume", "e2e", "stages", "sink", "clickhouse", "python", "flink", "file", "wide", "features", "memory", "latency", "distinct",
              "callgrind"]
DEFAULT_CONTENDERS = [name for name in CONTENDERS if name != "wide"]
TICKS = os.sysconf("SC_CLK_TCK")
COMPRESSION = ["--kafka-property", "compression.type=zstd"]
# The plain stream: the documented contract without users or dimensions (the producer's events
# carry event_id, which the aggregator ignores without --dedup-field).
PLAIN_STREAM = ["--no-dimensions", "--anonymous-fraction", "1"]
DIMENSIONS = "campaign_id,country,device_type"
# The `features` contender: (label, producer options, aggregator options), each on its own stream.
FEATURE_RUNS = [
    ("plain", PLAIN_STREAM, []),
    ("+ unique users (user_id)", ["--no-dimensions"], []),
    ("+ 3 dimensions", ["--anonymous-fraction", "1"], ["--dimensions", DIMENSIONS]),
    ("+ dedup (2 % retries)", PLAIN_STREAM + ["--duplicate-fraction", "0.02"], ["--dedup-field", "event_id"]),
    ("+ all three", ["--duplicate-fraction", "0.02"], ["--dimensions", DIMENSIONS, "--dedup-field", "event_id"]),
]


def log(message):
    print(message, file=sys.stderr, flush=True)


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


def cpu_seconds(pid):
    """User + system CPU seconds of a running process (every thread), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def thread_times(pid):
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of the process's main thread,
    from /proc/<pid>/task/<pid>/schedstat; the rest of a span it was blocked (waiting on I/O,
    a lock, a timeout)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            on_cpu, waiting = f.read().split()[:2]
        return int(on_cpu) / 1e9, int(waiting) / 1e9
    except (OSError, ValueError):
        return 0.0, 0.0


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def result_line(output, name):
    """(events, seconds, details) of the `RESULT name events seconds key=value...` line."""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "RESULT" and parts[1] == name:
            details = dict(part.split("=", 1) for part in parts[4:] if "=" in part)
            return int(parts[2]), float(parts[3]), details
    raise RuntimeError(f"no RESULT {name} in:\n{output}")


def metric_values(text, name):
    """Sum of the samples of `name` (any labels) in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


PYTHON_CONSUMER = r'''
import json, resource, sys, time
from confluent_kafka import Consumer
brokers, expect = sys.argv[1], int(sys.argv[2])
c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-py-%f" % time.time(), "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "queued.min.messages": 1000000})
c.subscribe(["impressions", "clicks"])
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
counts, n, start, cpu_start = {}, 0, None, 0.0
deadline = time.time() + 600
while n < expect and time.time() < deadline:
    for m in c.consume(10000, 0.1):
        if m.error():
            continue
        if start is None:
            start, cpu_start = time.time(), cpu()
        e = json.loads(m.value())
        key = (e["product_id"], e["timestamp"] // 10000)
        v = counts.setdefault(key, [0, 0])
        v[0 if m.topic() == "impressions" else 1] += 1
        n += 1
print("RESULT python %d %.6f cpu=%.3f" % (n, time.time() - (start or time.time()), cpu() - cpu_start))
c.close()
'''


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="ctr-bench-")
        self.children = []
        self.rows = []  # (name, partitions, [events/s], [cpu s per M events])
        self.notes = []
        self.index = {}

    # MARK: Infrastructure

    def exe(self, name):
        return os.path.join(self.binaries, name)

    def start_broker(self, partitions, topics="impressions,clicks,ctr-dlq"):
        bootstrap = os.path.join(self.work, f"bootstrap-{len(self.children)}.txt")
        process = subprocess.Popen([self.exe("ctr-dev-broker"), "--partitions", str(partitions), "--topics", topics, "--bootstrap-file", bootstrap],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.children.append(process)
        while not os.path.exists(bootstrap) or not open(bootstrap).read().strip():
            if process.poll() is not None:
                raise RuntimeError("ctr-dev-broker exited")
            time.sleep(0.1)
        return process, open(bootstrap).read().strip()

    def stop(self, process):
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def migrate(self, database):
        query(self.url, "default", f"DROP DATABASE IF EXISTS {database}")
        subprocess.run([self.exe("schema-tool"), "migrate", "--clickhouse-url", self.url, "--database", database,
                        "--migrations-dir", os.path.join(ROOT, "migrations")], check=True, stdout=subprocess.DEVNULL)

    def clickhouse_pid(self):
        try:
            return int(open(os.path.join(self.clickhouse_dir, "clickhouse.pid")).read().strip())
        except (OSError, ValueError):
            return None

    def record(self, name, partitions, events, seconds, cpu):
        key = (name, partitions)
        if key not in self.index:
            self.index[key] = len(self.rows)
            self.rows.append((name, partitions, [], []))
        _, _, rates, cpus = self.rows[self.index[key]]
        rates.append(events / seconds if seconds > 0 else 0.0)
        if cpu is not None and events > 0:
            cpus.append(cpu / events * 1e6)

    def median(self, name, partitions):
        key = (name, partitions)
        return statistics.median(self.rows[self.index[key]][2]) if key in self.index else None

    def median_cpu(self, name, partitions):
        key = (name, partitions)
        cpus = self.rows[self.index[key]][3] if key in self.index else None
        return statistics.median(cpus) if cpus else None

    def ensure_venv(self, packages):
        venv = self.args.venv
        python = os.path.join(venv, "bin", "python")
        modules = {"confluent-kafka": "confluent_kafka", "apache-flink": "pyflink"}
        probe = "; ".join(f"import {modules[p]}" for p in packages)
        if os.path.exists(python) and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0:
            return python
        log(f"installing {', '.join(packages)} into {venv} (first run: a few minutes) ...")
        if not os.path.exists(python):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"] + packages, check=True)
        return python

    # MARK: Stream

    def preload(self, partitions, stream=PLAIN_STREAM, name="truth"):
        """A broker with `partitions` per topic holding the stream (`stream`: producer options);
        returns (process, brokers, truth)."""
        process, brokers = self.start_broker(partitions)
        truth = os.path.join(self.work, f"{name}-{partitions}.json")
        log(f"pre-loading {self.args.events} events into {partitions} partitions per topic ...")
        subprocess.run([self.exe("ctr-producer"), "--brokers", brokers, "--products", str(self.args.products), "--count", str(self.args.events),
                        "--rate", "0", "--event-rate", "20000", "--start-time-ms", "1700000000000", "--seed", "11",
                        "--truth-file", truth] + list(stream) + COMPRESSION, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(truth) as f:
            data = json.load(f)
        return process, brokers, data

    # MARK: Contenders

    def consume(self, brokers, total, partitions):
        out = subprocess.run([self.exe("ctr-bench"), "consume", "--brokers", brokers, "--expect", str(total)],
                             check=True, capture_output=True, text=True).stdout
        events, seconds, details = result_line(out, "consume")
        if events < total:
            raise SystemExit(f"only {events} of {total} events are in the topics at {partitions} partitions: the dev broker keeps "
                             f"5 MiB per partition; run with fewer --events")
        self.record("consume (librdkafka, discard)", partitions, events, seconds, float(details["cpu"]))

    def aggregator(self, brokers, closed_windows, database, extra=()):
        """Runs ctr-aggregator on pre-loaded topics into a fresh database. Returns seconds from its
        first consumed message to the last closed window in ClickHouse, its peak RSS (KiB), its CPU
        seconds over the same span, and its sink rows/s (rows over insert seconds)."""
        self.migrate(database)
        port = free_port()
        launched = time.time()
        process = subprocess.Popen([self.exe("ctr-aggregator"), "--brokers", brokers, "--group-id", f"bench-{database}-{time.time()}",
                                    "--clickhouse-url", self.url, "--database", database, "--metrics-port", str(port)] + list(extra),
                                   stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, f"aggregator-{database}.log"), "w"))
        peak = 0
        try:
            # Timed from the first message consumed (the group join of the mock cluster takes about
            # 3 s and is not the aggregator's work) to the last closed window in ClickHouse.
            started, cpu_start, thread_start = None, 0.0, (0.0, 0.0)
            while started is None and time.time() - launched < 120:
                try:
                    if metric_values(scrape(port), "ctr_events_consumed_total") > 0:
                        started, cpu_start, thread_start = time.time(), cpu_seconds(process.pid), thread_times(process.pid)
                except OSError:
                    pass
                time.sleep(0.01)
            started = started or launched
            while True:
                peak = max(peak, rss_kib(process.pid))
                done = int(query(self.url, database, "SELECT uniqExact(product_id, window_start) FROM ctr_results_raw") or 0)
                if done >= closed_windows or time.time() - started > 600:
                    break
                time.sleep(0.02)
            elapsed, cpu = time.time() - started, cpu_seconds(process.pid) - cpu_start
            # Where the pipeline thread (poll, decode, windows) spent the span: working, waiting for
            # one of the machine's cores (other processes), or blocked (waiting for messages, ...).
            on_cpu, waiting = (now - before for now, before in zip(thread_times(process.pid), thread_start))
            self.pipeline_thread = (elapsed, on_cpu, waiting, max(elapsed - on_cpu - waiting, 0.0))
            # Rows are visible in ClickHouse a moment before the aggregator has its answer and
            # counts them: wait for the counters to catch up before reading the sink's figures.
            rows = int(query(self.url, database, "SELECT count() FROM ctr_results_raw") or 0)
            deadline = time.time() + 30
            text = scrape(port)
            while metric_values(text, "ctr_sink_rows_total") < rows and time.time() < deadline:
                time.sleep(0.05)
                text = scrape(port)
            insert_seconds = metric_values(text, "ctr_sink_insert_seconds_sum")
            sink_rows, inserts = metric_values(text, "ctr_sink_rows_total"), metric_values(text, "ctr_sink_insert_seconds_count")
            self.sink_inserts = (sink_rows, inserts, insert_seconds)
            sink_rate = sink_rows / insert_seconds if insert_seconds > 0 else 0.0
            return elapsed, peak, cpu, sink_rate
        finally:
            self.stop(process)

    def stages(self):
        out = subprocess.run([self.exe("ctr-bench"), "stages", "--events", str(min(self.args.events, 2_000_000)), "--products", str(self.args.products)],
                             check=True, capture_output=True, text=True).stdout
        for name in ("decode", "windows"):
            events, seconds, details = result_line(out, name)
            self.record(f"{name} only (in memory)", "-", events, seconds, float(details["cpu"]))

    def sink(self, database):
        """The aggregator's sink alone (ctr-bench sink: the results store's staging, provenance row
        and fenced insert), the same rows and batches with each batch's provenance covering each
        partition count of --partitions, in alternating rounds."""
        server = self.clickhouse_pid()
        before = cpu_seconds(server) if server else 0.0
        counts = ",".join(str(p) for p in self.args.partitions)
        out = subprocess.run([self.exe("ctr-bench"), "sink", "--clickhouse-url", self.url, "--database", database, "--rows", "300000",
                              "--source-partitions", counts], check=True, capture_output=True, text=True).stdout
        server_cpu = (cpu_seconds(server) - before) if server else 0.0
        results = {p: result_line(out, f"sink-{p}") for p in self.args.partitions}
        total_seconds = sum(seconds for _, seconds, _ in results.values())
        for partitions, (rows, seconds, details) in results.items():
            # The server's CPU is shared out by time: the rounds alternate, so each count had its share.
            share = server_cpu * seconds / total_seconds if total_seconds else 0.0
            self.record("sink alone (rows/s; client + ClickHouse CPU)", partitions, rows, seconds, float(details["cpu"]) + share)

    def dump(self, brokers):
        """The topics' values, one per line, in event-time order: impressions.jsonl and clicks.jsonl.

        kcat hands out a topic in chunks of one partition after another, which go back in the
        stream's time hundreds of times; read in that order, about a quarter of the events would
        be late for a 2 s watermark (Flink drops those). Sorted by timestamp, each file is one
        in-order source, as a topic is to a consumer that reads its partitions side by side."""
        paths = {}
        for topic in ("impressions", "clicks"):
            path = os.path.join(self.work, f"{topic}.jsonl")
            if not os.path.exists(path):
                lines = subprocess.run(["kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q"], check=True,
                                       stdout=subprocess.PIPE).stdout.splitlines()
                lines.sort(key=lambda line: json.loads(line)["timestamp"])
                with open(path, "wb") as f:
                    f.write(b"".join(line + b"\n" for line in lines))
            paths[topic] = path
        return paths

    def clickhouse_raw(self, database, files, total):
        query(self.url, database, "DROP TABLE IF EXISTS raw_events")
        query(self.url, database, "CREATE TABLE raw_events (product_id String, timestamp UInt64, event_type String) ENGINE = MergeTree ORDER BY timestamp")
        server = self.clickhouse_pid()
        before, children_before = (cpu_seconds(server) if server else 0.0), children_cpu()
        start = time.time()
        for topic in ("impressions", "clicks"):
            subprocess.run(["curl", "-fsS", self.url + "/?" + urllib.parse.urlencode({
                "database": database, "query": "INSERT INTO raw_events FORMAT JSONEachRow", "input_format_skip_unknown_fields": "1"}),
                "--data-binary", "@" + files[topic]], check=True, stdout=subprocess.DEVNULL)
        query(self.url, database, "SELECT product_id, intDiv(timestamp, 10000) AS w, countIf(event_type = 'impression'), "
                                  "countIf(event_type = 'click') FROM raw_events GROUP BY product_id, w FORMAT Null")
        elapsed = time.time() - start
        cpu = (cpu_seconds(server) - before if server else 0.0) + children_cpu() - children_before
        self.record("clickhouse raw ingest + GROUP BY", "-", total, elapsed, cpu)

    def python_consumer(self, python, brokers, total, partitions):
        try:
            out = subprocess.run([python, "-c", PYTHON_CONSUMER, brokers, str(total)], check=True, capture_output=True, text=True).stdout
            events, seconds, details = result_line(out, "python")
            self.record("python confluent-kafka + json.loads", partitions, events, seconds, float(details["cpu"]))
        except subprocess.CalledProcessError as error:
            log(f"python consumer failed: {error.stderr[-300:]}")

    def flink(self, python, files, total):
        out = subprocess.run([python, os.path.join(ROOT, "scripts", "bench_flink.py"), files["impressions"], files["clicks"], str(total),
                              str(self.args.flink_parallelism)], capture_output=True, text=True)
        if out.returncode != 0:
            log(f"flink failed: {out.stderr[-1500:]}")
            return
        events, seconds, details = result_line(out.stdout, "flink")
        small_events, small_seconds, small = result_line(out.stdout, "flink-calibration")
        # Each job starts a local mini-cluster and plans the query (seconds, whatever the input):
        # the figures are marginal, a warm calibration job's time and CPU on a small input
        # subtracted from the timed job's.
        if seconds <= small_seconds:
            log(f"flink: the timed job ({seconds:.1f} s) was not longer than the calibration job ({small_seconds:.1f} s); use more --events")
            return
        self.record(f"flink sql TUMBLE, p={self.args.flink_parallelism} (file source)", "-", events - small_events,
                    seconds - small_seconds, max(float(details["cpu"]) - float(small["cpu"]), 0.0))

    def file_source(self, files, total):
        out = subprocess.run([self.exe("ctr-bench"), "file", "--impressions", files["impressions"], "--clicks", files["clicks"]],
                             check=True, capture_output=True, text=True).stdout
        events, seconds, details = result_line(out, "file")
        if events < total:
            raise SystemExit(f"ctr-bench file decoded {events} of {total} events ({details.get('rejected')} rejected)")
        self.record("aggregator core (file source, as flink)", "-", events, seconds, float(details["cpu"]))

    def memory(self):
        out = subprocess.run([self.exe("ctr-bench"), "memory", "--products", "100000", "--windows", "3"], check=True, capture_output=True, text=True).stdout
        line = next(l for l in out.splitlines() if l.startswith("RESULT memory"))
        memory = dict(part.split("=") for part in line.split()[4:])
        self.notes.append(f"window state: {memory['bytes_per_open_product_window']} bytes per open (product, window); "
                          f"{int(memory['state_bytes']) / 1048576:.0f} MiB for {memory['open_pairs']} open pairs (100,000 products x 3 windows)")
        for name, unit, what in (("memory-dedup", "bytes_per_event_id", "event id remembered for --dedup-field"),
                                 ("memory-users", "bytes_per_user", "distinct user remembered for unique users")):
            line = next(l for l in out.splitlines() if l.startswith(f"RESULT {name} "))
            fields = dict(part.split("=") for part in line.split()[4:] if "=" in part)
            self.notes.append(f"per open window: {fields[unit]} bytes per {what} ({fields['in_one_window']} in one window)")

    def latency(self):
        for index, (label, stream) in enumerate((("plain stream", PLAIN_STREAM), ("user_id on every event", ["--no-dimensions"]))):
            self.latency_run(label, stream, f"bench_latency_{index}")

    def latency_run(self, label, stream, database):
        log(f"latency, {label}: {self.args.latency_seconds:.0f} s at 100,000 events/s ...")
        self.migrate(database)
        broker, live = self.start_broker(12)
        port = free_port()
        aggregator = subprocess.Popen([self.exe("ctr-aggregator"), "--brokers", live, "--clickhouse-url", self.url, "--database", database,
                                       "--metrics-port", str(port)], stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(self.work, "aggregator-latency.log"), "w"))
        self.children.append(aggregator)
        try:
            self.wait_for_assignment(port)
            producer = subprocess.Popen([self.exe("ctr-producer"), "--brokers", live, "--products", str(self.args.products), "--rate", "100000",
                                         "--duration", str(self.args.latency_seconds)] + list(stream) + COMPRESSION,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            steady, cpu_start = 0, cpu_seconds(aggregator.pid)
            while producer.poll() is None:
                steady = max(steady, rss_kib(aggregator.pid))
                time.sleep(0.2)
            time.sleep(1)
            text = scrape(port)
            cpu = cpu_seconds(aggregator.pid) - cpu_start
            consumed = metric_values(text, "ctr_events_consumed_total")
            buckets = []
            for line in text.splitlines():
                if line.startswith("ctr_result_latency_seconds_bucket"):
                    bound = line.split('le="')[1].split('"')[0]
                    buckets.append((float("inf") if bound == "+Inf" else float(bound), int(float(line.split()[-1]))))
            count = buckets[-1][1] if buckets else 0

            def quantile(q):
                for bound, cumulative in buckets:
                    if count and cumulative >= q * count:
                        return bound
                return float("nan")

            inserts = metric_values(text, "ctr_sink_insert_seconds_count")
            mean_insert = metric_values(text, "ctr_sink_insert_seconds_sum") / inserts if inserts else float("nan")
            self.notes.append(f"result latency at 100,000 events/s, {label} (histogram bucket bounds): p50 <= {quantile(0.5)} s, p99 <= {quantile(0.99)} s "
                              f"over {count} batches, {mean_insert:.2f} s per insert; RSS {steady / 1024:.0f} MiB; "
                              f"{cpu / max(consumed, 1) * 1e6:.2f} CPU s per M events")
        finally:
            self.stop(aggregator)
            self.stop(broker)

    @staticmethod
    def wait_for_assignment(port, timeout=120):
        """Waits until the aggregator owns partitions (it exports their consumer lag), so that a
        producer started next does not outrun the dev broker's 5 MiB per partition meanwhile."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if "ctr_consumer_lag_messages{" in scrape(port):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the aggregator got no partitions")

    def distinct(self):
        count, rate = self.args.distinct_ids, self.args.distinct_rate
        paced = f", produced at {rate:,} events/s and consumed as they arrive" if rate else ""
        log(f"distinct ids: {count} impressions, each with a new product id{paced} ...")
        database = "bench_distinct"
        self.migrate(database)
        broker, brokers = self.start_broker(96)
        port = free_port()
        aggregator = subprocess.Popen([self.exe("ctr-aggregator"), "--brokers", brokers, "--clickhouse-url", self.url, "--database", database,
                                       "--metrics-port", str(port)], stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(self.work, "aggregator-distinct.log"), "w"))
        self.children.append(aggregator)
        producer = None
        try:
            self.wait_for_assignment(port)
            producer = subprocess.Popen([self.exe("ctr-bench"), "distinct-producer", "--brokers", brokers, "--count", str(count),
                                         "--rate", str(rate)] + COMPRESSION, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            peak, consumed, last_change, previous, stopped = 0, 0, time.time(), -1, None
            # The peak so far each time another fifth of the ids has streamed through: memory
            # that grows with the number of distinct ids shows as a rising sequence.
            checkpoints, peaks = [count * k // 5 for k in range(1, 6)], []
            while True:
                peak = max(peak, rss_kib(aggregator.pid))
                if peak > self.args.rss_limit_mib * 1024:
                    stopped = f"stopped at the --rss-limit-mib of {self.args.rss_limit_mib} MiB"
                    break
                try:
                    consumed = int(metric_values(scrape(port), "ctr_events_consumed_total"))
                except OSError:
                    pass
                while checkpoints and consumed >= checkpoints[0]:
                    peaks.append((checkpoints.pop(0), peak))
                if consumed != previous:
                    previous, last_change = consumed, time.time()
                if consumed >= count:
                    break
                if producer.poll() is not None and time.time() - last_change > 60:
                    stopped = "consumption stalled for 60 s"
                    break
                time.sleep(0.2)
            progression = ", ".join(f"{ids / 1e6:g} M: {kib / 1024:.0f}" for ids, kib in peaks)
            self.notes.append(f"peak RSS while {consumed:,} distinct product ids streamed through{paced}: {peak / 1024:.0f} MiB"
                              + (f" ({stopped})" if stopped else "") + (f"; peak so far, by ids consumed: {progression} MiB" if peaks else ""))
        finally:
            if producer is not None:
                self.stop(producer)
            self.stop(aggregator)
            self.stop(broker)

    def callgrind(self):
        if shutil.which("valgrind") is None:
            self.notes.append("instructions per event: valgrind not installed (apt-get install valgrind)")
            return
        events = self.args.callgrind_events
        environment = dict(os.environ, SWIFT_DETERMINISTIC_HASHING="1")
        figures = []
        stages = (("decode", "event", []), ("windows", "event", []), ("encode", "row", []),
                  ("decode", "event with user + 3 dimensions + event id, --dimensions and --dedup-field", ["--features"]),
                  ("windows", "event with user + 3 dimensions + event id", ["--features"]))
        for stage, unit, options in stages:
            totals = []
            for skip in ([], ["--skip-stage"]):
                out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", self.exe("ctr-bench"), "callgrind",
                                      "--stage", stage, "--events", str(events), "--products", str(self.args.products)] + options + skip,
                                     capture_output=True, text=True, env=environment, check=True)
                collected = next(line for line in out.stderr.splitlines() if "Collected :" in line)
                totals.append(int(collected.split(":")[-1]))
            figures.append(f"{stage} {(totals[0] - totals[1]) / events:,.0f}/{unit}")
        self.notes.append(f"instructions (callgrind, {events:,} events, release build): " + ", ".join(figures))

    # MARK: The run

    def run(self):
        args = self.args
        chosen = args.contenders
        log("building release binaries ...")
        subprocess.run(["swift", "build", "-c", "release"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        self.binaries = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                                       capture_output=True, text=True).stdout.strip()
        packages = [p for p, c in (("confluent-kafka", "python"), ("apache-flink", "flink")) if c in chosen]
        python = self.ensure_venv(packages) if packages else None
        self.clickhouse_dir = os.path.join(self.work, "clickhouse")
        self.script = os.path.join(ROOT, "scripts", "clickhouse-local.sh")
        http_port = free_port()
        self.url = f"http://127.0.0.1:{http_port}"
        subprocess.run([self.script, "start", self.clickhouse_dir, str(http_port), str(free_port())], check=True, stdout=subprocess.DEVNULL)
        began = time.time()
        truth_data, total = None, 0
        reference = args.partitions[len(args.partitions) // 2]
        needs_stream = {"consume", "e2e", "sink", "clickhouse", "python", "flink", "file"} & set(chosen)
        for partitions in (args.partitions if needs_stream else []):
            broker, brokers, truth_data = self.preload(partitions)
            total = truth_data["events_sent"]["impressions"] + truth_data["events_sent"]["clicks"]
            closed_windows = sum(1 for w in truth_data["windows"] if not w["open"])
            for run in range(args.runs):
                log(f"{partitions} partitions, run {run + 1}/{args.runs} ...")
                if "consume" in chosen:
                    self.consume(brokers, total, partitions)
                database = f"bench_p{partitions}_{run}"
                if "e2e" in chosen:
                    elapsed, peak, cpu, sink_rate = self.aggregator(brokers, closed_windows, database)
                    self.record("aggregator end to end", partitions, total, elapsed, cpu)
                    span, on_cpu, waiting, blocked = self.pipeline_thread
                    self.notes.append(f"aggregator pipeline thread at {partitions} partitions, run {run + 1}: of {span:.2f} s, on a CPU {on_cpu:.2f} s, "
                                      f"runnable waiting for a core {waiting:.2f} s, blocked {blocked:.2f} s")
                    self.record("  its sink (rows/s of insert time)", partitions, sink_rate, 1.0, None)
                    rows, inserts, insert_seconds = self.sink_inserts
                    if inserts:
                        self.notes.append(f"aggregator sink at {partitions} partitions, run {run + 1}: {rows:,.0f} rows in {inserts:.0f} inserts "
                                          f"({rows / inserts:,.0f} rows each), {insert_seconds / inserts:.3f} s per insert")
                    self.peak_backlog = max(getattr(self, "peak_backlog", 0), peak)
                else:
                    self.migrate(database)
                if partitions == reference:
                    if "stages" in chosen:
                        self.stages()
                    if "sink" in chosen:
                        self.sink(database)
                    files = self.dump(brokers) if {"clickhouse", "flink", "file"} & set(chosen) else None
                    if "file" in chosen:
                        self.file_source(files, total)
                    if "clickhouse" in chosen:
                        self.clickhouse_raw(database, files, total)
                    if "python" in chosen:
                        self.python_consumer(python, brokers, total, partitions)
                    if "flink" in chosen and run < args.flink_runs:
                        log("flink ...")
                        self.flink(python, files, total)
            self.stop(broker)
        if "stages" in chosen and not needs_stream:
            self.stages()
        if "wide" in chosen:
            self.wide()
        if "features" in chosen:
            self.features()
        if "memory" in chosen:
            self.memory()
        if "latency" in chosen:
            self.latency()
        if "distinct" in chosen:
            self.distinct()
        if "callgrind" in chosen:
            log("callgrind ...")
            self.callgrind()
        self.print_table(truth_data, total, time.time() - began)

    def wide(self):
        log("wider events (revenue + conversions) ...")
        partitions = self.args.partitions[len(self.args.partitions) // 2]
        broker, brokers = self.start_broker(partitions, "impressions,clicks,conversions,ctr-dlq")
        truth = os.path.join(self.work, "wide-truth.json")
        subprocess.run([self.exe("ctr-producer"), "--brokers", brokers, "--products", str(self.args.products), "--count", str(self.args.events),
                        "--rate", "0", "--event-rate", "20000", "--start-time-ms", "1700000000000", "--seed", "11",
                        "--conversion-rate", "0.3", "--revenue-per-click", "0.4", "--revenue-per-conversion", "30",
                        "--truth-file", truth] + COMPRESSION, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(truth) as f:
            data = json.load(f)
        total = sum(data["events_sent"].values())
        closed = sum(1 for w in data["windows"] if not w["open"])
        for run in range(self.args.runs):
            elapsed, _, cpu, _ = self.aggregator(brokers, closed, f"bench_wide_{run}", ["--conversions-topic", "conversions"])
            self.record("aggregator e2e, revenue + conversions", partitions, total, elapsed, cpu)
        self.stop(broker)

    def features(self):
        """The aggregator end to end on streams that exercise unique users, dimensions and
        deduplication, next to the plain stream, at the middle partition count."""
        partitions = self.args.partitions[len(self.args.partitions) // 2]
        for index, (label, stream, flags) in enumerate(FEATURE_RUNS):
            log(f"features: {label} ...")
            broker, brokers, data = self.preload(partitions, stream, name=f"features-{index}")
            total = data["events_sent"]["impressions"] + data["events_sent"]["clicks"]
            closed = sum(1 for w in data["windows"] if not w["open"])
            peaks = []
            for run in range(self.args.runs):
                elapsed, peak, cpu, _ = self.aggregator(brokers, closed, f"bench_features_{index}_{run}", flags)
                self.record(f"features: e2e {label}", partitions, total, elapsed, cpu)
                peaks.append(peak)
            self.notes.append(f"features, {label}: peak RSS {statistics.median(peaks) / 1024:.0f} MiB")
            self.stop(broker)

    def print_table(self, truth_data, total, seconds):
        args = self.args
        print()
        clicks = truth_data["events_sent"]["clicks"] if truth_data else 0
        print(f"CTR pipeline benchmark: {total:,} events ({clicks:,} clicks, zstd), {args.products:,} products, {args.runs} runs, "
              f"git {git_commit()}, {seconds / 60:.1f} min")
        print(f"{'contender':48} {'partitions':>10} {'median ev/s':>12} {'min':>12} {'max':>12} {'CPU s/M ev':>11}")
        for name, partitions, rates, cpus in self.rows:
            cpu = f"{statistics.median(cpus):11.2f}" if cpus else f"{'':11}"
            print(f"{name:48} {partitions!s:>10} {statistics.median(rates):12,.0f} {min(rates):12,.0f} {max(rates):12,.0f} {cpu}")
        for partitions in args.partitions:
            aggregator, consume = self.median("aggregator end to end", partitions), self.median("consume (librdkafka, discard)", partitions)
            if aggregator and consume:
                print(f"aggregator / consumer limit at {partitions} partitions: {aggregator / consume:.2f}")
        for name in ("  its sink (rows/s of insert time)", "sink alone (rows/s; client + ClickHouse CPU)"):
            low, high = self.median(name, args.partitions[0]), self.median(name, args.partitions[-1])
            if low and high:
                print(f"{name.strip()}: at {args.partitions[-1]} / at {args.partitions[0]} partitions: {high / low:.2f}")
        reference = args.partitions[len(args.partitions) // 2]
        aggregator = self.median("aggregator end to end", reference)
        for name in ("clickhouse raw ingest + GROUP BY", "python confluent-kafka + json.loads", f"flink sql TUMBLE, p={args.flink_parallelism} (file source)"):
            other = self.median(name, "-") or self.median(name, reference)
            if aggregator and other:
                print(f"aggregator ({reference} partitions) / {name}: {aggregator / other:.2f}x")
        flink_name = f"flink sql TUMBLE, p={args.flink_parallelism} (file source)"
        core, flink = self.median("aggregator core (file source, as flink)", "-"), self.median(flink_name, "-")
        if core and flink:
            core_cpu, flink_cpu = self.median_cpu("aggregator core (file source, as flink)", "-"), self.median_cpu(flink_name, "-")
            if core_cpu and flink_cpu:
                print(f"like for like, both from the same files into a discarding sink: aggregator core / {flink_name}: "
                      f"{core / flink:.2f}x the events/s, {flink_cpu / core_cpu:.1f}x less CPU per event")
        if getattr(self, "peak_backlog", 0):
            print(f"aggregator peak RSS (backlog of {total:,} events): {self.peak_backlog / 1024:.0f} MiB")
        for note in self.notes:
            print(note)

    def close(self):
        if self.args.keep_work:
            log(f"work directory (logs): {self.work}")
        for child in self.children:
            self.stop(child)
        if hasattr(self, "script"):
            subprocess.run([self.script, "stop", self.clickhouse_dir], stdout=subprocess.DEVNULL)
        if not self.args.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=600_000, help="events in the pre-loaded stream (default 600,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each contender (default 3)")
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--partitions", default="3,30,96", help="partition counts per topic for consume and e2e (default 3,30,96)")
    parser.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS), help="comma-separated subset (default: all but wide)")
    parser.add_argument("--skip", default="", help="comma-separated contenders to leave out")
    parser.add_argument("--list", action="store_true", help="list the contenders and exit")
    parser.add_argument("--keep-work", action="store_true", help="keep the work directory (aggregator logs, dumps) and print its path")
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--distinct-ids", type=int, default=5_000_000)
    parser.add_argument("--distinct-rate", type=int, default=0,
                        help="events/s at which the distinct-ids stream is produced while the aggregator consumes it (default 0: as fast as possible)")
    parser.add_argument("--rss-limit-mib", type=int, default=4096, help="stop the distinct-ids run above this RSS (default 4096)")
    parser.add_argument("--callgrind-events", type=int, default=20_000)
    parser.add_argument("--flink-parallelism", type=int, default=1)
    parser.add_argument("--flink-runs", type=int, default=1, help="Flink runs (a JVM each; default 1)")
    parser.add_argument("--venv", default=os.path.join(ROOT, "run", "bench-venv"), help="the bench's virtual environment")
    args = parser.parse_args()
    if args.list:
        print(" ".join(CONTENDERS))
        return 0
    skipped = set(filter(None, args.skip.split(",")))
    args.contenders = [c for c in args.contenders.split(",") if c and c not in skipped]
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {', '.join(sorted(unknown))}; known: {' '.join(CONTENDERS)}")
    args.partitions = [int(p) for p in args.partitions.split(",")]
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
