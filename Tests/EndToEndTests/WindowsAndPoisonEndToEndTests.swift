import ClickHouseHTTP
import Foundation
import TestSupport
import Testing

/// Through the binaries, with hand-written messages (kcat): windows of a stream that stops
/// close after `--close-idle-after`; poison input (revenue that would overflow a window, ids
/// that differ only in Unicode normalisation) never stops the pipeline and is counted exactly.
@Suite(.serialized) struct WindowsAndPoisonEndToEndTests {
    struct Running {
        let directory: URL
        let endpoint: ClickHouseEndpoint
        let broker: DevBrokerProcess
        let aggregator: ChildProcess

        func produce(_ topic: String, _ messages: [(key: String, value: String)]) throws {
            let input = messages.map { "\($0.key)\t\($0.value)" }.joined(separator: "\n") + "\n"
            let result = try ChildProcess.run(
                "/usr/bin/kcat", ["-P", "-b", broker.bootstrapServers, "-t", topic, "-K", "\t"], input: Data(input.utf8)
            )
            #expect(result.status == 0, "\(result.stderr)")
        }

        func rows(_ sql: String) throws -> [[String]] {
            try ClickHouseConnection(endpoint: endpoint).execute(sql).lines.map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        }
    }

    func start(_ name: String, aggregator flags: [String]) throws -> Running {
        let directory = try PackagePaths.temporaryDirectory("ctr-\(name)")
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: name)
        try ClickHouseTestServer.migrate(endpoint)
        let broker = try DevBrokerProcess(directory: directory)
        let aggregator = try ChildProcess(
            PackagePaths.executable("ctr-aggregator"),
            ["--brokers", broker.bootstrapServers, "--clickhouse-url", endpoint.url, "--database", endpoint.database,
             "--metrics-port", "0", "--group-id", name, "--batch-max-delay-ms", "50"] + flags,
            logDirectory: directory, name: "aggregator"
        )
        return Running(directory: directory, endpoint: endpoint, broker: broker, aggregator: aggregator)
    }

    /// Epoch milliseconds at the start of the 10-second window that began at least 20 s ago.
    var recentWindow: Int64 {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        return (now - 20_000) / 10_000 * 10_000
    }

    @Test func theLastWindowsOfAStreamThatStopsFireAfterCloseIdleAfter() throws {
        let running = try start("closeidle", aggregator: ["--close-idle-after", "2s", "--idle-timeout-ms", "500"])
        defer { _ = running.aggregator.stop(signal: SIGKILL) }
        let window = recentWindow
        try running.produce("impressions", (0..<5).map { ("p", #"{"product_id":"p","timestamp":\#(window + 1_000 + Int64($0))}"#) })
        // Without the option the window would wait for an event 12 s later, which never comes.
        let fired = try eventually(timeout: 60) {
            try running.rows("SELECT impressions, revision FROM ctr_results_raw WHERE product_id = 'p'") == [["5", "0"]]
        }
        #expect(fired, "aggregator log:\n\(running.aggregator.stderr.suffix(2000))")
        // A late event within the allowed lateness of the raised watermark updates the window.
        try running.produce("impressions", [("p", #"{"product_id":"p","timestamp":\#(window + 9_000)}"#)])
        let updated = try eventually(timeout: 60) {
            try running.rows("SELECT impressions, impressions_delta FROM ctr_results_raw WHERE product_id = 'p' AND revision = 1") == [["6", "1"]]
        }
        #expect(updated, "aggregator log:\n\(running.aggregator.stderr.suffix(2000))")
    }

    @Test func poisonInputIsDeadLetteredAndTheNextWindowsLandExact() throws {
        let running = try start("poison", aggregator: ["--close-idle-after", "2s", "--idle-timeout-ms", "500"])
        defer { _ = running.aggregator.stop(signal: SIGKILL) }
        let window = recentWindow
        let nfc = "caf\u{E9}"
        let nfd = "cafe\u{301}"
        try running.produce("clicks", [
            ("rich", #"{"product_id":"rich","timestamp":\#(window + 1_000),"revenue":600000000000}"#),
            ("rich", #"{"product_id":"rich","timestamp":\#(window + 1_001),"revenue":600000000000}"#),
            ("rich", #"{"product_id":"rich","timestamp":\#(window + 1_002),"revenue":0.25}"#),
        ])
        try running.produce("impressions", [
            (nfc, #"{"product_id":"\#(nfc)","timestamp":\#(window + 2_000)}"#),
            (nfd, #"{"product_id":"\#(nfd)","timestamp":\#(window + 2_000)}"#),
            (nfd, #"{"product_id":"\#(nfd)","timestamp":\#(window + 2_001)}"#),
        ])
        let landed = try eventually(timeout: 60) {
            try running.rows("SELECT count() FROM ctr_results_raw") == [["3"]]
        }
        #expect(landed, "aggregator log:\n\(running.aggregator.stderr.suffix(2000))")
        #expect(
            try running.rows("SELECT clicks, revenue = toDecimal64('0.25', 6) FROM ctr_results_raw WHERE product_id = 'rich'")
                == [["1", "1"]],
            "clicks above the per-event revenue bound (EventDecoder.maximumRevenueMicros, 10^6 units) are refused, the other counts"
        )
        let ids = try running.rows("SELECT hex(product_id), impressions FROM ctr_results_raw WHERE product_id != 'rich' ORDER BY product_id")
        #expect(ids == [[hex(nfd), "2"], [hex(nfc), "1"]], "NFC and NFD spellings are two products")
        let letters = try ChildProcess.run(
            "/usr/bin/kcat", ["-C", "-b", running.broker.bootstrapServers, "-t", "ctr-dlq", "-o", "beginning", "-e", "-q", "-f", "%h\n"]
        )
        #expect(letters.stdout.components(separatedBy: "ctr-reason=invalid_revenue").count - 1 == 2, "\(letters.stdout)")
        #expect(running.aggregator.isRunning, "one message never stops the pipeline")
    }

    func hex(_ text: String) -> String { text.utf8.map { String(format: "%02X", $0) }.joined() }
}
