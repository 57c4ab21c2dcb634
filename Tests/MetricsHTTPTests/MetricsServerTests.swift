import CTRPipeline
import Foundation
import MetricsHTTP
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The metrics server on real sockets. Timeouts that must not fire are an hour, so a server that
/// blocks on one client shows up as a request that is never answered (the client's fail-safe),
/// not as a slow answer.
@Suite struct MetricsServerTests {
    static let hour = Duration.seconds(3600)

    static func endpoints(
        metrics: @escaping @Sendable () -> String = { "ctr_up 1\n" }, health: @escaping @Sendable () -> HealthStatus = { .healthy }
    ) -> MetricsEndpoints {
        MetricsEndpoints(metrics: metrics, health: health, ready: { true })
    }

    static func server(
        readTimeout: Duration = hour, writeTimeout: Duration = hour, maximumConnections: Int = 64, endpoints: MetricsEndpoints = endpoints()
    ) throws -> MetricsServer {
        let server = try MetricsServer(
            configuration: MetricsServerConfiguration(
                host: "127.0.0.1", port: 0, readTimeout: readTimeout, writeTimeout: writeTimeout, maximumConnections: maximumConnections
            ),
            endpoints: endpoints
        )
        server.start()
        return server
    }

    @Test func servesTheThreeEndpoints() throws {
        let server = try Self.server(endpoints: MetricsEndpoints(metrics: { "ctr_up 1\n" }, health: { .healthy }, ready: { false }))
        defer { server.stop() }
        #expect(try RawClient(port: server.port).get("/metrics") == (200, "ctr_up 1\n"))
        #expect(try RawClient(port: server.port).get("/health?probe=1") == (200, "ok\n"))
        #expect(try RawClient(port: server.port).get("/ready").status == 503)
        #expect(try RawClient(port: server.port).get("/nothing").status == 404)
    }

    @Test func bindsLoopbackByDefault() throws {
        let server = try MetricsServer(configuration: MetricsServerConfiguration(port: 0), endpoints: Self.endpoints())
        defer { server.stop() }
        #expect(server.configuration.host == "127.0.0.1")
        #expect(throws: MetricsServerError.self) {
            try MetricsServer(configuration: MetricsServerConfiguration(host: "not an address!", port: 0), endpoints: Self.endpoints())
        }
    }

    /// Review finding 14: 20 connections that send nothing held the single thread.
    @Test func idleConnectionsDoNotBlockHealth() throws {
        let server = try Self.server()
        defer { server.stop() }
        let idle = try (0..<20).map { _ in try RawClient(port: server.port) }
        #expect(try RawClient(port: server.port).get("/health") == (200, "ok\n"))
        #expect(try idle[19].get("/health") == (200, "ok\n"), "an idle connection is still served when it speaks")
        withExtendedLifetime(idle) {}
    }

    /// Review finding 14: `send` without a timeout blocked on a client that never reads.
    @Test func clientThatNeverReadsDoesNotBlockOthers() throws {
        let rendered = Atomic<Int>(0)
        let body = String(repeating: "ctr_padding_metric 1\n", count: 1_000_000)  // 21 MB, far beyond socket buffers
        let server = try Self.server(
            endpoints: Self.endpoints(metrics: {
                rendered.add(1, ordering: .relaxed)
                return body
            })
        )
        defer { server.stop() }
        let stuck = try RawClient(port: server.port, receiveBuffer: 4096)
        try stuck.send("GET /metrics HTTP/1.0\r\n\r\n")
        #expect(waitUntil { rendered.load(ordering: .relaxed) == 1 })
        #expect(try RawClient(port: server.port).get("/health") == (200, "ok\n"))
        #expect(try RawClient(port: server.port).get("/ready") == (200, "ready\n"))
        withExtendedLifetime(stuck) {}
    }

    @Test func writeTimeoutClosesAClientThatNeverReads() throws {
        let body = String(repeating: "ctr_padding_metric 1\n", count: 1_000_000)
        let rendered = Atomic<Int>(0)
        let server = try Self.server(
            writeTimeout: .milliseconds(200),
            endpoints: Self.endpoints(metrics: {
                rendered.add(1, ordering: .relaxed)
                return body
            })
        )
        defer { server.stop() }
        let stuck = try RawClient(port: server.port, receiveBuffer: 4096)
        try stuck.send("GET /metrics HTTP/1.0\r\n\r\n")
        // Not reading until the server has given up: what is left in the buffers is far short of the body.
        #expect(waitUntil { rendered.load(ordering: .relaxed) == 1 })
        #expect(waitUntil { server.connectionCount == 0 })
        var received = 0
        #expect(
            waitUntil {
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let count = recv(stuck.descriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                    guard count > 0 else { return count == 0 || errno == ECONNRESET }
                    received += count
                }
            }
        )
        #expect(received < body.utf8.count)
    }

    @Test func readTimeoutClosesASilentClient() throws {
        let server = try Self.server(readTimeout: .milliseconds(100))
        defer { server.stop() }
        let silent = try RawClient(port: server.port)
        #expect(try silent.readToEnd().isEmpty, "closed without an answer")
        #expect(try RawClient(port: server.port).get("/health").status == 200)
    }

    @Test func theOldestConnectionMakesRoomBeyondTheCap() throws {
        let server = try Self.server(maximumConnections: 4)
        defer { server.stop() }
        let idle = try (0..<10).map { _ in try RawClient(port: server.port) }
        #expect(try RawClient(port: server.port).get("/health") == (200, "ok\n"))
        #expect(try idle[0].readToEnd().isEmpty, "the oldest was closed")
    }

    @Test func requestHeadsAreSplitAcrossPackets() throws {
        let server = try Self.server()
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        for piece in ["GE", "T /hea", "lth HTTP/1.1\r\n", "Host: x\r", "\n\r\n"] { try client.send(piece) }
        let text = String(decoding: try client.readToEnd(), as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.0 200 OK\r\n"))
        #expect(text.hasSuffix("\r\n\r\nok\n"))
    }

    @Test func headRequestsGetNoBody() throws {
        let server = try Self.server()
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        try client.send("HEAD /metrics HTTP/1.0\r\n\r\n")
        let text = String(decoding: try client.readToEnd(), as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.0 200 OK\r\n"))
        #expect(text.contains("Content-Length: 9\r\n"))
        #expect(text.hasSuffix("\r\n\r\n"))
    }

    /// `/health` as ctr-aggregator wires it: 503 once the pipeline loop's heartbeat
    /// (`PipelineMetrics.recordProgress()`) is older than the stall timeout.
    @Test func stalledPipelineFailsHealth() throws {
        let metrics = PipelineMetrics()
        let stallTimeout = Mutex(Self.hour)
        let server = try Self.server(
            endpoints: Self.endpoints(health: {
                let stalled = metrics.timeSinceProgress
                let limit = stallTimeout.withLock { $0 }
                return stalled <= limit ? .healthy : .unhealthy(reason: "no progress for \(stalled)")
            })
        )
        defer { server.stop() }
        metrics.recordProgress()
        #expect(try RawClient(port: server.port).get("/health") == (200, "ok\n"))

        stallTimeout.withLock { $0 = .milliseconds(50) }
        #expect(waitUntil { (try? RawClient(port: server.port).get("/health").status) == 503 })
        #expect(try RawClient(port: server.port).get("/health").body.hasPrefix("unhealthy: no progress for"))

        stallTimeout.withLock { $0 = Self.hour }
        metrics.recordProgress()
        #expect(try RawClient(port: server.port).get("/health").status == 200)
    }

    @Test func stopClosesTheListener() throws {
        let server = try Self.server()
        let port = server.port
        #expect(try RawClient(port: port).get("/health").status == 200)
        server.stop()
        #expect(throws: ClientError.self) { try RawClient(port: port) }
    }
}
