import ClickHouseHTTP
import Foundation
import TestSupport
import Testing

/// Runs the binaries as a user would: dev broker, private ClickHouse, `schema-tool migrate`,
/// `ctr-aggregator` and `ctr-producer --truth-file`, then compares ClickHouse with the truth.
@Suite(.serialized) struct PipelineEndToEndTests {
    @Test func countsEveryWindowExactlyAndDeadLettersWhatItRefuses() throws {
        let directory = try PackagePaths.temporaryDirectory("ctr-e2e")
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "e2e")
        let migrate = try ChildProcess.run(
            PackagePaths.builtExecutable("schema-tool"),
            ["migrate", "--clickhouse-url", endpoint.url, "--database", endpoint.database,
             "--migrations-dir", PackagePaths.root.appendingPathComponent("migrations").path]
        )
        #expect(migrate.status == 0, "\(migrate.stderr)")

        let broker = try DevBrokerProcess(directory: directory)
        let metricsPort = PackagePaths.freePort()
        let aggregator = try ChildProcess(
            PackagePaths.builtExecutable("ctr-aggregator"),
            ["--brokers", broker.bootstrapServers, "--clickhouse-url", endpoint.url, "--database", endpoint.database,
             "--metrics-port", "\(metricsPort)", "--group-id", "e2e"],
            logDirectory: directory, name: "aggregator"
        )
        defer { aggregator.stop(signal: SIGKILL) }

        let truthFile = directory.appendingPathComponent("truth.json")
        let producer = try ChildProcess.run(
            PackagePaths.builtExecutable("ctr-producer"),
            ["--brokers", broker.bootstrapServers, "--products", "300", "--count", "90000", "--rate", "15000", "--event-rate", "1000",
             "--start-time-ms", "1700000000000", "--seed", "7", "--late-fraction", "0.02", "--too-late-fraction", "0.002",
             "--too-late-lag-ms", "40000", "--invalid-fraction", "0.002", "--truth-file", truthFile.path]
        )
        #expect(producer.status == 0, "\(producer.stderr)")
        let truth = try JSONSerialization.jsonObject(with: Data(contentsOf: truthFile)) as! [String: Any]
        #expect((truth["too_late_sent"] as? Int ?? 0) > 0, "the stream exercises too-late events")
        #expect((truth["invalid_sent"] as? Int ?? 0) > 0, "the stream exercises invalid messages")

        let check = try ChildProcess.run(
            "/usr/bin/env",
            ["python3", PackagePaths.root.appendingPathComponent("scripts/check-truth.py").path, truthFile.path, endpoint.url, endpoint.database,
             "--wait", "90"]
        )
        print("end-to-end: \(check.stdout)")
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)\naggregator log:\n\(aggregator.stderr.suffix(3000))")
        #expect(check.stdout.contains("lost=0 duplicated=0 mismatched=0"))

        // Metrics are served and count what happened.
        let metrics = try ChildProcess.run("/usr/bin/curl", ["-fsS", "http://127.0.0.1:\(metricsPort)/metrics"]).stdout
        #expect(metrics.contains("ctr_events_consumed_total{kind=\"impression\"}"))
        #expect(!metrics.contains("ctr_sink_rows_total 0\n"))
        #expect(try ChildProcess.run("/usr/bin/curl", ["-fsS", "http://127.0.0.1:\(metricsPort)/ready"]).status == 0)

        // Every refused message is in the dead-letter topic with its reason (read with kcat).
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/kcat"), "this test reads the dead-letter topic with kcat: scripts/install-deps.sh --test")
        var byReason: [String: Int] = [:]
        let expectedLetters = (truth["invalid_sent"] as! Int) + (truth["too_late_sent"] as! Int)
        _ = eventually(timeout: 30) {
            let dlq = (try? ChildProcess.run(
                "/usr/bin/kcat", ["-C", "-b", broker.bootstrapServers, "-t", "ctr-dlq", "-o", "beginning", "-e", "-q", "-f", "%h\n"]
            ).stdout) ?? ""
            byReason = [:]
            for line in dlq.split(separator: "\n") {
                guard let reason = line.split(separator: ",").first(where: { $0.hasPrefix("ctr-reason=") }) else { continue }
                byReason[String(reason.dropFirst("ctr-reason=".count)), default: 0] += 1
            }
            return byReason.values.reduce(0, +) >= expectedLetters
        }
        var expected = truth["invalid_by_kind"] as! [String: Int]
        expected["too_late"] = truth["too_late_sent"] as? Int
        #expect(byReason == expected)
        print("end-to-end dead letters by reason: \(byReason.sorted(by: { $0.key < $1.key }))")

        #expect(aggregator.stop(signal: SIGTERM) == 0, "SIGTERM stops the aggregator cleanly")
        #expect(aggregator.stderr.contains("stopped"))
    }

    /// Runs producer and aggregator with extra flags against a fresh database and compares
    /// ClickHouse with the truth file (counts, conversions, revenue, views).
    func runExactly(topics: String, producer extraProducer: [String], aggregator extraAggregator: [String], name: String) throws -> String {
        let directory = try PackagePaths.temporaryDirectory("ctr-e2e-\(name)")
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: name)
        try ClickHouseTestServer.migrate(endpoint)
        let broker = try DevBrokerProcess(topics: topics, directory: directory)
        let aggregator = try ChildProcess(
            PackagePaths.builtExecutable("ctr-aggregator"),
            ["--brokers", broker.bootstrapServers, "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--metrics-port", "0",
             "--group-id", name] + extraAggregator,
            logDirectory: directory, name: "aggregator"
        )
        defer { aggregator.stop() }
        let truthFile = directory.appendingPathComponent("truth.json")
        let producer = try ChildProcess.run(
            PackagePaths.builtExecutable("ctr-producer"),
            ["--brokers", broker.bootstrapServers, "--products", "200", "--count", "40000", "--rate", "15000", "--event-rate", "1000",
             "--start-time-ms", "1700000000000", "--seed", "5", "--late-fraction", "0.02", "--truth-file", truthFile.path] + extraProducer
        )
        #expect(producer.status == 0, "\(producer.stderr)")
        let check = try ChildProcess.run(
            "/usr/bin/env",
            ["python3", PackagePaths.root.appendingPathComponent("scripts/check-truth.py").path, truthFile.path, endpoint.url, endpoint.database,
             "--wait", "90"]
        )
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)\naggregator log:\n\(aggregator.stderr.suffix(3000))")
        print("end-to-end \(name): \(check.stdout)")
        return producer.stdout
    }

    @Test func revenueAndConversionsAreExact() throws {
        let summary = try runExactly(
            topics: "impressions,clicks,conversions,ctr-dlq",
            producer: ["--conversion-rate", "0.3", "--revenue-per-click", "0.45", "--revenue-per-conversion", "37.5"],
            aggregator: ["--conversions-topic", "conversions"],
            name: "revenue"
        )
        #expect(!summary.contains("counted_conversions=0 "), "the stream has conversions: \(summary)")
        #expect(!summary.contains("counted_revenue_micros=0 "), "the stream has revenue: \(summary)")
    }

    @Test func singleTopicModeIsExact() throws {
        let summary = try runExactly(
            topics: "ad_events_raw,ctr-dlq",
            producer: ["--events-topic", "ad_events_raw", "--revenue-per-click", "0.3"],
            aggregator: ["--events-topic", "ad_events_raw"],
            name: "single"
        )
        #expect(!summary.contains("counted_clicks=0 "), "clicks are flags on impressions: \(summary)")
    }

    /// The Avazu replay path on real rows (`Tests/Fixtures/avazu_sample.csv`, the first 100 rows
    /// of the Kaggle Avazu train file): per-product impressions and clicks in ClickHouse equal
    /// counts computed directly from the CSV.
    @Test func avazuSampleReplaysExactly() throws {
        let sample = PackagePaths.fixture("avazu_sample.csv")
        let directory = try PackagePaths.temporaryDirectory("ctr-e2e-avazu")
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "avazu")
        try ClickHouseTestServer.migrate(endpoint)
        let broker = try DevBrokerProcess(directory: directory)
        let aggregator = try ChildProcess(
            PackagePaths.builtExecutable("ctr-aggregator"),
            ["--brokers", broker.bootstrapServers, "--clickhouse-url", endpoint.url, "--database", endpoint.database,
             "--metrics-port", "0", "--group-id", "avazu"],
            logDirectory: directory, name: "aggregator"
        )
        defer { aggregator.stop() }
        let producer = try ChildProcess.run(
            PackagePaths.builtExecutable("ctr-producer"),
            ["avazu", "--file", sample.path, "--brokers", broker.bootstrapServers, "--truth-file", directory.appendingPathComponent("truth.json").path]
        )
        #expect(producer.status == 0, "\(producer.stderr)")
        #expect(producer.stderr.contains("read 100 rows, 0 bad rows"))

        // Independent expectation straight from the CSV.
        let lines = try String(contentsOf: sample, encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        let header = lines[0].map(String.init)
        let site = header.firstIndex(of: "site_id")!
        let click = header.firstIndex(of: "click")!
        var expected: [String: (impressions: Int, clicks: Int)] = [:]
        for row in lines.dropFirst() where row.count == header.count {
            var value = expected[String(row[site])] ?? (0, 0)
            value.impressions += 1
            value.clicks += row[click] == "1" ? 1 : 0
            expected[String(row[site])] = value
        }
        #expect(expected.values.reduce(0) { $0 + $1.clicks } == 20)

        let connection = try ClickHouseConnection(endpoint: endpoint)
        var actual: [String: (impressions: Int, clicks: Int)] = [:]
        let settled = eventually(timeout: 60) {
            let rows = (try? connection.rows(
                "SELECT product_id, sum(impressions_delta), sum(clicks_delta) FROM ctr_results_raw WHERE product_id != 'avazu-end-of-stream' GROUP BY product_id"
            )) ?? []
            actual = Dictionary(uniqueKeysWithValues: rows.filter { $0.count == 3 }.map { (String($0[0]), (Int($0[1]) ?? -1, Int($0[2]) ?? -1)) })
            return actual.count == expected.count && actual.values.reduce(0) { $0 + $1.impressions } == 100
        }
        #expect(settled, "aggregator log:\n\(aggregator.stderr.suffix(2000))")
        for (product, counts) in expected {
            #expect(actual[product]?.impressions == counts.impressions && actual[product]?.clicks == counts.clicks, "\(product)")
        }
    }

    @Test func avazuBadRowsAreReportedWithTheirLineNumber() throws {
        let directory = try PackagePaths.temporaryDirectory("ctr-avazu-bad")
        let file = directory.appendingPathComponent("bad.csv")
        try "id,click,hour,site_id\n1,0,14102100,a\n2,7,14102100,b\n3,1,141021,c\n4,1,14102101\n".write(to: file, atomically: true, encoding: .utf8)
        let broker = try DevBrokerProcess(directory: directory)
        let result = try ChildProcess.run(
            PackagePaths.builtExecutable("ctr-producer"), ["avazu", "--file", file.path, "--brokers", broker.bootstrapServers, "--no-final-watermark"]
        )
        #expect(result.status == 0)
        #expect(result.stderr.contains("bad.csv:line 3: click must be 0 or 1"))
        #expect(result.stderr.contains("bad.csv:line 4: hour must be YYMMDDHH"))
        #expect(result.stderr.contains("bad.csv:line 5: expected 4 fields, found 3"))
        #expect(result.stderr.contains("read 1 rows, 3 bad rows"))
    }

    /// Settings resolve flag > CTR_* environment > YAML file > default.
    @Test func configurationFileAndEnvironmentAreRead() throws {
        let directory = try PackagePaths.temporaryDirectory("ctr-config")
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "config")
        let broker = try DevBrokerProcess(directory: directory)
        let file = directory.appendingPathComponent("aggregator.yaml")
        try """
            brokers: \(broker.bootstrapServers)
            clickhouse-url: \(endpoint.url)
            database: from_yaml_db
            metrics-port: 0
            kafka-properties: [client.id=from-yaml]
            """.write(to: file, atomically: true, encoding: .utf8)
        let fromFile = try ChildProcess.run(PackagePaths.builtExecutable("ctr-aggregator"), ["--config", file.path])
        #expect(fromFile.status != 0)
        #expect(fromFile.stderr.contains("from_yaml_db"), "the database comes from the file: \(fromFile.stderr)")
        let fromEnvironment = try ChildProcess.run(
            PackagePaths.builtExecutable("ctr-aggregator"), ["--config", file.path], environment: ["CTR_DATABASE": "from_env_db"]
        )
        #expect(fromEnvironment.stderr.contains("from_env_db"), "the environment overrides the file")
        let fromFlag = try ChildProcess.run(
            PackagePaths.builtExecutable("ctr-aggregator"), ["--config", file.path, "--database", "from_flag_db"], environment: ["CTR_DATABASE": "from_env_db"]
        )
        #expect(fromFlag.stderr.contains("from_flag_db"), "the flag overrides the environment")

        try "brokers: x\nno-such-setting: 1\n".write(to: file, atomically: true, encoding: .utf8)
        let unknown = try ChildProcess.run(PackagePaths.builtExecutable("ctr-aggregator"), ["--config", file.path])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("no-such-setting"))
    }

    @Test func aggregatorRefusesToStartWithoutTheSchema() throws {
        let directory = try PackagePaths.temporaryDirectory("ctr-e2e-noschema")
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "noschema")
        let broker = try DevBrokerProcess(directory: directory)
        let result = try ChildProcess.run(
            PackagePaths.builtExecutable("ctr-aggregator"),
            ["--brokers", broker.bootstrapServers, "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--metrics-port", "0"]
        )
        #expect(result.status != 0)
        #expect(result.stderr.contains("schema-tool migrate"))
    }
}
