import ClickHouseHTTP
import Foundation
import Synchronization
import TestSupport
import Testing

/// Migration 0008 (ctr_latest_view carries conversions and revenue) on ClickHouse 18.16, with
/// rows present and inserts running through the migration, as `schema-tool migrate` runs it.
@Suite(.serialized) struct LatestViewMigrationTests {
    /// Per product, the row with the highest (window_start, revision), straight from the raw table.
    static let expected = """
        SELECT product_id, toUnixTimestamp(argMax(window_start, v)), argMax(revision, v), argMax(impressions, v), argMax(clicks, v),
            argMax(conversions, v), toString(argMax(revenue, v))
        FROM (SELECT *, toUInt64(toUnixTimestamp(window_start)) * 1000000 + revision AS v FROM ctr_results_raw)
        GROUP BY product_id ORDER BY product_id
        """
    static let latest = """
        SELECT product_id, toUnixTimestamp(window_start), revision, impressions, clicks, conversions, toString(revenue)
        FROM ctr_latest_view FINAL ORDER BY product_id
        """

    @Test func latestViewGainsConversionsAndRevenueWhileInsertsRun() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "latest")
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database,
                      "--migrations-dir", PackagePaths.migrationsDirectory]
        let before = try ChildProcess.schemaTool(["migrate", "--to", "7"] + common)
        #expect(before.status == 0, "\(before.stderr)")
        let connection = try ClickHouseConnection(endpoint: endpoint)

        let writer = try LatestRowWriter(endpoint)
        for _ in 0..<10 { try writer.insert() }
        writer.start()
        try #require(writer.waitForBatches(20), "the writer inserts before the migration starts")
        let migrated = try ChildProcess.schemaTool(
            ["migrate", "--var", "ML_CUTOVER_DELAY_SECONDS=2", "--var", "ML_CUTOVER_GRACE_SECONDS=1"] + common
        )
        let during = writer.batches
        try #require(writer.waitForBatches(during + 20), "inserts go on after the migration")
        writer.stop()
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(migrated.stdout.contains("applying 0008_latest_view_conversions_revenue"))
        #expect(migrated.stdout.contains("waiting"), "the cut-over waits happened with data present: \(migrated.stdout)")

        let latest = try connection.rows(Self.latest)
        #expect(latest.count == LatestRowWriter.products)
        #expect(latest == (try connection.rows(Self.expected)), "the latest row per product, with its conversions and revenue")
        #expect(latest.allSatisfy { $0.count == 7 && $0[5] != "0" && $0[6] != "0.000000" }, "conversions and revenue are carried: \(latest.prefix(2))")
        #expect(try connection.scalar("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'ctr_latest_feed_v2'") == "0")

        let verified = try ChildProcess.schemaTool(["verify"] + common)
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
    }

    /// Migration 0010 (dimensions and unique users) with rows present and inserts running: the
    /// new roll-ups hold every row once, backfilled before the cut-over and fed after it.
    @Test func dimensionRollupsAreFilledInPlaceWhileInsertsRun() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "dims_migration")
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database,
                      "--migrations-dir", PackagePaths.migrationsDirectory]
        #expect(try ChildProcess.schemaTool(["migrate", "--to", "9"] + common).status == 0)
        let connection = try ClickHouseConnection(endpoint: endpoint)
        let writer = try LatestRowWriter(endpoint)
        for _ in 0..<10 { try writer.insert() }
        writer.start()
        try #require(writer.waitForBatches(20), "the writer inserts before the migration starts")
        let migrated = try ChildProcess.schemaTool(
            ["migrate", "--var", "ML_CUTOVER_DELAY_SECONDS=2", "--var", "ML_CUTOVER_GRACE_SECONDS=1",
             "--var", "ROLLUP_CUTOVER_DELAY_SECONDS=2", "--var", "ROLLUP_CUTOVER_GRACE_SECONDS=1"] + common
        )
        let during = writer.batches
        try #require(writer.waitForBatches(during + 20), "inserts go on after the migration")
        writer.stop()
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(migrated.stdout.contains("applying 0010_dimensions_unique_users"))
        let raw = """
            SELECT product_id, country, toUnixTimestamp(toStartOfHour(window_start)) AS p, sum(impressions_delta), sum(clicks_delta)
            FROM ctr_results_raw GROUP BY product_id, country, p ORDER BY product_id, country, p
            """
        for table in ["ctr_rollup_5m_v2", "ctr_rollup_1h_v2", "ctr_rollup_1d_v2"] {
            let rollup = try connection.rows(
                """
                SELECT product_id, country, toUnixTimestamp(toStartOfHour(period_start)) AS p, sumMerge(impressions), sumMerge(clicks)
                FROM \(table) GROUP BY product_id, country, p ORDER BY product_id, country, p
                """
            )
            if table == "ctr_rollup_1d_v2" {
                let daily = try connection.rows(
                    "SELECT product_id, sum(impressions_delta), sum(clicks_delta) FROM ctr_results_raw GROUP BY product_id ORDER BY product_id"
                )
                let rolled = try connection.rows(
                    "SELECT product_id, sumMerge(impressions), sumMerge(clicks) FROM \(table) GROUP BY product_id ORDER BY product_id"
                )
                #expect(rolled == daily, "\(table) holds every row once")
            } else {
                #expect(rollup == (try connection.rows(raw)), "\(table) holds every row once")
            }
        }
        let latest = try connection.rows(Self.latest)
        #expect(latest == (try connection.rows(Self.expected)))
        let verified = try ChildProcess.schemaTool(["verify"] + common)
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
    }

    @Test func onAnEmptyDatabaseNothingWaits() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "latest_empty")
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database,
                      "--migrations-dir", PackagePaths.migrationsDirectory]
        let migrated = try ChildProcess.schemaTool(["migrate"] + common)
        #expect(migrated.status == 0, "\(migrated.stderr)")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        let writer = try LatestRowWriter(endpoint)
        for _ in 0..<3 { try writer.insert() }
        #expect(try connection.rows(Self.latest) == (try connection.rows(Self.expected)))
    }
}

/// Inserts rows into `ctr_results_raw` for a few products: every batch is a newer window (so the
/// latest row per product is unique), with conversions and revenue, on demand or continuously
/// from its own thread between ``start()`` and ``stop()``.
///
/// `@unchecked Sendable`: the connection is used by one thread at a time (the test's before
/// ``start()``, the writer's between ``start()`` and ``stop()``); the counters are in a `Mutex`.
final class LatestRowWriter: @unchecked Sendable {
    static let products = 12
    private let connection: ClickHouseConnection
    private struct State {
        var batches = 0
        var running = false
        var finished = true
    }
    private let state = Mutex(State())
    private let changed = NSCondition()

    init(_ endpoint: ClickHouseEndpoint) throws {
        connection = try ClickHouseConnection(endpoint: endpoint)
    }

    var batches: Int { state.withLock { $0.batches } }

    func insert() throws {
        let batch = state.withLock { state -> Int in
            state.batches += 1
            return state.batches
        }
        let rows = (0..<Self.products).map { product in
            let start = 1_700_000_000 + batch * 10
            return "('p\(product)', toDateTime(\(start), 'UTC'), toDateTime(\(start + 10), 'UTC'), \(batch + product), \(product % 3), "
                + "\(batch % 5 + 1), \(batch).\(product)5, \(batch % 2), now(), 'latest-\(batch)')"
        }.joined(separator: ",")
        try connection.run(
            "INSERT INTO ctr_results_raw (product_id, window_start, window_end, impressions, clicks, conversions, revenue, revision, emitted_at, batch_id) VALUES \(rows)"
        )
        changed.lock()
        changed.broadcast()
        changed.unlock()
    }

    /// Waits until `count` batches are in (or 60 s pass); returns whether they are.
    func waitForBatches(_ count: Int) -> Bool {
        let deadline = Date().addingTimeInterval(60)
        changed.lock()
        defer { changed.unlock() }
        while batches < count {
            guard changed.wait(until: deadline) else { return batches >= count }
        }
        return true
    }

    func start() {
        state.withLock {
            $0.running = true
            $0.finished = false
        }
        Thread { [self] in
            while state.withLock({ $0.running }) {
                _ = try? insert()
            }
            state.withLock { $0.finished = true }
            changed.lock()
            changed.broadcast()
            changed.unlock()
        }.start()
    }

    func stop() {
        state.withLock { $0.running = false }
        changed.lock()
        while !state.withLock({ $0.finished }) { changed.wait() }
        changed.unlock()
    }
}
