import ClickHouseHTTP
import Foundation
import TestSupport
import Testing

/// Poison input through the binaries: messages that used to stop the aggregator for good, or
/// make every later event too late, are dead-lettered and the windows after them land exact.
@Suite(.serialized) struct PoisonInputEndToEndTests {
    /// Produces `value` (one message) with kcat.
    func produce(_ broker: DevBrokerProcess, topic: String, partition: Int, key: String, value: String) throws {
        let result = try ChildProcess.run(
            "/usr/bin/kcat",
            ["-P", "-b", broker.bootstrapServers, "-t", topic, "-p", "\(partition)", "-k", key, "-X", "message.max.bytes=1048576"],
            input: Data(value.utf8)
        )
        #expect(result.status == 0, "\(result.stderr)")
    }

    @Test func poisonIsDeadLetteredAndTheNextWindowsLandExact() throws {
        let directory = try PackagePaths.temporaryDirectory("ctr-e2e-poison")
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "poison")
        try ClickHouseTestServer.migrate(endpoint)
        let broker = try DevBrokerProcess(directory: directory)
        let aggregator = try ChildProcess(
            PackagePaths.executable("ctr-aggregator"),
            ["--brokers", broker.bootstrapServers, "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--metrics-port", "0",
             "--group-id", "poison"],
            logDirectory: directory, name: "aggregator"
        )
        defer { aggregator.stop() }

        // Before the traffic: a value of 999,950 bytes (larger than the aggregator accepts, and
        // too large to dead-letter unchanged), an event in 2099 on every partition (it would
        // move every watermark past all real events), and a click whose revenue a window could
        // not store.
        let start: Int64 = 1_700_000_000_000
        let big = #"{"product_id":"big","timestamp":\#(start),"pad":""# + String(repeating: "x", count: 999_950 - 55) + #""}"#
        #expect(big.utf8.count == 999_950)
        try produce(broker, topic: "impressions", partition: 0, key: "big", value: big)
        for partition in 0..<3 {
            for topic in ["impressions", "clicks"] {
                try produce(broker, topic: topic, partition: partition, key: "future", value: #"{"product_id":"future","timestamp":4102444799000}"#)
            }
        }
        try produce(
            broker, topic: "clicks", partition: 1, key: "rich",
            value: #"{"product_id":"rich","timestamp":\#(start + 1000),"revenue":1000000000000}"#
        )

        let truthFile = directory.appendingPathComponent("truth.json")
        let producer = try ChildProcess.run(
            PackagePaths.executable("ctr-producer"),
            ["--brokers", broker.bootstrapServers, "--products", "100", "--count", "20000", "--rate", "15000", "--event-rate", "1000",
             "--start-time-ms", "\(start)", "--seed", "11", "--revenue-per-click", "0.45", "--truth-file", truthFile.path]
        )
        #expect(producer.status == 0, "\(producer.stderr)")
        let check = try ChildProcess.run(
            "/usr/bin/env",
            ["python3", PackagePaths.root.appendingPathComponent("scripts/check-truth.py").path, truthFile.path, endpoint.url, endpoint.database,
             "--wait", "90"]
        )
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)\naggregator log:\n\(aggregator.stderr.suffix(3000))")
        #expect(check.stdout.contains("lost=0 duplicated=0 mismatched=0"))

        var headers: [String] = []
        _ = eventually(timeout: 30) {
            let dlq = (try? ChildProcess.run(
                "/usr/bin/kcat",
                ["-C", "-b", broker.bootstrapServers, "-t", "ctr-dlq", "-o", "beginning", "-e", "-q", "-f", "%h\n", "-X", "fetch.message.max.bytes=2000000"]
            ).stdout) ?? ""
            headers = dlq.split(separator: "\n").map(String.init)
            return headers.count >= 8
        }
        func letters(_ reason: String) -> [String] { headers.filter { $0.contains("ctr-reason=\(reason),") } }
        #expect(letters("timestamp_in_future").count == 6, "\(headers)")
        #expect(letters("invalid_revenue").count == 1, "\(headers)")
        let tooLarge = letters("too_large")
        #expect(tooLarge.count == 1, "\(headers)")
        #expect(tooLarge.first?.contains("ctr-truncated=true") == true)
        #expect(tooLarge.first?.contains("ctr-original-size=\(big.utf8.count),") == true)
        #expect(aggregator.process.isRunning, "the aggregator is still running:\n\(aggregator.stderr.suffix(3000))")
    }

    /// NFC `café` and NFD `café` are two byte sequences, i.e. two products in Kafka, in
    /// ClickHouse and for every client; the aggregator must not merge them.
    @Test func canonicallyEquivalentProductIdsStayApart() throws {
        let directory = try PackagePaths.temporaryDirectory("ctr-e2e-nfc")
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "nfc")
        try ClickHouseTestServer.migrate(endpoint)
        let broker = try DevBrokerProcess(directory: directory)
        let aggregator = try ChildProcess(
            PackagePaths.executable("ctr-aggregator"),
            ["--brokers", broker.bootstrapServers, "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--metrics-port", "0",
             "--group-id", "nfc"],
            logDirectory: directory, name: "aggregator"
        )
        defer { aggregator.stop() }
        let start: Int64 = 1_700_000_000_000
        for (product, time) in [("caf\u{E9}", start), ("cafe\u{301}", start + 1), ("caf\u{E9}", start + 2)] {
            try produce(broker, topic: "impressions", partition: 0, key: "k", value: #"{"product_id":"\#(product)","timestamp":\#(time)}"#)
        }
        // Every partition's watermark past the window.
        for partition in 0..<3 {
            for topic in ["impressions", "clicks"] {
                try produce(broker, topic: topic, partition: partition, key: "end", value: #"{"product_id":"end","timestamp":\#(start + 60_000)}"#)
            }
        }
        var rows = ""
        let query = "SELECT hex(product_id), sum(impressions_delta) FROM ctr_results_raw WHERE product_id != 'end' GROUP BY product_id ORDER BY hex(product_id) FORMAT TSV"
        let landed = eventually(timeout: 60) {
            rows = (try? ChildProcess.run(
                "/usr/bin/curl", ["-fsS", "--data-binary", query, "\(endpoint.url)/?database=\(endpoint.database)"]
            ).stdout) ?? ""
            return rows.split(separator: "\n").count >= 1
        }
        #expect(landed, "no rows: \(aggregator.stderr.suffix(3000))")
        #expect(rows == "63616665CC81\t1\n636166C3A9\t2\n", "\(rows)")
    }

    /// The dead-letter topic refuses every write (TOPIC_AUTHORIZATION_FAILED on every produce
    /// request) while the aggregator refuses messages; then the aggregator is killed. Counting
    /// goes on meanwhile, and no dead letter is lost: offsets were not committed past an
    /// unacknowledged one, so the restarted aggregator dead-letters them again.
    @Test func deadLettersSurviveAnUnwritableTopicAndACrash() throws {
        let directory = try PackagePaths.temporaryDirectory("ctr-e2e-dlq")
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "dlq")
        try ClickHouseTestServer.migrate(endpoint)
        let broker = try DevBrokerProcess(directory: directory)
        let truthFile = directory.appendingPathComponent("truth.json")
        let producer = try ChildProcess.run(
            PackagePaths.executable("ctr-producer"),
            ["--brokers", broker.bootstrapServers, "--products", "50", "--count", "20000", "--rate", "0", "--event-rate", "1000",
             "--start-time-ms", "1700000000000", "--seed", "3", "--invalid-fraction", "0.01", "--truth-file", truthFile.path]
        )
        #expect(producer.status == 0, "\(producer.stderr)")
        let truth = try JSONSerialization.jsonObject(with: Data(contentsOf: truthFile)) as! [String: Any]
        let invalid = (truth["invalid_sent"] as! NSNumber).intValue
        #expect(invalid > 50)

        try broker.control("request-errors 0 1000000 29")
        func startAggregator(_ name: String) throws -> ChildProcess {
            try ChildProcess(
                PackagePaths.executable("ctr-aggregator"),
                ["--brokers", broker.bootstrapServers, "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--metrics-port", "0",
                 "--group-id", "dlq", "--commit-interval-ms", "200"],
                logDirectory: directory, name: name
            )
        }
        let first = try startAggregator("aggregator-1")
        let check = try ChildProcess.run(
            "/usr/bin/env",
            ["python3", PackagePaths.root.appendingPathComponent("scripts/check-truth.py").path, truthFile.path, endpoint.url, endpoint.database,
             "--wait", "90"]
        )
        #expect(check.status == 0, "counting goes on while the dead-letter topic refuses writes: \(check.stdout)\(first.stderr.suffix(3000))")
        let before = try ChildProcess.run(
            "/usr/bin/kcat", ["-C", "-b", broker.bootstrapServers, "-t", "ctr-dlq", "-o", "beginning", "-e", "-q", "-f", "%o\n"]
        )
        #expect(before.status == 0 && before.stdout.isEmpty, "the dead-letter topic took no write: \(before.stdout.prefix(200))")
        first.stop(signal: SIGKILL)
        try broker.control("clear-errors 0")

        let second = try startAggregator("aggregator-2")
        defer { second.stop() }
        var sources: Set<String> = []
        let complete = eventually(timeout: 90) {
            let dlq = (try? ChildProcess.run(
                "/usr/bin/kcat",
                ["-C", "-b", broker.bootstrapServers, "-t", "ctr-dlq", "-o", "beginning", "-e", "-q", "-f", "%h\n"]
            ).stdout) ?? ""
            sources = Set(dlq.split(separator: "\n").map { line in
                line.split(separator: ",").filter { $0.hasPrefix("ctr-source-") }.joined(separator: ",")
            })
            return sources.count >= invalid
        }
        #expect(complete && sources.count == invalid, "\(sources.count) of \(invalid) dead letters: \(second.stderr.suffix(3000))")
        let recheck = try ChildProcess.run(
            "/usr/bin/env",
            ["python3", PackagePaths.root.appendingPathComponent("scripts/check-truth.py").path, truthFile.path, endpoint.url, endpoint.database,
             "--wait", "30"]
        )
        #expect(recheck.status == 0 && recheck.stdout.contains("lost=0 duplicated=0 mismatched=0"), "\(recheck.stdout)")
    }
}
