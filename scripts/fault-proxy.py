#!/usr/bin/env python3
"""Fault-injecting HTTP/1.1 proxy in front of ClickHouse, for the Swift tests and the fault campaign.

    scripts/fault-proxy.py --upstream-port PORT [--port 0] [--upstream-host 127.0.0.1] [--match insert|all]

It keeps connections alive both ways, as a load balancer does: every client connection gets
its own upstream connection, requests are forwarded one by one with their headers untouched
(no `Connection: close` is added), and answers are read by their own framing (Content-Length,
chunked, or until the server closes). An upstream connection that the server closed while idle
is replaced before the next request is forwarded; one that dies during an exchange resets the
client connection (a proxy never re-sends a request).

Faults are queued and each applies to one INSERT request, in order (other requests, such as a
sink's verification queries, always pass); with `--match all`, to one request of any kind. Modes:

    pass                           forward both ways
    reset_before                   read the request, reset the client connection; nothing is forwarded
    error_before[:STATUS[:CODE]]   answer STATUS (500) with a ClickHouse 18.16-style body of CODE (202); nothing is forwarded
    reset_after_apply              forward, wait for the whole answer (the insert is applied), then reset the
                                   client connection before any byte of the answer
    close_after_apply              the same, but close the client connection cleanly (an empty reply)
    refuse_after_apply[:SECONDS]   reset_after_apply, then refuse new connections for SECONDS (1): a reconnect
                                   after the reset is refused
    error_after_apply[:STATUS[:CODE]]  forward, wait for the answer, replace it with STATUS (500) and CODE (252)
    delay[:SECONDS]                forward, hold the answer back for SECONDS (5), then pass it on
    hold[:SECONDS]                 hold the request before forwarding until `release` (or SECONDS pass), then
                                   forward it (a straggler that reaches the server after its client gave up)

Driven as a process, it prints `listening PORT` on stdout, then reads one command per line on
stdin and answers each with one line on stdout:

    inject MODE [COUNT]    queue COUNT (1) faults                          -> ok
    release                forward every held request now                  -> ok N
    refuse SECONDS         refuse new connections for SECONDS              -> ok
    stats                  counters as one JSON object                     -> {...}
    quit                   exit (so does end of input)

The fault campaign imports the module and uses `FaultProxy` directly.
"""
import argparse
import json
import select
import socket
import sys
import threading
import time
import urllib.parse
from collections import Counter

RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends RST


class ConnectionClosed(Exception):
    pass


class Reader:
    """Buffered reads of HTTP messages from one socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosed()
        self.buffer += chunk

    def line(self):
        while b"\r\n" not in self.buffer:
            self.fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def exactly(self, count):
        while len(self.buffer) < count:
            self.fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def until_close(self):
        try:
            while True:
                self.fill()
        except (ConnectionClosed, OSError):
            pass
        data, self.buffer = self.buffer, b""
        return data

    def head(self):
        """Start line and headers, as raw bytes and as a dict of lowercased names."""
        lines = [self.line()]
        while lines[-1] != b"":
            lines.append(self.line())
        headers = {}
        for line in lines[1:-1]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        return b"\r\n".join(lines) + b"\r\n", lines[0], headers

    def body(self, headers, until_close_allowed):
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raw = b""
            while True:
                size_line = self.line()
                raw += size_line + b"\r\n"
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        trailer = self.line()
                        raw += trailer + b"\r\n"
                        if trailer == b"":
                            return raw
                raw += self.exactly(size + 2)
        if "content-length" in headers:
            return self.exactly(int(headers["content-length"]))
        return self.until_close() if until_close_allowed else b""


def is_insert(start_line, body):
    try:
        target = start_line.split(b" ")[1].decode("latin-1")
    except IndexError:
        return False
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query).get("query", [""])[0]
    text = (query or body[:64].decode("latin-1", "replace")).lstrip(" \t\r\n(")
    return text[:6].upper() == "INSERT"


def error_answer(status, code):
    body = (f"Code: {code}, e.displayText() = DB::Exception: injected by fault-proxy, "
            f"e.what() = DB::Exception\n").encode()
    return (b"HTTP/1.1 %d Injected\r\nContent-Type: text/plain; charset=UTF-8\r\nX-ClickHouse-Exception-Code: %d\r\n"
            b"Content-Length: %d\r\nConnection: Keep-Alive\r\n\r\n" % (status, code, len(body)) + body)


def parse_mode(text):
    """`error_after_apply:500:252` -> ("error_after_apply", ["500", "252"])."""
    name, *args = text.split(":")
    known = {"pass", "reset_before", "error_before", "reset_after_apply", "close_after_apply", "refuse_after_apply",
             "error_after_apply", "delay", "hold"}
    if name not in known:
        raise ValueError(f"unknown mode {name!r}; known: {', '.join(sorted(known))}")
    return name, args


class FaultProxy:
    """The proxy; `start()` serves on a background thread."""

    def __init__(self, upstream_port, port=0, upstream_host="127.0.0.1", host="127.0.0.1", match="insert"):
        if match not in ("insert", "all"):
            raise ValueError(f"match must be 'insert' or 'all', not {match!r}")
        self.match_all = match == "all"
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.lock = threading.Lock()
        self.faults = []
        self.refuse_until = 0.0
        self.release_generation = 0
        self.released = threading.Condition(self.lock)
        self.counters = Counter()
        self.applied = Counter()
        self.held = 0
        self.closed = False
        self.listener = self._listen(port)
        self.port = self.listener.getsockname()[1]

    def _listen(self, port):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, port))
        listener.listen(128)
        listener.settimeout(0.1)
        return listener

    # Control

    def inject(self, mode, count=1):
        parse_mode(mode)
        with self.lock:
            self.faults.extend([mode] * count)

    def release(self):
        with self.lock:
            count = self.held
            self.release_generation += 1
            self.released.notify_all()
        return count

    def refuse(self, seconds):
        with self.lock:
            self.refuse_until = max(self.refuse_until, time.monotonic() + seconds)
            listener = self.listener
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # stops listening now; the accept loop closes it
            except OSError:
                pass

    def stats(self):
        with self.lock:
            return dict(self.counters, held=self.held, pending_faults=len(self.faults), applied=dict(self.applied))

    def close(self):
        self.closed = True
        self.release()

    # Serving

    def start(self):
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def _accept_loop(self):
        while not self.closed:
            with self.lock:
                refusing = time.monotonic() < self.refuse_until
            if refusing:
                if self.listener is not None:
                    self.listener.close()
                    self.listener = None
                time.sleep(0.02)
                continue
            if self.listener is None:
                try:
                    self.listener = self._listen(self.port)
                except OSError:
                    time.sleep(0.05)
                    continue
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            client.settimeout(None)
            with self.lock:
                self.counters["connections"] += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _next_fault(self, insert):
        with self.lock:
            self.counters["requests"] += 1
            if insert:
                self.counters["inserts_received"] += 1
            if not (insert or self.match_all) or not self.faults:
                return "pass", []
            mode = self.faults.pop(0)
            name, args = parse_mode(mode)
            self.applied[name] += 1
            return name, args

    def _serve(self, client):
        client_reader = Reader(client)
        upstream = None
        upstream_reader = None
        served = 0
        try:
            while True:
                try:
                    raw_head, start_line, headers = client_reader.head()
                    body = client_reader.body(headers, until_close_allowed=False)
                except (ConnectionClosed, OSError, ValueError):
                    return
                request = raw_head + body
                insert = is_insert(start_line, body)
                if insert and served > 0:
                    with self.lock:
                        self.counters["inserts_on_reused_connection"] += 1
                served += 1
                mode, args = self._next_fault(insert)
                if mode == "reset_before":
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
                    return
                if mode == "error_before":
                    status, code = (int(args[0]) if args else 500), (int(args[1]) if len(args) > 1 else 202)
                    client.sendall(error_answer(status, code))
                    continue
                if mode == "hold":
                    self._hold(float(args[0]) if args else None)
                if upstream is not None and self._idle_closed(upstream):
                    upstream.close()
                    upstream = None
                if upstream is None:
                    try:
                        upstream = socket.create_connection(self.upstream, timeout=5)
                        upstream.settimeout(None)
                    except OSError:
                        body = b"upstream unreachable\n"
                        client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
                        return
                    upstream_reader = Reader(upstream)
                try:
                    upstream.sendall(request)
                    if insert:
                        with self.lock:
                            self.counters["inserts_forwarded"] += 1
                    answer_head, _, answer_headers = upstream_reader.head()
                    closes = answer_headers.get("connection", "").lower() == "close"
                    answer = answer_head + upstream_reader.body(answer_headers, until_close_allowed=True)
                except (ConnectionClosed, OSError, ValueError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
                    return
                if mode in ("reset_after_apply", "refuse_after_apply"):
                    if mode == "refuse_after_apply":
                        self.refuse(float(args[0]) if args else 1.0)
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
                    return
                if mode == "close_after_apply":
                    client.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "error_after_apply":
                    status, code = (int(args[0]) if args else 500), (int(args[1]) if len(args) > 1 else 252)
                    answer = error_answer(status, code)
                if mode == "delay":
                    time.sleep(float(args[0]) if args else 5.0)
                try:
                    client.sendall(answer)
                except OSError:
                    return
                if closes:
                    return
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    def _hold(self, seconds):
        deadline = None if seconds is None else time.monotonic() + seconds
        with self.lock:
            self.held += 1
            generation = self.release_generation
            while generation == self.release_generation and not self.closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self.released.wait(remaining)
            self.held -= 1
            self.counters["released"] += 1

    @staticmethod
    def _idle_closed(sock):
        """Whether the server closed an idle keep-alive connection (readable with nothing to read)."""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--upstream-host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--match", choices=["insert", "all"], default="insert", help="which requests faults apply to")
    args = parser.parse_args()
    proxy = FaultProxy(args.upstream_port, port=args.port, upstream_host=args.upstream_host, match=args.match).start()
    print(f"listening {proxy.port}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "inject":
                proxy.inject(words[1], int(words[2]) if len(words) > 2 else 1)
                reply = "ok"
            elif words[0] == "release":
                reply = f"ok {proxy.release()}"
            elif words[0] == "refuse":
                proxy.refuse(float(words[1]))
                reply = "ok"
            elif words[0] == "stats":
                reply = json.dumps(proxy.stats(), sort_keys=True)
            elif words[0] == "quit":
                break
            else:
                reply = f"error unknown command {words[0]!r}"
        except (IndexError, ValueError) as error:
            reply = f"error {error}"
        print(reply, flush=True)
    proxy.close()


if __name__ == "__main__":
    main()
