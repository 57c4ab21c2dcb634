import ClickHouseHTTP
import Foundation
import TestSupport
import Testing

/// Through the binaries: `--dimensions` and `--dedup-field`, with exact unique users, checked
/// against a reference computed here; and the users and ids of open windows surviving a
/// `kill -9` and restart.
@Suite(.serialized) struct DimensionsEndToEndTests {
    static let dimensionFlags = [
        "--dimensions", "campaign_id,country,device_type", "--dedup-field", "event_id", "--close-idle-after", "2s", "--idle-timeout-ms", "500",
    ]

    struct Event {
        var topic: String
        var product: String
        var campaign: String?
        var campaignIsInteger = false
        var country: String?
        var device: String?
        var user: String?
        var id: String
        var time: Int64

        var json: String {
            var fields = [#""product_id":"\#(product)""#, #""timestamp":\#(time)"#, #""event_id":"\#(id)""#]
            if let campaign { fields.append(campaignIsInteger ? #""campaign_id":\#(campaign)"# : #""campaign_id":"\#(campaign)""#) }
            if let country { fields.append(#""country":"\#(country)""#) }
            if let device { fields.append(#""device_type":"\#(device)""#) }
            if let user { fields.append(#""user_id":"\#(user)""#) }
            return "{" + fields.joined(separator: ",") + "}"
        }

        var key: String { [product, campaign ?? "", country ?? "", device ?? "", String(time / 10_000 * 10)].joined(separator: "|") }
    }

    /// Per key (product|campaign|country|device|window start s): impressions, clicks, distinct
    /// impression users, distinct click users; duplicates (same id and topic) not counted.
    static func reference(_ events: [Event]) -> [String: [Int]] {
        var seen: Set<String> = []
        var counts: [String: (Int, Int, Set<String>, Set<String>)] = [:]
        for event in events where seen.insert(event.topic + "/" + event.id + "/\(event.time / 10_000)").inserted {
            var entry = counts[event.key] ?? (0, 0, [], [])
            if event.topic == "impressions" {
                entry.0 += 1
                if let user = event.user { entry.2.insert(user) }
            } else {
                entry.1 += 1
                if let user = event.user { entry.3.insert(user) }
            }
            counts[event.key] = entry
        }
        return counts.mapValues { [$0.0, $0.1, $0.2.count, $0.3.count] }
    }

    struct Running {
        let endpoint: ClickHouseEndpoint
        let broker: DevBrokerProcess
        let directory: URL
        var aggregator: ChildProcess
        let metricsPort: Int

        func produce(_ events: [Event]) throws {
            for topic in ["impressions", "clicks"] {
                let lines = events.filter { $0.topic == topic }.map { "\($0.product)\t\($0.json)" }
                guard !lines.isEmpty else { continue }
                let result = try ChildProcess.run(
                    "/usr/bin/kcat", ["-P", "-b", broker.bootstrapServers, "-t", topic, "-K", "\t"], input: Data((lines.joined(separator: "\n") + "\n").utf8)
                )
                #expect(result.status == 0, "\(result.stderr)")
            }
        }

        func produceRaw(_ topic: String, _ values: [String]) throws {
            let input = values.map { "k\t\($0)" }.joined(separator: "\n") + "\n"
            let result = try ChildProcess.run("/usr/bin/kcat", ["-P", "-b", broker.bootstrapServers, "-t", topic, "-K", "\t"], input: Data(input.utf8))
            #expect(result.status == 0, "\(result.stderr)")
        }

        func rows(_ sql: String) throws -> [[String]] {
            try ClickHouseConnection(endpoint: endpoint).execute(sql).lines.map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        }

        /// The latest revision of every (series, window), as the reference's keys and values.
        func latest() throws -> [String: [Int]] {
            let lines = try rows(
                """
                SELECT product_id, campaign_id, country, device_type, toUnixTimestamp(window_start), argMax(impressions, revision), \
                argMax(clicks, revision), argMax(unique_impression_users, revision), argMax(unique_click_users, revision) \
                FROM ctr_results_raw GROUP BY product_id, campaign_id, country, device_type, window_start
                """
            )
            return Dictionary(uniqueKeysWithValues: lines.map { ($0[0..<5].joined(separator: "|"), $0[5...].compactMap { Int($0) }) })
        }

        func metric(_ name: String) throws -> Int? {
            let text = try ChildProcess.run("/usr/bin/curl", ["-fsS", "http://127.0.0.1:\(metricsPort)/metrics"]).stdout
            return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Int(Double($0.split(separator: " ").last ?? "") ?? -1) }
        }

        static func startAggregator(_ endpoint: ClickHouseEndpoint, _ broker: DevBrokerProcess, _ directory: URL, _ port: Int, name: String, group: String, extra: [String] = []) throws -> ChildProcess {
            try ChildProcess(
                PackagePaths.executable("ctr-aggregator"),
                ["--brokers", broker.bootstrapServers, "--clickhouse-url", endpoint.url, "--database", endpoint.database,
                 "--metrics-port", "\(port)", "--group-id", group, "--batch-max-delay-ms", "50", "--commit-interval-ms", "200"]
                    + DimensionsEndToEndTests.dimensionFlags + extra,
                logDirectory: directory, name: name
            )
        }
    }

    func start(_ name: String, extra: [String] = []) throws -> Running {
        let directory = try PackagePaths.temporaryDirectory("ctr-\(name)")
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: name)
        try ClickHouseTestServer.migrate(endpoint)
        let broker = try DevBrokerProcess(directory: directory)
        let port = PackagePaths.freePort()
        let aggregator = try Running.startAggregator(endpoint, broker, directory, port, name: "aggregator", group: name, extra: extra)
        return Running(endpoint: endpoint, broker: broker, directory: directory, aggregator: aggregator, metricsPort: port)
    }

    /// Epoch milliseconds at the start of the 10-second window that began at least 30 s ago.
    var recentWindow: Int64 {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        return (now - 30_000) / 10_000 * 10_000
    }

    @Test func dimensionsUniqueUsersAndDuplicatesAreExact() throws {
        // The events of a topic are produced in random event-time order, and one topic after the
        // other: a long allowed lateness counts every one of them, however the partitions interleave.
        let running = try start("dims", extra: ["--allowed-lateness-ms", "300000"])
        defer { _ = running.aggregator.stop(signal: SIGKILL) }
        let base = recentWindow
        var state: UInt64 = 0x5EED
        func next(_ bound: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(bound))
        }
        var events: [Event] = []
        for index in 0..<600 {
            let campaign = next(4)
            var event = Event(
                topic: next(6) == 0 ? "clicks" : "impressions", product: "p\(next(4))",
                campaign: campaign == 3 ? nil : "\(campaign + 10)", campaignIsInteger: campaign == 2,
                country: [nil, "US", "DE", "FR", "US"][next(5)], device: ["mobile", "desktop", "mobile"][next(3)],
                user: next(8) == 0 ? nil : "u\(next(40))", id: "e\(index)", time: base + Int64(next(20_000))
            )
            if event.campaignIsInteger { event.campaign = String(Int(event.campaign!)!) }
            events.append(event)
            if next(10) == 0 { events.append(event) }  // a producer's retry: same id, same event
        }
        try running.produce(events)
        try running.produceRaw("impressions", [
            #"{"product_id":"p0","timestamp":\#(base + 5),"country":{"code":"US"}}"#,
            #"{"product_id":"p0","timestamp":\#(base + 5),"device_type":1.5}"#,
            #"{"product_id":"p0","timestamp":\#(base + 5),"campaign_id":"\#(String(repeating: "c", count: 300))"}"#,
        ])
        let expected = Self.reference(events)
        let landed = try eventually(timeout: 90) { try running.latest() == expected }
        let latest = try running.latest()
        #expect(landed, "differences: \(expected.filter { latest[$0.key] != $0.value }.prefix(5)) extra: \(latest.keys.filter { expected[$0] == nil }.prefix(5))\n\(running.aggregator.stderr.suffix(2000))")

        // Roll-ups: per country over the hour, with distinct users over the whole period.
        var byCountry: [String: (Int, Set<String>)] = [:]
        var seen: Set<String> = []
        for event in events where event.topic == "impressions" && seen.insert(event.id + "/\(event.time / 10_000)").inserted {
            let key = (event.country ?? "") + "|\(event.time / 3_600_000 * 3_600)"
            var entry = byCountry[key] ?? (0, [])
            entry.0 += 1
            if let user = event.user { entry.1.insert(user) }
            byCountry[key] = entry
        }
        // ClickHouse feeds each view's table after the results table, so the roll-up may trail the
        // latest view by the insert in flight: wait for it too.
        func rolled() throws -> [String: [Int]] {
            let rollup = try running.rows(
                "SELECT country, toUnixTimestamp(period_start), sumMerge(impressions), uniqCombinedArrayMerge(impression_users) FROM ctr_rollup_1h_v2 GROUP BY country, period_start"
            )
            return Dictionary(uniqueKeysWithValues: rollup.map { ("\($0[0])|\($0[1])", [Int($0[2]) ?? -1, Int($0[3]) ?? -1]) })
        }
        let expectedRollup = byCountry.mapValues { [$0.0, $0.1.count] }
        _ = try eventually(timeout: 30) { try rolled() == expectedRollup }
        #expect(try rolled() == expectedRollup)

        let letters = try ChildProcess.run(
            "/usr/bin/kcat", ["-C", "-b", running.broker.bootstrapServers, "-t", "ctr-dlq", "-o", "beginning", "-e", "-q", "-f", "%h\n"]
        )
        #expect(letters.stdout.components(separatedBy: "ctr-reason=invalid_dimension").count - 1 == 3, "\(letters.stdout)")
        let duplicates = events.count - Set(events.map { $0.topic + $0.id }).count
        let counted = (try running.metric(#"ctr_events_duplicate_total{kind="impression"}"#) ?? 0)
            + (try running.metric(#"ctr_events_duplicate_total{kind="click"}"#) ?? 0)
        #expect(counted == duplicates)
    }

    @Test func usersAndIDsOfOpenWindowsSurviveARestart() throws {
        // A long allowed lateness keeps the window open across the restart.
        var running = try start("dimsrestart", extra: ["--allowed-lateness-ms", "120000"])
        defer { _ = running.aggregator.stop(signal: SIGKILL) }
        let window = recentWindow
        func impression(_ id: Int, user: String) -> Event {
            Event(topic: "impressions", product: "p", campaign: "c", country: "DE", device: "mobile", user: user, id: "e\(id)", time: window + 1_000 + Int64(id))
        }
        let first = (0..<6).map { impression($0, user: "u\($0 % 3)") }
        try running.produce(first)
        let key = "p|c|DE|mobile|\(window / 1000)"
        #expect(try eventually(timeout: 60) { try running.latest()[key] == [6, 0, 3, 0] }, "\(running.aggregator.stderr.suffix(2000))")
        // Until the aggregator has committed once after the emission, a restart replays from further back: either way it must be exact.
        _ = try eventually(timeout: 10) { (try running.metric("ctr_offset_commits_total") ?? 0) >= 2 }
        _ = running.aggregator.stop(signal: SIGKILL)
        running.aggregator = try Running.startAggregator(
            running.endpoint, running.broker, running.directory, running.metricsPort, name: "aggregator-2", group: "dimsrestart",
            extra: ["--allowed-lateness-ms", "120000"]
        )
        // Producer retries of counted events, an old user and a new one.
        try running.produce([impression(0, user: "u0"), impression(4, user: "u1"), impression(6, user: "u0"), impression(7, user: "u9")])
        let exact = try eventually(timeout: 60) { try running.latest()[key] == [8, 0, 4, 0] }
        let latest = try running.latest()[key]
        #expect(exact, "latest: \(String(describing: latest))\n\(running.aggregator.stderr.suffix(3000))")
        let revisions = try running.rows("SELECT revision, impressions_delta, length(impression_user_hashes) FROM ctr_results_raw ORDER BY revision")
        #expect(revisions == [["0", "6", "3"], ["1", "2", "1"]])
    }
}
