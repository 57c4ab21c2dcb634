#!/usr/bin/env python3
"""Fault campaign: drives a deterministic stream through the real pipeline while injecting faults,
then compares ClickHouse with the producer's truth file.

    scripts/fault-campaign.py [--faults N] [--duration SECONDS] [--rate EVENTS_PER_S] [--seed S]
                              [--kinds KIND,...] [--exclude-kinds KIND,...] [--bin DIR] [--keep] [--check-wait SECONDS]

Defaults are the reduced size run in CI (12 faults asked for in 60 s; raised to one of every
kind, 16, so the run takes about 2 minutes). Full size:

    scripts/fault-campaign.py --faults 200 --duration 600 --rate 300

Every selected kind runs at least once (the first faults go through the kinds in order, the
rest are drawn at random); `--faults` below the number of selected kinds is raised to it.

Everything runs on loopback: a private ClickHouse server (scripts/clickhouse-local.sh), the
keep-alive fault proxy scripts/fault-proxy.py in front of it, the dev broker, three aggregator
instances in one consumer group (a fourth joins and leaves), and the producer. Kinds:

    kill9                       kill -9 an aggregator, restart it
    kill9_during_insert         the same while its insert hangs in the proxy
    pause                       SIGSTOP an aggregator longer than the session timeout (6 s), then SIGCONT
    rebalance_remove_add        SIGTERM an aggregator, start it again (two rebalances)
    rebalance_while_clickhouse_stopped
                                SIGSTOP clickhouse-server, then a fourth aggregator joins (or is killed)
                                so the group rebalances while inserts hang, then SIGCONT
    clickhouse_down             stop ClickHouse for seconds, start it again
    http_5xx                    proxy answers 500/202 or 503/242 without forwarding
    reset_before                proxy resets the connection before forwarding
    drop_answer                 proxy forwards, ClickHouse applies, the connection closes without an answer
    keepalive_reset_after_apply proxy forwards, ClickHouse applies, the client connection is reset before
                                any answer byte (half the time new connections are then refused for 1 s);
                                on a reused connection libcurl would re-send the insert by itself
    error_after_apply           proxy forwards, ClickHouse applies, the answer becomes 500 + code 252
    slow_answer                 proxy holds the answer 5 s (beyond the 2 s request timeout)
    stale_request               proxy holds the insert before forwarding until after the client timed out,
                                then forwards it (the straggler that has not reached the server yet)
    broker_down                 one dev broker down for seconds
    request_errors              Fetch and OffsetCommit answered with retriable errors
    dlq_unavailable             every Produce request (the dead-letter topic's, and the producer's: the
                                dev broker cannot fail one topic alone) answered NOT_ENOUGH_REPLICAS for
                                seconds; the mock cluster appends nothing on an injected error

Issue 14's features (the aggregator's `--dimensions` and `--dedup-field`, unique users) are off by
default; these options turn them on in the aggregators, the producer's truth and check-truth:

    --dimensions campaign_id,country,device_type   the key includes these dimensions
    --duplicate-fraction 0.02                      the producer sends that fraction of events twice
    --dedup                                        the aggregators deduplicate on event_id
    --check-uniques                                unique users per window are checked exactly
    --check-rollups                                the v2 roll-ups are checked against the raw table

e.g. scripts/fault-campaign.py --dimensions campaign_id,country,device_type --duplicate-fraction 0.02 --dedup --check-uniques

Prints the faults by kind, what the proxy applied, then one line: events, windows checked, lost,
duplicated, mismatched, peak aggregator memory; exits 0 only if nothing was lost, duplicated or
mismatched.
"""
import argparse
import errno
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_fault_proxy():
    """scripts/fault-proxy.py as a module (its file name is not an identifier)."""
    spec = importlib.util.spec_from_file_location("fault_proxy", os.path.join(ROOT, "scripts", "fault-proxy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


KINDS = ["kill9", "pause", "http_5xx", "keepalive_reset_after_apply", "clickhouse_down", "error_after_apply", "reset_before",
         "stale_request", "broker_down", "drop_answer", "rebalance_while_clickhouse_stopped", "slow_answer", "request_errors",
         "dlq_unavailable", "kill9_during_insert", "rebalance_remove_add"]
REQUEST_TIMEOUT_S = 2
SESSION_TIMEOUT_S = 6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=12)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds to run (default: all)")
    parser.add_argument("--exclude-kinds", default="", help="comma-separated fault kinds to leave out")
    parser.add_argument("--bin", default=os.path.join(ROOT, ".build", "debug"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--check-wait", type=float, default=180, help="how long check-truth waits for ClickHouse to match (s)")
    parser.add_argument("--dimensions", default="", help="comma-separated dimensions of the key (ctr-aggregator --dimensions)")
    parser.add_argument("--duplicate-fraction", type=float, default=0, help="fraction of events the producer sends twice")
    parser.add_argument("--dedup", action="store_true", help="the aggregators deduplicate on event_id (--dedup-field event_id)")
    parser.add_argument("--check-uniques", action="store_true", help="check unique users per window exactly")
    parser.add_argument("--check-rollups", action="store_true", help="check the v2 roll-ups against the raw table")
    args = parser.parse_args()
    excluded = {kind.strip() for kind in args.exclude_kinds.split(",") if kind.strip()}
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip() and kind.strip() not in excluded]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        parser.error(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")
    fault_count = max(args.faults, len(kinds))
    aggregator_features, producer_features, check_features = [], [], []
    if args.dimensions:
        aggregator_features += ["--dimensions", args.dimensions]
        producer_features += ["--truth-dimensions", args.dimensions]
        check_features += ["--dimensions", args.dimensions]
    if args.duplicate_fraction:
        producer_features += ["--duplicate-fraction", str(args.duplicate_fraction)]
    if args.dedup:
        aggregator_features += ["--dedup-field", "event_id"]
        check_features.append("--dedup")
    if args.check_uniques:
        producer_features.append("--truth-uniques")
        check_features.append("--check-uniques")
    if args.check_rollups:
        check_features.append("--check-rollups")
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="ctr-campaign-")
    processes = []
    faults = Counter()

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def spawn(name, argv):
        out = open(os.path.join(work, f"{name}.log"), "ab")
        process = subprocess.Popen(argv, stdout=out, stderr=out)
        processes.append(process)
        return process

    clickhouse_dir = os.path.join(work, "clickhouse")
    ch_http, ch_tcp = free_port(), free_port()
    script = os.path.join(ROOT, "scripts", "clickhouse-local.sh")

    def clickhouse(command):
        extra = [str(ch_http), str(ch_tcp)] if command == "start" else []
        subprocess.run([script, command, clickhouse_dir] + extra, check=True, stdout=subprocess.DEVNULL)

    def signal_clickhouse(number):
        try:
            with open(os.path.join(clickhouse_dir, "clickhouse.pid")) as f:
                os.kill(int(f.read().strip()), number)
        except (OSError, ValueError):
            pass

    try:
        clickhouse("start")
        proxy = load_fault_proxy().FaultProxy(ch_http).start()
        url = f"http://127.0.0.1:{proxy.port}"
        direct_url = f"http://127.0.0.1:{ch_http}"
        database = "campaign"
        subprocess.run([os.path.join(args.bin, "schema-tool"), "migrate", "--clickhouse-url", direct_url, "--database", database,
                        "--migrations-dir", os.path.join(ROOT, "migrations")], check=True, stdout=subprocess.DEVNULL)

        partitions = 6
        bootstrap_file = os.path.join(work, "bootstrap.txt")
        control = os.path.join(work, "broker-control")
        broker_process = spawn("broker", [os.path.join(args.bin, "ctr-dev-broker"), "--partitions", str(partitions),
                                  "--bootstrap-file", bootstrap_file, "--control-file", control])
        while not os.path.exists(bootstrap_file):
            time.sleep(0.1)
        brokers = open(bootstrap_file).read().strip()

        def ensure_broker_runs(doing):
            """Stops the campaign, keeping its work directory, if the dev broker has exited (see the README)."""
            if broker_process.poll() is None:
                return
            args.keep = True
            tail = open(os.path.join(work, "broker.log"), errors="replace").read().strip().splitlines()[-40:]
            raise SystemExit(f"the dev broker exited (status {broker_process.returncode}) {doing}; the end of its log "
                             f"({work}/broker.log, kept):\n" + "\n".join(tail))

        def broker_command(line):
            # The control file is a FIFO that the broker reopens after every writer: a blocking open
            # would wait forever for a broker that is gone, so open without blocking and retry.
            deadline = time.time() + 30
            while True:
                ensure_broker_runs(f"before '{line}'")
                try:
                    descriptor = os.open(control, os.O_WRONLY | os.O_NONBLOCK)
                    break
                except OSError as error:
                    if error.errno not in (errno.ENXIO, errno.ENOENT) or time.time() > deadline:
                        raise
                    time.sleep(0.05)
            try:
                os.write(descriptor, (line + "\n").encode())
            except BrokenPipeError:
                ensure_broker_runs(f"during '{line}'")
                raise
            finally:
                os.close(descriptor)

        aggregators = {}
        peak_rss = Counter()

        def start_aggregator(index):
            aggregators[index] = spawn(f"aggregator-{index}", [
                os.path.join(args.bin, "ctr-aggregator"), "--brokers", brokers, "--group-id", "campaign",
                "--clickhouse-url", url, "--database", database, "--metrics-port", "0",
                "--request-timeout-ms", str(REQUEST_TIMEOUT_S * 1000), "--retry-initial-ms", "50", "--retry-max-ms", "1000",
                "--kafka-property", f"session.timeout.ms={SESSION_TIMEOUT_S * 1000}", "--log-format", "json"] + aggregator_features)

        for index in range(3):
            start_aggregator(index)
        time.sleep(2)

        truth_file = os.path.join(work, "truth.json")
        count = int(args.rate * args.duration)
        # One Produce request in flight: the dev broker (librdkafka 2.0.2's mock cluster) checks the
        # sequence numbers of an idempotent producer only when it is transactional, so with several
        # in flight a later batch of a partition lands while an earlier one was refused (as
        # dlq_unavailable refuses them), and librdkafka then takes the earlier one as acknowledged:
        # its messages were never appended, yet the truth file counts them (a window one click
        # short). Tests/IngestTests/DevBrokerProduceErrorTests.swift shows both settings.
        producer = subprocess.Popen([
            os.path.join(args.bin, "ctr-producer"), "--brokers", brokers, "--products", "500", "--count", str(count),
            "--kafka-property", "max.in.flight.requests.per.connection=1",
            "--rate", str(args.rate), "--seed", str(args.seed), "--start-time-ms", str(int(time.time() * 1000)),
            "--late-fraction", "0.02", "--too-late-fraction", "0.002", "--too-late-lag-ms", "120000", "--invalid-fraction", "0.001",
            "--truth-file", truth_file] + producer_features, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

        interval = args.duration / fault_count
        started = time.time()
        extra = 3  # the index of the aggregator that rebalance_while_clickhouse_stopped adds and removes
        for number in range(fault_count):
            target = started + (number + rng.random()) * interval
            while time.time() < target:
                ensure_broker_runs(f"before fault {number + 1}")
                for index, process in aggregators.items():
                    peak_rss[index] = max(peak_rss[index], rss_kib(process.pid))
                time.sleep(0.1)
            kind = kinds[number] if number < len(kinds) else rng.choice(kinds)
            faults[kind] += 1
            log(f"fault {number + 1}/{fault_count}: {kind}")
            if kind in ("kill9", "kill9_during_insert"):
                index = rng.randrange(3)
                if kind == "kill9_during_insert":
                    proxy.inject("delay:5")  # the next insert hangs in flight...
                    time.sleep(0.6)          # ...while the instance dies
                aggregators[index].send_signal(signal.SIGKILL)
                aggregators[index].wait()
                time.sleep(rng.uniform(0.5, 3))
                start_aggregator(index)
            elif kind == "pause":
                index = rng.randrange(3)
                aggregators[index].send_signal(signal.SIGSTOP)
                time.sleep(SESSION_TIMEOUT_S + rng.uniform(2, 5))
                aggregators[index].send_signal(signal.SIGCONT)
            elif kind == "rebalance_while_clickhouse_stopped":
                signal_clickhouse(signal.SIGSTOP)
                time.sleep(rng.uniform(0.5, 1.5))
                if extra in aggregators and aggregators[extra].poll() is None:
                    aggregators[extra].send_signal(signal.SIGKILL)  # leaves after the session timeout
                    aggregators[extra].wait()
                    del aggregators[extra]
                else:
                    start_aggregator(extra)                         # joins at once
                time.sleep(SESSION_TIMEOUT_S + rng.uniform(2, 5))
                signal_clickhouse(signal.SIGCONT)
            elif kind == "clickhouse_down":
                clickhouse("stop")
                time.sleep(rng.uniform(3, max(3.5, min(20, interval))))
                clickhouse("start")
            elif kind == "http_5xx":
                proxy.inject(rng.choice(["error_before:500:202", "error_before:503:242"]), rng.randint(1, 4))
            elif kind == "reset_before":
                proxy.inject("reset_before", rng.randint(1, 3))
            elif kind == "drop_answer":
                proxy.inject("close_after_apply", rng.randint(1, 2))
            elif kind == "keepalive_reset_after_apply":
                proxy.inject(rng.choice(["reset_after_apply", "refuse_after_apply:1"]), rng.randint(1, 2))
            elif kind == "error_after_apply":
                proxy.inject("error_after_apply:500:252", rng.randint(1, 3))
            elif kind == "slow_answer":
                proxy.inject("delay:5", 1)
            elif kind == "stale_request":
                proxy.inject(f"hold:{REQUEST_TIMEOUT_S + rng.uniform(1, 3):.1f}", 1)
            elif kind == "broker_down":
                broker = rng.randint(1, 3)
                broker_command(f"broker-down {broker}")
                time.sleep(rng.uniform(1, 4))
                broker_command(f"broker-up {broker}")
            elif kind == "request_errors":
                # Fetch (1) and OffsetCommit (8) answered with retriable errors.
                broker_command(f"request-errors 1 3 {rng.choice([6, 7, 15])}")
                broker_command("request-errors 8 2 15")
            elif kind == "dlq_unavailable":
                # Produce (0) answered NOT_ENOUGH_REPLICAS (19, retriable) until cleared.
                broker_command("request-errors 0 1000000 19")
                time.sleep(rng.uniform(4, 8))
                broker_command("clear-errors 0")
            elif kind == "rebalance_remove_add":
                index = rng.randrange(3)
                aggregators[index].send_signal(signal.SIGTERM)
                aggregators[index].wait()
                time.sleep(rng.uniform(2, 5))
                start_aggregator(index)

        producer_output = producer.communicate()[0].decode()
        log(f"producer: {producer_output.strip()}")
        ensure_broker_runs("before the check")
        for index, process in aggregators.items():
            peak_rss[index] = max(peak_rss[index], rss_kib(process.pid))
        check = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "check-truth.py"), truth_file, direct_url, database,
                                "--wait", str(args.check_wait)] + check_features, capture_output=True, text=True)
        result = check.stdout.strip() or check.stderr.strip()
        fault_text = ",".join(f"{k}:{v}" for k, v in sorted(faults.items()))
        proxy_stats = proxy.stats()
        applied = ",".join(f"{k}:{v}" for k, v in sorted(proxy_stats["applied"].items()))
        print(f"faults by kind: {fault_text}")
        print(f"proxy: applied [{applied}] pending={proxy_stats['pending_faults']} inserts={proxy_stats.get('inserts_forwarded', 0)} "
              f"inserts_on_reused_connections={proxy_stats.get('inserts_on_reused_connection', 0)}")
        print(f"campaign seed={args.seed} faults={sum(faults.values())} [{fault_text}] {result} "
              f"peak_aggregator_rss_mib={max(peak_rss.values()) // 1024 if peak_rss else 0}")
        if check.returncode != 0:
            print(f"work directory kept: {work}", file=sys.stderr)
            args.keep = True
        return check.returncode
    finally:
        signal_clickhouse(signal.SIGCONT)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
        try:
            clickhouse("stop")
        except Exception:  # noqa: BLE001
            pass
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
