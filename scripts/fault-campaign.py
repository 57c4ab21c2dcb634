#!/usr/bin/env python3
"""Fault campaign: drives a deterministic stream through the real pipeline while injecting faults,
then compares ClickHouse with the producer's truth file.

    scripts/fault-campaign.py [--faults N] [--duration SECONDS] [--rate EVENTS_PER_S] [--seed S] [--bin DIR]

Defaults are the reduced size run in CI (about 12 faults in 60 s). Full size:

    scripts/fault-campaign.py --faults 100 --duration 600 --rate 300

Everything runs on loopback: a private ClickHouse server (scripts/clickhouse-local.sh), a
fault-injecting HTTP proxy in front of it (5xx with retryable ClickHouse codes, connections reset
before the request or after the insert with the answer lost, answers slower than the aggregator's
request timeout), the dev broker (broker down/up, injected request errors), three aggregator
instances in one consumer group (kill -9 and restart, one removed and added back), and
ClickHouse itself stopped for seconds and started again.

Prints one line: faults injected by kind, events, windows checked, lost, duplicated, mismatched,
peak aggregator memory; exits 0 only if nothing was lost, duplicated or mismatched.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultProxy(threading.Thread):
    """HTTP proxy that applies one queued fault per request; requests without a fault pass."""

    def __init__(self, upstream_port):
        super().__init__(daemon=True)
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.faults = []
        self.lock = threading.Lock()

    def inject(self, fault, count=1):
        with self.lock:
            self.faults.extend([fault] * count)

    def run(self):
        while True:
            client, _ = self.listener.accept()
            threading.Thread(target=self.handle, args=(client,), daemon=True).start()

    @staticmethod
    def read_request(sock):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            body += chunk
        lines = [l for l in head.split(b"\r\n") if not l.lower().startswith(b"connection:")]
        return b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body

    def handle(self, client):
        with client:
            request = self.read_request(client)
            if request is None:
                return
            with self.lock:
                fault = self.faults.pop(0) if self.faults and request.startswith(b"POST /?query=INSERT") else None
            if fault == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            if fault in ("error_500", "error_503"):
                code, status = (202, 500) if fault == "error_500" else (242, 503)
                body = f"Code: {code}, e.displayText() = DB::Exception: injected, e.what() = DB::Exception\n".encode()
                client.sendall(b"HTTP/1.1 %d Injected\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (status, len(body)) + body)
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                return
            response = b""
            with upstream:
                try:
                    upstream.sendall(request)
                    while True:
                        chunk = upstream.recv(65536)
                        if not chunk:
                            break
                        response += chunk
                except OSError:
                    return
            if fault == "drop_answer":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            if fault == "slow":
                time.sleep(5)
            try:
                client.sendall(response)
            except OSError:
                pass


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=12)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bin", default=os.path.join(ROOT, ".build", "debug"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
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

    try:
        clickhouse("start")
        proxy = FaultProxy(ch_http)
        proxy.start()
        url = f"http://127.0.0.1:{proxy.port}"
        direct_url = f"http://127.0.0.1:{ch_http}"
        database = "campaign"
        subprocess.run([os.path.join(args.bin, "schema-tool"), "migrate", "--clickhouse-url", direct_url, "--database", database,
                        "--migrations-dir", os.path.join(ROOT, "migrations")], check=True, stdout=subprocess.DEVNULL)

        partitions = 6
        bootstrap_file = os.path.join(work, "bootstrap.txt")
        control = os.path.join(work, "broker-control")
        spawn("broker", [os.path.join(args.bin, "ctr-dev-broker"), "--partitions", str(partitions), "--bootstrap-file", bootstrap_file,
                         "--control-file", control])
        while not os.path.exists(bootstrap_file):
            time.sleep(0.1)
        brokers = open(bootstrap_file).read().strip()

        def broker_command(line):
            with open(control, "w") as f:
                f.write(line + "\n")

        aggregators = {}
        peak_rss = Counter()

        def start_aggregator(index):
            aggregators[index] = spawn(f"aggregator-{index}", [
                os.path.join(args.bin, "ctr-aggregator"), "--brokers", brokers, "--group-id", "campaign",
                "--clickhouse-url", url, "--database", database, "--metrics-port", "0",
                "--request-timeout-ms", "2000", "--retry-initial-ms", "50", "--retry-max-ms", "1000",
                "--kafka-property", "session.timeout.ms=6000", "--log-format", "json"])

        for index in range(3):
            start_aggregator(index)
        time.sleep(2)

        truth_file = os.path.join(work, "truth.json")
        count = int(args.rate * args.duration)
        producer = subprocess.Popen([
            os.path.join(args.bin, "ctr-producer"), "--brokers", brokers, "--products", "500", "--count", str(count),
            "--rate", str(args.rate), "--seed", str(args.seed), "--start-time-ms", str(int(time.time() * 1000)),
            "--late-fraction", "0.02", "--too-late-fraction", "0.002", "--too-late-lag-ms", "120000", "--invalid-fraction", "0.001",
            "--truth-file", truth_file], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

        kinds = ["kill9", "kill9_during_insert", "clickhouse_down", "http_5xx", "reset_before", "drop_answer", "slow_answer",
                 "broker_down", "request_errors", "rebalance_remove_add"]
        interval = args.duration / max(args.faults, 1)
        started = time.time()
        for number in range(args.faults):
            target = started + (number + rng.random()) * interval
            while time.time() < target:
                for index, process in aggregators.items():
                    peak_rss[index] = max(peak_rss[index], rss_kib(process.pid))
                time.sleep(0.1)
            kind = kinds[number % len(kinds)] if number < len(kinds) else rng.choice(kinds)
            faults[kind] += 1
            log(f"fault {number + 1}/{args.faults}: {kind}")
            if kind in ("kill9", "kill9_during_insert"):
                index = rng.randrange(3)
                if kind == "kill9_during_insert":
                    proxy.inject("slow")  # the next insert hangs in flight...
                    time.sleep(0.6)       # ...while the instance dies
                aggregators[index].send_signal(signal.SIGKILL)
                aggregators[index].wait()
                time.sleep(rng.uniform(0.5, 3))
                start_aggregator(index)
            elif kind == "clickhouse_down":
                clickhouse("stop")
                time.sleep(rng.uniform(3, min(20, interval)))
                clickhouse("start")
            elif kind == "http_5xx":
                proxy.inject(rng.choice(["error_500", "error_503"]), rng.randint(1, 4))
            elif kind == "reset_before":
                proxy.inject("reset", rng.randint(1, 3))
            elif kind == "drop_answer":
                proxy.inject("drop_answer", rng.randint(1, 2))
            elif kind == "slow_answer":
                proxy.inject("slow", 1)
            elif kind == "broker_down":
                broker = rng.randint(1, 3)
                broker_command(f"broker-down {broker}")
                time.sleep(rng.uniform(1, 4))
                broker_command(f"broker-up {broker}")
            elif kind == "request_errors":
                # Fetch (1) and OffsetCommit (8) answered with retriable errors.
                broker_command(f"request-errors 1 3 {rng.choice([6, 7, 15])}")
                broker_command("request-errors 8 2 15")
            elif kind == "rebalance_remove_add":
                index = rng.randrange(3)
                aggregators[index].send_signal(signal.SIGTERM)
                aggregators[index].wait()
                time.sleep(rng.uniform(2, 5))
                start_aggregator(index)

        producer_output = producer.communicate()[0].decode()
        log(f"producer: {producer_output.strip()}")
        for index, process in aggregators.items():
            peak_rss[index] = max(peak_rss[index], rss_kib(process.pid))
        check = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "check-truth.py"), truth_file, direct_url, database,
                                "--wait", "180"], capture_output=True, text=True)
        result = check.stdout.strip()
        fault_text = ",".join(f"{k}:{v}" for k, v in sorted(faults.items()))
        print(f"campaign seed={args.seed} faults={sum(faults.values())} [{fault_text}] {result} "
              f"peak_aggregator_rss_mib={max(peak_rss.values()) // 1024 if peak_rss else 0}")
        if check.returncode != 0:
            print(f"work directory kept: {work}", file=sys.stderr)
            args.keep = True
        return check.returncode
    finally:
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
