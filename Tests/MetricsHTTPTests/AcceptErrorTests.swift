import Foundation
import Testing
import TestSupport

/// Review finding 14: the old server's accept loop ended on the first `accept` error other than
/// `EINTR`, and health was gone until restart. Here ctr-aggregator runs with a small file
/// descriptor limit (`prlimit`), idle connections exhaust it so that `accept` fails with `EMFILE`,
/// and the server must pause, recover when the read timeout frees descriptors, and answer again.
@Suite struct AcceptErrorTests {
    @Test func serverSurvivesDescriptorExhaustion() throws {
        let logs = try PackagePaths.temporaryDirectory("metrics-emfile")
        defer { try? FileManager.default.removeItem(at: logs) }
        let port = PackagePaths.freePort()
        let aggregator = try ChildProcess(
            "/usr/bin/prlimit",
            [
                "--nofile=40:40", PackagePaths.executable("ctr-aggregator"), "--brokers", "127.0.0.1:1",
                "--clickhouse-url", "http://127.0.0.1:\(PackagePaths.freePort())", "--metrics-port", "\(port)",
                "--health-stall-timeout", "1h",
            ],
            logDirectory: logs, name: "aggregator"
        )
        defer { aggregator.stop(signal: SIGKILL) }
        #expect(waitUntil { (try? RawClient(port: port).get("/health").status) == 200 }, "serving: \(aggregator.stderr)")

        let idle = try (0..<60).map { _ in try RawClient(port: port) }
        #expect(waitUntil { aggregator.stderr.contains("accept failed (Too many open files)") }, "descriptors exhausted: \(aggregator.stderr)")
        #expect(try RawClient(port: port).get("/health") == (200, "ok\n"), "served again once the idle connections timed out")
        #expect(aggregator.process.isRunning)
        withExtendedLifetime(idle) {}
    }
}
