@testable import MetricsHTTP
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct HTTPExchangeTests {
    @Test func parsesCompleteHeadsOnly() {
        #expect(HTTPRequestHead.parse(Array("GET /metrics HTTP/1.1\r\nHost: x\r\n".utf8)) == .needMoreBytes)
        #expect(HTTPRequestHead.parse(Array("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n".utf8)) == .complete(HTTPRequestHead(method: "GET", path: "/metrics")))
        #expect(HTTPRequestHead.parse(Array("HEAD /health HTTP/1.0\n\n".utf8)) == .complete(HTTPRequestHead(method: "HEAD", path: "/health")))
        #expect(HTTPRequestHead.parse([]) == .needMoreBytes)
    }

    @Test func refusesMalformedAndOversizedHeads() {
        guard case .invalid(.badRequest, _) = HTTPRequestHead.parse(Array("hello\r\n\r\n".utf8)) else {
            Issue.record("a request line without a version is malformed")
            return
        }
        let long = Array("GET /metrics HTTP/1.1\r\nX: \(String(repeating: "a", count: HTTPRequestHead.maximumHeadBytes))".utf8)
        guard case .invalid(.requestHeaderFieldsTooLarge, _) = HTTPRequestHead.parse(long) else {
            Issue.record("an endless head is refused before it completes")
            return
        }
    }

    @Test func routes() {
        let endpoints = MetricsEndpoints(metrics: { "m 1\n" }, health: { .unhealthy(reason: "stuck") }, ready: { false })
        #expect(endpoints.respond(to: HTTPRequestHead(method: "GET", path: "/metrics")) == HTTPResponse(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: "m 1\n"))
        #expect(endpoints.respond(to: HTTPRequestHead(method: "GET", path: "/healthz")) == HTTPResponse(status: .serviceUnavailable, body: "unhealthy: stuck\n"))
        #expect(endpoints.respond(to: HTTPRequestHead(method: "GET", path: "/ready")).status == .serviceUnavailable)
        #expect(endpoints.respond(to: HTTPRequestHead(method: "POST", path: "/metrics")).status == .methodNotAllowed)
        #expect(endpoints.respond(to: HTTPRequestHead(method: "GET", path: "/")).status == .notFound)
    }

    @Test func serializesAClosingResponse() {
        let response = HTTPResponse(status: .ok, body: "ok\n")
        #expect(String(decoding: response.serialized(), as: UTF8.self)
            == "HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        #expect(String(decoding: response.serialized(includeBody: false), as: UTF8.self).hasSuffix("Content-Length: 3\r\nConnection: close\r\n\r\n"))
    }
}

@Suite struct AcceptBackoffTests {
    @Test func resourceExhaustionPausesWithDoublingDelays() {
        var backoff = AcceptBackoff(initialDelay: .milliseconds(50), maximumDelay: .seconds(1))
        let delays = (0..<7).map { _ in backoff.failed(errno: EMFILE) }
        #expect(delays == [50, 100, 200, 400, 800, 1000, 1000].map { .pause(.milliseconds($0)) })
        #expect(backoff.failed(errno: ENFILE) == .pause(.seconds(1)))
        backoff.succeeded()
        #expect(backoff.failed(errno: ENOBUFS) == .pause(.milliseconds(50)))
    }

    @Test func errorsOfOneConnectionAreRetriedAtOnce() {
        var backoff = AcceptBackoff()
        for code in [EINTR, ECONNABORTED, EAGAIN, EPROTO] {
            #expect(backoff.failed(errno: code) == .retry)
        }
        #expect(backoff.consecutiveFailures == 0)
    }
}

@Suite struct ProcessMetricsTests {
    @Test func readsThisProcess() {
        let metrics = ProcessMetrics.current()
        #expect(metrics.cpuSeconds > 0)
        #expect(metrics.residentMemoryBytes > 1 << 20)
        #expect(metrics.openFileDescriptors >= 3)
        #expect(metrics.maximumFileDescriptors >= metrics.openFileDescriptors)
        #expect(metrics.startTimeSeconds > 1_600_000_000)
        #expect(metrics.startTimeSeconds <= Double(time(nil)) + 1, "boot time has whole seconds")
        let text = metrics.prometheusText
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"] {
            #expect(text.contains("\n\(name) "), "\(name)")
            #expect(text.contains("# TYPE \(name) "), "\(name)")
        }
    }

    @Test func parsesProcStatWithAwkwardCommandNames() {
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 4 0 123456 1000000 250 18446744073709551615"
        #expect(ProcessMetrics.startTicks(stat: stat) == 123456)
        #expect(ProcessMetrics.bootTime(stat: "cpu  1 2 3\nbtime 1764547200\nprocesses 9\n") == 1_764_547_200)
    }
}
