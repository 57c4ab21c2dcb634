import ClickHouseHTTP
import Foundation
import TestSupport
import Testing

@testable import SchemaTool

/// `schema-tool` against a real ClickHouse server.
@Suite(.serialized) struct MigratorIntegrationTests {
    @Test func migrateCreatesEverythingOnceAndVerifies() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "schema")
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", PackagePaths.migrationsDirectory]
        let first = try ChildProcess.schemaTool(["migrate"] + common)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("applied \(PackagePaths.shippedMigrationCount) migration(s)"))
        let second = try ChildProcess.schemaTool(["migrate"] + common)
        #expect(second.status == 0)
        #expect(second.stdout.contains("up to date"))
        let connection = try ClickHouseConnection(endpoint: endpoint)
        let tables = try connection.rows("SELECT name, engine FROM system.tables WHERE database = currentDatabase() AND name LIKE 'ctr_%' ORDER BY name")
        #expect(
            tables.map { "\($0[0])=\($0[1])" } == [
                "ctr_batches=MergeTree", "ctr_fences=MergeTree", "ctr_funnel_daily=View", "ctr_latest_cutover=TinyLog",
                "ctr_latest_cutover_v3=TinyLog", "ctr_latest_v2=ReplacingMergeTree", "ctr_latest_v3=ReplacingMergeTree",
                "ctr_latest_view=MaterializedView", "ctr_ml_agg_v3=AggregatingMergeTree",
                "ctr_ml_cutover=TinyLog", "ctr_ml_cutover_v3=TinyLog", "ctr_ml_summary=View", "ctr_ml_view=MaterializedView",
                "ctr_results_raw=MergeTree", "ctr_rollup_1d=AggregatingMergeTree", "ctr_rollup_1d_mv=MaterializedView",
                "ctr_rollup_1d_v2=AggregatingMergeTree", "ctr_rollup_1d_v2_mv=MaterializedView",
                "ctr_rollup_1h=AggregatingMergeTree", "ctr_rollup_1h_mv=MaterializedView",
                "ctr_rollup_1h_v2=AggregatingMergeTree", "ctr_rollup_1h_v2_mv=MaterializedView", "ctr_rollup_5m=AggregatingMergeTree",
                "ctr_rollup_5m_mv=MaterializedView", "ctr_rollup_5m_v2=AggregatingMergeTree", "ctr_rollup_5m_v2_mv=MaterializedView",
                "ctr_rollup_cutover=TinyLog", "ctr_rollup_v2_cutover=TinyLog", "ctr_sliding_ctr=View",
            ]
        )
        #expect(try ChildProcess.schemaTool(["verify"] + common).status == 0)
        let status = try ChildProcess.schemaTool(["status"] + common)
        #expect(status.stdout.components(separatedBy: " applied ").count - 1 == PackagePaths.shippedMigrationCount)
        #expect(try ChildProcess.schemaTool(["plan"] + common).stdout.contains("nothing to apply"))
    }

    /// A statement the server rejects outright (here an unknown engine) is caught by the dry
    /// run in a scratch database: nothing at all changes in the target database.
    @Test func rejectedStatementStopsBeforeAnythingChanges() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "dryrun")
        let migrations = try PackagePaths.directory([
            "0001_first.sql": "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = Memory;\nCREATE TABLE ${DATABASE}.b (x UInt8) ENGINE = Memory;\nCREATE TABLE ${DATABASE}.c (x UInt8) ENGINE = NoSuchEngine;\n"
        ])
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        let failed = try ChildProcess.schemaTool(["migrate"] + common)
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("0001_first.sql:3: statement 3 of 3 fails in a dry run"), "\(failed.stderr)")
        #expect(failed.stderr.contains("Nothing was changed in \(endpoint.database)"))
        let connection = try ClickHouseConnection(endpoint: endpoint)
        #expect(try connection.scalar("SELECT count() FROM system.tables WHERE database = currentDatabase()") == "0", "not even the ledger")
        // Without the dry run the same file fails at statement 3 against the live database.
        let undry = try ChildProcess.schemaTool(["migrate", "--skip-dry-run"] + common)
        #expect(undry.status == 1)
        #expect(undry.stderr.contains("0001_first.sql:3: statement 3 of 3 failed"), "\(undry.stderr)")
        #expect(try connection.scalar("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN ('a', 'b')") == "2")
    }

    /// A statement that fails only against the live database (here: an object that is in the
    /// way) stops there, records how far it got, and the next run resumes at that statement.
    @Test func failedStatementStopsRecordsProgressAndResumes() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "resume")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        try connection.run("CREATE TABLE c (x UInt8) ENGINE = Memory")
        // No IF NOT EXISTS: running statements 1 and 2 again, or 3 with c in the way, fails.
        let migrations = try PackagePaths.directory([
            "0001_first.sql": "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = Memory;\nCREATE TABLE ${DATABASE}.b (x UInt8) ENGINE = Memory;\nCREATE TABLE ${DATABASE}.c (x UInt8) ENGINE = Memory;\nCREATE TABLE ${DATABASE}.d (x UInt8) ENGINE = Memory;\n"
        ])
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        let failed = try ChildProcess.schemaTool(["migrate"] + common)
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("0001_first.sql:3: statement 3 of 4 failed"), "\(failed.stderr)")
        #expect(failed.stderr.contains("Statements 1-2 are applied and recorded"))
        #expect(try ChildProcess.schemaTool(["status"] + common).stdout.contains("failed at statement 3"))
        try connection.run("DROP TABLE c")
        let resumed = try ChildProcess.schemaTool(["migrate"] + common)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(try connection.scalar("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN ('a','b','c','d')") == "4")
    }

    @Test func editedMigrationBlocksUntilRepaired() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "edited")
        let migrations = try PackagePaths.directory(["0001_t.sql": "CREATE TABLE ${DATABASE}.t (x UInt8) ENGINE = Memory;\n"])
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        #expect(try ChildProcess.schemaTool(["migrate"] + common).status == 0)
        try "CREATE TABLE ${DATABASE}.t (x UInt16) ENGINE = Memory;\n".write(toFile: migrations + "/0001_t.sql", atomically: true, encoding: .utf8)
        let blocked = try ChildProcess.schemaTool(["migrate"] + common)
        #expect(blocked.status == 1)
        #expect(blocked.stderr.contains("was modified after it was applied"))
        #expect(try ChildProcess.schemaTool(["status"] + common).stdout.contains("modified since applied"))
        #expect(try ChildProcess.schemaTool(["repair", "--accept-checksum", "1"] + common).status == 0)
        #expect(try ChildProcess.schemaTool(["migrate"] + common).status == 0)
    }

    @Test(arguments: [
        (["0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"], "version 1 is also used by"),
        (["0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 3;"], "expected version 2 here"),
        (["0001_a.sql": "SELECT 1;\nSELECT '${UNDEFINED}';"], "0001_a.sql:2: undefined variable ${UNDEFINED}"),
        (["0001_a.sql": "SELECT 1;\nSELECT 'open;"], "0001_a.sql:2: unterminated string literal"),
        (["first.sql": "SELECT 1;"], "migration files are named NNNN_description.sql"),
    ])
    func badInputIsRefusedBeforeAnythingRuns(files: [String: String], message: String) throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "bad")
        let migrations = try PackagePaths.directory(files)
        let result = try ChildProcess.schemaTool(["migrate", "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations])
        #expect(result.status == 1)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        #expect(try connection.scalar("SELECT count() FROM system.tables WHERE database = currentDatabase()") == "0", "nothing changed")
    }

    @Test func ledgerNamingAMissingFileIsReported() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "missing")
        let migrations = try PackagePaths.directory(["0001_a.sql": "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = Memory;", "0002_b.sql": "CREATE TABLE ${DATABASE}.b (x UInt8) ENGINE = Memory;"])
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        #expect(try ChildProcess.schemaTool(["migrate"] + common).status == 0)
        try FileManager.default.removeItem(atPath: migrations + "/0002_b.sql")
        let result = try ChildProcess.schemaTool(["migrate"] + common)
        #expect(result.status == 1)
        #expect(result.stderr.contains("no file 0002_b.sql exists"))
    }

    @Test func concurrentMigrationsApplyEachStatementOnce() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "lock")
        // Without IF NOT EXISTS: a second application of any statement would fail.
        let migrations = try PackagePaths.directory([
            "0001_a.sql": "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = MergeTree ORDER BY x;\nINSERT INTO ${DATABASE}.a VALUES (1);",
            "0002_b.sql": "CREATE TABLE ${DATABASE}.b (x UInt8) ENGINE = MergeTree ORDER BY x;\nINSERT INTO ${DATABASE}.a VALUES (2);",
        ])
        let arguments = ["migrate", "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        let logs = try PackagePaths.temporaryDirectory("lock-logs")
        let runs = try (0..<5).map { try ChildProcess(PackagePaths.executable("schema-tool"), arguments, logDirectory: logs, name: "run\($0)") }
        for run in runs { run.process.waitUntilExit() }
        for run in runs { #expect(run.process.terminationStatus == 0, "\(run.stderr)") }
        #expect(runs.filter { $0.stdout.contains("applied 2 migration(s)") }.count == 1, "exactly one run applied the migrations")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        #expect(try connection.scalar("SELECT groupArray(x) FROM (SELECT x FROM a ORDER BY x)") == "[1,2]")
    }

    @Test func newCreatesTheNextNumberedMigrationThatMigrateAccepts() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "new")
        let migrations = try PackagePaths.directory(["0001_a.sql": "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = MergeTree ORDER BY x;"])
        let created = try ChildProcess.schemaTool(["new", "--migrations-dir", migrations, "Add region column"])
        #expect(created.status == 0, "\(created.stderr)")
        let path = migrations + "/0002_add_region_column.sql"
        #expect(created.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == path)
        let template = try String(contentsOfFile: path, encoding: .utf8)
        #expect(template.contains("${DATABASE}"))
        try (template + "ALTER TABLE ${DATABASE}.a ADD COLUMN region String;\n").write(toFile: path, atomically: true, encoding: .utf8)
        let migrated = try ChildProcess.schemaTool(["migrate", "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations])
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(migrated.stdout.contains("applied 2 migration(s) (1, 2)"))
    }

    /// A holder that died without releasing blocks others only until its lease expires.
    @Test func deadLockHolderBlocksOnlyUntilItsLeaseExpires() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "lease")
        let migrations = try PackagePaths.directory(["0001_a.sql": "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = Memory;"])
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        #expect(try ChildProcess.schemaTool(["status"] + common).status == 0)
        let connection = try ClickHouseConnection(endpoint: endpoint)
        try connection.run("CREATE TABLE schema_migrations_lock (holder String, requested_us UInt64, expires_us UInt64, released UInt8) ENGINE = MergeTree ORDER BY requested_us")
        let now = UInt64(Date().timeIntervalSince1970 * 1_000_000)
        try connection.run("INSERT INTO schema_migrations_lock VALUES ('dead@host pid 1 #0', \(now - 1_000_000), \(now + 4_000_000), 0)")
        let started = ContinuousClock.now
        let timedOut = try ChildProcess.schemaTool(["migrate", "--lock-timeout", "1"] + common)
        #expect(timedOut.status == 1)
        #expect(timedOut.stderr.contains("another schema-tool holds the migration lock"), "\(timedOut.stderr)")
        #expect(timedOut.stderr.contains("dead@host pid 1"))
        let migrated = try ChildProcess.schemaTool(["migrate", "--lock-timeout", "30"] + common)
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(migrated.stderr.contains("waiting for the migration lock held by dead@host pid 1"))
        #expect(ContinuousClock.now - started >= .seconds(3), "it waited for the lease to expire")
        #expect(try connection.scalar("EXISTS TABLE a") == "1")
    }

    /// A live holder renews its lease: a migration that outlasts the lease is not taken over.
    @Test func liveHolderKeepsTheLockBeyondItsLease() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "renew")
        let migrations = try PackagePaths.directory(["0001_slow.sql": "CREATE TABLE ${DATABASE}.started ENGINE = TinyLog AS SELECT now() AS t;\nWAIT UNTIL (SELECT min(t) FROM ${DATABASE}.started) + 5;\nCREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = Memory;"])
        let arguments = ["migrate", "--lock-lease", "2", "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        let logs = try PackagePaths.temporaryDirectory("renew-logs")
        let first = try ChildProcess(PackagePaths.executable("schema-tool"), arguments, logDirectory: logs, name: "first")
        // Start the second run once the first has renewed its lease past the original expiry:
        // without renewals the 2 s lease would have lapsed by then.
        let connection = try ClickHouseConnection(endpoint: endpoint)
        let renewed = try eventually(timeout: 30) {
            (try? connection.scalar("SELECT max(expires_us) - min(requested_us) > 2500000 FROM schema_migrations_lock")) == "1"
        }
        #expect(renewed, "the first run renewed its lease")
        let second = try ChildProcess(PackagePaths.executable("schema-tool"), arguments, logDirectory: logs, name: "second")
        first.process.waitUntilExit()
        second.process.waitUntilExit()
        #expect(first.process.terminationStatus == 0, "\(first.stderr)")
        #expect(second.process.terminationStatus == 0, "\(second.stderr)")
        #expect(second.stderr.contains("waiting for the migration lock"), "the second run waited although the lease (2 s) had passed")
        #expect(second.stdout.contains("up to date"))
    }

    /// The second-generation ctr_ml_view migration, run while rows keep arriving: the view must
    /// equal sums over the raw table before and after, without loss or double counting.
    @Test func viewEvolutionKeepsTotalsExactWhileInsertsRun() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "evolve")
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", PackagePaths.migrationsDirectory]
        #expect(try ChildProcess.schemaTool(["migrate", "--to", "3"] + common).status == 0)
        let viewTotals = "SELECT product_id, toUnixTimestamp(window_minute) AS m, sumMerge(impressions), sumMerge(clicks) FROM ctr_ml_view GROUP BY product_id, window_minute ORDER BY product_id, m"
        let rawTotals = "SELECT product_id, toUnixTimestamp(toStartOfMinute(window_end)) AS m, sum(impressions_delta), sum(clicks_delta) FROM ctr_results_raw GROUP BY product_id, m ORDER BY product_id, m"

        let writer = try RawRowWriter(endpoint)
        for _ in 0..<20 { try writer.insert() }
        let connection = try ClickHouseConnection(endpoint: endpoint)
        #expect(try connection.rows(viewTotals) == connection.rows(rawTotals), "generation 1 is exact")

        writer.start()
        let migrated = try ChildProcess.schemaTool(
            ["migrate", "--var", "ML_CUTOVER_DELAY_SECONDS=2", "--var", "ML_CUTOVER_GRACE_SECONDS=1", "--var", "ROLLUP_CUTOVER_DELAY_SECONDS=2",
             "--var", "ROLLUP_CUTOVER_GRACE_SECONDS=1"] + common
        )
        let afterMigration = writer.batches
        #expect(eventually(timeout: 30) { writer.batches >= afterMigration + 20 }, "rows keep arriving after the new view exists")
        writer.stop()
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(migrated.stdout.contains("waiting"), "the cut-over waits happened with data present")
        #expect(writer.batches > 100, "inserts kept running during the migration")
        let after = try connection.rows(viewTotals)
        #expect(after == (try connection.rows(rawTotals)), "generation 2 is exact")
        #expect(try connection.scalar("SELECT sum(windows) > 0 AND sum(late_updates) > 0 FROM ctr_ml_summary") == "1")
        #expect(try connection.scalar("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 'ctr_ml_feed_v%'") == "0")
        // The roll-ups, created with data present, also equal sums over the raw table.
        #expect(
            try connection.rows("SELECT product_id, toUnixTimestamp(period_start) AS p, sumMerge(impressions), sumMerge(clicks) FROM ctr_rollup_1h GROUP BY product_id, period_start ORDER BY product_id, p")
                == connection.rows("SELECT product_id, toUnixTimestamp(toStartOfHour(window_start)) AS p, sum(impressions_delta), sum(clicks_delta) FROM ctr_results_raw GROUP BY product_id, p ORDER BY product_id, p")
        )
    }

    @Test func shippedMigrationsRunOnCurrentClickHouse() throws {
        let directory = try PackagePaths.temporaryDirectory("render")
        var files: [String] = []
        for (name, extra) in [("rendered.json", [String]()), ("rendered-cluster.json", ["--cluster", "ctr_cluster"])] {
            let rendered = try ChildProcess.schemaTool(["render", "--database", "ctr", "--migrations-dir", PackagePaths.migrationsDirectory] + extra)
            #expect(rendered.status == 0)
            let file = directory.appendingPathComponent(name)
            try rendered.stdout.write(to: file, atomically: true, encoding: .utf8)
            files.append(file.path)
        }
        let check = try ChildProcess.run(
            "/usr/bin/env", ["python3", PackagePaths.root.appendingPathComponent("Tests/compat/check_current_clickhouse.py").path] + files
        )
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("cluster statements parse"))
        print("current ClickHouse: \(check.stdout)")
    }
}

/// Inserts rows into `ctr_results_raw` (20 products, 30 windows, revision = insert number / 30,
/// so no (product, window, revision) repeats within one writer: the latest view has no ties), on demand or
/// every 20 ms from its own thread between ``start()`` and ``stop()``. Every block is unique
/// (`batch_id` = tag and sequence number), so replicated tables never deduplicate one.
final class RawRowWriter: @unchecked Sendable {
    let connection: ClickHouseConnection
    let tag: String
    private let lock = NSLock()
    private var running = false
    private let done = DispatchSemaphore(value: 0)
    private var inserted = 0

    /// Batches inserted so far (read from any thread).
    var batches: Int { lock.withLock { inserted } }

    init(_ endpoint: ClickHouseEndpoint, tag: String = "w") throws {
        connection = try ClickHouseConnection(endpoint: endpoint)
        self.tag = tag
    }

    func insert() throws {
        let batches = lock.withLock {
            inserted += 1
            return inserted
        }
        let rows = (0..<20).map { product in
            "('p\(product)', toDateTime(1700000000 + \(batches % 30) * 10, 'UTC'), toDateTime(1700000010 + \(batches % 30) * 10, 'UTC'), 1, \(product % 3), \(batches / 30), now(), '\(tag)-\(batches)')"
        }.joined(separator: ",")
        try connection.run(
            "INSERT INTO ctr_results_raw (product_id, window_start, window_end, impressions_delta, clicks_delta, revision, emitted_at, batch_id) VALUES \(rows)"
        )
    }

    private var isRunning: Bool { lock.withLock { running } }

    func start() {
        lock.withLock { running = true }
        Thread { [self] in
            while isRunning {
                try? insert()
                Thread.sleep(forTimeInterval: 0.02)
            }
            done.signal()
        }.start()
    }

    func stop() {
        lock.withLock { running = false }
        done.wait()
    }
}
